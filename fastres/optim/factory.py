"""`--optimizer`: the optimizer a run trains with, built on the model's one flat layout.

    sgd        torch.optim.SGD (foreach): the reference peer
    fused-sgd  fastres FusedSGD: the same update as one fused kernel over the flat layout
    lars       fastres FusedLARS: layer-wise adaptive rate scaling (You et al. 2017), MLPerf's convention
    rmsprop-warmup  fastres FusedSGD with the RMSprop warm-up of Akiba et al. 2017 (sec. 2.2) in its
               fused step; the trainer sets each group's "rmsprop_blend" from the schedule

`momentum_convention` (mlperf: lr inside the momentum; torch: lr after it; auto: mlperf for
lars and rmsprop-warmup, torch for sgd and fused-sgd, which is what each did before the key
existed). torch.optim.SGD has only torch's.

Weight decay goes on conv/fc weights only: BN parameters and biases (ndim <= 1) get none,
as in Goyal et al. 2017 and MLPerf's LARS reference; `bias_decay` also decays the biases
(NVIDIA's MLPerf runs: `set_wd_mult` in training_results_v0.7 and v2.0,
NVIDIA/benchmarks/resnet/implementations/mxnet/common/fit.py, zeroes the decay of every
parameter but the weights and the fc bias). BN's gamma and beta are never decayed, and
LARS never adapts a tensor of ndim <= 1 (the same fit.py skips names ending in gamma, beta,
bias). The learning rate starts at 0: the
trainer's schedule sets it every step: `set_lrs` gives the groups whose tensors LARS adapts
(`"adapt": True`, the conv/fc weights under lars) the schedule's lr and every other group the
rate of the tensors no trust ratio adapts (fastres.optim.schedule: they differ only when an
absolute lr meant for another global batch is scaled for BN and biases, `lr_global_batch`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from fastres.kernels.flat import FlatParams

__all__ = ["OPTIMIZERS", "OptimConfig", "build_optimizer", "param_groups", "set_lrs"]

OPTIMIZERS = ("sgd", "fused-sgd", "lars", "rmsprop-warmup")


class OptimConfig(Protocol):
    """The fields of the training config that the optimizer factory reads."""

    optimizer: str
    momentum: float
    nesterov: bool
    weight_decay: float
    lars_eta: float
    # read with getattr and these defaults where absent: lars_eps 0, momentum_convention auto,
    # rmsprop_lr, rmsprop_beta 0.99, rmsprop_eps 1e-8, bias_decay False


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


def build_optimizer(cfg: OptimConfig, model: nn.Module, layout: FlatParams | None = None) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names, over `model`'s parameters.

    layout: the model's FlatParams when it has one (a distributed run's reducer slices its
    gradient buffer); the fused optimizers then step that layout, else they build it. Build
    after the model's last .to() (device, channels_last)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    groups = param_groups(model, cfg.weight_decay, getattr(cfg, "bias_decay", False))
    convention = getattr(cfg, "momentum_convention", "auto")
    if convention == "auto":
        convention = "mlperf" if cfg.optimizer in ("lars", "rmsprop-warmup") else "torch"
    inside = convention == "mlperf"
    if cfg.optimizer == "lars":
        from fastres.optim.lars import FusedLARS

        groups[0]["adapt"] = True  # the conv/fc weights (set_lrs); FusedLARS adapts ndim > 1 by default

        return FusedLARS(groups, lr=0.0, momentum=cfg.momentum, eta=cfg.lars_eta, eps=getattr(cfg, "lars_eps", 0.0),
                         nesterov=cfg.nesterov, lr_inside_momentum=inside, layout=layout)  # fmt: skip
    if cfg.optimizer in ("fused-sgd", "rmsprop-warmup"):
        from fastres.optim.lars import FusedSGD

        kw = {}
        if cfg.optimizer == "rmsprop-warmup":
            if getattr(cfg, "rmsprop_lr", None) is None:
                raise ValueError("rmsprop_lr: rmsprop-warmup needs RMSprop's own rate")
            kw = dict(
                rmsprop_lr=cfg.rmsprop_lr,
                rmsprop_beta=getattr(cfg, "rmsprop_beta", 0.99),
                rmsprop_eps=getattr(cfg, "rmsprop_eps", 1e-8),
            )
        return FusedSGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov, lr_inside_momentum=inside,
                        layout=layout, **kw)  # fmt: skip
    if not inside:
        return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True)
    raise ValueError("momentum_convention: torch.optim.SGD (optimizer sgd) has only the torch convention")
