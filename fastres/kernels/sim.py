"""fastres.kernels.sim: fastres's CUDA kernels executed on the CPU, from the very sources a GPU runs.

    ops.segment_sq_norms(flat, chunks, path="sim")   # every op takes path="sim" with CPU tensors
    sim.run(launch_list)                              # fastres.kernels.launches' Launches, on host memory
    sim.modules(["lars_cuda.cu"])                     # built at first use, cached on disk
    sim.build("copy", source, kernels)                # a module of other source text (the tests' controls)
    sim.status()                                      # the compiler, UBSan, the cache folder, or why not

How. Each csrc/*_cuda.cu file is compiled by the host C++ compiler ($CXX, else c++ or g++) as
NVRTC compiles it for fastres.kernels.rtc, from the same text (rtc.kernel_source: the kernels
only, nothing in them changed) with csrc/sim/cuda_sim.h in front, which gives what CUDA gives a
kernel (threadIdx and the rest, __syncthreads, warp shuffles, __shared__ memory per block, float4
and ushort4 with the GPU's alignment), and behind it a table of the kernels, one entry per name
expression of rtc.KERNELS. Linked with csrc/sim/sim_runtime.cpp into one shared library per file
(no libtorch, no CUDA) and loaded with ctypes. The runtime runs a launch block by block, each
block's threads as fibers that switch at every __syncthreads and shuffle, in an order drawn from
a seed (csrc/sim/sim_runtime.cpp says how), so that a missing barrier changes the result. It
raises SimError, naming the file, line, block and threads, on a barrier that not every live
thread of the block reaches, on a shuffle with a partial mask, and on arguments whose number or
C types differ from the kernel's parameters (what CuPy would pass on unchecked). The kernels are
compiled with UBSan's checks (-fsanitize=undefined, where the compiler has it; the handlers are
csrc/sim/sim_ubsan.cpp's): undefined behaviour in a kernel (a misaligned float4 access, a shift
out of range, a signed overflow) stops the launch at once with UBSan's message, as SimError.

What it executes: the kernels of every op with the grids, blocks, argument types and order that
fastres.kernels.launches describes, which the rtc path hands to CuPy and fastres._C's host
launchers mirror: the index arithmetic, the vector loads and their scalar heads and tails, the
barriers, the shuffles and the order of every addition, on the host memory of CPU tensors.

What it cannot show (a GPU must):
  - bit parity with a GPU where its compiler contracts a * b + c into one FMA (nvcc and NVRTC do,
    -fmad=true): the sim rounds every operation (-ffp-contract=off, like the CPU kernels)
  - speed: a LARS step over ResNet-50's 6,334 chunks takes about 3 s of CPU time here
  - streams, events, asynchrony and NCCL: a launch runs to its end before the call returns
  - concurrency between blocks: blocks run one after another, in a random order, so a race
    between blocks shows only as a dependence on that order; caches, memory fences and atomics
    not at all
  - out-of-bounds reads and writes (compute-sanitizer memcheck's job): a kernel here reads host
    memory, where the bytes past a tensor usually belong to the allocator
  - the GPU's limits: registers, shared memory size, occupancy, __launch_bounds__
  - the machine code: NVRTC and nvcc compile the sources for the GPU, the host compiler for
    the sim (tests/test_rtc.py checks the GPU's PTX)

Modules are cached on disk, keyed by the source text, the flags and the compiler
($FASTRES_SIM_CACHE, else $XDG_CACHE_HOME/fastres/sim or ~/.cache/fastres/sim). Launch seeds run
0, 1, 2, ... in a process ($FASTRES_SIM_SEED sets the first); a SimError names the seed of its
launch, and `run([launch], seed=...)` repeats exactly that schedule.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from fastres.kernels import cache, rtc

__all__ = ["Module", "SimError", "build", "modules", "run", "status"]

_NS = "fastres::rtc::"
FLAGS = ("-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-ffp-contract=off")
FLAGS += ("-U_FORTIFY_SOURCE",)  # glibc's checked longjmp and friends know nothing of fibers
UBSAN = ("-fsanitize=undefined", "-fno-sanitize=vptr")  # the checks; their handlers: csrc/sim/sim_ubsan.cpp
_CODES = {"p": 0, "i64": 1, "i32": 2, "f32": 3}
_TYPE_NAMES = {0: "a pointer", 1: "int64_t", 2: "int", 3: "float"}


class SimError(RuntimeError):
    """A launch in the sim did what a GPU would hang, fault or be undefined on (the message says what)."""


class _Kernel(ctypes.Structure):  # csrc/sim/sim_abi.h fastres_sim_kernel
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("num_params", ctypes.c_int),
        ("param_types", ctypes.POINTER(ctypes.c_int)),
        ("invoke", ctypes.c_void_p),
    ]


@functools.cache
def _compiler() -> tuple[str, str] | None:
    """(path, first line of --version) of the host C++ compiler, or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            try:
                out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.returncode == 0:
                return path, out.stdout.splitlines()[0] if out.stdout else "?"
    return None


