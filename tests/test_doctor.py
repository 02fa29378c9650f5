"""Tests of `python -m fastres.doctor`: every fact it prints is checked against its source.

The command runs in a fresh process (as a user runs it), and what it says is compared with
what this process finds by other means: the loaded fastres._C, torch, libcuda, DALI, CuPy,
the NVRTC library, and fastres.kernels.ops' own path choice. Reports for machines this one is not (an
old driver, an unbuilt architecture, no CuPy) come from injected probes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastres import doctor
from fastres.kernels import nvrtc, ops, paths, rtc


def run_doctor(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FASTRES_SYNC_CHECK"}
    return subprocess.run(
        [sys.executable, "-m", "fastres.doctor", *args], capture_output=True, text=True, timeout=180, env=env
    )


@pytest.fixture(scope="module")
def report() -> dict:
    run = run_doctor("--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_native_module_facts(report):
    n, info = report["native"], ops.build_info()
    assert n["importable"] is True and n["path"] == ops._C.__file__
    assert n["openmp"] == info["openmp"] and n["openmp_version"] == info["openmp_version"]
    assert n["cuda_kernels"] == info["cuda"] and n["cuda_archs"] == info["cuda_archs"]
    assert n["cuda_runtime"] == info["cuda_version"]
    assert n["sync_check"] is False  # FASTRES_SYNC_CHECK unset in the child
    if info["cuda"]:
        assert n["cuda_device_count"] == ops._C.cuda_device_count()


def test_torch_driver_and_gpu_facts(report):
    t = report["torch"]
    assert t["version"] == torch.__version__ and t["cuda"] == torch.version.cuda
    assert t["cuda_available"] == torch.cuda.is_available()
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else None
    assert t["cpu_native_bf16"] == (None if flags is None else ("avx512_bf16" in flags or "amx_bf16" in flags))
    assert report["driver"]["cuda"] == paths.driver_version()
    gpus = [torch.cuda.get_device_properties(i) for i in range(t["device_count"])]
    assert t["device_count"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert [g["name"] for g in report["gpus"]] == [p.name for p in gpus]
    assert [g["capability"] for g in report["gpus"]] == [[p.major, p.minor] for p in gpus]
    assert [g["memory"] for g in report["gpus"]] == [p.total_memory for p in gpus]
    nccl = report["nccl"]
    assert nccl["available"] == (torch.distributed.is_available() and torch.distributed.is_nccl_available())


def test_dali_cupy_and_nvrtc_facts(report):
    dali = report["dali"]
    if importlib.util.find_spec("nvidia.dali") is None:
        assert dali["version"] is None and "not importable" in dali["why"]
    else:
        import nvidia.dali
        from nvidia.dali import backend

        assert dali["version"] == nvidia.dali.__version__ and dali["gpus"] == backend.GetCUDADeviceCount()
    st = rtc.status()
    assert report["cupy"]["available"] == st["available"] and report["cupy"]["version"] == st["cupy"]
    try:
        lib = nvrtc.load()
    except nvrtc.NvrtcUnavailable:
        assert report["nvrtc"]["path"] is None and "pip install nvidia-cuda-nvrtc" in report["nvrtc"]["why"]
    else:
        assert report["nvrtc"]["path"] == lib.path and report["nvrtc"]["version"] == list(lib.version())


def test_paths_are_the_ones_ops_takes(report):
    devices = ["cpu"] + [f"cuda:{g['index']}" for g in report["gpus"]]
    assert list(report["paths"]) == devices
    for device, row in report["paths"].items():
        assert list(row) == list(paths.OPS)
        for op, choice in row.items():
            ours = ops.path_for(op, device)
            assert (choice["path"], choice["reason"]) == (ours.path, ours.reason)
            assert choice["label"] == paths.PATHS[ours.path]
    assert {c["path"] for c in report["paths"]["cpu"].values()} == {"cpu"}


def test_text_report_says_it_all():
    run = run_doctor()
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for title in ("native module (fastres._C)", "torch and the driver", "data loading", "run-time compilation"):
        assert title in out
    assert f"torch                 {torch.__version__}" in out
    for op in paths.OPS:
        assert f"cpu {op}" in out
    assert "native CPU: fastres._C's C++ kernel" in out
    if ops.build_info()["cuda"]:
        assert "CUDA kernels          yes, architectures " + ", ".join(ops.build_info()["cuda_archs"]) in out
    if not torch.cuda.is_available():
        assert "no GPU visible to torch" in out


def test_sync_check_is_reported_when_set():
    env = {**os.environ, "FASTRES_SYNC_CHECK": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "fastres.doctor", "--json"], capture_output=True, text=True, timeout=180, env=env
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["native"]["sync_check"] is True and got["sync_check_env"] == "1"


H100 = paths.Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 << 30)
T4 = paths.Gpu(1, "Tesla T4", (7, 5), 15 << 30)


def test_report_of_other_machines():
    cupy = paths.Rtc(True, "", 13000, (75, 80, 90, 100, 120))
    machine = paths.Probe(
        native=True,
        cuda_ops=frozenset(paths.OPS),
        cuda_archs=("80-real", "90"),
        cuda_runtime=13000,
        driver=13000,
        gpus=(H100, T4),
        rtc=cupy,
    )
    r = doctor.collect(machine)
    assert [g["name"] for g in r["gpus"]] == [H100.name, T4.name]
    assert {c["path"] for c in r["paths"]["cuda:0"].values()} == {"cuda"}
    assert {c["path"] for c in r["paths"]["cuda:1"].values()} == {"rtc"}
    text = doctor.render(r)
    assert "cuda:1              Tesla T4, compute capability 7.5, 15.0 GiB" in text
    assert "cuda:0 fused_step     native CUDA: fastres._C's CUDA kernel (sm_90 SASS)" in text
    assert "cuda:1 fused_step     run-time compiled (CuPy/NVRTC): fastres._C holds CUDA code" in text
    old = paths.Probe(**{**machine.__dict__, "driver": 12040, "rtc": paths.Rtc(False, "CuPy is not importable")})
    text = doctor.render(doctor.collect(old))
    assert "driver                supports CUDA 12.4" in text
    for native, says in ((True, "native (AVX-512 BF16 or AMX)"), (False, "not native: bf16 autocast on the CPU is")):
        r["torch"]["cpu_native_bf16"] = native
        assert f"CPU bf16              {says}" in doctor.render(r)
    assert "torch fallback: the driver supports CUDA 12.4, but fastres._C links the CUDA 13.0 runtime" in text
    no_native = paths.Probe(native=False)
    assert doctor.collect(no_native)["paths"]["cpu"]["fused_step"]["path"] == "torch"
