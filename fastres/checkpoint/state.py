"""What a checkpoint holds, and how a run is restored from it.

    snapshot = run_state(model, optimizer, step=, steps_per_epoch=, config=, classes=, loader_states=)
    step = restore_run(state, model, optimizer, train_loader, rank=, world=, steps_per_epoch=, where=)

A checkpoint is the run after optimizer step `step`: the model (BN statistics included), the
optimizer (momentum), the step and the steps per epoch (so the epoch and the position in it),
the resolved config, the class names, every random generator's state (torch CPU and CUDA,
numpy, Python), and every rank's training-loader state (DALI's reader and random state at
the start of the current epoch; the PIL loader's order follows from the seed and the epoch).
Everything is tensors and plain values, so it loads with `torch.load(weights_only=True)`.

`run_state` copies every tensor to host memory: the snapshot no longer changes when training
goes on, so a background thread may write it while the next steps run.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from fastres import FastresError

__all__ = ["host_copy", "restore_rng", "restore_run", "rng_state", "run_state", "saved_world_size"]


def host_copy(obj: Any) -> Any:
    """`obj` with every tensor copied to host memory (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj


def rng_state() -> dict[str, Any]:
    """Every generator's state, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))  # fmt: skip
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    steps_per_epoch: int,
    config: dict[str, Any],
    classes: tuple[str, ...],
    loader_states: list,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A host-memory snapshot of everything needed to continue the run after `step`.

    loader_states: each rank's training-loader state, by rank (None for loaders without one).
    extra: plain values the trainer keeps (counters, the best accuracy, ...)."""
    return host_copy({
        "format": "fastres-run",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "steps_per_epoch": steps_per_epoch,
        "epoch": step // steps_per_epoch,  # epochs completed
        "config": config,
        "classes": list(classes),
        "rng": rng_state(),
        "data_per_rank": loader_states,
        "extra": extra or {},
    })  # fmt: skip


def saved_world_size(state: dict[str, Any]) -> int:
    """The number of processes that wrote `state`: `extra["world"]`, or where it has none, its loader states."""
    world = (state.get("extra") or {}).get("world")
    return int(world) if world else len(state.get("data_per_rank") or [None])


def restore_run(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader,
    *,
    steps_per_epoch: int,
    rank: int,
    world: int,
    where: str,
) -> int:
    """Load a checkpoint's state into the run; returns the step to continue after.

    Every rank restores the same model and optimizer; each restores its own loader state when
    the checkpoint was written by as many ranks (a loader whose order is its readers', DALI's,
    cannot continue another process count's epoch: the caller decides what to do, see
    fastres.run.parts). `where` names the checkpoint in errors."""
    if state.get("steps_per_epoch") != steps_per_epoch:
        raise FastresError(
            f"{where}: the checkpoint was taken at {state.get('steps_per_epoch')} steps per epoch, this run makes "
            f"{steps_per_epoch} (a changed global batch or dataset)"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FastresError(f"{where}: the checkpoint does not fit this model/optimizer ({first})") from None
    restore_rng(state["rng"])
    per_rank = state.get("data_per_rank") or [None]
    if per_rank[0] is not None and hasattr(train_loader, "load_state_dict") and len(per_rank) == world:
        train_loader.load_state_dict(per_rank[rank])
    return int(state["step"])
