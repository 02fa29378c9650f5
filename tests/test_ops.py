"""Tests of fastres.kernels.ops: segment_sq_norms against float64 torch, its checks and its paths.

Run with plain `pytest` from the repository root, after `pip install .`: `python -m pytest`
would put the repository root on sys.path, and its fastres/ (no built _C) would shadow the
installed package; tests/test_build.py says so loudly when that happens. After an editable
install (`pip install -e .`) both ways work, and Python edits need no reinstall.

CUDA cases skip without a GPU; the torch fallback and the missing-_C error are tested on CPU
by standing in for the loaded extension.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from fastres.kernels import ops, paths, torch_ops

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]

U = 2.0**-24  # unit roundoff of fp32


@pytest.fixture(autouse=True)
def _native_needed():
    # Each test needs the built extension; say how to get it rather than fail obscurely.
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)


def resnet50_param_sizes() -> list[int]:
    """numel of ResNet-50's 161 parameter tensors, in model.parameters() order."""
    sizes, inplanes = [64 * 3 * 7 * 7, 64, 64], 64
    for planes, blocks in [(64, 3), (128, 4), (256, 6), (512, 3)]:
        for b in range(blocks):
            sizes += [inplanes * planes, planes, planes]
            sizes += [planes * planes * 9, planes, planes]
            sizes += [planes * 4 * planes, 4 * planes, 4 * planes]
            if b == 0:
                sizes += [inplanes * 4 * planes, 4 * planes, 4 * planes]
            inplanes = 4 * planes
    return sizes + [2048 * 1000, 1000]


def offsets_of(lengths, start: int = 0) -> torch.Tensor:
    return torch.tensor([start] + lengths, dtype=torch.int64).cumsum(0)


def reference(flat: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """float64 sums of squares per segment."""
    x = flat.detach().cpu().double()
    b = offsets.cpu().tolist()
    return torch.stack([x[i:j].square().sum() for i, j in zip(b[:-1], b[1:])])


def error_bound(offsets: torch.Tensor) -> torch.Tensor:
    """Relative error allowed per segment: fp32 sums of non-negative terms err by at most
    depth * u, depth being the longest chain of additions (csrc/segment_sq_norms.h: 128
    within one of 32 CPU lanes + 5 folding lanes + one per chunk; less on CUDA), plus one
    rounding per square; 140 + chunks covers them."""
    lengths = (offsets[1:] - offsets[:-1]).cpu().double()
    return (140 + torch.ceil(lengths / ops.SEGMENT_CHUNK)) * U


def assert_close_to_reference(out, flat, offsets):
    ref = reference(flat, offsets)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    err = (out.cpu().double() - ref).abs()
    bound = error_bound(offsets) * ref
    worst = int(torch.argmax(err - bound))
    assert bool((err <= bound).all()), (
        f"segment {worst}: got {out[worst].item()!r}, float64 reference {ref[worst].item()!r}, "
        f"error {err[worst].item():.3g} > bound {bound[worst].item():.3g}"
    )


# ----------------------------------------------------------------------------- correctness

ODD_LENGTHS = [0, 1, 3, 5, 7, 17, 0, 0, 1023, 4095, 4096, 4097, 1, 8191, 8193, 12_289, 100_003, 0]


@pytest.mark.parametrize("device", DEVICES)
def test_odd_lengths_match_float64(device):
    torch.manual_seed(0)
    offsets = offsets_of(ODD_LENGTHS)
    flat = torch.randn(int(offsets[-1]) + 5, device=device)  # trailing elements outside
    out = ops.segment_sq_norms(flat, offsets)
    assert out.device == flat.device
    assert_close_to_reference(out, flat, offsets)
    assert out[ODD_LENGTHS.index(0)].item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_layouts_match_float64(device, seed):
    g = torch.Generator().manual_seed(seed)
    n_seg = int(torch.randint(1, 60, (1,), generator=g))
    # lengths over six orders of magnitude, a quarter of them 0 or 1
    lengths = torch.exp(torch.rand(n_seg, generator=g) * math.log(300_000)).long() - 1
    lengths[torch.rand(n_seg, generator=g) < 0.25] = 0
    start = int(torch.randint(0, 8, (1,), generator=g))
    offsets = offsets_of(lengths.tolist(), start)
    flat = (torch.randn(int(offsets[-1]), generator=g) * 3).to(device)
    assert_close_to_reference(ops.segment_sq_norms(flat, offsets), flat, offsets)


@pytest.mark.parametrize("device", DEVICES)
def test_resnet50_layout_matches_float64(device):
    sizes = resnet50_param_sizes()
    assert len(sizes) == 161 and sum(sizes) == 25_557_032  # docs/design.md's numbers
    offsets = offsets_of(sizes)
    flat = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(5)).to(device)
    assert_close_to_reference(ops.segment_sq_norms(flat, offsets), flat, offsets)


