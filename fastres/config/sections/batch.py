"""The batch section: how long training runs and how many images make a step."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import ClassVar

from fastres.config.key import ConfigError, Range, Section, key

__all__ = ["BatchConfig"]


@dataclass
class BatchConfig(Section):
    title: ClassVar[str] = "optimisation"

    epochs: int = key(90, "passes over the training set", Range("[", 1, 100_000, "]"))
    batch_size: int = key(
        256,
        "images per process per step; the global batch is this times the number of processes times --accumulate",
        Range("[", 1, 1 << 20, "]"),
    )
    global_batch: int | None = key(
        None,
        "images per optimizer step over all processes; sets --batch-size to this / "
        "(processes x --accumulate), an error if that does not divide; none: --batch-size "
        "decides",
        Range("[", 1, 1 << 24, "]"),
    )
    accumulate: int = key(
        1,
        "forward/backward passes whose gradients are summed before each optimizer step (a small "
        "machine runs a large global batch)",
        Range("[", 1, 1024, "]"),
    )
    val_batch_size: int | None = key(
        None, "images per process per validation step; none: --batch-size", Range("[", 1, 1 << 20, "]")
    )

    def resolve_batch(self, world: int) -> typing.Self:
        """With `global_batch` set: batch_size = global_batch / (world x accumulate), or a
        ConfigError naming both flags when that does not divide."""
        if self.global_batch is None:
            return self
        share = world * self.accumulate
        if self.global_batch % share:
            raise ConfigError(
                f"--global-batch {self.global_batch} is not divisible by {world} processes x --accumulate "
                f"{self.accumulate} = {share}"
            )
        self.batch_size = self.global_batch // share
        return self
