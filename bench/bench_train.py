"""End-to-end training speed: `python -m fastres.train` against a plain pytorch/examples loop.

    python bench/bench_train.py                      # writes bench/results/train-cpu.json
    python bench/bench_train.py --rounds 3 --compile # also fastres --compile (a minute of compiling per run)

Same model (ResNet-50), same data (the built-in dataset's first `--per-class` training images
of each class, real JPEGs decoded with PIL in 2 DataLoader workers per process), same global
batch (64), same image size (48 px, random-resized crop from 25% of the area): one pass, one
process with 2 torch threads, then 2 processes under torchrun with 1 thread each (the plain
loop with DDP, fastres with its reducer; both over Gloo). Throughput is the images of every
process between the end of step `--skip` and the end of the last step over the seconds between
them, read from fastres's metrics.jsonl (a record every 4 steps and at the last one: each
averages the loss over the ranks, a blocking collective the plain loop does not have) and from
the plain loop's own clock (which calls `loss.item()` and computes top-1/top-5 every step, as
pytorch/examples does). Configurations alternate in each round (the order rotates); the median over rounds is
reported, and each one's ratio to the plain fp32 loop of the same round.

The ceiling, in the same run: one training step (forward, backward, torch SGD) of the same
model on one in-memory batch, no loader, 2 threads, for NCHW fp32, channels_last fp32 and
channels_last + bf16 autocast: what any loop can reach on this CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fastres.data.builtin import ensure_builtin_dataset  # noqa: E402
from fastres.run.execution import cpu_has_native_bf16  # noqa: E402

from machine import describe  # noqa: E402

GLOBAL_BATCH, IMAGE_SIZE = 64, 48
LOG_EVERY = 4  # fastres's records (loss averaged over the ranks: a collective) every 4 steps, and at the end

# name -> (runner, extra flags); the plain loop's flags are bench/plain_loop.py's, fastres's are its own
CONFIGS = {
    "plain fp32": ("plain", []),
    "plain bf16 channels_last": ("plain", ["--channels-last", "--bf16"]),
    "fastres fp32 NCHW": ("fastres", ["--precision", "fp32", "--no-channels-last"]),
    "fastres fp32 channels_last": ("fastres", ["--precision", "fp32", "--channels-last"]),
    "fastres bf16 channels_last": ("fastres", ["--precision", "bf16", "--channels-last"]),
}
COMPILED = {"fastres fp32 channels_last compile": ("fastres", ["--precision", "fp32", "--channels-last", "--compile"])}

CEILING = """
import statistics, sys, time, torch
from fastres.model import resnet50
torch.set_num_threads(2)
cl, bf16 = sys.argv[1] == "1", sys.argv[2] == "1"
torch.manual_seed(0)
model = resnet50(num_classes=10)
x, y = torch.randn(64, 3, 48, 48), torch.randint(0, 10, (64,))
if cl:
    model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
