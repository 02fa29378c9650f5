"""A run's whole state: what a checkpoint holds, how it is written, and how a run is restored from it.

    state = run_state(model, optimizer, epoch=, step=, config=, classes=, loader_states=)
    save_checkpoint(state, run_dir / CHECKPOINT_NAME)       # atomic: old or new, never half
    start_epoch, step = restore_run(path, model, optimizer, train_loader, steps_per_epoch=, rank=, world=)

A checkpoint holds the model, the optimizer (momentum), epoch and step, the resolved config,
the class names, torch's CPU RNG state, and every rank's data-loader state (DALI's reader
and random state: a resumed run reads the same samples in the same order).

A checkpoint is written to a temporary file in the same folder, flushed to disk, then
renamed over the old one: at any instant the path holds either the previous complete
checkpoint or the new complete one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastres import FastresError

__all__ = ["CHECKPOINT_NAME", "load_checkpoint", "resolve_checkpoint", "restore_run", "run_state", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"


def run_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    step: int,
    config: dict[str, Any],
    classes: tuple[str, ...],
    loader_states: list,
) -> dict[str, Any]:
    """Everything needed to continue the run after `step` (the end of `epoch`).

    loader_states: each rank's training-loader state, by rank (None for loaders without one)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "config": config,
        "classes": list(classes),
        "torch_rng": torch.get_rng_state(),
        "data": loader_states[0],
        "data_per_rank": loader_states,
    }


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_checkpoint(path: str) -> Path:
    """`--resume` accepts a checkpoint file or the run folder that holds one."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise FastresError(f"--resume {path}: no checkpoint file at {p}")
    return p


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise FastresError(f"--resume {path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    for key in ("model", "optimizer", "epoch", "step", "config"):
        if key not in state:
            raise FastresError(f"--resume {path}: not a fastres checkpoint (no {key!r} entry)")
    return state


def restore_run(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader,
    *,
    steps_per_epoch: int,
    rank: int,
    world: int,
) -> tuple[int, int]:
    """Load the checkpoint at `path` into the run; returns (epoch to start at, step count).

    Every rank restores the same model and optimizer; each restores its own loader state when
    the checkpoint was written by as many ranks (otherwise the data order restarts at the
    epoch boundary, said once by rank 0)."""
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0]
        raise FastresError(f"--resume {path}: checkpoint does not fit this model/optimizer ({first})") from None
    if state["step"] != state["epoch"] * steps_per_epoch:
        raise FastresError(
            f"--resume {path}: checkpoint has {state['step']} steps over {state['epoch']} epochs, but this config "
            f"makes {steps_per_epoch} steps per epoch (batch size or dataset changed)"
        )
    torch.set_rng_state(state["torch_rng"])
    per_rank = state.get("data_per_rank") or [state.get("data")]
    if per_rank[0] is not None and hasattr(train_loader, "load_state_dict"):
        if len(per_rank) == world:
            train_loader.load_state_dict(per_rank[rank])
        elif rank == 0:
            print(
                f"fastres: --resume {path}: saved by {len(per_rank)} ranks, resumed by {world}: "
                "the data order restarts at the epoch boundary",
                flush=True,
            )
    return state["epoch"], state["step"]
