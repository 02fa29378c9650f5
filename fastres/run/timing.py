"""The training loop's one clock: every time figure of a run's progress is read from it.

    timer = StepTimer()
    timer.start_epoch()          # at an epoch's first step
    timer.step()                 # after every optimizer step
    timer.epoch_seconds()        # the epoch's training time (the `val` record's epoch_seconds)
    timer.window()               # (steps, seconds) since the last log step: the `train` record's img/s
    timer.new_window()           # after a log step (its device sync and writes are not the next window's)
    timer.steady()               # (steps, seconds) after the epoch's first WARM_STEPS: the estimate's rate
    timer.steps, timer.now()     # steps this epoch and the clock: fastres.run.progress's rate and pace

The first steps of an epoch (workers starting, first allocations, a compile) are not timed for the
estimate: they say little about the thousands that follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["WARM_STEPS", "StepTimer"]

WARM_STEPS = 2  # the first steps of an epoch that the estimate does not time


class StepTimer:
    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.now = clock
        self.steps = 0  # optimizer steps this epoch (this attempt's)
        self._epoch_start = self._window_start = self._steady_start = clock()
        self._window_steps = 0

    def start_epoch(self) -> None:
        self._epoch_start = self._window_start = self.now()
        self.steps = self._window_steps = 0

    def step(self) -> None:
        self.steps += 1
        self._window_steps += 1
        if self.steps == WARM_STEPS:
            self._steady_start = self.now()

    def epoch_seconds(self) -> float:
        return self.now() - self._epoch_start

    def window(self) -> tuple[int, float]:
        return self._window_steps, self.now() - self._window_start

    def new_window(self) -> None:
        self._window_start, self._window_steps = self.now(), 0

    def steady(self) -> tuple[int, float] | None:
        """Steps done since the epoch's first WARM_STEPS, and their seconds; None before there are any."""
        if self.steps <= WARM_STEPS:
            return None
        return self.steps - WARM_STEPS, self.now() - self._steady_start
