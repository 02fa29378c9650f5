"""`--compile` end to end: the main command, `python -m fastres.train`, with and without torch.compile.

    python bench/bench_compile.py                       # writes bench/results/compile-cpu.json
    python bench/bench_compile.py --precisions fp32,bf16 --rounds 2
    python bench/bench_compile.py --epochs 1 --out /tmp/compile-check.json    # a short check of the script

Every run is the main command as a new user runs it (no --data: the `builtin` preset, 6 epochs, the
built-in dataset) in a process of its own, with `--precision P`, with or without `--compile`, and
`--log-every 1` (a metrics.jsonl record after every step, so that the first step's time is read, not
inferred; on a CPU a record costs no device sync). The built-in dataset is written before the first
run and is not in any run's time. Flags after `--` go to every run (e.g. `-- --threads 2`). Every
run compiles from nothing, in a TORCHINDUCTOR_CACHE_DIR of its own: inductor keeps what it compiled
in a cache folder (/tmp/torchinductor_$USER by default), and a later run of the same graphs skips
most of the compiling; `--inductor-cache DIR` gives every run that one folder, to time that case.

Precisions: `auto` (the default) measures fp32, and bf16 where this CPU computes bf16 natively (AVX-512
BF16 or AMX, as fastres.doctor says); `--precisions fp32,bf16` measures bf16 anyway, and its rows say
"emulated" on a CPU without native bf16 (there bf16 autocast is slower than fp32). The configurations
run one after another in each round, in an order that rotates from round to round.

What each run records (bench/results/compile-*.json): the command; wall seconds from starting the
process to its exit; seconds from the start to the first step's record (imports, listing the dataset,
building the model and, with --compile, compiling the training step); the first validation's seconds
(with --compile: compiling the model in eval mode, once per batch shape); steady img/s (images over
seconds between consecutive records of an epoch, leaving out the first `--skip` steps of each epoch);
top-1 and top-5 after the last epoch; the estimate line the run printed; the load average before and
after. Per precision and round, compiled against eager: the extra seconds before the first step and
in the first validation (what compiling cost), the steady speed ratio, the wall time ratio and the
run length from which compiling pays (its cost over the seconds it saves per epoch), when it does.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fastres.data.builtin import ensure_builtin_dataset  # noqa: E402
from fastres.distributed.launcher import without_launcher  # noqa: E402
from fastres.run.execution import cpu_bf16_features  # noqa: E402

from machine import describe  # noqa: E402

MODES = ("eager", "compile")


def precisions(spec: str) -> list[str]:
    """`auto`: fp32, and bf16 where this CPU computes it natively; else the comma-separated list."""
    if spec == "auto":
        return ["fp32", "bf16"] if cpu_bf16_features() else ["fp32"]
    chosen = [p for p in spec.split(",") if p]
    bad = [p for p in chosen if p not in ("fp32", "bf16")]
    if bad or not chosen:
        raise SystemExit(f"--precisions: fp32, bf16 or auto, got {spec!r}")
    return chosen


def label(precision: str, mode: str) -> str:
    """`fp32 eager`, `bf16 (native: AVX-512 BF16) --compile`, `bf16 (emulated: ...) eager`."""
    name = precision
    if precision == "bf16":
        features = cpu_bf16_features()
        name += f" (native: {', '.join(features)})" if features else " (emulated: no native bf16 on this CPU)"
    return f"{name} {'--compile' if mode == 'compile' else 'eager'}"


def command(precision: str, mode: str, work: Path, name: str, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "fastres.train", "--precision", precision, "--log-every", "1"]
    cmd += ["--compile"] if mode == "compile" else []
    return [*cmd, *extra, "--out", str(work), "--name", name]


def summarize(run_dir: Path, started: float, skip: int) -> dict:
    """What one finished run's metrics.jsonl and config.yaml say (times against `started`, time.time())."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    batch = config["global_batch"]
    train = [r for r in records if r["kind"] == "train"]
    vals = [r for r in records if r["kind"] == "val"]
    summary = next(r for r in records if r["kind"] == "summary")
    steps_per_epoch = max(r["step"] for r in train if r["epoch"] == 1)
    images = seconds = 0.0
    for before, after in zip(train, train[1:]):
        within = (after["step"] - 1) % steps_per_epoch  # 0-based step of its epoch
        if after["epoch"] == before["epoch"] and within >= skip:
            images += (after["step"] - before["step"]) * batch
            seconds += after["time"] - before["time"]
    last_of_first = max((r for r in train if r["epoch"] == 1), key=lambda r: r["step"])
    return {
        "first_step_s": round(train[0]["time"] - started, 2),
        "first_step": train[0]["step"],
        "first_validation_s": round(vals[0]["time"] - last_of_first["time"], 2),
        "steady_img_per_s": round(images / seconds, 2) if seconds else None,
        "steady_steps": round(images / batch),
        "epochs": summary["epochs"],
        "steps_per_epoch": steps_per_epoch,
        "train_seconds": round(summary["train_seconds"], 2),
        "top1": summary["top1"],
        "top5": summary["top5"],
        "precision_chosen": config.get("precision_chosen"),
        "global_batch": batch,
    }


