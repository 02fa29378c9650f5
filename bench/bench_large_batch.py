"""A large-batch experiment scaled to the records, superseded by bench/bench_batch_claim.py.

bench_batch_claim.py's arms differ only where the large-batch claim says they should; bench/README.md says
why this one cannot decide it. On the built-in data (6,000 training images) a batch of B makes the steps
per epoch that ImageNet's 1,281,167 images make at about 213 x B, so

    batch 16   ~ ImageNet at   3.4K   the small-batch baseline
    batch 38   ~ ImageNet at   8.1K   Goyal et al. 2017 (goyal-8k)
    batch 154  ~ ImageNet at  32.8K   You et al. 2017 (you-32k), Akiba et al. 2017 (pfn-32k)

    python bench/bench_large_batch.py                 # 5 recipes x 2 seeds of `python -m fastres.train`,
                                                      # then bench/results/large-batch.json and .png
    python bench/bench_large_batch.py --epochs 1 --seeds 0 --train-per-class 16 \\
        --out runs/large-batch-smoke --results bench/results/large-batch-smoke.json   # a smoke run

Every run: ResNet-50 on the built-in data at --image-size (default 40 px), --epochs (default 3),
fp32, channels_last, one process decoding in the training process (`--workers 0`: on 2 cores a
loader process costs more than it gives), crops of 70-100% of the image (`--crop-scale-min 0.7`,
the built-in preset's: the records' 8% leaves a few pixels of a 40 px image), and ghost BN over 16
images (`--bn-virtual-batch 16`): the BN span stays the baseline's batch as the batch grows, as
Goyal et al.'s 32 per worker does. Each recipe is its preset with every epoch-valued key (warm-up,
milestones, the RMSprop warm-up's centre and period) scaled by epochs / 90, and the SGD learning
rate per 256 images set to 0.6 (the built-in preset's rate for this data; ImageNet's is 0.1)
wherever the preset scales it:

- sgd-16: goyal-8k at batch 16 without warm-up (Goyal et al.'s small-batch baseline).
- goyal-38: goyal-8k at batch 38: warm-up from the baseline's lr (16 / 38 of the peak), as the paper
  warms up from eta to k eta; iteration 0 at that start, momentum correction, Nesterov, x0.1 steps.
- sgd-154: the same recipe, linearly scaled to batch 154 (warm-up from 16 / 154 of the peak).
- lars-154: you-32k at batch 154: LARS with its absolute peak lr for the conv/fc weights (LARS's step
  is lr x eta x ||w|| per layer whatever the batch), warm-up, poly(2) decay; BN parameters and biases
  at 20.87 x 154 / 32768 (the preset's --lr-global-batch; bench/results/large-batch.json was measured
  before it, with 20.87 for them too).
- pfn-154: pfn-32k at batch 154: the RMSprop warm-up (RMSprop's own rate as the preset's), the
  slow-start piecewise lr, momentum correction, BN without moving averages for validation.

Each run folder is OUT/NAME-sSEED and is started with `--resume auto`: a finished run is read, not
repeated; an interrupted one continues. A run that fastres.train stops because it diverged (NaN/Inf
gradients step after step) is a result, not a failure: it is recorded as diverged, with the epochs
it validated before, in RUN/diverged.txt, and the experiment goes on.
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

BASELINE = 16
LR_PER_256 = "0.6"  # the built-in data's SGD rate (preset builtin); ImageNet's is 0.1
COMMON = ["--precision", "fp32", "--channels-last", "--bn-virtual-batch", "16", "--workers", "0",
          "--crop-scale-min", "0.7"]  # fmt: skip
DIVERGED = "NaN/Inf gradients"  # what fastres.train says when it stops a run that diverged


def configs(epochs: int) -> dict[str, list[str]]:
    """name -> the flags of its run (each on top of COMMON and the epochs)."""
    f = epochs / 90  # the presets' epochs

    def ep(x: float) -> str:
        return f"{x * f:.4g}"

    goyal = ["--config", "goyal-8k", "--lr", LR_PER_256, "--milestones", ",".join(ep(e) for e in (30, 60, 80))]

    def batch(b: int) -> list[str]:
        return ["--global-batch", str(b), "--batch-size", str(b)]

    return {
        "sgd-16": [*goyal, *batch(BASELINE), "--warmup-epochs", "0"],
        "goyal-38": [*goyal, *batch(38), "--warmup-epochs", ep(5), "--warmup-start", f"{BASELINE / 38:.6g}"],
        "sgd-154": [*goyal, *batch(154), "--warmup-epochs", ep(5), "--warmup-start", f"{BASELINE / 154:.6g}"],
        "lars-154": ["--config", "you-32k", *batch(154), "--warmup-epochs", ep(5)],
        "pfn-154": ["--config", "pfn-32k", *batch(154), "--lr", LR_PER_256, "--milestones",
                    ",".join(ep(e) for e in (40, 70, 85)), "--rmsprop-center", ep(10), "--rmsprop-period", ep(5)],
    }  # fmt: skip


def read_run(run: Path, steps_per_epoch: int | None = None) -> dict:
    """The figures of a finished run, or of one stopped as diverged (RUN/diverged.txt: top1 None)."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    records = [json.loads(line) for line in lines if line.strip()]
    val = [r for r in records if r["kind"] == "val"]
    train = [r for r in records if r["kind"] == "train"]
    summary = next((r for r in reversed(records) if r["kind"] == "summary"), None)
    diverged = (run / "diverged.txt").read_text().strip() if (run / "diverged.txt").exists() else None
    if summary is None and diverged is None:
        raise SystemExit(f"{run}: the run has no summary (it did not finish)")
    import yaml

    doc = yaml.safe_load((run / "config.yaml").read_text())
    return {
        "global_batch": doc["global_batch"],
        "peak_lr": doc["peak_lr"],
        "optimizer": doc["config"]["optimizer"],
        "steps": train[-1]["step"] if train else 0,
        "steps_per_epoch": steps_per_epoch or _steps_per_epoch(train, val),
        "val_top1": [r["top1"] for r in val],
        "val_top5": [r["top5"] for r in val],
        "final_train_loss": train[-1]["loss"] if train else None,
        "top1": summary["top1"] if summary else None,
        "top5": summary["top5"] if summary else None,
        "diverged": diverged,
        "train_seconds": summary.get("train_seconds") if summary else None,
        "img_per_s": summary.get("img_per_s") if summary else None,
    }


