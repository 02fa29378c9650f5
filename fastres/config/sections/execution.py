"""The execution section: the device, the arithmetic's precision and layout, threads and the seed.

Devices and precisions are listed here: fastres.run.execution implements them, a layer above the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastres.config.key import Range, Section, key

__all__ = ["DEVICES", "PRECISIONS", "ExecutionConfig"]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # fp16: autocast + dynamic loss scaling (fastres.optim.amp)


@dataclass
class ExecutionConfig(Section):
    title: ClassVar[str] = "precision and devices"

    device: str = key(
        "auto", "auto (CUDA where available), cpu or cuda; several processes take one GPU each", choices=DEVICES
    )
    precision: str = key(
        "auto",
        "auto (bf16 autocast on CUDA and on a CPU that computes bf16 natively: AVX-512 BF16 "
        "or AMX; fp32 on other CPUs, where bf16 is emulated and slower), fp32, bf16 (autocast, CPU or "
        "GPU), or fp16 (autocast with dynamic loss scaling; a step whose scaled gradients overflow is "
        "skipped)",
        choices=PRECISIONS,
    )
    channels_last: bool | None = key(
        None, "NHWC memory format for the model and batches; none: on CUDA only, not on the CPU"
    )
    compile: bool = key(
        False,
        "run the model's forward and backward through torch.compile (inductor); the first steps "
        "compile for a minute or more",
    )
    threads: int | None = key(
        None, "torch intra-op threads per process on the CPU; none: torch's default", Range("[", 1, 1024, "]")
    )
    seed: int = key(
        0, "seed of the initialisation, the data order and the augmentations", Range("[", 0, 2**31 - 1, "]")
    )
