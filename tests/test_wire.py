"""Tests of fastres.kernels.ops.pack_wire / unpack_wire (csrc/wire.h): the all-reduce's wire format.

References are independent of the kernels: torch's `(src * scale).to(dtype)` and
`src.float() * scale`, compared bit for bit through int views (NaN compared as NaN: torch's
own NaN bits depend on its code path), `ops.segment_sq_norms` for the fused norms (bit for
bit) and float64 for their accuracy. CUDA cases skip without a GPU; they compare the CUDA
kernels with the CPU ones bit for bit.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from fastres.kernels import ops

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
WIRE = [torch.float32, torch.float16, torch.bfloat16]
SCALES = [1.0, 0.125, 1 / 3, 1 / 1024]
SIZES = [0, 1, 3, 4, 4095, 4097, (1 << 20) + 7]


@pytest.fixture(autouse=True)
def _native_needed():
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.element_size() == 4 else torch.int16)


def assert_same_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit-equal, except that NaN only has to be NaN in both."""
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = torch.isnan(want.float())
    assert torch.equal(torch.isnan(got.float()), nan), "NaN in one and not the other"
    diff = (bits(got) != bits(want)) & ~nan
    if diff.any():
        i = int(torch.nonzero(diff)[0, 0])
        raise AssertionError(
            f"{int(diff.sum())} elements differ; first at {i}: got {got[i].item()!r} "
            f"(bits {bits(got)[i].item():#x}), want {want[i].item()!r} (bits {bits(want)[i].item():#x})"
        )


