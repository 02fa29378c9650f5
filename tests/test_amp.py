"""fastres.optim.amp.LossScaler against torch.amp.GradScaler over a sequence of steps with overflows.

The same model, data and optimizer update (momentum SGD, torch's convention) run twice: with
torch.optim.SGD under GradScaler, and with FusedSGD over its flat buffer under LossScaler
(found-inf flag handed to the fused step). The scale after every update, the skipped steps and
the parameters must agree.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastres.optim import FusedSGD
from fastres.optim.amp import LossScaler

OVERFLOW_STEPS = {2, 3, 9}  # steps whose gradient holds an Inf (or NaN)


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def batch(step):
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(8, 6, generator=gen)
    y = torch.randint(0, 3, (8,), generator=gen)
    return x, y


def poison(model, step):
    if step in OVERFLOW_STEPS:
        model[0].weight.grad[0, 0] = float("inf") if step != 3 else float("nan")


def run_torch(steps, **kw):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", **kw)
    scales = []
    for step in range(steps):
        x, y = batch(step)
        opt.zero_grad()
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        poison(model, step)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    return [p.detach().clone() for p in model.parameters()], scales


def run_fastres(steps, **kw):
    model = make_model()
    opt = FusedSGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = LossScaler("cpu", **kw)
    scales, flags = [], []
    for step in range(steps):
        x, y = batch(step)
        opt.zero_grad()
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        poison(model, step)
        found_inf = scaler.unscale_(opt.layout.grads)
        flags.append(float(found_inf))
        opt.step(found_inf=found_inf)
        scaler.update()
        scales.append(scaler.get_scale())
    return [p.detach().clone() for p in model.parameters()], scales, flags


@pytest.mark.parametrize("kw", [dict(init_scale=2.0**10, growth_interval=3), dict()])
def test_scale_sequence_skips_and_parameters_match_grad_scaler(kw):
    steps = 14
    want_params, want_scales = run_torch(steps, **kw)
    params, scales, flags = run_fastres(steps, **kw)
    assert scales == want_scales
    assert flags == [1.0 if s in OVERFLOW_STEPS else 0.0 for s in range(steps)]
    for a, b in zip(params, want_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if kw:  # growth after 3 clean steps, backoff on each overflow
        pairs = list(zip(scales, scales[1:]))
        assert any(b > a for a, b in pairs) and any(b < a for a, b in pairs)


def test_the_skip_path_leaves_parameters_and_momentum_untouched():
    model = make_model()
    opt = FusedSGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = LossScaler("cpu", init_scale=256.0)
    x, y = batch(0)
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    found = scaler.unscale_(opt.layout.grads)
    opt.step(found_inf=found)
    scaler.update()
    before = (opt.layout.params.clone(), opt.momentum_buffer.clone())
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    model[2].bias.grad[1] = float("nan")
    found = scaler.unscale_(opt.layout.grads)
    assert float(found) == 1.0
    opt.step(found_inf=found)
    scaler.update()
    assert torch.equal(before[0], opt.layout.params) and torch.equal(before[1], opt.momentum_buffer)
    assert scaler.get_scale() == 128.0
    state = scaler.state_dict()
    other = LossScaler("cpu")
    other.load_state_dict(state)
    assert other.get_scale() == 128.0


def test_unscale_divides_by_the_scale_in_one_pass():
    scaler = LossScaler("cpu", init_scale=4.0)
    g = torch.tensor([4.0, -8.0, 2.0])
    assert float(scaler.unscale_(g)) == 0.0
    assert g.tolist() == [1.0, -2.0, 0.5]
    with pytest.raises(ValueError, match="growth_factor"):
        LossScaler(growth_factor=1.0)


@pytest.mark.parametrize(
    "flags, native",
    [("fpu sse2 avx512f avx512_bf16 avx512_vnni", True), ("fpu sse2 amx_tile amx_bf16", True),
     ("fpu sse2 avx2 avx512f", False), (None, False)],
)  # fmt: skip
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    from fastres.run.execution import cpu_has_native_bf16

    info = tmp_path / "cpuinfo"
    lines = ["processor\t: 0", "model name\t: x"] + ([f"flags\t\t: {flags}"] if flags is not None else [])
    info.write_text("\n".join(lines) + "\n")
    assert cpu_has_native_bf16(str(info)) is native
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is None
