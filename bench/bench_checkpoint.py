"""The training pause per checkpoint of ResNet-50, and log bytes per hour of a batch job.

    python bench/bench_checkpoint.py                 # writes bench/results/checkpoint-cpu.json
    python bench/bench_checkpoint.py --rounds 5 --out /fast/disk

1. Checkpoint pause: ResNet-50 (1000 classes, 25.6M parameters) with FusedLARS's momentum
   (fastres.checkpoint.state.run_state: model + optimizer + RNG, about 205 MB). In the same
   run, alternating, the median of `--rounds` of:
   - the pause fastres's trainer takes: `run_state` (a copy to host memory) while a thread
     serialises, checksums and writes (fastres.checkpoint.store.BackgroundSaver);
   - the same checkpoint written synchronously (serialise + SHA-256 + write + fsync + rename):
     the pause without the background thread;
   - the ceiling: a plain `torch.save` of the same state to a file, no fsync.
   Context: one ResNet-50 training step (batch 16 at 64 px, fp32) on this machine.
2. Log bytes per hour with stderr redirected to a file (a batch system's log): tqdm's bar,
   driven as fastres drove it before (one update per step, a postfix every 20 steps),
   against fastres.run.progress.Progress's line every 30 s, both over `--log-seconds` of a
   simulated 5 steps/s job, scaled to an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fastres.checkpoint.fileformat import read_checkpoint_file  # noqa: E402
from fastres.checkpoint.state import run_state  # noqa: E402
from fastres.checkpoint.store import BackgroundSaver, CheckpointStore  # noqa: E402
from fastres.model import resnet50  # noqa: E402
from fastres.optim import FusedLARS  # noqa: E402
from fastres.run.progress import Progress  # noqa: E402
from fastres.run.timing import StepTimer  # noqa: E402

from machine import describe  # noqa: E402


def checkpoint_pause(out: Path, rounds: int) -> dict:
    torch.manual_seed(0)
    model = resnet50()
    opt = FusedLARS(model.parameters(), lr=0.1, momentum=0.9, eta=0.001)
    x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 1000, (16,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    step()  # momentum exists: the checkpoint holds what a real one holds
    t0 = time.perf_counter()
    step()
    step_s = time.perf_counter() - t0
    kw = dict(step=1, steps_per_epoch=100, config={}, classes=tuple(str(i) for i in range(1000)), loader_states=[None])
    store = CheckpointStore(out / "run", keep=2)
    saver = BackgroundSaver(store)
    names = ("fastres: host copy, write in a thread", "synchronous save", "torch.save (no checksum, no fsync)",
             "background write (not a pause)")  # fmt: skip
    rows: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        t0 = time.perf_counter()
        snap = run_state(model, opt, **kw)
        saver.submit(snap, 2 * r)
        rows["fastres: host copy, write in a thread"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        saver.wait()
        rows["background write (not a pause)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        store.save(run_state(model, opt, **kw), 2 * r + 1)
        rows["synchronous save"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.save(run_state(model, opt, **kw), out / "plain.pt")
        rows["torch.save (no checksum, no fsync)"].append(time.perf_counter() - t0)
    newest = store.paths()[0]
    read_checkpoint_file(newest)  # the result is checked: it verifies and loads as data
    size = newest.stat().st_size
    return {
        "checkpoint_bytes": size,
        "train_step_s": step_s,
        "rows": {k: {"median_s": statistics.median(v), "all_s": v} for k, v in rows.items()},
    }


def log_bytes(seconds: float, out: Path) -> dict:
    from tqdm import tqdm

    steps_per_s, log_every = 5.0, 20
    old_path, new_path = out / "old.err", out / "new.err"
    with open(old_path, "w") as f:  # the trainer before: a bar on stderr whatever stderr was
        bar = tqdm(total=10**6, desc="epoch 1/90", unit="step", file=f, dynamic_ncols=True, leave=False)
        t0, i = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            bar.update(1)
            i += 1
            if i % log_every == 0:
                bar.set_postfix(loss="4.213", img_s="1184", lr="0.1")
            time.sleep(1 / steps_per_s)
        bar.close()
    with open(new_path, "w") as f:
        timer = StepTimer()
        p = Progress(True, 30.0, timer, stream=f)
        p.start_epoch(0, 90, 10**6)
        timer.start_epoch()
        t0, i = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            i += 1
            logged = i % log_every == 0
            timer.step()
            p.update(4.213 if logged else None, 1184.0 if logged else None, 0.1)
            time.sleep(1 / steps_per_s)
        p.end_epoch()
    scale = 3600.0 / seconds
    return {
        "simulated_steps_per_s": steps_per_s,
        "measured_seconds": seconds,
        "bytes_per_hour": {
            "before: tqdm bar into a file": old_path.stat().st_size * scale,
            "fastres.run.progress: a line every 30 s": new_path.stat().st_size * scale,
        },  # fmt: skip
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--log-seconds", type=float, default=60.0, help="seconds of each simulated job's log")
    ap.add_argument("--out", default=None, help="folder to write checkpoints in (default: a temporary one)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "checkpoint-cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        pause = checkpoint_pause(Path(tmp), args.rounds)
        logs = log_bytes(args.log_seconds, Path(tmp))
    result = {
        "machine": describe(),
        "command": "python bench/bench_checkpoint.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "checkpoint_pause": pause,
        "logs": logs,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    mb = pause["checkpoint_bytes"] / 1e6
    print(
        f"checkpoint of ResNet-50 + FusedLARS momentum: {mb:.0f} MB; one training step: {pause['train_step_s']:.3f} s"
    )
    for name, row in pause["rows"].items():
        print(f"  {name:40s} {row['median_s']:.3f} s")
    for name, b in logs["bytes_per_hour"].items():
        print(f"  log bytes per hour, {name:40s} {b / 1e3:10.1f} kB")


if __name__ == "__main__":
    main()
