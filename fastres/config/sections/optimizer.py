"""The optimizer section: the optimizer, its rates and its own keys.

Which optimizers there are, and what each needs (keys, momentum conventions), is fastres.optim.factory's
OPTIMIZERS: `--optimizer`'s choices, the --help of --optimizer and --momentum-convention, and the rules
below read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastres.config.key import Need, Range, Section, key
from fastres.optim.factory import OPTIMIZERS, momentum_convention, optimizer_problems

__all__ = ["LR_UNITS", "MOMENTUM_CONVENTIONS", "OptimizerConfig"]

LR_UNITS = ("per-256", "absolute")
MOMENTUM_CONVENTIONS = ("auto", "mlperf", "torch")


def _and(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _optimizer_help() -> str:
    return ", ".join(f"{name} ({info.help})" for name, info in OPTIMIZERS.items())


def _convention_help() -> str:
    by = {c: [n for n, info in OPTIMIZERS.items() if info.convention == c] for c in ("mlperf", "torch")}
    auto = ", ".join(f"{c} for {_and(names)}" for c, names in by.items() if names)
    limited = [(n, i.conventions) for n, i in OPTIMIZERS.items() if len(i.conventions) < len(by)]
    only = "".join(f"; {n} allows {' or '.join(conventions)} only" for n, conventions in limited)
    formulas = "mlperf (m = mu m + lr g; w -= m), torch (m = mu m + g; w -= lr m)"
    return f"where the lr enters the momentum: {formulas}, auto ({auto}){only}"


@dataclass
class OptimizerConfig(Section):
    title: ClassVar[str] = "optimisation"

    lr: float = key(
        0.1,
        "peak learning rate, in the unit of --lr-unit: per 256 images (the run uses lr x global "
        "batch / 256, Goyal et al. 2017) or absolute",
        Range("[", 0, 100, "]"),
    )
    lr_unit: str = key(
        "per-256",
        "unit of --lr and --end-lr: per-256 (scaled linearly with the global batch) or absolute",
        choices=LR_UNITS,
    )
    lr_global_batch: int | None = key(
        None,
        "with --lr-unit absolute: the global batch --lr was set for (a record's "
        "preset sets its own). At another global batch the tensors whose step no trust "
        "ratio scales (BN parameters and biases with --optimizer lars, every tensor "
        "without LARS) take --lr x global batch / this, linearly scaled; LARS's conv/fc "
        "weights keep --lr (their step is lr x eta x ||w|| / ||g||); none: --lr for "
        "every tensor at any batch",
        Range("[", 1, 1 << 24, "]"),
    )
    momentum: float = key(0.9, "momentum coefficient, in [0, 1)", Range("[", 0, 1, ")"))
    nesterov: bool = key(False, "Nesterov momentum")
    optimizer: str = key("sgd", _optimizer_help, choices=OPTIMIZERS)
    momentum_convention: str = key("auto", _convention_help, choices=MOMENTUM_CONVENTIONS)
    lars_eta: float = key(
        0.001, "LARS trust coefficient eta (You et al. 2017; MLPerf uses 0.001)", Range("[", 0, 1, "]")
    )
    lars_eps: float = key(0.0, "LARS epsilon: trust = eta ||w|| / (||g|| + wd ||w|| + eps)", Range("[", 0, 1, "]"))
    rmsprop_lr: float | None = key(
        None,
        "RMSprop's own learning rate in the RMSprop warm-up (absolute, not scaled "
        "with the batch); needed with --optimizer rmsprop-warmup",
        Range("[", 0, 100, "]"),
    )
    rmsprop_center: float = key(
        10.0, "epoch at which the RMSprop warm-up is half RMSprop, half SGD", Range("[", 0, 100_000, "]")
    )  # Akiba et al. 2017, sec. 2.2
    rmsprop_period: float = key(
        5.0,
        "epochs over which the RMSprop warm-up turns into SGD (pure SGD from centre + period/2)",
        Range("(", 0, 100_000, "]"),
    )  # Akiba et al. 2017, sec. 2.2
    rmsprop_beta: float = key(
        0.99, "RMSprop's decay of the average of squared gradients, in [0, 1)", Range("[", 0, 1, ")")
    )
    rmsprop_eps: float = key(1e-8, "added to RMSprop's root mean square", Range("[", 0, 1, "]"))
    weight_decay: float = key(
        1e-4, "L2 weight decay on conv and fc weights (BN parameters and biases get none)", Range("[", 0, 1, "]")
    )
    bias_decay: bool = key(
        False,
        "weight decay on the biases too (the fc bias; NVIDIA's MLPerf runs decay every "
        "weight and the fc bias, BN's gamma and beta never)",
    )
    momentum_correction: bool = key(
        False,
        "scale the momentum by lr_t / lr_t-1 each step (Goyal et al. 2017 eq. 10, "
        "NVIDIA's MLPerf sgdwfastlars); needs --momentum-convention mlperf (torch's "
        "convention needs none)",
    )

    def rules(self, need: Need) -> None:
        if self.lr_global_batch is not None:
            need(self.lr_unit == "absolute", "lr_global_batch", "none with --lr-unit per-256 (the rate is scaled "
                 "with the global batch already)")  # fmt: skip
        for key_, what in optimizer_problems(self):
            need(False, key_, what)
        if self.momentum_correction:
            inside = momentum_convention(self.optimizer, self.momentum_convention) == "mlperf"
            need(inside, "momentum_correction", "used with --momentum-convention mlperf (the lr inside the "
                 "momentum; torch's convention needs no correction)")  # fmt: skip
