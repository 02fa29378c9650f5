"""fastres.kernels.paths: which implementation an op runs on a device, and why.

    probe = Probe.of(_C)                        # what this process can do (drivers, GPUs, CuPy)
    choice = choose("fused_step", torch.device("cuda", 0), probe)
    choice.path, choice.reason                  # "cuda", "fastres._C's CUDA kernel (sm_90 SASS)"

Paths:
  cpu    fastres._C's C++/OpenMP kernel (CPU tensors)
  cuda   fastres._C's CUDA kernel (native CUDA)
  rtc    the same CUDA kernels compiled at run time with NVRTC, loaded with CuPy (fastres.kernels.rtc)
  torch  the torch version of the op (fastres.kernels.torch_ops)
  sim    the CUDA kernels executed on the CPU (fastres.kernels.sim), for CPU tensors, only when asked for

The native CUDA kernels are chosen only where they can run. fastres._C links the CUDA
runtime statically (CMakeLists.txt), so the driver must support that runtime's major
version (CUDA minor version compatibility: any driver of the same major or newer serves a
13.x runtime; 580 is the first for CUDA 13), and the device must be one the build holds
machine code for: SASS of the same major architecture and a minor at most the device's (an
sm_80 cubin runs on sm_86 and sm_89; an sm_90a one only on sm_90), or PTX of an architecture
at most the device's, which the driver JIT-compiles at first use. Otherwise the kernels
would fail at the first launch with "no kernel image" or "insufficient driver"; instead ops
runs the run-time compiled kernels where CuPy is there, else the torch path, and warns once
saying why. The probe is data, so tests inject an old driver, an unbuilt architecture, no
CuPy or no GPU on a CPU machine.
"""

from __future__ import annotations

import ctypes
import dataclasses
import re
from collections.abc import Callable

import torch

__all__ = ["OPS", "PATHS", "Choice", "Gpu", "Probe", "Rtc", "choose", "driver_version", "parse_arch"]

OPS = ("segment_sq_norms", "fused_step", "wire_pack", "wire_unpack")
PATHS = {
    "cpu": "native CPU",
    "cuda": "native CUDA",
    "rtc": "run-time compiled (CuPy/NVRTC)",
    "torch": "torch fallback",
    "sim": "CUDA kernels on the CPU (sim)",
}
FORCES = ("auto", "native", "rtc", "torch", "sim")

# the first driver of each CUDA major version (NVIDIA's CUDA Toolkit release notes, table 3)
_MIN_DRIVER = {11: "450.80", 12: "525.60", 13: "580"}


@dataclasses.dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    capability: tuple[int, int]
    memory: int  # bytes

    @property
    def sm(self) -> int:
        return 10 * self.capability[0] + self.capability[1]


@dataclasses.dataclass(frozen=True)
class Rtc:
    """The run-time compiled path's means (fastres.kernels.rtc.status): whether CuPy (which loads and
    launches the kernels) and fastres's NVRTC (which compiles them) load, the CUDA runtime CuPy
    links (statically: it needs a driver of that major version, as fastres._C does), and the
    architectures the NVRTC compiles for."""

    available: bool
    reason: str = ""
    runtime: int | None = None
    archs: tuple = ()

    @classmethod
    def of_status(cls, st: dict) -> Rtc:
        return cls(st["available"], st["reason"], st["runtime"], tuple(st["archs"]))


