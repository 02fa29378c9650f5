"""What a benchmark's results record about the machine they were measured on."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def _cpuinfo() -> dict:
    """Model name, family/model, widest vector ISA and memory from /proc (Linux); {} elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    isa = next((f for f in ("avx512_bf16", "avx512f", "avx2", "avx") if f in flags), "none")
    family_model = f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}"
    info = {"cpu_model": fields.get("model name", "?"), "cpu_family_model": family_model, "widest_simd": isa}
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        info["memory_gib"] = round(kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def describe(**extra) -> dict:
    """CPU (model, family/model, widest SIMD: it decides how fast torch runs here), cores, memory,
    Python and torch versions, plus `extra` (other libraries' versions, ...)."""
    cpu = platform.processor() or platform.machine()
    return {"cpu": cpu, **_cpuinfo(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, **extra}  # fmt: skip


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
