"""`--optimizer`: the optimizer a run trains with, built on the model's one flat layout.

    sgd        torch.optim.SGD (foreach): the reference peer
    fused-sgd  fastres FusedSGD: the same update as one fused kernel over the flat layout
    lars       fastres FusedLARS: layer-wise adaptive rate scaling (You et al. 2017), MLPerf's convention

Weight decay goes on conv/fc weights only: BN parameters and biases (ndim <= 1) get none,
as in Goyal et al. 2017 and MLPerf's LARS reference. The learning rate starts at 0: the
trainer's schedule sets it every step.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from fastres.flat import FlatParams

__all__ = ["OPTIMIZERS", "OptimConfig", "build_optimizer", "param_groups"]

OPTIMIZERS = ("sgd", "fused-sgd", "lars")


class OptimConfig(Protocol):
    """The fields of the training config that the optimizer factory reads."""

    optimizer: str
    momentum: float
    nesterov: bool
    weight_decay: float
    lars_eta: float


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/fc weights only; BN parameters and biases (ndim <= 1) get none."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: OptimConfig, model: nn.Module, layout: FlatParams | None = None) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names, over `model`'s parameters.

    layout: the model's FlatParams when it has one (a distributed run's reducer slices its
    gradient buffer); the fused optimizers then step that layout, else they build it. Build
    after the model's last .to() (device, channels_last)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "lars":
        from fastres.optim.lars import FusedLARS

        return FusedLARS(groups, lr=0.0, momentum=cfg.momentum, eta=cfg.lars_eta, nesterov=cfg.nesterov, layout=layout)
    if cfg.optimizer == "fused-sgd":
        from fastres.optim.lars import FusedSGD

        return FusedSGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov, layout=layout)
    return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True)