def _steps_per_epoch(train: list[dict], val: list[dict]) -> int | None:
    return train[-1]["step"] // len(val) if train and val else None


def run_one(cmd: list[str], run: Path) -> None:
    """Runs one fastres.train command, its output passed through; a run stopped as diverged is written
    down in RUN/diverged.txt (a result), any other failure stops the experiment."""
    if (run / "diverged.txt").exists():
        return
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    for line in proc.stderr:
        sys.stderr.write(line)
        tail = (tail + [line])[-20:]
    if proc.wait() == 0:
        return
    said = "".join(tail)
    if DIVERGED in said:
        message = next(line.strip() for line in reversed(tail) if DIVERGED in line)
        (run / "diverged.txt").write_text(message + "\n")
        return
    raise SystemExit(
        f"{run.name}: the run failed (exit status {proc.returncode}, see above); run the script again to continue it"
    )


def plot(results: dict, path: Path, epochs: int, image_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=100)
    colors = {}
    for key, r in results.items():
        name, seed = key.rsplit("-s", 1)
        color = colors.setdefault(name, f"C{len(colors)}")
        label = f"{name} (seeds: {', '.join(_pct(x) for x in _finals(results, name))}%)" if seed == "0" else None
        ax.plot(range(1, len(r["val_top1"]) + 1), r["val_top1"], color=color, marker="o", ms=3,
                linestyle="-" if seed == "0" else "--", label=label)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"ResNet-50, built-in data, {image_size} px, {epochs} epochs (solid: seed 0, dashed: seed 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _finals(results: dict, name: str) -> list[float | None]:
    """The final top-1 of each seed of `name`; None for a run that diverged."""
    return [r["top1"] for k, r in sorted(results.items()) if k.rsplit("-s", 1)[0] == name]


