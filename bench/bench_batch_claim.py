"""Does LARS hold the small-batch accuracy at a 32K-equivalent batch where linearly scaled SGD does not?

The large-batch records' claim in miniature, on the built-in data (6,000 training images): a batch of
160 makes 37 optimizer steps per epoch, the 32K records' steps per epoch on ImageNet (39). Every run
is `python -m fastres.train`; the arms differ only where the claim says they should:

    python bench/bench_batch_claim.py               # every run, then bench/results/large-batch-claim.json, .png
    python bench/bench_batch_claim.py --time-steps 100   # first: 100 steps of each candidate model and batch,
                                                    # next to the builtin preset timed in the same minutes

Common to every run (COMMON): --arch, one --image-size, fp32, channels_last, crops of 70-100%, weight
decay 5e-5 on conv/fc weights (the builtin preset's), no label smoothing, momentum 0.9 in torch's
convention (m = 0.9 m + g; w -= lr m: the lr outside the momentum buffer, for SGD and LARS alike), no
Nesterov, no momentum correction, the last BN gamma of each block starting at 0, ghost BN over 32
images, the loader in the training process, cosine decay to 0, --epochs.

    baseline       batch 32, 0.6 per 256 images (0.075; the builtin preset's rate), its 0.5-epoch warm-up from 0
    sgd-linear     batch 160, the rate scaled linearly (0.375), warm-up over the first 25% of training,
                   linear from the baseline's rate (--warmup-start 32 / 160)
    lars           sgd-linear with the trust ratio on conv/fc weights (--optimizer lars): BN parameters and
                   biases keep sgd-linear's rate, eta = 20.87 x 0.001 / 0.375 so that lr x eta is you-32k's
                   conv/fc step size; nothing else differs
    sgd-lrX        probe: sgd-linear at a lower rate X per 256 images (--tuned-lrs: a sweep, one seed each),
                   warm-up from the baseline's rate; sgd-tuned, the rule's tuned-SGD probe, is the best of them
    lars-half-eta  probe: lars at half its eta

bench/README.md holds the decision rule (written before the first run); `verdict` below applies it.
Each run folder is OUT/ARM-sSEED, started with `--resume auto`: a finished run is read, not repeated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_large_batch import read_run, run_one  # noqa: E402

from machine import describe  # noqa: E402

BASE_BATCH, LARGE_BATCH = 32, 160
LR_PER_256 = 0.6  # the builtin preset's rate: 0.075 at 32, linearly 0.375 at 160
YOU_STEP = 20.87 * 0.001  # you-32k's lr x eta: the conv/fc step size of the record
LARS_ETA = YOU_STEP / (LR_PER_256 * LARGE_BATCH / 256)
MAIN = ("baseline", "sgd-linear", "lars")


def common(arch: str, image_size: int, epochs: int) -> list[str]:
    return ["--config", "builtin", "--arch", arch, "--image-size", str(image_size), "--epochs", str(epochs),
            "--precision", "fp32", "--channels-last", "--crop-scale-min", "0.7", "--weight-decay", "5e-5",
            "--label-smoothing", "0", "--momentum", "0.9", "--momentum-convention", "torch", "--no-nesterov",
            "--no-momentum-correction", "--zero-init-last-gamma", "--bn-virtual-batch", "32", "--workers", "0",
            "--backend", "pytorch", "--schedule", "cosine", "--lr-unit", "per-256",
            "--steps-rounding", "floor"]  # fmt: skip


def arms(epochs: int, tuned_lrs: tuple[float, ...] = ()) -> dict[str, list[str]]:
    """arm -> its flags (on top of `common`): the main arms, then the probes."""

    def batch(b: int) -> list[str]:
        # --batch-size too: with --resume auto, fastres.train starting a new run takes --batch-size (here the
        # builtin preset's 32) and not --global-batch; main() checks the batch each run trained at
        return ["--global-batch", str(b), "--batch-size", str(b)]

    def large(lr_per_256: float) -> list[str]:
        start = BASE_BATCH * LR_PER_256 / (LARGE_BATCH * lr_per_256)  # the warm-up starts at the baseline's rate
        return [*batch(LARGE_BATCH), "--lr", f"{lr_per_256:g}", "--warmup-epochs", f"{epochs / 4:g}",
                "--warmup-start", f"{start:.6g}"]  # fmt: skip

    sgd, lars = ["--optimizer", "fused-sgd"], ["--optimizer", "lars", "--lars-eps", "0"]
    return {
        "baseline": [*sgd, *batch(BASE_BATCH), "--lr", f"{LR_PER_256:g}", "--warmup-epochs", "0.5",
                     "--warmup-start", "0"],
        "sgd-linear": [*sgd, *large(LR_PER_256)],
        "lars": [*lars, *large(LR_PER_256), "--lars-eta", f"{LARS_ETA:.6g}"],
        **{f"sgd-lr{x:g}": [*sgd, *large(x)] for x in tuned_lrs},
        "lars-half-eta": [*lars, *large(LR_PER_256), "--lars-eta", f"{LARS_ETA / 2:.6g}"],
    }  # fmt: skip


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def verdict(top1: dict[str, list[float]]) -> dict:
    """bench/README.md's decision rule on each arm's final top-1 per seed (a diverged seed counts as 0); the
    tuned-SGD probe is the best of the sgd-lrX sweep."""
    a0, lars, sgd = _mean(top1["baseline"]), _mean(top1["lars"]), _mean(top1["sgd-linear"])
    tuned_arm = max((arm for arm in top1 if arm.startswith("sgd-lr")), key=lambda arm: top1[arm][0])
    tuned = top1[tuned_arm][0]
    shown = {
        "LARS >= A0 - 2": lars >= a0 - 2,
        "sgd-linear <= A0 - 5": sgd <= a0 - 5,
        "every LARS seed above every sgd-linear seed": min(top1["lars"]) > max(top1["sgd-linear"]),
        "sgd-tuned <= LARS - 3": tuned <= lars - 3,
    }
    refuted = {
        "sgd-linear >= A0 - 2": sgd >= a0 - 2,
        "LARS <= sgd-linear + 1": lars <= sgd + 1,
        "LARS < A0 - 5 and sgd-tuned >= LARS": lars < a0 - 5 and tuned >= lars,
    }
    if all(shown.values()):
        finding = "shown"
    elif any(refuted.values()):
        finding = "refuted at this scale"
    elif lars > sgd and tuned > lars - 3:
        finding = "LARS spares tuning the rate (not the claim)"
    else:
        finding = "undecided"
    means = {"A0": a0, "lars": lars, "sgd-linear": sgd, "sgd-tuned": tuned}
    return {"finding": finding, "means": means, "sgd_tuned": tuned_arm, "shown_if_all": shown,
            "refuted_if_any": refuted}  # fmt: skip


def _final(r: dict) -> float:
    return 0.0 if r["top1"] is None else r["top1"]


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, loss) = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=100)
    colors = {arm: f"C{i}" for i, arm in enumerate(dict.fromkeys(k.rsplit("-s", 1)[0] for k in results))}
    for key, r in sorted(results.items()):
        arm, seed = key.rsplit("-s", 1)
        style = dict(color=colors[arm], marker="o", ms=3, linestyle=("-", "--", ":")[int(seed) % 3])
        label = arm if seed == "0" else None
        top.plot(range(1, len(r["val_top1"]) + 1), r["val_top1"], label=label, **style)
        loss.plot(range(1, len(r["train_loss"]) + 1), r["train_loss"], **style)
    top.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation top-1 (seeds 0, 1, 2: solid, dashed, dotted)")
    loss.set(xlabel="epoch", ylabel="mean train loss of the epoch", yscale="log", title="training loss")
    for ax in (top, loss):
        ax.grid(alpha=0.3)
    top.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def table(results: dict) -> str:
    """bench/README.md's table: one row per run, arm by arm."""
    rows = ["| arm | seed | batch | steps/epoch | peak lr | eta | top-1 (%) | top-5 (%) | last epoch's train loss |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for arm in dict.fromkeys(k.rsplit("-s", 1)[0] for k in results):
        for key, r in sorted(results.items()):
            if key.rsplit("-s", 1)[0] != arm:
                continue
            top1 = "diverged" if r["top1"] is None else f"{r['top1']:.1f}"
            top5 = "-" if r["top5"] is None else f"{r['top5']:.1f}"
            eta = f"{r['lars_eta']:.4g}" if r["optimizer"] == "lars" else "-"
            rows.append(f"| {arm} | {key.rsplit('-s', 1)[1]} | {r['global_batch']} | {r['steps_per_epoch']} | "
                        f"{r['peak_lr']:.4g} | {eta} | {top1} | {top5} | {r['train_loss'][-1]:.3f} |")  # fmt: skip
    return "\n".join(rows)


def read_arm_run(run: Path) -> dict:
    """read_run's figures plus the mean training loss of every epoch and LARS's eta."""
    import yaml

    r = read_run(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = {}
    for rec in records:
        if rec["kind"] == "train":
            last[rec["epoch"]] = rec["loss"]  # --log-every above an epoch's steps: one record per epoch
    r["train_loss"] = [last[e] for e in sorted(last)]
    r["lars_eta"] = yaml.safe_load((run / "config.yaml").read_text())["config"]["lars_eta"]
    return r


# ---------------------------------------------------------------------------------------------- timing


def _uptime() -> str:
    """The 1, 5 and 15-minute load averages (`uptime`'s): how shared the box was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def time_steps(steps: int, rounds: int = 5) -> dict:
    """Seconds per image of one training step (forward, backward, the optimizer; on one in-memory batch of the
    built-in data's shape: the loader, a few percent here, is left out) of each candidate configuration, built
    from the flags of its arm by the pieces python -m fastres.train uses, next to the builtin preset's step
    (ResNet-50, 48 px, batch 32), whose quiet-box speed end to end is known: a configuration's quiet-box speed
    is its speed relative to builtin's times that. On a shared box the configurations take turns, `steps` / rounds
    steps each per round (a fifth as many at batch 160: the same images), so each one sees the same load;
    the median round counts. Beside the wall clock, the process's CPU seconds per image (all its threads:
    time spent waiting for a core does not count) give a second ratio, steadier on a crowded box."""
    import statistics

    import torch
    from torch import nn

    from fastres.config import parse_args
    from fastres.model import build_model
    from fastres.model.bn import convert_ghost_bn
    from fastres.optim import build_optimizer

    configs = {
        "builtin (resnet50, 48 px, batch 32)": ["--config", "builtin"],
        "resnet18, 40 px, batch 32": [*common("resnet18", 40, 8), *arms(8)["baseline"]],
        "resnet18, 40 px, batch 160": [*common("resnet18", 40, 8), *arms(8)["sgd-linear"]],
        "resnet18, 40 px, batch 160, lars": [*common("resnet18", 40, 8), *arms(8)["lars"]],
        "resnet50, 40 px, batch 32": [*common("resnet50", 40, 8), *arms(8)["baseline"]],
        "resnet50, 40 px, batch 160": [*common("resnet50", 40, 8), *arms(8)["sgd-linear"]],
    }
    built = {}
    for name, flags in configs.items():
        cfg = parse_args(flags)
        torch.manual_seed(0)
        model = convert_ghost_bn(build_model(cfg.arch, 10, cfg.zero_init_last_gamma), cfg.bn_virtual_batch)
        model = model.to(memory_format=torch.channels_last)
        x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (cfg.batch_size,))
        opt = build_optimizer(cfg, model)
        for g in opt.param_groups:
            g["lr"] = 0.01
        built[name] = (model, opt, x, y, max(1, steps // rounds // (cfg.batch_size // 32)))

    def run(model, opt, x, y, n: int) -> tuple[float, float]:
        """Wall and CPU seconds per image of n steps."""
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return (time.perf_counter() - t0) / (n * x.shape[0]), (time.process_time() - c0) / (n * x.shape[0])

    for model, opt, x, y, _ in built.values():
        run(model, opt, x, y, 2)  # warm-up steps, untimed
    wall: dict[str, list[float]] = {name: [] for name in built}
    cpu: dict[str, list[float]] = {name: [] for name in built}
    loads = [_uptime()]
    for k in range(rounds):
        for name, (model, opt, x, y, n) in built.items():
            w, c = run(model, opt, x, y, n)
            wall[name].append(w)
            cpu[name].append(c)
        loads.append(_uptime())
        speeds = ", ".join(f"{name} {1 / wall[name][-1]:.1f} ({1 / cpu[name][-1]:.1f})" for name in built)
        print(f"round {k + 1}/{rounds} (load {loads[-1]}), img/s per wall (CPU) second: {speeds}", flush=True)
    builtin = "builtin (resnet50, 48 px, batch 32)"
    ref_wall, ref_cpu = statistics.median(wall[builtin]), statistics.median(cpu[builtin])
    found = {}
    for name, (*_, n) in built.items():
        by_wall, by_cpu = ref_wall / statistics.median(wall[name]), ref_cpu / statistics.median(cpu[name])
        found[name] = {"img_per_s": 1 / statistics.median(wall[name]), "speed_vs_builtin_wall": by_wall,
                       "speed_vs_builtin_cpu": by_cpu, "steps": n * rounds,
                       "quiet_box_img_per_s_by_cpu": [44 * by_cpu, 49 * by_cpu],
                       "img_per_s_each_round": [1 / s for s in wall[name]],
                       "img_per_cpu_s_each_round": [1 / s for s in cpu[name]], "flags": configs[name]}  # fmt: skip
        print(f"{name}: {by_wall:.2f}x builtin's speed by the wall clock, {by_cpu:.2f}x by CPU time: "
              f"{44 * by_cpu:.0f}-{49 * by_cpu:.0f} img/s on a quiet box (builtin: 44-49)", flush=True)  # fmt: skip
    return {"configs": found, "load_each_round": loads, "rounds": rounds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet18", help="the model of every run")
    p.add_argument("--image-size", type=int, default=40)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--tuned-lrs", default="0.3,0.15",
                   help="lower SGD rates per 256 images tried at batch 160, comma-separated")  # fmt: skip
    p.add_argument("--seeds", default="0,1,2", help="seeds of the three main arms; the probes run the first")
    p.add_argument("--only", default=None, help="arms to run, comma-separated (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "large-batch-claim", help="parent of the run folders")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "large-batch-claim.json")
    p.add_argument("--time-steps", type=int, default=None,
                   help="instead of the experiment: time this many steps of each candidate configuration")  # fmt: skip
    args = p.parse_args()
    machine = describe(date=time.strftime("%Y-%m-%d"))
    if args.time_steps:
        found = time_steps(args.time_steps)
        path = args.results.with_name(args.results.stem + "-timing.json")
        path.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), **found, "machine": machine},
                                   indent=1) + "\n")  # fmt: skip
        print(f"wrote {path}")
        return
    tuned_lrs = tuple(float(x) for x in args.tuned_lrs.split(","))
    recipes = arms(args.epochs, tuned_lrs)
    names = args.only.split(",") if args.only else list(recipes)
    for name in names:
        if name not in recipes:
            raise SystemExit(f"--only: unknown arm {name!r} (known: {', '.join(recipes)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    plan = [(name, seed) for seed in seeds for name in names if seed == seeds[0] or name in MAIN]
    results, commands, loads, t0 = {}, {}, {}, time.time()
    for name, seed in plan:  # every arm's first seed first
        key = f"{name}-s{seed}"
        cmd = [sys.executable, "-m", "fastres.train", *common(args.arch, args.image_size, args.epochs),
               *recipes[name], "--seed", str(seed), "--out", str(args.out), "--name", key, "--resume", "auto",
               "--no-progress", "--log-every", "1000"]  # fmt: skip
        commands[key] = " ".join(["python", *cmd[1:]])
        print(f"== {key} ({time.time() - t0:.0f} s in, load {_uptime()}): {commands[key]}", flush=True)
        loads[key] = [_uptime()]
        run_one(cmd, args.out / key)
        loads[key].append(_uptime())
        results[key] = r = read_arm_run(args.out / key)
        want = int(recipes[name][recipes[name].index("--global-batch") + 1])
        if r["global_batch"] != want:
            raise SystemExit(f"{key}: trained at global batch {r['global_batch']}, not {want}: remove {args.out / key}")
        said = "diverged" if r["top1"] is None else f"top-1 {r['top1']:.1f}%"
        print(f"{key}: {said}; per epoch {', '.join(f'{x:.1f}' for x in r['val_top1'])}", flush=True)
    wall = time.time() - t0
    out = {"arch": args.arch, "image_size": args.image_size, "epochs": args.epochs, "tuned_lrs_per_256": tuned_lrs,
           "lars_eta": LARS_ETA, "wall_seconds": wall, "runs": results, "commands": commands,
           "load_before_after": loads, "command": " ".join(["python", *sys.argv]), "machine": machine}  # fmt: skip
    if set(recipes) <= set(names):
        top1 = {arm: [_final(r) for k, r in sorted(results.items()) if k.rsplit("-s", 1)[0] == arm] for arm in names}
        out["verdict"] = verdict(top1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=1) + "\n")
    title = f"{args.arch}, built-in data, {args.image_size} px, {args.epochs} epochs, batch 32 vs 160"
    plot(results, args.results.with_suffix(".png"), title)
    print(table(results))
    if "verdict" in out:
        print(json.dumps(out["verdict"], indent=1))
    print(f"wrote {args.results} and {args.results.with_suffix('.png')} after {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