@pytest.mark.parametrize("device", DEVICES)
def test_exact_on_small_integers(device):
    # Squares of -2..2 summed over any ResNet-50 tensor stay below 2^24: every fp32 partial
    # is an exact integer, so any order gives the exact answer and any lost, doubled or
    # misplaced element shows up.
    sizes = resnet50_param_sizes()[:60] + [0, 1, 3, 4097, 5]
    offsets = offsets_of(sizes, start=3)
    g = torch.Generator().manual_seed(6)
    flat = torch.randint(-2, 3, (int(offsets[-1]) + 7,), generator=g).float().to(device)
    expected = reference(flat, offsets).float()
    assert torch.equal(ops.segment_sq_norms(flat, offsets).cpu(), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shift", [1, 2, 3])
def test_unaligned_buffer_and_segment_starts(device, shift):
    # flat's data pointer off a 16-byte boundary, and segments starting at odd elements
    base = torch.randn(70_000, generator=torch.Generator().manual_seed(shift)).to(device)
    flat = base[shift:]
    assert flat.data_ptr() % 16 != 0
    offsets = offsets_of([1, 5, 4097, 9, 30_001, 2, 8192], start=shift + 2)
    g = torch.Generator().manual_seed(9)
    flat_int = torch.randint(-2, 3, (flat.numel(),), generator=g).float().to(device)
    assert_close_to_reference(ops.segment_sq_norms(flat, offsets), flat, offsets)
    assert torch.equal(ops.segment_sq_norms(flat_int, offsets).cpu(), reference(flat_int, offsets).float())


@pytest.mark.parametrize("device", DEVICES)
def test_no_segments_and_all_empty(device):
    flat = torch.randn(10, device=device)
    assert ops.segment_sq_norms(flat, torch.tensor([4], dtype=torch.int64)).shape == (0,)
    out = ops.segment_sq_norms(flat, torch.tensor([0, 0, 0, 10, 10], dtype=torch.int64))
    assert out[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]
    empty = torch.empty(0, device=device)
    assert ops.segment_sq_norms(empty, torch.zeros(3, dtype=torch.int64)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("device", DEVICES)
def test_bit_identical_across_calls_and_threads(device):
    sizes = resnet50_param_sizes()[:40]
    offsets = offsets_of(sizes)
    flat = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(7)).to(device)
    chunks = ops.segment_chunks(offsets, device)
    first = ops.segment_sq_norms(flat, chunks)
    for _ in range(3):
        assert torch.equal(ops.segment_sq_norms(flat, chunks), first)
    assert torch.equal(ops.segment_sq_norms(flat, offsets), first)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(ops.segment_sq_norms(flat, offsets))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(r, first) for r in results)


def test_chunk_table_layout():
    assert ops.SEGMENT_CHUNK == ops._C.SEGMENT_CHUNK == 4096
    K = ops.SEGMENT_CHUNK
    offsets = torch.tensor([2, 2, 5, 5 + 2 * K + 1], dtype=torch.int64)
    chunks = ops.segment_chunks(offsets)
    S, C = 3, 4
    assert (chunks.num_segments, chunks.num_chunks, chunks.end) == (S, C, 5 + 2 * K + 1)
    t = chunks.table.tolist()
    assert len(t) == S + 1 + 3 * C
    assert t[: S + 1] == [0, 0, 1, 4]  # first chunk of each segment
    assert t[S + 1 : S + 1 + C] == [2, 5, 5 + K, 5 + 2 * K]  # chunk begin
    assert t[S + 1 + C : S + 1 + 2 * C] == [5, 5 + K, 5 + 2 * K, 5 + 2 * K + 1]  # chunk end
    assert t[S + 1 + 2 * C :] == [1, 2, 2, 2]  # segment of each chunk


