"""Benchmark: fastres's bucketed reducer vs DDP, and its all-reduce throughput, on Gloo.

    python bench/bench_reducer.py                   # 4 ranks, 2 virtual nodes: writes bench/results/reducer-cpu.json
    python bench/bench_reducer.py --nproc 8 --image-size 32 --rounds 3

Starts its ranks with torchrun (`python -m torch.distributed.run --standalone`), the way a
user would, with FASTRES_VIRTUAL_NODES=2 so that the hierarchical path runs on one machine,
and one torch thread per rank. In the same run, interleaved round by round (whatever else
shares the CPU slows every configuration alike):

1. Training step: ResNet-50 forward + backward + gradient all-reduce at small images
   (`--image-size`, `--batch-size` per rank), with
     compute only           backward inside reducer.no_sync(): the floor, nothing sent
     DDP                    torch.nn.parallel.DistributedDataParallel (25 MB buckets)
     fastres flat           Reducer(algorithm="flat"), 25 MB buckets, first 1 MB
     fastres hierarchical   Reducer(algorithm="hierarchical") over the 2 virtual nodes
     fastres flat bf16      bf16 on the wire
   Each step's time is the slowest rank's; the median step is reported, and its ratio to DDP.
   Gradients are checked against DDP's before anything is timed.
2. All-reduce throughput per bucket size (1, 4, 16, 64 MB of fp32): one bucket through the
   reducer (pre-divide, collectives, unpack), flat and hierarchical, fp32 and bf16, vs one
   plain `dist.all_reduce` of the same tensor, the peer. Bandwidth is the bucket's fp32
   bytes over the time (algorithm bandwidth). The ceiling of this machine is a local copy
   of the same bytes (no network: the ranks share memory through loopback TCP).
3. The node phases on Gloo, 64 MB over the ranks of one node: torch's reduce_scatter_tensor
   and all_gather_into_tensor vs the L reduces and L broadcasts the reducer uses instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP_CONFIGS = ["compute only", "DDP", "fastres flat", "fastres hierarchical", "fastres flat bf16"]
SIZES_MB = [1, 4, 16, 64]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=4)
    ap.add_argument("--virtual-nodes", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="images per rank per step")
    ap.add_argument("--rounds", type=int, default=6, help="timed steps per configuration")
    ap.add_argument("--reps", type=int, default=5, help="timed all-reduces per bucket size and path")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "reducer-cpu.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    env = {**os.environ, "FASTRES_VIRTUAL_NODES": str(args.virtual_nodes), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={args.nproc}",
        __file__,
        "--worker",
        *sys.argv[1:],
    ]
    return subprocess.call(cmd, env=env)


def _time_once(fn, group) -> float:
    """fn() on every rank at once (after a barrier); the slowest rank's seconds."""
    import torch
    import torch.distributed as dist

    dist.barrier(group=group)
    t0 = time.perf_counter()
    fn()
    t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return float(t)


def _median_time(fn, reps: int, group) -> float:
    """One warm-up call (connections, staging buffers, first touch), then the median of `reps` timed ones."""
    fn()
    return statistics.median(_time_once(fn, group) for _ in range(reps))


