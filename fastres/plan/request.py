"""What `python -m fastres.plan` is asked, checked: the run as a Scenario, where its speed and its epochs come from.

Every bad value ends here as a PlanError naming the flag (one line, exit 2, from fastres.plan.cli).

  speed    the device's calibrated speed (fastres.plan.calibrate.DEFAULT_SPEED), or one named by
           --speed, or the user's own: --device-images-per-s R[@b], --calibrate-run RUN_DIR
           (fastres.plan.userspeed), --calibrate-cpu (fastres.plan.cpu); one of them at most
  epochs   --epochs N (time to train), --target-top1 T / --epochs auto / --recipe NAME (time to
           accuracy: the law of fastres.plan.epochs at this global batch, its evaluations too
           unless --evals), or the default 90 (the papers' schedule)
  sizes    the limits of fastres.plan.limits
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from fastres import FastresError
from fastres.plan.allreduce import TORUS_ALGORITHMS
from fastres.plan.calibrate import DEFAULT_SPEED, RECIPES, SPEEDS, cpu_t0, default_speed
from fastres.plan.cost import WIRE_BYTES
from fastres.plan.cpu import CpuCalibrationError, cpu_device, read_cpu_calibration
from fastres.plan.devices import DEVICES, DeviceSpec, lookup_device
from fastres.plan.epochs import DEFAULT_FAMILY, FAMILIES, Prediction, family_for_target
from fastres.plan.jsonfile import read_json
from fastres.plan.limits import size_errors
from fastres.plan.scenario import Scenario
from fastres.plan.speed import Speed
from fastres.plan.userspeed import SpeedError, parse_images_per_s, run_speed, speed_from_figure, speed_from_runs

__all__ = [
    "DEFAULT_EPOCHS",
    "DEVICE_CHOICES",
    "Epochs",
    "PlanError",
    "Request",
    "epochs_for",
    "read_calibration",
    "request",
]

DEVICE_CHOICES = (*DEVICES, "cpu")
DEFAULT_EPOCHS = 90.0


class PlanError(FastresError):
    """A planner flag with a value the model cannot use; the message names the flag."""


@dataclass(frozen=True)
class Epochs:
    """The epochs a plan uses and where they come from."""

    epochs: float
    evals: float
    how: str  # "flag" (--epochs N), "law" (a recipe's law at this batch), "default"
    law: Prediction | None = None

    def as_dict(self) -> dict:
        out = {"epochs": self.epochs, "evals": self.evals, "how": self.how}
        if self.law is not None:
            f = self.law.family
            out.update(recipe=f.name, target_top1=f.target_top1, law=f.law_text(), extrapolated=self.law.extrapolated)
        return out

    def describe(self) -> str:
        evals = f", {self.evals:g} evaluations" if self.evals else ""
        if self.how == "law":
            return f"{self.law.describe()}{evals}"
        if self.how == "flag":
            return f"{self.epochs:g} epochs (--epochs){evals}"
        default = "the default: the papers' schedule; --target-top1 75.9 for time to accuracy"
        return f"{self.epochs:g} epochs ({default}){evals}"


@dataclass(frozen=True)
class Request:
    scenario: Scenario  # for a sweep: the devices and batch are replaced per size
    epochs: Epochs
    speed_from: dict  # what set the speed
    calibration: dict | None  # --calibrate's alpha and bandwidth
    cpu_calibration: dict | None
    advise_algorithm: bool
    advise_wire: bool
    warnings: list[str]


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise PlanError(message)


def _positive(name: str, value: float | None) -> None:
    if value is not None:
        _need(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value:g}")


def read_calibration(path: str) -> dict:
    """alpha_s and inter_node_gbps from bench/bench_hosts.py's JSON (its largest topology) or a bare dict."""
    doc = read_json(path, "--calibrate", PlanError)
    cal = None
    if isinstance(doc, dict) and isinstance(doc.get("topologies"), dict) and doc["topologies"]:
        parts = [t.get("calibration") for t in doc["topologies"].values() if isinstance(t, dict)]
        parts = [c for c in parts if isinstance(c, dict)]
        cal = max(parts, key=lambda c: c.get("world", 0)) if parts else None
    elif isinstance(doc, dict) and "alpha_s" in doc:
        cal = doc
    ok = (
        isinstance(cal, dict)
        and all(isinstance(cal.get(k), (int, float)) for k in ("alpha_s", "inter_node_gbps"))
        and cal["alpha_s"] >= 0
        and cal["inter_node_gbps"] > 0
    )
    _need(ok, f"--calibrate {path}: no calibration in it (alpha_s >= 0 and inter_node_gbps > 0 under 'topologies')")
    return {"alpha_s": float(cal["alpha_s"]), "inter_node_gbps": float(cal["inter_node_gbps"]), "from": path}


