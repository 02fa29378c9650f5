"""fastres.kernels.ops: the only door to the native kernels (`fastres._C`).

Each op checks its tensors (device, dtype, contiguity, sizes, overlaps; messages name the
argument), then picks a path (fastres.kernels.paths says which and why; `python -m fastres.doctor`
prints it for every op and device):

  cpu    `_C`'s C++/OpenMP kernel, for CPU tensors
  cuda   `_C`'s CUDA kernel on the tensor's device and current stream (no host sync), where
         the driver supports the linked CUDA runtime and the build holds code for the GPU
  rtc    the same CUDA kernels compiled at run time with NVRTC, loaded with CuPy (fastres.kernels.rtc),
         where the native ones cannot run and CuPy is installed (`pip install fastres[gpu]`)
  torch  the torch version of the op (fastres.kernels.torch_ops): slower
  sim    the same CUDA kernels executed on the CPU (fastres.kernels.sim), for CPU tensors and only
         when asked for: how CI runs the GPU's code without a GPU
A GPU op that does not get the native CUDA kernel warns once, saying why. `path=` on every op
forces one ("native", "rtc", "torch", "sim"; FusedLARS's `backend=` passes it on). Each op
describes its call once (fastres.kernels.launches.Call): the native, rtc and sim paths all read it.

FASTRES_SYNC_CHECK=1 in the environment (before the first launch) makes every CUDA launch
synchronise its stream and check for errors, naming the kernel: with CUDA_LAUNCH_BLOCKING=1
and compute-sanitizer, the way to find the kernel behind an asynchronous CUDA error.

`_C` does not link libtorch (docs/design.md, decision 1): ops pass `t.data_ptr()` addresses and
`torch.cuda.current_stream(device).cuda_stream`, and allocate every buffer a kernel needs,
scratch included, with torch, so the extension never allocates device memory.

A missing `_C` (most often: running from the source tree, whose `fastres/` has no built
extension and shadows the installed package) is not an error at import; the first op
raises ImportError with advice, chained to the original error (apex's multi_tensor_apply).

Ops
  segment_sq_norms(flat, offsets)   per-segment sums of squares over a flat fp32 buffer
  segment_chunks(offsets, device)   the chunk table of a segment layout, built once
  fused_step(params, grads, momentum, chunks, ...)   fused LARS / momentum-SGD step (lars.h)
  pack_wire(src, dst, scale)        dst = (src * scale).to(dst.dtype): fp32 -> fp32/fp16/bf16 wire
  unpack_wire(src, dst, scale, chunks=)   dst = src.float() * scale, optionally with the
                                    per-segment squared norms of dst in the same pass (wire.h)
  path_for(op, device, path=)       the path `op` takes on `device`, with the reason
  has_kernel(op, device)            whether `_C`'s own kernel for `op` runs on `device`
  native_available(), build_info()  what the native part holds
"""

from __future__ import annotations

import os
import warnings

import torch

from fastres.kernels import paths, torch_ops
from fastres.kernels.checks import (
    WIRE_DTYPES,
    SegmentChunks,
    StepOperands,
    check_chunks_on,
    check_end,
    check_flat,
    check_wire_pair,
    check_wire_tensor,
    host_offsets,
)
from fastres.kernels.launches import Call, kernel_launches
from fastres.kernels.torch_ops import (
    HPARAM_STRIDE,
    SEG_ADAPT,
    SEG_DECAY,
    STEP_LARS,
    STEP_LR_AFTER_MOMENTUM,
    STEP_NESTEROV,
    STEP_RMSPROP,
    STEP_W_NORM_CACHED,
)

try:
    from fastres import _C
except ImportError as e:  # kept and re-raised with advice when an op needs it
    _C = None
    _C_IMPORT_ERROR: ImportError | None = e
else:
    _C_IMPORT_ERROR = None

__all__ = [
    "HPARAM_STRIDE",
    "SEGMENT_CHUNK",
    "SEG_ADAPT",
    "SEG_DECAY",
    "STEP_LARS",
    "STEP_LR_AFTER_MOMENTUM",
    "STEP_NESTEROV",
    "STEP_RMSPROP",
    "STEP_W_NORM_CACHED",
    "SegmentChunks",
    "build_info",
    "fused_step",
    "has_kernel",
    "native_available",
    "pack_wire",
    "path_for",
    "segment_chunks",
    "segment_sq_norms",
    "unpack_wire",
]

# Elements per chunk of a chunk table: csrc/segments.h kSegmentChunk (tests check they agree).
SEGMENT_CHUNK = 4096

