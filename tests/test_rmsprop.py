"""RMSprop warm-up in the fused step (csrc/lars.h, ops.STEP_RMSPROP; `--optimizer rmsprop-warmup`).

The reference is Akiba, Suzuki & Fukuda 2017 (arXiv:1711.04325, sec. 2.2), written out here
in float64, one tensor at a time, independently of csrc/:

    v     = beta * v + (1 - beta) * g'^2                 (g' = g + wd * w)
    Delta = mu * Delta - (alpha_SGD * lr + alpha_RMSprop * r / (sqrt(v) + eps)) * g'
    w     = w + Delta

with alpha_RMSprop = 1 - alpha_SGD and r RMSprop's own rate. fastres keeps m = -Delta (the
MLPerf convention: the rate inside the momentum). Checked for the native CPU kernel and the
torch path, both momentum conventions (equal at constant lr), Nesterov, LARS on the SGD
part, a changing blend, and a found-inf step that must leave w, m and v untouched. CUDA
cases skip without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastres.kernels import ops
from fastres.optim import FusedLARS, FusedSGD

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
BACKENDS = ["native", "torch", pytest.param("cuda", marks=requires_cuda)]
SHAPES = [(16, 3, 3, 3), (16,), (16,), (10, 16), (10,), (7,), (33, 5)]


@pytest.fixture(autouse=True)
def _native_needed():
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)


def reference(ws, gs, ms, vs, *, lr, rate, blend, mu, wd, beta, eps, nesterov=False, lars_eta=None):
    """One step of the paper's update in float64, in place; wd and LARS on ndim > 1 only."""
    for w, g, m, v in zip(ws, gs, ms, vs):
        d = wd if w.ndim > 1 else 0.0
        gd = g + d * w
        trust = 1.0
        if lars_eta is not None and w.ndim > 1:
            wn, gn = w.norm().item(), g.norm().item()
            trust = lars_eta * wn / (gn + d * wn) if wn > 0 and gn > 0 else 1.0
        v.mul_(beta).add_((1 - beta) * gd * gd)
        c = (1 - blend) * lr * trust + blend * rate / (v.sqrt() + eps)
        m.mul_(mu).add_(c * gd)
        w.sub_(c * gd + mu * m if nesterov else m)


def make(device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in SHAPES]


def grads_of(step):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=gen) * (0.5 + i % 3) for i, s in enumerate(SHAPES)]


def groups_of(params, wd):
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lars", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
def test_blended_steps_match_the_paper_in_float64(backend, lars, nesterov):
    device = "cuda" if backend == "cuda" else "cpu"
    params = make(device)
    ws = [p.detach().double().cpu().clone() for p in params]
    ms = [torch.zeros_like(w) for w in ws]
    vs = [torch.zeros_like(w) for w in ws]
    lr, rate, mu, wd, beta, eps = 0.3, 0.002, 0.9, 1e-3, 0.99, 1e-6
    kw = dict(momentum=mu, nesterov=nesterov, backend="auto" if backend == "cuda" else backend)
    kw.update(rmsprop_beta=beta, rmsprop_eps=eps, rmsprop_lr=rate, lr_inside_momentum=True)
    cls = FusedLARS if lars else FusedSGD
    opt = cls(groups_of(params, wd), lr, **kw, **({"eta": 0.01} if lars else {}))
    for step, blend in enumerate([1.0, 0.9, 0.5, 0.1, 0.0, 0.0]):
        opt.param_groups[0]["rmsprop_blend"] = opt.param_groups[1]["rmsprop_blend"] = blend
        gs = grads_of(step)
        for p, g in zip(params, gs):
            p.grad.copy_(g.to(device))
        opt.step()
        if blend > 0:
            reference(ws, [g.double() for g in gs], ms, vs, lr=lr, rate=rate, blend=blend, mu=mu, wd=wd,
                      beta=beta, eps=eps, nesterov=nesterov, lars_eta=0.01 if lars else None)  # fmt: skip
        else:  # blend 0: plain momentum SGD, v neither read nor written
            reference(ws, [g.double() for g in gs], ms, [v.clone() for v in vs], lr=lr, rate=rate, blend=0.0,
                      mu=mu, wd=wd, beta=beta, eps=eps, nesterov=nesterov, lars_eta=0.01 if lars else None)  # fmt: skip
        for p, w in zip(params, ws):
            torch.testing.assert_close(p.detach().double().cpu(), w, rtol=2e-5, atol=2e-6)
    views = dict(zip(map(id, opt.layout.param_list), opt.layout.views(opt.rmsprop_sq_avg)))
    for p, v in zip(params, vs):
        torch.testing.assert_close(views[id(p)].double().cpu(), v, rtol=2e-5, atol=1e-9)


