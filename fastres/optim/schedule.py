"""Learning-rate (and momentum, and RMSprop warm-up) schedules as pure functions of the step.

No state, nothing to checkpoint. The trainer calls `run_schedule(cfg, steps_per_epoch,
global_batch)` once, then each optimizer step `schedule(step)` for the lr, `schedule.unadapted(step)`
and `schedule.group_values(step)` (the momentum and the optimizer's own values): all through
fastres.optim.factory.set_hyperparameters.

    lr(step) = warm-up(step) for step < warmup_steps, then decay(step)

- Linear scaling rule (Goyal et al. 2017, sec. 2.1): `scaled_lr(base, global_batch)` =
  base * global_batch / 256, where `base` is the lr per 256 images (`lr_unit: per-256`);
  `lr_unit: absolute` takes `lr` as the peak itself (MLPerf configs state absolute values).
- An absolute lr set for one global batch (`lr_global_batch`: a record's preset) at another one: LARS's
  conv/fc step is lr x eta x ||w|| / ||g||, which the records keep at every batch, but the
  tensors it does not adapt (BN, biases: trust 1) step by lr itself, as SGD does, so their rate
  is scaled linearly: `unadapted(step)` = lr(step) x global batch / lr_global_batch (`unadapted_scale`;
  1 without lr_global_batch and with per-256, which scales every tensor already). Without LARS every
  tensor takes `unadapted(step)`.
- Linear warm-up from `warmup_start` x peak to the peak over `warmup_steps` (Goyal et al.
  sec. 2.2, "gradual warm-up": from eta = 0.1 to 3.2 at 8K over 5 epochs, i.e. a start of
  1/32 of the peak there):
      lr(step) = peak * (s + (1 - s) * (step + 1) / W)      for step < W
  (step W - 1 reaches the peak; s = warmup_start, W = warmup_steps). Preferred Networks'
  "slow-start" is the piecewise schedule below.
- Decays after warm-up, over the remaining steps, t in [0, 1], end = end lr / peak:
  `cosine`: peak * (end + (1 - end) * (1 + cos(pi t)) / 2) (Loshchilov & Hutter 2017);
  `poly`:   peak * (end + (1 - end) * (1 - t)^power) (MLPerf's ResNet-50 LARS reference: power 2,
            end lr 1e-4);
  `step`, `piecewise`: peak * factors[k] from milestone k on (milestones in steps; `step`'s
            factors default to 0.1^k and its milestones to 1/3, 2/3, 8/9 of training: He et al.
            2016's epochs 30, 60, 80 of 90). Preferred Networks' schedule (Akiba, Suzuki &
            Fukuda 2017, arXiv:1711.04325, sec. 2.3) is piecewise: factors 0.5, 0.075, 0.01,
            0.001 of the linearly scaled lr from epochs 0, 40, 70, 85;
  `constant`.
  During a warm-up, `step`/`piecewise` ramp to peak * factors[0]. SCHEDULES maps each `--schedule`
  name to its `Decay`: adding a kind is one entry there (--help and the config's checks read it).
- Where a step sits on the warm-up and decay (`origin`, config key `schedule_origin`):
  `fastres` (the default): as above, the warm-up's step k at (k + 1) / W, the decay's t from
  step W at 0; `mxnet`: every step at its update number i = step + 1 (MXNet's num_update, from
  which NVIDIA's MLPerf PolySchedule reads its lr: training_results_v0.7 and v2.0,
  NVIDIA/benchmarks/resnet/implementations/mxnet/common/fit.py, `PolySchedule.__call__`):
  warm-up lr = peak * i / W for i <= W, then t = (i - W) / (total - W), so the last step ends at
  the end lr; `zero`: i = step (Goyal et al. sec. 2.2: iteration 0 at the warm-up's start,
  eta = 0.1, then a constant added each iteration). Milestones are steps in all three.
- Momentum correction (`momentum_correction`): the momentum of step t is mu * lr_t / lr_(t-1)
  (mu at step 0, and where lr_(t-1) is 0): Goyal et al. 2017, sec. 2.1 Remark 2 / eq. (10), and
  NVIDIA's sgdwfastlars (`kwargs['momentum'] = self.momentum * (self.cur_lr / self.last_lr)` in
  the same fit.py, with last_lr = lr at the first update). With the lr inside the momentum
  (momentum_convention mlperf) it keeps the momentum in units of the current lr.
- The optimizer's own per-step values (fastres.optim.factory, `OptimInfo.group_values`): e.g.
  the RMSprop warm-up's blend of Akiba et al. 2017 (`rmsprop_blend(step)`), from the fractional
  epoch; `group_values(step)` gives them with the momentum, as the param groups take them.
- Steps per epoch are the loaders' count (fastres.data.dataset.train_steps): a schedule is given them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastres.optim.factory import OPTIMIZERS, rmsprop_warmup_blend

__all__ = [
    "ORIGINS",
    "ROUNDINGS",
    "SCHEDULES",
    "Decay",
    "factors_problem",
    "scaled_lr",
    "peak_lr",
    "LRSchedule",
    "rmsprop_warmup_blend",
    "run_schedule",
    "unadapted_scale",
    "schedule_rows",
    "schedule_table",
]


@dataclass(frozen=True)
class Decay:
    """One `--schedule` kind: the lr after the warm-up."""

    help: str  # --help's words for it after its name ("" for none)
    lr: Callable[[LRSchedule, int, float], float]  # (schedule, step, t: the share of the decay done, in [0, 1])
    # a kind that steps at milestones: its default ones, as fractions of training (() for none); None: no milestones
    milestones: tuple[float, ...] | None = None
    factor: Callable[[int], float] | None = None  # lr / peak after k milestones without --factors; None: needs them


def _cosine(s: LRSchedule, step: int, t: float) -> float:
    return s.peak * (s.end_factor + (1 - s.end_factor) * 0.5 * (1 + math.cos(math.pi * t)))


def _poly(s: LRSchedule, step: int, t: float) -> float:
    return s.peak * (s.end_factor + (1 - s.end_factor) * (1 - t) ** s.power)


def _stepped(s: LRSchedule, step: int, t: float) -> float:
    return s.peak * s._factor(step)


SCHEDULES: dict[str, Decay] = {
    "cosine": Decay("", _cosine),
    "poly": Decay("power --poly-power", _poly),
    "step": Decay(
        "x --factors, default x0.1 each, at --milestones, default 1/3, 2/3, 8/9 of training",
        _stepped,
        milestones=(1 / 3, 2 / 3, 8 / 9),
        factor=lambda k: 0.1**k,
    ),
    "piecewise": Decay("lr x --factors from each of --milestones", _stepped, milestones=()),
    "constant": Decay("", lambda s, step, t: s.peak),
}
ORIGINS = ("fastres", "mxnet", "zero")  # where step 0 sits on the warm-up and decay (module doc)
ROUNDINGS = ("floor", "ceil")  # steps per epoch (fastres.data.dataset.train_steps)


def factors_problem(kind: str, milestones: Sequence | None, factors: Sequence | None) -> str | None:
    """What `factors` must be for a `kind` schedule with `milestones` (None: the kind's default ones), or None
    when they do: a kind without default factors needs them, and there is one more than milestones."""
    decay = SCHEDULES[kind]
    if factors is None:
        return f"given with --schedule {kind}" if decay.milestones is not None and decay.factor is None else None
    n = len(milestones) if milestones is not None else len(decay.milestones or ())
    return None if len(factors) == n + 1 else f"{n + 1} numbers (one more than the {n} milestones)"


def scaled_lr(lr_per_256: float, global_batch: int) -> float:
    """Goyal et al.'s linear scaling rule: the peak lr grows with the global batch."""
    return lr_per_256 * global_batch / 256


def peak_lr(lr: float, lr_unit: str, global_batch: int) -> float:
    """The run's peak lr: `lr` itself (absolute) or scaled from per 256 images (per-256)."""
    if lr_unit == "absolute":
        return float(lr)
    if lr_unit == "per-256":
        return scaled_lr(lr, global_batch)
    raise ValueError(f"lr_unit: must be per-256 or absolute, got {lr_unit!r}")


@dataclass(frozen=True)
class LRSchedule:
    peak: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "cosine"
    end_factor: float = 0.0  # final lr as a fraction of the peak (cosine, poly)
    warmup_start: float = 0.0  # first warm-up lr as a fraction of the peak
    milestones: tuple[float, ...] | None = None  # step, piecewise: fractions of total_steps; None: the kind's
    milestone_steps: tuple[int, ...] | None = None  # step, piecewise: milestones in steps (overrides milestones)
    factors: tuple[float, ...] | None = None  # step, piecewise: lr / peak from each milestone on
    power: float = 2.0  # poly
    base_momentum: float = 0.9  # momentum(step): constant
    steps_per_epoch: int = 1  # for per_step (epochs)
    per_step: Callable[[float], dict[str, float]] | None = None  # the optimizer's own values at a fractional epoch
    origin: str = "fastres"  # fastres, mxnet, zero (module doc)
    momentum_correction: bool = False  # momentum(step) = mu * lr(step) / lr(step - 1)
    unadapted_scale: float = 1.0  # the rate of tensors no trust ratio adapts, as a multiple of lr(step)

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps}), total >= 1"
            )
        milestones = self.milestone_steps if self.milestone_steps is not None else self.milestones
        problem = factors_problem(self.kind, milestones, self.factors)
        if problem:
            raise ValueError(f"factors: must be {problem}, got {self.factors}")
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")
        if self.origin not in ORIGINS:
            raise ValueError(f"unknown origin {self.origin!r}; choose one of {', '.join(ORIGINS)}")

    def _factor(self, step: int) -> float:
        if self.milestone_steps is not None:
            passed = sum(step >= m for m in self.milestone_steps)
        else:
            milestones = self.milestones if self.milestones is not None else SCHEDULES[self.kind].milestones or ()
            passed = sum(step >= m * self.total_steps for m in milestones)
        return self.factors[passed] if self.factors is not None else SCHEDULES[self.kind].factor(passed)

    def __call__(self, step: int) -> float:
        """The lr to use for optimizer step `step` (0-based)."""
        if self.origin != "fastres":
            return self._counted(step + (1 if self.origin == "mxnet" else 0), step)
        if step < self.warmup_steps:
            return self._warm((step + 1) / self.warmup_steps)
        return self._decay(step, step - self.warmup_steps)

    def _warm(self, frac: float) -> float:
        stepped = SCHEDULES[self.kind].milestones is not None
        target = self.peak * (self._factor(0) if stepped else 1.0)
        return target * (self.warmup_start + (1 - self.warmup_start) * frac)

    def _decay(self, step: int, into: float) -> float:
        """The lr `into` steps after the warm-up (step: for the milestones)."""
        decay_steps = self.total_steps - self.warmup_steps
        t = min(1.0, into / decay_steps) if decay_steps else 1.0
        return SCHEDULES[self.kind].lr(self, step, t)

    def _counted(self, i: int, step: int) -> float:
        """origin mxnet / zero: the lr at update number i (the warm-up up to and including i = W)."""
        W = self.warmup_steps
        if W and i <= W:
            return self._warm(i / W)
        return self._decay(step, i - W)

    def unadapted(self, step: int) -> float:
        """The lr of step `step` for the tensors no trust ratio adapts (BN, biases; every tensor of SGD)."""
        return self(step) * self.unadapted_scale

    def momentum(self, step: int) -> float:
        """The momentum for step `step`: mu, or with the momentum correction mu * lr(step) / lr(step - 1)."""
        if not self.momentum_correction or step <= 0:
            return self.base_momentum
        before = self(step - 1)
        return self.base_momentum * self(step) / before if before > 0 else self.base_momentum

    def group_values(self, step: int) -> dict[str, float]:
        """What every param group that has the key takes at step `step` besides the lr: the momentum and the
        optimizer's own per-step values (fastres.optim.factory.set_hyperparameters)."""
        own = self.per_step(step / self.steps_per_epoch) if self.per_step is not None else {}
        return {"momentum": self.momentum(step), **own}

    def rmsprop_blend(self, step: int) -> float:
        """alpha_RMSprop for step `step` (0 without the RMSprop warm-up)."""
        return self.group_values(step).get("rmsprop_blend", 0.0)


