"""The planner's earlier device table, kept for callers of `fastres.plan.gpus`: the GPUs of fastres.plan.devices."""

from __future__ import annotations

from fastres.plan.devices import DEVICES, DeviceSpec, lookup_device

__all__ = ["GPUS", "GpuSpec", "gpu_names", "lookup_gpu"]

GpuSpec = DeviceSpec
GPUS: dict[str, DeviceSpec] = {k: d for k, d in DEVICES.items() if d.kind == "gpu"}


def gpu_names() -> list[str]:
    return list(GPUS)


def lookup_gpu(name: str) -> DeviceSpec:
    device = lookup_device(name)
    if device.kind != "gpu":
        raise KeyError(name)
    return device
