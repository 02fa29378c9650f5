"""Tests of the run-time compiled path: csrc/*_cuda.cu through NVRTC (fastres.kernels.nvrtc, fastres.kernels.rtc).

On every machine, GPU or not: each kernel source compiles with NVRTC to PTX for sm_80 and
sm_90 and holds every kernel fastres.kernels.rtc launches, so a change that breaks run-time
compilation fails CI (NVRTC needs no GPU; the `test` extra installs the nvidia-cuda-nvrtc
wheel). The compile the GPU path loads is bit-exact with the nvcc build: no `.ftz` (flushed
subnormals) or approximate division and square root in its PTX, the same kinds of float
instructions as nvcc makes of the same file with CMakeLists.txt's flags, and CuPy (stood in
for here) only loads fastres's cubin, never compiles the source with options of its own.
With a GPU and CuPy: the run-time compiled kernels against float64, the CPU kernels and
fastres._C's own CUDA kernels.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from fastres.kernels import nvrtc, ops, rtc

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["compute_80", "compute_90"]


def nvrtc_lib() -> nvrtc.Nvrtc:
    """NVRTC, which CI must have: a failure here, not a skip, on Linux x86-64 (the `test`
    extra installs nvidia-cuda-nvrtc there)."""
    try:
        return nvrtc.load()
    except nvrtc.NvrtcUnavailable as e:
        if platform.system() == "Linux" and platform.machine() == "x86_64":
            pytest.fail(f"{e}\n(pip install -e '.[test]' installs it)", pytrace=False)
        pytest.skip(str(e))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", sorted(rtc.KERNELS))
def test_every_kernel_source_compiles_with_nvrtc(file, arch):
    ptx, lowered = nvrtc_lib().compile_ptx(
        rtc.kernel_source(file), file, arch=arch, options=rtc.NVRTC_OPTIONS, name_expressions=rtc.KERNELS[file]
    )
    assert f".target sm_{arch.split('_')[1]}" in ptx
    # externally visible entries (template instances are .weak): what CuPy's get_function finds
    entries = set(re.findall(r"^\.(?:visible|weak) \.entry (\w+)\(", ptx, re.MULTILINE))
    missing = [expr for expr, name in lowered.items() if name not in entries]
    assert not missing, f"{file}: kernels not in the PTX as visible entries: {missing}"
    assert len(entries) == len(rtc.KERNELS[file])


def test_every_kernel_of_the_sources_is_listed():
    # a kernel added to a .cu file without a name expression in rtc.KERNELS would be missing
    # from the run-time compiled path: find every __global__ function in the sources
    kernel = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(")
    for file, exprs in rtc.KERNELS.items():
        defined = set(kernel.findall(rtc.kernel_source(file)))
        listed = {re.sub(r"<.*>$", "", e.split("::")[-1]) for e in exprs}
        assert defined == listed, f"{file}: defined {sorted(defined)}, listed {sorted(listed)}"
    on_disk = {p.name for p in (ROOT / "csrc").glob("*_cuda.cu")}
    assert on_disk == set(rtc.KERNELS), "every csrc/*_cuda.cu is a source of fastres.kernels.rtc"


def test_sources_are_inlined_and_installed():
    src = rtc.kernel_source("wire_cuda.cu")
    assert not re.search(r'^\s*#\s*include\s+"', src, re.MULTILINE)
    assert '#line 1 "common.h"' in src and src.count('#line 1 "cuda_common.cuh"') == 1  # once, #pragma once
    assert "#pragma once" not in src
    # every file the sources pull in is installed into the wheel (CMakeLists.txt), so an
    # install without a source tree can compile them
    used = set(re.findall(r'#line 1 "([^"]+)"', "".join(rtc.kernel_source(f) for f in rtc.KERNELS)))
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"install\(FILES(.*?)DESTINATION fastres/csrc\)", cmake, re.DOTALL)
    assert block, "CMakeLists.txt installs the kernel sources into fastres/csrc"
    installed = {Path(f).name for f in block.group(1).split()}
    assert used <= installed, f"not installed: {sorted(used - installed)}"


def test_nvrtc_reports_the_log_of_a_bad_source():
    lib = nvrtc_lib()
    assert lib.version() >= (12, 0)
    assert 80 in lib.supported_archs() and 90 in lib.supported_archs()
    with pytest.raises(nvrtc.NvrtcError, match=r"compiling bad.cu for compute_80 failed") as info:
        lib.compile_ptx("__global__ void k(float* x) { x[0] = undefined_name; }", "bad.cu")
    assert "undefined_name" in info.value.log


# float instructions of a PTX file, with their modifiers ("fma.rn.f32", "div.rn.f32", "add.ftz.f32")
_FLOAT_OP = re.compile(
    r"^\s*(?:@!?%p\d+\s+)?((?:add|sub|mul|fma|mad|div|sqrt|rsqrt|rcp|min|max|abs|neg|setp\.\w+|cvt)"
    r"(?:\.\w+)*\.f(?:16|32|64)\w*)",
    re.MULTILINE,
)


def flushed_or_approximate(ptx: str) -> list[str]:
    """The float instructions that flush subnormals (.ftz) or round division/sqrt approximately."""
    approximate = re.compile(r"(div|sqrt|rcp)\.(approx|full)")
    return sorted({op for op in _FLOAT_OP.findall(ptx) if ".ftz" in op or approximate.match(op)})


@functools.cache
def compiled_for_sm90(file: str):
    return rtc.compile_kernels(file, "sm_90")


@pytest.mark.parametrize("file", sorted(rtc.KERNELS))
def test_run_time_kernels_keep_subnormals_and_ieee_rounding(file):
    nvrtc_lib()
    out = compiled_for_sm90(file)  # what the GPU path loads on an H100/H200
    assert out.cubin is not None and out.cubin[:4] == b"\x7fELF", "a cubin for sm_90, not PTX for the driver"
    for flag in ("-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=true"):
        assert flag in out.options
    assert set(out.lowered) == set(rtc.KERNELS[file])
    bad = flushed_or_approximate(out.ptx)
    assert not bad, f"{file}: the run-time compiled kernels flush subnormals or approximate: {bad}"


@pytest.mark.parametrize("file", sorted(rtc.KERNELS))
def test_run_time_float_code_is_the_nvcc_builds(file, tmp_path):
    # the same kinds of float instruction as nvcc makes of the file with CMakeLists.txt's CUDA flags
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not os.path.exists(nvcc):
        pytest.skip("nvcc not found")
    cmake = (ROOT / "CMakeLists.txt").read_text()
    flags = re.search(r"\$<\$<COMPILE_LANGUAGE:CUDA>:([^>]*)>", cmake).group(1).split()
    assert not [f for f in flags if re.match(r"-(ftz|prec|fmad|use_fast_math|-use_fast_math)", f)], flags
    ptx_file = tmp_path / "nvcc.ptx"
    cmd = [nvcc, "-ptx", "-arch=compute_90", "-std=c++17", "-O3", "-DNDEBUG", *flags, "-DFASTRES_WITH_CUDA=1"]
    cmd += ['-DFASTRES_CUDA_ARCHS="90"', f"-I{ROOT / 'csrc'}", str(ROOT / "csrc" / file), "-o", str(ptx_file)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    nvcc_ops = set(_FLOAT_OP.findall(ptx_file.read_text()))
    rtc_ops = set(_FLOAT_OP.findall(rtc.compile_kernels(file, "compute_90").ptx))
    assert nvcc_ops, "no float instruction found: the pattern no longer reads the PTX"
    only_nvcc, only_nvrtc = sorted(nvcc_ops - rtc_ops), sorted(rtc_ops - nvcc_ops)
    assert rtc_ops == nvcc_ops, f"{file}: only nvcc makes {only_nvcc}, only NVRTC {only_nvrtc}"


def _stand_in_cupy(loaded: list, launched: list, version: str = "14.2.0"):
    """CuPy as fastres.kernels.rtc uses it, in the shape of CuPy `version` (13.6.0 or 14.2.0, read in
    cupy/cupy's sources at those tags). RawModule(code=...) compiles the way CuPy's
    compile_with_cache does (cupy/cuda/compiler.py: the caller's options, then `-ftz=true`);
    RawModule(path=...) loads the file; `loaded` gets the PTX behind what was loaded. A kernel
    call is cupy/cuda/function.pyx's Function.__call__(tuple grid, tuple block, args,
    shared_mem=0, stream=None): Cython refuses a grid or block that is not a tuple, and the launch
    goes on `stream.ptr`; `launched` gets each call with its arguments. 14.2.0 wraps a foreign
    stream with Stream.from_external, checking the CUDA stream protocol as cupy/cuda/stream.pyx
    does, and its ExternalStream warns DeprecationWarning; 13.6.0 has ExternalStream only."""
    cupy = types.ModuleType("cupy")
    cupy.__version__ = version

    class RawModule:
        def __init__(self, *, code=None, path=None, options=(), name_expressions=None, **kw):
            if code is not None:
                out = nvrtc.load().compile(
                    code, "cupy", arch="compute_90", options=(*options, "-ftz=true"), name_expressions=name_expressions
                )
                self.names = out.lowered
                loaded.append(("code", out.ptx))
            else:
                self.names = {}
                loaded.append(("path", Path(path).read_bytes()))

        def compile(self):
            pass

        def get_function(self, name):
            kernel = self.names.get(name, name)

            def call(grid, block, args, shared_mem=0, stream=None, enable_cooperative_groups=False):
                if type(grid) is not tuple or type(block) is not tuple:
                    raise TypeError("Argument 'grid' has incorrect type (expected tuple)")
                launched.append((kernel, grid, block, args, stream.ptr if stream is not None else 0))

            return call

    class Stream:
        def __init__(self, ptr, device_id):
            self.ptr, self.device_id = ptr, device_id

        def synchronize(self):
            pass

    def from_external(obj):  # cupy/cuda/stream.pyx v14.2.0, Stream.from_external's checks
        version, ptr = obj.__cuda_stream__()
        if not isinstance(version, int) or not isinstance(ptr, int):
            raise TypeError("__cuda_stream__() must return (int, int)")
        if version != 0:
            raise TypeError(f"__cuda_stream__() returned unsupported version {version}")
        return Stream(ptr, -1)

    def external_stream(ptr, device_id=-1):
        if version.startswith("14."):
            warnings.warn(
                "ExternalStream is deprecated. Use Stream.from_external() instead", DeprecationWarning, stacklevel=2
            )
        return Stream(ptr, device_id)

    cupy.RawModule = RawModule
    stream_class = types.SimpleNamespace(from_external=from_external) if version.startswith("14.") else object
    cupy.cuda = types.SimpleNamespace(
        Device=lambda device: contextlib.nullcontext(), Stream=stream_class, ExternalStream=external_stream
    )
    return cupy


def test_gpu_path_loads_fastres_cubin_and_never_lets_cupy_compile(monkeypatch, tmp_path):
    nvrtc_lib()
    import numpy as np

    loaded, launched = [], []
    monkeypatch.setitem(sys.modules, "cupy", _stand_in_cupy(loaded, launched))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setenv("FASTRES_RTC_CACHE", str(tmp_path))
    monkeypatch.setattr(rtc, "_MODULES", {})
    monkeypatch.setattr(rtc, "_STREAMS", {})
    args = (np.uint64(0), np.uint64(0), np.int64(0), np.float32(1.0))
    rtc.launch("wire_cuda.cu", "pack_kernel<2>", 3, 256, args, 0, 1234)
    [(how, what)] = loaded
    if how == "code":  # CuPy compiled the source: with its own -ftz=true
        bad = flushed_or_approximate(what)
        assert not bad, f"CuPy compiled the kernels and flushed subnormals: {bad}"
    out = compiled_for_sm90("wire_cuda.cu")
    assert how == "path" and what == out.cubin, "CuPy must load fastres's own cubin for sm_90"
    assert not flushed_or_approximate(out.ptx)
    [(kernel, grid, block, got, stream)] = launched
    assert kernel == out.lowered["fastres::rtc::pack_kernel<2>"] and (grid, block) == ((3,), (256,)) and got == args
    assert stream == 1234  # torch's stream, handed to CuPy
    # a second process finds the cubin in the cache: same file, nothing compiled
    cubins = list(tmp_path.glob("wire_cuda-sm_90-*.cubin"))
    assert len(cubins) == 1 and cubins[0].read_bytes() == out.cubin
    monkeypatch.setattr(rtc, "_MODULES", {})
    monkeypatch.setattr(rtc, "compile_kernels", lambda *a: pytest.fail("compiled again despite the cache"))
    rtc.launch("wire_cuda.cu", "unpack_kernel<0>", 1, 256, args, 0, 1234)
    assert loaded[-1] == ("path", out.cubin)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("version", ["13.6.0", "14.2.0"])
def test_rtc_calls_cupy_13_and_14_alike(monkeypatch, tmp_path, version):
    # the run-time compiled path's calls, from an op's description (fastres.kernels.launches) to
    # CuPy's kernel call: the same in both versions, no deprecated API, every argument a numpy
    # scalar of its parameter's C type (CuPy 14 packs a scalar as its own dtype, CuPy 13 by its
    # itemsize; a Python int would go as an int64 in 14)
    nvrtc_lib()
    import numpy as np

    from fastres.kernels import launches

    loaded, launched = [], []
    monkeypatch.setitem(sys.modules, "cupy", _stand_in_cupy(loaded, launched, version))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setenv("FASTRES_RTC_CACHE", str(tmp_path))
    monkeypatch.setattr(rtc, "_MODULES", {})
    monkeypatch.setattr(rtc, "_STREAMS", {})
    norms = dict(table=16, S=2, C=3, lo=5, hi=9000, partials=32, out=48)
    call = launches.Call.of("wire_unpack", src=64, src_dtype=2, dst=128, n=9003, scale=0.5, **norms)
    work = launches.kernel_launches(call)
    rtc.run(work, 0, 4321)
    assert [k for k, *_ in launched] == [
        compiled_for_sm90("wire_cuda.cu").lowered["fastres::rtc::" + w.kernel] for w in work
    ]
    width = {"p": np.uint64, "i64": np.int64, "i32": np.int32, "f32": np.float32}
    for (_, grid, block, args, stream), w in zip(launched, work):
        assert (grid, block, stream) == ((w.grid,), (w.block,), 4321)
        assert [type(a) for a in args] == [width[ctype] for _, ctype, _ in w.args]
        assert [a.item() for a in args] == [v for _, _, v in w.args]


def test_missing_nvrtc_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(nvrtc, "_LOADED", None)
    monkeypatch.setattr(nvrtc, "candidates", lambda: ["/nonexistent/libnvrtc.so.13"])
    with pytest.raises(nvrtc.NvrtcUnavailable, match=r"/nonexistent/libnvrtc.so.13: .*pip install nvidia-cuda-nvrtc"):
        nvrtc.load()


def test_unknown_source_is_named():
    with pytest.raises(ValueError, match=r"file: not a kernel source of fastres.kernels.rtc"):
        rtc.kernel_source("module.cpp")


def test_status_is_true_to_cupy():
    st = rtc.status()
    try:
        import cupy
    except Exception:  # noqa: BLE001
        assert not st["available"] and "CuPy is not importable" in st["reason"]
        return
    assert st["cupy"] == cupy.__version__
    assert st["available"] == (st["nvrtc"] is not None)


# ----------------------------------------------------------------------------- on a GPU, with CuPy


def _rtc_on_gpu() -> bool:
    return torch.cuda.is_available() and rtc.available()[0]


requires_rtc = pytest.mark.skipif(not _rtc_on_gpu(), reason="needs a CUDA GPU and CuPy")


def offsets_of(lengths, start=0):
    return torch.tensor([start, *lengths], dtype=torch.int64).cumsum(0)


LENGTHS = [0, 1, 3, 5, 17, 4095, 4096, 4097, 8193, 100_003, 0, 7]


@requires_rtc
@pytest.mark.parametrize("shift", [0, 1, 3])
def test_rtc_segment_norms_equal_float64_and_native(shift):
    offsets = offsets_of(LENGTHS, start=shift)
    flat = torch.randn(int(offsets[-1]) + 3, generator=torch.Generator().manual_seed(shift)).cuda()
    chunks = ops.segment_chunks(offsets, "cuda")
    rtc_out = ops.segment_sq_norms(flat, chunks, path="rtc")
    ref = torch.stack([flat[a:b].double().square().sum() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())])
    bound = (140 + torch.ceil((offsets[1:] - offsets[:-1]).double() / ops.SEGMENT_CHUNK)) * 2.0**-24
    assert bool(((rtc_out.double() - ref).abs() <= bound.cuda() * ref).all())
    if ops.has_kernel("segment_sq_norms", "cuda"):
        out = ops.segment_sq_norms(flat, chunks)
        torch.testing.assert_close(rtc_out, out, rtol=4e-7, atol=0)


@requires_rtc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rtc_pack_unpack_equal_cpu_bitwise(dtype):
    n = (1 << 20) + 7
    src = (torch.randn(n + 1, generator=torch.Generator().manual_seed(2)) * 100)[1:]  # unaligned
    wire_cpu = torch.empty(n, dtype=dtype)
    ops.pack_wire(src, wire_cpu, 0.125)
    wire_gpu = torch.empty(n, dtype=dtype, device="cuda")
    ops.pack_wire(src.cuda(), wire_gpu, 0.125, path="rtc")
    assert torch.equal(wire_gpu.cpu().view(torch.uint8), wire_cpu.view(torch.uint8))
    offsets = offsets_of([3, 4097, 0, 50_000, 9], start=2)
    chunks = ops.segment_chunks(offsets, "cuda")
    dst = torch.empty(n, device="cuda")
    norms = ops.unpack_wire(wire_gpu, dst, 8.0, chunks=chunks, path="rtc")
    dst_cpu = torch.empty(n)
    ops.unpack_wire(wire_cpu, dst_cpu, 8.0)
    assert torch.equal(dst.cpu(), dst_cpu)
    again = ops.segment_sq_norms(dst, chunks, path="rtc")
    assert torch.equal(norms, again)  # the same traversal and order: the same bits


def step_inputs(device, seed: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    offsets = offsets_of([5, 4097, 0, 300, 17, 70_001], start=1)
    n, S = int(offsets[-1]) + 2, 6
    w, gr, m = (torch.randn(n, generator=g).to(device) for _ in range(3))
    return dict(
        params=w,
        grads=gr,
        momentum=m,
        chunks=ops.segment_chunks(offsets, device),
        seg_group=torch.zeros(S, dtype=torch.int32, device=device),
        seg_flags=torch.full((S,), ops.SEG_ADAPT | ops.SEG_DECAY, dtype=torch.int32, device=device),
        hparams=torch.tensor([0.1, 1e-3, 0.9, 0.01] + [0.0] * (ops.HPARAM_STRIDE - 4), device=device),
    )


def step_terms(x: dict, mode: int, eps: float) -> dict:
    """csrc/lars.h's step on x in float64, per element: its coefficients and intermediate values."""
    off = x["chunks"].offsets.tolist()
    w, g, m = (x[k].double().cpu() for k in ("params", "grads", "momentum"))
    lr, wd, mu, eta = x["hparams"][:4].double().tolist()  # one group, every segment adapted and decayed
    a, b, depth = torch.zeros_like(w), torch.zeros_like(w), torch.zeros_like(w)
    for lo, hi in zip(off[:-1], off[1:]):
        wn, gn = w[lo:hi].norm().item(), g[lo:hi].norm().item()
        trust = eta * wn / (gn + wd * wn + eps) if mode & ops.STEP_LARS and wn > 0 and gn > 0 else 1.0
        a[lo:hi], b[lo:hi] = (trust, lr) if mode & ops.STEP_LR_AFTER_MOMENTUM else (lr * trust, 1.0)
        # the GPU's and torch._foreach_norm's sums of squares: other orders, at most this deep
        depth[lo:hi] = 200 + (hi - lo) / 4096 if mode & ops.STEP_LARS else 0
    inside = torch.zeros_like(w, dtype=torch.bool)
    inside[off[0] : off[-1]] = True  # the kernels touch nothing outside the segments
    gd = g + wd * w
    mn = mu * m + a * gd
    return dict(w=w, g=g, m=m, wd=wd, mu=mu, a=a, b=b, gd=gd, mn=mn, depth=depth, inside=inside)


def assert_step_close(got: dict, want: dict, x: dict, mode: int, eps: float) -> None:
    """The GPU's step (`got`) against the torch path's (`want`), within what the arithmetic allows.

    nvcc and NVRTC contract a * b + c into one FMA (-fmad=true): g + wd*w, mu*m + a*gd and
    w - b*m each round once on the GPU where torch rounds two or three times, which moves each
    result by at most 3 roundings (2^-24) of its operands' magnitudes, and an operand's error
    carries on; the trust ratio's norms are summed in other orders (`depth` roundings of a*gd).
    A fixed atol says nothing of that: a result that cancels to near 0 keeps the operands' error."""
    t, U = step_terms(x, mode, eps), 2.0**-24
    e_gd = 3 * U * ((t["wd"] * t["w"]).abs() + t["g"].abs())
    agd = (t["a"] * t["gd"]).abs()
    e_m = 3 * U * (t["mu"] * t["m"].abs() + agd) + t["a"].abs() * e_gd + t["depth"] * U * agd
    if mode & ops.STEP_NESTEROV:
        step = t["a"] * t["gd"] + t["mu"] * t["mn"]
        e_step = 3 * U * (agd + (t["mu"] * t["mn"]).abs()) + t["a"].abs() * e_gd + t["mu"] * e_m + t["depth"] * U * agd
    else:
        step, e_step = t["mn"], e_m
    e_w = 3 * U * (t["w"].abs() + (t["b"] * step).abs()) + t["b"].abs() * e_step
    for key, bound in (("momentum", e_m), ("params", e_w)):
        diff = (got[key].double().cpu() - want[key].double().cpu()).abs()
        outside = int((diff > bound).sum())
        assert outside == 0, (
            f"{key}: {outside} elements beyond the arithmetic's bound (excess up to {float((diff - bound).max()):.3g})"
        )


def fma_step(x: dict, mode: int, eps: float) -> dict:
    """The fused step in float32 with lars.h's momentum_update as the GPU computes it: each a * b + c
    one FMA (the exact product and sum, rounded once), the trust ratio from float64 norms."""
    t = step_terms(x, mode, eps)
    f32 = lambda v: torch.as_tensor(v, dtype=torch.float64).float().double()  # noqa: E731 - round to fp32
    fma = lambda p, q, r: f32(p * q + r)  # noqa: E731 - the product of two fp32 values is exact in float64
    w, g, m = t["w"], t["g"], t["m"]
    wd, mu, a, b = f32(t["wd"]), f32(t["mu"]), f32(t["a"]), f32(t["b"])
    gd = fma(wd, w, g)
    mn = fma(mu, m, f32(a * gd))
    step = fma(mu, mn, f32(a * gd)) if mode & ops.STEP_NESTEROV else mn
    new_w, new_m = torch.where(t["inside"], fma(-b, step, w), w), torch.where(t["inside"], mn, m)
    return {"params": new_w.float(), "momentum": new_m.float()}


@pytest.mark.parametrize("seed", [4, 5, 6])
@pytest.mark.parametrize("mode", [ops.STEP_LARS, ops.STEP_LARS | ops.STEP_NESTEROV, ops.STEP_LR_AFTER_MOMENTUM])
def test_the_bound_admits_the_gpus_fma_contraction(mode, seed):
    # on the CPU: the GPU's arithmetic emulated in float32 on the GPU test's own inputs lies within
    # the bound assert_step_close states, against the torch path run here
    x, want = step_inputs("cpu", seed), step_inputs("cpu", seed)
    ops.fused_step(**want, mode=mode, eps=1e-9, path="torch")
    assert_step_close(fma_step(x, mode, 1e-9), want, x, mode, 1e-9)


@requires_rtc
@pytest.mark.parametrize("mode", [ops.STEP_LARS, ops.STEP_LARS | ops.STEP_NESTEROV, ops.STEP_LR_AFTER_MOMENTUM])
def test_rtc_fused_step_equals_torch_and_native(mode):
    x = step_inputs("cpu")
    a, b = step_inputs("cuda"), step_inputs("cuda")
    assert ops.fused_step(**a, mode=mode, eps=1e-9, path="rtc") == "rtc"
    ops.fused_step(**b, mode=mode, eps=1e-9, path="torch")
    assert_step_close(a, b, x, mode, 1e-9)
    if ops.has_kernel("fused_step", "cuda"):
        c = step_inputs("cuda")
        assert ops.fused_step(**c, mode=mode, eps=1e-9) == "cuda"
        torch.testing.assert_close(a["params"], c["params"], rtol=2e-7, atol=1e-8)


@requires_rtc
def test_rtc_runs_on_the_current_stream():
    offsets = offsets_of([4097] * 64)
    chunks = ops.segment_chunks(offsets, "cuda")
    flat = torch.zeros(int(offsets[-1]), device="cuda")
    expected = torch.randn(flat.numel(), generator=torch.Generator().manual_seed(8)).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(10_000_000)  # a long kernel ahead of the copy on the same stream
        flat.copy_(expected)
        out = ops.segment_sq_norms(flat, chunks, path="rtc")
    torch.cuda.current_stream().wait_stream(side)
    ref = expected.view(64, 4097).double().square().sum(1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0)
