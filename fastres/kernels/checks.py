"""The argument checks of fastres.kernels.ops, one place for every path of an op.

An op checks its tensors here once (device, dtype, contiguity, sizes, overlaps; each message
names the argument) and then hands them to whichever path runs it: the native kernel, the
run-time compiled one, or the torch version (fastres.kernels.torch_ops). The fused step's
operands travel as one checked `StepOperands`.
"""

from __future__ import annotations

import dataclasses

import torch

from fastres.kernels.torch_ops import HPARAM_STRIDE, STEP_RMSPROP, STEP_W_NORM_CACHED

__all__ = [
    "WIRE_DTYPES",
    "SegmentChunks",
    "StepOperands",
    "check_chunks_on",
    "check_disjoint",
    "check_end",
    "check_flat",
    "check_grid",
    "check_tensor",
    "check_wire_pair",
    "check_wire_tensor",
    "host_offsets",
]


def check_grid(what: str, n: int) -> None:
    if n >= 1 << 31:
        raise ValueError(f"{what}: too many for one grid ({n})")


def check_disjoint(written: list, others: list) -> None:
    """Every (name, tensor) in `written` must share no byte with any other buffer: the
    kernels take them as __restrict__ pointers, and the result of an overlap is undefined."""
    spans = [(name, t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for name, t in written + others]
    for i, (name, a0, a1) in enumerate(spans[: len(written)]):
        for j, (other, b0, b1) in enumerate(spans):
            if j != i and a0 < b1 and b0 < a1 and a1 > a0 and b1 > b0:
                raise ValueError(f"{name}: overlaps {other}; the kernel needs them in disjoint memory")


def check_tensor(name: str, t, dtype: torch.dtype, ndim: int = 1) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor (stride {t.stride()})")


def host_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """Checked int64 offsets on the host (copies, and syncs, when they live on a GPU)."""
    check_tensor("offsets", offsets, torch.int64)
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


def check_flat(flat) -> None:
    check_tensor("flat", flat, torch.float32)
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


def check_chunks_on(arg: str, chunks: SegmentChunks, name: str, t: torch.Tensor) -> None:
    """The chunk table passed as `arg` must be on the device of tensor `name`."""
    if chunks.device != t.device:
        raise ValueError(
            f"{arg}: chunk table is on {chunks.device} but {name} is on {t.device}; "
            f"build it with segment_chunks(offsets, {name}.device)"
        )


def check_end(end: int, flat: torch.Tensor) -> None:
    if end > flat.numel():
        raise ValueError(f"offsets: offsets[-1]={end} is beyond the end of flat (numel {flat.numel()})")


WIRE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_wire_tensor(name: str, t, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name}: expected dtype {allowed}, got {t.dtype}")
    check_tensor(name, t, t.dtype)


def check_wire_pair(src: torch.Tensor, dst: torch.Tensor, n: int, scale) -> float:
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


@dataclasses.dataclass(frozen=True)
class StepOperands:
    """The operands of one fused step (fastres.kernels.ops.fused_step says what each is), checked
    when made: a wrong one raises naming it. found_inf comes out fp32 and contiguous (a device-side
    cast, no sync); sq_avg None unless mode asks for the RMSprop warm-up."""

    params: torch.Tensor
    grads: torch.Tensor
    momentum: torch.Tensor
    chunks: SegmentChunks
    seg_group: torch.Tensor
    seg_flags: torch.Tensor
    hparams: torch.Tensor
    _: dataclasses.KW_ONLY
    mode: int
    eps: float = 0.0
    found_inf: torch.Tensor | None = None
    partials: torch.Tensor | None = None
    wsq_out: torch.Tensor | None = None
    sq_avg: torch.Tensor | None = None

    def __post_init__(self) -> None:
        params, grads, momentum, chunks = self.params, self.grads, self.momentum, self.chunks
        seg_group, seg_flags, hparams, mode = self.seg_group, self.seg_flags, self.hparams, self.mode
        found_inf, partials, wsq_out, sq_avg = self.found_inf, self.partials, self.wsq_out, self.sq_avg
        for name, t in (("params", params), ("grads", grads), ("momentum", momentum)):
            check_tensor(name, t, torch.float32)
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
            check_tensor(name, t, dt)
        if seg_group.numel() != S or seg_flags.numel() != S:
            raise ValueError(
                f"seg_group, seg_flags: expected {S} elements (one per segment), got "
                f"{seg_group.numel()} and {seg_flags.numel()}"
            )
        if hparams.numel() == 0 or hparams.numel() % HPARAM_STRIDE:
            raise ValueError(f"hparams: expected a multiple of {HPARAM_STRIDE} elements, got {hparams.numel()}")
        for name, t in (
            ("chunks", chunks.table),
            ("seg_group", seg_group),
            ("seg_flags", seg_flags),
            ("hparams", hparams),
        ):
            if t.device != device:
                raise ValueError(f"{name}: on {t.device} but params is on {device}")
        if found_inf is not None:
            if not isinstance(found_inf, torch.Tensor) or found_inf.numel() != 1:
                raise ValueError("found_inf: expected a 1-element tensor")
            if found_inf.device != device:
                raise ValueError(f"found_inf: on {found_inf.device} but params is on {device}")
            if found_inf.dtype != torch.float32 or not found_inf.is_contiguous():
                found_inf = found_inf.to(torch.float32).contiguous()  # device-side cast, no sync
        if mode & STEP_W_NORM_CACHED and partials is None:
            raise ValueError("partials: STEP_W_NORM_CACHED needs the partials holding the cached norms")
        if partials is not None:
            check_tensor("partials", partials, torch.float32)
            if partials.device != device or partials.numel() < 2 * C:
                raise ValueError(f"partials: expected >= {2 * C} fp32 elements on {device}")
        if mode & STEP_RMSPROP:
            check_tensor("sq_avg", sq_avg, torch.float32)
            if sq_avg.device != device or sq_avg.numel() < chunks.end:
                raise ValueError(f"sq_avg: expected >= {chunks.end} fp32 elements on {device}")
        else:
            sq_avg = None  # neither read nor written
        if wsq_out is not None:
            check_tensor("wsq_out", wsq_out, torch.float32)
            if wsq_out.device != device or wsq_out.numel() < C:
                raise ValueError(f"wsq_out: expected >= {C} fp32 elements on {device}")
        written = [("params", params), ("momentum", momentum)]
        written += [
            (n, t) for n, t in (("partials", partials), ("wsq_out", wsq_out), ("sq_avg", sq_avg)) if t is not None
        ]
        read = [("grads", grads), ("hparams", hparams), ("seg_group", seg_group), ("seg_flags", seg_flags)]
        read += [("chunks", chunks.table)] + ([("found_inf", found_inf)] if found_inf is not None else [])
        check_disjoint(written, read)
        object.__setattr__(self, "found_inf", found_inf)
        object.__setattr__(self, "sq_avg", sq_avg)
