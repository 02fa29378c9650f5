"""Benchmark: ResNet-50's gradient all-reduce across emulated hosts with throttled links (as root).

    python bench/bench_hosts.py             # 2 and 4 hosts x 2 ranks, 1 Gbit/s: bench/results/hosts-allreduce.json
    python bench/bench_hosts.py --hosts 4 --link-gbit 1 --reps 3
    python bench/bench_hosts.py --train     # loss curves: 2 hosts x 2 ranks vs 1 process: hosts-train.json
    python bench/bench_hosts.py --compare bench/results/hosts-allreduce.json   # the planner's prediction beside it

Each topology runs as one job of `python -m fastres.distributed.emulate` (K network
namespaces on a bridge, each host's link shaped with tc `tbf` in both directions, Gloo over
those links, loopback inside a host), so the numbers are those of real processes on real
(emulated) links. One torch thread per rank. In one job, in this order:

1. The link: 32 MB sent by rank 0 (host 0) to the first rank of host 1 (`dist.send`), the
   ceiling of one host's link; 32 MB sent by the first rank of every host to its second at the
   same time (loopback TCP with every host busy, as in the hierarchical reducer's node phases);
   and plain `dist.all_reduce` of
   4 KB .. 32 MB over all ranks, from which alpha (s per ring step) and beta (s per byte on a
   link) are fitted for `python -m fastres.plan --calibrate`.
2. A step over ResNet-50's gradients: its 161 parameter tensors (25.6M fp32, 102 MB) with a
   loss whose backward costs one multiply per element (grad = a fixed random tensor per
   rank), so the step is the all-reduce, overlapped with that backward exactly as in
   training. Peers in the same job: torch's DDP (25 MB buckets; with its fp16 compression
   hook for the 16-bit rows) and one plain `dist.all_reduce` of the whole 102 MB buffer.
   fastres's Reducer: flat and hierarchical, fp32 / bf16 / fp16 on the wire, buckets of 5,
   25 and 100 MB. Each configuration is built, its averaged gradients checked against the
   float64 mean over the ranks, then timed `--reps` times alternating with the plain
   all-reduce (the peer next to it in time, whatever else loads the box); each time is the
   slowest rank's, medians are reported.

3. The planner's prediction of each fastres step (fastres.plan: the alpha-beta cost of the flat
   ring or of the hierarchical reducer's phases on Gloo, with the alpha and link bandwidth
   fitted in step 1, the loopback bandwidth measured in step 1 for the node phases, the measured
   compute-only backward, buckets overlapped with it), written beside each measured step:
   `predicted_s` and `predicted_over_measured`. `--compare` recomputes them for a results file
   (stored back in it) and prints them beside the measured medians.

`--train`: `python -m fastres.train` on the built-in dataset (150 train / 30 val images per
class) across emulated hosts (K hosts x M ranks of batch B/(K M), the hierarchical all-reduce)
and as one process (batch B), same seed, recipe and global batch; writes both loss curves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_reducer import _time_once

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20
CALIBRATION_SIZES = [4 * 2**10, 256 * 2**10, 4 * MB, 32 * MB]  # bytes of fp32
# (name, kind, algorithm, wire dtype, bucket MB)
CONFIGS = [
    ("DDP", "ddp", None, "fp32", 25),
    ("DDP fp16_compress_hook", "ddp", None, "fp16", 25),
    ("fastres flat", "fastres", "flat", "fp32", 25),
    ("fastres hierarchical", "fastres", "hierarchical", "fp32", 25),
    ("fastres flat bf16", "fastres", "flat", "bf16", 25),
    ("fastres hierarchical bf16", "fastres", "hierarchical", "bf16", 25),
    ("fastres flat fp16", "fastres", "flat", "fp16", 25),
    ("fastres hierarchical fp16", "fastres", "hierarchical", "fp16", 25),
    ("fastres flat, 5 MB buckets", "fastres", "flat", "fp32", 5),
    ("fastres hierarchical, 5 MB buckets", "fastres", "hierarchical", "fp32", 5),
    ("fastres flat, 100 MB buckets", "fastres", "flat", "fp32", 100),
    ("fastres hierarchical, 100 MB buckets", "fastres", "hierarchical", "fp32", 100),
    ("fastres hierarchical bf16, 100 MB buckets", "fastres", "hierarchical", "bf16", 100),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="2,4", help="comma-separated host counts, one emulation each (default 2,4)")
    ap.add_argument("--ranks-per-host", type=int, default=2)
    ap.add_argument("--link-gbit", type=float, default=1.0, help="each host link, Gbit/s each way")
    ap.add_argument("--placement", default="block", help="ranks on hosts: block (default) or cyclic")
    ap.add_argument("--reps", type=int, default=3, help="timed steps per configuration")
    ap.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--timeout", type=float, default=1500, help="seconds per emulated job")
    ap.add_argument("--train", action="store_true", help="the loss-curve run instead of the all-reduce timings")
    ap.add_argument("--train-hosts", type=int, default=2, help="--train: emulated hosts (x --ranks-per-host)")
    ap.add_argument("--train-epochs", type=int, default=6)
    ap.add_argument("--out", default=None, help="default: bench/results/hosts-allreduce.json (hosts-train.json)")
    ap.add_argument("--compare", metavar="RESULTS.json", help="print the planner's prediction beside a results file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.compare:
        return compare(Path(args.compare))
    if args.train:
        return train_curves(args)
    out = Path(args.out or ROOT / "bench" / "results" / "hosts-allreduce.json")
    result = {"bench": "bench/bench_hosts.py", "machine": machine(), "link_gbit": args.link_gbit,
              "placement": args.placement, "topologies": {}}  # fmt: skip
    for k in [int(x) for x in args.hosts.split(",")]:
        with tempfile.TemporaryDirectory(prefix="fastres-bench-hosts-") as tmp:
            part = Path(tmp) / "part.json"
            cmd = [
                *emulate_cmd(k, args.ranks_per_host, args.link_gbit, args.timeout, args.placement),
                sys.executable, __file__, "--worker", "--part", str(part), "--reps", str(args.reps),
                "--only", args.only,
            ]  # fmt: skip
            print(f"bench_hosts: {k} hosts x {args.ranks_per_host} ranks, {args.link_gbit:g} Gbit/s links", flush=True)
            code = subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if code != 0 or not part.exists():
                print(f"bench_hosts: the {k}-host job failed (exit {code})", file=sys.stderr)
                return code or 1
            key = f"{k}x{args.ranks_per_host}" + ("" if args.placement == "block" else f"-{args.placement}")
            result["topologies"][key] = add_predictions(json.loads(part.read_text()), os.cpu_count() or 1)
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return compare(out)


def emulate_cmd(hosts: int, ranks_per_host: int, link_gbit: float, timeout: float, placement="block") -> list[str]:
    return [sys.executable, "-m", "fastres.distributed.emulate", "--hosts", str(hosts), "--ranks-per-host",
            str(ranks_per_host), "--link-gbit", str(link_gbit), "--timeout", str(timeout), "--placement",
            placement, "--"]  # fmt: skip


def machine() -> dict:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transport": "Gloo over veth pairs through a bridge, one network namespace per host, tc tbf per link",
    }


# ------------------------------------------------------------------------------ worker


def resnet50_shapes() -> list[tuple[int, ...]]:
    from fastres.model import resnet50

    return [tuple(p.shape) for p in resnet50(num_classes=1000).parameters()]


def fit_alpha_beta(rows: list[tuple[int, int, float]]) -> tuple[float, float]:
    """Least squares t = alpha * steps + beta * bytes, with rows (steps, bytes per link, t): the ring model."""
    a11 = sum(s * s for s, _, _ in rows)
    a12 = sum(s * b for s, b, _ in rows)
    a22 = sum(b * b for _, b, _ in rows)
    r1 = sum(s * t for s, _, t in rows)
    r2 = sum(b * t for _, b, t in rows)
    det = a11 * a22 - a12 * a12
    alpha, beta = (r1 * a22 - r2 * a12) / det, (a11 * r2 - a12 * r1) / det
    if alpha < 0:  # the latency term drowned in noise: bandwidth only
        alpha, beta = 0.0, r2 / a22
    return alpha, beta


def worker(args) -> int:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    from fastres.distributed import Reducer, destroy, discover, init_distributed
    from fastres.distributed.reducer import bucket_layout

    torch.set_num_threads(1)
    groups = init_distributed(discover(), backend="gloo", timeout=900)
    topo = groups.topology
    rank, world, L = topo.rank, topo.world_size, topo.local_world_size
    K = topo.num_nodes
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    say(f"bench_hosts: {topo.describe()}; hosts {sorted(set(groups.hostnames))}")
    w_all = groups.world

    # ---------------------------------------------------------------- 1. the link, and alpha/beta
    probe = torch.ones(8 * MB)  # 32 MB
    hosts = groups.hostnames
    peer = next(r for r, h in enumerate(hosts) if h != hosts[0])  # the first rank on another host
    # Gloo's ring runs in rank order: a host's link carries every ring edge leaving it for another host
    # (block placement: one; cyclic: one per rank)
    crossing = max(sum(1 for r in range(world) if hosts[r] == h and hosts[(r + 1) % world] != h) for h in set(hosts))
    link = []
    for _ in range(3):
        dist.barrier(group=w_all)
        t0 = time.perf_counter()
        if rank == 0:
            dist.send(probe, dst=peer)
        elif rank == peer:
            dist.recv(probe, src=0)
        t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=w_all)
        link.append(float(t))
    link_s = statistics.median(link)
    say(f"  link: 32 MB host 0 -> host 1 in {link_s * 1e3:.0f} ms: {32 * MB / link_s * 8 / 1e9:.3f} Gbit/s")
    # every host at once (as the reducer's node phases run): its first rank sends 32 MB to its second
    first = {h: min(r for r in range(world) if hosts[r] == h) for h in set(hosts)}
    mates = {h: next((r for r in range(world) if hosts[r] == h and r != first[h]), None) for h in set(hosts)}
    me_first, my_mate = first[hosts[rank]], mates[hosts[rank]]
    loop = []
    for _ in range(3 if my_mate is not None else 0):
        dist.barrier(group=w_all)
        t0 = time.perf_counter()
        if rank == me_first:
            dist.send(probe, dst=my_mate)
        elif rank == my_mate:
            dist.recv(probe, src=me_first)
        t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=w_all)
        loop.append(float(t))
    loop_s = statistics.median(loop) if loop else None
    if loop_s:
        say(f"  loopback: 32 MB first -> second rank of every host at once in {loop_s * 1e3:.0f} ms: "
            f"{32 * MB / loop_s * 8 / 1e9:.3f} Gbit/s per host")  # fmt: skip
    calib = []
    for nbytes in CALIBRATION_SIZES:
        t = torch.ones(nbytes // 4)
        dist.all_reduce(t, group=w_all)  # warm-up
        s = statistics.median(_time_once(lambda t=t: dist.all_reduce(t, group=w_all), w_all) for _ in range(3))
        calib.append({"bytes": nbytes, "seconds": s})
        say(f"  plain all_reduce {nbytes / 1024:8.0f} KB over {world} ranks: {s * 1e3:8.2f} ms")
    # the ring model, 2(N-1) steps, `crossing` ring edges sharing each host's link
    rows = [(2 * (world - 1), crossing * 2 * (world - 1) / world * c["bytes"], c["seconds"]) for c in calib]
    alpha, beta = fit_alpha_beta(rows)
    say(f"  fit: alpha {alpha * 1e6:.1f} us per step, beta -> {1 / beta * 8 / 1e9:.3f} Gbit/s per link")

    # ---------------------------------------------------------------- 2. ResNet-50's gradients
    shapes = resnet50_shapes()
    numel = sum(torch.Size(s).numel() for s in shapes)
    gen = torch.Generator().manual_seed(1000 + rank)
    w_flat = torch.randn(numel, generator=gen)
    w = list(torch.split(w_flat, [torch.Size(s).numel() for s in shapes]))
    w = [t.view(s) for t, s in zip(w, shapes)]
    expected = w_flat.double()
    dist.all_reduce(expected, group=w_all)
    expected = (expected / world).float()
    plain_buf = w_flat.clone()

    class Grads(nn.Module):
        """ResNet-50's parameter tensors; backward of the loss leaves grad = w (this rank's)."""

        def __init__(self):
            super().__init__()
            self.ps = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in shapes])

        def forward(self, w):
            loss = None
            for p, wp in zip(self.ps, w):  # a chain: the last tensors' gradients come first, as in backward
                term = (p * wp).sum()
                loss = term if loss is None else loss + term
            return loss

    def plain():
        plain_buf.copy_(w_flat)
        dist.all_reduce(plain_buf, group=w_all)

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    rows_out = {}
    floor = None
    for name, kind, algorithm, wire, bucket_mb in CONFIGS:
        if only and name not in only:
            continue
        model = Grads()
        if kind == "ddp":
            ddp = DDP(model, process_group=w_all, bucket_cap_mb=bucket_mb)
            if wire == "fp16":
                ddp.register_comm_hook(w_all, default_hooks.fp16_compress_hook)

            def step(ddp=ddp):
                ddp.zero_grad(set_to_none=False)
                ddp(w).backward()

            grads = lambda ddp=ddp: torch.cat([p.grad.reshape(-1) for p in ddp.module.parameters()])
        else:
            layout = bucket_layout(model, groups, algorithm=algorithm, bucket_cap_mb=bucket_mb)
            red = Reducer(layout, groups, algorithm=algorithm, bucket_cap_mb=bucket_mb, wire_dtype=wire)

            def step(model=model, red=red):
                red.layout.zero_grad()
                model(w).backward()
                red.wait()

            grads = lambda model=model: torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        step()  # warm-up, and the check
        worst = float((grads() - expected).abs().max() / expected.abs().max())
        tol = 1e-5 if wire == "fp32" else 2e-2
        if worst > tol:
            raise SystemExit(f"bench_hosts: {name}: averaged gradients differ from the mean by {worst:.2e} (> {tol})")
        if floor is None and kind == "fastres":  # compute only: the same backward, nothing sent

            def compute_only(model=model, red=red):
                with red.no_sync():
                    red.layout.zero_grad()
                    model(w).backward()

            floor = statistics.median(_time_once(compute_only, w_all) for _ in range(args.reps))
            say(f"  {'compute only (backward, nothing sent)':44s} {floor:7.3f} s")
        times, peers = [], []
        for _ in range(args.reps):
            peers.append(_time_once(plain, w_all))
            times.append(_time_once(step, w_all))
        row = {
            "kind": kind, "algorithm": algorithm, "wire": wire, "bucket_mb": bucket_mb,
            "median_s": statistics.median(times), "all_s": times,
            "plain_all_reduce_median_s": statistics.median(peers), "plain_all_reduce_all_s": peers,
            "max_rel_diff_vs_mean": worst,
        }  # fmt: skip
        row["vs_plain_all_reduce"] = row["median_s"] / row["plain_all_reduce_median_s"]
        rows_out[name] = row
        say(
            f"  {name:44s} {row['median_s']:7.3f} s   plain all_reduce next to it "
            f"{row['plain_all_reduce_median_s']:.3f} s   ({row['vs_plain_all_reduce']:.2f}x)"
        )
        if kind == "fastres":
            red.remove()
        del model, step, grads
        if kind == "ddp":
            del ddp
        else:
            del red, layout

    for row in rows_out.values():
        for peer_name in ("DDP", "fastres flat"):
            if peer_name in rows_out:
                row[f"vs_{peer_name.replace(' ', '_')}"] = row["median_s"] / rows_out[peer_name]["median_s"]
    if rank == 0:
        link_bytes_flat = crossing * 2 * (world - 1) / world * numel * 4
        link_bytes_hier = 2 * (K - 1) / K * numel * 4  # L shards of 1/L, all L leaving through one link
        part = {
            "setup": {"hosts": K, "ranks_per_host": L, "world": world, "hostnames": sorted(set(groups.hostnames)),
                      "threads_per_rank": 1, "gradient_MB": numel * 4 / 1e6, "tensors": len(shapes), "reps": args.reps},
            "link": {"send_32MB_s": link, "gbit_per_s": 32 * MB / link_s * 8 / 1e9},
            "loopback": {"send_32MB_s": loop, "gbit_per_s": 32 * MB / loop_s * 8 / 1e9 if loop_s else None},
            "calibration": {
                "plain_all_reduce": calib, "alpha_s": alpha, "beta_s_per_byte": beta,
                "inter_node_gbps": 8 / beta / 1e9, "model": "ring: t = 2(N-1) alpha + 2(N-1)/N bytes beta",
                "world": world, "hosts": K, "ranks_per_host": L, "ring_edges_per_link": crossing,
            },
            "link_bound_s": {
                f"flat ring ({crossing} ring edge(s) per host link)": link_bytes_flat / (32 * MB / link_s),
                "hierarchical (L inter-node rings share the link)": link_bytes_hier / (32 * MB / link_s),
            },
            "compute_only_s": floor,
            "steps": rows_out,
        }  # fmt: skip
        Path(args.part).write_text(json.dumps(part, indent=2) + "\n")
    destroy(groups)
    return 0


# ------------------------------------------------------------------------------ the planner's prediction


def predict_step(part: dict, algorithm: str, wire: str, bucket_mb: float, cores: int) -> float:
    """fastres.plan's step for one fastres configuration of a topology's results (`part`).

    Every emulated host shares this machine's `cores`: with more ranks than cores no core is free
    to run the collectives while backward runs, so buckets are not overlapped (the planner's
    --no-overlap); with a core per rank they are."""
    from fastres.plan.cost import Cluster, Job, bucket_seconds, overlapped_step
    from fastres.plan.cpu import cpu_device
    from fastres.plan.speed import Speed

    cal, setup = part["calibration"], part["setup"]
    loop = (part.get("loopback") or {}).get("gbit_per_s") or float("inf")  # older files: no loopback probe
    alpha = cal["alpha_s"]
    cluster = Cluster(
        device=cpu_device(1),
        devices=setup["world"],
        per_node=setup["ranks_per_host"],
        intra_gbps=loop,
        inter_gbps=cal["inter_node_gbps"],
        speed=Speed(1.0, 0.0, "the bench's backward, measured"),
        intra_alpha_s=alpha,
        inter_alpha_s=alpha,
        intra_tree_alpha_s=alpha,
        base_s=0.0,  # the fit has no per-collective term: alpha per ring step only
        backend="gloo",
    )
    job = Job(global_batch=setup["world"], epochs=1, wire_dtype=wire, allreduce=algorithm, bucket_mb=bucket_mb)
    n, per_bucket = bucket_seconds(cluster, job)
    overlap = cores >= setup["world"]
    return overlapped_step(0.0, part["compute_only_s"], 0.0, per_bucket, n, overlap)


def add_predictions(part: dict, cores: int) -> dict:
    for row in part["steps"].values():
        if row["kind"] == "fastres":
            row["predicted_s"] = predict_step(part, row["algorithm"], row["wire"], row["bucket_mb"], cores)
            row["predicted_over_measured"] = row["predicted_s"] / row["median_s"]
    part["prediction"] = {
        "by": "fastres.plan (bench_hosts.predict_step)",
        "overlap": cores >= part["setup"]["world"],
        "cores": cores,
    }
    return part


def compare(path: Path) -> int:
    """Predicted vs measured step of every fastres configuration in a results file; stores the predictions in it."""
    doc = json.loads(path.read_text())
    print(f"{path}: fastres.plan's predicted step vs the measured median")
    cores = doc["machine"]["cores"]
    for key, part in doc["topologies"].items():
        add_predictions(part, cores)
        loop = (part.get("loopback") or {}).get("gbit_per_s")
        cal = part["calibration"]
        print(
            f"  {key}: alpha {cal['alpha_s'] * 1e6:.0f} us, link {cal['inter_node_gbps']:.3f} Gbit/s, "
            + (f"loopback {loop:.2f} Gbit/s" if loop else "loopback not measured (taken as free)")
            + f", compute only {part['compute_only_s']:.3f} s, "
            + ("buckets overlapped" if part["prediction"]["overlap"] else f"{cores} cores < ranks: not overlapped")
        )
        for name, row in part["steps"].items():
            if row["kind"] == "fastres":
                print(f"    {name:44s} measured {row['median_s']:6.3f} s  predicted {row['predicted_s']:6.3f} s  "
                      f"{row['predicted_over_measured']:.2f}")  # fmt: skip
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


# ------------------------------------------------------------------------------ --train


def train_curves(args) -> int:
    """fastres.train across K emulated hosts x M ranks (batch B/(K M) each) and as one process (batch B)."""
    out = Path(args.out or ROOT / "bench" / "results" / "hosts-train.json")
    k, m = args.train_hosts, args.ranks_per_host
    batch = 32
    # the built-in preset's recipe as these figures were measured (48 px, crops of 25-100%, 1-epoch warm-up,
    # cosine, label smoothing 0.1, torch's SGD), on ResNet-18; pinned here so that a later preset changes nothing
    common = ["-m", "fastres.train", "--config", "builtin", "--arch", "resnet18", "--epochs", str(args.train_epochs),
              "--lr", "0.8", "--workers", "0", "--threads", "1", "--no-progress", "--log-every", "5",
              "--crop-scale-min", "0.25", "--warmup-epochs", "1", "--label-smoothing", "0.1",
              "--optimizer", "sgd"]  # fmt: skip
    runs = {}
    with tempfile.TemporaryDirectory(prefix="fastres-bench-train-") as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "FASTRES_DATA": str(Path(tmp) / "data")}
        from fastres.data.builtin import ensure_builtin_dataset

        data = ensure_builtin_dataset(Path(tmp) / "data", train_per_class=150, val_per_class=30, workers=2)
        common += ["--data", str(data), "--out", tmp]
        for name, folder, cmd in (
            ("1 process", "single", [sys.executable, *common, "--batch-size", str(batch), "--name", "single"]),
            (
                f"{k} hosts x {m} ranks",
                "hosts",
                [*emulate_cmd(k, m, args.link_gbit, args.timeout), sys.executable, *common,
                 "--batch-size", str(batch // (k * m)), "--allreduce", "auto", "--name", "hosts"],
            ),
        ):  # fmt: skip
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout + 60)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            records = [json.loads(line) for line in (Path(tmp) / folder / "metrics.jsonl").read_text().splitlines()]
            runs[name] = {
                "command": " ".join(cmd),
                "seconds": time.perf_counter() - t0,
                "allreduce": next((line for line in proc.stdout.splitlines() if "all-reduce" in line), None),
                "train": [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"],
                "val": [{k2: r.get(k2) for k2 in ("epoch", "loss", "top1")} for r in records if r.get("kind") == "val"],
            }
            print(f"bench_hosts --train: {name}: {runs[name]['train']} val {runs[name]['val']}", flush=True)
    a, b = (runs[n]["train"] for n in runs)
    diffs = [abs(x[1] - y[1]) / abs(x[1]) for x, y in zip(a, b) if x[0] == y[0]]
    result = {
        "bench": "bench/bench_hosts.py --train",
        "machine": machine(),
        "setup": {
            "hosts": k,
            "ranks_per_host": m,
            "global_batch": batch,
            "link_gbit": args.link_gbit,
            "arch": "resnet18",
            "preset": "builtin",
            "epochs": args.train_epochs,
        },  # fmt: skip
        "runs": runs,
        "max_rel_loss_diff": max(diffs) if diffs else None,
        "mean_rel_loss_diff": statistics.mean(diffs) if diffs else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}: mean relative loss difference {result['mean_rel_loss_diff']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
