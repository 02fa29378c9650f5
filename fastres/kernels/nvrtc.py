"""fastres.kernels.nvrtc: NVRTC called through ctypes, to compile CUDA source to PTX on any machine.

    lib = nvrtc.load()                      # Nvrtc, or NvrtcUnavailable saying where it looked
    lib.version()                           # (13, 0)
    ptx, lowered = lib.compile_ptx(source, "lars_cuda.cu", arch="compute_90",
                                   name_expressions=["fastres::rtc::fused_update_kernel<true>"])
    out = lib.compile(source, "lars_cuda.cu", arch="sm_90", options=(...), name_expressions=[...])
    out.ptx, out.cubin, out.lowered         # a real architecture gives machine code (a cubin) too

NVRTC needs no GPU and no driver: it turns source into PTX and machine code (a cubin) in the
calling process (NVRTC guide, "Introduction"). That is what lets CI, which has neither, check
on every run that fastres's kernel sources still compile at run time, with the very options
the GPU path uses (tests/test_rtc.py), and what `python -m fastres.doctor` reports. The GPU
path compiles with it too (fastres.kernels.rtc: a cubin for the device's architecture, with
fastres's own options) and only loads and launches the result with CuPy: CuPy's own compile
would append options of its own (`-ftz=true`).

Where the library is looked for, in order: $FASTRES_NVRTC (a path to libnvrtc.so*), the
`nvidia-cuda-nvrtc` wheel (`nvidia/cu13/lib`, or `nvidia/cuda_nvrtc/lib` for CUDA 12),
$CUDA_HOME/lib64, /usr/local/cuda/lib64, then the dynamic loader's own search. The wheel's
libnvrtc loads its libnvrtc-builtins from its own folder; it is loaded first, globally, so
that a loader configuration without that folder still finds it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import glob
import os

__all__ = ["Compiled", "Nvrtc", "NvrtcError", "NvrtcUnavailable", "candidates", "load"]


class NvrtcUnavailable(RuntimeError):
    """No loadable libnvrtc was found (the message lists where fastres looked)."""


class NvrtcError(RuntimeError):
    """NVRTC refused a program; `log` holds its compilation log."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message + (f"\n{log}" if log else ""))
        self.log = log


def _wheel_dirs() -> list[str]:
    try:
        import nvidia  # namespace package of NVIDIA's CUDA wheels
    except ImportError:
        return []
    dirs = []
    for root in getattr(nvidia, "__path__", []):
        dirs += [os.path.join(root, "cu13", "lib"), os.path.join(root, "cuda_nvrtc", "lib")]
    return dirs


def candidates() -> list[str]:
    """Paths of libnvrtc.so* that exist, in the order they are tried."""
    found = []
    env = os.environ.get("FASTRES_NVRTC")
    if env:
        found.append(env)
    dirs = _wheel_dirs()
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home:
        dirs.append(os.path.join(cuda_home, "lib64"))
    dirs.append("/usr/local/cuda/lib64")
    for d in dirs:
        found += sorted(glob.glob(os.path.join(d, "libnvrtc.so*")), key=len)
    name = ctypes.util.find_library("nvrtc")
    if name:
        found.append(name)
    seen, out = set(), []
    for f in found:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


@dataclasses.dataclass(frozen=True)
class Compiled:
    """One NVRTC compilation: its PTX, its cubin (for a real architecture "sm_XY"; None for a
    virtual one "compute_XY"), the lowered (mangled) name of each name expression, and the
    options NVRTC was given, exactly."""

    ptx: str
    cubin: bytes | None
    lowered: dict
    options: tuple


