"""A CPU cluster of the machine at hand: its ResNet-50 speed measured by fastres, per core.

    python -m fastres.plan --measure-cpu cpu.json                 # times training steps here (about a minute)
    python -m fastres.plan --device cpu --calibrate-cpu cpu.json --devices 64 --devices-per-node 2 \\
        --cores-per-device 32 --inter-node-gbps 100

`measure()` times fastres.model.resnet50 training steps (forward, backward, SGD with momentum,
channels_last, fp32, or bf16 autocast with --precision mixed) in this process at two batch
sizes and fits t(b) = b / R + t0 (fastres.plan.speed.fit_pair) over its torch threads; the JSON
holds the rate per core. `read_cpu_calibration()` turns that file, or bench/bench_train.py's
bench/results/train-cpu.json (its "ceiling": one in-memory step of batch 64 at its image size,
so no t0, and a rate carried to 224 px by the pixel count: a rougher figure), into a Speed for a
device of `cores` such cores: R x cores, and t0 measured (or, from the bench file, the
optimizer's pass over the parameters at the socket's memory bandwidth, as for the Xeons).

A rate per core assumes the cluster's cores are the measured machine's and that a socket's
cores add up; DRAM bandwidth and the small-batch penalty of many cores are not measured here.
"""

from __future__ import annotations

import os
import platform
import time

from fastres.plan.devices import DeviceSpec
from fastres.plan.jsonfile import read_json
from fastres.plan.speed import Speed, fit_pair

__all__ = ["cpu_device", "measure", "read_cpu_calibration"]

DEFAULT_MEMORY_GBS = 100.0  # assumed DRAM bandwidth per socket when none is given (8 channels of DDR4-3200 ~ 205)


class CpuCalibrationError(ValueError):
    """No usable CPU speed (a file without one, or timings too noisy to fit); the message says which."""


def cpu_device(cores: int, memory_gbs: float = DEFAULT_MEMORY_GBS) -> DeviceSpec:
    """A socket (one training process) of `cores` measured cores."""
    return DeviceSpec("cpu", f"CPU socket, {cores} cores (measured here)", "cpu", 0.0, 0.0, memory_gbs, 20.0,
                      False, 2, "--calibrate-cpu", cores)  # fmt: skip


def measure(
    batches: tuple[int, int] = (4, 8),
    image_size: int = 224,
    threads: int | None = None,
    precision: str = "fp32",
    reps: int = 3,
    arch: str = "resnet50",
) -> dict:
    """Time training steps of `arch` at two batch sizes on this CPU; the fastest of `reps` each."""
    import torch

    from fastres import model as models

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    net = getattr(models, arch)(num_classes=1000).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    seconds = {}
    for b in batches:
        x = torch.randn(b, 3, image_size, image_size).to(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (b,))

        def step(x=x, y=y):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "mixed"):
                loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()

        step()  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        seconds[b] = min(times)
    (b_small, b_large) = sorted(batches)
    try:
        rate, t0 = fit_pair(b_large, seconds[b_large], b_small, seconds[b_small])
    except ValueError as e:
        raise CpuCalibrationError(
            f"--measure-cpu: steps of {b_small} and {b_large} images took {seconds[b_small]:.3f} and "
            f"{seconds[b_large]:.3f} s ({e}): the machine is too busy to measure; run it again when it is idle"
        ) from None
    return {
        "measured_by": "python -m fastres.plan --measure-cpu",
        "arch": arch,
        "image_size": image_size,
        "precision": precision,
        "threads": threads,
        "step_seconds": {str(b): s for b, s in seconds.items()},
        "images_per_s_per_core": rate / threads,
        "t0_s": t0,
        "load_average_1min": [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
    }


def read_cpu_calibration(path: str, cores: int, precision: str = "fp32") -> tuple[Speed, dict]:
    """(Speed of a `cores`-core socket, what was read) from --measure-cpu's JSON or bench_train.py's."""
    doc = read_json(path, "--calibrate-cpu", CpuCalibrationError)
    if not isinstance(doc, dict):
        raise CpuCalibrationError(f"--calibrate-cpu {path}: not a JSON object")
    if "images_per_s_per_core" in doc:
        per_core = doc.get("images_per_s_per_core")
        size, t0 = doc.get("image_size", 224), doc.get("t0_s", 0.0)
        ok = all(isinstance(v, (int, float)) and v >= 0 for v in (per_core, size, t0)) and per_core > 0 and size > 0
        if not ok:
            raise CpuCalibrationError(f"--calibrate-cpu {path}: images_per_s_per_core, image_size, t0_s must be > 0")
        rate = per_core * cores * (size / 224) ** 2
        what = {"from": path, "kind": "measured", "images_per_s_per_core_224px": rate / cores, "t0_s": t0}
        return Speed(rate, t0, f"--calibrate-cpu {path}: measured, {rate / cores:.3g} img/s per core"), what
    ceiling = doc.get("ceiling") if isinstance(doc.get("ceiling"), dict) else None
    setup, mach = doc.get("setup") or {}, doc.get("machine") or {}
    key = "bf16 channels_last" if precision == "mixed" else "fp32 channels_last"
    value = ceiling.get(key) if ceiling else None
    size, threads = setup.get("image_size"), mach.get("cores")
    if not (isinstance(value, (int, float)) and value > 0 and isinstance(size, int) and isinstance(threads, int)):
        raise CpuCalibrationError(
            f"--calibrate-cpu {path}: neither --measure-cpu's images_per_s_per_core nor bench_train.py's "
            f"ceiling['{key}'] with setup.image_size and machine.cores"
        )
    per_core = value / threads * (size / 224) ** 2  # FLOPs grow with the pixels
    what = {
        "from": path,
        "kind": f"bench_train.py ceiling '{key}' at {size} px",
        "images_per_s_per_core_224px": per_core,
    }
    return Speed(per_core * cores, 0.0, f"--calibrate-cpu {path}: bench ceiling at {size} px, per pixel"), what