@requires_cuda
def test_cuda_offsets_on_device_and_chunks_reused():
    offsets = offsets_of([3, 4097, 0, 12_000])
    flat = torch.randn(int(offsets[-1]), device="cuda")
    a = ops.segment_sq_norms(flat, offsets.cuda())
    b = ops.segment_sq_norms(flat, ops.segment_chunks(offsets.cuda()))
    c = ops.segment_sq_norms(flat, offsets)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert_close_to_reference(a, flat, offsets)


@requires_cuda
def test_cuda_runs_on_the_current_stream():
    sizes = resnet50_param_sizes()
    offsets = offsets_of(sizes)
    chunks = ops.segment_chunks(offsets, "cuda")
    flat = torch.zeros(sum(sizes), device="cuda")
    expected = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(8)).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(10_000_000)  # a long kernel ahead of the copy on the same stream
        flat.copy_(expected)
        out = ops.segment_sq_norms(flat, chunks)
    torch.cuda.current_stream().wait_stream(side)
    assert_close_to_reference(out, expected, offsets)


@requires_cuda
def test_cuda_agrees_with_cpu():
    sizes = resnet50_param_sizes()
    offsets = offsets_of(sizes)
    flat = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(10))
    gpu = ops.segment_sq_norms(flat.cuda(), offsets).cpu()
    cpu = ops.segment_sq_norms(flat, offsets)
    torch.testing.assert_close(gpu, cpu, rtol=2 * float(error_bound(offsets).max()), atol=0)


# ----------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "flat, offsets, exc, match",
    [
        (torch.randn(8, dtype=torch.float64), [0, 8], TypeError, r"flat: expected dtype torch.float32"),
        (torch.randn(16)[::2], [0, 8], ValueError, r"flat: expected a contiguous tensor"),
        (torch.randn(2, 4), [0, 8], ValueError, r"flat: expected a 1-D tensor"),
        ([1.0, 2.0], [0, 2], TypeError, r"flat: expected a torch.Tensor"),
        (torch.randn(8), [0, 9], ValueError, r"offsets: offsets\[-1\]=9 is beyond the end of flat"),
        (
            torch.randn(8),
            [0, 5, 3, 8],
            ValueError,
            r"offsets: must be nondecreasing, but offsets\[1\]=5 > offsets\[2\]=3",
        ),
        (torch.randn(8), [-1, 8], ValueError, r"offsets: offsets\[0\] must be >= 0"),
        (torch.randn(8), torch.tensor([0, 8], dtype=torch.int32), TypeError, r"offsets: expected dtype torch.int64"),
        (torch.randn(8), torch.tensor([0.0, 8.0]), TypeError, r"offsets: expected dtype torch.int64"),
        (torch.randn(8), torch.tensor([[0, 8]]), ValueError, r"offsets: expected a 1-D tensor"),
        (torch.randn(8), torch.tensor([], dtype=torch.int64), ValueError, r"offsets: expected at least one"),
        (torch.randn(8), (0, 8), TypeError, r"offsets: expected a torch.Tensor or SegmentChunks"),
    ],
)
def test_bad_arguments_are_named(flat, offsets, exc, match):
    if isinstance(offsets, list):
        offsets = torch.tensor(offsets, dtype=torch.int64)
    with pytest.raises(exc, match=match):
        ops.segment_sq_norms(flat, offsets)


def test_chunk_table_must_match_flat():
    chunks = ops.segment_chunks(torch.tensor([0, 100], dtype=torch.int64))
    with pytest.raises(ValueError, match=r"offsets: offsets\[-1\]=100 is beyond"):
        ops.segment_sq_norms(torch.randn(99), chunks)
    on_meta = ops.SegmentChunks(chunks.table.to("meta"), chunks.offsets, 1, 1, 100)
    with pytest.raises(ValueError, match=r"offsets: chunk table is on meta but flat is on cpu"):
        ops.segment_sq_norms(torch.randn(100), on_meta)


