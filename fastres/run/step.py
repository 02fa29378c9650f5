"""One optimizer step: its micro-batches' forward and backward, the gradients' reduction, the step.

    lr = ...                                                 # the schedule's, set by the loop first
    images = train_step(parts, micro_batches, accumulate)    # the last micro-batch's images; None: no whole step

--accumulate passes a step: the passes before the last one only accumulate (inside `reducer.no_sync()`),
the last one's backward sends the buckets as they fill, and `reducer.wait()` leaves the mean gradient
over every rank. The loss is divided by the passes, so the gradient is the mean over the global batch.

A step whose reduced gradients hold a NaN or an infinity (on any rank: the sum carried it to every rank)
is skipped on every rank: the fused optimizers skip it on the device with no host sync, torch's SGD after
one. The loss scaler finds it: fp16's LossScaler (fastres.optim.amp) while it unscales, `NoLossScaling`
(fp32, bf16: torch's GradScaler(enabled=False), nanoGPT's way) with one sum of the gradients
(fastres.run.stepguard). The step's mean loss joins the log window's unless the step was skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from fastres.run.execution import autocast

__all__ = ["NoLossScaling", "train_step"]


class NoLossScaling:
    """The loss scaler of an fp32 or bf16 run: LossScaler's interface, scaling nothing; `check(grads)` is its
    non-finite test (fastres.run.stepguard.StepGuard.check: a device flag, no host sync)."""

    def __init__(self, check):
        self.check = check

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def unscale_(self, grads: torch.Tensor) -> torch.Tensor:
        return self.check(grads)

    def update(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}  # nothing to save

    def load_state_dict(self, state: dict) -> None:
        pass


def _sync_unless(reducer, last_pass: bool):
    """Gradient accumulation: the passes before the last one of a step only accumulate."""
    if last_pass or reducer is None:
        return contextlib.nullcontext()
    return reducer.no_sync()


def train_step(parts, micro_batches: Iterable, accumulate: int) -> torch.Tensor | None:
    """One optimizer step of `parts` (fastres.run.parts.RunParts: the model, its loss, layout, reducer, loss
    scaler, optimizer and step guard) over the next `accumulate` (images, labels) of `micro_batches`; the
    last one's images, or None when fewer came (the loader's epoch ended: no step)."""
    parts.layout.zero_grad()  # in place: .grad stay views of the flat buffer
    loss_sum, images, passes = None, None, 0
    for passes, (images, labels) in enumerate(micro_batches, start=1):
        with _sync_unless(parts.reducer, passes == accumulate), autocast(parts.device, parts.amp):
            loss = parts.criterion(parts.forward(images), labels)
            scaled = loss / accumulate if accumulate > 1 else loss
            parts.scaler.scale(scaled).backward()  # buckets leave as they fill
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    if passes < accumulate:
        return None
    if parts.reducer is not None:
        parts.reducer.wait()  # the mean gradient over all ranks
    # a NaN/Inf on any rank reached every rank's sum: all skip the same steps
    bad = parts.scaler.unscale_(parts.layout.grads) != 0
    if parts.fused:
        parts.optimizer.step(found_inf=bad)  # a no-op on the device when bad: no host sync
    elif not bad.item():  # torch's SGD cannot skip on the device (a sync on GPUs)
        parts.optimizer.step()
    parts.scaler.update()
    parts.guard.add(loss_sum / accumulate, bad)
    return images
