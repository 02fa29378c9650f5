"""Train a ResNet on ImageNet-layout data: `python -m fastres.train`.

    # the built-in dataset (written once under ~/.cache/fastres), CPU or GPU, no flags needed
    python -m fastres.train

    # ImageNet on one GPU: ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG
    python -m fastres.train --data /data/imagenet --batch-size 256 --epochs 90

    # a shipped preset or a YAML file of your own; flags override it
    python -m fastres.train --config builtin --epochs 3
    python -m fastres.train --data /data/imagenet --config my-recipe.yaml --lr 0.2

    # continue a run that stopped: its newest checkpoint that verifies, with its saved config
    python -m fastres.train --resume runs/resnet50-20261123-101500
    # a job script that continues itself when requeued: the same command every time
    python -m fastres.train --data /data/imagenet --name rn50 --resume auto --checkpoint-minutes 30

    # one machine, 8 GPUs: one process per GPU; gradients averaged bucket by bucket in backward
    torchrun --standalone --nproc-per-node 8 -m fastres.train --data /data/imagenet

    # 32 machines x 8 GPUs (Slurm; srun -N32 --ntasks-per-node 8 works the same without torchrun):
    # reduce-scatter in the node, all-reduce across nodes, all-gather in the node, bf16 on the wire
    torchrun --nnodes 32 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        -m fastres.train --data /data/imagenet --config goyal-8k --wire-dtype bf16

    # the hierarchical path on one CPU box: 4 processes as 2 virtual nodes of 2
    torchrun --standalone --nproc-per-node 4 -m fastres.train --virtual-nodes 2 --threads 1

`--lr` is the peak learning rate per 256 images, scaled linearly with the global batch
(Goyal et al. 2017), or absolute with `--lr-unit absolute`. `--print-schedule` prints a
recipe's lr, momentum and batch per epoch for the dataset the run trains on (or --train-images
images) and exits, reading no image and no device:

    python -m fastres.train --config goyal-8k --print-schedule --train-images 1281167

`--print-config` prints the resolved config, every value with where it came from (preset,
default, flag), and exits. Run `python -m fastres.train --help` for every flag. Bad flags, data
folders or checkpoints end with a one-line error and exit status 2.
"""

from __future__ import annotations

import os
import sys
import time

from fastres import FastresError


def _rank() -> int:
    """This process's rank as the launcher says (0 when it says nothing or something malformed)."""
    from fastres.distributed.launcher import read_launcher

    try:
        return read_launcher(os.environ).rank
    except FastresError:
        return 0


def _schedule_table(cfg) -> str:
    """--print-schedule: the recipe's lr, momentum and batch per epoch, for the global batch of
    --global-batch (else this launch's: batch x processes x --accumulate) and the images of the
    dataset the run trains on (--train-images overrides), with the steps per epoch and the
    refusals of training itself."""
    from fastres.config import launch_world_size
    from fastres.data.dataset import batches_per_epoch, optimizer_steps, train_images
    from fastres.optim.schedule import schedule_table

    world = launch_world_size()
    if cfg.train_images:
        where, images = f"--train-images {cfg.train_images}:", cfg.train_images
    else:
        root, images = train_images(cfg.data, cfg.train_list)
        where = f"{root}/train"
    batches = batches_per_epoch(where, images, world, cfg.batch_size, cfg.steps_rounding)
    steps = optimizer_steps(batches, cfg.accumulate)
    return schedule_table(cfg, cfg.batch_size * world * cfg.accumulate, images, steps)


def _print(text: str) -> int:
    """Print and return 0; a reader that went away (`... | head`) is no error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


def _resolved_here(cfg) -> dict[str, str]:
    """--print-config's notes: what `--precision` resolves to on this machine, and why."""
    from fastres.run.execution import device_type, resolve_precision

    return {"precision": f"here: {resolve_precision(cfg.precision, device_type(cfg.device))}"}


def _to_stderr(text: str, **_) -> None:
    print(text, file=sys.stderr, flush=True)


SMOKE_IMAGES = (20, 5)  # per class, train and val: the smoke run's copy of the built-in dataset


def _smoke_argv(argv: list[str]) -> list[str]:
    """--smoke: the preset smoke on a small copy of the built-in dataset (unless --data is given); the
    command line's own flags still override it."""
    from fastres.data.builtin import builtin_root

    given = any(a == "--data" or a.startswith("--data=") for a in argv)
    data = [] if given else ["--data", str(builtin_root(None, *SMOKE_IMAGES))]
    return ["--config", "smoke", *data, *argv]


