"""Devices the planner knows: data-sheet figures, nothing fitted.

A device is what one training process drives: a GPU, a TPU chip, or a CPU socket. Each entry
gives the peak FLOP/s of the two compute paths ResNet-50 trains on ("fp32": CUDA cores or CPU
vector units; "mixed": fp16/bf16 on tensor cores or a TPU's matrix units), the memory
bandwidth and capacity, the bandwidth to the other devices of its node (one direction; on a
TPU's 2-D torus: one ICI link), the devices a node usually holds, and the source. "dense" =
without 2:4 sparsity. Where a figure was not read from the cited sheet in this work it says
"not confirmed".

How fast a device trains ResNet-50 is not here: fastres.plan.speed turns published one-device
and one-node runs (fastres.plan.records, role "calibration") into images/s; the peaks below
only carry a calibrated speed over to a sibling device that has no published run of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEVICES", "DeviceSpec", "device_names", "lookup_device"]


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    full_name: str
    kind: str  # "gpu", "tpu" or "cpu" (one socket)
    fp32_tflops: float  # CUDA cores / CPU vector units (CPU: cores x base GHz x 64 FLOP per cycle)
    mixed_tflops: float  # fp16/bf16 with fp32 accumulation: tensor cores, TPU MXU; = fp32 where there are none
    memory_gbs: float  # HBM / GDDR / DRAM, GB/s
    intra_node_gbs: float  # to the node's other devices, one direction, GB/s (NVLink, PCIe, UPI)
    tensor_cores: bool  # a fast mixed-precision path exists
    per_node: int  # devices in the usual node (DGX: 8; a two-socket server: 2)
    source: str
    cores: int = 0  # CPU cores per socket (0: not a CPU)
    memory_gb: float = 0.0  # HBM / GDDR / DRAM capacity per device, GB (0: not known; no batch limit checked)
    torus_links: int = 0  # links per chip on a 2-D torus (TPU ICI: 4, two per dimension); 0: a switched network

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"


def _gpu(name, full, fp32, mixed, mem, intra, tensor, per_node, source, memory_gb):
    return DeviceSpec(name, full, "gpu", fp32, mixed, mem, intra, tensor, per_node, source, memory_gb=memory_gb)


# A CPU socket's DRAM, assumed: Stampede2's nodes hold 192 GB per two-socket Skylake node and 96 GB
# (+ 16 GB MCDRAM) per KNL (TACC Stampede2 user guide; not re-read here).
CPU_SOCKET_GB = 96.0


def _cpu(name, full, cores, ghz, mem, intra, per_node, source):
    peak = cores * ghz * 64 / 1000  # two AVX-512 FMA units: 2 x 16 fp32 lanes x 2 FLOP per cycle
    return DeviceSpec(name, full, "cpu", peak, peak, mem, intra, False, per_node, source, cores, CPU_SOCKET_GB)


DEVICES: dict[str, DeviceSpec] = {
    d.name: d
    for d in (
        # NVIDIA Tesla P100 data sheet (2016), SXM2: 10.6 TF fp32, 21.2 TF fp16 (no tensor cores),
        # 732 GB/s HBM2, 4 NVLink 1.0 links x 20 GB/s per direction.
        _gpu("p100", "Tesla P100 SXM2 16 GB", 10.6, 21.2, 732, 80, False, 8, "NVIDIA Tesla P100 data sheet", 16),
        # Same data sheet, PCIe card: 9.3 TF fp32, 18.7 TF fp16, 732 GB/s; PCIe 3.0 x16: 16 GB/s per direction.
        _gpu("p100-pcie", "Tesla P100 PCIe 16 GB", 9.3, 18.7, 732, 16, False, 8, "NVIDIA Tesla P100 data sheet", 16),
        # NVIDIA Tesla P40 data sheet (2016): 12 TF fp32 (11.76 at the 1,531 MHz boost: 3,840 cores x 2),
        # fp16 at 1/64 rate (no fast mixed path), 346 GB/s GDDR5, PCIe 3.0 x16.
        _gpu("p40", "Tesla P40 24 GB", 11.76, 11.76, 346, 16, False, 8, "NVIDIA Tesla P40 data sheet", 24),
        # NVIDIA Tesla V100 data sheet (2017), SXM2 16 GB (DGX-1, 300 W): 15.7 TF fp32, 125 TF tensor,
        # 900 GB/s HBM2, NVLink 2.0 300 GB/s total = 6 links x 25 GB/s per direction.
        _gpu("v100", "Tesla V100 SXM2 16 GB", 15.7, 125, 900, 150, True, 8, "NVIDIA Tesla V100 data sheet", 16),
        # V100 SXM3 32 GB at 450 W in the DGX-2H (MLCommons training_results_v0.7
        # NVIDIA/systems/dgx2h_n96_ngc20.06_mxnet.json: "NVIDIA V100-SXM3-32GB (450W)", "NVSWITCH 1.0
        # 300GB/s" = 150 per direction). Peaks: the V100 sheet's at the higher clock are not confirmed;
        # the SXM2 figures are kept (speed comes from the DGX-2H's own MLPerf run, not from these).
        _gpu(
            "v100-sxm3",
            "Tesla V100 SXM3 32 GB 450 W (DGX-2H)",
            15.7,
            125,
            900,
            150,
            True,
            16,
            "training_results_v0.7 NVIDIA/systems/dgx2h_n96_ngc20.06_mxnet.json; peaks: V100 data sheet",
            32,
        ),  # fmt: skip
        # NVIDIA A100 data sheet (2020/21), SXM4: 19.5 TF fp32, 312 TF bf16/fp16 tensor (dense),
        # 2,039 GB/s (80 GB), NVLink 3 600 GB/s total = 300 per direction.
        _gpu("a100", "A100 SXM4 80 GB", 19.5, 312, 2039, 300, True, 8, "NVIDIA A100 data sheet", 80),
        # NVIDIA H100 data sheet (2022/23), SXM5: 67 TF fp32, 989 TF bf16/fp16 tensor (dense),
        # 3.35 TB/s HBM3, NVLink 4 900 GB/s total = 450 per direction.
        _gpu("h100", "H100 SXM5 80 GB", 67, 989, 3350, 450, True, 8, "NVIDIA H100 data sheet", 80),
        # NVIDIA H200 data sheet (2024), SXM: the H100's compute (989 TF dense), 4.8 TB/s HBM3e, NVLink 900 GB/s.
        _gpu("h200", "H200 SXM 141 GB", 67, 989, 4800, 450, True, 8, "NVIDIA H200 data sheet", 141),
        # Google Cloud TPU v3 (Cloud TPU documentation, "TPU v3", read 2026-12-07: 123 TF bf16 and 32 GiB
        # HBM2 at 900 GB/s per chip; a pod is 1,024 chips on a 2-D torus with 340 TB/s of all-reduce
        # bandwidth). A host holds 4 chips (8 cores). Each chip has 4 ICI links, two per torus dimension
        # (Jouppi et al. 2020, CACM 63(7), not re-read here): 340 TB/s / 1,024 chips / 4 links = 83 GB/s
        # per link and direction, the figure below.
        DeviceSpec(
            "tpu-v3",
            "Cloud TPU v3 chip (2 cores)",
            "tpu",
            123,
            123,
            900,
            83,
            True,
            4,
            "Cloud TPU v3 documentation (2-D torus, 340 TB/s all-reduce per 1,024-chip pod)",
            memory_gb=32 * 1.073741824,
            torus_links=4,
        ),  # fmt: skip
        # Intel Xeon Platinum 8180 (ark.intel.com): 28 cores, 2.5 GHz base, AVX-512 with 2 FMA units,
        # 6 channels DDR4-2666 = 128 GB/s; sockets of a node over 3 UPI links x 10.4 GT/s (~62 GB/s).
        _cpu(
            "xeon-8180",
            "Xeon Platinum 8180 (Skylake-SP, one socket)",
            28,
            2.5,
            128,
            62,
            2,
            "Intel ARK: Xeon Platinum 8180",
        ),  # fmt: skip
        # Intel Xeon Platinum 8160 (ark.intel.com): 24 cores, 2.1 GHz base, AVX-512 2 FMA, 6 ch DDR4-2666.
        # Stampede2's SKX nodes hold two (TACC Stampede2 user guide; not re-read here).
        _cpu(
            "xeon-8160",
            "Xeon Platinum 8160 (Skylake-SP, one socket)",
            24,
            2.1,
            128,
            62,
            2,
            "Intel ARK: Xeon Platinum 8160",
        ),  # fmt: skip
        # Intel Xeon Phi 7250 (ark.intel.com): 68 cores, 1.4 GHz, two AVX-512 units per core, 16 GB
        # MCDRAM (> 400 GB/s; 490 assumed), one per node (Stampede2 KNL nodes).
        _cpu("xeon-phi-7250", "Xeon Phi 7250 (Knights Landing)", 68, 1.4, 490, 0, 1, "Intel ARK: Xeon Phi 7250"),
    )
}


def device_names() -> list[str]:
    return list(DEVICES)


def lookup_device(name: str) -> DeviceSpec:
    key = name.strip().lower()
    if key not in DEVICES:
        raise KeyError(name)
    return DEVICES[key]
