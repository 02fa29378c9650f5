"""The planner's command line, `python -m fastres.plan` (or `fastres-plan`).

How long ResNet-50 takes to train on a cluster, before booking it:

    python -m fastres.plan --device h100 --devices 64 --global-batch 8192 --inter-node-gbps 3200
    python -m fastres.plan --device v100 --devices 256 --inter-node-gbps 400 --wire-dtype bf16 --json
    python -m fastres.plan --device xeon-8160 --devices 1600 --devices-per-node 2 --global-batch 32768
    python -m fastres.plan --measure-cpu cpu.json            # this machine's training speed, per core
    python -m fastres.plan --device cpu --calibrate-cpu cpu.json --cores-per-device 32 --devices 64
    python -m fastres.plan --calibrate bench/results/hosts-allreduce.json --devices 8 --devices-per-node 2
    python -m fastres.plan --validate        # published runs: calibration and validation, predicted / published

Prints step time, epoch time, time to train and scaling efficiency for the all-reduce asked
for (--allreduce, default: the advised one), and advises the all-reduce, wire dtype and bucket
size. The model: fastres/plan/cost.py (compute b / R + t0 per device, calibrated on declared
runs: fastres/plan/calibrate.py), fastres/plan/allreduce.py (ring, tree, flat, hierarchical,
2d-torus). --gpu, --gpus, --gpus-per-node are the earlier names of --device, --devices,
--devices-per-node. Bad input ends with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import fastres
from fastres import FastresError
from fastres.plan.allreduce import ALGORITHMS
from fastres.plan.calibrate import DEFAULT_SPEED, cpu_t0, default_speed
from fastres.plan.choose import recommend
from fastres.plan.cost import WIRE_BYTES, Cluster, Estimate, Job, estimate
from fastres.plan.cpu import CpuCalibrationError, cpu_device, read_cpu_calibration
from fastres.plan.devices import DEVICES, lookup_device
from fastres.plan.jsonfile import read_json
from fastres.plan.speed import Speed
from fastres.plan.validate import validation_table

__all__ = ["PlanError", "build_parser", "main", "read_calibration", "validation_table"]

PROG = "python -m fastres.plan"
DEVICE_CHOICES = (*DEVICES, "cpu")


class PlanError(FastresError):
    """A planner flag with a value the model cannot use; the message names the flag."""


def build_parser() -> argparse.ArgumentParser:
    p = fastres.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("hardware")
    g.add_argument("--device", "--gpu", dest="device", default="h100",
                   help=f"device (one training process): {', '.join(DEVICE_CHOICES)} (default h100)")  # fmt: skip
    g.add_argument("--devices", "--gpus", dest="devices", type=int, default=8, help="devices in the job (default 8)")
    g.add_argument("--devices-per-node", "--gpus-per-node", dest="per_node", type=int,
                   help="devices per node (default: the device's usual node, or --devices if fewer)")  # fmt: skip
    g.add_argument(
        "--intra-node-gbps", type=float, help="Gbit/s from one device to its node, one way (default: NVLink)"
    )
    g.add_argument("--inter-node-gbps", type=float, help="Gbit/s of one node's network links together, one way (100)")
    g.add_argument("--intra-node-alpha-us", type=float, help="us per message step in a node (NCCL: 3.4 NVLink)")
    g.add_argument("--inter-node-alpha-us", type=float, help="us per message step between nodes (NCCL: 14)")
    g.add_argument("--data-images-per-s", type=float, help="what one node's data loader delivers, images/s (no limit)")
    g.add_argument(
        "--calibrate", metavar="RESULTS.json",
        help="alpha and inter-node bandwidth measured by bench/bench_hosts.py (explicit flags still win)",
    )  # fmt: skip
    g = p.add_argument_group("CPU clusters")
    g.add_argument(
        "--calibrate-cpu", metavar="CPU.json",
        help="--device cpu: this machine's speed per core (--measure-cpu's or bench_train.py's JSON)",
    )  # fmt: skip
    g.add_argument("--cores-per-device", type=int, help="--device cpu: cores per socket (default: the machine's)")
    g.add_argument("--memory-gbs", type=float, help="--device cpu: DRAM GB/s per socket (default 100, assumed)")
    g.add_argument("--measure-cpu", metavar="OUT.json", help="time training steps on this CPU and write OUT.json")
    g.add_argument("--measure-batches", default="4,8", help="--measure-cpu: two per-process batch sizes (4,8)")
    g = p.add_argument_group("training")
    g.add_argument("--global-batch", type=int, help="images per step over all devices (default: 64 per device)")
    g.add_argument("--epochs", type=float, default=90, help="epochs of ImageNet-1k, 1,281,167 images (default 90)")
    g.add_argument("--evals", type=float, default=0, help="evaluations of the 50,000 validation images (default 0)")
    g.add_argument("--precision", choices=("auto", "mixed", "fp32"), default="auto",
                   help="compute: mixed (fp16/bf16), fp32; auto: mixed where the device has a fast path")  # fmt: skip
    g = p.add_argument_group("all-reduce")
    g.add_argument("--allreduce", choices=("auto", *ALGORITHMS), default="auto",
                   help="ring, tree, flat (NCCL's choice), hierarchical, 2d-torus; auto: the advised one")  # fmt: skip
    g.add_argument("--wire-dtype", help="gradients on the wire: fp32, bf16, fp16 (default: the advised one)")
    g.add_argument("--bucket-mb", type=float, help="fp32 gradient MB per bucket (default: the advised size)")
    g.add_argument("--no-overlap", action="store_true", help="all-reduce after backward, not during it")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="one JSON object instead of text")
    g.add_argument("--validate", action="store_true", help="the published runs vs the model, as a table")
    return p


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


def _device_and_speed(args) -> tuple:
    if args.device == "cpu":
        _need(args.calibrate_cpu is not None, "--device cpu needs --calibrate-cpu CPU.json (see --measure-cpu)")
        cores = args.cores_per_device
        if cores is None:
            import os

            cores = os.cpu_count() or 1
        _need(cores >= 1, f"--cores-per-device must be a positive integer, got {cores}")
        _positive("--memory-gbs", args.memory_gbs)
        dev = cpu_device(cores, args.memory_gbs) if args.memory_gbs else cpu_device(cores)
        precision = "fp32" if args.precision == "auto" else args.precision
        try:
            speed, what = read_cpu_calibration(args.calibrate_cpu, cores, precision)
        except CpuCalibrationError as e:
            raise PlanError(str(e)) from None
        if speed.t0 == 0:
            speed = Speed(speed.rate, cpu_t0(dev), speed.source + "; t0 = optimizer pass at DRAM bandwidth")
        return dev, precision, speed, what
    _need(args.calibrate_cpu is None, "--calibrate-cpu needs --device cpu")
    try:
        dev = lookup_device(args.device)
    except KeyError:
        raise PlanError(f"--device {args.device!r}: unknown device; known: {', '.join(DEVICE_CHOICES)}") from None
    precision = args.precision if args.precision != "auto" else ("mixed" if dev.tensor_cores else "fp32")
    try:
        speed = default_speed(dev.name, precision)
    except KeyError:
        known = ", ".join(f"{d} {p}" for d, p in DEFAULT_SPEED)
        raise PlanError(
            f"--device {dev.name} --precision {precision}: no calibrated speed; calibrated: {known}"
        ) from None
    return dev, precision, speed, None


def plan_from_args(args) -> tuple[Cluster, Job, dict]:
    dev, precision, speed, cpu_cal = _device_and_speed(args)
    _need(args.devices >= 1, f"--devices must be a positive integer, got {args.devices}")
    per_node = args.per_node if args.per_node is not None else min(dev.per_node, args.devices)
    _need(per_node >= 1, f"--devices-per-node must be a positive integer, got {per_node}")
    _need(
        args.devices % per_node == 0,
        f"--devices {args.devices} is not divisible by --devices-per-node {per_node}: every node runs the same number",
    )
    batch = args.global_batch if args.global_batch is not None else 64 * args.devices
    _need(batch >= 1, f"--global-batch must be a positive integer, got {batch}")
    _need(batch % args.devices == 0, f"--global-batch {batch} is not divisible by --devices {args.devices}")
    _need(math.isfinite(args.epochs) and args.epochs > 0, f"--epochs must be > 0, got {args.epochs:g}")
    _need(math.isfinite(args.evals) and args.evals >= 0, f"--evals must be >= 0, got {args.evals:g}")
    for name in ("intra_node_gbps", "inter_node_gbps", "data_images_per_s", "bucket_mb"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    for name in ("intra_node_alpha_us", "inter_node_alpha_us"):
        v = getattr(args, name)
        if v is not None:
            _need(math.isfinite(v) and v >= 0, f"--{name.replace('_', '-')} must be >= 0, got {v:g}")
    if args.wire_dtype is not None:
        _need(args.wire_dtype in WIRE_BYTES, f"--wire-dtype must be one of fp32, bf16, fp16, got {args.wire_dtype!r}")
    cal = read_calibration(args.calibrate) if args.calibrate else None
    inter_gbps = args.inter_node_gbps or (cal["inter_node_gbps"] if cal else 100.0)
    defaults = Cluster(device=dev, devices=1, per_node=1, intra_gbps=1, inter_gbps=1, speed=speed)
    inter_alpha = (
        args.inter_node_alpha_us * 1e-6
        if args.inter_node_alpha_us is not None
        else (cal["alpha_s"] if cal else defaults.inter_alpha_s)
    )
    intra_alpha = args.intra_node_alpha_us * 1e-6 if args.intra_node_alpha_us is not None else defaults.intra_alpha_s
    cluster = Cluster(
        device=dev,
        devices=args.devices,
        per_node=per_node,
        intra_gbps=args.intra_node_gbps or dev.intra_node_gbs * 8,
        inter_gbps=inter_gbps,
        speed=speed,
        intra_alpha_s=intra_alpha,
        intra_tree_alpha_s=intra_alpha if args.intra_node_alpha_us is not None else defaults.intra_tree_alpha_s,
        inter_alpha_s=inter_alpha,
        backend="gloo" if dev.is_cpu or cal else "nccl",
        data_images_per_s_per_node=args.data_images_per_s,
    )
    job = Job(
        global_batch=batch,
        epochs=args.epochs,
        precision=precision,
        wire_dtype=args.wire_dtype or "fp32",
        allreduce="hierarchical" if args.allreduce == "auto" else args.allreduce,
        bucket_mb=args.bucket_mb or 25.0,
        overlap=not args.no_overlap,
        evals=args.evals,
    )
    return cluster, job, {"calibration": cal, "cpu_calibration": cpu_cal}


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _allreduce_dict(job: Job, est: Estimate) -> dict:
    return {
        "algorithm": job.allreduce,
        "wire_dtype": job.wire_dtype,
        "bucket_mb": job.bucket_mb,
        "seconds_per_step": est.allreduce_s,
        "exposed_seconds_per_step": est.exposed_allreduce_s,
    }


def run_plan(args) -> int:
    cluster, job, extra = plan_from_args(args)
    advised_job, advised = recommend(cluster, job)
    if args.allreduce == "auto" or args.wire_dtype is None or args.bucket_mb is None:
        job = replace(
            job,
            allreduce=advised_job.allreduce if args.allreduce == "auto" else job.allreduce,
            wire_dtype=advised_job.wire_dtype if args.wire_dtype is None else job.wire_dtype,
            bucket_mb=advised_job.bucket_mb if args.bucket_mb is None else job.bucket_mb,
        )
    est = estimate(cluster, job)
    c, b = cluster, job.global_batch // cluster.devices
    if args.json:
        out = {
            "device": c.device.name,
            "devices": c.devices,
            "devices_per_node": c.per_node,
            "gpu": c.device.name,  # the earlier names, kept
            "gpus": c.devices,
            "gpus_per_node": c.per_node,
            "nodes": c.nodes,
            "global_batch": job.global_batch,
            "batch_per_device": b,
            "batch_per_gpu": b,
            "epochs": job.epochs,
            "precision": job.precision,
            "speed": {"images_per_s_large_batch": c.speed.rate, "t0_s": c.speed.t0, "source": c.speed.source},
            "intra_node_gbps": c.intra_gbps,
            "inter_node_gbps": c.inter_gbps,
            "inter_node_alpha_s": c.inter_alpha_s,
            **est.as_dict(),
            "allreduce": _allreduce_dict(job, est),
            "recommended": {
                **_allreduce_dict(advised_job, advised),
                "step_time_s": advised.step_time_s,
                "time_to_train_s": advised.time_to_train_s,
            },  # fmt: skip
            "calibration": extra["calibration"],
            "cpu_calibration": extra["cpu_calibration"],
        }
        print(json.dumps(out))
        return 0
    print(
        f"fastres plan: {c.devices} x {c.device.full_name} ({c.nodes} nodes x {c.per_node}), "
        f"global batch {job.global_batch} ({b} per device), {job.epochs:g} epochs, {job.precision} precision"
    )
    print(f"  speed: {c.speed.rate:,.1f} img/s at a large batch, t0 {c.speed.t0 * 1e3:.2f} ms ({c.speed.source})")
    if extra["calibration"]:
        cal = extra["calibration"]
        print(
            f"  calibrated from {cal['from']}: alpha {cal['alpha_s'] * 1e6:.0f} us, {cal['inter_node_gbps']:.3g} Gbit/s"
        )
    print(
        f"  links: {c.intra_gbps:g} Gbit/s per device in a node, {c.inter_gbps:g} Gbit/s per node between nodes; "
        f"alpha {c.intra_alpha_s * 1e6:g} / {c.inter_alpha_s * 1e6:g} us"
    )
    print(
        f"  one device: {est.device_images_per_s:,.1f} img/s at {b} per device; "
        f"compute {est.compute_s * 1e3:.1f} ms per step"
    )
    print(
        f"  all-reduce: {job.allreduce}, {job.wire_dtype} on the wire, {job.bucket_mb:g} MB buckets: "
        f"{est.allreduce_s * 1e3:.1f} ms per step, "
        f"{max(0.0, est.exposed_allreduce_s) * 1e3:.1f} ms not hidden by backward"
    )
    print(
        f"  step {est.step_time_s * 1e3:.1f} ms ({est.bound}-bound), epoch {_duration(est.epoch_time_s)}, "
        f"time to train {_duration(est.time_to_train_s)}, {est.images_per_s:,.0f} img/s, "
        f"scaling efficiency {est.scaling_efficiency:.0%}"
    )
    gain = est.time_to_train_s / advised.time_to_train_s
    print(
        f"advice: {advised_job.allreduce} all-reduce, {advised_job.wire_dtype} on the wire, "
        f"{advised_job.bucket_mb:g} MB buckets: time to train {_duration(advised.time_to_train_s)}"
        + (f" ({gain:.2f}x faster than the above)" if gain > 1.005 else " (the above)")
    )
    return 0


def run_measure(args) -> int:
    from fastres.plan.cpu import measure

    precision = "fp32" if args.precision == "auto" else args.precision
    try:
        batches = tuple(int(x) for x in args.measure_batches.split(","))
    except ValueError:
        batches = ()
    _need(
        len(batches) == 2 and 1 <= min(batches) < max(batches),
        f"--measure-batches must be two different positive integers, got {args.measure_batches!r}",
    )
    try:
        doc = measure(batches=batches, precision=precision)
    except CpuCalibrationError as e:
        raise PlanError(str(e)) from None
    Path(args.measure_cpu).write_text(json.dumps(doc, indent=2) + "\n")
    busy = [x for x in doc["load_average_1min"] if x is not None and x > (doc["machine"]["cores"] or 1)]
    if busy:
        print(
            f"fastres plan: warning: load average {max(busy):.1f} on {doc['machine']['cores']} cores while measuring: "
            "other work shared the CPU and the figures below include it (t0 most of all); measure on an idle machine"
        )
    print(
        f"fastres plan: {doc['images_per_s_per_core']:.3g} img/s per core at {doc['image_size']} px "
        f"({doc['threads']} threads, t0 {doc['t0_s']:.3g} s): wrote {args.measure_cpu}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.validate:
            print(validation_table())
            return 0
        if args.measure_cpu:
            return run_measure(args)
        return run_plan(args)
    except PlanError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