def run_schedule(cfg: Any, steps_per_epoch: int, global_batch: int) -> LRSchedule:
    """A training run's schedule from its config.

    steps_per_epoch: optimizer steps per epoch; global_batch: images per optimizer step over
    all processes (with gradient accumulation: batch_size x processes x accumulate)."""
    peak = peak_lr(cfg.lr, cfg.lr_unit, global_batch)
    end_factor = 0.0
    if cfg.end_lr is not None and peak > 0:
        end_factor = peak_lr(cfg.end_lr, cfg.lr_unit, global_batch) / peak
    milestones = cfg.milestones
    own = OPTIMIZERS[cfg.optimizer].group_values
    return LRSchedule(
        peak=peak,
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        kind=cfg.schedule,
        end_factor=end_factor,
        warmup_start=cfg.warmup_start,
        milestone_steps=None if milestones is None else tuple(round(e * steps_per_epoch) for e in milestones),
        factors=None if cfg.factors is None else tuple(cfg.factors),
        power=cfg.poly_power,
        base_momentum=cfg.momentum,
        steps_per_epoch=steps_per_epoch,
        per_step=None if own is None else (lambda epoch: own(cfg, epoch)),
        origin=cfg.schedule_origin,
        momentum_correction=cfg.momentum_correction,
        unadapted_scale=unadapted_scale(cfg.lr_unit, cfg.lr_global_batch, global_batch),
    )


