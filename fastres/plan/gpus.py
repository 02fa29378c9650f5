"""GPUs the planner knows: public specification-sheet figures, nothing fitted.

Each entry: peak dense FLOP/s for the precisions ResNet-50 trains in, memory bandwidth, and
the NVLink (or PCIe) bandwidth one GPU has to the others in its node, one direction. Sources
are the vendor's data sheets, cited per entry; "dense" means without 2:4 sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GPUS", "GpuSpec", "gpu_names", "lookup_gpu"]


@dataclass(frozen=True)
class GpuSpec:
    name: str
    full_name: str
    fp32_tflops: float  # plain FP32 (CUDA cores)
    mixed_tflops: float  # fp16/bf16 inputs, fp32 accumulation: tensor cores where there are any
    memory_gbs: float  # HBM, GB/s
    intra_node_gbs: float  # one GPU to its node's others, one direction, GB/s (NVLink or PCIe)
    tensor_cores: bool
    source: str


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        # NVIDIA Tesla P100 data sheet (2016), SXM2 (NVLink) module: 10.6 TF fp32, 21.2 TF fp16,
        # 732 GB/s HBM2, 4 NVLink 1.0 links x 20 GB/s per direction.
        GpuSpec("p100", "Tesla P100 SXM2 16 GB", 10.6, 21.2, 732, 80, False, "NVIDIA Tesla P100 data sheet"),
        # Same data sheet, PCIe card: 9.3 TF fp32, 18.7 TF fp16, 732 GB/s; PCIe 3.0 x16, 16 GB/s per direction.
        GpuSpec("p100-pcie", "Tesla P100 PCIe 16 GB", 9.3, 18.7, 732, 16, False, "NVIDIA Tesla P100 data sheet"),
        # NVIDIA Tesla V100 data sheet (2017), SXM2: 15.7 TF fp32, 125 TF tensor (fp16), 900 GB/s HBM2,
        # NVLink 2.0 300 GB/s total = 6 links x 25 GB/s per direction.
        GpuSpec("v100", "Tesla V100 SXM2", 15.7, 125, 900, 150, True, "NVIDIA Tesla V100 data sheet"),
        # NVIDIA A100 data sheet (2020/21), SXM4 80 GB: 19.5 TF fp32, 312 TF bf16/fp16 tensor (dense),
        # 2,039 GB/s HBM2e, NVLink 3 600 GB/s total = 12 links x 25 GB/s per direction.
        GpuSpec("a100", "A100 SXM4 80 GB", 19.5, 312, 2039, 300, True, "NVIDIA A100 data sheet"),
        # NVIDIA H100 data sheet (2022/23), SXM5: 67 TF fp32, 989 TF bf16/fp16 tensor (dense; 1,979 sparse),
        # 3.35 TB/s HBM3, NVLink 4 900 GB/s total = 18 links x 25 GB/s per direction.
        GpuSpec("h100", "H100 SXM5 80 GB", 67, 989, 3350, 450, True, "NVIDIA H100 data sheet"),
        # NVIDIA H200 data sheet (2024), SXM: the H100's compute (989 TF bf16 dense), 4.8 TB/s HBM3e, NVLink 900 GB/s.
        GpuSpec("h200", "H200 SXM 141 GB", 67, 989, 4800, 450, True, "NVIDIA H200 data sheet"),
    )
}


def gpu_names() -> list[str]:
    return list(GPUS)


def lookup_gpu(name: str) -> GpuSpec:
    key = name.strip().lower()
    if key not in GPUS:
        raise KeyError(name)
    return GPUS[key]
