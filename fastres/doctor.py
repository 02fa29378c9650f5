"""python -m fastres.doctor: what this install of fastres can do, and why.

    python -m fastres.doctor           # a report to read (or: fastres-doctor)
    python -m fastres.doctor --json    # the same facts as JSON

The first thing to run when fastres is slow or a GPU op warns (the way torch.utils.collect_env
and DeepSpeed's ds_report are): the native module's build (CPU/OpenMP, CUDA architectures and
runtime), torch and the driver, each GPU with its compute capability and memory, NCCL, DALI
and whether it sees the GPU, CuPy and NVRTC, and for every op of fastres.kernels.ops the path it takes
on each device (native CPU, native CUDA, run-time compiled, torch fallback) with the reason:
the same decision fastres.kernels.ops makes (fastres.kernels.paths), not a second opinion. Nothing here
launches a kernel or allocates GPU memory.
"""

from __future__ import annotations

import json
import os
import platform
import sys

import torch

import fastres
from fastres.kernels import nvrtc, ops, paths, rtc
from fastres.run.execution import cpu_has_native_bf16, resolve_precision

__all__ = ["collect", "main", "render"]


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _native() -> dict:
    info = ops.build_info()
    out = {
        "importable": info["native"],
        "path": info.get("path"),
        "error": info.get("error"),
        "compiler": info.get("compiler"),
        "openmp": info["openmp"],
        "openmp_version": info.get("openmp_version"),
        "cuda_kernels": info["cuda"],
        "cuda_archs": list(info["cuda_archs"]),
        "cuda_runtime": info.get("cuda_version"),
        "cuda_runtime_linking": info.get("cuda_runtime"),
        "cuda_device_count": None,
        "sync_check": None,
    }
    if ops.native_available():
        C = ops._C
        out["cuda_device_count"] = C.cuda_device_count() if info["cuda"] else None
        out["sync_check"] = bool(C.sync_check()) if hasattr(C, "sync_check") else None
    return out


def _torch() -> dict:
    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,  # the CUDA torch was built with, None for a CPU build
        "cuda_available": torch.cuda.is_available(),
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu_native_bf16": cpu_has_native_bf16(),  # --precision bf16 on the CPU: fast, or emulated
        "cpu_auto_precision": str(resolve_precision("auto", "cpu")),  # what a CPU run trains in by default, and why
    }


def _nccl() -> dict:
    out = {"available": False, "version": None, "why": ""}
    try:
        import torch.distributed as dist

        out["available"] = bool(dist.is_available() and dist.is_nccl_available())
    except Exception as e:  # noqa: BLE001
        out["why"] = _error(e)
        return out
    if not out["available"]:
        out["why"] = "torch was built without NCCL" + ("" if torch.version.cuda else " (a CPU build)")
        return out
    try:
        v = torch.cuda.nccl.version()
        out["version"] = ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
    except Exception as e:  # noqa: BLE001
        out["why"] = _error(e)
    return out


def _dali() -> dict:
    out = {"version": None, "gpus": None, "why": ""}
    try:
        import nvidia.dali as dali
        from nvidia.dali import backend
    except Exception as e:  # noqa: BLE001 - not installed, or its libraries do not load
        out["why"] = f"not importable ({_error(e)})"
        return out
    out["version"] = dali.__version__
    try:
        out["gpus"] = int(backend.GetCUDADeviceCount())
    except Exception as e:  # noqa: BLE001
        out["why"] = f"cannot count GPUs ({_error(e)})"
    return out


def _nvrtc() -> dict:
    try:
        lib = nvrtc.load()
        return {"path": lib.path, "version": list(lib.version()), "why": ""}
    except (nvrtc.NvrtcUnavailable, OSError) as e:
        return {"path": None, "version": None, "why": str(e)}


def _paths(probe: paths.Probe) -> dict:
    """{device: {op: {"path", "label", "reason"}}} for the CPU and every GPU torch sees."""
    devices = [torch.device("cpu")] + [torch.device("cuda", g.index) for g in probe.gpus]
    out = {}
    for device in devices:
        row = {}
        for op in paths.OPS:
            if device.type == "cpu" and not probe.native:
                choice = paths.Choice("torch", "fastres._C is not importable: ops raise ImportError with advice")
            else:
                choice = paths.choose(op, device, probe)
            row[op] = {"path": choice.path, "label": paths.PATHS[choice.path], "reason": choice.reason}
        out[str(device)] = row
    return out


def collect(probe: paths.Probe | None = None) -> dict:
    """Every fact of the report, as plain data. `probe`: the one fastres.kernels.ops uses (default), or
    an injected one (tests)."""
    probe = probe if probe is not None else ops._probe()
    st = rtc.status()
    return {
        "fastres": {
            "version": ops.build_info().get("version"),
            "package": os.path.dirname(os.path.abspath(__file__)),
            "python": sys.version.split()[0],
            "platform": f"{platform.system()} {platform.machine()}",
        },
        "native": _native(),
        "torch": _torch(),
        "driver": {"cuda": probe.driver, "why": "" if probe.driver else "libcuda.so.1 does not load (no driver)"},
        "gpus": [
            {"index": g.index, "name": g.name, "capability": list(g.capability), "memory": g.memory} for g in probe.gpus
        ],
        "nccl": _nccl(),
        "dali": _dali(),
        "cupy": {
            "available": st["available"],
            "version": st["cupy"],
            "cuda_runtime": st["runtime"],
            "nvrtc": list(st["nvrtc"]) if st["nvrtc"] else None,
            "archs": list(st["archs"]),
            "why": st["reason"],
        },
        "nvrtc": _nvrtc(),
        "sync_check_env": os.environ.get("FASTRES_SYNC_CHECK", ""),
        "paths": _paths(probe),
    }


