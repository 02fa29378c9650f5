"""fastres.run.stepguard.StepGuard against a plain-Python bookkeeping of the same steps.

The reference keeps, per log window, the float64 sum and count of the good steps' losses and the skipped
steps, and over the attempt the skipped total and the longest and current runs of skipped steps; the guard
keeps them in float32 device scalars without a host sync. A bad step's loss is NaN or infinite (what a
NaN/Inf gradient comes with): it must never reach the mean.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from fastres.run.stepguard import StepGuard, WindowStats

CPU = torch.device("cpu")


class Reference:
    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.losses: list[float] = []
        self.skipped = self.total = self.run = self.longest = 0

    def add(self, loss: float, bad: bool) -> None:
        if bad:
            self.skipped += 1
            self.total += 1
            self.run += 1
            self.longest = max(self.longest, self.run)
        else:
            self.losses.append(loss)
            self.run = 0

    def take(self) -> WindowStats:
        mean = math.fsum(self.losses) / len(self.losses) if self.losses else None
        stats = WindowStats(mean, self.skipped, self.total, self.longest)
        self.losses, self.skipped = [], 0
        return stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_windows_of_random_good_and_bad_steps_match_the_reference(seed):
    rng = random.Random(seed)
    guard, ref = StepGuard(CPU, max_in_a_row=4), Reference(4)
    windows = 0
    for step in range(1, 301):
        bad = rng.random() < 0.3
        loss = rng.choice([math.nan, math.inf, -math.inf]) if bad else rng.uniform(0.01, 9.0)
        guard.add(torch.tensor(loss), torch.tensor(bad))
        ref.add(loss, bad)
        assert guard.streak() == ref.run, step
        if rng.random() < 0.2:  # a log step
            got, want = guard.take(), ref.take()
            windows += 1
            assert (got.skipped, got.skipped_total, got.in_a_row) == (want.skipped, want.skipped_total, want.in_a_row)
            if want.loss is None:
                assert got.loss is None, step
            else:
                assert got.loss == pytest.approx(want.loss, rel=1e-6), step
            assert guard.too_many(got) == (want.in_a_row >= 4)
    assert windows > 20 and ref.longest >= 3  # the draws met both kinds of window and long runs


def test_a_window_of_only_skipped_steps_has_no_loss_and_the_next_window_starts_afresh():
    guard = StepGuard(CPU, max_in_a_row=3)
    for _ in range(2):
        guard.add(torch.tensor(math.nan), torch.tensor(True))
    stats = guard.take()
    assert stats == WindowStats(None, 2, 2, 2) and not guard.too_many(stats)
    guard.add(torch.tensor(2.0), torch.tensor(False))
    guard.add(torch.tensor(math.inf), torch.tensor(True))
    guard.add(torch.tensor(4.0), torch.tensor(False))
    assert guard.streak() == 0
    assert guard.take() == WindowStats(3.0, 1, 3, 2)  # the longest run is the attempt's, not the window's
    for _ in range(3):
        guard.add(torch.tensor(math.nan), torch.tensor(True))
    stats = guard.take()
    assert stats == WindowStats(None, 3, 6, 3) and guard.too_many(stats) and guard.streak() == 3


def test_the_mean_over_ranks_is_given_the_window_mean_as_a_device_scalar():
    guard = StepGuard(CPU, max_in_a_row=10)
    for loss in (1.0, 2.0, 6.0):
        guard.add(torch.tensor(loss), torch.tensor(False))
    seen = []

    def mean_over_ranks(t: torch.Tensor) -> float:
        seen.append(t.clone())
        return (t.item() + 5.0) / 2  # this rank's 3.0 and another rank's 5.0

    assert guard.take(mean_over_ranks).loss == 4.0
    assert len(seen) == 1 and seen[0].shape == () and seen[0].item() == 3.0


F32_MAX = torch.finfo(torch.float32).max


@pytest.mark.parametrize("poison", [None, math.nan, math.inf, -math.inf, 3e38, -1e30])
@pytest.mark.parametrize("size", [1, 7, 1000, 4099])
def test_check_flags_gradients_with_a_nan_or_an_infinity_anywhere(poison, size):
    """Reference: an element that is not finite, or a float64 sum beyond float32's range (the documented
    overflow: three 3e38 in one buffer are a skipped step)."""
    grads = torch.randn(size, generator=torch.Generator().manual_seed(size))
    if poison is not None:
        grads[[0, size // 2, size - 1]] = poison
    values = grads.double().tolist()
    finite = all(math.isfinite(v) for v in values)
    want = not finite or abs(math.fsum(values)) > F32_MAX
    got = StepGuard(CPU, max_in_a_row=1).check(grads)
    assert got.dtype == torch.bool and got.shape == () and bool(got) == want
    assert want == (poison is not None and (not math.isfinite(poison) or (poison == 3e38 and size > 2)))
