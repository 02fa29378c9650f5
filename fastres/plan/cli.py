"""The planner's command line, `python -m fastres.plan` (or `fastres-plan`).

How long ResNet-50 takes to train on a cluster, before booking it:

    python -m fastres.plan --device h100 --devices 64 --global-batch 8192 --inter-node-gbps 3200
    python -m fastres.plan --device h100 --devices 256 --global-batch 16384 --inter-node-gbps 3200 --target-top1 75.9
    python -m fastres.plan --device h100 --devices-per-node 8 --inter-node-gbps 3200 --sweep-devices 8:3584 \\
        --batch-per-device 16:400 --target-top1 75.9 --plot sweep.png     # how many devices are worth booking
    python -m fastres.plan --device p100 --devices 256 --global-batch 8192 --inter-node-gbps 50 \\
        --allreduce hierarchical --device-images-per-s 138@32            # your own speed per device
    python -m fastres.plan --device h100 --devices 512 --calibrate-run runs/resnet50-1 --target-top1 75.9
    python -m fastres.plan --device xeon-8160 --devices 1600 --devices-per-node 2 --global-batch 32000
    python -m fastres.plan --measure-cpu cpu.json            # this machine's training speed, per core
    python -m fastres.plan --device cpu --calibrate-cpu cpu.json --cores-per-device 32 --devices 64
    python -m fastres.plan --calibrate bench/results/hosts-allreduce.json --devices 8 --devices-per-node 2
    python -m fastres.plan --validate        # published runs: calibration and validation, predicted / published

Prints step time, epoch time, time to train (--epochs N, 90 by default) or time to accuracy
(--target-top1, --epochs auto: the epochs a recipe's law gives for the global batch,
fastres/plan/epochs.py) and scaling efficiency, and advises the all-reduce, wire dtype and
bucket size. The model: fastres/plan/cost.py (compute b / R + t0 per device, calibrated on
declared runs: fastres/plan/calibrate.py, or your own: fastres/plan/userspeed.py),
fastres/plan/allreduce.py (ring, tree, flat, hierarchical, 2d-torus); the same inputs give
--validate's prediction (fastres/plan/scenario.py). --gpu, --gpus, --gpus-per-node are the
earlier names of --device, --devices, --devices-per-node. Bad input ends with one line and exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import fastres
from fastres.plan.allreduce import ALGORITHMS
from fastres.plan.calibrate import SPEEDS
from fastres.plan.choose import advise, recommend
from fastres.plan.cost import estimate
from fastres.plan.cpu import CpuCalibrationError
from fastres.plan.epochs import FAMILIES
from fastres.plan.request import DEVICE_CHOICES, PlanError, read_calibration, request
from fastres.plan.scenario import BACKENDS, build
from fastres.plan.show import plan_json, plan_text, sweep_json, sweep_text
from fastres.plan.sweep import batch_candidates, parse_sizes, sweep
from fastres.plan.validate import law_summary, validation_table

__all__ = ["PlanError", "build_parser", "main", "read_calibration", "validation_table"]

PROG = "python -m fastres.plan"


def build_parser() -> argparse.ArgumentParser:
    p = fastres.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("hardware")
    g.add_argument("--device", "--gpu", dest="device", default="h100",
                   help=f"device (one training process): {', '.join(DEVICE_CHOICES)} (default h100)")  # fmt: skip
    g.add_argument("--devices", "--gpus", dest="devices", type=int, help="devices in the job (default 8)")
    g.add_argument("--devices-per-node", "--gpus-per-node", dest="per_node", type=int,
                   help="devices per node (default: the device's usual node, or --devices if fewer)")  # fmt: skip
    g.add_argument(
        "--intra-node-gbps", type=float,
        help="Gbit/s from one device to its node, one way (default: the data sheet's NVLink / PCIe; a TPU: one link)",
    )  # fmt: skip
    g.add_argument("--inter-node-gbps", type=float, help="Gbit/s of one node's network links together, one way (100)")
    g.add_argument("--intra-node-alpha-us", type=float,
                   help="us per message step in a node (NCCL: 3.4 NVLink, 5.7 PCIe)")  # fmt: skip
    g.add_argument("--inter-node-alpha-us", type=float, help="us per message step between nodes (NCCL: 14)")
    g.add_argument("--data-images-per-s", type=float, help="what one node's data loader delivers, images/s (no limit)")
    g.add_argument("--backend", choices=BACKENDS,
                   help="collectives: nccl (default on GPUs and TPUs), gloo (default on CPUs), mpi")  # fmt: skip
    g.add_argument(
        "--calibrate", metavar="RESULTS.json",
        help="alpha and inter-node bandwidth measured by bench/bench_hosts.py (explicit flags still win)",
    )  # fmt: skip
    g = p.add_argument_group("speed of one device (default: the device's calibrated speed, --validate's table)")
    g.add_argument("--speed", choices=sorted(SPEEDS), metavar="NAME",
                   help=f"a calibrated speed by name (README.md's table): {', '.join(sorted(SPEEDS))}")  # fmt: skip
    g.add_argument(
        "--device-images-per-s", metavar="R[@b]",
        help="your device's images/s: R at a large batch, or R@b measured at b images per device",
    )  # fmt: skip
    g.add_argument(
        "--calibrate-run", metavar="RUN_DIR", action="append",
        help="a fastres run folder's measured steps (twice: two runs at different per-device batches)",
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
    g.add_argument("--epochs", metavar="N|auto",
                   help="epochs of ImageNet-1k, 1,281,167 images (default 90; auto: --target-top1 75.9)")  # fmt: skip
    g.add_argument("--target-top1", type=float,
                   help="time to this top-1 (%%): the epochs a recipe's law gives for the global batch")  # fmt: skip
    g.add_argument(
        "--recipe", choices=list(FAMILIES),
        help="the recipe whose law gives the epochs (default: the newest reaching --target-top1)",
    )  # fmt: skip
    g.add_argument(
        "--evals", type=float,
        help="evaluations of the 50,000 validation images (default 0; with a law: the law's, every 4 epochs)",
    )  # fmt: skip
    g.add_argument("--precision", choices=("auto", "mixed", "fp32"), default="auto",
                   help="compute: mixed (fp16/bf16), fp32; auto: mixed where the device has a fast path")  # fmt: skip
    g = p.add_argument_group("all-reduce")
    g.add_argument("--allreduce", choices=("auto", *ALGORITHMS), default="auto",
                   help="ring, tree, flat (NCCL's choice), hierarchical, 2d-torus; auto: the advised one")  # fmt: skip
    g.add_argument("--wire-dtype", help="gradients on the wire: fp32, bf16, fp16 (default: the advised one)")
    g.add_argument("--bucket-mb", type=float, help="fp32 gradient MB per bucket (default 25, fastres's)")
    g.add_argument("--no-overlap", action="store_true", help="all-reduce after backward, not during it")
    g = p.add_argument_group("how many devices")
    g.add_argument(
        "--sweep-devices", metavar="N,N,...|LO:HI",
        help="time to accuracy, device-hours and efficiency at each size (LO:HI: doubling from LO)",
    )  # fmt: skip
    g.add_argument(
        "--batch-per-device", metavar="B|LO:HI",
        help="--sweep-devices: the images per device, or a range to pick the fastest from (default 16:400)",
    )  # fmt: skip
    g.add_argument("--plot", metavar="FILE.png", help="--sweep-devices: draw it (needs matplotlib)")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="one JSON object instead of text")
    g.add_argument("--validate", action="store_true", help="the published runs vs the model, as a table")
    return p


def run_plan(args) -> int:
    req = request(args)
    cluster, job = build(req.scenario)
    advised_job, advised = recommend(cluster, job)
    if req.advise_algorithm or req.advise_wire:
        job, est = advise(cluster, job, algorithm=req.advise_algorithm, wire=req.advise_wire, bucket=False)
    else:
        est = estimate(cluster, job)
    print((plan_json if args.json else plan_text)(req, cluster, job, est, advised_job, advised))
    return 0


def run_sweep(args) -> int:
    if args.global_batch is not None or args.devices is not None:
        raise PlanError("--sweep-devices sets the devices: give --batch-per-device, not --devices or --global-batch")
    try:
        sizes = parse_sizes(args.sweep_devices)
        batches = batch_candidates(args.batch_per_device or "16:400")
    except ValueError as e:
        raise PlanError(str(e)) from None
    args.devices, args.global_batch = sizes[0], sizes[0] * batches[0]
    req = request(args, sweep=True)
    per_node = req.scenario.per_node
    odd = [n for n in sizes if n % min(per_node, n)]
    if odd:
        raise PlanError(f"--sweep-devices {odd[0]} is not divisible by --devices-per-node {per_node}")
    family = req.epochs.law.family if req.epochs.law is not None else None
    epochs_from = family.law_text() if family else f"{req.epochs.epochs:g} epochs at every size (--epochs)"
    sw = sweep(req.scenario, sizes, batches, family, req.advise_algorithm, req.advise_wire, epochs_from)
    if not sw.points:
        raise PlanError(f"--sweep-devices {args.sweep_devices}: no size has a possible batch ({sw.left_out[0][1]})")
    target = f"time to {family.target_top1}%" if family else "time to train"
    print(sweep_json(req, sw) if args.json else sweep_text(req, sw, target))
    if args.plot:
        from fastres.plan.plot import plot_sweep

        try:
            sc = req.scenario
            net = f"{sc.inter_gbps:g} Gbit/s per node" if sc.inter_gbps else "the default network"
            title = f"{target} on {sc.device.full_name}, nodes of {per_node}, {net}"
            if family is not None:
                e_min, b_noise = family.law
                title += f"\nepochs: {family.title} law, E = {e_min:.1f} (1 + B / {b_noise:,.0f})"
            plot_sweep(sw, args.plot, title)
        except ImportError:
            raise PlanError("--plot needs matplotlib (pip install matplotlib)") from None
        except OSError as e:
            raise PlanError(f"--plot {args.plot}: cannot write it ({e.strerror or e})") from None
    return 0


def run_measure(args) -> int:
    from fastres.plan.cpu import measure

    precision = "fp32" if args.precision == "auto" else args.precision
    try:
        batches = tuple(int(x) for x in args.measure_batches.split(","))
    except ValueError:
        batches = ()
    if not (len(batches) == 2 and 1 <= min(batches) < max(batches)):
        raise PlanError(f"--measure-batches must be two different positive integers, got {args.measure_batches!r}")
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
            print(validation_table() + "\n\n" + law_summary())
            return 0
        if args.measure_cpu:
            return run_measure(args)
        if args.plot and not args.sweep_devices:
            raise PlanError("--plot draws a sweep: give --sweep-devices")
        if args.sweep_devices:
            return run_sweep(args)
        return run_plan(args)
    except PlanError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