def worker(args) -> int:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    from fastres.distributed import destroy, discover, init_distributed
    from fastres.distributed.reducer import Reducer, _all_gather, _reduce_scatter, bucket_layout
    from fastres.model import resnet50

    torch.set_num_threads(1)
    groups = init_distributed(discover(), backend="gloo", timeout=600)
    topo = groups.topology
    rank = topo.rank
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    say(f"bench_reducer: {topo.describe()}")

    # ---------------------------------------------------------------- 1. training step
    torch.manual_seed(0)
    base = resnet50(num_classes=100)
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen)
    y = torch.randint(0, 100, (args.batch_size,), generator=gen)
    loss_fn = nn.CrossEntropyLoss()

    models = {"DDP": DDP(copy.deepcopy(base), process_group=groups.world)}
    reducers = {}
    for name, kw in (
        ("compute only", {}),
        ("fastres flat", {"algorithm": "flat"}),
        ("fastres hierarchical", {"algorithm": "hierarchical"}),
        ("fastres flat bf16", {"algorithm": "flat", "wire_dtype": "bf16"}),
    ):
        models[name] = copy.deepcopy(base)
        layout = bucket_layout(models[name], groups, **{k: v for k, v in kw.items() if k == "algorithm"})
        reducers[name] = Reducer(layout, groups, **kw)

    def step(name: str) -> None:
        m = models[name]
        if name == "DDP":
            m.zero_grad(set_to_none=False)
            loss_fn(m(x), y).backward()
        else:
            r = reducers[name]
            r.layout.zero_grad()
            if name == "compute only":
                with r.no_sync():
                    loss_fn(m(x), y).backward()
            else:
                loss_fn(m(x), y).backward()
                r.wait()

    for name in STEP_CONFIGS:  # warm-up, and the check: same gradients as DDP
        step(name)
    ddp_grads = [p.grad for p in models["DDP"].module.parameters()]
    for name in STEP_CONFIGS[2:]:
        tol = 2e-2 if "bf16" in name else 1e-5
        worst = max(
            float((p.grad - g).abs().max() / g.abs().max().clamp_min(1e-12))
            for p, g in zip(models[name].parameters(), ddp_grads)
        )
        if worst > tol:
            raise SystemExit(f"bench_reducer: {name} gradients differ from DDP's by {worst:.2e} (> {tol})")
        say(f"  check: {name} gradients match DDP's (max rel. diff {worst:.1e})")
    times = {name: [] for name in STEP_CONFIGS}
    for i in range(args.rounds):
        for name in STEP_CONFIGS:
            times[name].append(_time_once(lambda name=name: step(name), groups.world))
        say(f"  round {i + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in STEP_CONFIGS))
    step_rows = {n: {"median_s": statistics.median(v), "min_s": min(v), "all_s": v} for n, v in times.items()}
    ddp = step_rows["DDP"]["median_s"]
    floor = step_rows["compute only"]["median_s"]
    for row in step_rows.values():
        row["ratio_to_ddp"] = row["median_s"] / ddp
        row["comm_overhead_s"] = row["median_s"] - floor
    for r in reducers.values():
        r.remove()
    buckets = [round(b.grad.numel() * 4 / 2**20, 2) for b in reducers["fastres flat"].buckets]
    models.clear()  # the step closure holds them: empty, not delete
    reducers.clear()

    # ---------------------------------------------------------------- 2. all-reduce throughput
    paths = [
        ("plain dist.all_reduce", None),
        ("fastres flat", ("flat", "fp32")),
        ("fastres hierarchical", ("hierarchical", "fp32")),
        ("fastres flat bf16", ("flat", "bf16")),
        ("fastres hierarchical bf16", ("hierarchical", "bf16")),
    ]
    tput = {}
    for mb in SIZES_MB:
        n = mb * 2**20 // 4
        row = {}
        src = torch.randn(n, generator=gen)
        copy_dst = torch.empty_like(src)
        # all ranks at once, as in the collectives; the warm-up call takes the page faults
        row["ceiling: local copy"] = _median_time(lambda d=copy_dst, s=src: d.copy_(s), args.reps, groups.world)
        for name, spec in paths:
            if spec is None:
                t = src.clone()
                run = lambda t=t: dist.all_reduce(t, group=groups.world)  # noqa: E731
            else:
                p = nn.Parameter(src.clone())
                caps = dict(algorithm=spec[0], bucket_cap_mb=mb + 1, first_bucket_mb=mb + 1)
                red = Reducer(bucket_layout(nn.ParameterList([p]), groups, **caps), groups, wire_dtype=spec[1], **caps)
                run = red.wait  # one bucket: pre-divide, collectives, unpack
            row[name] = _median_time(run, args.reps, groups.world)
            if spec is not None:
                red.remove()
        tput[f"{mb} MB"] = {
            k: {
                "seconds": v,
                "GB_per_s": mb * 2**20 / v / 1e9,
                "vs_plain_all_reduce": row["plain dist.all_reduce"] / v if k != "ceiling: local copy" else None,
            }
            for k, v in row.items()
        }
        say(f"  {mb:3d} MB: " + ", ".join(f"{k} {mb * 2**20 / v / 1e9:.2f} GB/s" for k, v in row.items()))

    # ---------------------------------------------------------------- 3. Gloo's node phases, 64 MB
    rs, ag = _reduce_scatter, _all_gather  # the reducer's: torch's *_single where it has them
    L, owners = topo.local_world_size, groups.intra_ranks
    buf = torch.randn(16 * 2**20, generator=gen)
    shard = torch.empty(buf.numel() // L)

    def waits(works):
        for w in works:
            w.wait()

    phases = {
        "all_reduce (intra, 64 MB)": lambda: dist.all_reduce(buf, group=groups.intra),
        "reduce_scatter_tensor (intra)": lambda: rs(shard, buf, group=groups.intra),
        f"{L} reduces, chunk i to local rank i": lambda: waits(
            [dist.reduce(c, dst=r, group=groups.intra, async_op=True) for c, r in zip(buf.chunk(L), owners)]
        ),
        "all_gather_into_tensor (intra)": lambda: ag(buf, shard, group=groups.intra),
        f"{L} broadcasts, chunk i from local rank i": lambda: waits(
            [dist.broadcast(c, src=r, group=groups.intra, async_op=True) for c, r in zip(buf.chunk(L), owners)]
        ),
    }
    phase_rows = {}
    for name, fn in phases.items():
        phase_rows[name] = _median_time(fn, args.reps, groups.world)
        say(f"  node phase {name:40s} {phase_rows[name] * 1e3:7.1f} ms")

    if rank == 0:
        result = {
            "bench": "bench/bench_reducer.py",
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "backend": groups.backend,
                "transport": "Gloo over loopback TCP, one machine",
            },
            "setup": {
                "ranks": topo.world_size,
                "virtual_nodes": topo.num_nodes,
                "ranks_per_node": topo.local_world_size,
                "threads_per_rank": 1,
                "model": "resnet50 (100 classes)",
                "image_size": args.image_size,
                "batch_per_rank": args.batch_size,
                "rounds": args.rounds,
                "bucket_mb": buckets,
            },
            "step": step_rows,
            "allreduce": tput,
            "gloo_node_phases_64MB_s": phase_rows,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        say(f"\nstep (median of {args.rounds}, slowest rank), ResNet-50 {args.image_size}px x {args.batch_size}/rank:")
        for n, row in step_rows.items():
            say(
                f"  {n:24s} {row['median_s']:7.3f} s   {row['ratio_to_ddp']:5.2f}x DDP   "
                f"comm overhead {row['comm_overhead_s']:+.3f} s"
            )
        say(f"wrote {args.out}")
    destroy(groups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