def status() -> dict:
    """{"available": bool, "reason": why not (or ""), "compiler": its --version line, "cache": the
    folder of the modules, "ubsan": whether the modules loaded so far have UBSan (None before one is)}."""
    cxx = _compiler()
    loaded = [m.ubsan for m in _MODULES.values()]
    return {
        "available": cxx is not None,
        "reason": "" if cxx else "no C++ compiler ($CXX, c++, g++ or clang++ on PATH)",
        "compiler": cxx[1] if cxx else None,
        "cache": str(_cache()),
        "ubsan": all(loaded) if loaded else None,
    }


@functools.cache
def _cache() -> Path:
    return cache.cache_dir("sim", "FASTRES_SIM_CACHE")


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _compile(cmd: list[str], out: Path) -> tuple[bool, str]:
    """Run the compiler writing a temporary file, renamed to `out` when it succeeds."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=out.suffix)
    os.close(fd)
    try:
        run = subprocess.run([*cmd, "-o", tmp], capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            return False, run.stderr
        os.replace(tmp, out)
        return True, ""
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_RUNTIME_LOCK = threading.Lock()
_RUNTIME = ("sim/sim_runtime.cpp", "sim/sim_ubsan.cpp")


def _runtime_text(name: str) -> str:
    root = rtc.source_dir()
    return (root / name).read_text() + (root / "sim" / "sim_abi.h").read_text()


def _runtime() -> list[Path]:
    """csrc/sim/sim_runtime.cpp and sim_ubsan.cpp compiled once: object files in the cache."""
    cxx, version = _compiler()
    root = rtc.source_dir()
    objects = []
    with _RUNTIME_LOCK:
        for name in _RUNTIME:
            out = _cache() / f"{Path(name).stem}-{_digest(_runtime_text(name), FLAGS, version)}.o"
            if not out.is_file():
                ok, err = _compile([cxx, *FLAGS, "-c", "-I", str(root), str(root / name)], out)
                if not ok:
                    raise SimError(f"fastres.kernels.sim: compiling csrc/{name} failed:\n{err}")
            objects.append(out)
    return objects


def module_source(kernel_text: str, kernels: tuple[str, ...]) -> str:
    """The translation unit of a module: csrc/sim/cuda_sim.h, the kernels' text, their table."""
    table = "\n".join(f'    ::fastres_sim::Kernel<&{expr}>::info("{expr}"),' for expr in kernels)
    return (
        rtc.inlined("sim/cuda_sim.h")
        + kernel_text
        + '\n#line 1 "fastres-sim-kernel-table"\n'
        + f"static const fastres_sim_kernel fastres_sim_table[] = {{\n{table}\n}};\n"
        + 'extern "C" __attribute__((visibility("default"))) const fastres_sim_kernel* fastres_sim_kernels(int* n) {\n'
        + f"  *n = {len(kernels)};\n  return fastres_sim_table;\n}}\n"
    )


_SHARED = re.compile(r"__shared__[^;(){}]*?(\w+)\s*(?:\[[^\]]*\]\s*)*;")


