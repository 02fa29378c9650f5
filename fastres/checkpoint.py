"""Checkpoints that survive a process dying mid-write.

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

from fastres import FastresError

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoint", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"


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