def _half_batch(dev: DeviceSpec, precision: str, flag: str) -> tuple[float, str]:
    try:
        return default_speed(dev.name, precision).half_batch, DEFAULT_SPEED[(dev.name, precision)]
    except KeyError:
        raise PlanError(f"{flag} on --device {dev.name} --precision {precision}: no calibrated speed to take the "
                        "half-speed batch from; give two --calibrate-run at different batches") from None  # fmt: skip


def _user_speed(args, dev: DeviceSpec, precision: str, cpu_t0_s: float = 0.0):
    """(Speed, what set it, precision) from --speed, --device-images-per-s or --calibrate-run; None: none given."""
    if args.speed:
        rec = next(r for r in RECIPES if r.name == args.speed)
        _need(rec.device == dev.name, f"--speed {args.speed} is a {rec.device} speed, not one of --device {dev.name}")
        _need(rec.precision == precision, f"--speed {args.speed} is {rec.precision}, not --precision {precision}")
        return SPEEDS[args.speed], {"speed": args.speed}, precision
    if args.device_images_per_s:
        text, frm = args.device_images_per_s, {"device_images_per_s": args.device_images_per_s}
        try:
            r, b = parse_images_per_s(text)
            if not cpu_t0_s:
                half, where = _half_batch(dev, precision, "--device-images-per-s")
                return speed_from_figure(text, half, where), frm, precision
        except SpeedError as e:
            raise PlanError(str(e)) from None
        rate = r if b is None else b / (b / r - cpu_t0_s)
        _need(rate > 0, f"--device-images-per-s {text}: a step of {b:g} shorter than the CPU's t0 ({cpu_t0_s:.3g} s)")
        source = f"--device-images-per-s {text}; t0 = the optimizer pass at DRAM bandwidth"
        return Speed(rate, cpu_t0_s, source), frm, precision
    if args.calibrate_run:
        _need(len(args.calibrate_run) <= 2, "--calibrate-run: one run, or two at different per-device batches")
        try:
            runs = [run_speed(p, dev) for p in args.calibrate_run]
        except SpeedError as e:
            raise PlanError(str(e)) from None
        ran = {r.precision for r in runs}
        _need(len(ran) == 1, "--calibrate-run: the runs trained in different precisions")
        run_precision = ran.pop()
        _need(args.precision in ("auto", run_precision),
              f"--calibrate-run trained in {run_precision}, not --precision {args.precision}")  # fmt: skip
        if len(runs) == 2:
            _need(runs[0].batch != runs[1].batch, "--calibrate-run: two runs need two different per-device batches")
        half, where = (None, "") if len(runs) == 2 or dev.is_cpu else _half_batch(dev, run_precision, "--calibrate-run")
        try:
            speed = speed_from_runs(runs, half, where, cpu_t0(dev) if dev.is_cpu else 0.0)
        except SpeedError as e:
            raise PlanError(str(e)) from None
        info = [
            {"run": r.path, "batch_per_device": r.batch, "device_images_per_s": r.images_per_s,
             "train_records": r.records, "ranks": r.ranks, "carried": r.carried}
            for r in runs
        ]  # fmt: skip
        return speed, {"calibrate_run": info}, run_precision
    return None


