"""The cost model: one data-parallel ResNet-50 training step on a cluster, from public hardware figures.

    est = estimate(Cluster(lookup_gpu("v100"), gpus=256, gpus_per_node=8, intra_gbps=1200, inter_gbps=100),
                   Job(global_batch=8192, epochs=90))
    est.time_to_train_s, est.step_time_s, est.scaling_efficiency

Step = forward + backward (+ the all-reduce not hidden by backward) + optimizer step:

  compute   per image: max(FLOPs / (peak x COMPUTE_EFFICIENCY), bytes / (HBM x MEMORY_EFFICIENCY)) (a
            roofline), at a per-GPU batch b running at b / (b + BATCH_HALF) of the large-batch rate,
            and never under KERNELS_PER_STEP x LAUNCH_S (a small batch is launch-bound). FLOPs: 3 x 2 x
            4.09 G multiply-adds at 224 px (backward = 2 x forward). Bytes: every layer's input and
            output, read and written once forward and twice backward (64.3 M elements forward,
            counted on fastres.model.resnet50), 2 bytes each in mixed precision, 4 in fp32.
  all-reduce  the alpha-beta model (Hockney; Thakur, Rabenseifner & Gropp 2005) of S bytes over
            N = K nodes x L GPUs, bandwidths per direction, alpha per message step:
              ring          one ring over all GPUs in block order: each node's link carries one ring
                            edge: 2(N-1) alpha_inter + 2(N-1)/N S / B_inter (or / B_intra if slower)
              tree          NCCL's double binary tree over nodes, chains inside them:
                            2 log2(K) alpha_inter + 2 (L-1) alpha_intra + 2 S / B_inter (pipelined)
              hierarchical  reduce-scatter in the node, L rings of S/L across nodes sharing the link,
                            all-gather in the node (fastres's, Horovod's, Mikami et al.'s 2D torus):
                            2 (L-1)/L S / B_intra + 2 (L-1) alpha_intra + 2(K-1)/K S / B_inter + 2(K-1) alpha_inter
            per bucket (latency terms once per bucket, bytes once in total).
  overlap   buckets leave during backward: the step ends when backward is done and the last bucket
            has been reduced, or when all buckets have been reduced after the first is ready,
            whichever is later (no overlap: backward, then every bucket).
  data      a node's loader at R images/s caps the step at L b / R (where R is given).

Model constants are fixed here for every GPU and run, set from single-GPU public benchmarks
(TensorFlow's tf_cnn_benchmarks P100 fp32 ResNet-50 at ~219 img/s; NVIDIA's DeepLearningExamples
and MLPerf per-GPU rates for V100/A100/H100), never fitted to the multi-node records the README
checks the model against.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fastres.plan.gpus import GpuSpec

__all__ = [
    "ALGORITHMS",
    "IMAGENET_TRAIN_IMAGES",
    "RESNET50_PARAMS",
    "WIRE_BYTES",
    "Cluster",
    "Estimate",
    "Job",
    "allreduce_seconds",
    "estimate",
    "gpu_images_per_second",
]

RESNET50_PARAMS = 25_557_032  # fastres.model.resnet50(), torchvision's count too
FLOP_PER_IMAGE = 3 * 2 * 4.09e9  # He et al. 2016 Table 1: 3.8-4.1 G multiply-adds forward at 224 px
ACTIVATION_ACCESSES_PER_IMAGE = 3 * 64.33e6  # layer inputs + outputs forward (counted), x3 for training
COMPUTE_EFFICIENCY = {False: 0.5, True: 0.35}  # of peak, CUDA-core fp32 / tensor cores
MEMORY_EFFICIENCY = 0.7  # of the HBM data-sheet bandwidth
BATCH_HALF = 8  # images per GPU at which a GPU runs ResNet-50 at half its large-batch rate
KERNELS_PER_STEP = 1000  # forward + backward + optimizer kernels of one ResNet-50 step (~161 layers x 6)
LAUNCH_S = 4e-6  # CUDA kernel launch, host side
OPTIMIZER_BYTES_PER_PARAM = 5 * 4  # a momentum step reads w, g, m and writes w, m (fp32)
IMAGENET_TRAIN_IMAGES = 1_281_167
ALGORITHMS = ("ring", "tree", "hierarchical")
WIRE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Cluster:
    gpu: GpuSpec
    gpus: int
    gpus_per_node: int
    intra_gbps: float  # Gbit/s, one GPU to the rest of its node, one direction
    inter_gbps: float  # Gbit/s, one node's network links together, one direction
    intra_alpha_s: float = 5e-6  # per message step inside a node (NVLink/PCIe through NCCL)
    inter_alpha_s: float = 10e-6  # per message step between nodes
    data_images_per_s_per_node: float | None = None  # the node's loader; None: not a limit

    @property
    def nodes(self) -> int:
        return self.gpus // self.gpus_per_node


@dataclass(frozen=True)
class Job:
    global_batch: int
    epochs: float
    precision: str = "mixed"  # "mixed" (fp16/bf16 compute) or "fp32"
    wire_dtype: str = "fp32"
    allreduce: str = "hierarchical"
    bucket_mb: float = 25.0  # of fp32 gradients, as fastres's --bucket-cap-mb
    overlap: bool = True  # buckets sent during backward
    dataset_images: int = IMAGENET_TRAIN_IMAGES


@dataclass(frozen=True)
class Estimate:
    step_time_s: float
    compute_s: float  # forward + backward + optimizer of one step on one GPU, nothing sent
    allreduce_s: float  # every bucket, back to back
    exposed_allreduce_s: float  # the part of the step the all-reduce adds
    epoch_time_s: float
    time_to_train_s: float
    steps_per_epoch: int
    images_per_s: float
    gpu_images_per_s: float  # one GPU at this per-GPU batch, nothing sent
    scaling_efficiency: float  # compute-only step / step
    bound: str  # what sets the step: compute, memory, launch, all-reduce, data

    def as_dict(self) -> dict:
        return asdict(self)


def gpu_images_per_second(gpu: GpuSpec, precision: str, batch_per_gpu: float) -> tuple[float, str]:
    """One GPU's training rate at `batch_per_gpu` images per step, and what bounds it (compute/memory/launch)."""
    tensor = precision == "mixed" and gpu.tensor_cores
    peak = (gpu.mixed_tflops if precision == "mixed" else gpu.fp32_tflops) * 1e12
    t_compute = FLOP_PER_IMAGE / (peak * COMPUTE_EFFICIENCY[tensor])
    elem_bytes = 2 if precision == "mixed" else 4
    t_memory = ACTIVATION_ACCESSES_PER_IMAGE * elem_bytes / (gpu.memory_gbs * 1e9 * MEMORY_EFFICIENCY)
    per_image, bound = (t_compute, "compute") if t_compute >= t_memory else (t_memory, "memory")
    per_image *= (batch_per_gpu + BATCH_HALF) / batch_per_gpu
    if per_image * batch_per_gpu < KERNELS_PER_STEP * LAUNCH_S:
        return batch_per_gpu / (KERNELS_PER_STEP * LAUNCH_S), "launch"
    return 1.0 / per_image, bound


