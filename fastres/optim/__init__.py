"""fastres.optim: the optimizers (FusedLARS, FusedSGD, the RMSprop warm-up), fp16 loss scaling, the optimizer
factory and the learning-rate schedules; imports fastres.kernels only.

  lars            FusedLARS, FusedSGD: one fused step over the flat layout
  amp             LossScaler: dynamic loss scaling on the flat gradient buffer
  factory         OPTIMIZERS (each optimizer by name, one entry) and build_optimizer: the config's optimizer
                  over the model's parameter groups
  schedule        SCHEDULES (each decay by name, one entry); warm-up, decay and momentum per step;
                  --print-schedule's table
"""

from fastres.optim.factory import OPTIMIZERS, build_optimizer, param_groups
from fastres.optim.lars import FusedLARS, FusedSGD
from fastres.optim.schedule import SCHEDULES, LRSchedule, scaled_lr

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "FusedLARS",
    "FusedSGD",
    "LRSchedule",
    "build_optimizer",
    "param_groups",
    "scaled_lr",
]
