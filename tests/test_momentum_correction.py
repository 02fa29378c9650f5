"""The momentum correction (`momentum_correction`) against float64 references written from the sources' formulas.

- NVIDIA's sgdwfastlars (MLPerf v0.7 / v2.0, mlcommons/training_results_v0.7 and _v2.0,
  NVIDIA/benchmarks/resnet/implementations/mxnet/common/fit.py: `SGDwFASTLARS`, `PolySchedule`,
  `set_wd_mult`): per tensor, lr_t = PolySchedule(t + 1) (MXNet's num_update counts from 1),
  trust = eta ||w|| / (||g|| + wd ||w|| + eps) on weights (none on names ending gamma, beta,
  bias), wd on weights and the fc bias only,
      state = mu (lr_t / lr_t-1) state + lr_t trust (g + wd w),   w -= state
  with lr_-1 = lr_0 (`last_lr = lr` at the first update).
- Goyal et al. 2017 (arXiv:1706.02677) eq. (10), the lr change folded into the momentum:
      u_t+1 = m (eta_t+1 / eta_t) u_t + eta_t+1 (g_t + lambda w_t),   w_t+1 = w_t - u_t+1
  with the warm-up of sec. 2.2 starting at exactly eta = 0.1 at iteration 0.
fastres runs the same steps with its optimizer, its schedule and the trainer's per-step calls.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from fastres.config import TrainConfig, parse_args
from fastres.optim import build_optimizer
from fastres.optim.schedule import run_schedule


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 5),
    )  # fmt: skip


def _grads(model: nn.Module, steps: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=g) for p in model.parameters()] for _ in range(steps)]


def _run_fastres(cfg, model: nn.Module, grads, steps_per_epoch: int, global_batch: int) -> list[torch.Tensor]:
    """What the trainer does each step: lr and momentum from the schedule into every group, then step."""
    opt = build_optimizer(cfg, model)
    schedule = run_schedule(cfg, steps_per_epoch, global_batch)
    for step, gs in enumerate(grads):
        for group in opt.param_groups:
            group["lr"], group["momentum"] = schedule(step), schedule.momentum(step)
        for p, g in zip(model.parameters(), gs):
            p.grad = g.clone()
        opt.step()
    return [p.detach().double() for p in model.parameters()]


def _nvidia_reference(params, names, grads, *, base_lr, end_lr, warmup, total, mu, wd, eta, eps=0.0):
    """float64 sgdwfastlars + PolySchedule, written from the formulas in the module docstring."""
    w = [p.detach().double().clone() for p in params]
    state = [torch.zeros_like(x) for x in w]

    def poly(i: int) -> float:
        if i <= warmup:
            return base_lr * i / warmup
        return end_lr + (base_lr - end_lr) * (1 - (i - warmup) / (total - warmup)) ** 2

    last = None
    for t, gs in enumerate(grads):
        lr = poly(t + 1)
        mom = mu * lr / (lr if last is None else last)
        last = lr
        for k, (name, g) in enumerate(zip(names, gs)):
            g = g.double()
            lars = not name.endswith(("gamma", "beta", "bias"))
            decayed = name.endswith("weight") or name == "fc_bias"
            d = wd if decayed else 0.0
            trust = 1.0
            if lars:
                wn, gn = w[k].norm().item(), g.norm().item()
                if wn > 0 and gn > 0:
                    trust = eta * wn / (gn + d * wn + eps)
            state[k] = mom * state[k] + lr * trust * (g + d * w[k])
            w[k] = w[k] - state[k]
    return w


def test_lars_with_the_correction_matches_nvidia_sgdwfastlars_in_float64():
    model = _model()
    names = ["conv_weight", "bn_gamma", "bn_beta", "fc_weight", "fc_bias"]  # MXNet's names for these tensors
    steps_per_epoch, epochs, warmup_epochs = 3, 4, 1  # 12 steps: 3 of warm-up, 9 of poly decay
    grads = _grads(model, steps_per_epoch * epochs)
    ref = _nvidia_reference(list(model.parameters()), names, grads, base_lr=2.0, end_lr=1e-4,
                            warmup=steps_per_epoch * warmup_epochs, total=steps_per_epoch * epochs, mu=0.9,
                            wd=5e-5, eta=0.001)  # fmt: skip
    cfg = TrainConfig(optimizer="lars", lr=2.0, lr_unit="absolute", end_lr=1e-4, schedule="poly", poly_power=2,
                      warmup_epochs=warmup_epochs, warmup_start=0.0, epochs=epochs, momentum=0.9, weight_decay=5e-5,
                      lars_eta=0.001, momentum_convention="mlperf", momentum_correction=True,
                      schedule_origin="mxnet", bias_decay=True).validate()  # fmt: skip
    got = _run_fastres(cfg, model, grads, steps_per_epoch, 64)
    for name, a, b in zip(names, got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9, msg=name)
    # without the correction (fastres before it) the same run leaves the reference
    uncorrected = _model()
    cfg.momentum_correction = False
    far = _run_fastres(cfg, uncorrected, grads, steps_per_epoch, 64)
    assert max((a - b).abs().max().item() for a, b in zip(far, ref)) > 1e-4


def _goyal_reference(params, grads, *, eta0, peak, warmup, milestones, m, lam):
    """float64 eq. (10) with sec. 2.2's warm-up (eta0 at iteration 0, + (peak - eta0) / warmup each)
    and x0.1 at each milestone (steps); weight decay lambda on ndim > 1 tensors only (sec. 5.1)."""
    w = [p.detach().double().clone() for p in params]
    u = [torch.zeros_like(x) for x in w]

    def eta(t: int) -> float:
        if t < warmup:
            return eta0 + (peak - eta0) * t / warmup
        return peak * 0.1 ** sum(t >= s for s in milestones)

    for t, gs in enumerate(grads):
        ratio = eta(t) / eta(t - 1) if t > 0 else 1.0
        for k, g in enumerate(gs):
            g = g.double()
            lam_k = lam if w[k].ndim > 1 else 0.0
            u[k] = m * ratio * u[k] + eta(t) * (g + lam_k * w[k])
            w[k] = w[k] - u[k]
    return w


def test_goyal_8k_update_matches_eq_10_in_float64_from_exactly_0_1():
    cfg = parse_args(["--config", "goyal-8k", "--epochs", "6", "--warmup-epochs", "2", "--milestones", "3,5",
                      "--factors", "1,0.1,0.01", "--no-nesterov"])  # fmt: skip
    assert cfg.momentum_correction and cfg.schedule_origin == "zero"
    steps_per_epoch, global_batch = 2, 8192
    sched = run_schedule(cfg, steps_per_epoch, global_batch)
    assert sched(0) == pytest.approx(0.1, rel=1e-12)  # iteration 0 at eta = 0.1 exactly
    model = _model()
    grads = _grads(model, steps_per_epoch * cfg.epochs)
    ref = _goyal_reference(list(model.parameters()), grads, eta0=0.1, peak=3.2, warmup=4, milestones=(6, 10), m=0.9,
                           lam=1e-4)  # fmt: skip
    got = _run_fastres(cfg, model, grads, steps_per_epoch, global_batch)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-5)  # float32 steps of up to 3.2 x |g|
    cfg.momentum_correction, cfg.schedule_origin = False, "fastres"  # without the correction and the paper's origin
    uncorrected = _run_fastres(cfg, _model(), grads, steps_per_epoch, global_batch)
    assert max((a - b).abs().max().item() for a, b in zip(uncorrected, ref)) > 1e-2


def test_the_correction_makes_the_mlperf_convention_torch_sgd():
    """Goyal et al.'s Remark 2: with the correction, lr inside the momentum = torch.optim.SGD's lr after it."""
    cfg = TrainConfig(optimizer="fused-sgd", momentum=0.9, nesterov=False, weight_decay=1e-4, lars_eta=0.0,
                      momentum_convention="mlperf")  # fmt: skip
    model, peer = _model(), _model()
    grads = _grads(model, 8)
    lrs = [0.1 * (1 + t) if t < 4 else 0.05 * 0.5 ** (t - 4) for t in range(8)]
    fused = build_optimizer(cfg, model)
    sgd = build_optimizer(dataclasses.replace(cfg, optimizer="sgd", momentum_convention="torch"), peer)
    for t, gs in enumerate(grads):
        for group in fused.param_groups:
            group["lr"], group["momentum"] = lrs[t], 0.9 * (lrs[t] / lrs[t - 1] if t else 1.0)
        for group in sgd.param_groups:
            group["lr"] = lrs[t]
        for p, q, g in zip(model.parameters(), peer.parameters(), gs):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        sgd.step()
    for a, b in zip(model.parameters(), peer.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_corrected_momentum_per_step_and_its_checks():
    cfg = TrainConfig(optimizer="lars", lr=1.0, lr_unit="absolute", schedule="step", milestones=[2], factors=[1, 0.1],
                      warmup_epochs=1, epochs=3, momentum=0.9, momentum_correction=True).validate()  # fmt: skip
    s = run_schedule(cfg, 4, 256)
    assert s.momentum(0) == 0.9 and s.momentum(1) == pytest.approx(0.9 * 2 / 1)  # (k + 1) / W warm-up: 0.25 -> 0.5
    assert s.momentum(8) == pytest.approx(0.09) and s.momentum(9) == pytest.approx(0.9)
    assert math.isclose(run_schedule(TrainConfig(optimizer="lars"), 4, 256).momentum(5), 0.9)  # off: constant
    with pytest.raises(Exception, match="--momentum-correction"):
        TrainConfig(optimizer="sgd", momentum_correction=True).validate()  # torch's convention needs none