# _OPENMP dates to specification versions (OpenMP API specifications, "_OPENMP macro")
_OPENMP = {201107: "3.1", 201307: "4.0", 201511: "4.5", 201811: "5.0", 202011: "5.1", 202111: "5.2", 202411: "6.0"}


def _cuda(v) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"


def render(r: dict) -> str:
    """The report as text."""
    lines = []

    def section(title):
        lines.append("")
        lines.append(title)

    def item(key, value):
        lines.append(f"  {key:<22}{value}")

    f, n, t = r["fastres"], r["native"], r["torch"]
    lines.append(f"fastres {f['version'] or '(version unknown)'} at {f['package']}")
    lines.append(f"Python {f['python']} on {f['platform']}")

    section("native module (fastres._C)")
    if not n["importable"]:
        item("status", f"NOT importable: {n['error']}")
    else:
        item("file", n["path"])
        item("compiler", n["compiler"])
        omp = _OPENMP.get(n["openmp_version"], "")
        omp = f"OpenMP {omp} ({n['openmp_version']})" if omp else f"OpenMP {n['openmp_version']}"
        item("CPU kernels", "yes, " + (omp if n["openmp"] else "without OpenMP"))
        if n["cuda_kernels"]:
            archs = ", ".join(n["cuda_archs"])
            item("CUDA kernels", f"yes, architectures {archs}")
            item("CUDA runtime", f"{_cuda(n['cuda_runtime'])}, linked {n['cuda_runtime_linking']}")
            item("GPUs it sees", n["cuda_device_count"])
        else:
            item("CUDA kernels", "no (built without nvcc, or with FASTRES_CUDA=OFF)")
        item("FASTRES_SYNC_CHECK", "on: sync and check after every launch" if n["sync_check"] else "off")

    section("torch and the driver")
    item("torch", f"{t['version']} ({'CUDA ' + t['cuda'] if t['cuda'] else 'CPU build'})")
    d = r["driver"]
    item("driver", f"supports CUDA {_cuda(d['cuda'])}" if d["cuda"] else f"none: {d['why']}")
    bf16 = {True: "native (AVX-512 BF16 or AMX): --precision bf16 is fast here", None: "unknown (no /proc/cpuinfo)",
            False: "not native: bf16 autocast on the CPU is emulated, often slower than fp32"}  # fmt: skip
    item("CPU bf16", bf16[t["cpu_native_bf16"]])
    item("CPU precision auto", t["cpu_auto_precision"])
    item("GPUs torch sees", t["device_count"])
    for g in r["gpus"]:
        cc = ".".join(str(x) for x in g["capability"])
        item(f"  cuda:{g['index']}", f"{g['name']}, compute capability {cc}, {g['memory'] / 2**30:.1f} GiB")
    nc = r["nccl"]
    item("NCCL", nc["version"] if nc["version"] else ("available" if nc["available"] else f"no: {nc['why']}"))

    section("data loading")
    dl = r["dali"]
    if dl["version"]:
        sees = f"sees {dl['gpus']} GPU(s)" if dl["gpus"] is not None else dl["why"]
        item("DALI", f"{dl['version']}, {sees}")
    else:
        item("DALI", dl["why"])

    section("run-time compilation")
    c = r["cupy"]
    if c["available"]:
        nv = ".".join(str(x) for x in c["nvrtc"])
        archs = f"sm_{min(c['archs'])}..sm_{max(c['archs'])}" if c["archs"] else "?"
        item("CuPy", f"{c['version']}, CUDA runtime {_cuda(c['cuda_runtime'])}, NVRTC {nv} ({archs})")
    else:
        item("CuPy", f"no: {c['why']}")
    v = r["nvrtc"]
    if v["path"]:
        item("NVRTC (ctypes)", f"{'.'.join(str(x) for x in v['version'])} at {v['path']}")
    else:
        item("NVRTC (ctypes)", f"no: {v['why']}")

    section("paths of fastres.kernels.ops (native CPU | native CUDA | run-time compiled | torch fallback)")
    for device, row in r["paths"].items():
        for op, ch in row.items():
            item(f"{device} {op}", f"{ch['label']}: {ch['reason']}")
    if not r["gpus"]:
        item("cuda", "no GPU visible to torch: GPU ops cannot run here")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = fastres.ArgumentParser(
        prog="python -m fastres.doctor", description="Say what this install of fastres can do, and why."
    )
    parser.add_argument("--json", action="store_true", help="print the facts as JSON instead of a report")
    args = parser.parse_args(argv)
    report = collect()
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
