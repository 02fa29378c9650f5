"""A device's training speed as the user knows it: a figure on the command line, or a fastres run folder.

    --device-images-per-s R      R images/s per device at a large batch; t0 = b_half / R, with the
                                 half-speed batch b_half of the device's calibrated speed
    --device-images-per-s R@b    R images/s per device measured at b images per device: t(b) = b / R,
                                 carried to R and t0 through the device's b_half (fastres.plan.speed.fit_one)
    --calibrate-run RUN_DIR      a fastres run folder (python -m fastres.train --out ...): its steps, measured

A run folder gives (run_speed): from config.yaml the model (config.arch, config.image_size), the
processes (ranks), the global batch, the device ("cpu" or "cuda:N") and the compute (amp); from
metrics.jsonl the images/s of every train record (each over the steps since the record before;
the first record of the run and of each resumed attempt, with their warm-up, are left out; the
median of the rest). One device's images/s at b = global batch / ranks images per step is that
over the ranks; where the run had several processes the all-reduce the model puts on one node of
that many devices is taken off the step first (its exposed part: little on NVLink), so R and t0
describe compute, as the published calibrations do (fastres.plan.calibrate). Runs at two
per-device batches (--calibrate-run given twice) give R and t0 (fit_pair); one run gives R with
the device's b_half (a CPU: t0 = the optimizer's pass at DRAM bandwidth, fastres.plan.calibrate).

The planner plans ResNet-50 at 224 px. A run of another depth or image size is carried over by
multiply-adds (torchvision's model table: 1.81, 3.66, 4.09, 7.80, 11.51 G per 224-px image for
ResNet-18/34/50/101/152; times (size / 224)^2): a rough figure, and the output says so; a
ResNet-50 run at 224 px needs no carrying.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from fastres.plan.cost import estimate
from fastres.plan.devices import DeviceSpec
from fastres.plan.scenario import Scenario, build
from fastres.plan.speed import Speed, fit_one, fit_pair

__all__ = ["GMACS_224", "RunSpeed", "SpeedError", "parse_images_per_s", "run_speed", "speed_from_runs"]

GMACS_224 = {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80, "resnet152": 11.51}


class SpeedError(ValueError):
    """A speed the planner cannot use; the message names the flag and the value or file."""


def parse_images_per_s(text: str) -> tuple[float, float | None]:
    """'R' or 'R@b' -> (R, b or None)."""
    rate, _, at = text.partition("@")
    try:
        r, b = float(rate), (float(at) if at else None)
    except ValueError:
        r, b = math.nan, None
    if not (math.isfinite(r) and r > 0 and (b is None or (math.isfinite(b) and b >= 1))):
        raise SpeedError(f"--device-images-per-s must be R or R@b (images/s > 0, at b >= 1 per device), got {text!r}")
    return r, b


def speed_from_figure(text: str, half_batch: float, half_from: str) -> Speed:
    r, b = parse_images_per_s(text)
    if b is None:
        return Speed(r, half_batch / r, f"--device-images-per-s {text}: R; b_half {half_batch:.1f} from {half_from}")
    rate, t0 = fit_one(b, b / r, half_batch)
    return Speed(rate, t0, f"--device-images-per-s {text} per device; b_half {half_batch:.1f} from {half_from}")


@dataclass(frozen=True)
class RunSpeed:
    """One device's speed in a fastres run, carried to ResNet-50 at 224 px."""

    path: str
    batch: float  # images per device per step
    images_per_s: float  # one device, as measured
    step_s: float  # one device's compute per step, ResNet-50 at 224 px (the all-reduce taken off)
    records: int  # train records used
    ranks: int
    on_cpu: bool
    precision: str  # "mixed" or "fp32"
    carried: str  # "" or how another model / size was carried to ResNet-50 at 224 px


