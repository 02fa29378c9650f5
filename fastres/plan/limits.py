"""Sizes no run can have: the planner refuses them rather than print a time for them.

memory    images per device beyond what fits in the device's memory. The rule: a training step
          keeps one copy of every layer's output for backward, half the 64.3M elements counted
          per image forward (inputs + outputs of every leaf module of fastres.model.resnet50,
          fastres.plan.calibrate.ACTIVATION_ELEMENTS), at 2 bytes each in mixed precision and 4 in
          fp32; beside the weights, gradients and momentum (fp32, 3 x 4 bytes per parameter, and
          an fp16 copy of the weights in mixed precision); all within 90% of the device's memory
          (the rest: cuDNN workspaces, the framework, the data loader). Every published run of
          fastres.plan.records passes; the tightest, 208 images per 16 GB V100 in mixed precision
          (MLPerf's DGX-1) and 512 per 80 GB A100 in TF32 (DeepLearningExamples), use 95% and
          92% of what it allows (218 and 557).
steps     a global batch larger than the training set: less than one step per epoch.
devices   more devices than any machine built (MAX_DEVICES); a TPU v3 torus beyond its pod.
"""

from __future__ import annotations

from fastres.plan.calibrate import ACTIVATION_ELEMENTS
from fastres.plan.cost import IMAGENET_TRAIN_IMAGES, RESNET50_PARAMS
from fastres.plan.devices import DeviceSpec

__all__ = ["MAX_DEVICES", "USABLE_MEMORY", "max_batch_per_device", "size_errors"]

USABLE_MEMORY = 0.9
# The largest machines of one kind reported: Fugaku's 158,976 one-CPU nodes (TOP500, June 2020 on);
# GPU clusters of 100,000-200,000 have been announced (2024-25, not confirmed here). Above this no
# machine is known to exist.
MAX_DEVICES = 200_000
# A Cloud TPU v3 pod is 1,024 chips on one 2-D torus (Cloud TPU v3 documentation); a larger torus
# of v3 chips was not built.
MAX_TORUS_DEVICES = {"tpu-v3": 1024}


def max_batch_per_device(device: DeviceSpec, precision: str) -> int | None:
    """The most images per device the memory rule allows; None where the device's memory is not known."""
    if not device.memory_gb:
        return None
    mixed = precision == "mixed"
    state = RESNET50_PARAMS * (3 * 4 + (2 if mixed else 0))
    per_image = ACTIVATION_ELEMENTS / 2 * (2 if mixed else 4)
    return int((USABLE_MEMORY * device.memory_gb * 1e9 - state) // per_image)


def size_errors(device: DeviceSpec, devices: int, global_batch: int, precision: str) -> list[str]:
    """One sentence per size that no run can have (empty: all possible)."""
    errors = []
    if devices > MAX_DEVICES:
        errors.append(f"--devices {devices:,} is more than any machine built holds (at most about {MAX_DEVICES:,})")
    pod = MAX_TORUS_DEVICES.get(device.name)
    if pod and devices > pod:
        errors.append(f"--devices {devices:,}: a {device.name} pod is {pod:,} chips on one torus")
    if global_batch > IMAGENET_TRAIN_IMAGES:
        errors.append(
            f"--global-batch {global_batch:,} is more than the {IMAGENET_TRAIN_IMAGES:,} training images: "
            "less than one step per epoch"
        )
    most = max_batch_per_device(device, precision)
    per_device = global_batch / devices
    if most is not None and per_device > most:
        errors.append(
            f"{per_device:,.0f} images per device do not fit in a {device.name}'s {device.memory_gb:.0f} GB "
            f"({precision}: at most {most:,}; the rule in fastres/plan/limits.py)"
        )
    return errors
