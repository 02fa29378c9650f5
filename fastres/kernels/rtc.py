"""fastres.kernels.rtc: fastres's CUDA kernels compiled at run time, for installs without nvcc.

Most users install with pip on machines without nvcc: their fastres._C has C++ kernels only.
When such an install meets a GPU and CuPy (`pip install fastres[gpu]`), fastres.kernels.ops compiles
the kernels of the very same csrc/*_cuda.cu files with NVRTC through CuPy's `RawModule` at
first use, and launches them on torch's current stream. The .cu files are written for both
compilers: under NVRTC (`__CUDACC_RTC__`) only their kernels are compiled, without the host
launchers or any standard header (csrc/common.h).

    KERNELS                       the .cu files and the name expressions of their kernels
    kernel_source(file)           the file with its local #includes inlined: one string
    source_dir()                  where the kernel sources are (the installed copy, or csrc/)
    status(), available()         what CuPy brings (versions, architectures), or why not
    launch(file, kernel, grid, block, args, device)   on torch's current stream of `device`

Compiled modules are cached per (file, device) in this process; CuPy also keeps the binaries
on disk (~/.cupy/kernel_cache, keyed by the source text and the options: that is why the
includes are inlined here rather than passed as -I, which CuPy's key would not see). CuPy
compiles for the device's own architecture (a cubin where its NVRTC knows the architecture),
so no PTX JIT by the driver is involved.

The host launchers of csrc/*_cuda.cu are mirrored by fastres.kernels.ops (grids and launch order):
coupled, change them together. FASTRES_SYNC_CHECK=1 synchronises and checks after each launch
here too. Arguments are passed as numpy scalars of the kernels' exact C types (CuPy's
RawKernel documentation: Python ints would not say their width).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

__all__ = [
    "KERNELS",
    "NVRTC_OPTIONS",
    "available",
    "kernel_source",
    "launch",
    "source_dir",
    "status",
]

# name expressions of every kernel, per source file (csrc/cuda_common.cuh puts them in
# fastres::rtc under NVRTC). tests/test_rtc.py compiles each file and finds each of them.
_NS = "fastres::rtc::"
KERNELS: dict[str, tuple[str, ...]] = {
    "segment_sq_norms_cuda.cu": (f"{_NS}chunk_sq_sums_kernel", f"{_NS}segment_partials_sum_kernel"),
    "lars_cuda.cu": (
        f"{_NS}chunk_norms_kernel",
        f"{_NS}fused_update_kernel<false>",
        f"{_NS}fused_update_kernel<true>",
    ),
    "wire_cuda.cu": (
        *(f"{_NS}pack_kernel<{d}>" for d in range(3)),
        *(f"{_NS}unpack_kernel<{d}>" for d in range(3)),
        *(f"{_NS}unpack_chunks_kernel<{d}>" for d in range(3)),
        f"{_NS}segment_partials_sum_kernel",
    ),
}

# C++17 as in CMakeLists.txt (the kernels use `if constexpr`), line info for the profilers;
# NVRTC's other defaults equal nvcc's (IEEE division and sqrt, no flush to zero, FMA on), and
# nvcc's --expt-relaxed-constexpr has no NVRTC counterpart (the kernels need it for nothing).
NVRTC_OPTIONS = ("-std=c++17", "-lineinfo")

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def source_dir() -> Path:
    """The folder holding the kernel sources: the copy installed next to fastres._C
    (fastres/csrc in a wheel), else the repository's csrc/ (source tree, editable install)."""
    package = Path(__file__).resolve().parent.parent  # fastres/
    for d in (package / "csrc", package.parent / "csrc"):
        if (d / "cuda_common.cuh").is_file():
            return d
    raise FileNotFoundError(
        f"fastres.kernels.rtc: the CUDA kernel sources are neither in {package / 'csrc'} (installed by "
        f"`pip install .`) nor in {package.parent / 'csrc'} (a source tree)"
    )


@functools.cache
def kernel_source(file: str) -> str:
    """`file` (a key of KERNELS) with every `#include "..."` of a local header inlined once
    (they all say #pragma once), with #line markers so that NVRTC's messages name the file."""
    root = source_dir()
    seen: set[str] = set()

    def expand(name: str) -> list[str]:
        if name in seen:
            return []
        seen.add(name)
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"fastres.kernels.rtc: {path} (included from the kernel sources) does not exist")
        out = [f'#line 1 "{name}"']
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            m = _INCLUDE.match(line)
            if m:
                out += expand(m.group(1))
                out.append(f'#line {n + 1} "{name}"')
            elif line.strip() == "#pragma once":
                out.append("")
            else:
                out.append(line)
        return out

    if file not in KERNELS:
        raise ValueError(f"file: not a kernel source of fastres.kernels.rtc ({', '.join(KERNELS)}), got {file!r}")
    return "\n".join(expand(file)) + "\n"