def _read_config(run: Path, flag: str) -> dict:
    import yaml

    try:
        doc = yaml.safe_load((run / "config.yaml").read_text())
    except OSError as e:
        raise SpeedError(f"{flag} {run}: no config.yaml ({e.strerror or e}): not a fastres run folder") from None
    except yaml.YAMLError as e:
        raise SpeedError(f"{flag} {run}: config.yaml is not YAML ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise SpeedError(f"{flag} {run}: config.yaml has no 'config' section: not written by python -m fastres.train")
    return doc


def _train_rates(run: Path, flag: str) -> list[float]:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError as e:
        raise SpeedError(f"{flag} {run}: no metrics.jsonl ({e.strerror or e})") from None
    rates, first = [], True
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("kind") == "resume" or rec.get("kind") == "start":
            first = True
        if rec.get("kind") == "train" and isinstance(rec.get("img_per_s"), (int, float)) and rec["img_per_s"] > 0:
            if not first:
                rates.append(float(rec["img_per_s"]))
            first = False
    if not rates:
        raise SpeedError(
            f"{flag} {run}: metrics.jsonl has no train record after the first (the warm-up): train longer, or with "
            f"a smaller --log-every"
        )
    return rates


def _exposed_allreduce(device: DeviceSpec, ranks: int, batch: float, step_s: float, precision: str, backend: str):
    """The part of a one-node step of `ranks` devices the model gives to the all-reduce (0 for one process)."""
    if ranks == 1:
        return 0.0
    exposed = 0.0
    for _ in range(6):  # the overlap depends on the compute being solved for
        guess = Speed(batch / max(step_s - exposed, 1e-9), 0.0, "")
        sc = Scenario(device, ranks, ranks, round(batch * ranks), guess, precision=precision, allreduce="flat",
                      backend=backend)  # fmt: skip
        exposed = max(0.0, estimate(*build(sc)).exposed_allreduce_s)
    return exposed


def run_speed(path: str, device: DeviceSpec, flag: str = "--calibrate-run") -> RunSpeed:
    run = Path(path)
    doc = _read_config(run, flag)
    cfg = doc["config"]
    arch, size = cfg.get("arch", "resnet50"), cfg.get("image_size") or 224
    if arch not in GMACS_224:
        raise SpeedError(f"{flag} {run}: arch {arch!r} is not a ResNet the planner knows ({', '.join(GMACS_224)})")
    ranks = int(doc.get("ranks") or 1)
    batch = float(doc.get("global_batch") or cfg.get("batch_size") or 0) / ranks
    on_cpu = str(doc.get("device", "cpu")).startswith("cpu")
    if on_cpu != device.is_cpu:
        ran = "a CPU" if on_cpu else "a GPU"
        raise SpeedError(f"{flag} {run}: the run trained on {ran} ({doc.get('device')}), not on --device {device.name}")
    precision = "fp32" if str(doc.get("amp", "fp32")).startswith("fp32") else "mixed"
    rates = _train_rates(run, flag)
    ips = statistics.median(rates) / ranks
    work = GMACS_224[arch] * (size / 224) ** 2
    carried = ""
    if arch != "resnet50" or size != 224:
        factor = GMACS_224["resnet50"] / work
        carried = f"{arch} at {size} px carried to ResNet-50 at 224 px by multiply-adds (x{factor:.3g})"
    step = batch / ips * GMACS_224["resnet50"] / work
    backend = "gloo" if on_cpu else "nccl"
    step -= _exposed_allreduce(device, ranks, batch, step, precision, backend)
    return RunSpeed(str(run), batch, ips, step, len(rates), ranks, on_cpu, precision, carried)


def speed_from_runs(runs: list[RunSpeed], half_batch: float | None, half_from: str, cpu_t0: float = 0.0) -> Speed:
    """R and t0 from one run (with the device's b_half, or a CPU's t0) or from two at different batches."""
    names = " and ".join(f"{r.path} ({r.batch:g}/device, {r.images_per_s:.4g} img/s)" for r in runs)
    note = "; " + "; ".join(sorted({r.carried for r in runs if r.carried})) if any(r.carried for r in runs) else ""
    if len(runs) == 2:
        small, large = sorted(runs, key=lambda r: r.batch)
        try:
            rate, t0 = fit_pair(large.batch, large.step_s, small.batch, small.step_s)
        except ValueError as e:
            raise SpeedError(f"--calibrate-run: {names}: {e} (timings too noisy to fit; use one run)") from None
        return Speed(rate, t0, f"--calibrate-run {names}: pair{note}")
    (r,) = runs
    if cpu_t0:
        if r.step_s <= cpu_t0:
            raise SpeedError(f"--calibrate-run {r.path}: its step ({r.step_s:.3g} s) is shorter than the CPU's t0")
        return Speed(r.batch / (r.step_s - cpu_t0), cpu_t0, f"--calibrate-run {names}; t0 = optimizer pass{note}")
    rate, t0 = fit_one(r.batch, r.step_s, half_batch)
    return Speed(rate, t0, f"--calibrate-run {names}; b_half {half_batch:.1f} from {half_from}{note}")
