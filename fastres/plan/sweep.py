"""How many devices are worth booking: time to accuracy, device-hours and efficiency over cluster sizes.

    python -m fastres.plan --device h100 --devices-per-node 8 --inter-node-gbps 3200 \\
        --sweep-devices 8:3584 --batch-per-device 16:400 --target-top1 75.9 --plot sweep.png

For each size the planner costs every candidate per-device batch (BATCH_SERIES within the range
asked, or the one batch asked) with the epochs and evaluations the recipe's law gives for that
global batch (fastres.plan.epochs), and keeps the fastest to the target. A candidate is left out
where no run can have it (fastres.plan.limits: memory, less than a step per epoch) and where its
global batch lies beyond the largest the law was fitted on (no published run shows the target
reached there). The all-reduce and wire dtype are the advised ones unless given.

Per size: time to accuracy, device-hours (devices x time), the step's scaling efficiency (compute
alone / the step: what communication costs) and the efficiency against the smallest size
(its device-hours / these: what the whole run costs, the epochs a larger batch needs included);
cost_doubled names the first size below 50% of it, where a result costs twice the device-hours.

The knee (KNEE_GAIN): the last size from which doubling the devices still cut the time to
accuracy by at least 25% (between sizes that are not a doubling apart, the gain per doubling,
1 - (T2 / T1)^(1 / log2(N2 / N1))). Past it each doubling buys less than a quarter of the time
for twice the devices: the cost per result grows faster than the wait shrinks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fastres.plan.choose import advise
from fastres.plan.cost import estimate
from fastres.plan.epochs import Family
from fastres.plan.limits import size_errors
from fastres.plan.scenario import Scenario, build

__all__ = ["BATCH_SERIES", "KNEE_GAIN", "Point", "Sweep", "batch_candidates", "parse_sizes", "sweep"]

KNEE_GAIN = 0.25
BATCH_SERIES = (1.0, 1.25, 1.5, 1.75)  # per-device batches: these x powers of two, within the range asked


@dataclass(frozen=True)
class Point:
    devices: int
    batch_per_device: int
    global_batch: int
    epochs: float
    evals: float
    time_s: float
    step_s: float
    step_efficiency: float  # compute alone / the step
    allreduce: str
    wire_dtype: str
    bound: str

    @property
    def device_hours(self) -> float:
        return self.devices * self.time_s / 3600


@dataclass(frozen=True)
class Sweep:
    points: list[Point]
    left_out: list[tuple[int, str]]  # sizes with no possible batch, and why
    epochs_from: str  # the law (or the fixed epochs) the times use

    def efficiency(self, p: Point) -> float:
        """The smallest size's device-hours / this size's."""
        return self.points[0].device_hours / p.device_hours

    def gains(self) -> list[float]:
        """Time cut per doubling of the devices, from each size to the next."""
        out = []
        for a, b in zip(self.points, self.points[1:]):
            out.append(1 - (b.time_s / a.time_s) ** (1 / math.log2(b.devices / a.devices)))
        return out

    @property
    def cost_doubled(self) -> Point | None:
        """The first size whose device-hours are more than twice the smallest size's (None: none in range)."""
        return next((p for p in self.points if self.efficiency(p) < 0.5), None)

    @property
    def knee(self) -> tuple[Point, float | None]:
        """(the knee, the gain per doubling just past it; None where every doubling in range gained enough)."""
        for p, g in zip(self.points, self.gains()):
            if g < KNEE_GAIN:
                return p, g
        return self.points[-1], None


def parse_sizes(text: str) -> list[int]:
    """'8,64,512' or '8:3584' (doubling from 8, the end included) -> device counts."""
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":"))
            sizes = [lo * 2**k for k in range(64) if lo * 2**k < hi] + [hi] if 1 <= lo < hi else []
        else:
            sizes = [int(x) for x in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or sizes != sorted(set(sizes)):
        raise ValueError(f"--sweep-devices must be N,N,... (increasing) or LO:HI, positive integers, got {text!r}")
    return sizes


def batch_candidates(text: str) -> list[int]:
    """'32' -> [32]; '16:400' -> BATCH_SERIES x powers of two within [16, 400], both ends included."""
    try:
        lo, hi = (int(x) for x in text.split(":")) if ":" in text else (int(text), int(text))
    except ValueError:
        lo = hi = 0
    if not 1 <= lo <= hi:
        raise ValueError(f"--batch-per-device must be B or LO:HI, positive integers, LO <= HI, got {text!r}")
    out = {lo, hi}
    for k in range(int(math.log2(hi)) + 1):
        out |= {round(s * 2**k) for s in BATCH_SERIES if lo <= s * 2**k <= hi}
    return sorted(out)


def _cost(base: Scenario, devices: int, b: int, family: Family | None, advise_algorithm: bool, advise_wire: bool):
    sc = replace(base, devices=devices, per_node=min(base.per_node, devices), global_batch=devices * b)
    if family is not None:
        law = family.predict(sc.global_batch)
        sc = replace(sc, epochs=law.epochs, evals=law.evals)
    cluster, job = build(sc)
    if advise_algorithm or advise_wire:
        job, est = advise(cluster, job, algorithm=advise_algorithm, wire=advise_wire, bucket=False)
    else:
        est = estimate(cluster, job)
    return Point(devices, b, sc.global_batch, job.epochs, job.evals, est.time_to_train_s, est.step_time_s,
                 est.scaling_efficiency, job.allreduce, job.wire_dtype, est.bound)  # fmt: skip


def sweep(base: Scenario, sizes: list[int], batches: list[int], family: Family | None,
          advise_algorithm: bool = True, advise_wire: bool = True, epochs_from: str = "") -> Sweep:  # fmt: skip
    """The fastest allowed per-device batch at each size (base: everything else of the run)."""
    points, left_out = [], []
    for n in sizes:
        allowed = [
            b for b in batches
            if not size_errors(base.device, n, n * b, base.precision)
            and (family is None or n * b <= family.max_batch)
        ]  # fmt: skip
        if not allowed:
            why = f"no batch of {batches[0]}-{batches[-1]} per device fits"
            if family is not None:
                why += f" (memory, or a global batch beyond the law's {family.max_batch:,})"
            left_out.append((n, why))
            continue
        costed = [_cost(base, n, b, family, advise_algorithm, advise_wire) for b in allowed]
        points.append(min(costed, key=lambda p: p.time_s))
    return Sweep(points, left_out, epochs_from)