def unadapted_scale(lr_unit: str, lr_global_batch: int | None, global_batch: int) -> float:
    """The rate of the tensors no trust ratio adapts, as a multiple of the lr: global_batch / lr_global_batch for
    an absolute lr set for lr_global_batch images per step (module doc), else 1."""
    return global_batch / lr_global_batch if lr_unit == "absolute" and lr_global_batch else 1.0


def schedule_rows(cfg: Any, global_batch: int, *, steps: int) -> list[dict]:
    """One row per epoch: the lr, momentum (and RMSprop blend) at the epoch's first step, at `global_batch`
    images per optimizer step and `steps` steps per epoch (as the run's loaders count them). `lr`: the conv/fc
    weights' rate (under a trust ratio: before it); `lr_bn_bias`: BN parameters' and biases' rate (module doc:
    they differ with an absolute lr at a batch other than lr_global_batch)."""
    schedule = run_schedule(cfg, steps, global_batch)
    adapted = OPTIMIZERS[cfg.optimizer].adapts  # only a trust ratio's optimizer takes lr before it (factory)
    rows = []
    for epoch in range(cfg.epochs):
        step = epoch * steps
        rows.append(
            dict(
                epoch=epoch,
                step=step,
                lr=schedule(step) if adapted else schedule.unadapted(step),
                momentum=schedule.momentum(step),
                batch=global_batch,
                rmsprop_blend=schedule.rmsprop_blend(step),
                lr_bn_bias=schedule.unadapted(step),
            )
        )
    return rows


