"""fastres.ops: the only door to the native kernels (`fastres._C`).

Each op checks its tensors (device, dtype, contiguity, sizes; messages name the argument),
then picks a path:

  cpu    `_C`'s C++/OpenMP kernel, for CPU tensors
  cuda   `_C`'s CUDA kernel on the tensor's device and current stream (no host sync)
  torch  a torch-native equivalent, for a GPU tensor when `_C` was built without CUDA
         kernels (or another accelerator): slower, and warned about once per op

`_C` does not link libtorch (DESIGN.md, decision 1): ops pass `t.data_ptr()` addresses and
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
  has_kernel(op, device)            whether `_C` has a kernel for `op` on `device`
  native_available(), build_info()  what the native part holds
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import torch

try:
    from fastres import _C
except ImportError as e:  # kept and re-raised with advice when an op needs it
    _C = None
    _C_IMPORT_ERROR: ImportError | None = e
else:
    _C_IMPORT_ERROR = None

__all__ = [
    "SEGMENT_CHUNK",
    "SegmentChunks",
    "build_info",
    "fused_step",
    "has_kernel",
    "native_available",
    "pack_wire",
    "segment_chunks",
    "segment_sq_norms",
    "unpack_wire",
]

# Elements per chunk of a chunk table: csrc/segments.h kSegmentChunk (tests check they agree).
SEGMENT_CHUNK = 4096

# dtype codes: csrc/common.h enum DType.
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

_WARNED: set[str] = set()


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


def _warn_once(op: str, message: str) -> None:
    if op not in _WARNED:
        _WARNED.add(op)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _pick_path(device: torch.device, op: str) -> str:
    """'cpu', 'cuda' or 'torch' (see the module docstring); raises if `_C` is missing."""
    C = _native()
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda" and hasattr(C, f"{op}_cuda"):
        return "cuda"
    if device.type == "cuda":
        why = (
            "fastres._C was built without CUDA kernels (nvcc not found, or FASTRES_CUDA=OFF); "
            "rebuild with nvcc on PATH or CUDACXX set: `pip install . -v` from the repository "
            "root prints 'fastres: CUDA ON'"
        )
    else:
        why = f"fastres._C has no kernels for {device.type} tensors"
    _warn_once(op, f"{op}: {why}. Running a slower torch version on {device}.")
    return "torch"


def _launch(op: str, device: torch.device, args: tuple, cpu_extra: tuple = ()) -> None:
    """Call `_C.<op>_cpu(*args, *cpu_extra, threads)` or `_C.<op>_cuda(*args, device, stream)`.

    The CUDA kernel goes on `device`'s current stream (no host sync)."""
    if device.type == "cpu":
        getattr(_C, f"{op}_cpu")(*args, *cpu_extra, torch.get_num_threads())
    else:
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            getattr(_C, f"{op}_cuda")(*args, device.index, stream)


# ----------------------------------------------------------------------------- argument checks


def _check_tensor(name: str, t, dtype: torch.dtype, ndim: int = 1) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor (stride {t.stride()})")


def _host_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """Checked int64 offsets on the host (copies, and syncs, when they live on a GPU)."""
    _check_tensor("offsets", offsets, torch.int64)
    if offsets.numel() < 1:
        raise ValueError("offsets: expected at least one element (S + 1 segment boundaries)")
    host = offsets.detach().to("cpu").contiguous()
    if int(host[0]) < 0:
        raise ValueError(f"offsets: offsets[0] must be >= 0, got {int(host[0])}")
    if host.numel() > 1:
        bad = torch.nonzero(host[1:] < host[:-1])
        if bad.numel():
            i = int(bad[0, 0])
            raise ValueError(
                f"offsets: must be nondecreasing, but offsets[{i}]={int(host[i])} > offsets[{i + 1}]={int(host[i + 1])}"
            )
    return host


def _check_flat(flat) -> None:
    _check_tensor("flat", flat, torch.float32)
    if flat.data_ptr() % 4:
        raise ValueError("flat: data pointer is not 4-byte aligned")


# ----------------------------------------------------------------------------- segment ops


@dataclasses.dataclass(frozen=True)
class SegmentChunks:
    """The chunk table of a segment layout (csrc/segments.h), on the device of the kernels.

    Build it once per layout with `segment_chunks` and pass it where ops take `offsets`:
    the ops then do no host work and, on a GPU, no host sync.
    """

    table: torch.Tensor  # int64, segments.h layout, on `device`
    offsets: torch.Tensor  # int64 host copy of the offsets, S + 1
    num_segments: int  # S
    num_chunks: int  # C
    end: int  # offsets[-1]: a flat buffer needs at least this many elements

    @property
    def device(self) -> torch.device:
        return self.table.device


