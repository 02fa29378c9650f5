"""fastres's optimizers, the optimizer factory, and learning-rate schedules."""

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