def test_native_checks_name_the_argument():
    # the extension checks too, for callers other than ops.py
    with pytest.raises(ValueError, match="flat: dtype code 1 is not supported"):
        ops._C.segment_sq_norms_cpu(16, 1, 16, 0, 0, 16, 16, 1)
    bad = torch.tensor([0, 5, 3], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"offsets must be nondecreasing: offsets\[1\]=5"):
        ops._C.segment_chunk_count(bad.data_ptr(), 2)


# ----------------------------------------------------------------------------- other paths


def fallback_error_bound(offsets: torch.Tensor) -> torch.Tensor:
    """torch's own fp32 norm reduction has no documented order: allow the bound of plain
    sequential summation, (L - 1) u, plus the sqrt and the square (a few ulp)."""
    lengths = (offsets[1:] - offsets[:-1]).cpu().double()
    return (lengths + 4) * U


def test_torch_fallback_matches_float64():
    offsets = offsets_of(ODD_LENGTHS, start=1)
    flat = torch.randn(int(offsets[-1]), generator=torch.Generator().manual_seed(11))
    out = torch_ops.segment_sq_norms_torch(flat, offsets)
    ref = reference(flat, offsets)
    bound = fallback_error_bound(offsets) * ref
    assert bool(((out.double() - ref).abs() <= bound).all())
    assert torch_ops.segment_sq_norms_torch(flat, torch.tensor([3], dtype=torch.int64)).shape == (0,)


# ----------------------------------------------------------------------------- path choice
# The probe (driver, GPUs, build, CuPy) is data: every case a GPU machine could present is
# injected here, on CPU.

H100 = paths.Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 << 30)


def gpu(cc, name="GPU", index=0):
    return paths.Gpu(index, name, cc, 16 << 30)


def probe(**kw) -> paths.Probe:
    """A CUDA 13 build for 80;90 on a machine with an H100, a CUDA 13.0 driver and CuPy."""
    base = dict(
        native=True,
        cuda_ops=frozenset(paths.OPS),
        cuda_archs=("80-real", "90"),
        cuda_runtime=13000,
        driver=13000,
        gpus=(H100,),
        rtc=CUPY,
    )
    return paths.Probe(**{**base, **kw})


CUPY = paths.Rtc(True, "", 13000, (75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121))
NO_CUPY = paths.Rtc(False, "CuPy is not importable (ModuleNotFoundError: No module named 'cupy')")
CUDA0 = torch.device("cuda", 0)


@pytest.mark.parametrize(
    "cc, how",
    [
        ((9, 0), "sm_90 SASS"),
        ((8, 0), "sm_80 SASS"),
        ((8, 6), "sm_80 SASS"),  # an sm_80 cubin runs on every 8.x
        ((8, 9), "sm_80 SASS"),
        ((10, 0), "compute_90 PTX, JIT-compiled by the driver for sm_100"),
        ((12, 0), "compute_90 PTX, JIT-compiled by the driver for sm_120"),
    ],
)
def test_native_cuda_where_the_build_runs(cc, how):
    choice = paths.choose("fused_step", CUDA0, probe(gpus=(gpu(cc),)))
    assert choice.path == "cuda" and how in choice.reason


def test_newer_driver_of_the_same_major_serves_the_runtime():
    assert paths.choose("wire_pack", CUDA0, probe(driver=13020)).path == "cuda"
    assert paths.choose("wire_pack", CUDA0, probe(driver=14000)).path == "cuda"


def test_unbuilt_architecture_goes_to_rtc_then_torch():
    t4 = probe(gpus=(gpu((7, 5), "Tesla T4"),))
    choice = paths.choose("segment_sq_norms", CUDA0, t4)
    assert choice.path == "rtc"
    assert "none of which runs on Tesla T4 (sm_75)" in choice.reason
    assert "FASTRES_CUDA_ARCHS=75" in choice.reason
    t4.rtc = NO_CUPY
    choice = paths.choose("segment_sq_norms", CUDA0, t4)
    assert choice.path == "torch" and "sm_75" in choice.reason and "CuPy is not importable" in choice.reason


