"""fastres's optimizers and learning-rate schedules."""

from fastres.optim.schedule import SCHEDULES, LRSchedule, scaled_lr

__all__ = ["SCHEDULES", "LRSchedule", "scaled_lr"]