times = []
for _ in range(13):
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t)
print(64 / statistics.median(times[3:]))
"""


def write_lists(data: Path, out: Path, per_class: int) -> tuple[Path, Path]:
    classes = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())
    lists = []
    for split, n in (("train", per_class), ("val", 1)):
        lines = [f"{c}/{f} {i}" for i, c in enumerate(classes) for f in sorted(os.listdir(data / split / c))[:n]]
        path = out / f"{split}.txt"
        path.write_text("\n".join(lines) + "\n")
        lists.append(path)
    return lists[0], lists[1]


def launch(procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]


def run_plain(data: Path, train: Path, procs: int, extra: list[str], skip: int) -> float:
    cmd = [*launch(procs), str(ROOT / "bench" / "plain_loop.py"), "--data", str(data), "--list", str(train),
           "--batch-size", str(GLOBAL_BATCH // procs), "--image-size", str(IMAGE_SIZE), "--workers", "2",
           "--threads", str(2 // procs), "--skip", str(skip), *extra]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise SystemExit(f"plain loop failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["img_per_s"]


def run_fastres(data: Path, train: Path, val: Path, procs: int, extra: list[str], skip: int, work: Path) -> float:
    name = f"run-{time.monotonic_ns()}"
    cmd = [*launch(procs), "-m", "fastres.train", "--config", "builtin", "--data", str(data), "--train-list",
           str(train), "--val-list", str(val), "--epochs", "1", "--batch-size", str(GLOBAL_BATCH // procs),
           "--image-size", str(IMAGE_SIZE), "--workers", "2", "--threads", str(2 // procs), "--optimizer", "sgd",
           "--log-every",
           str(LOG_EVERY), "--no-progress", "--data-check", "none", "--out", str(work), "--name", name,
           *extra]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"fastres failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    steps = {}
    for line in (work / name / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            steps[record["step"]] = record["time"]
    last = max(steps)
    return (last - skip) * GLOBAL_BATCH / (steps[last] - steps[skip])


def ceiling(cl: bool, bf16: bool) -> float:
    cmd = [sys.executable, "-c", CEILING, str(int(cl)), str(int(bf16))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"ceiling step failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--per-class", type=int, default=250, help="training images per class (10 classes)")
    p.add_argument("--skip", type=int, default=8, help=f"steps left out of the timing (a multiple of {LOG_EVERY})")
    p.add_argument("--procs", default="1,2", help="process counts to measure, comma-separated")
    p.add_argument("--compile", action="store_true", help="also fastres --compile (fp32, channels_last)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train-cpu.json")
    args = p.parse_args()
    if args.skip % LOG_EVERY or args.skip < LOG_EVERY:
        raise SystemExit(f"--skip must be a positive multiple of {LOG_EVERY}, got {args.skip}")

    data = ensure_builtin_dataset()
    configs = {**CONFIGS, **(COMPILED if args.compile else {})}
    results: dict = {"ceiling": {}, "end_to_end": {}}
    with tempfile.TemporaryDirectory(prefix="fastres-bench-train-") as tmp:
        work = Path(tmp)
        train, val = write_lists(data, work, args.per_class)
        for procs in (int(n) for n in args.procs.split(",")):
            rows = {name: [] for name in configs}
            for r in range(args.rounds):
                names = list(configs)
                names = names[r % len(names) :] + names[: r % len(names)]  # rotate the order each round
                for name in names:
                    runner, extra = configs[name]
                    if runner == "plain":
                        ips = run_plain(data, train, procs, extra, args.skip)
                    else:
                        ips = run_fastres(data, train, val, procs, extra, args.skip, work)
                    rows[name].append(ips)
                    print(f"{procs} process(es), round {r + 1}: {name}: {ips:.1f} img/s", flush=True)
            base = rows["plain fp32"]
            results["end_to_end"][f"{procs} process(es)"] = {
                name: {"img_per_s": statistics.median(v), "rounds": v,
                       "vs_plain_fp32": statistics.median(x / b for x, b in zip(v, base, strict=True))}
                for name, v in rows.items()
            }  # fmt: skip
        for cl, bf16, name in ((False, False, "fp32 NCHW"), (True, False, "fp32 channels_last"),
                               (True, True, "bf16 channels_last")):  # fmt: skip
            results["ceiling"][name] = ceiling(cl, bf16)
            print(f"ceiling (one in-memory batch, no loader): {name}: {results['ceiling'][name]:.1f} img/s", flush=True)
    import PIL

    results["setup"] = dict(global_batch=GLOBAL_BATCH, image_size=IMAGE_SIZE, per_class=args.per_class,
                            skip=args.skip, rounds=args.rounds, loader_workers_per_process=2,
                            command="python bench/bench_train.py" + (" --compile" if args.compile else ""))  # fmt: skip
    results["machine"] = describe(pillow=PIL.__version__, native_bf16=cpu_has_native_bf16(),
                                  date=time.strftime("%Y-%m-%d"))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
