"""The cost model: one data-parallel ResNet-50 training step on a cluster, and the run it adds up to.

    est = estimate(Cluster(lookup_device("a100"), devices=256, per_node=8, intra_gbps=2400,
                           inter_gbps=1600, speed=default_speed("a100")), Job(global_batch=8192, epochs=90))
    est.time_to_train_s, est.step_time_s, est.scaling_efficiency

Step = the device's compute at b images per device, plus the part of the all-reduce that
backward does not hide:

  compute   t(b) = b / R + t0 (fastres.plan.speed; R and t0 calibrated per device and compute
            path on declared one-device and one-node runs). Forward is a third of b / R and
            backward two thirds (backward = 2 x forward FLOPs, He et al. 2016); t0 is never
            overlapped with communication.
  all-reduce  fastres.plan.allreduce: ring, tree, flat (NCCL's choice), hierarchical, 2d-torus
            (a TPU pod's torus: ring and 2d-torus), per bucket (latency once per bucket, bytes once
            in total).
  overlap   buckets leave during backward: the step ends when backward is done and the last
            bucket has been reduced, or when all buckets have been reduced after the first is
            ready, whichever is later (no overlap: backward, then every bucket).
  data      a node's loader at D images/s caps the step at L b / D (where D is given).

A run = epochs x ceil(images / global batch) steps, plus each evaluation: a forward pass over
the 50,000 validation images split over the devices (a third of b / R per image) plus t0.
What the model leaves out, and where that shows in the published runs, is in README.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fastres import IMAGENET_TRAIN_IMAGES
from fastres.plan.allreduce import (
    ALGORITHMS,
    NCCL_BASE_S,
    NCCL_NET_STEP_S,
    NCCL_NVLINK_STEP_S,
    NCCL_NVLINK_TREE_STEP_S,
    allreduce_seconds,
)
from fastres.plan.devices import DeviceSpec
from fastres.plan.speed import Speed

__all__ = [
    "ALGORITHMS",
    "IMAGENET_TRAIN_IMAGES",
    "IMAGENET_VAL_IMAGES",
    "RESNET50_PARAMS",
    "WIRE_BYTES",
    "Cluster",
    "Estimate",
    "Job",
    "allreduce_seconds",
    "bucket_seconds",
    "estimate",
    "overlapped_step",
]

RESNET50_PARAMS = 25_557_032  # fastres.model.resnet50(), torchvision's count too
IMAGENET_VAL_IMAGES = 50_000
WIRE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Cluster:
    device: DeviceSpec
    devices: int
    per_node: int
    intra_gbps: float  # Gbit/s, one device to the rest of its node, one direction
    inter_gbps: float  # Gbit/s, one node's network links together, one direction
    speed: Speed  # the device's calibrated training speed (fastres.plan.calibrate)
    intra_alpha_s: float = NCCL_NVLINK_STEP_S  # per ring step inside a node
    inter_alpha_s: float = NCCL_NET_STEP_S  # per step between nodes
    intra_tree_alpha_s: float = NCCL_NVLINK_TREE_STEP_S  # per tree step inside a node
    base_s: float = NCCL_BASE_S  # per collective
    backend: str = "nccl"  # "nccl" (GPU), "gloo" (CPU: rings only), "mpi" (rings only)
    data_images_per_s_per_node: float | None = None  # the node's loader; None: not a limit
    torus_links: int = 0  # links per device on a 2-D torus (TPU: 4; intra_gbps is one link); 0: switched

    @property
    def nodes(self) -> int:
        return self.devices // self.per_node


@dataclass(frozen=True)
class Job:
    global_batch: int
    epochs: float
    precision: str = "mixed"  # "mixed" (fp16/bf16 compute) or "fp32"
    wire_dtype: str = "fp32"
    allreduce: str = "hierarchical"
    bucket_mb: float = 25.0  # of fp32 gradients, as fastres's --bucket-cap-mb
    overlap: bool = True  # buckets sent during backward
    evals: float = 0  # evaluations over the run (MLPerf: every 4 epochs)
    dataset_images: int = IMAGENET_TRAIN_IMAGES
    eval_images: int = IMAGENET_VAL_IMAGES


@dataclass(frozen=True)
class Estimate:
    step_time_s: float
    compute_s: float  # one step on one device, nothing sent: b / R + t0
    allreduce_s: float  # every bucket, back to back
    exposed_allreduce_s: float  # the part of the step the all-reduce adds
    epoch_time_s: float
    eval_s: float  # one evaluation
    time_to_train_s: float
    steps_per_epoch: int
    images_per_s: float
    device_images_per_s: float  # one device at this per-device batch, nothing sent
    scaling_efficiency: float  # compute-only step / step
    bound: str  # what sets the step: compute, per-step overhead, all-reduce, data

    def as_dict(self) -> dict:
        return asdict(self)


def bucket_seconds(c: Cluster, job: Job) -> tuple[int, float]:
    """(buckets of ResNet-50's gradients, seconds to all-reduce one)."""
    grad_bytes = RESNET50_PARAMS * WIRE_BYTES[job.wire_dtype]
    n_buckets = max(1, math.ceil(RESNET50_PARAMS * 4 / (job.bucket_mb * 2**20)))
    return n_buckets, allreduce_seconds(c, grad_bytes / n_buckets, job.allreduce)


def overlapped_step(t_fwd: float, t_bwd: float, t_fixed: float, per_bucket: float, n_buckets: int, overlap: bool):
    """A step's seconds: forward, backward with the buckets leaving during it (or after), fixed work."""
    comm = n_buckets * per_bucket
    if overlap and n_buckets > 1:
        # the first bucket is ready 1/n of the way into backward; each takes per_bucket; the last
        # cannot start before backward ends
        return t_fixed + t_fwd + max(t_bwd + per_bucket, t_bwd / n_buckets + comm)
    return t_fixed + t_fwd + t_bwd + comm


def estimate(c: Cluster, job: Job) -> Estimate:
    b = job.global_batch / c.devices
    s = c.speed
    t_work = b / s.rate
    t_fwd, t_bwd = t_work / 3, 2 * t_work / 3
    compute = t_work + s.t0
    bound = "compute" if t_work >= s.t0 else "per-step overhead"

    n_buckets, per_bucket = bucket_seconds(c, job)
    comm = n_buckets * per_bucket
    step = overlapped_step(t_fwd, t_bwd, s.t0, per_bucket, n_buckets, job.overlap)
    if comm > 0 and step - compute > 0.5 * comm and comm > t_work:
        bound = "all-reduce"
    if c.data_images_per_s_per_node:
        t_data = b * c.per_node / c.data_images_per_s_per_node
        if t_data > step:
            step, bound = t_data, "data"
    steps = math.ceil(job.dataset_images / job.global_batch)
    epoch = steps * step
    eval_s = job.eval_images / c.devices / (3 * s.rate) + s.t0
    return Estimate(
        step_time_s=step,
        compute_s=compute,
        allreduce_s=comm,
        exposed_allreduce_s=step - compute,
        epoch_time_s=epoch,
        eval_s=eval_s,
        time_to_train_s=epoch * job.epochs + eval_s * job.evals,
        steps_per_epoch=steps,
        images_per_s=job.global_batch / step,
        device_images_per_s=b / compute,
        scaling_efficiency=compute / step,
        bound=bound,
    )
