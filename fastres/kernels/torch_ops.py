"""fastres.kernels.torch_ops: every op of fastres.kernels.ops written with plain torch ops (the torch path).

    segment_sq_norms_torch(flat, host_offsets)
    fused_step_torch(operands)              (a checked fastres.kernels.checks.StepOperands)
    pack_wire_torch(src, dst, scale), unpack_wire_torch(src, dst, scale)

fastres.kernels.ops runs these where no kernel can: a tensor on a device fastres has no kernel for,
a GPU whose driver or architecture the native kernels do not serve and no CuPy to compile
them at run time, or when asked (`path="torch"`, FusedLARS(backend="torch")). They are the
same math as csrc/ (lars.h, wire.h), over whole buffers, with no host sync where the native
path has none; slower, and they allocate temporaries of the buffers' size. Tests use them as
a second implementation next to the float64 references. Below fastres.kernels.ops and checks:
imports no other part of fastres (StepOperands only for its annotation).

The fused step: per-segment norms with torch._foreach_norm, per-segment coefficients
expanded to elements with repeat_interleave (output_size given: no host sync).
"""

from __future__ import annotations

import typing

import torch

if typing.TYPE_CHECKING:
    from fastres.kernels.checks import StepOperands

__all__ = ["fused_step_torch", "pack_wire_torch", "segment_sq_norms_torch", "unpack_wire_torch"]

# csrc/lars.h's mode and flag bits and hparams stride (fastres.kernels.ops re-exports them; tests
# check they agree with fastres._C)
STEP_LARS, STEP_LR_AFTER_MOMENTUM, STEP_NESTEROV, STEP_W_NORM_CACHED, STEP_RMSPROP = 1, 2, 4, 8, 16
SEG_ADAPT, SEG_DECAY = 1, 2
HPARAM_STRIDE = 8  # per group: lr, wd, mu, eta; RMSprop warm-up: blend, rate, beta, eps


def segment_sq_norms_torch(flat: torch.Tensor, host_offsets: torch.Tensor) -> torch.Tensor:
    """out[s] = sum(flat[offsets[s]:offsets[s+1]] ** 2), fp32.

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


def pack_wire_torch(src: torch.Tensor, dst: torch.Tensor, scale: float) -> None:
    """dst[:n] = (src * scale).to(dst.dtype): the fp32 product, then torch's cast."""
    n = src.numel()
    if n:
        dst[:n].copy_(torch.mul(src, scale))


def unpack_wire_torch(src: torch.Tensor, dst: torch.Tensor, scale: float) -> None:
    """dst = src[:n].float() * scale, n = dst.numel()."""
    n = dst.numel()
    if n:
        torch.mul(src[:n].to(torch.float32), scale, out=dst)


@torch.no_grad()
def fused_step_torch(s: StepOperands) -> None:
    """fastres.kernels.ops.fused_step in torch, on operands already checked (kernels.checks.StepOperands).

    The weight norms are always computed afresh (STEP_W_NORM_CACHED has no meaning here), and
    `partials` and `wsq_out` are left alone."""
    params, grads, momentum, offsets = s.params, s.grads, s.momentum, s.chunks.offsets
    seg_group, seg_flags, hparams, mode, eps = s.seg_group, s.seg_flags, s.hparams, s.mode, s.eps
    found_inf, sq_avg = s.found_inf, s.sq_avg
    bounds = offsets.tolist()
    S = len(bounds) - 1
    if S == 0 or bounds[-1] == bounds[0]:
        return
    lo, hi = bounds[0], bounds[-1]
    dev = params.device
    w, g, m = params[lo:hi], grads[lo:hi], momentum[lo:hi]
    hp = hparams.view(-1, HPARAM_STRIDE)[seg_group.long()]  # S x (lr, wd, mu, eta)
    flags = seg_flags.to(dev)
    adapt = (flags & SEG_ADAPT) != 0
    wd = torch.where((flags & SEG_DECAY) != 0, hp[:, 1], torch.zeros_like(hp[:, 1]))
    mu, lr, eta = hp[:, 2], hp[:, 0], hp[:, 3]
    trust = torch.ones_like(lr)
    if mode & STEP_LARS:
        wv = [params[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        gv = [grads[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        wn = torch.stack(torch._foreach_norm(wv, 2))
        gn = torch.stack(torch._foreach_norm(gv, 2))
        ratio = eta * wn / (gn + wd * wn + eps)
        use = adapt & (wn > 0) & (gn > 0)
        trust = torch.where(use, ratio, trust)
    if mode & STEP_LR_AFTER_MOMENTUM:
        a, b = trust, lr
    else:
        a, b = lr * trust, torch.ones_like(lr)
    lengths = torch.tensor([y - x for x, y in zip(bounds[:-1], bounds[1:])], device=dev)
    coefs = torch.stack([a, b, wd, mu], 1)  # S x 4
    a_e, b_e, wd_e, mu_e = torch.repeat_interleave(coefs, lengths, dim=0, output_size=hi - lo).unbind(1)
    gd = g + wd_e * w
    if mode & STEP_RMSPROP:  # csrc/lars.h: the RMSprop warm-up blend (Akiba et al. 2017, sec. 2.2)
        v = sq_avg[lo:hi]
        blend, rate, beta, rms_eps = hparams.view(-1, HPARAM_STRIDE)[seg_group.long()][:, 4:].unbind(1)
        if mode & STEP_LR_AFTER_MOMENTUM:
            rate = torch.where(lr > 0, rate / torch.where(lr > 0, lr, torch.ones_like(lr)), torch.zeros_like(lr))
        rms = torch.stack([blend, rate, beta, rms_eps], 1)
        blend_e, rate_e, beta_e, reps_e = torch.repeat_interleave(rms, lengths, dim=0, output_size=hi - lo).unbind(1)
        vn = beta_e * v + (1 - beta_e) * gd * gd
        a_e = (1 - blend_e) * a_e + blend_e * rate_e / (vn.sqrt() + reps_e)
    mn = mu_e * m + a_e * gd
    step = a_e * gd + mu_e * mn if mode & STEP_NESTEROV else mn
    wn_ = w - b_e * step
    if found_inf is None:
        m.copy_(mn)
        w.copy_(wn_)
        if mode & STEP_RMSPROP:
            v.copy_(vn)
    else:
        skip = found_inf.reshape(()).to(dev) != 0
        m.copy_(torch.where(skip, m, mn))
        w.copy_(torch.where(skip, w, wn_))
        if mode & STEP_RMSPROP:
            v.copy_(torch.where(skip, v, vn))