def _device_and_speed(args) -> tuple[DeviceSpec, str, Speed, dict, dict | None]:
    given = [f for f in ("speed", "device_images_per_s", "calibrate_run", "calibrate_cpu") if getattr(args, f)]
    _need(len(given) <= 1, f"{' and '.join('--' + f.replace('_', '-') for f in given)}: give one speed, not several")
    if args.device == "cpu":
        _need(args.calibrate_cpu or args.calibrate_run or args.device_images_per_s,
              "--device cpu needs --calibrate-cpu CPU.json (see --measure-cpu), --calibrate-run or "
              "--device-images-per-s")  # fmt: skip
        cores = args.cores_per_device if args.cores_per_device is not None else (os.cpu_count() or 1)
        _need(cores >= 1, f"--cores-per-device must be a positive integer, got {cores}")
        _positive("--memory-gbs", args.memory_gbs)
        dev = cpu_device(cores, args.memory_gbs) if args.memory_gbs else cpu_device(cores)
        precision = "fp32" if args.precision == "auto" else args.precision
        if args.calibrate_cpu:
            try:
                speed, what = read_cpu_calibration(args.calibrate_cpu, cores, precision)
            except CpuCalibrationError as e:
                raise PlanError(str(e)) from None
            if speed.t0 == 0:
                speed = Speed(speed.rate, cpu_t0(dev), speed.source + "; t0 = optimizer pass at DRAM bandwidth")
            return dev, precision, speed, {"calibrate_cpu": args.calibrate_cpu}, what
        speed, frm, precision = _user_speed(args, dev, precision, cpu_t0(dev))
        return dev, precision, speed, frm, None
    _need(args.calibrate_cpu is None, "--calibrate-cpu needs --device cpu")
    try:
        dev = lookup_device(args.device)
    except KeyError:
        raise PlanError(f"--device {args.device!r}: unknown device; known: {', '.join(DEVICE_CHOICES)}") from None
    precision = args.precision if args.precision != "auto" else ("mixed" if dev.tensor_cores else "fp32")
    user = _user_speed(args, dev, precision)
    if user is not None:
        speed, frm, precision = user
        return dev, precision, speed, frm, None
    try:
        return dev, precision, default_speed(dev.name, precision), {"speed": DEFAULT_SPEED[(dev.name, precision)]}, None
    except KeyError:
        known = ", ".join(f"{d} {p}" for d, p in DEFAULT_SPEED)
        raise PlanError(
            f"--device {dev.name} --precision {precision}: no calibrated speed; calibrated: {known} "
            "(or give your own: --device-images-per-s, --calibrate-run)"
        ) from None


def _parse_epochs(text: str | None) -> float | str | None:
    if text is None or text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise PlanError(f"--epochs must be a number or auto, got {text!r}") from None
    _need(math.isfinite(value) and value > 0, f"--epochs must be > 0, got {value:g}")
    return value


def epochs_for(args, global_batch: int, sweep: bool = False) -> Epochs:
    """The epochs (and evaluations) a plan at `global_batch` uses, from --epochs, --target-top1 and --recipe."""
    epochs = _parse_epochs(args.epochs)
    if args.evals is not None:
        _need(math.isfinite(args.evals) and args.evals >= 0, f"--evals must be >= 0, got {args.evals:g}")
    by_law = epochs == "auto" or args.target_top1 is not None or args.recipe is not None
    _need(not (by_law and isinstance(epochs, float)), "--epochs N with --target-top1 or --recipe: give one of them")
    if not by_law and (epochs is not None or not sweep):
        value = epochs if epochs is not None else DEFAULT_EPOCHS
        return Epochs(value, args.evals or 0, "flag" if epochs is not None else "default")
    target = args.target_top1
    if target is None:
        target = FAMILIES[args.recipe or DEFAULT_FAMILY].target_top1
    _need(math.isfinite(target) and 0 < target < 100, f"--target-top1 must be a top-1 in %, got {target:g}")
    try:
        family = family_for_target(target, args.recipe)
    except ValueError as e:
        raise PlanError(f"--target-top1 {target:g}: {e}") from None
    law = family.predict(global_batch)
    return Epochs(law.epochs, args.evals if args.evals is not None else law.evals, "law", law)