def _sync_check() -> bool:
    v = os.environ.get("FASTRES_SYNC_CHECK", "")
    return v not in ("", "0")


@functools.lru_cache(maxsize=1)
def status() -> dict:
    """What the CuPy path has: {"available": bool, "reason": why not (or ""), "cupy": version,
    "runtime": CuPy's CUDA runtime version (13000), "nvrtc": (major, minor), "archs": the sm_XY
    numbers its NVRTC compiles for}. Needs no GPU: CuPy links its CUDA runtime statically, and
    asks neither the runtime version nor NVRTC anything that needs a driver."""
    out = {"available": False, "reason": "", "cupy": None, "runtime": None, "nvrtc": None, "archs": ()}
    try:
        import cupy
        from cupy.cuda import nvrtc, runtime
    except Exception as e:  # noqa: BLE001 - any import failure means: no CuPy path
        out["reason"] = f"CuPy is not importable ({type(e).__name__}: {e}); `pip install fastres[gpu]` brings it"
        return out
    out["cupy"] = cupy.__version__
    try:
        out["runtime"] = int(runtime.runtimeGetVersion())
        out["nvrtc"] = tuple(nvrtc.getVersion())
        out["archs"] = tuple(int(a) for a in nvrtc.getSupportedArchs())
    except Exception as e:  # noqa: BLE001
        out["reason"] = f"CuPy {cupy.__version__} imports but cannot load NVRTC ({type(e).__name__}: {e})"
        return out
    out["available"] = True
    return out


def available() -> tuple[bool, str]:
    """(True, "") when CuPy imports and can load NVRTC, else (False, the reason)."""
    st = status()
    return st["available"], st["reason"]


_MODULES: dict[tuple[str, int], object] = {}


def _module(file: str, device: int):
    """cupy.RawModule of `file` on `device`, compiled at first use (and cached)."""
    key = (file, device)
    mod = _MODULES.get(key)
    if mod is None:
        import cupy

        with cupy.cuda.Device(device):
            mod = cupy.RawModule(
                code=kernel_source(file),
                options=NVRTC_OPTIONS,
                name_expressions=list(KERNELS[file]),
            )
            mod.compile()  # compile now, so that an error names the file here, not at a launch
        _MODULES[key] = mod
    return mod


class _StreamHandle:
    """A cudaStream_t handle, offered through the CUDA stream protocol (`__cuda_stream__`:
    version 0, the address) to CuPy's Stream.from_external."""

    def __init__(self, handle: int):
        self.handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)


_STREAMS: dict[tuple[int, int], object] = {}


def _cupy_stream(handle: int, device: int):
    """A CuPy view of torch's stream `handle` on `device` (cached: torch keeps its streams)."""
    key = (device, handle)
    st = _STREAMS.get(key)
    if st is None:
        import cupy

        if hasattr(cupy.cuda.Stream, "from_external"):  # CuPy >= 14; ExternalStream is deprecated there
            st = cupy.cuda.Stream.from_external(_StreamHandle(handle))
        else:
            st = cupy.cuda.ExternalStream(handle, device)
        _STREAMS[key] = st
    return st


def launch(file: str, kernel: str, grid: int, block: int, args: tuple, device: int, stream: int) -> None:
    """Launch `kernel` (a name expression of KERNELS[file], without the namespace) of `file` on
    `device`, on the CUDA stream whose handle is `stream` (torch's current stream there).

    `args`: numpy scalars of the kernel parameters' exact types (np.uint64 for pointers)."""
    import cupy

    with cupy.cuda.Device(device):
        fn = _module(file, device).get_function(_NS + kernel)
        st = _cupy_stream(stream, device)
        fn((grid,), (block,), args, stream=st)
        if _sync_check():
            try:
                st.synchronize()
            except Exception as e:  # noqa: BLE001 - CuPy's CUDARuntimeError, renamed to say where
                raise RuntimeError(f"FASTRES_SYNC_CHECK after {kernel} ({file}, compiled at run time): {e}") from e
