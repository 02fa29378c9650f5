"""Each published run beside the model's prediction: `python -m fastres.plan --validate`."""

from __future__ import annotations

from dataclasses import dataclass

from fastres.plan.calibrate import cluster_for, job_for, speed_for
from fastres.plan.cost import Estimate, estimate
from fastres.plan.records import BAND, RUNS, Run

__all__ = ["Check", "check", "checks", "validation_table"]


@dataclass(frozen=True)
class Check:
    run: Run
    estimate: Estimate
    predicted_s: float  # in the unit of run.published_s
    ratio: float  # predicted / published: < 1 the model is too fast

    @property
    def inside(self) -> bool:
        return abs(self.ratio - 1) <= self.run.band


def check(run: Run) -> Check:
    est = estimate(cluster_for(run, speed_for(run)), job_for(run))
    if run.kind == "step":
        predicted = est.step_time_s
    elif run.kind == "throughput":
        predicted = 1 / est.images_per_s
    else:
        predicted = est.time_to_train_s
    return Check(run, est, predicted, predicted / run.published_s)


def checks(runs: list[Run] = RUNS) -> list[Check]:
    return [check(r) for r in runs]


def _fmt(seconds: float, kind: str) -> str:
    if kind == "throughput":
        rate = 1 / seconds
        return f"{rate / 1e6:.2f}M img/s" if rate >= 1e5 else f"{rate:,.0f} img/s"
    if kind == "step":
        return f"{seconds * 1e3:.1f} ms/step" if seconds < 10 else f"{seconds:.2f} s/step"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def validation_table(runs: list[Run] = RUNS) -> str:
    """Markdown: role, run, hardware, batch per device, published, predicted, ratio and source."""
    lines = [
        "| role | run | devices | per device | published | predicted | predicted / published | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in checks(runs):
        r = c.run
        mark = ""
        if r.role == "validation" and abs(c.ratio - 1) > BAND:
            mark = f" (outside +-{BAND:.0%}: explained in README, band +-{r.band:.0%})"
        lines.append(
            f"| {r.role} | {r.name} | {r.devices:,} x {r.device}, {r.per_node}/node | "
            f"{r.global_batch / r.devices:g} | {r.published} | {_fmt(c.predicted_s, r.kind)} | "
            f"{c.ratio:.2f}{mark} | {r.source} |"
        )
    return "\n".join(lines)
