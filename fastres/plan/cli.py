"""The planner's command line, `python -m fastres.plan` (or `fastres-plan`).

How long ResNet-50 takes to train on a cluster, before booking it:

    python -m fastres.plan --gpu h100 --gpus 64 --global-batch 8192 --inter-node-gbps 400
    python -m fastres.plan --gpu v100 --gpus 256 --gpus-per-node 8 --inter-node-gbps 100 --wire-dtype bf16 --json
    python -m fastres.plan --calibrate bench/results/hosts-allreduce.json --gpus 8 --gpus-per-node 2
    python -m fastres.plan --validate          # the published record runs beside the model's predictions

Prints step time, epoch time, time to train and scaling efficiency for the all-reduce asked
for (--allreduce, default: the advised one), and advises the all-reduce, wire dtype and bucket
size. The model (fastres/plan/cost.py): a roofline per image from the GPU's data sheet, the
alpha-beta cost of ring, tree and hierarchical all-reduce, buckets overlapped with backward,
and the data loader's rate where given. Bad input ends with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

from fastres import FastresError
from fastres.plan.choose import recommend
from fastres.plan.cost import ALGORITHMS, WIRE_BYTES, Cluster, Estimate, Job, estimate
from fastres.plan.gpus import GPUS, lookup_gpu
from fastres.plan.records import RECORDS, predict

__all__ = ["PlanError", "build_parser", "main", "read_calibration", "validation_table"]

PROG = "python -m fastres.plan"


class PlanError(FastresError):
    """A planner flag with a value the model cannot use; the message names the flag."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("hardware")
    g.add_argument("--gpu", default="h100", help=f"GPU model: {', '.join(GPUS)} (default h100)")
    g.add_argument("--gpus", type=int, default=8, help="GPUs in the job (default 8)")
    g.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: 8, or --gpus if fewer)")
    g.add_argument("--intra-node-gbps", type=float, help="Gbit/s from one GPU to its node, one way (default: NVLink)")
    g.add_argument("--inter-node-gbps", type=float, help="Gbit/s of one node's network links, one way (default 100)")
    g.add_argument("--intra-node-alpha-us", type=float, default=5.0, help="us per message step in a node (5)")
    g.add_argument("--inter-node-alpha-us", type=float, help="us per message step between nodes (default 10)")
    g.add_argument("--data-images-per-s", type=float, help="what one node's data loader delivers, images/s (no limit)")
    g.add_argument(
        "--calibrate", metavar="RESULTS.json",
        help="alpha and inter-node bandwidth measured by bench/bench_hosts.py (explicit flags still win)",
    )  # fmt: skip
    g = p.add_argument_group("training")
    g.add_argument("--global-batch", type=int, help="images per step over all GPUs (default: 64 per GPU)")
    g.add_argument("--epochs", type=float, default=90, help="epochs of ImageNet-1k, 1,281,167 images (default 90)")
    g.add_argument("--precision", choices=("auto", "mixed", "fp32"), default="auto",
                   help="compute: mixed (fp16/bf16), fp32; auto: mixed where the GPU has tensor cores")  # fmt: skip
    g = p.add_argument_group("all-reduce")
    g.add_argument("--allreduce", choices=("auto", *ALGORITHMS), default="auto",
                   help="ring, tree, hierarchical; auto: the advised one (default)")  # fmt: skip
    g.add_argument("--wire-dtype", help="gradients on the wire: fp32, bf16, fp16 (default: the advised one)")
    g.add_argument("--bucket-mb", type=float, help="fp32 gradient MB per bucket (default: the advised size)")
    g.add_argument("--no-overlap", action="store_true", help="all-reduce after backward, not during it")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="one JSON object instead of text")
    g.add_argument("--validate", action="store_true", help="the published record runs vs the model, as a table")
    return p


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise PlanError(message)


def _positive(name: str, value: float | None) -> None:
    if value is not None:
        _need(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value:g}")