def schedule_table(cfg: Any, global_batch: int, train_images: int, steps: int) -> str:
    """`python -m fastres.train --print-schedule`: a header line, then one line per epoch (`train_images`
    images per epoch in `steps` steps)."""
    rows = schedule_rows(cfg, global_batch, steps=steps)
    scale = unadapted_scale(cfg.lr_unit, cfg.lr_global_batch, global_batch)
    head = (
        f"# {cfg.epochs} epochs x {steps} steps ({train_images:,} images, global batch {global_batch:,}), "
        f"optimizer {cfg.optimizer}, schedule {cfg.schedule}; lr at each epoch's first step"
        + ("; momentum corrected by lr_t / lr_t-1" if cfg.momentum_correction else "")
        + "; lr: conv/fc weights"
        + (" (x LARS's trust ratio)" if OPTIMIZERS[cfg.optimizer].adapts else "")
        + ", lr_bn_bias: BN parameters and biases"
        + (f" (--lr x {global_batch:,} / --lr-global-batch {cfg.lr_global_batch:,})" if scale != 1 else "")
    )
    lines = [head, f"{'epoch':>5} {'step':>9} {'lr':>12} {'momentum':>8} {'batch':>7} {'rmsprop_blend':>13} "
             f"{'lr_bn_bias':>12}"]  # fmt: skip
    for r in rows:
        lines.append(
            f"{r['epoch']:>5} {r['step']:>9} {r['lr']:>12.6g} {r['momentum']:>8.4g} {r['batch']:>7} "
            f"{r['rmsprop_blend']:>13.4g} {r['lr_bn_bias']:>12.6g}"
        )
    return "\n".join(lines)