# dtype codes: csrc/common.h enum DType.
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

_WARNED: set = set()
_PROBE: paths.Probe | None = None  # built at the first GPU op (tests set it with _set_probe)
_CHOICES: dict = {}


# ----------------------------------------------------------------------------- the native part


def native_available() -> bool:
    """True when `fastres._C` imported (CPU kernels at least)."""
    return _C is not None


def build_info() -> dict:
    """What the native part holds: `_C.build_info()` plus `native` and `path`.

    Without `_C`: {"native": False, "cuda": False, "openmp": False, "error": "..."}.
    """
    if _C is None:
        return {
            "native": False,
            "cuda": False,
            "cuda_archs": [],
            "cuda_version": None,
            "openmp": False,
            "error": str(_C_IMPORT_ERROR),
        }
    return {"native": True, "path": _C.__file__, **_C.build_info()}


def _missing_native_message() -> str:
    import fastres

    where = os.path.dirname(os.path.abspath(fastres.__file__))
    return (
        f"fastres._C (the native kernels) could not be imported: {_C_IMPORT_ERROR}.\n"
        f"The fastres package imported here is {where}.\n"
        "Build and install it with `pip install .` from the repository root (`pip install . -v` "
        "shows what the build finds). A fastres/ source tree on sys.path shadows the installed "
        "package and has no _C: that is the case when Python runs from the repository root "
        "(`python -m ...`, `python -c ...`, `python -m pytest`) or with the repository on "
        "PYTHONPATH. Run from another directory, run the tests with plain `pytest`, or install "
        "with `pip install -e .`, which maps the built _C into the source tree."
    )


def _native():
    """`_C`, or ImportError with advice (chained to the original import error)."""
    if _C is None:
        raise ImportError(_missing_native_message()) from _C_IMPORT_ERROR
    return _C


