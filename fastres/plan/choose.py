"""The planner's advice: the all-reduce, wire dtype and bucket size with the shortest step.

Every combination of fastres.plan.allreduce.ALGORITHMS, fp32/bf16 on the wire and BUCKETS_MB is
costed; a 16-bit wire is advised only where it shortens the step by more than WIRE_GAIN (it
rounds every gradient), and bf16 over fp16 (same bytes, fp32's range: no overflow). fastres's
reducer runs "flat" (NCCL then picks ring or tree) and "hierarchical"; ring, tree and 2d-torus
are advised as what NCCL_ALGO or another framework would give.
"""

from __future__ import annotations

from dataclasses import replace

from fastres.plan.allreduce import ALGORITHMS
from fastres.plan.cost import Cluster, Estimate, Job, estimate

__all__ = ["BUCKETS_MB", "WIRE_GAIN", "recommend"]

BUCKETS_MB = (5.0, 10.0, 25.0, 50.0, 100.0)
WIRE_GAIN = 0.02


def _best(cluster: Cluster, job: Job, wire: str) -> tuple[Job, Estimate]:
    options = [replace(job, allreduce=a, wire_dtype=wire, bucket_mb=b) for a in ALGORITHMS for b in BUCKETS_MB]
    costed = [(o, estimate(cluster, o)) for o in options]
    return min(costed, key=lambda oe: oe[1].step_time_s)


def recommend(cluster: Cluster, job: Job) -> tuple[Job, Estimate]:
    """The advised job (algorithm, wire dtype, bucket size changed) and its estimate."""
    fp32 = _best(cluster, job, "fp32")
    bf16 = _best(cluster, job, "bf16")
    if bf16[1].step_time_s < fp32[1].step_time_s * (1 - WIRE_GAIN):
        return bf16
    return fp32
