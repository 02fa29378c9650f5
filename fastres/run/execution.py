"""Where and how a run computes: its device, its precision, its memory format, its seeds.

    device = pick_device("auto", topology)     # a distributed rank's GPU comes from its local rank
    precision = resolve_precision("auto", device)  # bf16 on CUDA and on CPUs with native bf16, else fp32
    print(precision)                           # "bf16: this CPU computes bf16 natively (AVX-512 BF16)"
    with autocast(device, precision.dtype): ...

The choices of `--device` and `--precision` are listed in fastres.config (a layer below this one).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from fastres import FastresError
from fastres.config import DEVICES, PRECISIONS
from fastres.distributed import Topology, cuda_device

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "Precision",
    "amp_dtype",
    "autocast",
    "cpu_bf16_features",
    "cpu_has_native_bf16",
    "device_type",
    "pick_device",
    "resolve_precision",
    "seed_all",
    "use_channels_last",
]


def device_type(want: str) -> str:
    """The kind of device `--device want` runs on ("cuda" or "cpu"), without checking that it exists."""
    if want not in DEVICES:
        raise FastresError(f"--device must be one of {', '.join(DEVICES)}, got {want!r}")
    return ("cuda" if torch.cuda.is_available() else "cpu") if want == "auto" else want


def pick_device(want: str, topology: Topology) -> torch.device:
    """`auto`: CUDA where torch sees a GPU, else the CPU. One GPU per rank of a machine."""
    kind = device_type(want)
    if want == "cuda" and not torch.cuda.is_available():
        raise FastresError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if kind == "cuda" and topology.distributed:
        return cuda_device(topology)
    return torch.device(kind)


CPUINFO = "/proc/cpuinfo"  # where the CPU's flags are read (tests point it at a file of their own)
NATIVE_BF16 = {"avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX"}  # /proc/cpuinfo flag -> its name
NO_NATIVE_BF16 = "no AVX-512 BF16 or AMX"


def cpu_bf16_features(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's features that compute bf16 natively, by name ("AVX-512 BF16", "AMX"), so that oneDNN's
    bf16 kernels beat fp32; [] for none, None where /proc/cpuinfo cannot be read (not Linux)."""
    try:
        with open(cpuinfo or CPUINFO) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return [name for flag, name in NATIVE_BF16.items() if flag in flags]


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX); None where that cannot be read."""
    features = cpu_bf16_features(cpuinfo)
    return None if features is None else bool(features)


@dataclass(frozen=True)
class Precision:
    """What a run computes in: `name` (fp32, bf16, fp16), its autocast dtype (None: fp32) and why;
    `emulated`: bf16 asked for on a CPU that has no native bf16 (slower than fp32)."""

    name: str
    dtype: torch.dtype | None
    why: str
    emulated: bool = False

    def __str__(self) -> str:
        return f"{self.name}: {self.why}"


_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device | str, cpuinfo: str | None = None) -> Precision:
    """`--precision` on `device`: `auto` is bf16 autocast on CUDA and on a CPU that computes bf16 natively
    (AVX-512 BF16 or AMX: 1.8-1.95x fp32's speed on the built-in run, README.md), fp32 on any other CPU (there bf16
    is emulated, slower than fp32); fp32, bf16 and fp16 are what they say on either device (fp16: the
    trainer adds a LossScaler, fp16 gradients underflow without one)."""
    if precision not in PRECISIONS:
        raise FastresError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind = torch.device(device).type
    if precision != "auto":
        emulated = precision == "bf16" and kind == "cpu" and cpu_bf16_features(cpuinfo) == []
        why = f"--precision {precision}"
        if emulated:
            why += f", emulated on this CPU ({NO_NATIVE_BF16}): usually slower than fp32"
        return Precision(precision, _DTYPES[precision], why, emulated)
    if kind == "cuda":
        return Precision("bf16", torch.bfloat16, "autocast on CUDA")
    features = cpu_bf16_features(cpuinfo)
    if features:
        return Precision("bf16", torch.bfloat16, f"this CPU computes bf16 natively ({', '.join(features)})")
    if features is None:
        unread = cpuinfo or CPUINFO
        return Precision("fp32", None, f"cannot tell whether this CPU computes bf16 natively ({unread} unreadable)")
    return Precision("fp32", None, f"this CPU has no native bf16 ({NO_NATIVE_BF16}): emulated bf16 is slower")


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `resolve_precision(precision, device)`, or None for fp32."""
    return resolve_precision(precision, device).dtype


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
