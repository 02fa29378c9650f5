"""What a benchmark's results record about the machine they were measured on."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def describe(**extra) -> dict:
    """CPU, cores, Python and torch versions, plus `extra` (other libraries' versions, ...)."""
    cpu = platform.processor() or platform.machine()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            **extra}  # fmt: skip


_GPU_FIELDS = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,pstate"


def gpu_state(index: int = 0) -> dict:
    """GPU `index`'s clocks (MHz), temperature (C), power (W), P-state and driver, from nvidia-smi;
    {} where nvidia-smi is missing or fails."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={_GPU_FIELDS}", "--format=csv,noheader,nounits", "-i", str(index)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0 or not out.stdout.strip():
        return {}
    return dict(zip(_GPU_FIELDS.split(","), [v.strip() for v in out.stdout.strip().splitlines()[0].split(",")]))
