"""Tests of fastres.optim.schedule: existing schedules, slow-start, RMSprop warm-up blend."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastres.optim import FusedSGD
from fastres.optim.schedule import LRSchedule, rmsprop_warmup_blend, scaled_lr


def test_linear_warmup_then_cosine_unchanged():
    s = LRSchedule(peak=2.0, total_steps=110, warmup_steps=10)
    assert [s(i) for i in range(3)] == pytest.approx([0.2, 0.4, 0.6])
    assert s(9) == pytest.approx(2.0)
    assert s(10 + 50) == pytest.approx(1.0)
    assert s(109) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert scaled_lr(0.1, 8192) == pytest.approx(3.2)


def test_poly_step_constant():
    assert LRSchedule(1.0, 100, 0, kind="poly")(50) == pytest.approx(0.25)
    s = LRSchedule(1.0, 90, 0, kind="step", milestones=(30 / 90, 60 / 90, 80 / 90))
    assert [s(29), s(30), s(60), s(85)] == pytest.approx([1.0, 0.1, 0.01, 0.001])
    assert LRSchedule(0.3, 10, 2, kind="constant")(7) == 0.3


def test_slow_start_holds_then_ramps():
    s = LRSchedule(
        peak=1.0,
        total_steps=100,
        warmup_steps=10,
        warmup_kind="slow-start",
        warmup_start=0.1,
        slow_start_hold=0.5,
        kind="constant",
    )
    assert [s(i) for i in range(5)] == pytest.approx([0.1] * 5)
    assert [s(i) for i in range(5, 10)] == pytest.approx([0.28, 0.46, 0.64, 0.82, 1.0])
    assert s(10) == 1.0
    with pytest.raises(ValueError, match="warm-up"):
        LRSchedule(1.0, 10, 2, warmup_kind="exp")
    with pytest.raises(ValueError, match="slow_start_hold"):
        LRSchedule(1.0, 10, 2, warmup_kind="slow-start", slow_start_hold=1.0)


def test_rmsprop_warmup_blend():
    assert [rmsprop_warmup_blend(e, 10, 4) for e in (0, 8, 9, 10, 11, 12, 30)] == pytest.approx(
        [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    )
    with pytest.raises(ValueError, match="period"):
        rmsprop_warmup_blend(1, 1, 0)


def test_rmsprop_warmup_step_matches_formula():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(8, 5))
    w, m, v = p.detach().clone().double(), torch.zeros(8, 5).double(), torch.zeros(8, 5).double()
    opt = FusedSGD([p], lr=0.1, momentum=0.9, rmsprop_beta=0.99, rmsprop_eps=1e-8)
    for _step, blend in enumerate([1.0, 0.6, 0.0]):
        opt.param_groups[0]["rmsprop_blend"] = blend
        g = torch.randn(8, 5)
        p.grad.copy_(g)
        opt.step()
        g = g.double()
        v = 0.99 * v + 0.01 * g * g
        ge = (1 - blend + blend / (v.sqrt() + 1e-8)) * g
        m = 0.9 * m + ge
        w = w - 0.1 * m
        torch.testing.assert_close(p.detach().double(), w, rtol=1e-5, atol=1e-6)
    assert "rmsprop_sq_avg" in opt.state_dict()
