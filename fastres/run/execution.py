"""Where and how a run computes: its device, its precision, its memory format, its seeds.

    device = pick_device("auto", topology)     # a distributed rank's GPU comes from its local rank
    amp = amp_dtype("auto", device)            # bf16 autocast on CUDA, fp32 (None) on CPU
    with autocast(device, amp): ...

The choices of `--device` and `--precision` are listed in fastres.config (a layer below this one).
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from fastres import FastresError
from fastres.config import DEVICES, PRECISIONS
from fastres.distributed import Topology, cuda_device

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "amp_dtype",
    "autocast",
    "cpu_has_native_bf16",
    "pick_device",
    "seed_all",
    "use_channels_last",
]


def pick_device(want: str, topology: Topology) -> torch.device:
    """`auto`: CUDA where torch sees a GPU, else the CPU. One GPU per rank of a machine."""
    if want not in DEVICES:
        raise FastresError(f"--device must be one of {', '.join(DEVICES)}, got {want!r}")
    if want == "cuda" and not torch.cuda.is_available():
        raise FastresError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and topology.distributed:
        return cuda_device(topology)
    return torch.device(want)


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32: `auto` is bf16 on CUDA and fp32 on the CPU; bf16 and fp16
    work on either (bf16 is fast on CPUs with native bf16, e.g. AVX-512 BF16 or AMX)."""
    if precision not in PRECISIONS:
        raise FastresError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16  # the trainer adds a LossScaler: fp16 gradients underflow without one
    return None


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX), so that oneDNN's bf16 kernels
    beat fp32; None where that cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def use_channels_last(setting: bool | None, device: torch.device) -> bool:
    """`--channels-last`, or by default on CUDA only."""
    return device.type == "cuda" if setting is None else setting


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype`, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def seed_all(seed: int) -> None:
    """Python's, numpy's and torch's generators (the model's initialisation, the loaders' order)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
