"""Benchmark: one optimizer step over ResNet-50's 161 parameter tensors (25.6M fp32).

    pip install -e ".[test]" && pytest bench/bench_lars.py --benchmark-json=bench/results/lars-cpu.json

One pytest-benchmark group per device:
  fastres FusedLARS            csrc/lars.h: norms of w and g, then the fused update (no sync)
  fastres FusedSGD             the same kernel without the norm pass
  ..., run-time compiled       (GPU with CuPy) the same kernels compiled with NVRTC (fastres.kernels.rtc)
  torch SGD fused=True         torch.optim.SGD(momentum=0.9, fused=True): the peer to match
  foreach LARS (timm-style)    plain PyTorch with torch._foreach_* ops, trust ratios on the device
  FusedLARS torch fallback     FusedLARS(backend="torch"): fastres.kernels.torch_ops
  ceiling: copy_               a copy moving as many bytes as a momentum-SGD step (read w, g, m;
                               write w, m: 5 x 102 MB), measured in the same run
A LARS step moves 6 x 102 MB (its norm pass reads g once more; the norms of w come from the
previous update, see fastres/optim/lars.py), so its own floor is 6/5 of the ceiling; the
foreach LARS and the fallback move at least 7 x 102 MB. Results are checked against each other before anything is timed.
bench/conftest.py prints the ratios; bench/README.md has the table.
"""

from __future__ import annotations

import pytest
import torch

from fastres.kernels import ops, rtc
from fastres.model import resnet50
from fastres.optim import FusedLARS, FusedSGD

from timing import time_kernel

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
]
LR, MU, WD, ETA = 0.1, 0.9, 5e-5, 0.001

# RESULTS[device][name] = (mean seconds, bytes moved); bench/conftest.py prints them.
RESULTS: dict[str, dict[str, tuple[float, int]]] = {}


def make_params(device):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(p.detach().to(device)) for p in resnet50().parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


def groups(params):
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": WD},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


class ForeachLARS:
    """timm-style LARS in plain PyTorch: _foreach ops, trust ratios stay on the device."""

    def __init__(self, params):
        self.adapted = [p for p in params if p.ndim > 1]
        self.plain = [p for p in params if p.ndim <= 1]
        self.bufs_a = [torch.zeros_like(p) for p in self.adapted]
        self.bufs_p = [torch.zeros_like(p) for p in self.plain]

    @torch.no_grad()
    def step(self):
        w, g = self.adapted, [p.grad for p in self.adapted]
        wn = torch.stack(torch._foreach_norm(w, 2))
        gn = torch.stack(torch._foreach_norm(g, 2))
        trust = torch.where((wn > 0) & (gn > 0), ETA * wn / (gn + WD * wn), torch.ones_like(wn))
        gd = torch._foreach_add(g, w, alpha=WD)
        torch._foreach_mul_(gd, list(trust.unbind()))
        torch._foreach_mul_(self.bufs_a, MU)
        torch._foreach_add_(self.bufs_a, gd)
        torch._foreach_add_(w, self.bufs_a, alpha=-LR)
        torch._foreach_mul_(self.bufs_p, MU)
        torch._foreach_add_(self.bufs_p, [p.grad for p in self.plain])
        torch._foreach_add_(self.plain, self.bufs_p, alpha=-LR)


RTC = ", run-time compiled"


def build(kind, device):
    params = make_params(device)
    if kind == "fastres FusedLARS" + RTC:
        opt = FusedLARS(groups(params), lr=LR, momentum=MU, eta=ETA, lr_inside_momentum=False, backend="rtc")
    elif kind == "fastres FusedSGD" + RTC:
        opt = FusedSGD(groups(params), lr=LR, momentum=MU, backend="rtc")
    elif kind == "fastres FusedLARS":
        opt = FusedLARS(groups(params), lr=LR, momentum=MU, eta=ETA, lr_inside_momentum=False, backend="native")
    elif kind == "FusedLARS torch fallback":
        opt = FusedLARS(groups(params), lr=LR, momentum=MU, eta=ETA, lr_inside_momentum=False, backend="torch")
    elif kind == "fastres FusedSGD":
        opt = FusedSGD(groups(params), lr=LR, momentum=MU, backend="native")
    elif kind == "torch SGD fused=True":
        opt = torch.optim.SGD(groups(params), lr=LR, momentum=MU, fused=True)
    else:
        opt = ForeachLARS(params)
    return params, opt


KINDS = [
    "fastres FusedLARS",
    "fastres FusedSGD",
    "torch SGD fused=True",
    "foreach LARS (timm-style)",
    "FusedLARS torch fallback",
    "fastres FusedLARS" + RTC,
    "fastres FusedSGD" + RTC,
]
N = 25_557_032


def runs_on(kind, device) -> bool:
    """The run-time compiled kinds need a GPU and CuPy (`pip install fastres[gpu]`)."""
    return not kind.endswith(RTC) or (device.type == "cuda" and rtc.available()[0])


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    device = torch.device(request.param)
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)
    # check first: two steps of each LARS agree, FusedSGD agrees with torch's SGD
    out = {}
    for kind in [k for k in KINDS if runs_on(k, device)]:
        params, opt = build(kind, device)
        opt.step()
        opt.step()
        out[kind] = torch.cat([p.detach().reshape(-1) for p in params])
    for kind in ("FusedLARS torch fallback", "foreach LARS (timm-style)"):
        torch.testing.assert_close(out["fastres FusedLARS"], out[kind], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["fastres FusedSGD"], out["torch SGD fused=True"], rtol=1e-5, atol=1e-6)
    for kind in [k for k in out if k.endswith(RTC)]:
        torch.testing.assert_close(out[kind], out[kind[: -len(RTC)]], rtol=1e-5, atol=1e-6)
    return device


def _run(benchmark, device, name, fn, nbytes):
    stats = time_kernel(benchmark, device, f"lars-{device.type}", fn, nbytes, rounds=15)
    if stats is not None:
        RESULTS.setdefault(device.type, {})[name] = (stats.mean, nbytes)


@pytest.mark.parametrize("kind", KINDS)
def test_step(benchmark, device, kind):
    if not runs_on(kind, device):
        pytest.skip("run-time compiled kernels need a GPU and CuPy")
    params, opt = build(kind, device)
    moves = 6 if kind.startswith("fastres FusedLARS") else 7 if "LARS" in kind else 5
    _run(benchmark, device, kind, opt.step, moves * N * 4)


def test_ceiling_copy(benchmark, device):
    src = torch.randn(5 * N // 2, device=device)
    dst = torch.empty_like(src)
    _run(benchmark, device, "ceiling: copy_ (5 x 102 MB moved)", lambda: dst.copy_(src), 5 * N * 4)