@dataclasses.dataclass
class Probe:
    """What decides the paths: the native build, the driver, the GPUs, CuPy.

    native:       fastres._C imported
    cuda_ops:     the ops that have a `<op>_cuda` kernel in fastres._C
    cuda_archs:   the build's CUDA architectures as CMake got them ("80-real", "90")
    cuda_runtime: CUDART_VERSION of the linked runtime (13000 = 13.0), None without CUDA
    driver:       the CUDA version the driver supports (13000), None without a driver
    gpus:         the GPUs torch sees
    rtc:          the CuPy path's Rtc, or a function returning it when first needed
                  (importing CuPy takes a while; the native path does not need it)
    """

    native: bool = True
    cuda_ops: frozenset = frozenset()
    cuda_archs: tuple = ()
    cuda_runtime: int | None = None
    driver: int | None = None
    gpus: tuple = ()
    rtc: Rtc | Callable[[], Rtc] = Rtc(False, "not probed")

    def rtc_status(self) -> Rtc:
        if callable(self.rtc):
            self.rtc = self.rtc()
        return self.rtc

    @classmethod
    def of(cls, C) -> Probe:
        """The probe of this process, for the loaded fastres._C `C` (or None)."""
        from fastres.kernels import rtc

        info = C.build_info() if C is not None else {}
        gpus = []
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                gpus.append(Gpu(i, p.name, (p.major, p.minor), int(p.total_memory)))
        return cls(
            native=C is not None,
            cuda_ops=frozenset(op for op in OPS if C is not None and hasattr(C, f"{op}_cuda")),
            cuda_archs=tuple(info.get("cuda_archs") or ()),
            cuda_runtime=info.get("cuda_version"),
            driver=driver_version(),
            gpus=tuple(gpus),
            rtc=lambda: Rtc.of_status(rtc.status()),
        )


def driver_version() -> int | None:
    """CUDA version the installed driver supports (cuDriverGetVersion: 13000 = 13.0), None
    when libcuda does not load. Needs no GPU and initialises nothing."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    v = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(v)) != 0:
        return None
    return v.value


_ARCH = re.compile(r"^(?:sm_|compute_)?(\d+)([af]?)(?:-(real|virtual))?$")


def parse_arch(entry: str) -> tuple[int, str, bool, bool]:
    """A CMake CUDA architecture ("80-real", "90", "90a-real", "100-virtual") as
    (number, suffix, has SASS, has PTX)."""
    m = _ARCH.match(entry.strip())
    if not m:
        raise ValueError(f"cuda_archs: cannot read architecture {entry!r}")
    num, suffix, kind = int(m.group(1)), m.group(2), m.group(3)
    return num, suffix, kind in (None, "real"), kind in (None, "virtual")


def _runs_on(archs, sm: int) -> str | None:
    """How a build with `archs` runs on a device of architecture `sm`, or None."""
    parsed = [parse_arch(a) for a in archs]
    for num, suffix, sass, _ptx in parsed:
        if not sass:
            continue
        if suffix == "a" and num == sm:
            return f"sm_{num}{suffix} SASS"
        if suffix != "a" and num // 10 == sm // 10 and num % 10 <= sm % 10:
            return f"sm_{num}{suffix} SASS"
    ptx = [num for num, suffix, _sass, has_ptx in parsed if has_ptx and suffix != "a" and num <= sm]
    if ptx:
        return f"compute_{max(ptx)} PTX, JIT-compiled by the driver for sm_{sm} at first use"
    return None


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _driver_serves(probe: Probe, runtime: int, who: str) -> str | None:
    """Why the driver cannot run `who`, which links CUDA runtime `runtime` statically; None if it can."""
    if not probe.driver:
        return "no CUDA driver found (libcuda.so.1 does not load)"
    if probe.driver // 1000 < runtime // 1000:
        need = _MIN_DRIVER.get(runtime // 1000)
        return (
            f"the driver supports CUDA {_cuda_version(probe.driver)}, but {who} links the CUDA "
            f"{_cuda_version(runtime)} runtime, which needs a driver for CUDA {runtime // 1000}.0 or newer"
            + (f" (>= {need})" if need else "")
        )
    return None


def run_time_compiled(index: int, probe: Probe) -> tuple[bool, str]:
    """(True, "") when the CuPy path can compile and run fastres's kernels on GPU `index`, else (False, why)."""
    r = probe.rtc_status()
    if not r.available:
        return False, r.reason
    why = _driver_serves(probe, r.runtime or 0, "CuPy")
    if why:
        return False, why + f" (a CuPy wheel for the driver's CUDA, e.g. cupy-cuda{probe.driver // 1000}x, would do)"
    gpu = next((g for g in probe.gpus if g.index == index), None)
    if gpu is not None and r.archs and gpu.sm not in r.archs:
        return (
            False,
            f"fastres's NVRTC compiles for sm_{min(r.archs)}..sm_{max(r.archs)}, not for {gpu.name} (sm_{gpu.sm})",
        )
    return True, ""


