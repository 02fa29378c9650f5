"""ResNet-50 training on one GPU: the step `python -m fastres.train` runs against a plain torch loop.

    python bench/gpu_train_step.py --json train.json           # bench/gpu_suite.sh runs it
    python bench/gpu_train_step.py --compile                    # also fastres's step with torch.compile
    python bench/gpu_train_step.py --device cpu --precision fp32 --batch-size 2 --image-size 32 \
        --steps 1 --rounds 1 --warmup 0                          # a dry run on the CPU

Both loops: fastres's ResNet-50 (1000 classes), bf16 autocast (`--precision fp32`: none, for a
CPU dry run: a CPU without native bf16 runs it ~50x slower), channels_last, one synthetic
batch (`--batch-size` 256 of 224 px, N(0, 1) images as fastres's synthetic loader makes them)
already on the GPU, cross-entropy with label smoothing 0.1, momentum 0.9, weight decay 5e-5 on
conv/fc weights, a learning rate that changes every step (as a schedule does).

  fastres   fastres.run.step.train_step and the loop's hyperparameters for one process (coupled:
            change them together): the model's flat layout (bucket_layout), FusedLARS on it
            (fastres.optim.build_optimizer with the mlperf-lars-3k preset's optimizer keys),
            hyperparameters written into the param groups, gradients zeroed in place, the
            NaN guard (fastres.run.stepguard: a device check of the gradients, the step skipped
            on the device when it fails, the loss added to the window), no host sync
  plain     model.zero_grad(); forward under autocast; loss.backward();
            torch.optim.SGD(fused=True).step(): what a user writes
  fastres, torch.compile   (--compile) fastres's step with the model compiled, as --compile does

Rounds alternate the loops (the order rotates each round), `--rounds` (>= 3) rounds of
`--steps` steps each after `--warmup` untimed steps per loop (cuDNN autotuning, allocator). A
round's time runs from a CUDA event before its first step to one after its last (no host sync
in between), so host overhead that the GPU cannot hide counts, as it does in training.
Images/s per round, the median over rounds, and fastres over plain within each round (the
median of those ratios); GPU clocks, temperature and power from nvidia-smi after each round;
peak memory per loop. Prints `FIGURES` lines (bench/gpu_suite.sh collects them), writes
everything with the machine to `--json`. Goals (docs/design.md): NVIDIA's PyTorch reference
reaches 2,470 img/s on an A100 with AMP; MLPerf-tuned code about 7,200 img/s on an H100.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine.py (this folder holds no fastres/)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fastres.distributed.reducer import bucket_layout  # noqa: E402
from fastres.model import build_model  # noqa: E402
from fastres.optim import build_optimizer, param_groups  # noqa: E402
from fastres.run.execution import autocast  # noqa: E402
from fastres.run.stepguard import StepGuard  # noqa: E402

from machine import describe, gpu_state  # noqa: E402

MOMENTUM, WD, ETA = 0.9, 5e-5, 0.001
# the optimizer keys of fastres/config/presets/mlperf-lars-3k.yaml
LARS_KEYS = dict(optimizer="lars", momentum=MOMENTUM, nesterov=False, weight_decay=WD, bias_decay=False, lars_eta=ETA,
                 lars_eps=0.0, momentum_convention="mlperf")  # fmt: skip


def lr_at(i: int) -> float:
    return 0.1 + 1e-5 * i  # changes every step, as under a schedule


class Loop:
    """One training loop on one batch: `step(i)` queues step i."""

    def __init__(
        self,
        name: str,
        device: torch.device,
        batch: int,
        image: int,
        amp: torch.dtype | None,
        compile_model: bool = False,
    ):
        self.name, self.device = name, device
        torch.manual_seed(0)
        model = build_model("resnet50", 1000, zero_init_last_gamma=False).to(device)
        self.model = model.to(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(batch, 3, image, image, generator=g)
        self.images = x.to(device).contiguous(memory_format=torch.channels_last)
        self.labels = torch.randint(0, 1000, (batch,), generator=g).to(device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        self.amp = amp
        if name.startswith("fastres"):
            self.forward = torch.compile(self.model) if compile_model else self.model
            self.layout = bucket_layout(self.model, None)
            self.optimizer = build_optimizer(types.SimpleNamespace(**LARS_KEYS), self.model, self.layout)
            self.guard = StepGuard(device, max_in_a_row=10)
            self.step = self._fastres_step
        else:
            self.optimizer = torch.optim.SGD(param_groups(self.model, WD), lr=0.1, momentum=MOMENTUM, fused=True)
            self.step = self._plain_step

    def _fastres_step(self, i: int) -> None:
        # fastres.run.step.train_step, one process, no accumulation, fp32/bf16 (coupled)
        for group in self.optimizer.param_groups:  # Trainer._set_hyperparameters
            group["lr"] = lr_at(i)
            group["momentum"] = MOMENTUM
        self.layout.zero_grad()
        with autocast(self.device, self.amp):
            loss = self.criterion(self.forward(self.images), self.labels)
            loss.backward()
        bad = self.guard.check(self.layout.grads)
        self.optimizer.step(found_inf=bad)
        self.guard.add(loss, bad)

    def _plain_step(self, i: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(i)
        self.model.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            loss = self.criterion(self.model(self.images), self.labels)
        loss.backward()
        self.optimizer.step()

    def window(self, first: int, steps: int) -> float:
        """Seconds for steps first .. first + steps - 1: CUDA events around them (the host clock on a CPU)."""
        if self.device.type != "cuda":
            t0 = time.perf_counter()
            for i in range(first, first + steps):
                self.step(i)
            return time.perf_counter() - t0
        torch.cuda.synchronize(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(first, first + steps):
            self.step(i)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run")
    ap.add_argument("--batch-size", type=int, default=256, help="images per step (default 256)")
    ap.add_argument("--image-size", type=int, default=224, help="pixels a side (default 224)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per loop per round (default 15)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each loop once per round (default 3)")
    ap.add_argument("--warmup", type=int, default=6, help="untimed steps per loop first (default 6)")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                    help="bf16 autocast (default), or fp32 (a CPU dry run)")  # fmt: skip
    ap.add_argument("--compile", action="store_true", help="also fastres's step with torch.compile (minutes)")
    ap.add_argument("--json", help="write the results and the machine here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_train_step: no CUDA GPU visible to torch (--device cpu runs the same script on the CPU)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    names = ["fastres", "plain"] + (["fastres, torch.compile"] if args.compile else [])
    loops, peak = {}, {}
    for name in names:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        amp = torch.bfloat16 if args.precision == "bf16" else None
        loops[name] = loop = Loop(name, device, args.batch_size, args.image_size, amp, compile_model="compile" in name)
        loop.window(0, args.warmup)
        if device.type == "cuda":
            peak[name] = torch.cuda.max_memory_allocated(device) / 2**30
    seconds = {name: [] for name in names}
    clocks = []
    step = args.warmup
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            seconds[name].append(loops[name].window(step, args.steps))
        step += args.steps
        clocks.append(gpu_state(device.index or 0) if device.type == "cuda" else {})
        print(f"round {r + 1}: " + ", ".join(f"{n} {args.steps * args.batch_size / seconds[n][-1]:.4g} img/s"
                                              for n in names) + (f"; GPU {clocks[-1]}" if clocks[-1] else ""),
              flush=True)  # fmt: skip
    finite = {n: bool(torch.isfinite(loops[n].model.fc.weight).all()) for n in names}
    if not all(finite.values()):
        raise SystemExit(f"gpu_train_step: weights became non-finite: {finite}")
    ips = {n: [args.steps * args.batch_size / s for s in v] for n, v in seconds.items()}
    out = {
        "bench": "bench/gpu_train_step.py",
        "command": "python " + " ".join(sys.argv),
        "setup": dict(
            batch=args.batch_size,
            image=args.image_size,
            steps=args.steps,
            rounds=args.rounds,
            warmup=args.warmup,
            precision="bf16 autocast" if args.precision == "bf16" else "fp32",
            memory_format="channels_last",
            data="one synthetic batch on the device",
        ),  # fmt: skip
        "loops": {
            n: {"img_per_s": statistics.median(v), "rounds": v, "peak_memory_gib": peak.get(n)} for n, v in ips.items()
        },
        "fastres_over_plain": statistics.median(a / b for a, b in zip(ips["fastres"], ips["plain"])),
        "gpu_after_each_round": clocks,
        "machine": describe(
            gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if device.type == "cuda" else None,
            date=time.strftime("%Y-%m-%d"),
        ),
    }
    where = out["machine"]["gpu"]
    for n in names:
        row = out["loops"][n]
        mem = f", peak {row['peak_memory_gib']:.1f} GiB" if row["peak_memory_gib"] is not None else ""
        print(f"FIGURES train step on {where}, ResNet-50 {args.precision} channels_last batch {args.batch_size}: {n} "
              f"{row['img_per_s']:.4g} img/s (median of {args.rounds} rounds: "
              f"{', '.join(f'{x:.4g}' for x in row['rounds'])}){mem}")  # fmt: skip
    sm = [c.get("clocks.sm") for c in clocks if c]
    print(f"FIGURES train step: fastres / plain = {out['fastres_over_plain']:.3f} (median of per-round ratios)"
          + (f"; SM clock after each round {', '.join(sm)} MHz" if sm else ""))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