def read_calibration(path: str) -> dict:
    """alpha_s and inter_node_gbps from bench/bench_hosts.py's JSON (its largest topology) or a bare dict."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise PlanError(f"--calibrate {path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise PlanError(f"--calibrate {path}: not JSON ({e})") from None
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


def plan_from_args(args) -> tuple[Cluster, Job, dict]:
    try:
        gpu = lookup_gpu(args.gpu)
    except KeyError:
        raise PlanError(f"--gpu {args.gpu!r}: unknown GPU; known: {', '.join(GPUS)}") from None
    _need(args.gpus >= 1, f"--gpus must be a positive integer, got {args.gpus}")
    per_node = args.gpus_per_node if args.gpus_per_node is not None else min(8, args.gpus)
    _need(per_node >= 1, f"--gpus-per-node must be a positive integer, got {per_node}")
    _need(
        args.gpus % per_node == 0,
        f"--gpus {args.gpus} is not divisible by --gpus-per-node {per_node}: every node runs the same number",
    )
    batch = args.global_batch if args.global_batch is not None else 64 * args.gpus
    _need(batch >= 1, f"--global-batch must be a positive integer, got {batch}")
    _need(batch % args.gpus == 0, f"--global-batch {batch} is not divisible by --gpus {args.gpus}")
    _need(math.isfinite(args.epochs) and args.epochs > 0, f"--epochs must be > 0, got {args.epochs:g}")
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
    inter_alpha = (
        args.inter_node_alpha_us * 1e-6 if args.inter_node_alpha_us is not None else (cal["alpha_s"] if cal else 10e-6)
    )
    cluster = Cluster(
        gpu=gpu,
        gpus=args.gpus,
        gpus_per_node=per_node,
        intra_gbps=args.intra_node_gbps or gpu.intra_node_gbs * 8,
        inter_gbps=inter_gbps,
        intra_alpha_s=args.intra_node_alpha_us * 1e-6,
        inter_alpha_s=inter_alpha,
        data_images_per_s_per_node=args.data_images_per_s,
    )
    precision = args.precision if args.precision != "auto" else ("mixed" if gpu.tensor_cores else "fp32")
    job = Job(
        global_batch=batch,
        epochs=args.epochs,
        precision=precision,
        wire_dtype=args.wire_dtype or "fp32",
        allreduce="hierarchical" if args.allreduce == "auto" else args.allreduce,
        bucket_mb=args.bucket_mb or 25.0,
        overlap=not args.no_overlap,
    )
    return cluster, job, {"calibration": cal}


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
    c = cluster
    if args.json:
        out = {
            "gpu": c.gpu.name,
            "gpus": c.gpus,
            "gpus_per_node": c.gpus_per_node,
            "nodes": c.nodes,
            "global_batch": job.global_batch,
            "batch_per_gpu": job.global_batch // c.gpus,
            "epochs": job.epochs,
            "precision": job.precision,
            "intra_node_gbps": c.intra_gbps,
            "inter_node_gbps": c.inter_gbps,
            "inter_node_alpha_s": c.inter_alpha_s,
            **{k: v for k, v in est.as_dict().items()},
            "allreduce": _allreduce_dict(job, est),
            "recommended": {
                **_allreduce_dict(advised_job, advised),
                "step_time_s": advised.step_time_s,
                "time_to_train_s": advised.time_to_train_s,
            },  # fmt: skip
            "calibration": extra["calibration"],
        }
        print(json.dumps(out))
        return 0
    b = job.global_batch // c.gpus
    print(
        f"fastres plan: {c.gpus} x {c.gpu.full_name} ({c.nodes} nodes x {c.gpus_per_node}), "
        f"global batch {job.global_batch} ({b} per GPU), {job.epochs:g} epochs, {job.precision} precision"
    )
    if extra["calibration"]:
        cal = extra["calibration"]
        print(
            f"  calibrated from {cal['from']}: alpha {cal['alpha_s'] * 1e6:.0f} us, {cal['inter_node_gbps']:.3g} Gbit/s"
        )
    print(
        f"  links: {c.intra_gbps:g} Gbit/s per GPU in a node, {c.inter_gbps:g} Gbit/s per node between nodes; "
        f"alpha {c.intra_alpha_s * 1e6:g} / {c.inter_alpha_s * 1e6:g} us"
    )
    print(f"  one GPU: {est.gpu_images_per_s:,.0f} img/s at {b} per GPU; compute {est.compute_s * 1e3:.1f} ms per step")
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


def validation_table() -> str:
    """Markdown: each published record run beside the model's prediction."""
    lines = [
        "| run | hardware (as published) | batch | epochs | all-reduce (as published) | published | predicted | "
        "predicted / published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in RECORDS:
        e = predict(r)
        lines.append(
            f"| {r.name} | {r.gpus:,} x {GPUS[r.gpu].full_name}, {r.gpus_per_node} per node, "
            f"{r.inter_gbps:g} Gbit/s per node | {r.global_batch:,} | {r.epochs:g} | {r.allreduce}, "
            f"{r.wire_dtype}{'' if r.overlap else ', after backward'} | {r.published} | "
            f"{_duration(e.time_to_train_s)} (step {e.step_time_s * 1e3:.1f} ms, {e.bound}-bound) | "
            f"{e.time_to_train_s / r.published_s:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.validate:
            print(validation_table())
            return 0
        return run_plan(args)
    except FastresError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