def test_old_driver_goes_to_rtc_with_a_cupy_for_it_then_torch():
    cupy12 = paths.Rtc(True, "", 12080, CUPY.archs)
    choice = paths.choose("fused_step", CUDA0, probe(driver=12080, rtc=cupy12))
    assert choice.path == "rtc"
    assert "the driver supports CUDA 12.8, but fastres._C links the CUDA 13.0 runtime" in choice.reason
    assert ">= 580" in choice.reason
    # cupy-cuda13x links a CUDA 13 runtime too: that driver serves neither
    choice = paths.choose("fused_step", CUDA0, probe(driver=12080))
    assert choice.path == "torch" and "CuPy links the CUDA 13.0 runtime" in choice.reason
    assert "cupy-cuda12x" in choice.reason
    assert paths.choose("fused_step", CUDA0, probe(driver=12080, rtc=NO_CUPY)).path == "torch"
    assert paths.choose("fused_step", CUDA0, probe(driver=None, rtc=NO_CUPY)).reason.startswith("no CUDA driver")


def test_gpu_that_cupys_nvrtc_cannot_compile_for():
    v100 = probe(gpus=(gpu((7, 0), "Tesla V100"),))
    choice = paths.choose("wire_pack", CUDA0, v100)
    assert choice.path == "torch" and "not for Tesla V100 (sm_70)" in choice.reason


def test_cpu_only_build_and_no_gpu():
    cpu_build = probe(cuda_ops=frozenset(), cuda_archs=(), cuda_runtime=None, rtc=NO_CUPY)
    choice = paths.choose("wire_unpack", CUDA0, cpu_build)
    assert choice.path == "torch" and "built without CUDA kernels" in choice.reason
    no_gpu = probe(gpus=(), rtc=NO_CUPY)
    assert paths.choose("wire_unpack", CUDA0, no_gpu).reason.startswith("GPU 0 is not visible")
    assert paths.choose("wire_unpack", torch.device("cpu"), no_gpu).path == "cpu"
    assert paths.choose("wire_unpack", torch.device("meta"), no_gpu).path == "torch"


def test_arch_specific_and_ptx_only_entries():
    assert paths.parse_arch("90a-real") == (90, "a", True, False)
    assert paths.parse_arch("100-virtual") == (100, "", False, True)
    assert paths.parse_arch("80") == (80, "", True, True)
    with pytest.raises(ValueError, match="cuda_archs: cannot read architecture 'x86'"):
        paths.parse_arch("x86")
    only_90a = probe(cuda_archs=("90a-real",), gpus=(gpu((9, 0)), gpu((10, 0), index=1)))
    assert paths.choose("fused_step", CUDA0, only_90a).path == "cuda"
    assert paths.choose("fused_step", torch.device("cuda", 1), only_90a).path == "rtc"
    ptx_only = probe(cuda_archs=("100-virtual",), gpus=(gpu((9, 0)), gpu((12, 0), index=1)))
    assert paths.choose("fused_step", CUDA0, ptx_only).path == "rtc"
    assert paths.choose("fused_step", torch.device("cuda", 1), ptx_only).path == "cuda"


def test_forced_paths():
    old = probe(driver=12000, rtc=NO_CUPY)
    with pytest.raises(RuntimeError, match=r"path='native': the driver supports CUDA 12.0"):
        paths.choose("fused_step", CUDA0, old, "native")
    with pytest.raises(RuntimeError, match=r"path='rtc': CuPy is not importable"):
        paths.choose("fused_step", CUDA0, old, "rtc")
    with pytest.raises(RuntimeError, match=r"path='rtc': run-time compiled kernels are CUDA kernels"):
        paths.choose("fused_step", torch.device("cpu"), probe(), "rtc")
    with pytest.raises(ValueError, match=r"path: must be one of auto, native, rtc, torch, sim, got 'fast'"):
        paths.choose("fused_step", CUDA0, probe(), "fast")
    with pytest.raises(RuntimeError, match=r"path='sim': the sim runs fastres's CUDA kernels on the CPU; .* cuda"):
        paths.choose("fused_step", CUDA0, probe(), "sim")
    assert paths.choose("fused_step", torch.device("cpu"), probe(), "sim").path == "sim"
    assert paths.choose("fused_step", CUDA0, probe(), "rtc").path == "rtc"
    assert paths.choose("fused_step", CUDA0, old, "torch").path == "torch"
    assert paths.choose("fused_step", torch.device("cpu"), probe(), "native").path == "cpu"


