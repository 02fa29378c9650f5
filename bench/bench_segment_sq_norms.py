"""Benchmark: segment_sq_norms over ResNet-50's 161 parameter tensors (25,557,032 fp32).

    pip install . && pytest bench/bench_segment_sq_norms.py            # CPU, and CUDA if present
    pytest bench/bench_segment_sq_norms.py --benchmark-json out.json   # keep the numbers

Each device is one pytest-benchmark group: fastres's kernel (chunk table built once, as a
LARS step uses it; and from plain offsets, which rebuilds the table each call), torch's
fused `_foreach_norm` squared, a per-tensor loop of `(x * x).sum()`, and the machine's own
ceiling in the same run: `flat.sum()` reads the same 102 MB, `copy_` reads and writes them.
bench/conftest.py prints each result as GB/s read and as a ratio to the torch peers and to
the ceiling. Results are checked against float64 before anything is timed.

Measured on the 2-core AMD EPYC CI box (bench/results/segment_sq_norms-cpu-*.json, table in
bench/README.md): fastres reaches 84-91% of `flat.sum()` reading the same bytes, 1.2-1.5x
faster than `_foreach_norm` and ~3x faster than the per-tensor loop. No GPU figures yet: the
CUDA group runs wherever torch sees a GPU.
"""

from __future__ import annotations

import pytest
import torch

from fastres.kernels import ops, rtc
from fastres.model import resnet50

from timing import time_kernel

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
]

# RESULTS[device][name] = (mean seconds, bytes read); bench/conftest.py prints them.
RESULTS: dict[str, dict[str, tuple[float, int]]] = {}


def resnet50_sizes() -> list[int]:
    with torch.device("meta"):
        model = resnet50()
    return [p.numel() for p in model.parameters()]


@pytest.fixture(scope="module", params=DEVICES)
def layout(request):
    device = torch.device(request.param)
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)
    sizes = resnet50_sizes()
    assert len(sizes) == 161
    offsets = torch.tensor([0] + sizes, dtype=torch.int64).cumsum(0)
    flat = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(0)).to(device)
    chunks = ops.segment_chunks(offsets, device)
    views = [flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    # check first, then time
    x = flat.double().cpu()
    ref = torch.stack([x[a:b].square().sum() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())])
    got = ops.segment_sq_norms(flat, chunks).cpu().double()
    assert torch.allclose(got, ref, rtol=1e-4, atol=0)
    return device, flat, offsets, chunks, views


def _run(benchmark, device, name, fn, nbytes):
    stats = time_kernel(benchmark, device, f"segment_sq_norms-{device.type}", fn, nbytes, bytes_key="bytes_read")
    if stats is not None:
        RESULTS.setdefault(device.type, {})[name] = (stats.mean, nbytes)


def test_fastres_chunks(benchmark, layout):
    device, flat, _, chunks, _ = layout
    _run(
        benchmark,
        device,
        "fastres (chunk table built once)",
        lambda: ops.segment_sq_norms(flat, chunks),
        flat.numel() * 4,
    )


def test_fastres_rtc(benchmark, layout):
    device, flat, _, chunks, _ = layout
    if device.type != "cuda" or not rtc.available()[0]:
        pytest.skip("run-time compiled kernels need a GPU and CuPy")
    assert torch.allclose(ops.segment_sq_norms(flat, chunks, path="rtc"), ops.segment_sq_norms(flat, chunks), rtol=1e-6)
    _run(
        benchmark,
        device,
        "fastres, run-time compiled",
        lambda: ops.segment_sq_norms(flat, chunks, path="rtc"),
        flat.numel() * 4,
    )


def test_fastres_offsets(benchmark, layout):
    device, flat, offsets, _, _ = layout
    _run(
        benchmark,
        device,
        "fastres (offsets, table per call)",
        lambda: ops.segment_sq_norms(flat, offsets),
        flat.numel() * 4,
    )


def test_torch_foreach_norm(benchmark, layout):
    device, flat, _, _, views = layout
    _run(
        benchmark,
        device,
        "torch _foreach_norm ** 2",
        lambda: torch.stack(torch._foreach_norm(views, 2)).square(),
        flat.numel() * 4,
    )


def test_torch_loop(benchmark, layout):
    device, flat, _, _, views = layout
    _run(
        benchmark,
        device,
        "torch loop (x * x).sum()",
        lambda: torch.stack([(v * v).sum() for v in views]),
        flat.numel() * 4,
    )


def test_ceiling_sum(benchmark, layout):
    device, flat, _, _, _ = layout
    _run(benchmark, device, "ceiling: flat.sum()", lambda: flat.sum(), flat.numel() * 4)


def test_ceiling_copy(benchmark, layout):
    device, flat, _, _, _ = layout
    dst = torch.empty_like(flat)
    # bytes *read*, to compare with the others; it also writes as many
    _run(benchmark, device, "ceiling: copy_ (reads + writes)", lambda: dst.copy_(flat), flat.numel() * 4)
