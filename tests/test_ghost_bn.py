"""Ghost BN (`--bn-virtual-batch N`, fastres.model.bn.GhostBatchNorm2d) against a loop that splits
the batch by hand and runs plain batch norm on each group (Goyal et al. 2017, sec. 5.1: BN over 32
images per worker)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastres.model import build_model
from fastres.model.bn import GhostBatchNorm2d, convert_ghost_bn


def _by_hand(x, weight, bias, n, eps):
    """Each group of n images (the last one smaller) normalised alone, in float64."""
    outs = [F.batch_norm(part, None, None, weight, bias, training=True, eps=eps) for part in x.split(n)]
    return torch.cat(outs)


@pytest.mark.parametrize("batch,n", [(12, 4), (10, 4), (3, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_ghost_bn_matches_the_batch_split_by_hand(batch, n, channels_last):
    torch.manual_seed(0)
    bn = GhostBatchNorm2d(5, n)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(batch, 5, 6, 7) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = bn(x)
    w64, b64 = bn.weight.detach().double().requires_grad_(), bn.bias.detach().double().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    ref = _by_hand(x64, w64, b64, n, bn.eps)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last or batch <= n
    up = torch.randn_like(ref)
    (y.double() * up).sum().backward()
    (ref * up).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad.double(), b64.grad, rtol=1e-4, atol=1e-5)
    # moving averages: one update from the mean over groups of each group's mean and unbiased variance
    means = torch.stack([p.mean((0, 2, 3)) for p in x64.detach().split(n)]).mean(0)
    variances = torch.stack([p.var((0, 2, 3), unbiased=True) for p in x64.detach().split(n)]).mean(0)
    torch.testing.assert_close(bn.running_mean.double(), 0.1 * means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), 0.9 + 0.1 * variances, rtol=1e-5, atol=1e-6)


def test_resnet18_with_ghost_bn_trains_a_step_in_bf16_channels_last():
    torch.manual_seed(0)
    model = convert_ghost_bn(build_model("resnet18", 10), 4).to(memory_format=torch.channels_last)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, GhostBatchNorm2d) for m in bns)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # each group of 4 is normalised alone: the first half's output does not depend on the second half
    model.zero_grad()
    first = model.conv1(x[:4])
    first_bn = model.bn1(torch.cat([first, model.conv1(x[4:] * 10)]))[:4]
    torch.testing.assert_close(first_bn, bns[0](first), rtol=1e-4, atol=1e-4)
    assert convert_ghost_bn(model, None) is model