def segment_chunks(offsets: torch.Tensor, device: torch.device | str | None = None) -> SegmentChunks:
    """Chunk table for `offsets` (int64, S + 1, nondecreasing, offsets[0] >= 0) on `device`.

    Segment s is flat[offsets[s]:offsets[s+1]], cut in chunks of SEGMENT_CHUNK elements.
    The table is built on the host (offsets on a GPU are copied back: one sync) and moved to
    `device` (default: the device of `offsets`).
    """
    C = _native()
    host = _host_offsets(offsets)
    S = host.numel() - 1
    num_chunks = C.segment_chunk_count(host.data_ptr(), S)
    table = torch.empty(C.segment_chunk_table_size(S, num_chunks), dtype=torch.int64)
    C.fill_segment_chunk_table(host.data_ptr(), S, num_chunks, table.data_ptr())
    device = offsets.device if device is None else torch.device(device)
    return SegmentChunks(table.to(device), host, S, num_chunks, int(host[-1]))


def segment_sq_norms(flat: torch.Tensor, offsets: torch.Tensor | SegmentChunks) -> torch.Tensor:
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
    differentiable.
    """
    op = "segment_sq_norms"
    _check_flat(flat)
    if isinstance(offsets, SegmentChunks):
        chunks = offsets
    else:
        chunks = None
        if not isinstance(offsets, torch.Tensor):
            raise TypeError(f"offsets: expected a torch.Tensor or SegmentChunks, got {type(offsets).__name__}")
    path = _pick_path(flat.device, op)

    if path == "torch":
        host = chunks.offsets if chunks is not None else _host_offsets(offsets)
        _check_end(int(host[-1]), flat)
        return _segment_sq_norms_torch(flat, host)

    if chunks is None:
        chunks = segment_chunks(offsets, flat.device)
    else:
        _check_chunks_on("offsets", chunks, "flat", flat)
    _check_end(chunks.end, flat)
    S, C = chunks.num_segments, chunks.num_chunks
    out = torch.empty(S, dtype=torch.float32, device=flat.device)
    if S == 0:
        return out
    partials = torch.empty(C, dtype=torch.float32, device=flat.device)  # stage-1 scratch
    args = (
        flat.data_ptr(),
        _DTYPE_CODES[flat.dtype],
        chunks.table.data_ptr(),
        S,
        C,
        partials.data_ptr(),
        out.data_ptr(),
    )
    _launch(op, flat.device, args)
    return out


def _check_chunks_on(arg: str, chunks: SegmentChunks, name: str, t: torch.Tensor) -> None:
    """The chunk table passed as `arg` must be on the device of tensor `name`."""
    if chunks.device != t.device:
        raise ValueError(
            f"{arg}: chunk table is on {chunks.device} but {name} is on {t.device}; "
            f"build it with segment_chunks(offsets, {name}.device)"
        )


def _check_end(end: int, flat: torch.Tensor) -> None:
    if end > flat.numel():
        raise ValueError(f"offsets: offsets[-1]={end} is beyond the end of flat (numel {flat.numel()})")


def _segment_sq_norms_torch(flat: torch.Tensor, host_offsets: torch.Tensor) -> torch.Tensor:
    """Torch-native segment_sq_norms for devices `_C` has no kernels for.

    One fused multi-tensor norm (torch._foreach_norm) over views of the segments, squared:
    fp32 like the kernels, up to ~2 ulp more rounding from the sqrt and the square.
    """
    bounds = host_offsets.tolist()
    views = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if not views:
        return flat.new_zeros(0)
    if hasattr(torch, "_foreach_norm"):
        norms = torch._foreach_norm(views, 2)
    else:  # pragma: no cover - torch without the private foreach ops
        norms = [torch.linalg.vector_norm(v) for v in views]
    return torch.stack(norms).square()


# ----------------------------------------------------------------------------- fused step

# Mode and flag bits: csrc/lars.h (tests check they agree with _C).
STEP_LARS, STEP_LR_AFTER_MOMENTUM, STEP_NESTEROV, STEP_W_NORM_CACHED = 1, 2, 4, 8
SEG_ADAPT, SEG_DECAY = 1, 2
HPARAM_STRIDE = 4  # per group: lr, wd, mu, eta


def has_kernel(op: str, device: torch.device | str) -> bool:
    """True when `_C` has a native kernel for `op` on `device` (False without `_C`)."""
    device = torch.device(device)
    if _C is None:
        return False
    if device.type == "cpu":
        return hasattr(_C, f"{op}_cpu")
    return device.type == "cuda" and hasattr(_C, f"{op}_cuda")


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
) -> None:
    """One fused LARS (mode & STEP_LARS) or momentum-SGD step over flat buffers, in place.

    params, grads, momentum: fp32, 1-D, contiguous, same device, numel >= chunks.end
    chunks:    SegmentChunks of the segment layout, on the same device (built once)
    seg_group: int32, S: the hparams group of each segment (values in [0, G): not checked here,
               it would sync; fastres.optim builds it)
    seg_flags: int32, S: SEG_ADAPT | SEG_DECAY bits per segment
    hparams:   fp32, G * HPARAM_STRIDE: lr, wd, mu, eta per group, on the device (device
               scalars: the schedule fills them without a host sync)
    found_inf: optional fp32 scalar tensor on the device; nonzero makes the step a no-op
    partials:  optional fp32 scratch of 2 * C (allocated here if None); with mode bit
               STEP_W_NORM_CACHED its first C hold sum(w^2) per chunk, as written by the
               previous step's `wsq_out`
    wsq_out:   optional fp32, C: receives sum(w_new^2) per chunk (adapted segments; 0 for the
               others), or the carried-over norms on a found-inf step; must not overlap partials
    The math is csrc/lars.h's. Two launches on a GPU (one without STEP_LARS), no host sync.
    Raises on devices without a native kernel: fastres.optim.lars_reference is the torch
    version (FusedLARS picks it by itself).
    """
    op = "fused_step"
    for name, t in (("params", params), ("grads", grads), ("momentum", momentum)):
        _check_tensor(name, t, torch.float32)
    if not isinstance(chunks, SegmentChunks):
        raise TypeError(f"chunks: expected SegmentChunks, got {type(chunks).__name__}")
    device = params.device
    for name, t in (("grads", grads), ("momentum", momentum)):
        if t.device != device:
            raise ValueError(f"{name}: on {t.device} but params is on {device}")
    for name, t in (("params", params), ("grads", grads), ("momentum", momentum)):
        if t.numel() < chunks.end:
            raise ValueError(f"{name}: numel {t.numel()} is less than the layout's end {chunks.end}")
    S, C = chunks.num_segments, chunks.num_chunks
    for name, t, dt in (
        ("seg_group", seg_group, torch.int32),
        ("seg_flags", seg_flags, torch.int32),
        ("hparams", hparams, torch.float32),
    ):
        _check_tensor(name, t, dt)
    if seg_group.numel() != S or seg_flags.numel() != S:
        raise ValueError(
            f"seg_group, seg_flags: expected {S} elements (one per segment), got "
            f"{seg_group.numel()} and {seg_flags.numel()}"
        )
    if hparams.numel() == 0 or hparams.numel() % HPARAM_STRIDE:
        raise ValueError(f"hparams: expected a multiple of {HPARAM_STRIDE} elements, got {hparams.numel()}")
    for name, t in (("chunks", chunks.table), ("seg_group", seg_group), ("seg_flags", seg_flags), ("hparams", hparams)):
        if t.device != device:
            raise ValueError(f"{name}: on {t.device} but params is on {device}")
    if found_inf is not None:
        if not isinstance(found_inf, torch.Tensor) or found_inf.numel() != 1:
            raise ValueError("found_inf: expected a 1-element tensor")
        if found_inf.device != device:
            raise ValueError(f"found_inf: on {found_inf.device} but params is on {device}")
        if found_inf.dtype != torch.float32 or not found_inf.is_contiguous():
            found_inf = found_inf.to(torch.float32).contiguous()  # device-side cast, no sync
    if not has_kernel(op, device):
        _native()
        raise NotImplementedError(
            f"fused_step: fastres._C has no kernel for {device}; use fastres.optim.lars_reference.fused_step_torch"
        )
    if C == 0:
        return
    if mode & STEP_W_NORM_CACHED and partials is None:
        raise ValueError("partials: STEP_W_NORM_CACHED needs the partials holding the cached norms")
    if partials is None:
        partials = torch.empty(2 * C if mode & STEP_LARS else 1, dtype=torch.float32, device=device)
    else:
        _check_tensor("partials", partials, torch.float32)
        if partials.device != device or partials.numel() < 2 * C:
            raise ValueError(f"partials: expected >= {2 * C} fp32 elements on {device}")
    if wsq_out is not None:
        _check_tensor("wsq_out", wsq_out, torch.float32)
        if wsq_out.device != device or wsq_out.numel() < C:
            raise ValueError(f"wsq_out: expected >= {C} fp32 elements on {device}")
        a, b = partials.data_ptr(), partials.data_ptr() + 4 * partials.numel()
        if a < wsq_out.data_ptr() + 4 * C and wsq_out.data_ptr() < b:
            raise ValueError("wsq_out: must not overlap partials")
    args = (
        params.data_ptr(),
        grads.data_ptr(),
        momentum.data_ptr(),
        chunks.table.data_ptr(),
        S,
        C,
        seg_group.data_ptr(),
        seg_flags.data_ptr(),
        hparams.data_ptr(),
        0 if found_inf is None else found_inf.data_ptr(),
        int(mode),
        float(eps),
        partials.data_ptr(),
        0 if wsq_out is None else wsq_out.data_ptr(),
    )
    coefs = torch.empty(4 * max(S, 1), dtype=torch.float32) if device.type == "cpu" else None
    _launch(op, device, args, cpu_extra=() if coefs is None else (coefs.data_ptr(),))


# ----------------------------------------------------------------------------- wire format

_WIRE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_wire_tensor(name: str, t, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name}: expected dtype {allowed}, got {t.dtype}")
    _check_tensor(name, t, t.dtype)


def _check_wire_pair(src: torch.Tensor, dst: torch.Tensor, n: int, scale) -> float:
    """Same device; disjoint, or the same address with an fp32 wire; a real scale."""
    if dst.device != src.device:
        raise ValueError(f"dst: on {dst.device} but src is on {src.device}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale: expected a float, got {type(scale).__name__}")
    if n:
        a, b = src.data_ptr(), dst.data_ptr()
        overlap = a < b + n * dst.element_size() and b < a + n * src.element_size()
        if overlap and not (a == b and src.dtype == dst.dtype == torch.float32):
            raise ValueError("dst: overlaps src; only an fp32 wire may run in place (src and dst the same memory)")
    return float(scale)


def pack_wire(src: torch.Tensor, dst: torch.Tensor, scale: float = 1.0) -> None:
    """dst[:n] = (src * scale).to(dst.dtype), n = src.numel(): fp32 to the all-reduce's wire.

    src:   fp32, 1-D, contiguous
    dst:   fp32, fp16 or bf16, 1-D, contiguous, on src's device, numel >= src.numel();
           disjoint from src, or src itself (in place) for an fp32 wire
    scale: multiplied in fp32 before the cast (e.g. 1 / world_size)

    One pass (csrc/wire.h): bit-identical to torch's `(src * scale).to(dtype)` (fp32 product,
    round to nearest even, overflow to +-Inf, subnormals kept), except that a NaN's bits are
    wire.h's (sign kept, quiet) where torch's depend on its code path. Asynchronous on a GPU.
    """
    op = "wire_pack"
    _check_wire_tensor("src", src, (torch.float32,))
    _check_wire_tensor("dst", dst, _WIRE_DTYPES)
    n = src.numel()
    if dst.numel() < n:
        raise ValueError(f"dst: numel {dst.numel()} is less than src's {n}")
    scale = _check_wire_pair(src, dst, n, scale)
    path = _pick_path(src.device, op)
    if n == 0:
        return
    if path == "torch":
        dst[:n].copy_(torch.mul(src, scale))
        return
    args = (src.data_ptr(), dst.data_ptr(), _DTYPE_CODES[dst.dtype], n, scale)
    _launch(op, src.device, args)


def unpack_wire(
    src: torch.Tensor,
    dst: torch.Tensor,
    scale: float = 1.0,
    *,
    chunks: SegmentChunks | None = None,
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
    Returns None without chunks. Asynchronous on a GPU.
    """
    op = "wire_unpack"
    _check_wire_tensor("src", src, _WIRE_DTYPES)
    _check_wire_tensor("dst", dst, (torch.float32,))
    n = dst.numel()
    if src.numel() < n:
        raise ValueError(f"src: numel {src.numel()} is less than dst's {n}")
    scale = _check_wire_pair(src, dst, n, scale)
    if chunks is not None:
        if not isinstance(chunks, SegmentChunks):
            raise TypeError(f"chunks: expected SegmentChunks, got {type(chunks).__name__}")
        _check_chunks_on("chunks", chunks, "dst", dst)
        if chunks.end > n:
            raise ValueError(f"chunks: end {chunks.end} is beyond the end of dst (numel {n})")
    path = _pick_path(dst.device, op)
    if path == "torch":
        if n:
            torch.mul(src[:n].to(torch.float32), scale, out=dst)
        return None if chunks is None else segment_sq_norms(dst, chunks)
    if chunks is None:
        if n == 0:
            return None
        norms = (0, 0, 0, 0, 0, 0, 0)
        out = None
    else:
        S, C = chunks.num_segments, chunks.num_chunks
        out = torch.empty(S, dtype=torch.float32, device=dst.device)
        partials = torch.empty(max(C, 1), dtype=torch.float32, device=dst.device)
        lo = int(chunks.offsets[0]) if C else 0
        hi = chunks.end if C else 0
        norms = (chunks.table.data_ptr(), S, C, lo, hi, partials.data_ptr(), out.data_ptr())
    args = (src.data_ptr(), _DTYPE_CODES[src.dtype], dst.data_ptr(), n, scale, *norms)
    _launch(op, dst.device, args)
    return out
