"""The distributed section: the gradient all-reduce and how long processes wait for each other.

Start one process per GPU or CPU share with torchrun, srun or mpirun (fastres.distributed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastres.config.key import Range, Section, key
from fastres.distributed.reducer import ALGORITHMS, WIRE_DTYPES

__all__ = ["DistributedConfig"]


@dataclass
class DistributedConfig(Section):
    title: ClassVar[str] = "distributed"

    virtual_nodes: int | None = key(
        None,
        "split each machine's processes into this many nodes, to run the "
        "hierarchical all-reduce on one machine; none: $FASTRES_VIRTUAL_NODES or 1",
        Range("[", 1, 1024, "]"),
    )
    allreduce: str = key(
        "auto",
        "gradient all-reduce: flat (one all_reduce per bucket), hierarchical (reduce-scatter "
        "in the node, all_reduce across nodes, all-gather in the node), auto (hierarchical when there "
        "are several nodes of several processes)",
        choices=ALGORITHMS,
    )
    bucket_cap_mb: float = key(
        25.0, "MiB of fp32 gradients per all-reduce bucket (the first bucket: 1 MiB)", Range("(", 0, 4096, "]")
    )
    wire_dtype: str = key(
        "fp32",
        "gradients on the wire: fp32, bf16 or fp16 (half the bytes; scaled and cast in one pass)",
        choices=tuple(WIRE_DTYPES),
    )
    dist_timeout: float = key(
        1800.0,
        "seconds the rendezvous and the run's setup (rank 0 checking the dataset, "
        "writing the run folder) wait for the other processes before the run stops",
        Range("(", 0, 7 * 86400, "]"),
    )
    collective_timeout: float = key(
        300.0,
        "seconds a collective of the running job (a step's gradient all-reduce, a "
        "checkpoint's gather) waits for the other processes before every rank leaves with "
        "one line and exit status 75, which an elastic launcher restarts on: how long a "
        "dead host or a cut link goes unnoticed at most",
        Range("(", 0, 7 * 86400, "]"),
    )