def _warn_once(key, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _probe() -> paths.Probe:
    global _PROBE
    if _PROBE is None:
        _PROBE = paths.Probe.of(_C)
    return _PROBE


def _set_probe(probe: paths.Probe | None) -> None:
    """Use `probe` (None: probe this process again) for every later choice; forgets the
    choices and warnings made so far. For tests, which inject drivers and GPUs."""
    global _PROBE
    _PROBE = probe
    _CHOICES.clear()
    _WARNED.clear()


def path_for(op: str, device: torch.device | str, path: str = "auto") -> paths.Choice:
    """The path (`.path`: "cpu", "cuda", "rtc" or "torch") that `op` takes for tensors on
    `device`, and why (`.reason`). `path` forces one: "native", "rtc", "torch" (RuntimeError
    naming the reason when it cannot run there). Cached: the probe does not change."""
    device = torch.device(device)
    if op not in paths.OPS:
        raise ValueError(f"op: must be one of {', '.join(paths.OPS)}, got {op!r}")
    key = (op, str(device), path)
    choice = _CHOICES.get(key)
    if choice is None:
        if device.type == "cpu":  # no need to probe drivers and GPUs for the CPU kernels
            probe = paths.Probe(native=_C is not None)
        else:
            probe = _probe()
        choice = _CHOICES[key] = paths.choose(op, device, probe, path)
    return choice


def _pick_path(device: torch.device, op: str, path: str = "auto") -> str:
    """The path of `op` on `device` ('cpu', 'cuda', 'rtc', 'torch'); raises ImportError with
    advice when `_C` is missing (every path but a forced torch one needs its chunk tables),
    warns once when a GPU op cannot run the native CUDA kernels."""
    if path != "torch":
        _native()
    choice = path_for(op, device, path)
    if device.type == "cuda" and choice.path in ("rtc", "torch") and path == "auto":
        runs = (
            "the CUDA kernels compiled at run time (CuPy/NVRTC)"
            if choice.path == "rtc"
            else "the slower torch versions of fastres's ops"
        )
        _warn_once(
            (str(device), choice.path, choice.reason),
            f"fastres.kernels.ops on {device} ({op} first): {choice.reason}. Running {runs}; "
            "`python -m fastres.doctor` says more.",
        )
    return choice.path


def _run(call: Call, device: torch.device, path: str, cpu_extra: tuple = ()) -> None:
    """Run `call` on `path`: `_C.<op>_cpu(*call.values(), *cpu_extra, threads)`, `_C.<op>_cuda(*call.values(),
    device, stream)`, or its kernel launches (fastres.kernels.launches) through CuPy (rtc) or on the
    CPU (sim). On a GPU the kernels go on `device`'s current stream (no host sync)."""
    if path == "cpu":
        getattr(_C, f"{call.op}_cpu")(*call.values(), *cpu_extra, torch.get_num_threads())
    elif path == "sim":
        from fastres.kernels import sim

        sim.run(kernel_launches(call))
    else:
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            if path == "rtc":
                from fastres.kernels import rtc

                rtc.run(kernel_launches(call), device.index, stream)
            else:
                getattr(_C, f"{call.op}_cuda")(*call.values(), device.index, stream)


STEP_COEFS_FLOATS = 8  # csrc/lars.h kStepCoefsFloats: the CPU kernel's per-segment scratch


def segment_chunks(offsets: torch.Tensor, device: torch.device | str | None = None) -> SegmentChunks:
    """Chunk table for `offsets` (int64, S + 1, nondecreasing, offsets[0] >= 0) on `device`.

    Segment s is flat[offsets[s]:offsets[s+1]], cut in chunks of SEGMENT_CHUNK elements.
    The table is built on the host (offsets on a GPU are copied back: one sync) and moved to
    `device` (default: the device of `offsets`).
    """
    C = _native()
    host = host_offsets(offsets)
    S = host.numel() - 1
    num_chunks = C.segment_chunk_count(host.data_ptr(), S)
    table = torch.empty(C.segment_chunk_table_size(S, num_chunks), dtype=torch.int64)
    C.fill_segment_chunk_table(host.data_ptr(), S, num_chunks, table.data_ptr())
    device = offsets.device if device is None else torch.device(device)
    return SegmentChunks(table.to(device), host, S, num_chunks, int(host[-1]))


def segment_sq_norms(flat: torch.Tensor, offsets: torch.Tensor | SegmentChunks, *, path: str = "auto") -> torch.Tensor:
    """out[s] = sum(flat[offsets[s]:offsets[s+1]] ** 2), fp32, for s in 0..S-1.

    flat:    fp32, 1-D, contiguous, on CPU or a GPU
    offsets: int64, 1-D, S + 1 nondecreasing boundaries, 0 <= offsets[0],
             offsets[-1] <= flat.numel(); on the host or on flat's device. Or a
             `SegmentChunks` from `segment_chunks(offsets, flat.device)`, built once: a
             plain tensor has its chunk table built on the host at every call (and, on a
             GPU, copied back first: a host sync).

    Two-stage fp32 reduction without atomics (csrc/segment_sq_norms.h): bit-identical from
    run to run, on CPU whatever the thread count; relative error at most ~(133 + L/4096) *
    2^-24 on CPU for a segment of L elements, less on GPU. Empty segments give 0. Not
    differentiable. `path`: "auto", or forced: "native", "rtc", "torch" (module docstring).
    """
    op = "segment_sq_norms"
    check_flat(flat)
    if isinstance(offsets, SegmentChunks):
        chunks = offsets
    else:
        chunks = None
        if not isinstance(offsets, torch.Tensor):
            raise TypeError(f"offsets: expected a torch.Tensor or SegmentChunks, got {type(offsets).__name__}")
    path = _pick_path(flat.device, op, path)

    if path == "torch":
        host = chunks.offsets if chunks is not None else host_offsets(offsets)
        check_end(int(host[-1]), flat)
        return torch_ops.segment_sq_norms_torch(flat, host)

    if chunks is None:
        chunks = segment_chunks(offsets, flat.device)
    else:
        check_chunks_on("offsets", chunks, "flat", flat)
    check_end(chunks.end, flat)
    S, C = chunks.num_segments, chunks.num_chunks
    out = torch.empty(S, dtype=torch.float32, device=flat.device)
    if S == 0:
        return out
    partials = torch.empty(C, dtype=torch.float32, device=flat.device)  # stage-1 scratch
    call = Call.of(
        op,
        flat=flat.data_ptr(),
        dtype=_DTYPE_CODES[flat.dtype],
        table=chunks.table.data_ptr(),
        S=S,
        C=C,
        partials=partials.data_ptr(),
        out=out.data_ptr(),
    )
    _run(call, flat.device, path)
    return out


# ----------------------------------------------------------------------------- fused step

# Mode and flag bits, hparams stride: csrc/lars.h, through fastres.kernels.torch_ops (tests check they
# agree with _C).


def has_kernel(op: str, device: torch.device | str) -> bool:
    """True when `_C`'s own kernel for `op` runs on `device`: the CPU kernel, or the CUDA one
    where the driver and the GPU's architecture allow (False without `_C`)."""
    if _C is None:
        return False
    return path_for(op, device).path in ("cpu", "cuda")


def fused_step(
    params: torch.Tensor,
    grads: torch.Tensor,
    momentum: torch.Tensor,
    chunks: SegmentChunks,
    seg_group: torch.Tensor,
    seg_flags: torch.Tensor,
    hparams: torch.Tensor,
    *,
    mode: int,
    eps: float = 0.0,
    found_inf: torch.Tensor | None = None,
    partials: torch.Tensor | None = None,
    wsq_out: torch.Tensor | None = None,
    sq_avg: torch.Tensor | None = None,
    path: str = "auto",
) -> str:
    """One fused LARS (mode & STEP_LARS) or momentum-SGD step over flat buffers, in place.

    The operands are checked once for every path (fastres.kernels.checks.StepOperands):
    params, grads, momentum: fp32, 1-D, contiguous, same device, numel >= chunks.end,
               pairwise disjoint
    chunks:    SegmentChunks of the segment layout, on the same device (built once)
    seg_group: int32, S: the hparams group of each segment (values in [0, G): not checked here,
               it would sync; fastres.optim builds it)
    seg_flags: int32, S: SEG_ADAPT | SEG_DECAY bits per segment
    hparams:   fp32, G * HPARAM_STRIDE: lr, wd, mu, eta, then the RMSprop warm-up's blend,
               rate, beta, eps per group, on the device (device scalars: the schedule fills
               them without a host sync)
    mode:      STEP_* bits (csrc/lars.h)
    eps:       added to the denominator of the trust ratio
    found_inf: optional fp32 scalar tensor on the device; nonzero makes the step a no-op
    partials:  optional fp32 scratch of 2 * C (allocated here if None); with mode bit
               STEP_W_NORM_CACHED its first C hold sum(w^2) per chunk, as written by the
               previous step's `wsq_out`
    wsq_out:   optional fp32, C: receives sum(w_new^2) per chunk (adapted segments; 0 for the
               others), or the carried-over norms on a found-inf step
    sq_avg:    fp32 like params, needed with mode bit STEP_RMSPROP (RMSprop warm-up, Akiba et
               al. 2017, sec. 2.2; formula in csrc/lars.h): RMSprop's average of g'^2, updated
               in place (not on a found-inf step)
    path:      "auto" (see the module docstring), "native", "rtc", "torch" or "sim"
    Every buffer the kernel writes (params, momentum, partials, wsq_out) must be disjoint from
    every other one. The math is csrc/lars.h's. Two launches on a GPU (one without
    STEP_LARS), no host sync. The torch path (fastres.kernels.torch_ops.fused_step_torch) computes the
    weight norms afresh and leaves `partials` and `wsq_out` alone: do not cache norms there.
    Returns the path taken ("cpu", "cuda", "rtc", "torch" or "sim").
    """
    op = "fused_step"
    s = StepOperands(params, grads, momentum, chunks, seg_group, seg_flags, hparams, mode=mode, eps=eps,
                     found_inf=found_inf, partials=partials, wsq_out=wsq_out, sq_avg=sq_avg)  # fmt: skip
    device, mode, S, C = s.params.device, s.mode, s.chunks.num_segments, s.chunks.num_chunks
    taken = _pick_path(device, op, path)
    if taken == "torch":
        torch_ops.fused_step_torch(s)
        return taken
    if C == 0:
        return taken
    partials = s.partials
    if partials is None:
        partials = torch.empty(2 * C if mode & STEP_LARS else 1, dtype=torch.float32, device=device)
    address = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
    call = Call.of(
        op,
        w=s.params.data_ptr(),
        g=s.grads.data_ptr(),
        m=s.momentum.data_ptr(),
        table=s.chunks.table.data_ptr(),
        S=S,
        C=C,
        seg_group=s.seg_group.data_ptr(),
        seg_flags=s.seg_flags.data_ptr(),
        hparams=s.hparams.data_ptr(),
        found_inf=address(s.found_inf),
        mode=int(mode),
        eps=float(s.eps),
        partials=partials.data_ptr(),
        wsq_out=address(s.wsq_out),
        sq_avg=address(s.sq_avg),
    )
    coefs = torch.empty(STEP_COEFS_FLOATS * max(S, 1), dtype=torch.float32) if taken == "cpu" else None
    _run(call, device, taken, cpu_extra=() if coefs is None else (coefs.data_ptr(),))
    return taken


# ----------------------------------------------------------------------------- wire format


def pack_wire(src: torch.Tensor, dst: torch.Tensor, scale: float = 1.0, *, path: str = "auto") -> None:
    """dst[:n] = (src * scale).to(dst.dtype), n = src.numel(): fp32 to the all-reduce's wire.

    src:   fp32, 1-D, contiguous
    dst:   fp32, fp16 or bf16, 1-D, contiguous, on src's device, numel >= src.numel();
           disjoint from src, or src itself (in place) for an fp32 wire
    scale: multiplied in fp32 before the cast (e.g. 1 / world_size)

    One pass (csrc/wire.h): bit-identical to torch's `(src * scale).to(dtype)` (fp32 product,
    round to nearest even, overflow to +-Inf, subnormals kept), except that a NaN's bits are
    wire.h's (sign kept, quiet) where torch's depend on its code path. Asynchronous on a GPU.
    `path`: "auto", or forced: "native", "rtc", "torch" (module docstring).
    """
    op = "wire_pack"
    check_wire_tensor("src", src, (torch.float32,))
    check_wire_tensor("dst", dst, WIRE_DTYPES)
    n = src.numel()
    if dst.numel() < n:
        raise ValueError(f"dst: numel {dst.numel()} is less than src's {n}")
    scale = check_wire_pair(src, dst, n, scale)
    path = _pick_path(src.device, op, path)
    if n == 0:
        return
    if path == "torch":
        torch_ops.pack_wire_torch(src, dst, scale)
        return
    call = Call.of(op, src=src.data_ptr(), dst=dst.data_ptr(), dst_dtype=_DTYPE_CODES[dst.dtype], n=n, scale=scale)
    _run(call, src.device, path)


def unpack_wire(
    src: torch.Tensor,
    dst: torch.Tensor,
    scale: float = 1.0,
    *,
    chunks: SegmentChunks | None = None,
    path: str = "auto",
) -> torch.Tensor | None:
    """dst = src[:n].float() * scale, n = dst.numel(): the all-reduce's wire back to fp32.

    src:    fp32, fp16 or bf16, 1-D, contiguous, numel >= dst.numel()
    dst:    fp32, 1-D, contiguous, on src's device; disjoint from src, or src itself for an
            fp32 wire
    scale:  multiplied in fp32 after the exact conversion
    chunks: optional SegmentChunks on dst's device with chunks.end <= dst.numel() (offsets
            relative to dst's start): then also returns the fp32 per-segment squared norms of
            the result, shape (S,), bit-identical to `segment_sq_norms(dst, chunks)` run
            afterwards on the same device, at no extra pass over dst.
    Returns None without chunks. Asynchronous on a GPU. `path`: "auto", or forced: "native",
    "rtc", "torch" (module docstring).
    """
    op = "wire_unpack"
    check_wire_tensor("src", src, WIRE_DTYPES)
    check_wire_tensor("dst", dst, (torch.float32,))
    n = dst.numel()
    if src.numel() < n:
        raise ValueError(f"src: numel {src.numel()} is less than dst's {n}")
    scale = check_wire_pair(src, dst, n, scale)
    if chunks is not None:
        if not isinstance(chunks, SegmentChunks):
            raise TypeError(f"chunks: expected SegmentChunks, got {type(chunks).__name__}")
        check_chunks_on("chunks", chunks, "dst", dst)
        if chunks.end > n:
            raise ValueError(f"chunks: end {chunks.end} is beyond the end of dst (numel {n})")
    path = _pick_path(dst.device, op, path)
    if path == "torch":
        torch_ops.unpack_wire_torch(src, dst, scale)
        return None if chunks is None else torch_ops.segment_sq_norms_torch(dst, chunks.offsets)
    if chunks is None:
        if n == 0:
            return None
        out = None
        norms = dict(table=0, S=0, C=0, lo=0, hi=0, partials=0, out=0)
    else:
        S, C = chunks.num_segments, chunks.num_chunks
        out = torch.empty(S, dtype=torch.float32, device=dst.device)
        partials = torch.empty(max(C, 1), dtype=torch.float32, device=dst.device)
        lo, hi = (int(chunks.offsets[0]), chunks.end) if C else (0, 0)
        norms = dict(
            table=chunks.table.data_ptr(), S=S, C=C, lo=lo, hi=hi, partials=partials.data_ptr(), out=out.data_ptr()
        )
    call = Call.of(
        op, src=src.data_ptr(), src_dtype=_DTYPE_CODES[src.dtype], dst=dst.data_ptr(), n=n, scale=scale, **norms
    )
    _run(call, dst.device, path)
    return out
