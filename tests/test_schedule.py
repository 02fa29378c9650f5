"""Tests of fastres.optim.schedule against formulas written here from the papers.

- Goyal et al. 2017 (arXiv:1706.02677): lr = 0.1 x k per 256 images (sec. 2.1); gradual
  warm-up from eta = 0.1 to 3.2 at 8K in 5 epochs, a constant increment per iteration (sec.
  2.2); x0.1 at epochs 30, 60, 80 (sec. 5.1).
- Akiba et al. 2017 (arXiv:1711.04325): piecewise constant 0.5, 0.075, 0.01, 0.001 of the
  linearly scaled lr from epochs 0, 40, 70, 85; RMSprop warm-up with centre 10, period 5.
- MLPerf's LARS reference: warm-up from 0 over w epochs, then lr = (peak - end) (1 - t)^2 + end.
"""

from __future__ import annotations

import math

import pytest

from fastres.config import TrainConfig, load_preset
from fastres.data.dataset import train_steps
from fastres.optim.schedule import (
    LRSchedule,
    rmsprop_warmup_blend,
    run_schedule,
    scaled_lr,
    schedule_rows,
)


def preset(name: str, **over) -> TrainConfig:
    return TrainConfig(**{**load_preset(name), **over}).validate()


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


def test_goyal_8k_follows_the_paper():
    spe = 1_281_167 // 8192  # iterations per epoch at 8K
    s = run_schedule(preset("goyal-8k"), spe, 8192)
    W = 5 * spe
    eta, peak = 0.1, 0.1 * 8192 / 256  # sec. 2.1: 3.2
    assert peak == pytest.approx(3.2)
    inc = (peak - eta) / W  # sec. 2.2: a constant increment per iteration, eta -> k eta in 5 epochs
    for i in (0, 1, 100, W - 1, W):
        assert s(i) == pytest.approx(eta + inc * i)  # iteration i: i increments after eta
    assert s(0) == eta  # starts at exactly eta (schedule_origin zero)
    for epoch, want in [(5, 3.2), (29, 3.2), (30, 0.32), (59, 0.32), (60, 0.032), (80, 0.0032), (89, 0.0032)]:
        assert s(epoch * spe) == pytest.approx(want), epoch
    assert s.momentum(0) == 0.9 and s.rmsprop_blend(0) == 0.0
    assert s.momentum(1) == pytest.approx(0.9 * (eta + inc) / eta)  # eq. (10): m x eta_t+1 / eta_t
    assert s.momentum(30 * spe) == pytest.approx(0.09) and s.momentum(30 * spe + 1) == pytest.approx(0.9)


def test_pfn_32k_piecewise_follows_the_paper():
    spe = 1_281_167 // 32768
    s = run_schedule(preset("pfn-32k"), spe, 32768)
    base = 0.1 * 32768 / 256  # linearly scaled: 12.8
    for epoch, factor in [(0, 0.5), (39, 0.5), (40, 0.075), (69, 0.075), (70, 0.01), (85, 0.001), (89, 0.001)]:
        assert s(epoch * spe) == pytest.approx(factor * base), epoch
    assert s(0) == pytest.approx(6.4)


