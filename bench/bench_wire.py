"""Benchmark: the all-reduce's wire format on one 25 MiB fp32 gradient bucket (6,553,600 floats).

    pip install -e ".[test]" && pytest bench/bench_wire.py --benchmark-json=bench/results/wire-cpu.json

One pytest-benchmark group per device:
  fastres pack bf16 / fp16       ops.pack_wire(bucket, wire, 1/8): one pass (csrc/wire.h)
  fastres pack fp32              the same into an fp32 wire (a scaled copy)
  fastres unpack bf16 / fp16     ops.unpack_wire(wire, bucket, 8): one pass
  fastres unpack bf16 + norms    the same, also the squared norms of its 40 segments
  fastres unpack bf16, then segment_sq_norms   the same result in two passes
  torch pack bf16/fp16, 2 passes      torch.mul(src, scale, out=tmp); wire.copy_(tmp)
  torch pack bf16/fp16/fp32, mul(out=)   torch.mul(src, scale, out=wire): one pass
  torch unpack bf16/fp16, 2 passes    bucket.copy_(wire); bucket.mul_(scale) (torch has no
                                      one-pass peer: mul of a bf16 tensor computes in bf16)
  ceiling: copy_ fp32            a plain copy_ moving as many bytes as a pack (6 bytes per
                                 element: 4 read, 2 written), measured in the same run
GB/s counts the bytes a kernel must move (fp32 read + wire written, or back), the same for
every row of one direction, so GB/s compare directly. Every result is checked against
torch's bits before anything is timed. bench/conftest.py prints the
ratios after pytest-benchmark's table; bench/README.md has the table.
"""

from __future__ import annotations

import pytest
import torch

from fastres.kernels import ops, rtc

from timing import time_kernel

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
]
N = 25 * 2**20 // 4  # a 25 MiB fp32 bucket (docs/design.md, decision 4)
SCALE = 0.125  # 1 / world size
NSEG = 40

# RESULTS[device][name] = (mean seconds, median seconds, bytes moved); printed at the end.
RESULTS: dict[str, dict[str, tuple[float, float, int]]] = {}


@pytest.fixture(scope="module", params=DEVICES)
def bucket(request):
    device = torch.device(request.param)
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)
    g = torch.Generator().manual_seed(0)
    src = (torch.randn(N, generator=g) * 1e-3).to(device)
    offsets = torch.linspace(0, N, NSEG + 1).to(torch.int64)
    chunks = ops.segment_chunks(offsets, device)
    # check first, then time
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        wire = torch.empty(N, dtype=dtype, device=device)
        ops.pack_wire(src, wire, SCALE)
        want = (src * SCALE).to(dtype)
        ib = torch.int32 if dtype == torch.float32 else torch.int16
        assert torch.equal(wire.view(ib), want.view(ib))
        peer = torch.empty_like(wire)
        torch.mul(src, SCALE, out=peer)
        assert torch.equal(peer.view(ib), want.view(ib))
        back = torch.empty(N, device=device)
        norms = ops.unpack_wire(wire, back, 1 / SCALE, chunks=chunks)
        assert torch.equal(back.view(torch.int32), (wire.float() * (1 / SCALE)).view(torch.int32))
        assert torch.equal(norms, ops.segment_sq_norms(back, chunks))
    return device, src, chunks


def _run(benchmark, device, name, fn, nbytes):
    st = time_kernel(benchmark, device, f"wire-{device.type}", fn, nbytes, rounds=30, warmup_rounds=2, stat="median")
    if st is not None:
        RESULTS.setdefault(device.type, {})[name] = (st.mean, st.median, nbytes)


DT = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@pytest.mark.parametrize("wire", ["bf16", "fp16", "fp32"])
def test_fastres_pack(benchmark, bucket, wire):
    device, src, _ = bucket
    dst = torch.empty(N, dtype=DT[wire], device=device)
    _run(
        benchmark, device, f"fastres pack {wire}", lambda: ops.pack_wire(src, dst, SCALE), N * (4 + dst.element_size())
    )