def run_one(precision: str, mode: str, work: Path, extra: list[str], skip: int, cache: Path | None) -> dict:
    """One run of the main command; `cache`: inductor's cache folder to share (None: a fresh one, removed after:
    compiling from nothing, as the first run on a machine does)."""
    name = f"{precision}-{mode}-{time.monotonic_ns()}"
    cmd = command(precision, mode, work, name, extra)
    env = without_launcher(os.environ)
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache or work / f"{name}.inductor-cache")
    load_before = os.getloadavg()
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.time() - started
    if cache is None:
        shutil.rmtree(env["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({shlex.join(cmd)}):\n{done.stderr[-3000:]}")
    said = done.stdout.splitlines()
    row = {"label": label(precision, mode), "precision": precision, "mode": mode, "command": shlex.join(cmd),
           "run_dir": str(work / name), "inductor_cache": str(cache) if cache else "cold (a fresh folder)"}  # fmt: skip
    row.update(wall_s=round(wall, 2), **summarize(work / name, started, skip))
    row["estimate_line"] = next((x for x in said if x.startswith("fastres: estimate:")), None)
    row["load_before"], row["load_after"] = [round(x, 2) for x in load_before], [round(x, 2) for x in os.getloadavg()]
    return row


def compare(eager: dict, compiled: dict) -> dict:
    """Compiled against eager, one precision, one round."""
    cost = compiled["first_step_s"] - eager["first_step_s"] + compiled["first_validation_s"]
    cost -= eager["first_validation_s"]
    out = {"compile_seconds_first_step": round(compiled["first_step_s"] - eager["first_step_s"], 2),
           "compile_seconds_first_validation": round(compiled["first_validation_s"] - eager["first_validation_s"], 2),
           "wall_ratio": round(eager["wall_s"] / compiled["wall_s"], 3)}  # fmt: skip
    if eager["steady_img_per_s"] and compiled["steady_img_per_s"]:
        out["steady_ratio"] = round(compiled["steady_img_per_s"] / eager["steady_img_per_s"], 3)
        images = eager["steps_per_epoch"] * eager["global_batch"]
        saved = images / eager["steady_img_per_s"] - images / compiled["steady_img_per_s"]  # seconds per epoch
        out["pays_after_epochs"] = round(cost / saved, 1) if saved > 0 else None  # None: never
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--precisions", default="auto", help="fp32, bf16 (comma-separated) or auto (default)")
    p.add_argument("--modes", default="eager,compile", help="eager, compile or both (default)")
    p.add_argument("--epochs", type=int, default=None, help="passed as --epochs (default: the preset's 6)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--skip", type=int, default=5, help="steps of each epoch left out of the steady img/s")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compile-cpu.json")
    p.add_argument("--work", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--inductor-cache", type=Path, default=None, help="one TORCHINDUCTOR_CACHE_DIR for every run, "
                   "kept (a run after the first compiles from it); default: a fresh one per run (compiling from "
                   "nothing, as on a machine's first run)")  # fmt: skip
    args = p.parse_args(own)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        raise SystemExit(f"--modes: eager, compile or both, got {args.modes!r}")
    extra = (["--epochs", str(args.epochs)] if args.epochs is not None else []) + extra
    if not any(a == "--data" or a.startswith("--data=") for a in extra):
        ensure_builtin_dataset(say=print)  # written once, outside every run's time
    configs = [(precision, mode) for precision in precisions(args.precisions) for mode in modes]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fastres-bench-compile-") as tmp:
        work = args.work or Path(tmp)
        for r in range(args.rounds):
            for precision, mode in configs[r % len(configs) :] + configs[: r % len(configs)]:
                row = run_one(precision, mode, work, extra, args.skip, args.inductor_cache)
                rows.append({"round": r + 1, **row})
                print(f"round {r + 1}: {row['label']}: {row['wall_s']:.0f} s wall, first step at "
                      f"{row['first_step_s']:.1f} s, first validation {row['first_validation_s']:.1f} s, steady "
                      f"{row['steady_img_per_s']} img/s, top-1 {row['top1']:.2f}%", flush=True)  # fmt: skip
    comparisons = []
    for r in range(1, args.rounds + 1):
        for precision in precisions(args.precisions):
            pair = {row["mode"]: row for row in rows if row["round"] == r and row["precision"] == precision}
            if set(pair) == set(MODES):
                comparisons.append({"round": r, "precision": precision, **compare(pair["eager"], pair["compile"])})
                print(f"round {r}, {precision}: --compile against eager: {comparisons[-1]}", flush=True)
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT)
    results = {
        "command": shlex.join(["python", "bench/bench_compile.py", *argv]),
        "setup": dict(
            precisions=args.precisions,
            modes=modes,
            rounds=args.rounds,
            skip=args.skip,
            extra=extra,
            inductor_cache=str(args.inductor_cache) if args.inductor_cache else "a fresh one per run",
        ),
        "machine": describe(
            bf16_features=cpu_bf16_features(), date=time.strftime("%Y-%m-%d %H:%M"), git=git.stdout.strip() or None
        ),  # fmt: skip
        "runs": rows,
        "compile_vs_eager": comparisons,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