def test_cupy_is_probed_only_when_needed():
    calls = []

    def rtc_status():
        calls.append(1)
        return NO_CUPY

    assert paths.choose("fused_step", CUDA0, probe(rtc=rtc_status)).path == "cuda"
    assert calls == []
    old = probe(driver=12000, rtc=rtc_status)
    assert paths.choose("fused_step", CUDA0, old).path == "torch"
    assert paths.choose("wire_pack", CUDA0, old).path == "torch"
    assert calls == [1]


@pytest.fixture
def injected(monkeypatch):
    """ops with a probe set by the test, forgotten afterwards."""
    monkeypatch.setattr(ops, "_PROBE", None)
    monkeypatch.setattr(ops, "_CHOICES", {})
    monkeypatch.setattr(ops, "_WARNED", set())
    return ops._set_probe


def test_one_warning_per_device_and_reason(injected):
    injected(probe(driver=12080))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count our once-only logic, not Python's filters
        assert ops._pick_path(CUDA0, "segment_sq_norms") == "torch"
        assert ops._pick_path(CUDA0, "fused_step") == "torch"
        assert ops._pick_path(torch.device("cpu"), "segment_sq_norms") == "cpu"
        assert ops._pick_path(CUDA0, "wire_pack", "torch") == "torch"  # asked for: no warning
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert messages[0].startswith(
        "fastres.kernels.ops on cuda:0 (segment_sq_norms first): the driver supports CUDA 12.8"
    )
    assert "Running the slower torch versions" in messages[0] and "python -m fastres.doctor" in messages[0]
    assert caught[0].category is RuntimeWarning
    assert not ops.has_kernel("fused_step", CUDA0) and ops.has_kernel("fused_step", "cpu")
    injected(probe(gpus=(gpu((7, 5), "Tesla T4"),)))
    with pytest.warns(RuntimeWarning, match=r"Tesla T4 \(sm_75\).*Running the CUDA kernels compiled at run time"):
        assert ops._pick_path(CUDA0, "fused_step") == "rtc"
    injected(probe())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ops._pick_path(CUDA0, "fused_step") == "cuda" and ops.has_kernel("fused_step", CUDA0)


class _NoCudaKernels(types.SimpleNamespace):
    """Stands in for a _C built without CUDA kernels."""


def _c_without_cuda():
    real = ops._C
    attrs = {k: getattr(real, k) for k in dir(real) if not k.startswith("__") and "cuda" not in k}
    attrs["build_info"] = lambda: {**real.build_info(), "cuda": False, "cuda_archs": [], "cuda_version": None}
    return _NoCudaKernels(__file__=real.__file__, **attrs)


