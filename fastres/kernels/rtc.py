"""fastres.kernels.rtc: fastres's CUDA kernels compiled at run time, for installs without nvcc.

Most users install with pip on machines without nvcc: their fastres._C has C++ kernels only.
When such an install meets a GPU and CuPy (`pip install fastres[gpu]`), fastres.kernels.ops compiles
the kernels of the very same csrc/*_cuda.cu files at first use and launches them on torch's
current stream. The .cu files are written for both compilers: under NVRTC (`__CUDACC_RTC__`)
only their kernels are compiled, without the host launchers or any standard header
(csrc/common.h).

    KERNELS                       the .cu files and the name expressions of their kernels
    NVRTC_OPTIONS                 the options of every run-time compile: those of the nvcc build
    kernel_source(file)           the file with its local #includes inlined: one string
    inlined(name)                 the same for any file of source_dir() (fastres.kernels.sim's header)
    compile_kernels(file, arch)   fastres's own NVRTC call (fastres.kernels.nvrtc): PTX, and a
                                  cubin for a real architecture ("sm_90")
    cubin_for(file, sm)           the cubin for sm_XY and its kernels' lowered names, from the
                                  disk cache or compiled now
    source_dir()                  where the kernel sources are (the installed copy, or csrc/)
    status(), available()         what the path has (CuPy, NVRTC, architectures), or why not
    launch(file, kernel, grid, block, args, device, stream)   on torch's stream `stream`
    run(launch_list, device, stream)   fastres.kernels.launches' Launches, one after another

Bit-exact with the nvcc build: the kernels are compiled by fastres's NVRTC call
(fastres.kernels.nvrtc) with NVRTC_OPTIONS and nothing else, to a cubin for the device's own
architecture (no PTX JIT by the driver), and CuPy only loads that file
(`cupy.RawModule(path=...)`) and launches its kernels. CuPy's own compile (RawModule(code=...))
is never used: it appends `-ftz=true` after the caller's options (cupy/cuda/compiler.py,
_compile_with_cache_cuda), which flushes subnormals to zero, and the wire kernels would then
differ from the CPU kernels' bits on subnormal inputs. tests/test_rtc.py compiles every kernel
for sm_90 on CPU-only CI and fails if the PTX holds a `.ftz` instruction, or if its float
instructions differ in kind from those nvcc makes of the same file.

Cubins are cached on disk, keyed by the source text, the options, the architecture and the
NVRTC version ($FASTRES_RTC_CACHE, else $XDG_CACHE_HOME/fastres/rtc or ~/.cache/fastres/rtc;
a temporary folder where none is writable); the loaded modules per (file, device) in this
process.

The host launchers of csrc/*_cuda.cu are mirrored by fastres.kernels.launches (kernels, grids,
argument names and C types, launch order), which fastres.kernels.sim runs on the CPU in CI:
coupled, change them together. FASTRES_SYNC_CHECK=1 synchronises and checks after each launch
here too. Arguments are passed as numpy scalars of the kernels' exact C types (CuPy's
RawKernel documentation: Python ints would not say their width).

CuPy 13 and 14 both serve (read in cupy/cupy's sources at v13.6.0 and v14.2.0): every call made
here is the same in both (RawModule(path=) loads a cubin with cuModuleLoad; get_function takes
the lowered name; a kernel call passes `stream=` on to Function.__call__(grid, block, args,
shared_mem=0, stream=None), which launches on `stream.ptr`; a numpy scalar argument keeps its
dtype's width: CuPy 13 views it by itemsize, CuPy 14's CScalar packs it as its own dtype;
Device(i) is a context manager; runtime.runtimeGetVersion), except how torch's stream is
wrapped: Stream.from_external (new in 14, where ExternalStream warns DeprecationWarning) or
ExternalStream (13). tests/test_rtc.py runs this file against stand-ins of both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path

from fastres.kernels import cache, nvrtc

__all__ = [
    "KERNELS",
    "NVRTC_OPTIONS",
    "available",
    "compile_kernels",
    "cubin_for",
    "inlined",
    "kernel_source",
    "launch",
    "run",
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

# C++17 as in CMakeLists.txt (the kernels use `if constexpr`), line info for the profilers, and
# nvcc's defaults for the float code, said explicitly (nvcc and NVRTC documentation: subnormals
# kept, IEEE-rounded division and square root, multiply-adds contracted to FMA), so that no
# default of either compiler decides them; nvcc's --expt-relaxed-constexpr has no NVRTC
# counterpart (the kernels need it for nothing).
NVRTC_OPTIONS = ("-std=c++17", "-lineinfo", "-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=true")

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
def inlined(name: str) -> str:
    """The file `name` of source_dir() with every `#include "..."` of a file there inlined once (they
    all say #pragma once), with #line markers so that compilers' messages name the file."""
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

    return "\n".join(expand(name)) + "\n"


def kernel_source(file: str) -> str:
    """`file` (a key of KERNELS) with its local #includes inlined: what NVRTC compiles (inlined)."""
    if file not in KERNELS:
        raise ValueError(f"file: not a kernel source of fastres.kernels.rtc ({', '.join(KERNELS)}), got {file!r}")
    return inlined(file)


def _sync_check() -> bool:
    v = os.environ.get("FASTRES_SYNC_CHECK", "")
    return v not in ("", "0")


def compile_kernels(file: str, arch: str) -> nvrtc.Compiled:
    """`file`'s kernels (a key of KERNELS) compiled by fastres's NVRTC with NVRTC_OPTIONS for
    `arch`: "sm_90" gives PTX and a cubin, "compute_90" PTX only. Needs no GPU."""
    return nvrtc.load().compile(
        kernel_source(file), file, arch=arch, options=NVRTC_OPTIONS, name_expressions=KERNELS[file]
    )


def cubin_for(file: str, sm: int) -> tuple[Path, dict[str, str]]:
    """The cubin of `file` for sm_`sm` (a file: CuPy loads it) and {name expression: lowered
    name}: from the cache when the same source, options, architecture and NVRTC made it,
    else compiled now and stored (atomically: ranks of one machine may race)."""
    lib = nvrtc.load()
    arch = f"sm_{sm}"
    key = json.dumps([kernel_source(file), NVRTC_OPTIONS, arch, lib.version(), KERNELS[file]])
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    d = cache.cache_dir("rtc", "FASTRES_RTC_CACHE")
    cubin, names = d / f"{file[:-3]}-{arch}-{digest}.cubin", d / f"{file[:-3]}-{arch}-{digest}.json"
    if cubin.is_file() and names.is_file():
        try:
            lowered = json.loads(names.read_text())
            if set(lowered) == set(KERNELS[file]):
                return cubin, lowered
        except (OSError, ValueError):
            pass
    out = compile_kernels(file, arch)
    for path, data in ((names, json.dumps(out.lowered).encode()), (cubin, out.cubin)):
        cache.write_atomically(path, data)
    return cubin, dict(out.lowered)


@functools.lru_cache(maxsize=1)
def status() -> dict:
    """What the run-time compiled path has: {"available": bool, "reason": why not (or ""),
    "cupy": version, "runtime": CuPy's CUDA runtime version (13000), "stream_api": how torch's
    streams reach CuPy ("Stream.from_external" from CuPy 14 on, else "ExternalStream"), "nvrtc":
    (major, minor) of the NVRTC fastres compiles with, "archs": the sm_XY numbers it compiles
    for}. Needs no GPU: CuPy links its CUDA runtime statically and is asked nothing that needs a
    driver."""
    out = {"available": False, "reason": "", "cupy": None, "runtime": None, "stream_api": None, "nvrtc": None}
    out["archs"] = ()
    try:
        import cupy
        from cupy.cuda import runtime
    except Exception as e:  # noqa: BLE001 - any import failure means: no CuPy path
        out["reason"] = f"CuPy is not importable ({type(e).__name__}: {e}); `pip install fastres[gpu]` brings it"
        return out
    out["cupy"] = cupy.__version__
    out["stream_api"] = _stream_api(cupy)
    try:
        out["runtime"] = int(runtime.runtimeGetVersion())
    except Exception as e:  # noqa: BLE001
        out["reason"] = f"CuPy {cupy.__version__} imports but cannot tell its CUDA runtime ({type(e).__name__}: {e})"
        return out
    try:
        lib = nvrtc.load()
        out["nvrtc"] = lib.version()
        out["archs"] = tuple(lib.supported_archs())
    except (nvrtc.NvrtcUnavailable, nvrtc.NvrtcError, OSError) as e:
        out["reason"] = str(e)
        return out
    out["available"] = True
    return out


def available() -> tuple[bool, str]:
    """(True, "") when CuPy imports and fastres's NVRTC loads, else (False, the reason)."""
    st = status()
    return st["available"], st["reason"]


_MODULES: dict[tuple[str, int], dict] = {}


def _module(file: str, device: int) -> dict:
    """{name expression: CuPy kernel} of `file` on `device`: its cubin for the device's
    architecture, compiled by fastres (cubin_for) and loaded by CuPy from the file, never
    compiled by CuPy; cached."""
    key = (file, device)
    kernels = _MODULES.get(key)
    if kernels is None:
        import cupy
        import torch

        major, minor = torch.cuda.get_device_capability(device)
        path, lowered = cubin_for(file, 10 * major + minor)
        with cupy.cuda.Device(device):
            module = cupy.RawModule(path=str(path))
            # loads the module now, so that an error names the file here, not at a launch
            kernels = {expr: module.get_function(lowered[expr]) for expr in KERNELS[file]}
        _MODULES[key] = kernels
    return kernels


class _StreamHandle:
    """A cudaStream_t handle, offered through the CUDA stream protocol (`__cuda_stream__`:
    version 0, the address) to CuPy's Stream.from_external."""

    def __init__(self, handle: int):
        self.handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)


