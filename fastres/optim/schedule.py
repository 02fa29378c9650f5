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
- Warm-up shapes (`warmup_kind`): `linear` (above), and `slow-start`, after Preferred
  Networks' slow-start schedule (Akiba, Suzuki & Fukuda 2017, "Extremely Large Minibatch SGD:
  Training ResNet-50 on ImageNet in 15 Minutes", arXiv:1711.04325, section 2): the lr is held
  at the low start value for the first `slow_start_hold` fraction of the warm-up, where the
  large-batch optimisation is least stable, and only then rises linearly to the peak:
      lr(step) = peak * s                                    for step < h = hold * W
      lr(step) = peak * (s + (1 - s) * (step + 1 - h) / (W - h))   for h <= step < W
  (s = warmup_start, W = warmup_steps). The hold and start fraction are parameters, not the
  paper's constants.
- RMSprop warm-up (Akiba et al. 2017, section 2, same paper): the optimiser starts as RMSprop
  and blends into momentum SGD; `rmsprop_warmup_blend(epoch, center, period)` gives the
  RMSprop share alpha_RMSprop = 1 - alpha_SGD with
      alpha_SGD = clip((epoch - center) / period + 1/2, 0, 1)
  and fastres.optim's FusedSGD/FusedLARS apply, per element,
      v = beta * v + (1 - beta) * g^2
      g_eff = (alpha_SGD + alpha_RMSprop / (sqrt(v) + eps)) * g
  before their momentum update (param group key "rmsprop_blend" = alpha_RMSprop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SCHEDULES", "WARMUPS", "scaled_lr", "LRSchedule", "rmsprop_warmup_blend", "run_schedule"]

SCHEDULES = ("cosine", "poly", "step", "constant")
WARMUPS = ("linear", "slow-start")


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
    warmup_kind: str = "linear"  # linear, slow-start (Akiba et al. 2017)
    slow_start_hold: float = 0.5  # slow-start: fraction of the warm-up held at warmup_start x peak

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps}), total >= 1"
            )
        if self.warmup_kind not in WARMUPS:
            raise ValueError(f"unknown warm-up {self.warmup_kind!r}; choose one of {', '.join(WARMUPS)}")
        if not 0 <= self.slow_start_hold < 1:
            raise ValueError(f"slow_start_hold must be in [0, 1), got {self.slow_start_hold}")

    def __call__(self, step: int) -> float:
        """The lr to use for optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            frac = (step + 1) / self.warmup_steps
            if self.warmup_kind == "slow-start":
                hold = int(self.slow_start_hold * self.warmup_steps)
                frac = 0.0 if step < hold else (step + 1 - hold) / (self.warmup_steps - hold)
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


def rmsprop_warmup_blend(epoch: float, center: float = 10.0, period: float = 5.0) -> float:
    """alpha_RMSprop = 1 - alpha_SGD of Akiba et al.'s RMSprop warm-up at `epoch` (fractional).

    alpha_SGD = clip((epoch - center) / period + 1/2, 0, 1): pure RMSprop until
    center - period / 2, pure momentum SGD from center + period / 2. Defaults are ours.
    """
    if period <= 0:
        raise ValueError(f"period must be > 0, got {period}")
    alpha_sgd = min(1.0, max(0.0, (epoch - center) / period + 0.5))
    return 1.0 - alpha_sgd


def run_schedule(cfg, steps_per_epoch: int, global_batch: int) -> LRSchedule:
    """A training run's schedule from its config (lr per 256 images, epochs, warm-up epochs, kind)."""
    return LRSchedule(
        peak=scaled_lr(cfg.lr, global_batch),
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        kind=cfg.schedule,
    )
