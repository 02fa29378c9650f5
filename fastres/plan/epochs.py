"""Epochs to a target top-1 as a function of the global batch: one law per recipe family, fitted on declared runs.

    law = FAMILIES["lars"]; law.epochs(32768)     # 60.1 epochs to 75.9% top-1 at a batch of 32K

The law (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", arXiv:1812.06162,
sec. 2): the training examples a run needs to reach a given loss grow with the batch B as

    E(B) = E_min (1 + B / B_noise)

E_min is what a small batch needs, where no image is spent on averaging out gradient noise;
B_noise (their critical batch) is where a run needs twice that. Below B_noise a bigger batch
costs few more epochs and buys fewer, shorter steps; above it each doubling of the batch nearly
doubles the epochs, so more devices buy little. Here B_noise is fitted on published epoch counts
(not measured from gradients, as McCandlish et al. do): E is linear in B, fitted by least
squares on relative error (weights 1 / E^2) through one point per distinct global batch, the
median over the family's results of each result's mean epochs over its converged logs.

FAMILIES (each fitted on its results in fastres.plan.epoch_records, none of which is a
validation run of fastres.plan.records unless that record says so):

  lars       MLPerf LARS (v0.7-v4.0, closed division, any submitter; 75.9% top-1): the newest
             recipes, what --target-top1 75.9 uses. Evaluations every 4 epochs, as MLPerf's.
  sgd        MLPerf momentum SGD with label smoothing (v0.7-v4.0, closed; 75.9%): fitted on
             batches up to 3,328 only.
  lars-v0.6  MLPerf v0.6's LARS schedules (75.9%): about 60 epochs even at small batches.
  goyal      Goyal et al. 2017's 90-epoch SGD schedule: 76.3% top-1 (docs/design.md's table of the
             published runs) and, in the abstract of arXiv:1706.02677, "no loss of accuracy when
             training with large minibatch sizes up to 8192 images": no law, the schedule fixes 90
             epochs, and no batch above 8,192 is known to reach its accuracy on it.

The papers' other 90-epoch runs (You et al. 2017, Akiba et al. 2017, Jia et al. 2018, Mikami et
al. 2018) reached 74.9-75.8% at 32K-68K: the same 90 epochs bought less accuracy as the batch
grew, which says nothing of the epochs to one accuracy; they have no law here.

A batch beyond the largest a family was fitted on is an extrapolation (Prediction.extrapolated);
the sweep (fastres.plan.sweep) stays inside the fitted range.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from fastres.plan.epoch_records import LARS, LARS_V06, SGD, Result

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "Family", "Prediction", "family_for_target", "fit_critical_batch"]

DEFAULT_FAMILY = "lars"


def fit_critical_batch(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(E_min, B_noise) of E = E_min (1 + B / B_noise) through (batch, epochs) points (least squares, relative)."""
    if len({b for b, _ in points}) < 2:
        raise ValueError("a law needs points at two batch sizes at least")
    w = [1 / e**2 for _, e in points]
    sw = sum(w)
    sb = sum(wi * b for wi, (b, _) in zip(w, points))
    sbb = sum(wi * b * b for wi, (b, _) in zip(w, points))
    se = sum(wi * e for wi, (_, e) in zip(w, points))
    sbe = sum(wi * b * e for wi, (b, e) in zip(w, points))
    slope = (sw * sbe - sb * se) / (sw * sbb - sb * sb)
    e_min = (se - slope * sb) / sw
    if e_min <= 0 or slope <= 0:
        raise ValueError(f"the points give no critical batch (E_min {e_min:.3g}, slope {slope:.3g})")
    return e_min, e_min / slope


