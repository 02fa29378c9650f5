"""Learning-rate schedules as pure functions of the step: no state, nothing to checkpoint.

    lr(step) = warm-up(step) for step < warmup_steps, then decay(step)

- Linear scaling rule (Goyal et al. 2017, section 2.1): `scaled_lr(base, global_batch)` =
  base * global_batch / 256, where `base` is the lr per 256 images.
- Linear warm-up from `warmup_start` x peak to the peak over `warmup_steps` (Goyal et al.'s
  "gradual warm-up", 5 epochs in their 8K-batch run).
- Decays after warm-up, over the remaining steps, t in [0, 1]:
  `cosine`: peak * (end + (1 - end) * (1 + cos(pi t)) / 2) (Loshchilov & Hutter 2017);
  `poly`: peak * (end + (1 - end) * (1 - t)^2) (MLPerf's ResNet-50 LARS reference, power 2);
  `step`: peak * 0.1^k after each of `milestones` (fractions of training; He et al. 2016:
  epochs 30, 60, 80 of 90); `constant`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SCHEDULES", "scaled_lr", "LRSchedule"]

SCHEDULES = ("cosine", "poly", "step", "constant")


def scaled_lr(lr_per_256: float, global_batch: int) -> float:
    """Goyal et al.'s linear scaling rule: the peak lr grows with the global batch."""
    return lr_per_256 * global_batch / 256


@dataclass(frozen=True)
class LRSchedule:
    peak: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "cosine"
    end_factor: float = 0.0  # final lr as a fraction of the peak
    warmup_start: float = 0.0  # first warm-up lr as a fraction of the peak
    milestones: tuple[float, ...] = (1 / 3, 2 / 3, 8 / 9)  # `step`: fractions of total_steps

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps}), total >= 1")

    def __call__(self, step: int) -> float:
        """The lr to use for optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            frac = (step + 1) / self.warmup_steps
            return self.peak * (self.warmup_start + (1 - self.warmup_start) * frac)
        decay_steps = self.total_steps - self.warmup_steps
        t = min(1.0, (step - self.warmup_steps) / decay_steps) if decay_steps else 1.0
        end = self.end_factor
        if self.kind == "cosine":
            return self.peak * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t)))
        if self.kind == "poly":
            return self.peak * (end + (1 - end) * (1 - t) ** 2)
        if self.kind == "step":
            passed = sum(step >= m * self.total_steps for m in self.milestones)
            return self.peak * 0.1**passed
        return self.peak
