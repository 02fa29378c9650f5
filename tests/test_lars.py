"""Tests of the fused LARS / momentum-SGD step (csrc/lars.h, fastres.optim.FusedLARS/FusedSGD).

Against a float64 per-tensor reference of the documented formula (docs/design.md, decision 5), timm's Lars
written out independently, torch.optim.SGD, and the torch fallback; over ResNet-50's 161
tensors and odd shapes, several steps with a changing lr, zero-norm and excluded tensors.
CUDA cases skip without a GPU.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from fastres.kernels import ops
from fastres.model import resnet50
from fastres.optim import FusedLARS, FusedSGD

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture(autouse=True)
def _native_needed():
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)


def reference_step(ws, gs, ms, cfg, lr, lr_inside=True, nesterov=False, eps=0.0):
    """float64, one tensor at a time: the formula of docs/design.md, decision 5, in place on ws/ms.

    cfg[i] = (wd, mu, eta, adapt, decay) of tensor i."""
    for w, g, m, (wd, mu, eta, adapt, decay) in zip(ws, gs, ms, cfg):
        wd = wd if decay else 0.0
        wn, gn = w.norm().item(), g.norm().item()
        trust = eta * wn / (gn + wd * wn + eps) if (adapt and wn > 0 and gn > 0) else 1.0
        gd = g + wd * w
        a, b = (lr * trust, 1.0) if lr_inside else (trust, lr)
        m.mul_(mu).add_(a * gd)
        w.sub_(b * (a * gd + mu * m if nesterov else m))


def make_params(shapes, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]


def set_grads(params, step, zero_grad_index=None):
    gen = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        g = torch.randn(p.shape, generator=gen) * (0.1 + i % 3)
        if i == zero_grad_index:
            g.zero_()
        p.grad.copy_(g.to(p.device))


RESNET50_SHAPES = [tuple(p.shape) for p in resnet50().parameters()]
ODD_SHAPES = [(3, 5, 7), (1,), (4097,), (13, 631), (2,), (4096 * 3 + 5, 1), (1, 1, 1, 1), (9000,), (17, 3, 3, 3)]


def run_against_reference(shapes, device, wd, lr_inside, nesterov=False, steps=3, groups=False):
    params = make_params(shapes, device)
    # zero-norm tensors: one zero weight (ndim > 1), one zero gradient (index 1 of the adapted)
    big = [i for i, s in enumerate(shapes) if len(s) > 1]
    with torch.no_grad():
        params[big[0]].zero_()
    ref_w = [p.detach().double().cpu().clone() for p in params]
    ref_m = [torch.zeros_like(w) for w in ref_w]
    eta, mu = 0.02, 0.9
    if groups:  # overrides: biases adapted without decay, one weight excluded from LARS
        g_adapt_bias = [params[i] for i, s in enumerate(shapes) if len(s) <= 1]
        g_excluded = [params[big[-1]]]
        g_rest = [p for i, p in enumerate(params) if len(shapes[i]) > 1 and i != big[-1]]
        pg = [
            {"params": g_rest},
            {"params": g_adapt_bias, "adapt": True, "decay": False},
            {"params": g_excluded, "adapt": False, "weight_decay": 3 * wd},
        ]
        cfg = {}
        for p in g_rest:
            cfg[id(p)] = (wd, mu, eta, True, True)
        for p in g_adapt_bias:
            cfg[id(p)] = (wd, mu, eta, True, False)
        for p in g_excluded:
            cfg[id(p)] = (3 * wd, mu, eta, False, True)
        cfg = [cfg[id(p)] for p in params]
    else:
        pg = params
        cfg = [(wd, mu, eta, len(s) > 1, len(s) > 1) for s in shapes]
    opt = FusedLARS(
        pg, lr=0.0, momentum=mu, weight_decay=wd, eta=eta, eps=1e-9, lr_inside_momentum=lr_inside, nesterov=nesterov
    )
    for step in range(steps):
        lr = 0.5 * (step + 1)  # changing lr: the two conventions differ
        for g in opt.param_groups:
            g["lr"] = lr
        set_grads(params, step, zero_grad_index=big[1])
        ref_g = [p.grad.detach().double().cpu() for p in params]
        opt.step()
        reference_step(ref_w, ref_g, ref_m, cfg, lr, lr_inside, nesterov, eps=1e-9)
    for i, (p, w, m) in enumerate(zip(params, ref_w, ref_m)):
        mom = opt.state[p]["momentum_buffer"]
        torch.testing.assert_close(
            p.detach().cpu().double(), w, rtol=2e-5, atol=2e-6, msg=f"w of tensor {i} {shapes[i]}"
        )
        torch.testing.assert_close(mom.cpu().double(), m, rtol=2e-5, atol=2e-6, msg=f"m of tensor {i} {shapes[i]}")
    return params, opt


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("wd,lr_inside", [(0.0, True), (5e-2, True), (5e-2, False)])
def test_resnet50_matches_float64_reference(device, wd, lr_inside):
    params, opt = run_against_reference(RESNET50_SHAPES, device, wd, lr_inside)
    assert opt.layout.num_segments == 161


def test_trust_ratio_of_nonzero_tensors_against_float64_formula():
    # Non-zero weights and gradients of several shapes (none zeroed, so the trust-ratio branch
    # runs for every adapted tensor): one step at momentum 0 moves w by exactly lr * trust * g'
    # with trust = eta ||w|| / (||g|| + wd ||w|| + eps) computed in float64; a kernel that skips
    # or misplaces the trust ratio moves it by lr * g' instead (trust is far from 1 here).
    shapes = [(64, 3, 7, 7), (256, 64, 1, 1), (1000, 2048), (37, 5), (64,)]
    gen = torch.Generator().manual_seed(11)
    params = [nn.Parameter(torch.randn(s, generator=gen) * 0.1) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 3.0 for s in shapes]
    w0 = [p.detach().double().clone() for p in params]
    lr, eta, wd, eps = 0.7, 0.02, 1e-3, 1e-9
    opt = FusedLARS(params, lr=lr, momentum=0.0, weight_decay=wd, eta=eta, eps=eps)
    for p, g in zip(params, grads):
        p.grad.copy_(g)
    opt.step()
    for i, (p, w, g) in enumerate(zip(params, w0, grads)):
        g = g.double()
        if w.ndim > 1:
            trust = eta * w.norm() / (g.norm() + wd * w.norm() + eps)
            assert abs(trust.item() - 1) > 0.5, f"tensor {i}: trust {trust.item()} too close to 1 to tell"
            want = w - lr * trust * (g + wd * w)
        else:  # BN/bias: no trust ratio, no weight decay
            want = w - lr * g
        torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-7, msg=f"tensor {i} {shapes[i]}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("lr_inside", [True, False])
def test_odd_shapes_groups_match_float64_reference(device, nesterov, lr_inside):
    run_against_reference(ODD_SHAPES, device, 1e-2, lr_inside, nesterov=nesterov, steps=4, groups=True)


def test_trust_ratio_really_applied():
    # a wrong kernel (trust forgotten) moves w by lr*g: check the step size is lr*trust*|g|
    p = nn.Parameter(torch.full((64, 64), 2.0))
    opt = FusedLARS([p], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.001)
    p.grad.fill_(0.5)
    opt.step()
    trust = 0.001 * 2.0 * 64 / (0.5 * 64)
    torch.testing.assert_close(p.detach(), torch.full((64, 64), 2.0 - trust * 0.5))


def test_cpu_kernel_equals_torch_fallback():
    for backend_steps in [3]:
        outs = []
        for backend in ("native", "torch"):
            params = make_params(RESNET50_SHAPES[:40] + ODD_SHAPES, "cpu", seed=3)
            opt = FusedLARS(params, lr=0.3, weight_decay=1e-3, eta=0.01, backend=backend)
            for step in range(backend_steps):
                opt.param_groups[0]["lr"] = 0.3 / (step + 1)
                set_grads(params, step)
                opt.step()
            outs.append((opt.layout.params.clone(), opt.momentum_buffer.clone()))
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-6, atol=1e-7)


def test_timm_lars_formula():
    """timm.optim.Lars (trust_clip=False, always_adapt=False), written out from its source:
    trust only where weight_decay != 0; grad = (g + wd*w) * trust; buf = mu*buf + grad
    (buf = grad on the first step); w -= lr * buf."""
    shapes = [(32, 16, 3, 3), (32,), (10, 32), (10,)]
    params = make_params(shapes, "cpu", seed=5)
    ws = [p.detach().clone() for p in params]
    bufs = [None] * len(params)
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    wd, mu, eta, eps = 1e-2, 0.9, 0.01, 1e-8
    opt = FusedLARS(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.1,
        momentum=mu,
        eta=eta,
        eps=eps,
        lr_inside_momentum=False,
    )
    for step in range(4):
        lr = 0.1 * (step + 1)
        for g in opt.param_groups:
            g["lr"] = lr
        set_grads(params, step)
        for i, p in enumerate(params):
            grad = p.grad.clone()
            w = ws[i]
            pwd = wd if p.ndim > 1 else 0.0
            if pwd != 0:
                w_norm, g_norm = w.norm(2.0), grad.norm(2.0)
                trust = eta * w_norm / (g_norm + w_norm * pwd + eps)
                trust = torch.where(w_norm > 0, torch.where(g_norm > 0, trust, 1.0), 1.0)
                grad = (grad + pwd * w) * trust
            bufs[i] = grad.clone() if bufs[i] is None else bufs[i].mul_(mu).add_(grad)
            w.add_(bufs[i], alpha=-lr)
        opt.step()
    for p, w in zip(params, ws):
        torch.testing.assert_close(p.detach(), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_sgd_matches_torch_sgd(nesterov):
    shapes = [(16, 8, 3, 3), (16,), (5, 16), (5,)]
    a, b = make_params(shapes, "cpu", seed=7), make_params(shapes, "cpu", seed=7)
    groups = lambda ps: [{"params": ps[:2], "weight_decay": 1e-2}, {"params": ps[2:], "weight_decay": 0.0}]
    fused = FusedSGD(groups(a), lr=0.1, momentum=0.9, nesterov=nesterov)
    ref = torch.optim.SGD(groups(b), lr=0.1, momentum=0.9, nesterov=nesterov)
    for p in b:
        p.grad = torch.zeros_like(p)
    for step in range(4):
        for o in (fused, ref):
            for g in o.param_groups:
                g["lr"] = 0.1 * (step + 1)
        set_grads(a, step)
        set_grads(b, step)
        fused.step()
        ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_found_inf_step_changes_nothing(device):
    params = make_params(ODD_SHAPES, device)
    opt = FusedLARS(params, lr=0.5, weight_decay=1e-3, eta=0.01)
    flag = torch.ones((), device=device)
    set_grads(params, 0)
    w0, m0 = opt.layout.params.clone(), opt.momentum_buffer.clone()
    opt.step(found_inf=flag)  # first step
    assert torch.equal(opt.layout.params, w0) and torch.equal(opt.momentum_buffer, m0)
    opt.step(found_inf=torch.zeros((), device=device))
    assert not torch.equal(opt.layout.params, w0)
    w1, m1 = opt.layout.params.clone(), opt.momentum_buffer.clone()
    params[0].grad[0] = float("inf")
    opt.step(found_inf=torch.tensor(1, dtype=torch.int32, device=device))  # int flag
    assert torch.equal(opt.layout.params, w1) and torch.equal(opt.momentum_buffer, m1)
    # the torch fallback honours the flag too
    ops.fused_step(
        opt.layout.params,
        opt.layout.grads,
        opt.momentum_buffer,
        opt.layout.chunks,
        opt._seg_group,
        opt._seg_flags,
        opt._hparams,
        mode=opt.mode,
        found_inf=flag,
        path="torch",
    )
    assert torch.equal(opt.layout.params, w1) and torch.equal(opt.momentum_buffer, m1)


def test_state_dict_round_trip_resumes_identically():
    def build(seed):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5))
        groups = [
            {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": 1e-3},
            {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
        ]
        return model, FusedLARS(groups, lr=0.1, eta=0.01)

    def train(model, opt, steps, start):
        for s in range(start, start + steps):
            torch.manual_seed(100 + s)
            opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = 0.1 + 0.05 * s
            opt.zero_grad()
            model(torch.randn(4, 3, 8, 8)).square().mean().backward()
            opt.step()

    a, oa = build(0)
    train(a, oa, 3, 0)
    blob = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": oa.state_dict()}, blob)
    blob.seek(0)
    saved = torch.load(blob)
    b, ob = build(1)
    b.load_state_dict(saved["model"])
    ob.load_state_dict(saved["opt"])
    assert ob.state[next(b.parameters())]["momentum_buffer"].data_ptr() >= ob.momentum_buffer.data_ptr()
    assert torch.equal(ob.momentum_buffer, oa.momentum_buffer)
    train(a, oa, 3, 3)
    train(b, ob, 3, 3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(oa.momentum_buffer, ob.momentum_buffer)


def test_grads_stay_views_and_zero_grad_in_place():
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = FusedLARS(model.parameters(), lr=0.1)
    L = opt.layout
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        model(torch.randn(3, 6)).sum().backward()
        model(torch.randn(3, 6)).sum().backward()  # accumulates in place
        for p, v in zip(L.param_list, L._grad_views):
            assert p.grad.data_ptr() == v.data_ptr()
        opt.step()
    model.zero_grad()  # nn.Module's default sets .grad to None
    assert all(p.grad is None for p in model.parameters())
    model(torch.randn(3, 6)).sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    opt.step()  # re-attaches: copies the new grads into the flat buffer first
    for p, e in zip(model.parameters(), expected):
        assert torch.equal(p.grad, e)
        assert p.grad.data_ptr() >= L.grads.data_ptr()


def test_bad_input_named():
    with pytest.raises(TypeError, match=r"params\[1\].*float32"):
        FusedLARS([nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3, dtype=torch.float64))], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\].*contiguous"):
        FusedLARS([nn.Parameter(torch.randn(4, 5).t())], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[1\]: on meta"):
        FusedLARS([nn.Parameter(torch.randn(3)), nn.Parameter(torch.empty(3, device="meta"))], lr=0.1)
    with pytest.raises(ValueError, match=r"^lr: must be >= 0"):
        FusedLARS([nn.Parameter(torch.randn(3))], lr=-0.1)
    with pytest.raises(ValueError, match=r"^eta: must be >= 0"):
        FusedLARS([nn.Parameter(torch.randn(3))], lr=0.1, eta=-1e-3)
    with pytest.raises(ValueError, match=r"^momentum"):
        FusedLARS([nn.Parameter(torch.randn(3))], lr=0.1, momentum=1.5)
    opt = FusedLARS([nn.Parameter(torch.randn(3))], lr=0.1)
    opt.param_groups[0]["lr"] = -1.0  # set by a schedule: checked at the step
    with pytest.raises(ValueError, match=r"lr \(param group 0\): must be >= 0, got -1.0"):
        opt.step()
    with pytest.raises(ValueError, match="momentum: on meta"):
        t = torch.zeros(16)
        ops.fused_step(
            t,
            t,
            torch.zeros(16, device="meta"),
            ops.segment_chunks(torch.tensor([0, 16])),
            torch.zeros(1, dtype=torch.int32),
            torch.zeros(1, dtype=torch.int32),
            torch.zeros(4),
            mode=ops.STEP_LARS,
        )


def test_constants_agree_with_native():
    from fastres import _C

    assert (_C.STEP_LARS, _C.STEP_LR_AFTER_MOMENTUM, _C.STEP_NESTEROV, _C.STEP_W_NORM_CACHED) == (
        ops.STEP_LARS,
        ops.STEP_LR_AFTER_MOMENTUM,
        ops.STEP_NESTEROV,
        ops.STEP_W_NORM_CACHED,
    )
    assert (_C.SEG_ADAPT, _C.SEG_DECAY, _C.HPARAM_STRIDE) == (ops.SEG_ADAPT, ops.SEG_DECAY, ops.HPARAM_STRIDE)
    assert _C.STEP_RMSPROP == ops.STEP_RMSPROP


def test_lr_as_device_tensor():
    params = make_params(ODD_SHAPES, "cpu")
    clone = make_params(ODD_SHAPES, "cpu")
    a = FusedLARS(params, lr=torch.tensor(0.25), weight_decay=1e-3, eta=0.01)
    b = FusedLARS(clone, lr=0.25, weight_decay=1e-3, eta=0.01)
    set_grads(params, 0)
    set_grads(clone, 0)
    a.step()
    b.step()
    assert torch.equal(a.layout.params, b.layout.params)


@pytest.mark.parametrize("device", DEVICES)
def test_cached_weight_norms_are_bit_identical_and_invalidated(device):
    """The next step's ||w|| comes from the update's own sums: same bits as a fresh norm pass;
    an in-place write to a parameter between steps must drop the cache (else stale trust)."""

    def run(always_fresh):
        params = make_params(ODD_SHAPES, device, seed=11)
        opt = FusedLARS(params, lr=0.5, eta=0.02, weight_decay=1e-3)
        for step in range(5):
            set_grads(params, step)
            if always_fresh:
                opt.invalidate_norm_cache()
            if step == 2:
                opt.step(found_inf=torch.ones((), device=device))  # carries the norms over
            opt.step()
            if step == 1:
                with torch.no_grad():
                    params[0].mul_(3.0)  # seen through the parameter's version counter
            if step == 3:
                with torch.no_grad():
                    opt.layout.params.mul_(0.5)  # seen through the flat buffer's
        return opt.layout.params.clone(), opt.momentum_buffer.clone()

    (wa, ma), (wb, mb) = run(False), run(True)
    assert torch.equal(wa, wb) and torch.equal(ma, mb)