def _pct(x: float | None) -> str:
    return "diverged" if x is None else f"{x:.1f}"


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(results: dict, names: list[str]) -> str:
    """The markdown table of bench/README.md: one row per recipe, both seeds."""
    rows = ["| recipe | batch | steps/epoch | ImageNet batch with as many steps | peak lr | top-1 per seed (%) | "
            "mean (%) | vs sgd-16 (points) | top-5 per seed (%) | last epoch's mean train loss |",
            "|---|---:|---:|---:|---:|---|---:|---:|---|---|"]  # fmt: skip
    base = [x for x in _finals(results, "sgd-16") if x is not None]
    base_mean = sum(base) / len(base) if base else None
    for name in names:
        runs = [r for k, r in sorted(results.items()) if k.rsplit("-s", 1)[0] == name]
        if not runs:
            continue
        finals = [r["top1"] for r in runs]
        done = [x for x in finals if x is not None]
        mean = sum(done) / len(done) if done else None  # over the seeds that finished
        b, steps = runs[0]["global_batch"], runs[0]["steps_per_epoch"]
        delta = f"{mean - base_mean:+.1f}" if None not in (mean, base_mean) and name != "sgd-16" else "-"
        rows.append(f"| {name} | {b} | {steps} | {round(1_281_167 / steps):,} | {runs[0]['peak_lr']:.4g} | "
                    f"{', '.join(_pct(x) for x in finals)} | {_pct(mean) if done else '-'} | {delta} | "
                    f"{', '.join(_pct(r.get('top5')) for r in runs)} | "
                    f"{', '.join(_loss(r.get('final_train_loss')) for r in runs)} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=40)
    p.add_argument("--seeds", default="0,1", help="seeds, comma-separated")
    p.add_argument("--only", default=None, help="recipes to run, comma-separated (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "large-batch", help="parent of the run folders")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "large-batch.json")
    p.add_argument("--train-per-class", type=int, default=None,
                   help="a smoke run: a small copy of the built-in data with this many training images per class "
                   "(the steps per epoch then no longer match the records')")  # fmt: skip
    args = p.parse_args()
    data = []
    if args.train_per_class:
        from fastres.data.builtin import ensure_builtin_dataset

        small = ensure_builtin_dataset(args.out / "data", train_per_class=args.train_per_class, val_per_class=10)
        data = ["--data", str(small)]

    recipes = configs(args.epochs)
    names = args.only.split(",") if args.only else list(recipes)
    for name in names:
        if name not in recipes:
            raise SystemExit(f"--only: unknown recipe {name!r} (known: {', '.join(recipes)})")
    results, commands, t0 = {}, {}, time.time()
    for seed in (int(s) for s in args.seeds.split(",")):  # every recipe's seed 0 first
        for name in names:
            key = f"{name}-s{seed}"
            cmd = [sys.executable, "-m", "fastres.train", *recipes[name], *COMMON, *data, "--epochs", str(args.epochs),
                   "--image-size", str(args.image_size), "--seed", str(seed), "--out", str(args.out), "--name", key,
                   "--resume", "auto", "--no-progress", "--log-every", "1000"]  # fmt: skip
            commands[key] = " ".join(["python", *cmd[1:]])
            print(f"== {key} ({time.time() - t0:.0f} s in): {commands[key]}", flush=True)
            run_one(cmd, args.out / key)
            results[key] = r = read_run(args.out / key)
            n = len(r["val_top1"])
            said = f"diverged after {n} validated epochs" if r["diverged"] else f"top-1 {r['top1']:.1f}%"
            print(f"{key}: {said} ({args.epochs} epochs)", flush=True)
    wall = time.time() - t0
    import PIL

    out = {"epochs": args.epochs, "image_size": args.image_size, "wall_seconds": wall, "runs": results,
           "commands": commands, "command": "python bench/bench_large_batch.py",
           "machine": describe(pillow=PIL.__version__, date=time.strftime("%Y-%m-%d"))}  # fmt: skip
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=1) + "\n")
    plot(results, args.results.with_suffix(".png"), args.epochs, args.image_size)
    print(table(results, names))
    print(f"wrote {args.results} and {args.results.with_suffix('.png')} after {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
