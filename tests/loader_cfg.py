"""A real TrainConfig with a loader test's small sizes: the loaders read it as training does."""

from __future__ import annotations

import dataclasses

from fastres.config.keys import TrainConfig


def loader_cfg(**kw) -> TrainConfig:
    """TrainConfig's defaults, with `kw` set (each must be a key of the config)."""
    return dataclasses.replace(TrainConfig(), **kw)
