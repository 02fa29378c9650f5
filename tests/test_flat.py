"""Tests of fastres.kernels.flat: the flat layout of parameters, gradients and momentum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastres.kernels import ops
from fastres.kernels.flat import ALIGN, FlatParams
from fastres.model import resnet50


def test_resnet50_layout():
    model = resnet50()
    before = [p.detach().clone() for p in model.parameters()]
    L = FlatParams(model)
    assert L.num_segments == 161 and sum(L.sizes) == 25_557_032
    assert torch.all(L.offsets[:-1] % ALIGN == 0) and L.offsets[-1] == L.numel
    for (name, p), b, a in zip(model.named_parameters(), before, L.offsets.tolist()):
        assert torch.equal(p, b), name
        assert p.data_ptr() == L.params[a:].data_ptr()  # a view, at its offset
        assert p.grad is not None and p.grad.data_ptr() == L.grads[a:].data_ptr()
    # padding is zero, flags follow ndim
    mask = torch.ones(L.numel, dtype=torch.bool)
    for a, n in zip(L.offsets.tolist(), L.sizes):
        mask[a : a + n] = False
    assert mask.sum() > 0 and torch.all(L.params[mask] == 0)
    assert L.adapt.tolist() == [p.ndim > 1 for p in model.parameters()]
    assert torch.equal(L.adapt, L.decay)
    with pytest.raises(ValueError, match="already in a FlatParams layout"):  # one layout per model
        FlatParams(model)
    # per-segment norms over the layout equal per-tensor norms
    norms = ops.segment_sq_norms(L.params, L.chunks)
    want = torch.stack([p.detach().double().square().sum() for p in model.parameters()])
    torch.testing.assert_close(norms.double(), want, rtol=1e-4, atol=1e-6)


def test_training_through_views_and_channels_last():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    ref = [p.detach().clone() for p in model.parameters()]
    out_before = model(x)
    L = FlatParams(model)
    conv_w = model[0].weight
    assert conv_w.is_contiguous(memory_format=torch.channels_last)
    for p, r in zip(model.parameters(), ref):
        assert torch.equal(p, r)
    torch.testing.assert_close(model(x), out_before)
    model(x).sum().backward()
    assert conv_w.grad.data_ptr() == L.grads[int(L.offsets[0]) :].data_ptr()
    g1 = L.grads.clone()
    model(x).sum().backward()
    torch.testing.assert_close(L.grads, 2 * g1)  # accumulated into the views
    L.zero_grad()
    assert torch.all(L.grads == 0) and conv_w.grad.data_ptr() == L.grads[int(L.offsets[0]) :].data_ptr()
    # writing the flat buffer moves the parameters
    L.params.mul_(2)
    assert torch.equal(model[3].bias, 2 * ref[-1])
    m = L.new_buffer()
    views = L.views(m)
    assert [v.shape for v in views] == [p.shape for p in model.parameters()]


def test_replaced_data_is_detected():
    model = nn.Linear(3, 2)
    L = FlatParams(model)
    model.weight.data = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match="weight: its data no longer lives"):
        L.check_views()


def test_bad_input():
    with pytest.raises(ValueError, match="no parameters"):
        FlatParams([])
    with pytest.raises(TypeError, match=r"0\.weight: expected dtype torch.float32"):
        FlatParams(nn.Sequential(nn.Linear(2, 2).double()))
    p = nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match=r"params\[1\]: given twice"):
        FlatParams([p, p])
    FlatParams([p])
    with pytest.raises(ValueError, match="already in a FlatParams"):
        FlatParams([p])


def test_pad_before_groups_span_multiples():
    params = [nn.Parameter(torch.randn(n)) for n in (5, 17, 3, 40, 1, 9)]
    values = [p.detach().clone() for p in params]
    L = FlatParams(params, pad_before=[0, 2, 5, 6], pad_multiple=48)
    off = L.offsets.tolist()
    for a, b in ((0, 2), (2, 5), (5, 6)):  # each group spans a multiple of 48
        assert off[a] % 48 == 0 and (off[b] - off[a]) % 48 == 0
    assert all(o % ALIGN == 0 for o in off) and L.numel == off[-1]
    for p, v, a in zip(params, values, off):
        assert torch.equal(p, v) and p.data_ptr() == L.params[a:].data_ptr()
    mask = torch.ones(L.numel, dtype=torch.bool)
    for a, n in zip(off, L.sizes):
        mask[a : a + n] = False
    assert torch.all(L.params[mask] == 0) and torch.all(L.grads[mask] == 0)
    with pytest.raises(ValueError, match="pad_multiple"):
        FlatParams([nn.Parameter(torch.randn(3))], pad_multiple=20)
    with pytest.raises(ValueError, match="pad_before"):
        FlatParams([nn.Parameter(torch.randn(3))], pad_before=[2], pad_multiple=16)
