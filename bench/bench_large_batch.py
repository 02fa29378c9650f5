"""A large-batch experiment on the built-in data: batch 64 SGD against batch 1,024 with linearly
scaled SGD, with LARS and with the RMSprop warm-up, the same number of epochs.

    python bench/bench_large_batch.py       # 4 runs of `python -m fastres.train`, then
                                            # bench/results/large-batch.json and large-batch.png
    python bench/bench_large_batch.py --only sgd-64,lars-1024 --epochs 5

Each configuration is the `builtin` preset (ResNet-50, 48 px, 10 epochs, 1-epoch warm-up,
cosine decay, label smoothing 0.1, wd 5e-5) in bf16 autocast with channels_last (1.5-1.7x
faster than fp32 on a CPU with native bf16: bench/README.md) with the changes below, on one
process; the batch of 1,024 is 16 accumulated passes of 64 (`--accumulate 16`), so every
configuration computes the same forward and backward passes and differs only in when and how
it steps:

- sgd-64: the preset as it is (lr 0.2 per 256 images: peak 0.05).
- sgd-1024: linear scaling (Goyal et al. 2017, sec. 2.1): the same lr per 256, peak 0.8.
- lars-1024: LARS (You et al. 2017; trust coefficient 0.001 as MLPerf's LARS submissions),
  lr 0.82 per 256 (MLPerf v2.0 NVIDIA's 10.5 at 3,264, per 256 images), peak 3.3.
- rmsprop-1024: the RMSprop warm-up (Akiba et al. 2017, sec. 2.2) with its own RMSprop rate
  0.001, its centre and period (10 and 5 of 90 epochs) scaled to this run's length, no lr
  warm-up besides it (as pfn-32k), the same scaled lr as sgd-1024.

Epochs of 6,000 images make 93 steps at batch 64 and 5 at batch 1,024 (the last 13 batches of
an epoch make no whole step and are dropped). Each run folder is OUT/NAME and is started with
`--resume auto`: a finished run is read, not repeated; an interrupted one continues.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402

PFN_EPOCHS, PFN_CENTER, PFN_PERIOD = 90, 10.0, 5.0
COMMON = ["--precision", "bf16", "--channels-last"]


def configs(epochs: int) -> dict[str, list[str]]:
    scale = epochs / PFN_EPOCHS
    big = ["--accumulate", "16"]
    return {
        "sgd-64": [*COMMON],
        "sgd-1024": [*COMMON, *big],
        "lars-1024": [*COMMON, *big, "--optimizer", "lars", "--lr", "0.82", "--lars-eta", "0.001"],
        "rmsprop-1024": [
            *COMMON,
            *big,
            "--optimizer",
            "rmsprop-warmup",
            "--rmsprop-lr",
            "0.001",
            "--warmup-epochs",
            "0",
        ]
        + ["--rmsprop-center", f"{PFN_CENTER * scale:.4g}", "--rmsprop-period", f"{PFN_PERIOD * scale:.4g}"],
    }


def read_run(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [r for r in records if r["kind"] == "val"]
    train = [r for r in records if r["kind"] == "train"]
    summary = next((r for r in reversed(records) if r["kind"] == "summary"), None)
    if summary is None:
        raise SystemExit(f"{run}: the run has no summary (it did not finish)")
    import yaml

    doc = yaml.safe_load((run / "config.yaml").read_text())
    return {
        "global_batch": doc["global_batch"],
        "peak_lr": doc["peak_lr"],
        "optimizer": doc["config"]["optimizer"],
        "steps": train[-1]["step"],
        "val_top1": [r["top1"] for r in val],
        "val_top5": [r["top5"] for r in val],
        "final_train_loss": train[-1]["loss"],
        "top1": summary["top1"],
        "top5": summary["top5"],
        "train_seconds": summary.get("train_seconds"),
        "img_per_s": summary.get("img_per_s"),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, r in results.items():
        ax.plot(range(1, len(r["val_top1"]) + 1), r["val_top1"], marker="o", label=f"{name} ({r['top1']:.1f}%)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title("ResNet-50 on the built-in data: batch 64 vs 1,024")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--only", default=None, help="configurations to run, comma-separated (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "large-batch", help="parent of the run folders")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "large-batch.json")
    args = p.parse_args()

    table = configs(args.epochs)
    names = args.only.split(",") if args.only else list(table)
    for name in names:
        if name not in table:
            raise SystemExit(f"--only: unknown configuration {name!r} (known: {', '.join(table)})")
    results, commands = {}, {}
    for name in names:
        cmd = [sys.executable, "-m", "fastres.train", "--epochs", str(args.epochs), *table[name], "--out",
               str(args.out), "--name", name, "--resume", "auto", "--no-progress"]  # fmt: skip
        commands[name] = " ".join(["python", *cmd[1:]])
        print(f"== {name}: {commands[name]}", flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            raise SystemExit(f"{name}: the run failed (see above); run the script again to continue it")
        results[name] = read_run(args.out / name)
        print(f"{name}: top-1 {results[name]['top1']:.1f}% after {args.epochs} epochs", flush=True)
    import PIL

    out = {"epochs": args.epochs, "runs": results, "commands": commands, "command": "python bench/bench_large_batch.py",
           "machine": describe(pillow=PIL.__version__, date=time.strftime("%Y-%m-%d"))}  # fmt: skip
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=1) + "\n")
    plot(results, args.results.with_suffix(".png"))
    print(f"wrote {args.results} and {args.results.with_suffix('.png')}")


if __name__ == "__main__":
    main()
