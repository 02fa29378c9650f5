"""Each published run beside the model's prediction: `python -m fastres.plan --validate`.

Two predictions per run that reached a target: its time with the epochs it published (the cost
model alone), and its time to accuracy with the epochs (and evaluations) the run's recipe family
predicts for its global batch (fastres.plan.epochs), each as predicted / published.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from fastres.plan.calibrate import cluster_for, job_for, speed_for
from fastres.plan.cost import Estimate, estimate
from fastres.plan.epochs import FAMILIES, Prediction
from fastres.plan.records import BAND, RUNS, VALIDATION, Run

__all__ = ["LAW_BAND", "Check", "check", "checks", "law_summary", "validation_table"]

LAW_BAND = 0.25  # time to accuracy with predicted epochs: predicted / published within 1 +- LAW_BAND


@dataclass(frozen=True)
class Check:
    run: Run
    estimate: Estimate
    predicted_s: float  # in the unit of run.published_s
    ratio: float  # predicted / published: < 1 the model is too fast
    law: Prediction | None = None  # the epochs its family predicts (time runs with a family only)
    to_accuracy_s: float | None = None  # time with those epochs and evaluations
    law_role: str = ""  # "held back", "fitted" (a result the law was fitted on) or "schedule" (fixed epochs)

    @property
    def inside(self) -> bool:
        return abs(self.ratio - 1) <= self.run.band

    @property
    def law_ratio(self) -> float | None:
        return None if self.to_accuracy_s is None else self.to_accuracy_s / self.run.published_s


def _law_role(run: Run, law: Prediction) -> str:
    if law.family.fixed_epochs:
        return "schedule"
    folder = run.source.split()[1].rsplit("/resnet/", 1)[0]
    fitted = {(r[0], r[1]) for r in law.family.results}
    return "fitted" if (run.key.split("-")[1], folder) in fitted else "held back"


def check(run: Run) -> Check:
    cluster, job = cluster_for(run, speed_for(run)), job_for(run)
    est = estimate(cluster, job)
    if run.kind == "step":
        predicted = est.step_time_s
    elif run.kind == "throughput":
        predicted = 1 / est.images_per_s
    else:
        predicted = est.time_to_train_s
    c = Check(run, est, predicted, predicted / run.published_s)
    if run.kind != "time" or not run.epochs_law:
        return c
    law = FAMILIES[run.epochs_law].predict(run.global_batch)
    to_accuracy = estimate(cluster, replace(job, epochs=law.epochs, evals=law.evals)).time_to_train_s
    return replace(c, law=law, to_accuracy_s=to_accuracy, law_role=_law_role(run, law))


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


def _law_cells(c: Check) -> str:
    if c.law is None:
        return " - | - | - |"
    mark = "" if c.law_role == "held back" else f", {c.law_role}"
    return f" {c.law.epochs:.1f} ({c.law.family.name}{mark}) | {_fmt(c.to_accuracy_s, 'time')} | {c.law_ratio:.2f} |"


def validation_table(runs: list[Run] = RUNS) -> str:
    """Markdown: role, run, hardware, batch per device, published, predicted with the published epochs and with
    the law's, each with predicted / published, and the source."""
    lines = [
        "| role | run | devices | per device | published | epochs | predicted | predicted / published "
        "| epochs by law | time to accuracy | to accuracy / published | source |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in checks(runs):
        r = c.run
        mark = ""
        if r.role == "validation" and abs(c.ratio - 1) > BAND:
            mark = f" (outside +-{BAND:.0%}: explained in README, band +-{r.band:.0%})"
        epochs = f"{r.epochs:g}" if r.kind == "time" else "-"
        lines.append(
            f"| {r.role} | {r.name} | {r.devices:,} x {r.device}, {r.per_node}/node | "
            f"{r.global_batch / r.devices:g} | {r.published} | {epochs} | {_fmt(c.predicted_s, r.kind)} | "
            f"{c.ratio:.2f}{mark} |{_law_cells(c)} {r.source} |"
        )
    return "\n".join(lines)


def law_summary(runs: list[Run] = VALIDATION) -> str:
    """How the epochs laws do on the validation runs they were not fitted on, in one paragraph."""
    held = [c for c in checks(runs) if c.law_role == "held back"]
    inside = [c for c in held if abs(c.law_ratio - 1) <= LAW_BAND]
    epoch_err = [abs(c.law.epochs / c.run.epochs - 1) for c in held]
    families = sorted({c.law.family.name for c in held})
    return (
        f"Time to accuracy with predicted epochs: {len(inside)} of {len(held)} held-back runs within "
        f"+-{LAW_BAND:.0%} (median predicted / published {statistics.median(c.law_ratio for c in held):.2f}); "
        f"their epochs by law against the published: median error {statistics.median(epoch_err):.1%}, "
        f"largest {max(epoch_err):.1%} (laws {', '.join(families)})."
    )
