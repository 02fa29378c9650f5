"""torchrun for an elastic fastres job: `python -m fastres.distributed.elastic`, torchrun's own flags, checked first.

    python -m fastres.distributed.elastic --nnodes 1:4 --nproc-per-node 8 --max-restarts 3 \\
        --rdzv-backend c10d --rdzv-endpoint HOST:29400 --rdzv-id JOB \\
        -m fastres.train --data /data/imagenet --global-batch 8192 --name rn50 --resume auto

It runs torch.distributed.run (torchrun) with the flags given, after
  - saying in one line (exit status 2) what torchrun would refuse with a traceback: --nnodes that is not N or
    MIN:MAX with 0 < MIN <= MAX, a negative --max-restarts, an elastic --nnodes with the static rendezvous;
  - refusing a fastres.train that restarts (an elastic --nnodes or --max-restarts above 0) without
    `--resume auto --name NAME`: each restart would start the run over instead of continuing it;
  - setting TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 unless it is set: with torch's shared TCPStore (torch 2.13), an
    agent that joins a running job (a host that comes back) waits for a master address the others' agents never
    write again, and the job fails at that rendezvous.
Nothing else changes: a plain torchrun with that variable set runs the same job (README, "Elastic runs").
"""

from __future__ import annotations

import os
import sys

from fastres import FastresError

__all__ = ["check", "main"]

PROG = "python -m fastres.distributed.elastic"


def _nodes(nnodes: str) -> tuple[int, int]:
    parts = nnodes.split(":")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, -1)
    except ValueError:
        low, high = 0, -1
    if not 0 < low <= high:
        raise FastresError(f"--nnodes {nnodes}: give N or MIN:MAX hosts, 0 < MIN <= MAX (MIN: the fewest the job "
                           "goes on with, MAX: the most it takes)")  # fmt: skip
    return low, high


def _given(args: list[str], flag: str) -> str | None:
    """The value of `flag` in fastres.train's arguments (the last one given), or None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def check(args) -> None:
    """Raise FastresError (one line) for what torchrun would refuse with a traceback, or an elastic fastres.train
    that would start the run over at each restart. `args`: torchrun's parsed arguments."""
    low, high = _nodes(args.nnodes)
    if args.max_restarts < 0:
        raise FastresError(f"--max-restarts {args.max_restarts}: give 0 or more restarts")
    if low < high and args.rdzv_backend == "static" and not args.standalone:
        raise FastresError(f"--nnodes {args.nnodes}: an elastic job needs a dynamic rendezvous (--rdzv-backend c10d "
                           "or etcd-v2 with --rdzv-endpoint HOST:PORT), not the static one")  # fmt: skip
    restarts = low < high or args.max_restarts > 0
    trains = args.module and args.training_script == "fastres.train"
    train_args = list(args.training_script_args)
    if restarts and trains and (_given(train_args, "--resume") != "auto" or not _given(train_args, "--name")):
        raise FastresError("fastres.train restarts here (--nnodes MIN:MAX or --max-restarts above 0): give it "
                           "--resume auto --name NAME, so that each restart continues the run from its newest "
                           "checkpoint instead of starting it over")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        check(torchrun.get_args_parser().parse_args(argv))
    except FastresError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        return 2
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    torchrun.main(argv)  # torchrun itself: its failures end as torchrun's do
    return 0


if __name__ == "__main__":
    sys.exit(main())