class Nvrtc:
    """A loaded libnvrtc: its version and a compiler to PTX and cubin."""

    def __init__(self, path: str):
        folder = os.path.dirname(path)
        for builtins in sorted(glob.glob(os.path.join(folder, "libnvrtc-builtins.so*")), key=len):
            try:
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
        self.path = path
        self._lib = ctypes.CDLL(path)
        self._lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        self._lib.nvrtcGetLoweredName.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self._lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return major.value, minor.value

    def supported_archs(self) -> list[int]:
        """The sm_XY numbers this NVRTC can compile for (nvrtcGetSupportedArchs)."""
        n = ctypes.c_int()
        self._check(self._lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * n.value)()
        self._check(self._lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        return list(archs)

    def _check(self, status: int, what: str, prog=None) -> None:
        if status != 0:
            err = self._lib.nvrtcGetErrorString(status).decode()
            raise NvrtcError(f"{what} failed: {err} (status {status})", self._log(prog) if prog is not None else "")

    def _log(self, prog) -> str:
        size = ctypes.c_size_t()
        if self._lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)) != 0:
            return ""
        buf = ctypes.create_string_buffer(size.value)
        self._lib.nvrtcGetProgramLog(prog, buf)
        return buf.value.decode(errors="replace").strip()

    def compile_ptx(self, source: str, name: str, **kw) -> tuple[str, dict[str, str]]:
        """PTX of `source` for a virtual architecture (`arch=`, default compute_80) and the lowered
        (mangled) name of each name expression: `compile`'s, which takes the same arguments."""
        out = self.compile(source, name, **kw)
        return out.ptx, out.lowered

    def compile(
        self,
        source: str,
        name: str,
        *,
        arch: str = "compute_80",
        options: tuple[str, ...] = (),
        name_expressions: tuple[str, ...] | list[str] = (),
    ) -> Compiled:
        """`source` compiled for `arch` ("compute_90": PTX; "sm_90": PTX and a cubin) with
        --gpu-architecture and then exactly `options`. Raises NvrtcError with NVRTC's log when
        the source is refused."""
        prog = ctypes.c_void_p()
        self._check(
            self._lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
            "nvrtcCreateProgram",
        )
        try:
            for expr in name_expressions:
                self._check(self._lib.nvrtcAddNameExpression(prog, expr.encode()), f"nvrtcAddNameExpression({expr})")
            opts = (f"--gpu-architecture={arch}", *options)
            argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
            self._check(self._lib.nvrtcCompileProgram(prog, len(opts), argv), f"compiling {name} for {arch}", prog)
            size = ctypes.c_size_t()
            self._check(self._lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
            buf = ctypes.create_string_buffer(size.value)
            self._check(self._lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
            cubin = None
            if arch.startswith("sm_"):
                self._check(self._lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
                raw = ctypes.create_string_buffer(size.value)
                self._check(self._lib.nvrtcGetCUBIN(prog, raw), "nvrtcGetCUBIN")
                cubin = raw.raw[: size.value]
            lowered = {}
            for expr in name_expressions:
                out = ctypes.c_char_p()
                self._check(
                    self._lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(out)), "nvrtcGetLoweredName"
                )
                lowered[expr] = out.value.decode()
            return Compiled(buf.value.decode(), cubin, lowered, opts)
        finally:
            self._lib.nvrtcDestroyProgram(ctypes.byref(prog))


_LOADED: Nvrtc | None = None


def load() -> Nvrtc:
    """The first loadable libnvrtc of `candidates()` (cached); NvrtcUnavailable otherwise."""
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    tried = []
    for path in candidates():
        try:
            lib = Nvrtc(path)
            lib.version()
        except (OSError, AttributeError, NvrtcError) as e:
            tried.append(f"{path}: {e}")
            continue
        _LOADED = lib
        return lib
    where = (
        "; ".join(tried)
        or "no libnvrtc.so* in the wheel, $CUDA_HOME/lib64, /usr/local/cuda/lib64 or on the loader's path"
    )
    raise NvrtcUnavailable(
        f"NVRTC not found ({where}); install it with `pip install nvidia-cuda-nvrtc` "
        "(or point FASTRES_NVRTC at a libnvrtc.so)"
    )
