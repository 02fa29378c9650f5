"""How fast one device trains ResNet-50: t_step(b) = b / R + t0, calibrated on declared runs only.

R is the device's rate at a large per-device batch (images/s) and t0 the part of a step that
does not grow with the batch (kernel launches, small kernels that leave the device idle, the
optimizer's pass over 25.6M parameters, the framework's own work). Their ratio b_half = R t0 is
the per-device batch at which the device runs at half its large-batch rate. MLPerf's steady
epochs fit this form well (one node vs eight nodes of the same round, below), and b_half
differs by compute path: about 9 for CUDA-core fp32 (TensorFlow's P100 table), 15-30 on
tensor cores.

Each Speed comes from a Recipe over published runs whose role is "calibration"
(fastres.plan.records.CALIBRATION): one-device tables, one-node MLPerf results, a paper's
one-node figure, fastres's own CPU measurement. A recipe takes R and t0 from two runs at
different per-device batches ("pair"), or R from one run and b_half from another recipe
("one"), or scales another recipe's R by a data-sheet peak ratio ("scale"). The step time a run
gives is what its log or table states; the model's own all-reduce for that run (one node:
NVLink) is subtracted first, so the constants describe compute only. No validation run enters:
fastres.plan.records keeps the roles apart and tests/test_plan.py checks that changing a
validation run changes no constant.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Recipe", "Speed", "fit_one", "fit_pair"]


@dataclass(frozen=True)
class Speed:
    rate: float  # R: images/s per device at a large batch
    t0: float  # seconds per step that do not grow with the batch
    source: str  # how it was calibrated

    def step_s(self, batch_per_device: float) -> float:
        return batch_per_device / self.rate + self.t0

    def images_per_s(self, batch_per_device: float) -> float:
        return batch_per_device / self.step_s(batch_per_device)

    @property
    def half_batch(self) -> float:
        return self.rate * self.t0


@dataclass(frozen=True)
class Recipe:
    """How one Speed is calibrated; the keys name runs in fastres.plan.records.CALIBRATION."""

    name: str
    device: str
    precision: str  # "mixed" or "fp32"
    how: str  # "pair", "one" or "scale"
    large: str = ""  # run at the large per-device batch (pair, one)
    small: str = ""  # run at a small per-device batch (pair)
    half_batch_from: str = ""  # recipe whose b_half is taken (one)
    scale_from: str = ""  # recipe whose R is scaled by this device's peak / its device's peak (scale)
    note: str = ""


def fit_pair(b_large: float, t_large: float, b_small: float, t_small: float) -> tuple[float, float]:
    """R and t0 through two (batch, compute seconds) points."""
    if b_large <= b_small or t_large <= t_small:
        raise ValueError("a pair needs a larger batch with a longer step")
    rate = (b_large - b_small) / (t_large - t_small)
    t0 = t_large - b_large / rate
    if t0 < 0:
        raise ValueError(f"the pair gives a negative t0 ({t0:.3g} s)")
    return rate, t0


def fit_one(b: float, t: float, half_batch: float) -> tuple[float, float]:
    """R and t0 from one (batch, compute seconds) point and a half-speed batch taken elsewhere."""
    rate = (b + half_batch) / t
    return rate, half_batch / rate
