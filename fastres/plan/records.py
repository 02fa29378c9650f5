"""Published ResNet-50 record runs, described by their hardware as published, for checking the model.

`python -m fastres.plan --validate` predicts each with the same model constants (fastres.plan.cost)
and prints the table README.md shows. Nothing here is fitted: every figure is the paper's or the
hardware's data sheet's, cited per field; where a paper leaves a figure out, the assumption is said.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastres.plan.cost import Cluster, Estimate, Job, estimate
from fastres.plan.gpus import GPUS

__all__ = ["RECORDS", "Record", "predict"]


@dataclass(frozen=True)
class Record:
    name: str
    source: str
    gpu: str
    gpus: int
    gpus_per_node: int
    inter_gbps: float  # per node, one direction
    global_batch: int
    epochs: float
    precision: str
    wire_dtype: str
    allreduce: str
    overlap: bool
    published_s: float
    published: str  # as the source states it
    hardware: str  # what the figures above come from
    inter_alpha_s: float = 10e-6


RECORDS = [
    Record(
        name="Goyal et al. 2017 (Facebook)",
        source="arXiv:1706.02677, abstract and section 5 (8k batch: ~1 hour on 256 GPUs)",
        gpu="p100",  # Big Basin servers: 8 NVLink P100 (section 4)
        gpus=256,
        gpus_per_node=8,
        inter_gbps=50,  # section 4: 50 Gbit/s Ethernet (Mellanox ConnectX-4) per server
        global_batch=8192,
        epochs=90,
        precision="fp32",  # Caffe2, fp32 training
        wire_dtype="fp32",
        allreduce="hierarchical",  # section 4: sum in the server, recursive halving/doubling across, broadcast
        overlap=True,  # section 4: each layer's gradients are reduced while backprop goes on
        published_s=3600,
        published="about 1 h",
        hardware="P100 SXM2 data sheet; 50 GbE per server",
    ),
    Record(
        name="Akiba et al. 2017 (Preferred Networks)",
        source="arXiv:1711.04325, abstract and section 3 (90 epochs, 32k batch, 1,024 P100: 15 min)",
        gpu="p100-pcie",  # MN-1: 128 nodes x 8 P100; the PCIe model is assumed (the paper gives no NVLink)
        gpus=1024,
        gpus_per_node=8,
        inter_gbps=56,  # InfiniBand FDR 4x, one port per node assumed
        global_batch=32768,
        epochs=90,
        precision="fp32",
        wire_dtype="fp16",  # section 2: half-precision gradients for the all-reduce
        allreduce="ring",  # NCCL over all GPUs (ChainerMN)
        overlap=False,  # ChainerMN (2017) reduces the packed gradients after backward
        published_s=15 * 60,
        published="15 min",
        hardware="P100 PCIe data sheet; InfiniBand FDR 56 Gbit/s per node",
    ),
    Record(
        name="Mikami et al. 2018 (Sony)",
        source="arXiv:1811.05233, abstract and section 4 (2,176 V100 on ABCI, 68K batch: 224 s)",
        gpu="v100",  # ABCI compute node: 4 V100 SXM2
        gpus=2176,
        gpus_per_node=4,
        inter_gbps=200,  # ABCI node: 2 InfiniBand EDR ports (100 Gbit/s each)
        global_batch=69632,  # "68K": 32 per GPU (the paper grows the batch from 34K; the largest is used here)
        epochs=90,
        precision="mixed",
        wire_dtype="fp16",
        allreduce="hierarchical",  # the 2D-torus all-reduce: reduce-scatter, all-reduce, all-gather
        overlap=True,
        published_s=224,
        published="224 s",
        hardware="V100 SXM2 data sheet; 2 x InfiniBand EDR per node",
    ),
    Record(
        name="MLPerf Training v3.0, NVIDIA (largest H100 ResNet-50)",
        source="MLCommons MLPerf Training v3.0 results (June 2023), closed division, NVIDIA, "
        "448 DGX H100 nodes (3,584 H100): ResNet-50 in 0.183 min",
        gpu="h100",
        gpus=3584,
        gpus_per_node=8,
        inter_gbps=8 * 400,  # DGX H100: 8 ConnectX-7 InfiniBand NDR 400 Gbit/s ports
        global_batch=57344,  # 16 per GPU (assumed from the submission's scale; not re-checked here)
        epochs=40,  # MLPerf stops at the first evaluation >= 75.9% top-1: ~35-45 epochs with LARS at this batch
        precision="mixed",
        wire_dtype="fp16",
        allreduce="tree",  # NCCL with in-network reduction (SHARP) across nodes
        overlap=True,
        published_s=0.183 * 60,
        published="0.183 min (~11 s)",
        hardware="H100 SXM5 data sheet; 8 x NDR 400 Gbit/s per node",
    ),
]


def predict(r: Record) -> Estimate:
    gpu = GPUS[r.gpu]
    cluster = Cluster(
        gpu=gpu,
        gpus=r.gpus,
        gpus_per_node=r.gpus_per_node,
        intra_gbps=gpu.intra_node_gbs * 8,
        inter_gbps=r.inter_gbps,
        inter_alpha_s=r.inter_alpha_s,
    )
    job = Job(
        global_batch=r.global_batch,
        epochs=r.epochs,
        precision=r.precision,
        wire_dtype=r.wire_dtype,
        allreduce=r.allreduce,
        overlap=r.overlap,
    )
    return estimate(cluster, job)