def native_cuda(op: str, index: int, probe: Probe) -> tuple[bool, str]:
    """(True, how) when fastres._C's CUDA kernel for `op` runs on GPU `index`, else (False, why)."""
    if op not in probe.cuda_ops:
        if not probe.cuda_ops:
            return False, "fastres._C was built without CUDA kernels (no nvcc at build time, or FASTRES_CUDA=OFF)"
        return False, f"fastres._C has no CUDA kernel for {op}"
    why = _driver_serves(probe, probe.cuda_runtime or 0, "fastres._C")
    if why:
        return False, why
    gpu = next((g for g in probe.gpus if g.index == index), None)
    if gpu is None:
        return False, f"GPU {index} is not visible to torch"
    how = _runs_on(probe.cuda_archs, gpu.sm)
    if how is None:
        built = ", ".join(probe.cuda_archs) or "none"
        return False, (
            f"fastres._C holds CUDA code for architectures {built}, none of which runs on {gpu.name} "
            f"(sm_{gpu.sm}); rebuild with FASTRES_CUDA_ARCHS={gpu.sm}"
        )
    return True, f"fastres._C's CUDA kernel ({how})"


@dataclasses.dataclass(frozen=True)
class Choice:
    path: str  # a key of PATHS
    reason: str

    def describe(self) -> str:
        return f"{PATHS[self.path]}: {self.reason}"


def choose(op: str, device: torch.device, probe: Probe, force: str = "auto") -> Choice:
    """The path of `op` for a tensor on `device`.

    force: "auto" (the best that runs), "native" (fastres._C's kernel or RuntimeError), "rtc"
    (the CuPy path or RuntimeError), "torch", "sim" (CPU tensors only). Never raises for "auto"."""
    if force not in FORCES:
        raise ValueError(f"path: must be one of {', '.join(FORCES)}, got {force!r}")
    if force == "torch":
        return Choice("torch", "asked for (path='torch')")
    if force == "sim":
        if device.type != "cpu":
            raise RuntimeError(
                f"path='sim': the sim runs fastres's CUDA kernels on the CPU; {op} got a {device.type} tensor"
            )
        return Choice("sim", "asked for (path='sim'): fastres's CUDA kernels executed on the CPU (fastres.kernels.sim)")
    if device.type == "cpu":
        if force == "rtc":
            raise RuntimeError(f"path='rtc': run-time compiled kernels are CUDA kernels; {op} got a CPU tensor")
        if not probe.native:
            if force == "native":
                raise RuntimeError("path='native': fastres._C is not importable")
            return Choice("torch", "fastres._C is not importable")
        return Choice("cpu", "fastres._C's C++ kernel")
    if device.type != "cuda":
        if force != "auto":
            raise RuntimeError(f"path={force!r}: fastres has no kernels for {device.type} tensors")
        return Choice("torch", f"fastres has no kernels for {device.type} tensors")
    index = 0 if device.index is None else device.index
    ok, how = native_cuda(op, index, probe)
    if force == "native":
        if not ok:
            raise RuntimeError(f"path='native': {how}")
        return Choice("cuda", how)
    if ok and force == "auto":
        return Choice("cuda", how)
    rtc_ok, rtc_why = run_time_compiled(index, probe)
    if force == "rtc":
        if not rtc_ok:
            raise RuntimeError(f"path='rtc': {rtc_why}")
        return Choice("rtc", "asked for (path='rtc')")
    if rtc_ok:
        return Choice("rtc", f"{how}; compiling fastres's CUDA kernels at run time with NVRTC, run with CuPy")
    return Choice("torch", f"{how}; and {rtc_why}")
