"""fastres.kernels.launches: every native call and CUDA launch of fastres.kernels.ops, described once.

    call = Call.of("wire_pack", src=src_ptr, dst=dst_ptr, dst_dtype=2, n=n, scale=0.125)
    call.values()               # fastres._C's wire_pack_cpu / wire_pack_cuda arguments, in order
    kernel_launches(call)       # [Launch("wire_cuda.cu", "pack_kernel<2>", grid, 256, (("src", "p", ...), ...))]

An op's `Call` holds its arguments by name, each of the C type ARG_TYPES gives it, in the order
of NATIVE_PARAMS: the leading parameters of fastres._C's `<op>_cpu` and `<op>_cuda` (the CPU entry
takes its scratch and thread count after them, the CUDA entry the device and the stream).
`kernel_launches(call)` is the host launcher of csrc/*_cuda.cu written in Python: the kernels it
launches, in order, with their grids and blocks, each kernel's arguments picked by name in the
order of its parameters (KERNEL_PARAMS). The three paths that run an op on kernels read it:

  native  fastres._C.<op>_cpu(*call.values(), ...), fastres._C.<op>_cuda(*call.values(), device, stream)
  rtc     kernel_launches(call) through CuPy (fastres.kernels.rtc.run): numpy scalars of the C types
  sim     kernel_launches(call) on the CPU (fastres.kernels.sim.run): the same kernels, grids and bits

Coupled with csrc/: NATIVE_PARAMS with the pybind11 signatures of csrc/module.cpp, KERNEL_PARAMS
with the __global__ signatures of csrc/*_cuda.cu, the launchers below with the host launchers
there, the block sizes with their constants. tests/test_sim.py checks the first two against the
module's and the sources' signatures, and the third by running the kernels on the CPU (sim).
"""

from __future__ import annotations

import dataclasses

from fastres.kernels.checks import check_grid
from fastres.kernels.torch_ops import STEP_LARS, STEP_NESTEROV

__all__ = [
    "ARG_TYPES",
    "CHUNK_THREADS",
    "KERNEL_FILES",
    "KERNEL_PARAMS",
    "MAX_BLOCKS",
    "NATIVE_PARAMS",
    "SEGMENT_THREADS",
    "WIRE_THREADS",
    "Call",
    "Launch",
    "kernel_launches",
]

CHUNK_THREADS = 256  # csrc/cuda_common.cuh kChunkThreads: one block per 4096-element chunk
SEGMENT_THREADS = 256  # csrc/segment_sq_norms_cuda.cuh kSegmentThreads: one block per segment
WIRE_THREADS = 256  # csrc/wire_cuda.cu kWireThreads: grid-stride kernels
MAX_BLOCKS = 65535  # csrc/wire_cuda.cu kMaxBlocks

# The C type of every argument name: "p" an address (uintptr_t, a pointer in a kernel), "i64"
# int64_t, "i32" int, "f32" float. A name means one thing in every call and kernel.
_ADDRESSES = ("flat", "table", "partials", "out", "w", "g", "m", "seg_group", "seg_flags", "hparams", "found_inf")
ARG_TYPES = {
    **dict.fromkeys((*_ADDRESSES, "wsq_out", "sq_avg", "src", "dst"), "p"),
    **dict.fromkeys(("S", "C", "n", "lo", "hi", "begin", "end"), "i64"),
    **dict.fromkeys(("dtype", "dst_dtype", "src_dtype", "mode"), "i32"),
    **dict.fromkeys(("eps", "scale"), "f32"),
}

_STEP = ("w", "g", "m", "table", "S", "C", "seg_group", "seg_flags", "hparams", "found_inf", "mode", "eps")
_STEP += ("partials", "wsq_out", "sq_avg")

# fastres._C.<op>_cpu / <op>_cuda: their leading parameters (csrc/module.cpp)
NATIVE_PARAMS = {
    "segment_sq_norms": ("flat", "dtype", "table", "S", "C", "partials", "out"),
    "fused_step": _STEP,
    "wire_pack": ("src", "dst", "dst_dtype", "n", "scale"),
    "wire_unpack": ("src", "src_dtype", "dst", "n", "scale", "table", "S", "C", "lo", "hi", "partials", "out"),
}

# the parameters of every __global__ function of csrc/*_cuda.cu, in order
KERNEL_PARAMS = {
    "chunk_sq_sums_kernel": ("flat", "table", "S", "C", "partials"),
    "segment_partials_sum_kernel": ("partials", "table", "S", "C", "out"),
    "chunk_norms_kernel": ("w", "g", "mode", "table", "S", "C", "seg_flags", "partials"),
    "fused_update_kernel": _STEP,
    "pack_kernel": ("src", "dst", "n", "scale"),
    "unpack_kernel": ("src", "dst", "begin", "end", "scale"),
    "unpack_chunks_kernel": ("src", "dst", "scale", "table", "S", "C", "partials"),
}