def _links(args, cal: dict | None) -> dict:
    for name in ("intra_node_gbps", "inter_node_gbps", "data_images_per_s", "bucket_mb"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    for name in ("intra_node_alpha_us", "inter_node_alpha_us"):
        v = getattr(args, name)
        if v is not None:
            _need(math.isfinite(v) and v >= 0, f"--{name.replace('_', '-')} must be >= 0, got {v:g}")
    inter_alpha = args.inter_node_alpha_us * 1e-6 if args.inter_node_alpha_us is not None else None
    backend = args.backend
    if cal:
        inter_alpha = inter_alpha if inter_alpha is not None else cal["alpha_s"]
        backend = backend or "gloo"
    return dict(
        intra_gbps=args.intra_node_gbps,
        inter_gbps=args.inter_node_gbps or (cal["inter_node_gbps"] if cal else None),
        intra_alpha_s=args.intra_node_alpha_us * 1e-6 if args.intra_node_alpha_us is not None else None,
        inter_alpha_s=inter_alpha,
        backend=backend,
        data_images_per_s=args.data_images_per_s,
    )


def request(args, sweep: bool = False) -> Request:
    """The checked plan the flags ask for (sweep: the devices and batch are the sweep's, set per size)."""
    dev, precision, speed, speed_from, cpu_cal = _device_and_speed(args)
    devices = args.devices if args.devices is not None else 8
    _need(devices >= 1, f"--devices must be a positive integer, got {devices}")
    per_node = args.per_node if args.per_node is not None else min(dev.per_node, devices)
    _need(per_node >= 1, f"--devices-per-node must be a positive integer, got {per_node}")
    if not sweep:
        _need(
            devices % per_node == 0,
            f"--devices {devices} is not divisible by --devices-per-node {per_node}: every node runs the same number",
        )
    batch = args.global_batch if args.global_batch is not None else 64 * devices
    _need(batch >= 1, f"--global-batch must be a positive integer, got {batch}")
    _need(batch % devices == 0, f"--global-batch {batch} is not divisible by --devices {devices}")
    if args.wire_dtype is not None:
        _need(args.wire_dtype in WIRE_BYTES, f"--wire-dtype must be one of fp32, bf16, fp16, got {args.wire_dtype!r}")
    if dev.torus_links and args.allreduce not in ("auto", *TORUS_ALGORITHMS):
        raise PlanError(f"--allreduce {args.allreduce}: {dev.name} chips sit on a 2-D torus with no switch; it runs "
                        f"{' or '.join(TORUS_ALGORITHMS)}")  # fmt: skip
    cal = read_calibration(args.calibrate) if args.calibrate else None
    epochs = epochs_for(args, batch, sweep)
    if not sweep:
        errors = size_errors(dev, devices, batch, precision)
        _need(not errors, "; ".join(errors))
    warnings = []
    if epochs.law is not None and epochs.law.extrapolated:
        warnings.append(f"the global batch {batch:,} is beyond the largest the {epochs.law.family.name} law was "
                        f"fitted on ({epochs.law.family.max_batch:,}): its epochs are an extrapolation")  # fmt: skip
    if epochs.law is not None and args.target_top1 is not None and args.target_top1 < epochs.law.family.target_top1:
        warnings.append(f"{epochs.law.family.name} is fitted to {epochs.law.family.target_top1}% top-1: its epochs "
                        f"are an upper bound for {args.target_top1:g}%")  # fmt: skip
    sc = Scenario(
        device=dev,
        devices=devices,
        per_node=per_node,
        global_batch=batch,
        speed=speed,
        epochs=epochs.epochs,
        evals=epochs.evals,
        precision=precision,
        allreduce="hierarchical" if args.allreduce == "auto" else args.allreduce,
        wire_dtype=args.wire_dtype or "fp32",
        bucket_mb=args.bucket_mb,
        overlap=not args.no_overlap,
        **_links(args, cal),
    )
    if dev.torus_links and args.allreduce == "auto":
        sc = replace(sc, allreduce="2d-torus")
    return Request(sc, epochs, speed_from, cal, cpu_cal, args.allreduce == "auto", args.wire_dtype is None, warnings)
