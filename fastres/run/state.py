"""The training loop's state: what the loop changes as it goes, saved in every checkpoint and restored as one.

    state = TrainState()                                       # a new run: step 0, attempt 1
    state = TrainState.resumed(checkpoint["step"], checkpoint["extra"])   # the attempt after the one that saved it
    checkpoint["extra"] = {**state.state_dict(), ...}          # what a checkpoint keeps of it

The model, the optimizer, the loaders and the generators are their own parts' (fastres.checkpoint.state);
this is the loop's bookkeeping around them: how far it is, the best and the last validation, which attempt
of the run this is, and a validation still to be done (a stop came during it, or a resume on another number
of processes skipped to the next epoch boundary: the resumed run does it first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["TrainState"]


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    best: tuple[float, int] = (float("-inf"), 0)  # the best validation top-1 (%) so far, and its epoch (1-based)
    last_val: dict[str, Any] | None = None  # the last validation: epoch (1-based), top1, top5
    attempt: int = 1  # this attempt of the run: 1, then one more for every resume
    val_pending: int | None = None  # an epoch (1-based) whose validation is still to be done
    val_pending_why: str = "that a stop interrupted"  # why, for the resume banner (not saved)
    step_done_at: float = field(default_factory=time.time)  # wall-clock time the last step (or the setup) ended
    last_batch: torch.Tensor | None = None  # --bn-eval batch: the epoch's last training batch (not saved)

    def epochs_done(self, steps_per_epoch: int) -> int:
        return self.step // steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint's `extra` (its step is the checkpoint's own `step`)."""
        saved = dict(best=list(self.best), val=self.last_val, attempt=self.attempt, time=self.step_done_at)
        if self.val_pending is not None:
            saved["val_pending"] = self.val_pending
        return saved

    @classmethod
    def resumed(cls, step: int, extra: dict[str, Any]) -> TrainState:
        """The state of the attempt that continues a checkpoint of `step` whose `extra` is `state_dict()`'s."""
        return cls(
            step=step,
            best=tuple(extra.get("best", cls.best)),
            last_val=extra.get("val"),
            attempt=int(extra.get("attempt", 1)) + 1,
            val_pending=extra.get("val_pending"),
        )