def test_the_two_momentum_conventions_take_the_same_steps_at_constant_lr():
    out = []
    for inside in (True, False):
        params = make("cpu")
        opt = FusedSGD(groups_of(params, 1e-3), 0.2, momentum=0.9, lr_inside_momentum=inside, rmsprop_lr=0.01)
        for step in range(4):
            opt.param_groups[0]["rmsprop_blend"] = opt.param_groups[1]["rmsprop_blend"] = 0.7
            for p, g in zip(params, grads_of(step)):
                p.grad.copy_(g)
            opt.step()
        out.append([p.detach().clone() for p in params])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_a_found_inf_step_leaves_w_m_and_v_untouched(backend):
    params = make("cpu")
    opt = FusedSGD(groups_of(params, 1e-3), 0.1, momentum=0.9, rmsprop_lr=0.01, backend=backend)
    opt.param_groups[0]["rmsprop_blend"] = opt.param_groups[1]["rmsprop_blend"] = 0.5
    for p, g in zip(params, grads_of(0)):
        p.grad.copy_(g)
    opt.step()
    before = (opt.layout.params.clone(), opt.momentum_buffer.clone(), opt.rmsprop_sq_avg.clone())
    for p, g in zip(params, grads_of(1)):
        p.grad.copy_(g)
    opt.step(found_inf=torch.ones(()))
    after = (opt.layout.params, opt.momentum_buffer, opt.rmsprop_sq_avg)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    opt.step(found_inf=torch.zeros(()))
    assert not torch.equal(before[2], opt.rmsprop_sq_avg)


def test_native_and_torch_paths_agree_and_v_survives_a_checkpoint():
    runs = []
    for backend in ("native", "torch"):
        params = make("cpu")
        opt = FusedSGD(groups_of(params, 1e-3), 0.1, momentum=0.9, rmsprop_lr=0.02, backend=backend)
        for step in range(3):
            opt.param_groups[0]["rmsprop_blend"] = opt.param_groups[1]["rmsprop_blend"] = 1.0 - step / 3
            for p, g in zip(params, grads_of(step)):
                p.grad.copy_(g)
            opt.step()
        runs.append(opt)
    torch.testing.assert_close(runs[0].layout.params, runs[1].layout.params, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(runs[0].rmsprop_sq_avg, runs[1].rmsprop_sq_avg, rtol=1e-6, atol=1e-9)
    sd = runs[0].state_dict()
    fresh = FusedSGD(groups_of(make("cpu", seed=1), 1e-3), 0.1, momentum=0.9, rmsprop_lr=0.02)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.rmsprop_sq_avg, runs[0].rmsprop_sq_avg)


def test_a_blend_outside_0_1_is_refused():
    params = make("cpu")
    opt = FusedSGD(groups_of(params, 0.0), 0.1, rmsprop_lr=0.01)
    opt.param_groups[0]["rmsprop_blend"] = opt.param_groups[1]["rmsprop_blend"] = 1.5
    with pytest.raises(ValueError, match="rmsprop_blend"):
        opt.step()
