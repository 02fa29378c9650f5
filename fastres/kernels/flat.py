"""fastres.kernels.flat: one flat memory layout for a model's parameters, gradients and momentum.

    layout = FlatParams(model.parameters())      # or FlatParams(model)
    layout.params    fp32 buffer; every parameter's .data is a view of it
    layout.grads     fp32 buffer; every parameter's .grad is a view of it
    layout.new_buffer()   a zeroed buffer of the same layout (momentum, ...)
    layout.offsets   int64, S + 1: segment s is buffer[offsets[s]:offsets[s+1]]
    layout.chunks    the chunk table (fastres.kernels.ops.segment_chunks), built once

Segment s holds parameter s (`layout.sizes[s]` elements from `offsets[s]`) and the zero
padding up to the next ALIGN-element boundary, so every segment, and every chunk of the
chunk table, starts 64-byte aligned: the CUDA kernels take their 16-byte vector path and
the CPU loops start on a cache line. The padding stays zero in all three buffers (autograd
writes only into the views, and a momentum step maps zeros to zeros), so it changes no norm.

Groups of segments (for the all-reduce's buckets): `pad_before` names segment indices
(and `num_segments` for the end) before which the position is rounded up to a multiple of
`pad_multiple` elements, so a group of consecutive segments between two such boundaries
spans a multiple of `pad_multiple` (fastres.distributed.reducer pads each bucket to local world size
x ALIGN this way, so its reduce-scatter shards need no staging copy). The extra padding
belongs to the segment before the boundary and is zero like the rest.

Flags per segment (`adapt`, `decay`, bool tensors): by default a tensor with ndim <= 1
(BN gamma/beta, biases) gets neither LARS adaptation nor weight decay (Goyal et al. 2017,
MLPerf); the optimizer may override them per parameter group. The layout knows no
optimizer and no reducer: the bucketed all-reduce will slice `grads` directly.

Gradients stay views across backward passes: autograd accumulates into an existing .grad in
place. `zero_grad()` zeroes the flat buffer in place; a .grad set to None (e.g. by
`model.zero_grad()`, whose default is set_to_none=True) or replaced by another tensor is
re-attached by `attach_grads()` (copied in when it holds values), which optimizers call at
the start of every step.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch import nn

from fastres.kernels import ops

__all__ = ["ALIGN", "FlatParams"]

ALIGN = 16  # elements (64 bytes of fp32) between segment starts

# Parameters already moved into a layout: only to refuse flattening one twice (the second
# layout would silently take the first one's views away). Nothing is looked up through it:
# the layout is built once per model and handed to the reducer and the optimizer.
# (By id, with weak references: tensors compare element-wise, so no WeakSet.)
_FLATTENED: dict[int, weakref.ref] = {}


def _flattened(p: torch.Tensor) -> bool:
    ref = _FLATTENED.get(id(p))
    return ref is not None and ref() is p


def _mark_flattened(p: torch.Tensor) -> None:
    key = id(p)
    _FLATTENED[key] = weakref.ref(p, lambda _: _FLATTENED.pop(key, None))


class FlatParams:
    """Moves parameters into one flat fp32 buffer (see the module docstring).

    params: an nn.Module (its parameters) or an iterable of parameters; all fp32, on one
    device, each at most once. Parameters that do not require grad are laid out too.
    """

    def __init__(
        self,
        params: nn.Module | Iterable[torch.Tensor],
        align: int = ALIGN,
        *,
        pad_before: Iterable[int] = (),
        pad_multiple: int | None = None,
    ):
        names: list[str] | None = None
        if isinstance(params, nn.Module):
            named = list(params.named_parameters())
            names = [n for n, _ in named]
            params = [p for _, p in named]
        params = list(params)
        if not params:
            raise ValueError("params: no parameters to flatten")
        if align < 1:
            raise ValueError(f"align: must be >= 1, got {align}")
        pad_multiple = align if pad_multiple is None else pad_multiple
        if pad_multiple < 1 or pad_multiple % align:
            raise ValueError(f"pad_multiple: must be a positive multiple of align={align}, got {pad_multiple}")
        pad_before = set(pad_before)
        if any(not 0 <= i <= len(params) for i in pad_before):
            raise ValueError(f"pad_before: segment indices must be in [0, {len(params)}], got {sorted(pad_before)}")
        self.names = names or [f"params[{i}]" for i in range(len(params))]
        device = params[0].device
        seen: set[int] = set()
        for name, p in zip(self.names, params):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{name}: expected a tensor, got {type(p).__name__}")
            if p.dtype != torch.float32:
                raise TypeError(f"{name}: expected dtype torch.float32, got {p.dtype}")
            if p.device != device:
                raise ValueError(f"{name}: on {p.device} but {self.names[0]} is on {device}")
            if not p.is_contiguous() and not p.is_contiguous(memory_format=torch.channels_last):
                raise ValueError(f"{name}: expected a contiguous tensor (stride {p.stride()})")
            if id(p) in seen:
                raise ValueError(f"{name}: given twice")
            if _flattened(p):
                raise ValueError(
                    f"{name}: already in a FlatParams layout (build one per model and pass it on as `layout=`)"
                )
            seen.add(id(p))

        self.param_list = params
        self.align = align
        self.device = device
        self.sizes = [p.numel() for p in params]
        starts, pos = [], 0
        for i, n in enumerate(self.sizes):
            if i in pad_before:
                pos = -(-pos // pad_multiple) * pad_multiple
            starts.append(pos)
            pos += -(-n // align) * align  # round up to the next boundary
        if len(self.sizes) in pad_before:
            pos = -(-pos // pad_multiple) * pad_multiple
        self.numel = pos
        self.offsets = torch.tensor(starts + [pos], dtype=torch.int64)
        self.adapt = torch.tensor([p.ndim > 1 for p in params])
        self.decay = self.adapt.clone()

        with torch.no_grad():
            self.params = torch.zeros(pos, dtype=torch.float32, device=device)
            self.grads = torch.zeros(pos, dtype=torch.float32, device=device)
            for p, a in zip(params, starts):
                # keep each parameter's strides (a channels_last conv weight stays so)
                self.params[a : a + p.numel()].copy_(_storage_order(p))
        self._param_views = [self._view(self.params, i) for i in range(len(params))]
        self._grad_views = [self._view(self.grads, i) for i in range(len(params))]
        for p, v in zip(params, self._param_views):
            p.data = v
            _mark_flattened(p)
        self.attach_grads()
        self.chunks = ops.segment_chunks(self.offsets, device) if ops.native_available() else None

    # ------------------------------------------------------------------ views

    def _view(self, buf: torch.Tensor, i: int) -> torch.Tensor:
        p, a = self.param_list[i], int(self.offsets[i])
        return buf.as_strided(p.shape, p.stride(), a) if p.dim() else buf[a : a + 1].view(())

    def views(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views of a buffer of this layout (e.g. the momentum buffer)."""
        if buf.numel() != self.numel:
            raise ValueError(f"buf: expected {self.numel} elements, got {buf.numel()}")
        return [self._view(buf, i) for i in range(len(self.param_list))]

    def new_buffer(self) -> torch.Tensor:
        """A zeroed fp32 buffer of this layout, on its device."""
        return torch.zeros(self.numel, dtype=torch.float32, device=self.device)

    @property
    def num_segments(self) -> int:
        return len(self.param_list)

    # ------------------------------------------------------------------ gradients

    def attach_grads(self) -> None:
        """Make every .grad the view of `grads` again (copying in a replaced .grad's values).

        One data_ptr comparison per parameter when nothing changed (~0.1 us each).
        """
        for s in range(len(self.param_list)):
            self.attach_grad(s, zero_if_missing=True)

    def attach_grad(self, s: int, zero_if_missing: bool = True) -> None:
        """Make parameter s's .grad the view of `grads` (copying a replaced .grad's values in).

        A missing .grad becomes the (zeroed) view, or stays None with zero_if_missing=False."""
        p, v = self.param_list[s], self._grad_views[s]
        g = p.grad
        if g is not None and g.data_ptr() == v.data_ptr() and g.stride() == v.stride():
            return
        with torch.no_grad():
            if g is None:
                if not zero_if_missing:
                    return
                v.zero_()
            else:
                v.copy_(g)
        p.grad = v

    def zero_grad(self) -> None:
        """Zero all gradients in place (one memset); .grad stay views."""
        self.grads.zero_()
        self.attach_grads()

    def check_views(self) -> None:
        """Raise if a parameter's .data was replaced (it no longer lives in `params`)."""
        for name, p, v in zip(self.names, self.param_list, self._param_views):
            if p.data_ptr() != v.data_ptr():
                raise RuntimeError(
                    f"{name}: its data no longer lives in the flat buffer (was .data replaced, "
                    "or the model moved with .to()/.cuda() after flattening? flatten after moving)"
                )


def _storage_order(p: torch.Tensor) -> torch.Tensor:
    """p's elements in the order of its strides (1-D), so a strided view over it is p."""
    if p.is_contiguous():
        return p.detach().reshape(-1)
    # channels_last: permute to the memory order, which is then contiguous
    return p.detach().permute(0, 2, 3, 1).reshape(-1)
