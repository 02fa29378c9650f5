"""What a benchmark's results record about the machine they were measured on."""

from __future__ import annotations

import os
import platform

import torch


def describe(**extra) -> dict:
    """CPU, cores, Python and torch versions, plus `extra` (other libraries' versions, ...)."""
    cpu = platform.processor() or platform.machine()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            **extra}  # fmt: skip