def f32(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def from_bits(ints) -> torch.Tensor:
    return torch.tensor(ints, dtype=torch.int64).to(torch.int32).view(torch.float32)


def special_values() -> torch.Tensor:
    """+-0, +-Inf, NaN, ties of both 16-bit formats, overflow, subnormals, maxima."""
    ties = []
    for base in (1.0, 1.5, 3.0, 1000.0, 65504.0 / 2, 2.0**-14, 2.0**-20, 1e-30):
        b = int(f32(base).view(torch.int32))
        for low in (0x1000, 0x0FFF, 0x1001, 0x3000, 0x8000, 0x7FFF, 0x8001, 0x18000, 0x10000):
            ties += [b + low, b - low]  # fp16 rounds 13 bits away, bf16 16
    odd = [0x3F810000 + 0x8000, 0x3F800000 + 0x8000]  # bf16 tie to even both ways
    specials = f32(
        0.0,
        -0.0,
        math.inf,
        -math.inf,
        math.nan,
        -math.nan,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        65536.0,
        1e6,
        3.0e38,
        -3.4028235e38,
        3.3895314e38,
        3.3961776e38,  # bf16 max and the first value rounding to Inf
        2.0**-14,
        2.0**-15,
        2.0**-24,
        2.0**-25,
        -(2.0**-25),
        2.0**-25 * 1.0000001,
        2.0**-26,
        3 * 2.0**-25,
        5.96e-8,
        6.1e-5,
        6.09e-5,
        1e-40,
        -1e-40,
        1.4e-45,
        1.17549435e-38,
    )
    return torch.cat([specials, from_bits(ties + odd)])


def random_values(n: int, seed: int = 0) -> torch.Tensor:
    """Normals of several magnitudes: gradients from 1e-12 to 1e6."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    mag = 10.0 ** torch.randint(-12, 7, (n,), generator=g).float()
    return x * mag


# ----------------------------------------------------------------------------- pack


@pytest.mark.parametrize("dtype", WIRE)
@pytest.mark.parametrize("scale", SCALES)
def test_pack_matches_torch_on_special_values(dtype, scale):
    x = special_values()
    x = torch.cat([x, -x])
    dst = torch.empty(x.numel(), dtype=dtype)
    ops.pack_wire(x, dst, scale)
    assert_same_bits(dst, (x * scale).to(dtype))


@pytest.mark.parametrize("dtype", WIRE)
@pytest.mark.parametrize("n", SIZES)
def test_pack_matches_torch_on_random_values(dtype, n):
    x = random_values(n, seed=n)
    for scale in SCALES:
        dst = torch.full((n,), 7, dtype=dtype)
        ops.pack_wire(x, dst, scale)
        assert_same_bits(dst, (x * scale).to(dtype))


def test_pack_known_bits():
    # independent of torch: values written down by hand
    x = f32(1.0, 65520.0, 65519.0, math.nan, -math.nan, 2.0**-24, 2.0**-25, 3 * 2.0**-25, -0.0)
    h = torch.empty(x.numel(), dtype=torch.float16)
    ops.pack_wire(x, h)
    assert bits(h).tolist() == [0x3C00, 0x7C00, 0x7BFF, 0x7E00, -0x200, 1, 0, 2, -0x8000]
    b = torch.empty(x.numel(), dtype=torch.bfloat16)
    ops.pack_wire(x, b)
    assert bits(b)[[0, 1, 5, 8]].tolist() == [0x3F80, 0x4780, 0x3380, -0x8000]
    assert bits(b)[3].item() == 0x7FC0 and bits(b)[4].item() == -0x40  # quiet NaN, sign kept
    ties = from_bits([0x3F808000, 0x3F818000, 0x3F808001])  # tie down to even, up to even, above
    ops.pack_wire(ties, b[:3])
    assert bits(b)[:3].tolist() == [0x3F80, 0x3F82, 0x3F81]


def test_pack_nan_stays_quiet_nan_never_inf():
    # signalling NaNs with payloads only in the bits a 16-bit format drops
    x = from_bits([0x7F800001, 0xFF800001, 0x7F801FFF, 0x7FBFFFFF])
    for dtype in (torch.float16, torch.bfloat16):
        dst = torch.empty(4, dtype=dtype)
        ops.pack_wire(x, dst)
        assert torch.isnan(dst.float()).all()
        assert (bits(dst) < 0).tolist() == [False, True, False, False]  # sign kept
    h = torch.empty(4, dtype=torch.float16)
    ops.pack_wire(x, h)
    assert ((bits(h) & 0x7E00) == 0x7E00).all()  # exponent all ones and the quiet bit


def test_pack_unaligned_slices_and_longer_dst():
    big = random_values((1 << 16) + 11, seed=3)
    for dtype in WIRE:
        for a, b in ((3, 0), (1, 5), (0, 2), (2, 3)):
            src = big[a:]
            out = torch.zeros(src.numel() + 9, dtype=dtype)
            dst = out[b:]
            ops.pack_wire(src, dst, 0.125)
            assert_same_bits(dst[: src.numel()], (src * 0.125).to(dtype))
            assert (out[b + src.numel() :] == 0).all()  # nothing beyond src.numel() written
            assert (out[:b] == 0).all()


def test_pack_in_place_fp32():
    x = random_values(100_003, seed=4)
    want = x * (1 / 3)
    ops.pack_wire(x, x, 1 / 3)
    assert_same_bits(x, want)
    y = random_values(17, seed=5)[1:]  # unaligned, in place
    want = y * 0.125
    ops.pack_wire(y, y, 0.125)
    assert_same_bits(y, want)


# ----------------------------------------------------------------------------- unpack


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_unpack_every_16_bit_pattern(dtype):
    src = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype)
    for scale in SCALES:
        dst = torch.empty(src.numel())
        ops.unpack_wire(src, dst, scale)
        assert_same_bits(dst, src.float() * scale)


@pytest.mark.parametrize("dtype", WIRE)
@pytest.mark.parametrize("n", SIZES)
def test_unpack_matches_torch(dtype, n):
    src = random_values(n + 5, seed=n).to(dtype)
    for scale in SCALES:
        dst = torch.empty(n)
        assert ops.unpack_wire(src, dst, scale) is None
        assert_same_bits(dst, src[:n].float() * scale)


def test_unpack_special_values_and_in_place_fp32():
    x = special_values()
    dst = torch.empty(x.numel())
    ops.unpack_wire(x, dst, 0.125)
    assert_same_bits(dst, x * 0.125)
    want = x * 3.0
    ops.unpack_wire(x, x, 3.0)
    assert_same_bits(x, want)


def test_round_trip_bf16_and_fp16_unaligned():
    big = random_values(40_000, seed=6)
    for dtype in (torch.float16, torch.bfloat16):
        src = big[3:]
        wire = torch.empty(src.numel() + 1, dtype=dtype)[1:]
        ops.pack_wire(src, wire, 0.125)
        back = torch.empty(src.numel() + 2)[1:-1]
        ops.unpack_wire(wire, back, 8.0)
        assert_same_bits(back, (src * 0.125).to(dtype).float() * 8.0)


# ----------------------------------------------------------------------------- unpack + norms


def layouts(n: int):
    yield [0, n]
    yield [0, 0, 1, 1, n]  # empty segments
    yield [3, 4096, 4099, 9000, n - 5]  # starts after 0, ends before n
    g = torch.Generator().manual_seed(n)
    cuts = torch.randint(0, n + 1, (12,), generator=g).sort().values.tolist()
    yield [0] + cuts + [n]


@pytest.mark.parametrize("dtype", WIRE)
def test_unpack_norms_equal_segment_sq_norms_bitwise(dtype):
    n = 3 * 4096 * 7 + 13
    big = random_values(n + 3, seed=7).clamp(-1e4, 1e4).to(dtype)
    src = big[3:]  # unaligned wire
    for offsets in layouts(n):
        chunks = ops.segment_chunks(torch.tensor(offsets, dtype=torch.int64))
        for scale in (1.0, 0.125, 1 / 3):
            dst = torch.full((n,), math.nan)
            norms = ops.unpack_wire(src, dst, scale, chunks=chunks)
            assert_same_bits(dst, src.float() * scale)  # the whole of dst, gaps included
            assert norms.shape == (len(offsets) - 1,) and norms.dtype == torch.float32
            assert torch.equal(bits(norms), bits(ops.segment_sq_norms(dst, chunks)))
            x = dst.double()
            ref = torch.stack([(x[a:b] ** 2).sum() for a, b in zip(offsets[:-1], offsets[1:])])
            torch.testing.assert_close(norms.double(), ref, rtol=2e-5, atol=0)


def test_unpack_norms_no_segments_and_empty_dst():
    chunks = ops.segment_chunks(torch.tensor([0], dtype=torch.int64))
    dst = torch.empty(10)
    out = ops.unpack_wire(torch.ones(10, dtype=torch.bfloat16), dst, 2.0, chunks=chunks)
    assert out.shape == (0,) and (dst == 2).all()
    chunks = ops.segment_chunks(torch.tensor([0, 0, 0], dtype=torch.int64))
    out = ops.unpack_wire(torch.empty(0, dtype=torch.float16), torch.empty(0), chunks=chunks)
    assert out.tolist() == [0.0, 0.0]


def test_unpack_norms_exact_on_small_integers():
    # integers small enough that every sum is exact: a wrong segment shows at once
    src = torch.arange(-8, 8, dtype=torch.float32).repeat(1000).to(torch.bfloat16)
    offsets = [0, 1, 16, 5000, 16000]
    chunks = ops.segment_chunks(torch.tensor(offsets, dtype=torch.int64))
    dst = torch.empty(16000)
    norms = ops.unpack_wire(src, dst, 1.0, chunks=chunks)
    x = dst.double()
    assert norms.tolist() == [float((x[a:b] ** 2).sum()) for a, b in zip(offsets[:-1], offsets[1:])]


# ----------------------------------------------------------------------------- fp16 paths

_PATHS_SCRIPT = r"""
import sys, torch
from fastres.kernels import ops
x = torch.load(sys.argv[1])
h = torch.empty(x.numel(), dtype=torch.float16)
ops.pack_wire(x, h, 1 / 3)
every = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(torch.float16)
back = torch.empty(every.numel())
ops.unpack_wire(every, back, 0.125)
torch.save({"pack": h.view(torch.int16), "unpack": back.view(torch.int32)}, sys.argv[2])
"""


def test_fp16_f16c_and_integer_paths_give_the_same_bits(tmp_path):
    # On x86-64 CPUs with F16C the fp16 loops use vcvtps2ph / vcvtph2ps; FASTRES_WIRE_NO_F16C
    # selects wire.h's integer conversions (the ones the CUDA kernels run). NaN bits included.
    x = torch.cat([special_values(), random_values(100_003, seed=12)])
    x = torch.cat([x, -x, from_bits(list(range(0x7F800001, 0x7F800001 + 4099 * 1021, 1021)))])
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "paths.py"
    script.write_text(_PATHS_SCRIPT)
    out = {}
    for name, extra in (("default", {}), ("integer", {"FASTRES_WIRE_NO_F16C": "1"})):
        env = {k: v for k, v in os.environ.items() if k != "FASTRES_WIRE_NO_F16C"}
        env.update(extra)
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "x.pt"), str(tmp_path / f"{name}.pt")],
            check=True,
            env=env,
            cwd=tmp_path,
        )
        out[name] = torch.load(tmp_path / f"{name}.pt")
    assert torch.equal(out["default"]["pack"], out["integer"]["pack"])
    assert torch.equal(out["default"]["unpack"], out["integer"]["unpack"])
    assert_same_bits(out["integer"]["pack"].view(torch.float16), (x * (1 / 3)).to(torch.float16))


# ----------------------------------------------------------------------------- threads


def test_same_bits_whatever_the_thread_count():
    n = (1 << 20) + 7
    x = random_values(n, seed=8).clamp(-3e4, 3e4)
    chunks = ops.segment_chunks(torch.tensor([0, 1000, 300_000, n], dtype=torch.int64))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got = []
            for dtype in WIRE:
                w = torch.empty(n, dtype=dtype)
                ops.pack_wire(x, w, 1 / 3)
                d = torch.empty(n)
                got += [w, d, ops.unpack_wire(w, d, 3.0, chunks=chunks)]
            results.append(got)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(bits(a), bits(b))


# ----------------------------------------------------------------------------- checks


def test_bad_arguments_name_the_argument():
    x = torch.randn(16)
    h = torch.empty(16, dtype=torch.float16)
    with pytest.raises(TypeError, match="src"):
        ops.pack_wire(x.double(), h)
    with pytest.raises(TypeError, match="dst"):
        ops.pack_wire(x, torch.empty(16, dtype=torch.int16))
    with pytest.raises(TypeError, match="src"):
        ops.pack_wire(x.tolist(), h)
    with pytest.raises(ValueError, match="dst"):
        ops.pack_wire(x, h[:15])
    with pytest.raises(ValueError, match="src"):
        ops.pack_wire(x.view(4, 4), h)
    with pytest.raises(ValueError, match="dst"):
        ops.pack_wire(x, torch.empty(32, dtype=torch.float16)[::2])
    with pytest.raises(TypeError, match="scale"):
        ops.pack_wire(x, h, "0.5")
    with pytest.raises(TypeError, match="scale"):
        ops.pack_wire(x, h, torch.tensor(0.5))
    with pytest.raises(TypeError, match="dst"):
        ops.unpack_wire(h, h)
    with pytest.raises(TypeError, match="src"):
        ops.unpack_wire(torch.zeros(16, dtype=torch.int32), x)
    with pytest.raises(ValueError, match="src"):
        ops.unpack_wire(h[:15], x)
    with pytest.raises(TypeError, match="chunks"):
        ops.unpack_wire(h, x, chunks=torch.tensor([0, 16]))
    chunks = ops.segment_chunks(torch.tensor([0, 17], dtype=torch.int64))
    with pytest.raises(ValueError, match="chunks"):
        ops.unpack_wire(h, x, chunks=chunks)
    with pytest.raises(ValueError, match="dst"):
        ops.pack_wire(x, torch.empty(16, dtype=torch.float16, device="meta"))


def test_overlap_is_an_error_unless_in_place_fp32():
    buf = torch.randn(64)
    with pytest.raises(ValueError, match="overlaps"):
        ops.pack_wire(buf[:32], buf[1:33])
    with pytest.raises(ValueError, match="overlaps"):
        ops.unpack_wire(buf[4:36], buf[:32])
    raw = torch.empty(256, dtype=torch.uint8)
    f = raw.view(torch.float32)
    with pytest.raises(ValueError, match="overlaps"):  # same address, 16-bit wire
        ops.pack_wire(f[:32], raw.view(torch.bfloat16)[:32])
    with pytest.raises(ValueError, match="overlaps"):
        ops.unpack_wire(raw.view(torch.float16)[:32], f[:32])
    ops.pack_wire(buf[:0], buf[:0])  # n = 0: a no-op, whatever the addresses
    ops.unpack_wire(buf[:32], buf[32:])  # adjacent, not overlapping


def test_native_checks_name_the_argument():
    C = ops._C
    x = torch.randn(8)
    with pytest.raises(ValueError, match="dst"):
        C.wire_pack_cpu(x.data_ptr(), x.data_ptr() + 4, 2, 8, 1.0, 1)
    with pytest.raises(ValueError, match="dst"):
        C.wire_pack_cpu(x.data_ptr(), 0, 1, 8, 1.0, 1)
    with pytest.raises(ValueError, match="dst"):
        C.wire_pack_cpu(x.data_ptr(), x.data_ptr(), 7, 8, 1.0, 1)
    with pytest.raises(ValueError, match="src"):
        C.wire_unpack_cpu(x.data_ptr(), 9, x.data_ptr(), 8, 1.0, 0, 0, 0, 0, 0, 0, 0, 1)
    chunks = ops.segment_chunks(torch.tensor([0, 4, 8], dtype=torch.int64))
    d = torch.empty(8)
    p, out = torch.empty(2), torch.empty(2)
    with pytest.raises(ValueError, match="chunks"):  # lo/hi disagree with the table
        C.wire_unpack_cpu(
            x.data_ptr(), 0, d.data_ptr(), 8, 1.0, chunks.table.data_ptr(), 2, 2, 0, 7, p.data_ptr(), out.data_ptr(), 1
        )
    with pytest.raises(ValueError, match="chunks"):  # beyond dst
        C.wire_unpack_cpu(
            x.data_ptr(), 0, d.data_ptr(), 6, 1.0, chunks.table.data_ptr(), 2, 2, 0, 8, p.data_ptr(), out.data_ptr(), 1
        )


def test_torch_fallback_path():
    # the path of a GPU the kernels cannot serve without CuPy, forced on CPU tensors
    x = random_values(5000, seed=9)
    chunks = ops.segment_chunks(torch.tensor([0, 100, 4999], dtype=torch.int64))
    for dtype in WIRE:
        w = torch.empty(5001, dtype=dtype)
        ops.pack_wire(x, w, 0.125, path="torch")
        assert_same_bits(w[:5000], (x * 0.125).to(dtype))
        d = torch.empty(5000)
        norms = ops.unpack_wire(w, d, 8.0, chunks=chunks, path="torch")
        assert_same_bits(d, w[:5000].float() * 8.0)
        torch.testing.assert_close(norms, ops.segment_sq_norms(d, chunks), rtol=1e-5, atol=0)
    y = x.clone()
    ops.pack_wire(y, y, 0.5, path="torch")
    assert_same_bits(y, x * 0.5)


def test_exported():
    assert {"pack_wire", "unpack_wire"} <= set(ops.__all__)
    assert ops.has_kernel("wire_pack", "cpu") and ops.has_kernel("wire_unpack", "cpu")
    assert ops.build_info()["cuda"] == hasattr(ops._C, "wire_pack_cuda")


# ----------------------------------------------------------------------------- CUDA


@requires_cuda
@pytest.mark.parametrize("dtype", WIRE)
@pytest.mark.parametrize("n", SIZES)
def test_cuda_pack_unpack_equal_cpu_bitwise(dtype, n):
    x = torch.cat([special_values(), random_values(n + 3, seed=n)])[: n + 3]
    for a, b in ((0, 0), (3, 0), (0, 1), (1, 3)):  # aligned and unaligned src / dst
        src = x[a : a + n] if a + n <= x.numel() else x[:n]
        for scale in (1.0, 1 / 3):
            w_cpu = torch.empty(n + b, dtype=dtype)[b:]
            ops.pack_wire(src, w_cpu, scale)
            w_gpu = torch.empty(n + b, dtype=dtype, device="cuda")[b:]
            ops.pack_wire(src.cuda(), w_gpu, scale)
            assert torch.equal(bits(w_gpu.cpu()), bits(w_cpu))
            d_cpu = torch.empty(n + a)[a:]
            ops.unpack_wire(w_cpu, d_cpu, 1 / scale)
            d_gpu = torch.empty(n + a, device="cuda")[a:]
            ops.unpack_wire(w_gpu, d_gpu, 1 / scale)
            assert torch.equal(bits(d_gpu.cpu()), bits(d_cpu))


@requires_cuda
@pytest.mark.parametrize("dtype", WIRE)
def test_cuda_unpack_norms_equal_cuda_segment_sq_norms_bitwise(dtype):
    n = 3 * 4096 * 7 + 13
    big = random_values(n + 3, seed=10).clamp(-1e4, 1e4).to(dtype).cuda()
    for shift in (0, 1, 3):
        src = big[shift : shift + n]
        out = torch.empty(n + 2, device="cuda")
        for d0 in (0, 2):
            dst = out[d0 : d0 + n]
            for offsets in layouts(n):
                chunks = ops.segment_chunks(torch.tensor(offsets, dtype=torch.int64), "cuda")
                norms = ops.unpack_wire(src, dst, 1 / 3, chunks=chunks)
                assert torch.equal(bits(dst), bits(src.float() * (1 / 3)))
                assert torch.equal(bits(norms), bits(ops.segment_sq_norms(dst, chunks)))
                cpu = ops.segment_sq_norms(dst.cpu(), ops.segment_chunks(chunks.offsets))
                torch.testing.assert_close(norms.cpu(), cpu, rtol=2e-5, atol=0)


@requires_cuda
def test_cuda_in_place_and_stream():
    x = random_values(1 << 20, seed=11).cuda()
    want = x * 0.125
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        ops.pack_wire(x, x, 0.125)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(bits(x), bits(want))
    with pytest.raises(ValueError, match="dst"):
        ops.pack_wire(x, torch.empty(x.numel(), dtype=torch.bfloat16))
    chunks = ops.segment_chunks(torch.tensor([0, 8], dtype=torch.int64))
    with pytest.raises(ValueError, match="chunks"):
        ops.unpack_wire(x, torch.empty(8, device="cuda"), chunks=chunks)
