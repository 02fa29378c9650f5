"""Top-1 and top-5 over a validation loader, every image counted once over the ranks: the check training
makes after every epoch and the measurement `python -m fastres.eval` makes are this one loop.

    result = validate(model, loader, device, amp, groups)           # fastres.eval
    result = validate(forward, loader, device, amp, groups, stop)   # training: stop signals polled every batch
    result.top1, result.top5, result.images                         # percent, percent, images over all ranks
    result.stopped                                                  # (batches done, of): a signal came first

The hits are counted on the device and summed over the ranks once, at the end (one host sync). With
`stop` (fastres.run.preemption.StopSignals) the flags are polled once per batch, on every rank as often
(the rank with the most batches decides how often), so a signal ends validation within a batch (two on
several processes) and every rank stops at the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastres.distributed import collectives as coll
from fastres.run.execution import autocast
from fastres.run.metrics import accuracy_counts

__all__ = ["Validation", "validate"]


@dataclass(frozen=True)
class Validation:
    """What a validation measured, or where a stop signal ended it (then its figures are NaN and 0)."""

    top1: float  # percent
    top5: float
    images: int  # counted over every rank
    signum: int = 0  # the stop signal every rank agreed on (0: none), during the last batch or before it
    stopped: tuple[int, int] | None = None  # (batches done, of): a signal ended it before its last batch


@torch.inference_mode()
def validate(forward, loader, device: torch.device, amp: torch.dtype | None, groups, stop=None,
             what: str = "validation counts") -> Validation:  # fmt: skip
    """`forward` (the model, in eval mode, or its compiled form) over this rank's share of `loader`; the
    counts summed over the ranks of `groups` (None: one process). `what` names the sum in a failure."""
    totals = torch.zeros(3, dtype=torch.int64, device=device)  # top-1 hits, top-5 hits, images
    polls = stop.most(len(loader), "validation batches") if stop is not None else 0
    done = 0
    for images, labels in loader:
        signum = stop.poll().signum if stop is not None else 0
        if signum:
            return Validation(float("nan"), float("nan"), 0, signum, (done, polls))
        with autocast(device, amp):
            logits = forward(images)
        totals[:2] += accuracy_counts(logits.float(), labels)
        totals[2] += labels.numel()
        done += 1
    last = 0
    if stop is not None:
        for _ in range(polls - done):  # as many polls as the other ranks
            signum = stop.poll().signum
            if signum:
                return Validation(float("nan"), float("nan"), 0, signum, (done, polls))
        last = stop.poll().signum  # a signal during the last batch: the epoch ends, then the run
    top1, top5, n = coll.sum_over_ranks(groups, totals, what).tolist()
    return Validation(100.0 * top1 / max(n, 1), 100.0 * top5 / max(n, 1), n, last)