# the source file each op's kernels are in (fastres.kernels.rtc.KERNELS' keys)
KERNEL_FILES = {
    "segment_sq_norms": "segment_sq_norms_cuda.cu",
    "fused_step": "lars_cuda.cu",
    "wire_pack": "wire_cuda.cu",
    "wire_unpack": "wire_cuda.cu",
}


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of an op: its arguments by name (addresses as ints, 0 for none)."""

    op: str
    args: dict

    @classmethod
    def of(cls, op: str, **args) -> Call:
        want = NATIVE_PARAMS[op]
        if set(args) != set(want):
            raise TypeError(f"{op}: arguments {sorted(args)}, expected {sorted(want)}")
        return cls(op, args)

    def __getattr__(self, name: str):
        try:
            return self.__dict__["args"][name]
        except KeyError:
            raise AttributeError(name) from None

    def values(self) -> tuple:
        """The arguments in fastres._C's order."""
        return tuple(self.args[name] for name in NATIVE_PARAMS[self.op])


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch: `kernel` is a name expression of fastres.kernels.rtc.KERNELS[file]
    without its namespace; `args` are (name, C type, value) in the kernel's parameter order."""

    file: str
    kernel: str
    grid: int
    block: int
    args: tuple

    @classmethod
    def of(cls, call: Call, kernel: str, grid: int, block: int, **extra) -> Launch:
        values = {**call.args, **extra}
        names = KERNEL_PARAMS[kernel.split("<")[0]]
        args = tuple((name, ARG_TYPES[name], values[name]) for name in names)
        return cls(KERNEL_FILES[call.op], kernel, int(grid), int(block), args)


def _grid_for(n: int) -> int:
    """csrc/wire_cuda.cu's grid_for: grid-stride kernels over n elements, 4 per thread."""
    quads = -(-n // 4)
    return min(max(-(-quads // WIRE_THREADS), 1), MAX_BLOCKS)


def _segment_sq_norms(c: Call) -> list[Launch]:  # csrc/segment_sq_norms_cuda.cu: segment_sq_norms_cuda
    check_grid("segments and chunks", max(c.S, c.C))
    if c.S == 0:
        return []
    stage1 = [Launch.of(c, "chunk_sq_sums_kernel", c.C, CHUNK_THREADS)] if c.C else []
    return stage1 + [Launch.of(c, "segment_partials_sum_kernel", c.S, SEGMENT_THREADS)]


def _fused_step(c: Call) -> list[Launch]:  # csrc/lars_cuda.cu: fused_step_cuda
    check_grid("chunks", c.C)
    if c.C == 0:
        return []
    norms = [Launch.of(c, "chunk_norms_kernel", c.C, CHUNK_THREADS)] if c.mode & STEP_LARS else []
    nesterov = "true" if c.mode & STEP_NESTEROV else "false"
    return norms + [Launch.of(c, f"fused_update_kernel<{nesterov}>", c.C, CHUNK_THREADS)]


def _wire_pack(c: Call) -> list[Launch]:  # csrc/wire_cuda.cu: wire_pack_cuda
    if c.n == 0:
        return []
    return [Launch.of(c, f"pack_kernel<{c.dst_dtype}>", _grid_for(c.n), WIRE_THREADS)]


def _wire_unpack(c: Call) -> list[Launch]:  # csrc/wire_cuda.cu: wire_unpack_cuda, launch_unpack
    check_grid("segments and chunks", max(c.S, c.C))
    norms = c.table != 0 and c.S != 0
    if c.n == 0 and not norms:
        return []
    d = c.src_dtype
    lo, hi = (c.lo, c.hi) if c.table else (c.n, c.n)  # without norms everything is a "gap"
    out = []
    for begin, end in ((0, lo), (hi, c.n)):
        if end > begin:
            out.append(Launch.of(c, f"unpack_kernel<{d}>", _grid_for(end - begin), WIRE_THREADS, begin=begin, end=end))
    if norms:
        if c.C:
            out.append(Launch.of(c, f"unpack_chunks_kernel<{d}>", c.C, CHUNK_THREADS))
        out.append(Launch.of(c, "segment_partials_sum_kernel", c.S, SEGMENT_THREADS))
    return out


_LAUNCHERS = {
    "segment_sq_norms": _segment_sq_norms,
    "fused_step": _fused_step,
    "wire_pack": _wire_pack,
    "wire_unpack": _wire_unpack,
}


def kernel_launches(call: Call) -> list[Launch]:
    """The launches of `call` on a GPU, in order: what csrc/*_cuda.cu's host launcher runs."""
    return _LAUNCHERS[call.op](call)