def allreduce_seconds(c: Cluster, nbytes: float, algorithm: str) -> float:
    """One all-reduce of `nbytes` over the cluster's GPUs (see the module docstring)."""
    n, k, l = c.gpus, c.nodes, c.gpus_per_node
    if n == 1:
        return 0.0
    b_intra = c.intra_gbps * 1e9 / 8
    b_inter = c.inter_gbps * 1e9 / 8
    a_in, a_out = c.intra_alpha_s, c.inter_alpha_s
    if k == 1:  # one node: every algorithm is a ring over its GPUs
        return 2 * (n - 1) * a_in + 2 * (n - 1) / n * nbytes / b_intra
    if algorithm == "ring":
        # a ring edge per node link, and L-1 edges per node over NVLink; the slower one sets the pace
        bw = min(b_inter, b_intra)
        return 2 * (n - 1) * a_out + 2 * (n - 1) / n * nbytes / bw
    if algorithm == "tree":
        chain = 2 * (l - 1) * a_in + (2 * nbytes / b_intra if l > 1 else 0.0)
        return 2 * math.log2(k) * a_out + max(2 * nbytes / b_inter, chain)
    if algorithm == "hierarchical":
        intra = 2 * (l - 1) / l * nbytes / b_intra + 2 * (l - 1) * a_in if l > 1 else 0.0
        inter = 2 * (k - 1) / k * nbytes / b_inter + 2 * (k - 1) * a_out
        return intra + inter
    raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")


def estimate(c: Cluster, job: Job) -> Estimate:
    b = job.global_batch / c.gpus
    rate, bound = gpu_images_per_second(c.gpu, job.precision, b)
    t_fb = b / rate
    t_fwd, t_bwd = t_fb / 3, 2 * t_fb / 3
    t_opt = RESNET50_PARAMS * OPTIMIZER_BYTES_PER_PARAM / (c.gpu.memory_gbs * 1e9 * MEMORY_EFFICIENCY)
    compute = t_fb + t_opt

    grad_bytes = RESNET50_PARAMS * WIRE_BYTES[job.wire_dtype]
    n_buckets = max(1, math.ceil(RESNET50_PARAMS * 4 / (job.bucket_mb * 2**20)))
    per_bucket = allreduce_seconds(c, grad_bytes / n_buckets, job.allreduce)
    comm = n_buckets * per_bucket
    if job.overlap and n_buckets > 1:
        # the first bucket is ready 1/n of the way into backward; each takes per_bucket; the last
        # cannot start before backward ends
        end = max(t_bwd + per_bucket, t_bwd / n_buckets + comm)
        step = t_fwd + end + t_opt
    else:
        step = compute + comm
    exposed = step - compute
    if exposed > 0.5 * comm and comm > 0:
        bound = "all-reduce" if comm > t_fb else bound
    if c.data_images_per_s_per_node:
        t_data = b * c.gpus_per_node / c.data_images_per_s_per_node
        if t_data > step:
            step, bound = t_data, "data"
    steps = math.ceil(job.dataset_images / job.global_batch)
    epoch = steps * step
    return Estimate(
        step_time_s=step,
        compute_s=compute,
        allreduce_s=comm,
        exposed_allreduce_s=step - compute,
        epoch_time_s=epoch,
        time_to_train_s=epoch * job.epochs,
        steps_per_epoch=steps,
        images_per_s=job.global_batch / step,
        gpu_images_per_s=rate,
        scaling_efficiency=compute / step,
        bound=bound,
    )