_STREAMS: dict[tuple[int, int], object] = {}


def _stream_api(cupy) -> str:
    """CuPy 14 wraps a foreign stream with Stream.from_external (the CUDA stream protocol) and
    deprecates ExternalStream(ptr, device_id), CuPy 13's only way (cupy/cuda/stream.pyx of both)."""
    return "Stream.from_external" if hasattr(cupy.cuda.Stream, "from_external") else "ExternalStream"


def _cupy_stream(handle: int, device: int):
    """A CuPy view of torch's stream `handle` on `device` (cached: torch keeps its streams). CuPy
    never destroys it: from_external keeps a reference to the protocol object and leaves the
    stream alone when collected, ExternalStream owns nothing."""
    key = (device, handle)
    st = _STREAMS.get(key)
    if st is None:
        import cupy

        if _stream_api(cupy) == "Stream.from_external":
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
        fn = _module(file, device)[_NS + kernel]
        st = _cupy_stream(stream, device)
        fn((grid,), (block,), args, stream=st)
        if _sync_check():
            try:
                st.synchronize()
            except Exception as e:  # noqa: BLE001 - CuPy's CUDARuntimeError, renamed to say where
                raise RuntimeError(f"FASTRES_SYNC_CHECK after {kernel} ({file}, compiled at run time): {e}") from e


def run(launch_list, device: int, stream: int) -> None:
    """Each of `launch_list` (fastres.kernels.launches.Launch), in order, on `device` and torch's stream
    `stream`, its arguments as numpy scalars of their C types (np.uint64 for addresses)."""
    import numpy as np

    types = {"p": np.uint64, "i64": np.int64, "i32": np.int32, "f32": np.float32}
    for one in launch_list:
        args = tuple(types[ctype](value) for _, ctype, value in one.args)
        launch(one.file, one.kernel, one.grid, one.block, args, device, stream)
