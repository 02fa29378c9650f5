"""fastres's optimizers and learning-rate schedules."""

from fastres.optim.lars import FusedLARS, FusedSGD
from fastres.optim.schedule import SCHEDULES, LRSchedule, scaled_lr

__all__ = ["SCHEDULES", "FusedLARS", "FusedSGD", "LRSchedule", "scaled_lr"]
