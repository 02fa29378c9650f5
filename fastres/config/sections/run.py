"""The run section: the run folder, its logs, checkpoints and resume, and when a run gives up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastres.config.key import Range, Section, key

__all__ = ["RunConfig"]


@dataclass
class RunConfig(Section):
    title: ClassVar[str] = "run"

    out: str = key("runs", "parent folder of run folders")
    name: str | None = key(None, "run folder name under --out; none: <arch>-<date>-<time>")
    log_every: int = key(
        20, "steps between progress and metrics records (each one synchronises the device)", Range("[", 1, 10**9, "]")
    )
    progress: bool = key(True, "progress bar on rank 0 (when stderr is a terminal)")
    resume: str | None = key(
        None,
        "continue a run: a checkpoint file, a run folder (its newest checkpoint that "
        "verifies), or auto: continue OUT/NAME (--name) if it has a checkpoint, else start it",
    )
    checkpoint_every: int | None = key(
        None,
        "steps between checkpoints besides the one at each epoch's end; none: epoch ends only",
        Range("[", 1, 10**9, "]"),
    )
    checkpoint_minutes: float | None = key(
        None, "minutes between checkpoints besides epoch ends; none: off", Range("(", 0, 100_000, "]")
    )
    keep_checkpoints: int = key(
        3, "newest checkpoints kept in RUN/checkpoints (older ones are deleted)", Range("[", 1, 1000, "]")
    )
    progress_seconds: float = key(
        30.0,
        "seconds between progress lines when stderr is not a terminal (batch-system logs)",
        Range("(", 0, 86400, "]"),
    )
    max_skipped_steps: int = key(
        10, "steps in a row skipped for NaN/Inf gradients before the run stops", Range("[", 1, 10**9, "]")
    )
    tensorboard: bool = key(False, "also write loss, lr, accuracy and img/s for TensorBoard into RUN/tensorboard")
