"""Non-finite steps: found on the device, skipped on every rank, counted; the loss averaged over the rest.

    guard = StepGuard(device, max_in_a_row=10)
    bad = guard.check(layout.grads)          # device bool: a NaN/Inf anywhere in the (reduced) gradients
    optimizer.step(found_inf=bad)            # the fused optimizers skip on the device: no host sync
    guard.add(loss, bad)                     # the loss of a good step joins the log window's mean
    values = guard.take()                    # on log steps only (syncs): mean loss, skipped counts
    guard.streak()                           # steps skipped in a row up to now (syncs): 0 after a good step

The gradients are checked after the all-reduce, which sums every rank's NaN or Inf into
every rank's buffer, so all ranks skip the same steps. The BN running statistics of a
skipped step's forward pass stay updated (undoing them would cost a copy every step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["StepGuard", "WindowStats"]


@dataclass(frozen=True)
class WindowStats:
    loss: float | None  # mean loss of the good steps of the window; None when every step was skipped
    skipped: int  # steps skipped in the window
    skipped_total: int  # since the start of this attempt
    in_a_row: int  # the longest run of consecutive skipped steps so far


class StepGuard:
    def __init__(self, device: torch.device, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        z = lambda: torch.zeros((), dtype=torch.float32, device=device)
        self._loss_sum, self._good, self._skipped = z(), z(), z()
        self._skipped_total, self._run, self._longest = z(), z(), z()

    @torch.no_grad()
    def check(self, grads: torch.Tensor) -> torch.Tensor:
        """A device scalar, nonzero when `grads` holds a NaN or an infinity (one pass, no sync)."""
        return ~torch.isfinite(grads.sum())  # a sum is non-finite iff an element is (or it overflows)

    @torch.no_grad()
    def add(self, loss: torch.Tensor, bad: torch.Tensor) -> None:
        badf = bad.float()
        self._loss_sum += torch.where(bad, torch.zeros_like(self._loss_sum), loss.detach().float())
        self._good += 1 - badf
        self._skipped += badf
        self._skipped_total += badf
        self._run.mul_(badf).add_(badf)  # consecutive skipped steps, reset by a good one
        torch.maximum(self._longest, self._run, out=self._longest)

    def take(self, mean_over_ranks=None) -> WindowStats:
        """The window's figures (synchronises the device), then a new window.

        mean_over_ranks: a function averaging a device scalar over the ranks (the loss)."""
        loss = self._loss_sum / self._good.clamp_min(1)
        good = int(self._good.item())
        mean = mean_over_ranks(loss) if mean_over_ranks else loss.item()
        stats = WindowStats(mean if good else None, int(self._skipped.item()), int(self._skipped_total.item()),
                            int(self._longest.item()))  # fmt: skip
        for t in (self._loss_sum, self._good, self._skipped):
            t.zero_()
        return stats

    def streak(self) -> int:
        """The steps skipped in a row up to the last one (0 when the last step was good); synchronises the
        device. The same on every rank: the check reads the reduced gradients."""
        return int(self._run.item())

    def too_many(self, stats: WindowStats) -> bool:
        return stats.in_a_row >= self.max_in_a_row