def _smoke_check(summary) -> int:
    """After a --smoke run, on rank 0: `python -m fastres.eval` on its newest checkpoint, in a process of
    its own as a user would run it, must give the top-1 the run logged; then one line says it passed."""
    import json
    import subprocess

    command = [sys.executable, "-m", "fastres.eval", str(summary.run_dir), "--json"]
    from fastres.distributed.launcher import without_launcher

    done = subprocess.run(command, capture_output=True, text=True, env=without_launcher(os.environ))
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    if result is None or not abs(result["top1"] - summary.top1) <= 1e-6:  # a top-1 never logged (NaN) fails
        got = (
            f"top-1 {result['top1']:.2f}%" if result else f"exit status {done.returncode}: {done.stderr.strip()[-300:]}"
        )
        print(f"python -m fastres.train: error: smoke run FAILED: the run logged top-1 {summary.top1:.2f}% but "
              f"`python -m fastres.eval {summary.run_dir}` gave {got}", file=sys.stderr, flush=True)  # fmt: skip
        return 1
    print(f"fastres: smoke run passed in {summary.total_seconds:.0f} s: data, model, optimizer, checkpoints, "
          f"validation and `python -m fastres.eval` (top-1 {result['top1']:.2f}% on {result['images']} images, as "
          f"the run logged); run folder {summary.run_dir}", flush=True)  # fmt: skip
    return 0


def _finished(resume, started: float):
    """What the last validation of a finished run (`resume`: its ResumePlan, nothing to do) logged: a Summary."""
    from fastres.run.runlog import Summary

    val = (resume.state.get("extra") or {}).get("val") or {}
    return Summary(epochs=resume.cfg.epochs, top1=val.get("top1", float("nan")), top5=val.get("top5", float("nan")),
                   train_seconds=0.0, total_seconds=time.perf_counter() - started, images_per_second=0.0,
                   run_dir=resume.run_dir)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from fastres.run.console import guarded_streams

    with guarded_streams():  # a log reader that goes away never stops the run (fastres.run.console)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from fastres.config import (
        ConfigError,
        Resolved,
        print_config_requested,
        print_schedule_requested,
        resolve_command_line,
        smoke_requested,
    )
    from fastres.run.preemption import Preempted, exit_status
    from fastres.run.resume import plan_resume
    from fastres.run.trainer import Trainer

    started = time.perf_counter()
    rank = _rank()
    say = print if rank == 0 else (lambda *a, **k: None)
    argv = sys.argv[1:] if argv is None else list(argv)
    smoke = smoke_requested(argv)
    try:
        resolved = resolve_command_line(_smoke_argv(argv) if smoke else argv)
        for line in resolved.said if rank == 0 else ():
            _to_stderr(line)
        cfg, given = resolved.cfg, resolved.given
        printing = print_config_requested(argv) or print_schedule_requested(argv)  # no data, no device, no writes
        resume = plan_resume(cfg, given, say=_to_stderr if printing else say)  # a resume: what it would continue
        if resume is not None and resume.state is not None:
            title = f"the config the resume continues with, from {resume.checkpoint}"
            resolved = Resolved(resume.cfg, given, resume.sources, title)
        if print_config_requested(argv):
            return _print(resolved.describe(_resolved_here(resolved.cfg)))
        if print_schedule_requested(argv):
            return _print(_schedule_table(resolved.cfg))
        if smoke and resolved.cfg.backend == "synthetic":
            raise ConfigError("--smoke checks every part of a run, its data included: --backend synthetic leaves the "
                              "data out (and `python -m fastres.eval` reads the real images); give --backend pytorch "
                              "or dali, or leave out --smoke")  # fmt: skip
        if resume is not None and resume.finished:
            say(f"fastres: run {resume.run_dir} is finished ({resume.cfg.epochs} epochs, checkpoint "
                f"{resume.checkpoint}); nothing to do (give a larger --epochs to train on)", flush=True)  # fmt: skip
            return _smoke_check(_finished(resume, started)) if smoke and rank == 0 else 0
        summary = Trainer.from_config(resume.cfg if resume else cfg, resume).fit()
    except Preempted as e:
        if rank == 0:
            print(f"python -m fastres.train: {e}", file=sys.stderr, flush=True)
        return exit_status(e.signum)
    except FastresError as e:
        # Every rank meets a shared error (a flag, the dataset, a checkpoint): rank 0 says it once.
        if rank == 0 or not e.shared:
            where = f" (rank {rank})" if rank != 0 else ""
            print(f"python -m fastres.train: error{where}: {e}", file=sys.stderr, flush=True)
        return getattr(e, "exit_status", 2)  # 75 for a lost peer (fastres.distributed.errors), else bad input
    if summary.rank != 0:
        return 0
    if smoke:
        return _smoke_check(summary)
    print(
        f"fastres: done: {summary.epochs} epochs, val top-1 {summary.top1:.2f}% top-5 {summary.top5:.2f}%, "
        f"{summary.total_seconds:.0f}s total ({summary.train_seconds:.0f}s training at "
        f"{summary.images_per_second:.0f} img/s), run folder {summary.run_dir}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
