"""The fused LARS / momentum-SGD step in plain PyTorch, on the flat layout.

The same math as csrc/lars.h (see its header and fastres.optim.lars), written with torch
ops over whole flat buffers: per-segment norms with torch._foreach_norm, per-segment
coefficients expanded to elements with repeat_interleave (output_size given: no host sync).
FusedLARS runs it on devices for which fastres._C has no kernel (a GPU with a CPU-only
build, other accelerators); the tests use it as an oracle for the CPU kernel. It is slower
and allocates a few temporaries of the buffer's size.
"""

from __future__ import annotations

import torch

from fastres.ops import HPARAM_STRIDE, SEG_ADAPT, SEG_DECAY, STEP_LARS, STEP_LR_AFTER_MOMENTUM, STEP_NESTEROV

__all__ = ["fused_step_torch"]


@torch.no_grad()
def fused_step_torch(
    params: torch.Tensor,
    grads: torch.Tensor,
    momentum: torch.Tensor,
    offsets: torch.Tensor,
    seg_group: torch.Tensor,
    seg_flags: torch.Tensor,
    hparams: torch.Tensor,
    *,
    mode: int,
    eps: float = 0.0,
    found_inf: torch.Tensor | None = None,
) -> None:
    """fastres.ops.fused_step in torch; `offsets` (int64, S + 1, on the host) replaces chunks."""
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
    mn = mu_e * m + a_e * gd
    step = a_e * gd + mu_e * mn if mode & STEP_NESTEROV else mn
    wn_ = w - b_e * step
    if found_inf is None:
        m.copy_(mn)
        w.copy_(wn_)
    else:
        skip = found_inf.reshape(()).to(dev) != 0
        m.copy_(torch.where(skip, m, mn))
        w.copy_(torch.where(skip, w, wn_))