@pytest.mark.parametrize("wire", ["bf16", "fp16"])
def test_fastres_unpack(benchmark, bucket, wire):
    device, src, _ = bucket
    w = src.to(DT[wire])
    dst = torch.empty(N, device=device)
    _run(benchmark, device, f"fastres unpack {wire}", lambda: ops.unpack_wire(w, dst, 1 / SCALE), N * 6)


def test_fastres_unpack_norms(benchmark, bucket):
    device, src, chunks = bucket
    w = src.to(torch.bfloat16)
    dst = torch.empty(N, device=device)
    _run(
        benchmark,
        device,
        "fastres unpack bf16 + norms",
        lambda: ops.unpack_wire(w, dst, 1 / SCALE, chunks=chunks),
        N * 6,
    )


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_fastres_rtc(benchmark, bucket, kind):
    device, src, chunks = bucket
    if device.type != "cuda" or not rtc.available()[0]:
        pytest.skip("run-time compiled kernels need a GPU and CuPy")
    w = torch.empty(N, dtype=torch.bfloat16, device=device)
    ops.pack_wire(src, w, SCALE, path="rtc")
    assert torch.equal(w.view(torch.int16), (src * SCALE).to(torch.bfloat16).view(torch.int16))
    dst = torch.empty(N, device=device)
    if kind == "pack":
        name, fn = "fastres pack bf16, run-time compiled", lambda: ops.pack_wire(src, w, SCALE, path="rtc")
    else:
        name = "fastres unpack bf16 + norms, run-time compiled"
        fn = lambda: ops.unpack_wire(w, dst, 1 / SCALE, chunks=chunks, path="rtc")
    _run(benchmark, device, name, fn, N * 6)


def test_fastres_unpack_then_norms(benchmark, bucket):
    device, src, chunks = bucket
    w = src.to(torch.bfloat16)
    dst = torch.empty(N, device=device)

    def fn():
        ops.unpack_wire(w, dst, 1 / SCALE)
        ops.segment_sq_norms(dst, chunks)

    _run(benchmark, device, "fastres unpack bf16, then segment_sq_norms", fn, N * 6)


@pytest.mark.parametrize("wire", ["bf16", "fp16"])
def test_torch_pack_two_passes(benchmark, bucket, wire):
    device, src, _ = bucket
    tmp = torch.empty_like(src)
    dst = torch.empty(N, dtype=DT[wire], device=device)

    def fn():
        torch.mul(src, SCALE, out=tmp)
        dst.copy_(tmp)

    _run(benchmark, device, f"torch pack {wire}, 2 passes", fn, N * 6)


@pytest.mark.parametrize("wire", ["bf16", "fp16", "fp32"])
def test_torch_pack_mul_out(benchmark, bucket, wire):
    device, src, _ = bucket
    dst = torch.empty(N, dtype=DT[wire], device=device)
    _run(
        benchmark,
        device,
        f"torch pack {wire}, mul(out=)",
        lambda: torch.mul(src, SCALE, out=dst),
        N * (4 + dst.element_size()),
    )


@pytest.mark.parametrize("wire", ["bf16", "fp16"])
def test_torch_unpack_two_passes(benchmark, bucket, wire):
    device, src, _ = bucket
    w = src.to(DT[wire])
    dst = torch.empty(N, device=device)

    def fn():
        dst.copy_(w)
        dst.mul_(1 / SCALE)

    _run(benchmark, device, f"torch unpack {wire}, 2 passes", fn, N * 6)


def test_ceiling_copy(benchmark, bucket):
    device, src, _ = bucket
    a = src[: N * 3 // 4]  # 3 N bytes read + 3 N written = 6 N, a pack's bytes
    b = torch.empty_like(a)
    _run(benchmark, device, "ceiling: copy_ fp32", lambda: b.copy_(a), N * 6)