def test_probe_of_this_process_agrees_with_its_parts():
    p = paths.Probe.of(ops._C)
    info = ops.build_info()
    assert p.native and p.cuda_archs == tuple(info["cuda_archs"]) and p.cuda_runtime == info["cuda_version"]
    assert p.cuda_ops == (frozenset(paths.OPS) if info["cuda"] else frozenset())
    assert len(p.gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert p.driver == paths.driver_version()
    assert paths.Probe.of(_c_without_cuda()).cuda_ops == frozenset()


@requires_cuda
def test_fallback_on_gpu_end_to_end(injected):
    injected(probe(cuda_ops=frozenset(), gpus=paths.Probe.of(ops._C).gpus, rtc=NO_CUPY))
    offsets = offsets_of(ODD_LENGTHS)
    flat = torch.randn(int(offsets[-1]), device="cuda")
    with pytest.warns(RuntimeWarning, match="built without CUDA kernels"):
        out = ops.segment_sq_norms(flat, offsets)
    assert out.device == flat.device
    ref = reference(flat, offsets)
    assert bool(((out.cpu().double() - ref).abs() <= fallback_error_bound(offsets) * ref).all())


# ----------------------------------------------------------------------------- fused_step at the door


def step_inputs(device="cpu", lengths=(5, 4097, 0, 300, 17)):
    """Flat buffers of a small layout and its tables, for ops.fused_step."""
    g = torch.Generator().manual_seed(12)
    offsets = offsets_of(list(lengths))
    n, S = int(offsets[-1]), len(lengths)
    w, grad, m = (torch.randn(n, generator=g).to(device) for _ in range(3))
    return dict(
        params=w,
        grads=grad,
        momentum=m,
        chunks=ops.segment_chunks(offsets, device),
        seg_group=torch.zeros(S, dtype=torch.int32, device=device),
        seg_flags=torch.full((S,), ops.SEG_ADAPT | ops.SEG_DECAY, dtype=torch.int32, device=device),
        # one group: lr, wd, mu, eta, then the rest of the group's HPARAM_STRIDE slots (unused here)
        hparams=torch.tensor([0.1, 1e-3, 0.9, 0.01] + [0.0] * (ops.HPARAM_STRIDE - 4), device=device),
    )


@pytest.mark.parametrize("mode", [ops.STEP_LARS, ops.STEP_LARS | ops.STEP_NESTEROV, ops.STEP_LR_AFTER_MOMENTUM])
def test_fused_step_native_and_torch_paths_agree(mode):
    a, b = step_inputs(), step_inputs()
    assert ops.fused_step(**a, mode=mode, eps=1e-9) == "cpu"
    assert ops.fused_step(**b, mode=mode, eps=1e-9, path="torch") == "torch"
    assert not torch.equal(a["params"], step_inputs()["params"])  # it did step
    torch.testing.assert_close(a["params"], b["params"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a["momentum"], b["momentum"], rtol=1e-6, atol=1e-7)


def test_fused_step_rejects_overlapping_buffers():
    x = step_inputs()
    n = x["params"].numel()
    big = torch.zeros(2 * n + 8)
    cases = [
        (dict(momentum=big[: n + 1], params=big[n:]), r"params: overlaps momentum"),
        (dict(grads=x["params"]), r"params: overlaps grads"),
        (dict(hparams=x["momentum"][: ops.HPARAM_STRIDE]), r"momentum: overlaps hparams"),
    ]
    for change, match in cases:
        with pytest.raises(ValueError, match=match):
            ops.fused_step(**{**x, **change}, mode=ops.STEP_LARS)
    C = x["chunks"].num_chunks
    scratch = torch.zeros(3 * C)
    with pytest.raises(ValueError, match=r"partials: overlaps wsq_out"):
        ops.fused_step(**x, mode=ops.STEP_LARS, partials=scratch[: 2 * C], wsq_out=scratch[C:])
    with pytest.raises(ValueError, match=r"momentum: overlaps found_inf"):
        ops.fused_step(**x, mode=ops.STEP_LARS, found_inf=x["momentum"][3:4])
    # disjoint slices of one buffer are fine
    ops.fused_step(**x, mode=ops.STEP_LARS, partials=scratch[: 2 * C], wsq_out=scratch[2 * C :])


def test_fused_step_forced_paths_on_cpu():
    x = step_inputs()
    with pytest.raises(RuntimeError, match=r"path='rtc': run-time compiled kernels are CUDA kernels"):
        ops.fused_step(**x, mode=ops.STEP_LARS, path="rtc")
    with pytest.raises(ValueError, match=r"path: must be one of auto, native, rtc, torch, sim"):
        ops.fused_step(**x, mode=ops.STEP_LARS, path="gpu")
    assert ops.fused_step(**x, mode=ops.STEP_LARS, path="native") == "cpu"


def test_every_op_takes_a_forced_path():
    offsets = offsets_of([3, 4097, 0, 50])
    flat = torch.randn(int(offsets[-1]), generator=torch.Generator().manual_seed(13))
    native = ops.segment_sq_norms(flat, offsets, path="native")
    torch.testing.assert_close(ops.segment_sq_norms(flat, offsets, path="torch"), native, rtol=1e-5, atol=0)
    wire = torch.empty(flat.numel(), dtype=torch.bfloat16)
    ops.pack_wire(flat, wire, 0.5, path="torch")
    assert torch.equal(wire, (flat * 0.5).to(torch.bfloat16))
    back = torch.empty_like(flat)
    norms = ops.unpack_wire(wire, back, 2.0, chunks=ops.segment_chunks(offsets), path="torch")
    assert torch.equal(back, wire.float() * 2.0)
    torch.testing.assert_close(norms, ops.segment_sq_norms(back, offsets), rtol=1e-5, atol=0)
    for call in (
        lambda: ops.segment_sq_norms(flat, offsets, path="rtc"),
        lambda: ops.pack_wire(flat, wire, path="rtc"),
        lambda: ops.unpack_wire(wire, back, path="rtc"),
    ):
        with pytest.raises(RuntimeError, match=r"path='rtc': run-time compiled kernels are CUDA kernels"):
            call()


def test_missing_native_module_raises_with_advice_when_used(monkeypatch):
    original = ImportError("No module named 'fastres._C'")
    monkeypatch.setattr(ops, "_C", None)
    monkeypatch.setattr(ops, "_C_IMPORT_ERROR", original)
    assert not ops.native_available()
    info = ops.build_info()
    assert info["native"] is False and info["cuda"] is False and "fastres._C" in info["error"]
    with pytest.raises(ImportError) as exc_info:
        ops.segment_sq_norms(torch.randn(4), torch.tensor([0, 4], dtype=torch.int64))
    message = str(exc_info.value)
    assert "No module named 'fastres._C'" in message
    assert "`pip install .` from the repository root" in message
    assert "shadows the installed package" in message
    assert exc_info.value.__cause__ is original
    with pytest.raises(ImportError, match="pip install"):
        ops.segment_chunks(torch.tensor([0, 4], dtype=torch.int64))


def test_source_tree_without_native_module_imports_then_explains():
    # The real case: Python started in the repository root finds fastres/ without _C.
    root = Path(__file__).resolve().parents[1]
    if list((root / "fastres").glob("_C*")):
        pytest.skip("this source tree holds a built _C (in-place build)")
    code = (
        "import torch, fastres.kernels.ops as ops\n"
        "if ops.native_available():\n"
        "    print('NATIVE', ops._C.__file__)\n"
        "    raise SystemExit\n"
        "try:\n"
        "    ops.segment_sq_norms(torch.ones(3), torch.tensor([0, 3]))\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    if run.stdout.startswith("NATIVE"):  # `pip install -e .` maps fastres._C for the source tree
        pytest.skip(f"the source tree finds a built _C: {run.stdout.split()[1]}")
    assert "pip install ." in run.stdout and str(root / "fastres") in run.stdout


# ----------------------------------------------------------------------------- FASTRES_SYNC_CHECK

_BAD_LAUNCH = """
import torch, fastres.kernels.ops as ops
chunks = ops.segment_chunks(torch.tensor([0, 100_000], dtype=torch.int64), "cuda")
out = torch.empty(1, device="cuda")
partials = torch.empty(chunks.num_chunks, device="cuda")
stream = torch.cuda.current_stream().cuda_stream
try:  # flat at address 16: every load faults (an illegal address, found when the kernel runs)
    ops._C.segment_sq_norms_cuda(16, 0, chunks.table.data_ptr(), 1, chunks.num_chunks,
                                 partials.data_ptr(), out.data_ptr(), 0, stream)
    print("LAUNCHED")
except RuntimeError as e:
    print("RAISED", e)
"""


def _run_bad_launch(sync_check: str) -> str:
    env = {**os.environ, "FASTRES_SYNC_CHECK": sync_check}
    run = subprocess.run([sys.executable, "-c", _BAD_LAUNCH], env=env, capture_output=True, text=True, timeout=120)
    return run.stdout


@requires_cuda
@pytest.mark.skipif(not ops.build_info()["cuda"], reason="needs fastres._C's CUDA kernels")
def test_sync_check_names_the_kernel_that_faulted():
    # asynchronous by default: the launch returns, the fault surfaces later elsewhere
    assert _run_bad_launch("0").startswith("LAUNCHED")
    out = _run_bad_launch("1")
    assert out.startswith("RAISED") and "FASTRES_SYNC_CHECK after chunk_sq_sums_kernel" in out, out
    assert "segment_sq_norms_cuda.cu" in out


def test_sync_check_switch():
    code = "import fastres._C as C; a = C.sync_check(); C.set_sync_check(not a); print(a, C.sync_check())"
    for value, expected in (("1", "True False"), ("", "False True"), ("0", "False True")):
        env = {**os.environ, "FASTRES_SYNC_CHECK": value}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert run.stdout.strip() == expected, (value, run.stdout, run.stderr)
