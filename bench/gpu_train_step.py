"""ResNet-50 training throughput on one GPU: bf16 autocast, channels_last, synthetic data.

    python bench/gpu_train_step.py --batch-size 256 --steps 30 --json out.json

One fixed random batch on the GPU (no data loading: the step alone), fastres's ResNet-50,
cross-entropy with label smoothing 0.1, FusedLARS on the model's flat layout (what
`python -m fastres.train --optimizer lars` runs) and, for the peer, torch.optim.SGD(fused=True).
Each step is timed in three parts with CUDA events on the stream (forward + loss, backward,
optimizer step), without host syncs between steps; img/s over the timed steps, peak memory
from torch's allocator. Prints one `FIGURES` line (bench/gpu_suite.sh collects it). Goals
(docs/design.md): NVIDIA's PyTorch reference reaches 2,470 img/s on an A100 with AMP; MLPerf-tuned
code about 7,200 img/s on an H100.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from fastres.model import resnet50
from fastres.optim import FusedLARS


def run(optimizer: str, batch: int, steps: int, warmup: int, image: int) -> dict:
    torch.manual_seed(0)
    model = resnet50().cuda().to(memory_format=torch.channels_last)
    if optimizer == "fastres FusedLARS":
        decay = [p for p in model.parameters() if p.ndim > 1]
        rest = [p for p in model.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": 5e-5}, {"params": rest, "weight_decay": 0.0}]
        opt = FusedLARS(groups, lr=0.1, momentum=0.9, eta=0.001)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5, fused=True)
    x = torch.randn(batch, 3, image, image, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    events = [[torch.cuda.Event(enable_timing=True) for _ in range(4)] for _ in range(steps)]
    torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        ev = events[i - warmup] if i >= warmup else None
        if ev:
            ev[0].record()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        if ev:
            ev[1].record()
        loss.backward()
        if ev:
            ev[2].record()
        opt.step()
        opt.zero_grad(set_to_none=False)
        if ev:
            ev[3].record()
    torch.cuda.synchronize()
    fwd = sum(e[0].elapsed_time(e[1]) for e in events) / steps
    bwd = sum(e[1].elapsed_time(e[2]) for e in events) / steps
    opt_ms = sum(e[2].elapsed_time(e[3]) for e in events) / steps
    total = events[0][0].elapsed_time(events[-1][3]) / steps
    assert torch.isfinite(loss).item(), "the loss is not finite"
    return {
        "optimizer": optimizer,
        "img_per_s": round(batch / (total / 1e3), 1),
        "step_ms": round(total, 2),
        "forward_ms": round(fwd, 2),
        "backward_ms": round(bwd, 2),
        "optimizer_ms": round(opt_ms, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "loss": round(loss.item(), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=256, help="images per step (default 256)")
    ap.add_argument("--image-size", type=int, default=224, help="pixels a side (default 224)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps first (cuDNN autotuning; default 8)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_train_step: needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    out = {"gpu": torch.cuda.get_device_name(), "batch_size": args.batch_size, "image_size": args.image_size}
    out["runs"] = [
        run(name, args.batch_size, args.steps, args.warmup, args.image_size)
        for name in ("fastres FusedLARS", "torch SGD fused=True")
    ]
    for r in out["runs"]:
        print(
            f"FIGURES {r['optimizer']}: {r['img_per_s']:.0f} img/s, step {r['step_ms']:.1f} ms = forward "
            f"{r['forward_ms']:.1f} + backward {r['backward_ms']:.1f} + optimizer {r['optimizer_ms']:.2f} ms, "
            f"peak {r['peak_memory_gib']:.1f} GiB"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
