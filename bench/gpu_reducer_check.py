"""The gradient reducer with CUDA tensors on Gloo: 2-4 processes sharing one GPU.

    torchrun --standalone --nproc-per-node 4 bench/gpu_reducer_check.py          # flat
    FASTRES_VIRTUAL_NODES=2 torchrun --standalone --nproc-per-node 4 bench/gpu_reducer_check.py

What a one-GPU machine can run of the GPU reducer: Gloo moves CUDA tensors through host
memory, so the reducer's CUDA side runs for real: the pack and unpack kernels of the bf16
wire (fastres.kernels.ops on the GPU) and the stream handling (each bucket's collective waited for,
and its unpack run, on the stream the bucket was packed on; the caller's stream ordered after
them by events). Backward runs on a side stream, not the default one, and the reduced
gradients are read on it right after `wait()`: an unpack left on another stream would race.
Each configuration is checked against the float64 mean of every rank's own gradients from
the same backward pass: tensor hooks copy each parameter's local gradient as autograd
delivers it, before the reducer's hooks see it (two backward passes may differ where cuDNN
picks non-deterministic algorithms), gathered over the ranks; then timed (forward + backward
+ reduce, mean of `--steps`, 5 by default). Rank 0 prints `PASS`/`FAIL` lines and one
`FIGURES` line per configuration. `--cpu` runs the same checks on CPU tensors (a dry run of this
script where there is no GPU; `--cpu --steps 0 --image-size 32 --arch resnet18` checks quickly,
without timing).

What one GPU cannot show: NCCL refuses two ranks on one GPU, so the NCCL path (collectives
on the reducer's communication stream, overlapped with backward) and the reducer against DDP
across GPUs need a machine with two GPUs or more (bench/README.md, "GPU suite").
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

from fastres.distributed import destroy, discover, init_distributed
from fastres.distributed.reducer import Reducer, bucket_layout
from fastres.model import ARCHS, build_model

TOLERANCE = {"fp32": 1e-6, "bf16": 1e-2}  # relative error of the whole gradient (norm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="CPU tensors (a dry run without a GPU)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default 5; 0: check only)")
    ap.add_argument("--image-size", type=int, default=64, help="pixels a side of the 8 images (default 64)")
    ap.add_argument("--arch", default="resnet50", choices=list(ARCHS), help="the model (default resnet50)")
    args = ap.parse_args()
    dev = torch.device("cpu" if args.cpu else "cuda")
    cuda = dev.type == "cuda"
    groups = init_distributed(discover(), backend="gloo", timeout=300)
    topo = groups.topology
    rank, world = topo.rank, topo.world_size
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    where = f"CUDA tensors on Gloo, {torch.cuda.get_device_name()}" if cuda else "CPU tensors on Gloo"
    say(f"gpu_reducer_check: {topo.describe()}, {where}")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(8, 3, args.image_size, args.image_size, generator=gen).to(dev)
    y = torch.randint(0, 100, (8,), generator=gen).to(dev)
    loss_fn = nn.CrossEntropyLoss()
    configs = [("flat", "fp32"), ("flat", "bf16")]
    if topo.num_nodes > 1:
        configs += [("hierarchical", "fp32"), ("hierarchical", "bf16")]
    failed = 0
    side = torch.cuda.Stream() if cuda else None
    for algorithm, wire in configs:
        torch.manual_seed(0)
        model = build_model(args.arch, 100, zero_init_last_gamma=False).to(dev)
        layout = bucket_layout(model, groups, algorithm=algorithm, bucket_cap_mb=8)
        reducer = Reducer(layout, groups, algorithm=algorithm, bucket_cap_mb=8, wire_dtype=wire)
        if cuda:
            side.wait_stream(torch.cuda.current_stream())
        local: dict[int, torch.Tensor] = {}
        taps = [  # the local gradient as autograd delivers it, before the reducer's hook sees it
            q.register_hook(lambda g, i=i, local=local: local.__setitem__(i, g.detach().reshape(-1).clone()))
            for i, q in enumerate(layout.param_list)
        ]
        with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
            reducer.layout.zero_grad()
            loss_fn(model(x), y).backward()
            reducer.wait()
            # read on the side stream, right after wait()
            got = torch.cat([q.grad.reshape(-1) for q in layout.param_list]).double()
            mine = torch.cat([local[i] for i in range(len(layout.param_list))])
            every = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(every, mine, group=groups.world)
            want = torch.stack([t.double() for t in every]).mean(0)
            err = ((got - want).norm() / want.norm()).item()
        for t in taps:
            t.remove()
        ok = err <= TOLERANCE[wire]
        failed += not ok
        say(f"{'PASS' if ok else 'FAIL'} {algorithm} {wire}: relative error {err:.2e} (<= {TOLERANCE[wire]:.0e})")
        if args.steps == 0:  # checked, not timed
            say(f"FIGURES reducer {algorithm} {wire}, {world} ranks: relative error {err:.2e}; {reducer.describe()}")
            reducer.remove()
            continue
        times = []
        for _ in range(args.steps + 1):
            sync()
            dist.barrier(group=groups.world)
            t0 = time.perf_counter()
            reducer.layout.zero_grad()
            loss_fn(model(x), y).backward()
            reducer.wait()
            sync()
            times.append(time.perf_counter() - t0)
        slowest = torch.tensor([sum(times[1:]) / args.steps])
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=groups.world)
        say(
            f"FIGURES reducer {algorithm} {wire}, {world} ranks on one {dev.type.upper()}: "
            f"{slowest.item() * 1e3:.1f} ms per step (forward + backward + reduce, slowest rank, {args.steps} steps), "
            f"{reducer.describe()}"
        )
        reducer.remove()
    flags = torch.tensor([failed])
    dist.all_reduce(flags, group=groups.world)
    destroy(groups)
    return 1 if flags.item() else 0


if __name__ == "__main__":
    sys.exit(main())