def test_mlperf_poly_follows_the_reference_formula():
    """NVIDIA's PolySchedule (training_results_v2.0, NVIDIA/benchmarks/resnet/implementations/mxnet/common/fit.py)
    at MXNet's update number i = step + 1, over ceil(floor(1281167 / 64) / 51) = 393 steps per epoch."""
    spe = train_steps(1_281_167, 64, 3264 // 64, "ceil")
    assert spe == 393 and train_steps(1_281_167, 64, 3264 // 64) == 392
    s = run_schedule(preset("mlperf-lars-3k"), spe, 3264)
    W, T = 2 * spe, 37 * spe
    assert s(W - 1) == pytest.approx(10.5) and s(0) == pytest.approx(10.5 / W)
    for step in (W, W + 1000, T // 2, T - 1):
        i = step + 1
        assert s(step) == pytest.approx((10.5 - 1e-4) * (1 - (i - W) / (T - W)) ** 2 + 1e-4)
    assert s(T - 1) == pytest.approx(1e-4)  # the last step ends the decay
    assert train_steps(1_281_167, 512, 33280 // 512, "ceil") == 39  # NVIDIA's 32k run: 39, not 38
    big = run_schedule(preset("mlperf-lars-32k"), 39, 33280)
    assert big(16 * 39 - 1) == pytest.approx(21.2)
    assert big.momentum(123) == pytest.approx(0.94 * big(123) / big(122))  # sgdwfastlars: mu x cur_lr / last_lr


def test_poly_power_and_end_lr_per_256_are_scaled():
    cfg = TrainConfig(lr=0.2, lr_unit="per-256", end_lr=0.02, epochs=10, warmup_epochs=0, schedule="poly",
                      poly_power=3.0, momentum=0.9, optimizer="sgd", milestones=None, factors=None)  # fmt: skip
    s = run_schedule(cfg, 10, 512)
    peak, end = 0.4, 0.04
    assert s(50) == pytest.approx((peak - end) * 0.5**3 + end)


def test_rmsprop_warmup_blend_is_exponential_then_linear():
    center, period = 10.0, 5.0  # Akiba et al. 2017, sec. 2.2

    def alpha_sgd(e):  # the shape the module docstring states, written out
        x = (e - center) / period
        return 0.5 * math.exp(2 * x) if x < 0 else min(1.0, 0.5 + x)

    for e in (0, 2.5, 5, 7.5, 9.9, 10, 11, 12.4, 12.5, 13, 90):
        assert rmsprop_warmup_blend(e, center, period) == pytest.approx(1 - alpha_sgd(e))
    assert rmsprop_warmup_blend(10) == pytest.approx(0.5)
    assert rmsprop_warmup_blend(12.5) == 0.0 and rmsprop_warmup_blend(0) > 0.98
    # continuous with equal slopes at the centre
    h = 1e-6
    left = (rmsprop_warmup_blend(10 - h) - rmsprop_warmup_blend(10 - 2 * h)) / h
    right = (rmsprop_warmup_blend(10 + 2 * h) - rmsprop_warmup_blend(10 + h)) / h
    assert left == pytest.approx(right, rel=1e-3) == pytest.approx(-1 / period, rel=1e-3)
    with pytest.raises(ValueError, match="period"):
        rmsprop_warmup_blend(1, 1, 0)
    s = run_schedule(preset("pfn-32k"), 39, 32768)
    assert s.rmsprop_blend(390) == pytest.approx(0.5) and s.rmsprop_blend(39 * 13) == 0.0


def test_a_schedule_refuses_factors_it_cannot_use():
    with pytest.raises(ValueError, match="factors"):
        LRSchedule(1.0, 10, 0, kind="piecewise")
    with pytest.raises(ValueError, match="factors"):
        LRSchedule(1.0, 10, 0, kind="step", milestone_steps=(3, 6), factors=(1.0, 0.1))


def test_piecewise_and_step_from_config_keys():
    cfg = TrainConfig(epochs=10, warmup_epochs=0, schedule="piecewise", factors=[0.5]).validate()
    s = run_schedule(cfg, 10, 256)
    assert {s(i) for i in range(100)} == {0.05}  # no milestones: one piece
    cfg = TrainConfig(epochs=9, warmup_epochs=0, schedule="step", factors=[1, 0.5, 0.25, 0.125]).validate()
    s = run_schedule(cfg, 10, 256)  # default milestones: epochs 3, 6, 8
    assert [s(29), s(30), s(60), s(80)] == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_schedule_rows_one_per_epoch_at_its_first_step():
    rows = schedule_rows(preset("goyal-8k"), 8192, steps=train_steps(1_281_167, 1, 8192))
    assert len(rows) == 90 and [r["step"] for r in rows[:3]] == [0, 156, 312]
    assert rows[30]["lr"] == pytest.approx(0.32) and all(r["batch"] == 8192 for r in rows)