@dataclass(frozen=True)
class Prediction:
    epochs: float
    evals: float
    family: Family
    batch: int
    extrapolated: bool  # beyond the batches the family was fitted on

    def describe(self) -> str:
        f = self.family
        where = f" (beyond the largest fitted batch, {f.max_batch:,}: extrapolated)" if self.extrapolated else ""
        return f"{self.epochs:.1f} epochs to {f.target_top1}% top-1 at a batch of {self.batch:,}: {f.law_text()}{where}"


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    target_top1: float
    results: tuple[Result, ...]  # the calibration (fastres.plan.epoch_records); empty for a fixed schedule
    eval_every: float  # epochs between evaluations in these runs (0: none counted)
    source: str
    fixed_epochs: float = 0.0  # > 0: the schedule's epochs, whatever the batch (up to fixed_max_batch)
    fixed_max_batch: int = 0

    @property
    def points(self) -> list[tuple[int, float]]:
        """One (batch, epochs) point per distinct batch: the median of the results' mean epochs."""
        by_batch: dict[int, list[float]] = {}
        for _, _, batch, epochs in self.results:
            by_batch.setdefault(batch, []).append(statistics.fmean(epochs))
        return [(b, statistics.median(by_batch[b])) for b in sorted(by_batch)]

    @property
    def law(self) -> tuple[float, float]:
        """(E_min, B_noise); a fixed schedule: (its epochs, infinity)."""
        if self.fixed_epochs:
            return self.fixed_epochs, math.inf
        return _fitted(self)

    @property
    def max_batch(self) -> int:
        return self.fixed_max_batch if self.fixed_epochs else max(b for b, _ in self.points)

    def epochs(self, batch: float) -> float:
        e_min, b_noise = self.law
        return e_min * (1 + batch / b_noise)

    def predict(self, batch: int) -> Prediction:
        e = self.epochs(batch)
        evals = math.ceil(e / self.eval_every) if self.eval_every else 0
        return Prediction(e, evals, self, batch, batch > self.max_batch)

    def law_text(self) -> str:
        if self.fixed_epochs:
            upto = f"up to a batch of {self.fixed_max_batch:,}"
            return f"{self.title}: {self.fixed_epochs:g} epochs {upto} ({self.source})"
        e_min, b_noise = self.law
        return (
            f"{self.title}: E = {e_min:.2f} (1 + B / {b_noise:,.0f}), fitted on {len(self.results)} results at "
            f"{len(self.points)} batch sizes {self.points[0][0]:,}-{self.max_batch:,} (fastres/plan/epoch_records.py)"
        )


_FITS: dict[str, tuple[float, float]] = {}


def _fitted(f: Family) -> tuple[float, float]:
    if f.name not in _FITS:
        _FITS[f.name] = fit_critical_batch(f.points)
    return _FITS[f.name]


MLPERF = "MLCommons training_results_v0.6..v4.0, resnet/result_*.txt (fastres/plan/epoch_records.py)"
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("lars", "MLPerf LARS (v0.7-v4.0)", 75.9, LARS, 4, MLPERF),
        Family("sgd", "MLPerf momentum SGD (v0.7-v4.0)", 75.9, SGD, 4, MLPERF),
        Family("lars-v0.6", "MLPerf v0.6 LARS", 75.9, LARS_V06, 4, MLPERF),
        Family(
            "goyal",
            "Goyal et al. 2017's SGD schedule",
            76.3,
            (),
            0,
            "arXiv:1706.02677: 76.3% top-1, and no loss of accuracy up to 8,192 images per batch (abstract)",
            fixed_epochs=90,
            fixed_max_batch=8192,
        ),
    )
}


def family_for_target(target_top1: float, name: str | None = None) -> Family:
    """The family asked for by name, else the first (newest recipe first) whose target is at least `target_top1`.

    Raises ValueError naming what is known when none reaches the target."""
    known = ", ".join(f"{f.name} ({f.target_top1}%)" for f in FAMILIES.values())
    if name is not None:
        if name not in FAMILIES:
            raise ValueError(f"unknown recipe {name!r}; known: {known}")
        family = FAMILIES[name]
        if target_top1 > family.target_top1:
            raise ValueError(f"{name} reaches {family.target_top1}% top-1 in the published runs, not {target_top1}%")
        return family
    for family in FAMILIES.values():
        if target_top1 <= family.target_top1:
            return family
    raise ValueError(f"no published recipe reaches {target_top1}% top-1 here; known: {known}")
