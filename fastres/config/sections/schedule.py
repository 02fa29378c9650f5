"""The schedule section: the warm-up, the decay, where steps sit on them, and when training stops early.

The decays there are, and how many factors each takes, are fastres.optim.schedule's SCHEDULES. The loss's
label smoothing sits here too, where --help lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastres.config.key import Need, Range, Section, key
from fastres.optim.schedule import ORIGINS, ROUNDINGS, SCHEDULES, factors_problem

__all__ = ["ScheduleConfig"]


def _schedule_help() -> str:
    kinds = ", ".join(name + (f" ({decay.help})" if decay.help else "") for name, decay in SCHEDULES.items())
    return f"learning-rate decay after warm-up: {kinds}"


@dataclass
class ScheduleConfig(Section):
    title: ClassVar[str] = "optimisation"

    schedule_origin: str = key(
        "fastres",
        "where step 0 sits on the warm-up and decay: fastres (warm-up step k at "
        "(k+1)/W, decay from step W), mxnet (every step at its update number step+1, as "
        "NVIDIA's MLPerf runs: the last step at --end-lr), zero (step 0 at the warm-up's start, "
        "Goyal et al. 2017)",
        choices=ORIGINS,
    )
    steps_rounding: str = key(
        "floor",
        "steps per epoch: floor (an epoch's incomplete batch is dropped) or ceil "
        "(NVIDIA's MLPerf runs: ceil(floor(images / processes) / batch), the last batch filled "
        "up to a whole batch; every backend)",
        choices=ROUNDINGS,
    )
    label_smoothing: float = key(0.1, "label smoothing of the cross-entropy loss, in [0, 1)", Range("[", 0, 1, ")"))
    schedule: str = key("cosine", _schedule_help, choices=SCHEDULES)
    milestones: list[float] | None = key(
        None,
        "epochs at which step and piecewise schedules change the lr, "
        "comma-separated (e.g. 30,60,80); none: 1/3, 2/3, 8/9 of training (step)",
        Range("[", 0, 100_000, "]"),
    )  # a milestone after the last epoch never applies
    factors: list[float] | None = key(
        None,
        "lr as a fraction of the peak before the first milestone and from each "
        "one on, comma-separated, one more than --milestones; none: 1, 0.1, 0.01, ... "
        "(step)",
        Range("[", 0, 100, "]"),
    )
    poly_power: float = key(2.0, "power of the poly decay", Range("(", 0, 100, "]"))
    end_lr: float | None = key(
        None, "lr at the end of a cosine or poly decay, in the unit of --lr-unit; none: 0", Range("[", 0, 100, "]")
    )
    warmup_epochs: float = key(
        5.0, "epochs of linear warm-up to the peak learning rate (may be fractional)", Range("[", 0, 100_000, "]")
    )
    warmup_start: float = key(
        0.0,
        "first lr of the warm-up as a fraction of the peak (Goyal et al. 2017 at 8K: 0.1 / 3.2 = 0.03125)",
        Range("[", 0, 1, "]"),
    )
    target_top1: float | None = key(
        None, "stop once validation top-1 reaches this percentage; none: train every epoch", Range("[", 0, 100, "]")
    )

    def rules(self, need: Need) -> None:
        need(self.warmup_epochs <= self.epochs, "warmup_epochs", f"in [0, epochs={self.epochs}]")
        if self.milestones is not None:
            need(all(a < b for a, b in zip(self.milestones, self.milestones[1:])), "milestones", "increasing")
        problem = factors_problem(self.schedule, self.milestones, self.factors)
        need(problem is None, "factors", problem or "")

    def short_warmup(self) -> float | None:
        """A warm-up the command line did not set, fitted to a short run: at most half of it (None when it fits).

        The recipe's 5 epochs (Goyal et al. 2017, sec. 2.2) cover the unstable start of training at a large
        rate, whatever the run's length: a run of 10 epochs or more keeps them as they are. A shorter run warms
        up over half of itself, leaving the other half to the decay, instead of being refused for a warm-up
        its user never gave."""
        return self.epochs / 2 if self.epochs >= 1 and self.warmup_epochs > self.epochs / 2 else None
