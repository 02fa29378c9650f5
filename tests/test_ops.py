"""Tests of fastres.ops: segment_sq_norms against float64 torch, its checks and its paths.

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

from fastres import ops

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
    assert len(sizes) == 161 and sum(sizes) == 25_557_032  # DESIGN.md's numbers
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
    out = ops._segment_sq_norms_torch(flat, offsets)
    ref = reference(flat, offsets)
    bound = fallback_error_bound(offsets) * ref
    assert bool(((out.double() - ref).abs() <= bound).all())
    assert ops._segment_sq_norms_torch(flat, torch.tensor([3], dtype=torch.int64)).shape == (0,)


class _NoCudaKernels(types.SimpleNamespace):
    """Stands in for a _C built without CUDA kernels."""


def _c_without_cuda():
    real = ops._C
    attrs = {k: getattr(real, k) for k in dir(real) if not k.startswith("__") and "cuda" not in k}
    attrs["build_info"] = lambda: {**real.build_info(), "cuda": False, "cuda_archs": []}
    return _NoCudaKernels(__file__=real.__file__, **attrs)


def test_gpu_tensor_without_cuda_kernels_falls_back_and_warns_once(monkeypatch):
    monkeypatch.setattr(ops, "_C", _c_without_cuda())
    monkeypatch.setattr(ops, "_WARNED", set())
    cuda = torch.device("cuda", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count our once-only logic, not Python's filters
        assert ops._pick_path(cuda, "segment_sq_norms") == "torch"
        assert ops._pick_path(cuda, "segment_sq_norms") == "torch"
        assert ops._pick_path(torch.device("cpu"), "segment_sq_norms") == "cpu"
        assert ops._pick_path(cuda, "other_op") == "torch"
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert messages[0].startswith("segment_sq_norms: fastres._C was built without CUDA kernels")
    assert "pip install ." in messages[0]
    assert all(issubclass(w.category, RuntimeWarning) for w in caught)


def test_cuda_path_chosen_when_kernels_exist(monkeypatch):
    monkeypatch.setattr(ops, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU-only build warns here; tested above
        path = ops._pick_path(torch.device("cuda", 0), "segment_sq_norms")
    assert path == ("cuda" if ops.build_info()["cuda"] else "torch")


@requires_cuda
def test_fallback_on_gpu_end_to_end(monkeypatch):
    monkeypatch.setattr(ops, "_C", _c_without_cuda())
    monkeypatch.setattr(ops, "_WARNED", set())
    offsets = offsets_of(ODD_LENGTHS)
    flat = torch.randn(int(offsets[-1]), device="cuda")
    with pytest.warns(RuntimeWarning, match="built without CUDA kernels"):
        out = ops.segment_sq_norms(flat, offsets)
    assert out.device == flat.device
    ref = reference(flat, offsets)
    assert bool(((out.cpu().double() - ref).abs() <= fallback_error_bound(offsets) * ref).all())


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
        "import torch, fastres.ops as ops\n"
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
