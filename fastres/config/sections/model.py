"""The model section: the network and its batch normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastres.config.key import Need, Range, Section, key
from fastres.model import ARCHS

__all__ = ["BN_EVAL", "ModelConfig"]

BN_EVAL = ("running", "batch")


@dataclass
class ModelConfig(Section):
    title: ClassVar[str] = "model"

    arch: str = key("resnet50", "ResNet depth (v1.5: the stride in the 3x3 convolution)", choices=tuple(ARCHS))
    zero_init_last_gamma: bool = key(
        True,
        "start the last BN gamma of each residual block at 0 (Goyal et al. 2017, "
        "sec. 5.1); --no-zero-init-last-gamma starts it at 1",
    )
    bn_eval: str = key(
        "running",
        "BN statistics for validation: running (the moving averages) or batch (no moving "
        "averages: statistics of training batches, averaged over the processes, recomputed before each "
        "validation; Akiba et al. 2017)",
        choices=BN_EVAL,
    )
    bn_group: int = key(
        1,
        "processes whose BN statistics are computed together (SyncBN over groups of this many "
        "consecutive ranks; 1: each process alone), for small per-process batches",
        Range("[", 1, 1 << 16, "]"),
    )
    bn_virtual_batch: int | None = key(
        None,
        "ghost BN: training statistics over groups of this many images inside "
        "each process's batch (Goyal et al. 2017: 32 per worker whatever a process "
        "holds; the last group may be smaller); none: the whole batch",
        Range("[", 1, 1 << 20, "]"),
    )

    def rules(self, need: Need) -> None:
        if self.bn_virtual_batch is not None:
            need(self.bn_group == 1, "bn_virtual_batch", "none with --bn-group above 1 (one or the other)")