def _shared_outside_the_section(lib: Path, source: str) -> list[str]:
    """The __shared__ variables of `source` that the compiler did not put in the section the runtime
    refills before each block (GCC drops a static's section inside a template); [] without nm."""
    names = set(_SHARED.findall(source))
    nm = shutil.which("nm")
    if not names or nm is None:
        return []
    out = subprocess.run([nm, "-C", "--defined-only", str(lib)], capture_output=True, text=True, timeout=60)
    symbols = [line.split(" ", 2) for line in out.stdout.splitlines() if line.count(" ") >= 2]
    where = {name: int(addr, 16) for addr, _kind, name in symbols if re.fullmatch(r"[0-9a-f]+", addr)}
    lo, hi = where.get("__start_fastres_sim_shared", 0), where.get("__stop_fastres_sim_shared", 0)
    return sorted(
        name
        for name, addr in where.items()
        if name.rsplit("::", 1)[-1] in names and "::" in name and not lo <= addr < hi
    )


class Module:
    """One compiled file's kernels, loaded: `launch` runs one of them."""

    def __init__(self, name: str, path: Path, ubsan: bool):
        self.name, self.path, self.ubsan = name, path, ubsan
        self._lib = lib = ctypes.CDLL(str(path))
        lib.fastres_sim_kernels.restype = ctypes.POINTER(_Kernel)
        lib.fastres_sim_kernels.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.fastres_sim_launch.restype = ctypes.c_int
        lib.fastres_sim_launch.argtypes = [
            ctypes.POINTER(_Kernel),
            ctypes.c_ulonglong,
            ctypes.c_ulonglong,
            ctypes.POINTER(ctypes.c_ulonglong),
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_ulonglong,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        n = ctypes.c_int()
        table = lib.fastres_sim_kernels(ctypes.byref(n))
        self.kernels = {}  # name expression without the namespace -> (entry, parameter type codes)
        for i in range(n.value):
            entry = table[i]
            types = tuple(entry.param_types[j] for j in range(entry.num_params))
            self.kernels[entry.name.decode().removeprefix(_NS)] = (ctypes.pointer(entry), types)

    def launch(self, kernel: str, grid: int, block: int, args: tuple, seed: int) -> None:
        """`kernel` (a name expression without its namespace) on `grid` blocks of `block` threads;
        `args`: (name, C type, value) in its parameter order (fastres.kernels.launches.Launch.args)."""
        if kernel not in self.kernels:
            raise SimError(f"{self.name}: no kernel {kernel!r} (it has {', '.join(self.kernels)})")
        entry, types = self.kernels[kernel]
        if len(args) != len(types):
            raise SimError(f"{kernel}: the launch passes {len(args)} arguments, the kernel takes {len(types)}")
        for i, ((name, ctype, _), want) in enumerate(zip(args, types)):
            if _CODES[ctype] != want:
                raise SimError(
                    f"{kernel}: parameter {i} ({name}) is {_TYPE_NAMES.get(want, 'another type')} in the source, "
                    f"the launch passes {_TYPE_NAMES[_CODES[ctype]]}"
                )
        values = (ctypes.c_ulonglong * max(len(args), 1))(*(_bits(t, v) for _, t, v in args))
        codes = (ctypes.c_int * max(len(args), 1))(*(_CODES[t] for _, t, _ in args))
        err = ctypes.create_string_buffer(4096)
        rc = self._lib.fastres_sim_launch(entry, grid, block, values, len(args), codes, seed, err, len(err))
        where = f"{kernel} ({self.name}, seed {seed})"
        if rc != 0:
            raise SimError(f"{where}: {err.value.decode(errors='replace')}")

    def run(self, launch_list, *, seed: int | None = None) -> None:
        """Each of `launch_list` on this module's kernels, in order (whatever file they name)."""
        with _LOCK:
            for launch in launch_list:
                self.launch(launch.kernel, launch.grid, launch.block, launch.args, _seed(seed))


def _bits(ctype: str, value) -> int:
    """`value` as the 64 bits fastres_sim_launch hands to a parameter of C type `ctype`."""
    import numpy as np

    if ctype == "f32":
        return int(np.float32(value).view(np.uint32))
    if ctype == "i32" and not -(2**31) <= int(value) < 2**31:
        raise SimError(f"an int argument out of range: {value}")
    return int(value) & 0xFFFF_FFFF_FFFF_FFFF


_MODULES: dict[str, Module] = {}
_LOCK = threading.RLock()
_SEEDS = itertools.count(int(os.environ.get("FASTRES_SIM_SEED", "0")))


def _seed(seed: int | None) -> int:
    return next(_SEEDS) if seed is None else int(seed)


def _link(cxx: str, name: str, key: str, source: str, flags: tuple, lib: Path) -> str:
    """Compiles `source` with `flags` and links it with the runtime into `lib`; the compiler's
    messages when that fails ("" when it worked)."""
    src = _cache() / f"{name}-{key}.cpp"
    obj = _cache() / f".{name}-{key}-{os.getpid()}-{threading.get_ident()}.o"
    cache.write_atomically(src, source.encode())
    ok, err = _compile([cxx, *flags, "-c", str(src)], obj)
    if not ok:
        return err
    try:  # without libubsan: sim_ubsan.cpp's handlers; -z defs: none of them may be missing
        ok, err = _compile([cxx, "-shared", "-Wl,-Bsymbolic", "-Wl,-z,defs", str(obj), *map(str, _runtime())], lib)
    finally:
        obj.unlink()
    return "" if ok else err


def _build(name: str, source: str) -> Module:
    """The module of translation unit `source`: from the cache, or compiled now (with UBSan's checks
    where the compiler has them, else without)."""
    cxx = _compiler()
    if cxx is None:
        raise SimError(f"fastres.kernels.sim: {status()['reason']}")
    errors = []
    for ubsan in (True, False):
        flags = (*FLAGS, *(UBSAN if ubsan else ()))
        key = _digest(name, source, flags, cxx[1], [_runtime_text(r) for r in _RUNTIME])
        if key in _MODULES:
            return _MODULES[key]
        lib = _cache() / f"{name}-{key}.so"
        if not lib.is_file():
            err = _link(cxx[0], name, key, source, flags, lib)
            if err:
                errors.append(err)
                continue  # without UBSan once more (a compiler that lacks it), then give up
        outside = _shared_outside_the_section(lib, source)
        if outside:
            raise SimError(
                f"fastres.kernels.sim: {name}: __shared__ {', '.join(outside)} is not in the per-block section "
                "(a __shared__ inside a template: GCC drops its section); the sim cannot refill it per block"
            )
        module = _MODULES[key] = Module(name, lib, ubsan)
        return module
    raise SimError(f"fastres.kernels.sim: compiling {name} failed:\n" + "\n".join(errors))


def build(name: str, kernel_text: str, kernels: tuple[str, ...]) -> Module:
    """A module of `kernel_text` (a kernel file's text as rtc.kernel_source gives it, or a copy of it
    changed on purpose) holding the kernels with the name expressions `kernels`. Thread-safe: builds
    from several threads run in parallel."""
    return _build(name, module_source(kernel_text, tuple(kernels)))


_FILES: dict[str, Module] = {}


def modules(files) -> dict[str, Module]:
    """{file: Module} for kernel files of fastres.kernels.rtc.KERNELS, those not loaded yet built (or
    found in the cache) in parallel."""
    files = list(dict.fromkeys(files))
    missing = [f for f in files if f not in _FILES]
    if missing:
        with concurrent.futures.ThreadPoolExecutor(len(missing)) as pool:
            built = pool.map(lambda f: build(f[: -len(".cu")], rtc.kernel_source(f), rtc.KERNELS[f]), missing)
            _FILES.update(zip(missing, built))
    return {f: _FILES[f] for f in files}


def run(launch_list, *, seed: int | None = None) -> None:
    """Each launch of `launch_list` (fastres.kernels.launches.Launch), in order, on the kernels of its
    file: each with the next seed of the process, or all with `seed`."""
    launch_list = list(launch_list)
    built = modules(launch.file for launch in launch_list)
    with _LOCK:
        for launch in launch_list:
            built[launch.file].launch(launch.kernel, launch.grid, launch.block, launch.args, _seed(seed))
