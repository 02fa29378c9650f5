"""The planner's advice: the all-reduce, wire dtype and bucket size with the shortest step.

Every combination of the all-reduces the cluster can run (fastres.plan.allreduce.algorithms_for;
a TPU pod's torus: ring and 2d-torus), fp32/bf16 on the wire and BUCKETS_MB is costed; a 16-bit
wire is advised only where it shortens the step by more than WIRE_GAIN (it rounds every
gradient), and bf16 over fp16 (same bytes, fp32's range: no overflow). fastres's reducer runs
"flat" (NCCL then picks ring or tree) and "hierarchical"; ring, tree and 2d-torus are advised as
what NCCL_ALGO or another framework would give.
"""

from __future__ import annotations

from dataclasses import replace

from fastres.plan.allreduce import algorithms_for
from fastres.plan.cost import Cluster, Estimate, Job, estimate

__all__ = ["BUCKETS_MB", "WIRE_GAIN", "advise", "recommend"]

BUCKETS_MB = (5.0, 10.0, 25.0, 50.0, 100.0)
WIRE_GAIN = 0.02


def _best(cluster: Cluster, job: Job, wire: str, algorithms, buckets) -> tuple[Job, Estimate]:
    options = [replace(job, allreduce=a, wire_dtype=wire, bucket_mb=b) for a in algorithms for b in buckets]
    costed = [(o, estimate(cluster, o)) for o in options]
    return min(costed, key=lambda oe: oe[1].step_time_s)


def advise(cluster: Cluster, job: Job, algorithm: bool = True, wire: bool = True, bucket: bool = True):
    """The job with the fastest all-reduce, wire dtype and bucket size, each searched only where asked
    (otherwise the job's own), and its estimate."""
    algorithms = algorithms_for(cluster) if algorithm else (job.allreduce,)
    buckets = BUCKETS_MB if bucket else (job.bucket_mb,)
    fp32 = _best(cluster, job, "fp32" if wire else job.wire_dtype, algorithms, buckets)
    if not wire:
        return fp32
    bf16 = _best(cluster, job, "bf16", algorithms, buckets)
    if bf16[1].step_time_s < fp32[1].step_time_s * (1 - WIRE_GAIN):
        return bf16
    return fp32


def recommend(cluster: Cluster, job: Job) -> tuple[Job, Estimate]:
    """The advised job (algorithm, wire dtype, bucket size changed) and its estimate."""
    return advise(cluster, job)
