"""A run to cost, planned or published: the one place where its inputs become the model's Cluster and Job.

    cluster, job = build(Scenario(lookup_device("h100"), devices=64, per_node=8, global_batch=8192,
                                  speed=default_speed("h100", "mixed"), inter_gbps=3200))

`python -m fastres.plan` (fastres.plan.cli) and `--validate` (fastres.plan.validate, through
fastres.plan.calibrate.scenario_for) both build here, so the same inputs give the same prediction.
What neither states is set once, below, by the device's kind:

  latencies  NCCL's per-step latencies by the link a step crosses (fastres.plan.allreduce): NVLink
             3.4 us (ring) and 4.0 us (tree) in a node, PCIe 5.7 us (ring) where the node's GPUs
             talk over PCIe (intra-node bandwidth <= 32 GB/s: P100 PCIe, P40), 14 us over the
             network; a TPU's ICI hop is taken as an NVLink step (assumed: no published figure read)
  network    DEFAULT_INTER_GBPS between nodes; a TPU's torus links come from its data sheet
  buckets    DEFAULT_BUCKET_MB, fastres's --bucket-cap-mb
  backend    NCCL on GPUs and TPUs (NCCL's rule for flat), Gloo on CPUs (fastres's CPU backend);
             "mpi" (the published CPU runs' Intel MLSL) when asked
"""

from __future__ import annotations

from dataclasses import dataclass

from fastres.plan.allreduce import NCCL_NET_STEP_S, NCCL_NVLINK_STEP_S, NCCL_NVLINK_TREE_STEP_S, NCCL_PCIE_STEP_S
from fastres.plan.cost import Cluster, Job
from fastres.plan.devices import DeviceSpec
from fastres.plan.speed import Speed

__all__ = ["BACKENDS", "DEFAULT_BUCKET_MB", "DEFAULT_INTER_GBPS", "Scenario", "build", "default_backend", "latencies"]

DEFAULT_INTER_GBPS = 100.0  # one node's network links together, one direction, when none is given
DEFAULT_BUCKET_MB = 25.0  # fastres's --bucket-cap-mb
BACKENDS = ("nccl", "gloo", "mpi")
PCIE_NODE_GBS = 32  # a node whose devices reach each other at this or less (GB/s) talks over PCIe


@dataclass(frozen=True)
class Scenario:
    """Everything one prediction takes; None: the default of the device's kind (above)."""

    device: DeviceSpec
    devices: int
    per_node: int
    global_batch: int
    speed: Speed
    epochs: float = 90
    evals: float = 0
    precision: str = "mixed"
    allreduce: str = "hierarchical"
    wire_dtype: str = "fp32"
    bucket_mb: float | None = None
    overlap: bool = True
    inter_gbps: float | None = None  # Gbit/s, one node's network links together, one direction
    intra_gbps: float | None = None  # Gbit/s, one device to its node (a torus: one link); None: the data sheet
    intra_alpha_s: float | None = None  # per step inside a node (ring and tree)
    inter_alpha_s: float | None = None  # per step between nodes
    backend: str | None = None
    data_images_per_s: float | None = None  # one node's loader


def latencies(device: DeviceSpec) -> tuple[float, float, float]:
    """(ring step inside a node, tree step inside a node, step between nodes), seconds, by the device's links."""
    if device.torus_links:
        return NCCL_NVLINK_STEP_S, NCCL_NVLINK_TREE_STEP_S, NCCL_NVLINK_STEP_S
    pcie = device.kind == "gpu" and device.intra_node_gbs <= PCIE_NODE_GBS
    return (NCCL_PCIE_STEP_S if pcie else NCCL_NVLINK_STEP_S), NCCL_NVLINK_TREE_STEP_S, NCCL_NET_STEP_S


def default_backend(device: DeviceSpec) -> str:
    return "gloo" if device.is_cpu else "nccl"


def build(sc: Scenario) -> tuple[Cluster, Job]:
    ring, tree, net = latencies(sc.device)
    if sc.intra_alpha_s is not None:
        ring = tree = sc.intra_alpha_s
    cluster = Cluster(
        device=sc.device,
        devices=sc.devices,
        per_node=sc.per_node,
        intra_gbps=sc.intra_gbps if sc.intra_gbps is not None else sc.device.intra_node_gbs * 8,
        inter_gbps=sc.inter_gbps if sc.inter_gbps is not None else DEFAULT_INTER_GBPS,
        speed=sc.speed,
        intra_alpha_s=ring,
        intra_tree_alpha_s=tree,
        inter_alpha_s=sc.inter_alpha_s if sc.inter_alpha_s is not None else net,
        backend=sc.backend or default_backend(sc.device),
        data_images_per_s_per_node=sc.data_images_per_s,
        torus_links=sc.device.torus_links,
    )
    job = Job(
        global_batch=sc.global_batch,
        epochs=sc.epochs,
        precision=sc.precision,
        wire_dtype=sc.wire_dtype,
        allreduce=sc.allreduce,
        bucket_mb=sc.bucket_mb if sc.bucket_mb is not None else DEFAULT_BUCKET_MB,
        overlap=sc.overlap,
        evals=sc.evals,
    )
    return cluster, job
