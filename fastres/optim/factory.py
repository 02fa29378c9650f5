"""`--optimizer`: the optimizers a run can train with, by name, built on the model's one flat layout.

OPTIMIZERS maps each name to an `OptimInfo`: how to build it and what the rest of fastres needs to
know of it (its momentum conventions, whether a trust ratio scales its conv/fc weights' step, the
config keys it cannot run without, whether it skips a non-finite step on the device, the param-group
values it takes each step besides lr and momentum). Adding an optimizer is one entry there:
`--optimizer`'s choices and --help, the config's checks, the schedule, --print-schedule and the
training loop read the entry.

    sgd        torch.optim.SGD (foreach): the reference peer
    fused-sgd  fastres FusedSGD: the same update as one fused kernel over the flat layout
    lars       fastres FusedLARS: layer-wise adaptive rate scaling (You et al. 2017), MLPerf's convention
    rmsprop-warmup  fastres FusedSGD with the RMSprop warm-up of Akiba et al. 2017 (sec. 2.2) in its
               fused step; each step its groups take "rmsprop_blend" from `rmsprop_warmup_blend`

`momentum_convention` (mlperf: lr inside the momentum; torch: lr after it); auto is each entry's own
(`OptimInfo.convention`: mlperf for lars and rmsprop-warmup, torch for sgd and fused-sgd).
torch.optim.SGD has only torch's.

Weight decay goes on conv/fc weights only: BN parameters and biases (ndim <= 1) get none,
as in Goyal et al. 2017 and MLPerf's LARS reference; `bias_decay` also decays the biases
(NVIDIA's MLPerf runs: `set_wd_mult` in training_results_v0.7 and v2.0,
NVIDIA/benchmarks/resnet/implementations/mxnet/common/fit.py, zeroes the decay of every
parameter but the weights and the fc bias). BN's gamma and beta are never decayed, and
LARS never adapts a tensor of ndim <= 1 (the same fit.py skips names ending in gamma, beta,
bias). The learning rate starts at 0: the trainer's schedule sets it every step
(`set_hyperparameters`): the groups whose tensors a trust ratio adapts (`"adapt": True`, the
conv/fc weights of an entry with `adapts`) take the schedule's lr and every other group the rate of
the tensors no trust ratio adapts (fastres.optim.schedule: they differ only when an absolute lr
meant for another global batch is scaled for BN and biases, `lr_global_batch`).

RMSprop warm-up (Akiba et al. 2017, sec. 2.2): the optimizer starts as RMSprop and turns into
momentum SGD; `rmsprop_warmup_blend(epoch, center, period)` is alpha_RMSprop = 1 - alpha_SGD, with
alpha_SGD exponential, then linear, in the epoch (centre 10, period 5 epochs in the paper):
    x = (epoch - center) / period
    alpha_SGD = exp(2x) / 2        for x < 0
    alpha_SGD = min(1, 1/2 + x)    for x >= 0
The two pieces meet at the centre at 1/2 with equal slope (1 / period); pure SGD from
center + period / 2 on. The centre and period are the paper's; the exponential's rate is
fastres's reading of its description (unconfirmed). The fused step applies the blend
(csrc/lars.h; formula in fastres.optim.lars).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from fastres.kernels.flat import FlatParams

__all__ = [
    "OPTIMIZERS",
    "OptimConfig",
    "OptimInfo",
    "build_optimizer",
    "momentum_convention",
    "optimizer_problems",
    "param_groups",
    "rmsprop_warmup_blend",
    "set_hyperparameters",
    "set_lrs",
]


class OptimConfig(Protocol):
    """The fields of the training config that every optimizer's build reads (an entry reads its own
    keys besides: lars_eta, lars_eps; rmsprop_lr, rmsprop_beta, rmsprop_eps, rmsprop_center, rmsprop_period)."""

    optimizer: str
    momentum: float
    nesterov: bool
    weight_decay: float
    bias_decay: bool
    momentum_convention: str


# build(param groups, config, lr inside the momentum (the mlperf convention), the model's flat layout or None)
Build = Callable[[list[dict], Any, bool, "FlatParams | None"], torch.optim.Optimizer]


@dataclass(frozen=True)
class OptimInfo:
    """One `--optimizer NAME`: how to build it, and what the config, the schedule and the loop need to know of it."""

    help: str  # --help's words for it, after its name
    build: Build
    convention: str = "torch"  # what momentum_convention auto means for it: mlperf or torch
    conventions: tuple[str, ...] = ("mlperf", "torch")  # the momentum conventions it implements
    adapts: bool = False  # a trust ratio scales its conv/fc weights' step (LARS): they take the lr before it
    requires: tuple[str, ...] = ()  # config keys it cannot run without (None is refused)
    skips_on_device: bool = False  # step(found_inf=t) skips a step with NaN/Inf gradients on the device, no sync
    # the param-group values it takes each step besides lr and momentum, from (the config, the epoch, fractional)
    group_values: Callable[[Any, float], dict[str, float]] | None = None


def _sgd(groups: list[dict], cfg: Any, inside: bool, layout: FlatParams | None) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True)


def _fused_sgd(groups: list[dict], cfg: Any, inside: bool, layout: FlatParams | None, **kw) -> torch.optim.Optimizer:
    from fastres.optim.lars import FusedSGD

    return FusedSGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov, lr_inside_momentum=inside,
                    layout=layout, **kw)  # fmt: skip


def _lars(groups: list[dict], cfg: Any, inside: bool, layout: FlatParams | None) -> torch.optim.Optimizer:
    from fastres.optim.lars import FusedLARS

    return FusedLARS(groups, lr=0.0, momentum=cfg.momentum, eta=cfg.lars_eta, eps=cfg.lars_eps,
                     nesterov=cfg.nesterov, lr_inside_momentum=inside, layout=layout)  # fmt: skip


def _rmsprop_warmup(groups: list[dict], cfg: Any, inside: bool, layout: FlatParams | None) -> torch.optim.Optimizer:
    rmsprop = dict(rmsprop_lr=cfg.rmsprop_lr, rmsprop_beta=cfg.rmsprop_beta, rmsprop_eps=cfg.rmsprop_eps)
    return _fused_sgd(groups, cfg, inside, layout, **rmsprop)


def rmsprop_warmup_blend(epoch: float, center: float = 10.0, period: float = 5.0) -> float:
    """alpha_RMSprop = 1 - alpha_SGD of Akiba et al.'s RMSprop warm-up at `epoch` (fractional).

    alpha_SGD = exp(2x) / 2 for x = (epoch - center) / period < 0, else min(1, 1/2 + x)
    (module docstring; centre 10 and period 5 epochs are the paper's, sec. 2.2)."""
    if period <= 0:
        raise ValueError(f"period must be > 0, got {period}")
    x = (epoch - center) / period
    alpha_sgd = 0.5 * math.exp(2 * x) if x < 0 else min(1.0, 0.5 + x)
    return 1.0 - alpha_sgd


def _rmsprop_blend(cfg: Any, epoch: float) -> dict[str, float]:
    return {"rmsprop_blend": rmsprop_warmup_blend(epoch, cfg.rmsprop_center, cfg.rmsprop_period)}


OPTIMIZERS: dict[str, OptimInfo] = {
    "sgd": OptimInfo("torch.optim.SGD", _sgd, conventions=("torch",)),
    "fused-sgd": OptimInfo("fastres FusedSGD: one fused kernel over the flat layout", _fused_sgd, skips_on_device=True),
    "lars": OptimInfo(
        "fastres FusedLARS, MLPerf convention", _lars, convention="mlperf", adapts=True, skips_on_device=True
    ),
    "rmsprop-warmup": OptimInfo(
        "FusedSGD starting as RMSprop and blending into momentum SGD, Akiba et al. 2017",
        _rmsprop_warmup,
        convention="mlperf",
        requires=("rmsprop_lr",),
        skips_on_device=True,
        group_values=_rmsprop_blend,
    ),
}


def momentum_convention(optimizer: str, convention: str) -> str:
    """mlperf or torch: `convention`, with auto resolved to `optimizer`'s own."""
    return OPTIMIZERS[optimizer].convention if convention == "auto" else convention


def optimizer_problems(cfg: OptimConfig) -> list[tuple[str, str]]:
    """(key, what it must be) for each key `cfg.optimizer` cannot run with: a key it requires left unset, a
    momentum convention it does not implement. Empty when it can run."""
    name, info = cfg.optimizer, OPTIMIZERS[cfg.optimizer]
    problems = [(key, f"set with --optimizer {name}") for key in info.requires if getattr(cfg, key) is None]
    convention = momentum_convention(name, cfg.momentum_convention)
    if convention not in info.conventions:
        other = next((n for n, i in OPTIMIZERS.items() if convention in i.conventions), None)
        instead = f"; {other} takes {convention}" if other else ""
        problems.append(("momentum_convention", f"{' or '.join(info.conventions)} or auto with --optimizer {name} "
                                                f"({info.help}{instead})"))  # fmt: skip
    return problems


def param_groups(model: nn.Module, weight_decay: float, bias_decay: bool = False) -> list[dict]:
    """Weight decay on conv/fc weights only; BN parameters and biases (ndim <= 1) get none,
    except the biases with `bias_decay` (BN parameters never). The conv/fc weights (ndim > 1,
    the tensors LARS adapts) are the first group, alone: a group's tensors share one lr."""
    bn = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    params = list(model.parameters())
    weights = [p for p in params if p.ndim > 1]
    biases = [p for p in params if p.ndim <= 1 and bias_decay and id(p) not in bn]
    rest = [p for p in params if p.ndim <= 1 and not (bias_decay and id(p) not in bn)]
    groups = [{"params": weights, "weight_decay": weight_decay}]
    if biases:  # FusedLARS: decay these ndim <= 1 tensors too (its default: none)
        groups.append({"params": biases, "weight_decay": weight_decay, "decay": True})
    return [*groups, {"params": rest, "weight_decay": 0.0}]


def set_lrs(optimizer: torch.optim.Optimizer, lr: float, unadapted_lr: float) -> None:
    """This step's rates into the param groups: `lr` where LARS adapts the tensors (a group marked
    "adapt": True), `unadapted_lr` everywhere else (module doc)."""
    for group in optimizer.param_groups:
        group["lr"] = lr if group.get("adapt") else unadapted_lr


def set_hyperparameters(optimizer: torch.optim.Optimizer, schedule, step: int) -> float:
    """Step `step`'s rates, momentum and the optimizer's own per-step values (OptimInfo.group_values) from
    `schedule` (fastres.optim.schedule.LRSchedule) into every param group that has them. Returns the conv/fc
    weights' lr (the first group's: param_groups)."""
    set_lrs(optimizer, schedule(step), schedule.unadapted(step))
    values = schedule.group_values(step)
    for group in optimizer.param_groups:
        group.update({key: value for key, value in values.items() if key in group})
    return optimizer.param_groups[0]["lr"]


def build_optimizer(cfg: OptimConfig, model: nn.Module, layout: FlatParams | None = None) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names, over `model`'s parameters.

    layout: the model's FlatParams when it has one (a distributed run's reducer slices its
    gradient buffer); the fused optimizers then step that layout, else they build it. Build
    after the model's last .to() (device, channels_last)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    problems = optimizer_problems(cfg)
    if problems:
        key, what = problems[0]
        raise ValueError(f"{key}: must be {what}, got {getattr(cfg, key)!r}")
    info = OPTIMIZERS[cfg.optimizer]
    groups = param_groups(model, cfg.weight_decay, cfg.bias_decay)
    if info.adapts:
        groups[0]["adapt"] = True  # the conv/fc weights (set_lrs); FusedLARS adapts ndim > 1 by default
    inside = momentum_convention(cfg.optimizer, cfg.momentum_convention) == "mlperf"
    return info.build(groups, cfg, inside, layout)
