"""fastres's CUDA kernels executed on the CPU (fastres.kernels.sim), in CI, without a GPU.

The very csrc/*_cuda.cu sources, compiled as C++ with csrc/sim/cuda_sim.h in front, run the
launches that fastres.kernels.launches describes (what the rtc path hands to CuPy): every op
against its CPU kernel (csrc/*_cpu.cpp) and a float64 reference, on ResNet-50's 161-tensor
layout and on odd sizes and unaligned starts, under several schedules of the threads. Three
negative controls show that the sim can fail, each for the reason it names: a copy of
block_sum_all without one of its __syncthreads gives wrong sums; a head of the wrong length makes
a float4 load misaligned, which UBSan reports; a shuffle with a partial mask aborts the launch.
The descriptions of fastres.kernels.launches are checked against the kernels' signatures in the
sources and fastres._C's. What the sim cannot show is written in fastres/kernels/sim.py.
"""

from __future__ import annotations

import concurrent.futures
import platform
import re

import pytest
import torch

from fastres.kernels import launches, ops, rtc, sim
from fastres.kernels.flat import FlatParams
from fastres.model import resnet50

U = 2.0**-24  # unit roundoff of fp32
LARS, NESTEROV, AFTER, CACHED, RMSPROP = (
    ops.STEP_LARS,
    ops.STEP_NESTEROV,
    ops.STEP_LR_AFTER_MOMENTUM,
    ops.STEP_W_NORM_CACHED,
    ops.STEP_RMSPROP,
)


@pytest.fixture(scope="module", autouse=True)
def built():
    """The three kernel files' modules, built in parallel once (and cached on disk)."""
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)
    st = sim.status()
    if not st["available"]:
        if platform.system() == "Linux":
            pytest.fail(f"fastres.kernels.sim: {st['reason']}", pytrace=False)
        pytest.skip(st["reason"])
    built = sim.modules(rtc.KERNELS)
    assert all(m.ubsan for m in built.values()) or platform.system() != "Linux", "the sim has UBSan's checks here"
    return built


def offsets_of(lengths, start: int = 0) -> torch.Tensor:
    return torch.tensor([start, *lengths], dtype=torch.int64).cumsum(0)


def float_bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32) if t.dtype == torch.float32 else t.contiguous().view(torch.int16)


def same_bits_or_both_nan(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, but for NaNs' payloads: a sum that meets two NaNs keeps the payload of the operand
    the compiler put first."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(float_bits(a[~nan]), float_bits(b[~nan]))


def norm_depth(x: dict) -> torch.Tensor:
    """Per element of x's buffers: the depths of the CPU kernel's and the GPU's sums of squares of its
    segment (csrc/segment_sq_norms.h: 133 + L/4096 and 38 + L/2^20 additions): how many roundings
    apart the two LARS trust ratios of the segment may be."""
    offsets = x["chunks"].offsets
    lengths = offsets[1:] - offsets[:-1]
    depth = torch.zeros(x["params"].numel())
    depth[int(offsets[0]) : int(offsets[-1])] = (171 + lengths / 4096 + lengths / 2**20).repeat_interleave(lengths)
    return depth


def assert_roundings_apart(got, want, before, after, k: int, depth: torch.Tensor | float = 0.0) -> None:
    """got and want, two fp32 results of one step, lie at most k roundings of its operands apart, and
    `depth` roundings of its update (a LARS update carries its trust ratio's error):
    |got - want| <= k U |before| + (k + depth) U |after - before|, `after` a result. (A result near
    0 may cancel: its own ulps say nothing of the arithmetic that made it.)"""
    update = (after.float() - before).abs_()
    bound = before.abs().mul_(k * U).add_(update.mul_((depth + k) * U))
    excess = (got - want).abs_().sub_(bound)
    assert float(excess.max()) <= 0, f"{int((excess > 0).sum())} elements beyond the bound"


ODD = [0, 1, 5, 4097, 70_001, 3, 4096]  # empty, one element, a head and tail only, chunks and remainders


# ----------------------------------------------------------------------------- the descriptions

_GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)")
_C_TYPES = {"int64_t": "i64", "int": "i32", "float": "f32"}


def kernel_signatures() -> dict:
    """{kernel: ((name, C type), ...)} of every __global__ function of the sources."""
    out = {}
    for file in rtc.KERNELS:
        for kernel, params in _GLOBAL.findall(rtc.kernel_source(file)):
            sig = []
            for decl in params.split(","):
                decl = " ".join(decl.replace("__restrict__", "").split())
                name = re.search(r"(\w+)$", decl).group(1)
                ctype = decl[: -len(name)].strip()
                sig.append((name, "p" if ctype.endswith("*") else _C_TYPES[ctype.removeprefix("const ")]))
            out[kernel] = tuple(sig)
    return out


def test_kernel_params_are_the_sources_signatures():
    sources = kernel_signatures()
    described = {k: tuple((n, launches.ARG_TYPES[n]) for n in names) for k, names in launches.KERNEL_PARAMS.items()}
    assert described == sources


def test_native_params_are_the_modules_signatures():
    # pybind11 writes each entry's signature first in its docstring: "fused_step_cpu(params: int, ...)"
    extra = {"cpu": ("num_threads",), "cuda": ("device", "stream")}
    for op, names in launches.NATIVE_PARAMS.items():
        for kind in ("cpu", "cuda"):
            entry = getattr(ops._C, f"{op}_{kind}", None)
            if entry is None:
                assert kind == "cuda" and not ops.build_info()["cuda"], f"{op}_{kind} missing"
                continue
            params = re.match(r"\w+\((.*)\) ->", entry.__doc__.splitlines()[0]).group(1).split(", ")
            # "int" / "float", or (pybind11 3) "typing.SupportsInt | ..." / "typing.SupportsFloat | ..."
            types = ["float" if re.match(r"float|typing.SupportsFloat", p.split(": ")[1]) else "int" for p in params]
            tail = ("coefs",) if op == "fused_step" and kind == "cpu" else ()  # ops.fused_step's cpu_extra
            assert len(types) == len(names) + len(tail) + len(extra[kind]), (op, kind, params)
            want = ["float" if launches.ARG_TYPES[n] == "f32" else "int" for n in names]
            assert types[: len(names)] == want, (op, kind, params)


def test_a_shared_variable_the_sim_cannot_refill_is_refused():
    # GCC drops the section of a static inside a template: such a __shared__ would keep its value
    # from block to block, so the sim refuses to build it rather than run it unrefilled
    source = (
        rtc.inlined("common.h")
        + """
namespace fastres { namespace rtc {
template <int D> __global__ void k(float* out) {
  __shared__ float s[32];
  s[threadIdx.x & 31] = D;
  __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) & 31];
}
} }
"""
    )
    with pytest.raises(sim.SimError, match=r"__shared__ .*k<1>.*::s is not in the per-block section"):
        sim.build("template-shared", source, ("fastres::rtc::k<1>",))


def test_the_sim_sources_are_installed():
    # an install without a source tree (fastres/csrc in the wheel) builds the sim from these
    cmake = (rtc.source_dir().parent / "CMakeLists.txt").read_text()
    block = re.search(r"install\(FILES([^)]*)DESTINATION fastres/csrc/sim\)", cmake)
    assert block, "CMakeLists.txt installs the sim's sources into fastres/csrc/sim"
    installed = {f.removeprefix("csrc/") for f in block.group(1).split()}
    assert installed == {f"sim/{p.name}" for p in (rtc.source_dir() / "sim").iterdir()}


def test_the_launch_lists_mirror_the_host_launchers():
    # what csrc/*_cuda.cu launches, for a small call of each op (grids: csrc/wire_cuda.cu grid_for)
    step = dict.fromkeys(launches.NATIVE_PARAMS["fused_step"], 8)
    lars = launches.kernel_launches(launches.Call.of("fused_step", **{**step, "C": 3, "mode": LARS | NESTEROV}))
    assert [(x.kernel, x.grid, x.block) for x in lars] == [
        ("chunk_norms_kernel", 3, 256),
        ("fused_update_kernel<true>", 3, 256),
    ]
    sgd = launches.kernel_launches(launches.Call.of("fused_step", **{**step, "C": 3, "mode": 0}))
    assert [x.kernel for x in sgd] == ["fused_update_kernel<false>"]
    assert launches.kernel_launches(launches.Call.of("fused_step", **{**step, "C": 0, "mode": LARS})) == []
    pack = launches.Call.of("wire_pack", src=1, dst=2, dst_dtype=2, n=70_001, scale=0.5)
    [one] = launches.kernel_launches(pack)
    assert (one.kernel, one.grid, one.args[2:]) == ("pack_kernel<2>", 69, (("n", "i64", 70_001), ("scale", "f32", 0.5)))
    big = launches.Call.of("wire_pack", src=1, dst=2, dst_dtype=0, n=1 << 30, scale=1.0)
    assert launches.kernel_launches(big)[0].grid == 65535
    norms = dict(table=7, S=2, C=3, lo=5, hi=9000, partials=8, out=9)
    unpack = launches.Call.of("wire_unpack", src=1, src_dtype=1, dst=2, n=9003, scale=2.0, **norms)
    assert [(x.kernel, x.grid) for x in launches.kernel_launches(unpack)] == [
        ("unpack_kernel<1>", 1),
        ("unpack_kernel<1>", 1),
        ("unpack_chunks_kernel<1>", 3),
        ("segment_partials_sum_kernel", 2),
    ]
    gaps = [{n: v for n, _, v in x.args} for x in launches.kernel_launches(unpack)[:2]]
    assert [(gap["begin"], gap["end"]) for gap in gaps] == [(0, 5), (9000, 9003)]
    with pytest.raises(ValueError, match=r"chunks: too many for one grid"):
        launches.kernel_launches(launches.Call.of("fused_step", **{**step, "C": 1 << 31, "mode": 0}))


# ----------------------------------------------------------------------------- the ops, on the sim


@pytest.mark.parametrize("shift", [0, 1, 3])
def test_segment_norms_equal_the_cpu_kernel_and_float64(shift):
    offsets = offsets_of(ODD, start=shift)
    flat = torch.randn(int(offsets[-1]) + 2, generator=torch.Generator().manual_seed(shift))
    chunks = ops.segment_chunks(offsets)
    got = ops.segment_sq_norms(flat, chunks, path="sim")
    ref = torch.stack([flat[a:b].double().square().sum() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())])
    depth = 40 + torch.ceil((offsets[1:] - offsets[:-1]).double() / ops.SEGMENT_CHUNK)  # csrc/segment_sq_norms.h
    assert bool(((got.double() - ref).abs() <= depth * U * ref).all())
    cpu = ops.segment_sq_norms(flat, chunks)
    assert bool(((got.double() - cpu.double()).abs() <= (depth + 140) * U * ref).all())
    again = ops.segment_sq_norms(flat, chunks, path="sim")  # another schedule of the threads: the same bits
    assert torch.equal(float_bits(again), float_bits(got))


def step_inputs(lengths=(5, 4097, 0, 300, 1, 70_001, 3), start=1, seed=0, groups=2):
    """A fused step's operands on an odd layout: two groups, every mix of the SEG_* flags."""
    g = torch.Generator().manual_seed(seed)
    offsets = offsets_of(lengths, start)
    n, S = int(offsets[-1]) + 2, len(lengths)
    hp = torch.zeros(groups * ops.HPARAM_STRIDE)
    for k in range(groups):  # lr, wd, mu, eta, blend, rate, beta, eps
        row = [0.1 / (k + 1), 1e-3 * (k + 1), 0.9, 0.01 * (k + 1), 0.3, 0.02, 0.99, 1e-8]
        hp[k * ops.HPARAM_STRIDE : (k + 1) * ops.HPARAM_STRIDE] = torch.tensor(row)
    return dict(
        params=torch.randn(n, generator=g),
        grads=torch.randn(n, generator=g) * 0.1,
        momentum=torch.randn(n, generator=g) * 0.01,
        chunks=ops.segment_chunks(offsets),
        seg_group=torch.arange(S, dtype=torch.int32) % groups,
        seg_flags=torch.tensor([(3, 0, 1, 2)[s % 4] for s in range(S)], dtype=torch.int32),
        hparams=hp,
    )


def reference_segment(x: dict, s: int, mode: int, eps: float, sq_avg: torch.Tensor | None = None):
    """Segment s of csrc/lars.h's step in float64 (docs/design.md, decision 5): its new w, m, v."""
    a, b = x["chunks"].offsets[s : s + 2].tolist()
    w, g, m = (x[k][a:b].double() for k in ("params", "grads", "momentum"))
    lr, wd, mu, eta, blend, rate, beta, rms_eps = (
        x["hparams"].double().view(-1, ops.HPARAM_STRIDE)[int(x["seg_group"][s])].tolist()
    )
    flags = int(x["seg_flags"][s])
    wd = wd if flags & ops.SEG_DECAY else 0.0
    trust = 1.0
    if mode & LARS and flags & ops.SEG_ADAPT:
        wn, gn = w.norm().item(), g.norm().item()
        trust = eta * wn / (gn + wd * wn + eps) if wn > 0 and gn > 0 else 1.0
    fa, fb = (trust, lr) if mode & AFTER else (lr * trust, 1.0)
    gd = g + wd * w
    c, v = fa, None
    if mode & RMSPROP:
        v = beta * sq_avg[a:b].double() + (1 - beta) * gd * gd
        r = (rate / lr if lr > 0 else 0.0) if mode & AFTER else rate
        c = (1 - blend) * fa + blend * r / (v.sqrt() + rms_eps)
    m = mu * m + c * gd
    return w - fb * (c * gd + mu * m if mode & NESTEROV else m), m, v


def reference_step(x: dict, mode: int, eps: float, sq_avg: torch.Tensor | None = None):
    """The whole step in float64: new w, m, v (elements outside the segments as they were)."""
    w, m = x["params"].double(), x["momentum"].double()
    v = None if sq_avg is None else sq_avg.double()
    offsets = x["chunks"].offsets.tolist()
    for s in range(len(offsets) - 1):
        a, b = offsets[s], offsets[s + 1]
        w[a:b], m[a:b], vs = reference_segment(x, s, mode, eps, sq_avg)
        if vs is not None:
            v[a:b] = vs
    return w, m, v


MODES = {
    "momentum SGD": 0,
    "Nesterov": NESTEROV,
    "LARS": LARS,
    "LARS, Nesterov": LARS | NESTEROV,
    "LARS, lr after the momentum": LARS | AFTER,
    "RMSprop warm-up": RMSPROP,
    "RMSprop warm-up, LARS, lr after": RMSPROP | LARS | AFTER,
}


@pytest.mark.parametrize("name", list(MODES))
def test_fused_step_equals_the_cpu_kernel_and_float64(name):
    mode = MODES[name]
    x, y = step_inputs(seed=1), step_inputs(seed=1)
    extra = {}
    if mode & RMSPROP:
        extra = {"sq_avg": torch.rand(x["params"].numel(), generator=torch.Generator().manual_seed(2)) * 1e-2}
    sq_avg = {k: v.clone() for k, v in extra.items()}
    before = {k: x[k].clone() for k in ("params", "momentum")}
    w, m, v = reference_step(x, mode, 1e-9, extra.get("sq_avg"))
    assert ops.fused_step(**x, mode=mode, eps=1e-9, **extra, path="sim") == "sim"
    assert ops.fused_step(**y, mode=mode, eps=1e-9, **sq_avg) == "cpu"
    torch.testing.assert_close(x["params"].double(), w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x["momentum"].double(), m, rtol=1e-5, atol=1e-6)
    if mode & RMSPROP:
        torch.testing.assert_close(extra["sq_avg"].double(), v, rtol=1e-5, atol=1e-9)
        assert torch.equal(extra["sq_avg"], sq_avg["sq_avg"])  # no reduction in v: the CPU kernel's bits
    if mode & LARS:  # the trust ratios' norms are summed in other orders: a few roundings apart
        depth = norm_depth(x)
        assert_roundings_apart(x["params"], y["params"], before["params"], w, 4, depth)
        assert_roundings_apart(x["momentum"], y["momentum"], before["momentum"], m, 4, depth)
    else:  # the same lars.h arithmetic, one rounding per operation on both sides: the same bits
        assert torch.equal(float_bits(x["params"]), float_bits(y["params"]))
        assert torch.equal(float_bits(x["momentum"]), float_bits(y["momentum"]))


def test_momentum_correction_and_a_skipped_step():
    # momentum correction (Goyal et al. eq. (10)): mu * lr_t / lr_t-1 > 1 reaches the kernel as mu
    x, y = step_inputs(seed=3), step_inputs(seed=3)
    for t in (x, y):
        t["hparams"].view(-1, ops.HPARAM_STRIDE)[:, 2] = 0.9 * 1.5
    w0 = x["params"].clone()
    w, m, _ = reference_step(x, LARS, 0.0)
    ops.fused_step(**x, mode=LARS, path="sim")
    ops.fused_step(**y, mode=LARS)
    torch.testing.assert_close(x["params"].double(), w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x["momentum"].double(), m, rtol=1e-5, atol=1e-6)
    assert_roundings_apart(x["params"], y["params"], w0, w, 4, norm_depth(x))
    # a found-inf step writes neither w nor m, and carries the cached weight norms over
    C = x["chunks"].num_chunks
    partials, wsq = torch.rand(2 * C), torch.full((C,), -1.0)
    before = {k: x[k].clone() for k in ("params", "momentum")}
    ops.fused_step(**x, mode=LARS | CACHED, partials=partials, wsq_out=wsq, found_inf=torch.ones(()), path="sim")
    assert all(torch.equal(x[k], before[k]) for k in before)
    adapt = (x["seg_flags"] & ops.SEG_ADAPT).bool()[x["chunks"].table[-C:]]
    assert torch.equal(wsq, torch.where(adapt, partials[:C], torch.zeros(C)))


def chunk_partials(flat: torch.Tensor, chunks) -> torch.Tensor:
    """Stage 1 of segment_sq_norms on the sim: sum of squares per chunk, as the GPU computes it."""
    C, S = chunks.num_chunks, chunks.num_segments
    partials, out = torch.empty(C), torch.empty(S)
    call = launches.Call.of("segment_sq_norms", flat=flat.data_ptr(), dtype=0, table=chunks.table.data_ptr(), S=S,
                            C=C, partials=partials.data_ptr(), out=out.data_ptr())  # fmt: skip
    sim.run(launches.kernel_launches(call))
    return partials


def test_cached_weight_norms_equal_a_fresh_pass_bit_for_bit():
    x, y = step_inputs(seed=4), step_inputs(seed=4)
    C = x["chunks"].num_chunks
    parts = [torch.empty(2 * C), torch.empty(2 * C)]
    ops.fused_step(**x, mode=LARS, eps=1e-9, partials=parts[0], wsq_out=parts[1][:C], path="sim")
    adapt = (x["seg_flags"] & ops.SEG_ADAPT).bool()[x["chunks"].table[-C:]]
    fresh = chunk_partials(x["params"], x["chunks"])
    assert torch.equal(float_bits(parts[1][:C][adapt]), float_bits(fresh[adapt]))
    assert not bool(parts[1][:C][~adapt].any())
    # the second step with the cached norms is the second step with fresh ones, bit for bit
    ops.fused_step(**y, mode=LARS, eps=1e-9, path="sim")
    torch.testing.assert_close(y["params"], x["params"], rtol=0, atol=0)
    ops.fused_step(**x, mode=LARS | CACHED, eps=1e-9, partials=parts[1], wsq_out=parts[0][:C], path="sim")
    ops.fused_step(**y, mode=LARS, eps=1e-9, path="sim")
    assert torch.equal(float_bits(x["params"]), float_bits(y["params"]))


def test_resnet50_layout():
    # ResNet-50's 161 tensors laid out by fastres.kernels.flat (6,334 chunks; BN and biases neither
    # adapted nor decayed): one LARS step, its weight norms cached for the next step
    with torch.device("meta"):
        shapes = [p.shape for p in resnet50().parameters()]
    layout = FlatParams([torch.nn.Parameter(torch.empty(shape)) for shape in shapes])
    g = torch.Generator().manual_seed(5)
    for p in layout.param_list:
        p.data.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim > 1 else 1.0))
    layout.grads.copy_(torch.randn(layout.numel, generator=g) * 1e-2)
    S, C = layout.num_segments, layout.chunks.num_chunks
    assert S == 161 and sum(layout.sizes) == 25_557_032 and C == 6334

    def operands():
        return dict(
            params=layout.params.clone(),
            grads=layout.grads,
            momentum=torch.zeros(layout.numel),
            chunks=layout.chunks,
            seg_group=torch.zeros(S, dtype=torch.int32),
            seg_flags=(layout.adapt.int() * ops.SEG_ADAPT + layout.decay.int() * ops.SEG_DECAY).int(),
            hparams=torch.tensor([0.1, 5e-5, 0.9, 0.001, 0, 0, 0, 0]),
        )

    x, y = operands(), operands()
    largest = max(range(S), key=lambda s: layout.sizes[s])  # 2.36M elements, 577 chunks
    check = {0: None, 1: None, largest: None, S - 2: None, S - 1: None}  # conv1, its BN, layer4's conv, fc
    for s in check:
        check[s] = reference_segment(x, s, LARS, 1e-9)
    wsq = torch.empty(C)
    ops.fused_step(**x, mode=LARS, eps=1e-9, wsq_out=wsq, path="sim")
    ops.fused_step(**y, mode=LARS, eps=1e-9)
    for s, (w, m, _) in check.items():
        a, b = layout.offsets[s : s + 2].tolist()
        torch.testing.assert_close(x["params"][a:b].double(), w, rtol=1e-5, atol=1e-7, msg=f"w of tensor {s}")
        torch.testing.assert_close(x["momentum"][a:b].double(), m, rtol=1e-5, atol=1e-9, msg=f"m of tensor {s}")
    assert_roundings_apart(x["params"], y["params"], layout.params, y["params"], 4, norm_depth(x))
    fresh = chunk_partials(x["params"], layout.chunks)
    adapt = layout.adapt[layout.chunks.table[-C:]]
    assert torch.equal(float_bits(wsq[adapt]), float_bits(fresh[adapt]))


def random_floats(n: int, seed: int) -> torch.Tensor:
    """n fp32 values of every kind: random bit patterns (NaNs, infinities, subnormals, zeros of
    both signs, huge and tiny), values around the fp16 and bf16 rounding and overflow points."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(-(2**31), 2**31, (n,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)
    near = torch.tensor([65504.0, 65519.99, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 3.39e38, 1e-40, -0.0, 0.0])
    normal = torch.randn(n, generator=g) * torch.logspace(-30, 30, n)
    return torch.cat([raw, near, normal])[:n]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_pack_equals_the_cpu_kernel_bit_for_bit(dtype):
    for n, shift in ((70_001, 1), (4097, 2), (5, 3), (1, 0)):
        src = random_floats(n + shift, seed=n)[shift:]  # src's head: 4 - shift elements before its 16-byte boundary
        wire = torch.empty(n + 1, dtype=dtype)[1:]  # the wire side unaligned too
        cpu = torch.empty(n, dtype=dtype)
        ops.pack_wire(src, wire, 0.125, path="sim")
        ops.pack_wire(src, cpu, 0.125)
        assert torch.equal(float_bits(wire), float_bits(cpu)), (n, shift)
        finite = torch.isfinite((src * 0.125).to(dtype))
        assert torch.equal(wire[finite], (src * 0.125).to(dtype)[finite])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_unpack_and_its_norms(dtype):
    n = 70_001 + 4097
    if dtype == torch.float32:
        src = random_floats(n, seed=7)
    else:  # every 16-bit pattern, then random ones
        every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
        src = torch.cat([every, torch.randn(n - every.numel(), generator=torch.Generator().manual_seed(8)).to(dtype)])
    offsets = offsets_of([3, 4097, 0, 50_000, 1, 5], start=2)
    chunks = ops.segment_chunks(offsets)
    dst, cpu = torch.empty(n), torch.empty(n)
    norms = ops.unpack_wire(src, dst, 0.5, chunks=chunks, path="sim")
    ops.unpack_wire(src, cpu, 0.5)
    assert torch.equal(float_bits(dst), float_bits(cpu))
    again = ops.segment_sq_norms(dst, chunks, path="sim")  # the same traversal and order: the same bits
    assert same_bits_or_both_nan(norms, again)
    plain = torch.empty(n)
    assert ops.unpack_wire(src, plain, 0.5, path="sim") is None
    assert torch.equal(float_bits(plain), float_bits(cpu))


def test_the_sim_checks_arguments_and_grids():
    flat = torch.randn(4097)
    chunks = ops.segment_chunks(offsets_of([4097]))
    partials, out = torch.empty(2), torch.empty(1)
    call = launches.Call.of("segment_sq_norms", flat=flat.data_ptr(), dtype=0, table=chunks.table.data_ptr(), S=1,
                            C=2, partials=partials.data_ptr(), out=out.data_ptr())  # fmt: skip
    first = launches.kernel_launches(call)[0]
    as_int = tuple((n, "i32" if n == "S" else t, v) for n, t, v in first.args)
    with pytest.raises(
        sim.SimError, match=r"chunk_sq_sums_kernel: parameter 2 \(S\) is int64_t in the source, the launch passes int"
    ):
        sim.run([launches.Launch(first.file, first.kernel, first.grid, first.block, as_int)])
    with pytest.raises(sim.SimError, match=r"the launch passes 4 arguments, the kernel takes 5"):
        sim.run([launches.Launch(first.file, first.kernel, 1, 256, first.args[:4])])
    with pytest.raises(sim.SimError, match=r"0 blocks \(a grid's x dimension takes 1 to 2\^31 - 1\)"):
        sim.run([launches.Launch(first.file, first.kernel, 0, 256, first.args)])
    with pytest.raises(sim.SimError, match=r"2048 threads per block \(1 to 1024\)"):
        sim.run([launches.Launch(first.file, first.kernel, 2, 2048, first.args)])


# ----------------------------------------------------------------------------- negative controls


def copy_of(file: str, old: str, new: str) -> str:
    """The text of `file` with `old` (which must occur exactly once) replaced by `new`."""
    text = rtc.kernel_source(file)
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {file}"
    return text.replace(old, new)


CONTROLS = {
    # block_sum_all without the barrier between the warps' writes of their sums and the reads
    "no barrier after the write": (
        "segment_sq_norms_cuda.cu",
        "  if (lane == 0) warp_sums[warp] = v;\n  __syncthreads();\n",
        "  if (lane == 0) warp_sums[warp] = v;\n",
    ),
    # ... without the one that keeps a second call from overwriting sums the first still reads
    "no barrier before the write": (
        "lars_cuda.cu",
        "  v = warp_sum(v);\n  __syncthreads();\n  if (lane == 0)",
        "  v = warp_sum(v);\n  if (lane == 0)",
    ),
    # a head one element too short: the first float4 of the body starts 4 bytes before a 16-byte boundary
    "misaligned head": (
        "segment_sq_norms_cuda.cu",
        "  return h < n ? h : n;\n}",
        "  return (h < n ? h : n) > 0 ? (h < n ? h : n) - 1 : 0;\n}",
    ),
    "partial shuffle mask": (
        "segment_sq_norms_cuda.cu",
        "__shfl_xor_sync(0xffffffffu, v, o)",
        "__shfl_xor_sync(0x0000ffffu, v, o)",
    ),
    # block_sum_all's second barrier reached by half of the block only
    "barrier in divergent code": (
        "lars_cuda.cu",
        "  if (lane == 0) warp_sums[warp] = v;\n  __syncthreads();\n",
        "  if (lane == 0) warp_sums[warp] = v;\n  if (threadIdx.x < 128) __syncthreads();\n",
    ),
}


@pytest.fixture(scope="module")
def controls():
    """The controls' modules, built in parallel: {name: Module}."""

    def build(name):
        file, old, new = CONTROLS[name]
        return sim.build(f"control-{file[:-3]}", copy_of(file, old, new), rtc.KERNELS[file])

    with concurrent.futures.ThreadPoolExecutor(len(CONTROLS)) as pool:
        return dict(zip(CONTROLS, pool.map(build, CONTROLS)))


def norms_launches(flat: torch.Tensor, offsets: torch.Tensor):
    """segment_sq_norms's launches on `flat`, its output, and its scratch (kept alive by the caller)."""
    chunks = ops.segment_chunks(offsets)
    S, C = chunks.num_segments, chunks.num_chunks
    out, partials = torch.empty(S), torch.empty(C)
    call = launches.Call.of("segment_sq_norms", flat=flat.data_ptr(), dtype=0, table=chunks.table.data_ptr(), S=S,
                            C=C, partials=partials.data_ptr(), out=out.data_ptr())  # fmt: skip
    return launches.kernel_launches(call), out, (chunks, partials)


def step_call(x: dict, mode: int, partials: torch.Tensor) -> launches.Call:
    """The fused step's call on `x`'s buffers (as ops.fused_step makes it)."""
    c = x["chunks"]
    return launches.Call.of("fused_step", w=x["params"].data_ptr(), g=x["grads"].data_ptr(),
                            m=x["momentum"].data_ptr(), table=c.table.data_ptr(), S=c.num_segments, C=c.num_chunks,
                            seg_group=x["seg_group"].data_ptr(), seg_flags=x["seg_flags"].data_ptr(),
                            hparams=x["hparams"].data_ptr(), found_inf=0, mode=mode, eps=1e-9,
                            partials=partials.data_ptr(), wsq_out=0, sq_avg=0)  # fmt: skip


def test_control_a_missing_barrier_gives_wrong_sums(controls):
    offsets = offsets_of([4097, 70_001, 9000], start=0)
    flat = torch.randn(int(offsets[-1]), generator=torch.Generator().manual_seed(9))
    want = ops.segment_sq_norms(flat, offsets)
    work, out, _keep = norms_launches(flat, offsets)
    sim.modules(["segment_sq_norms_cuda.cu"])["segment_sq_norms_cuda.cu"].run(work, seed=11)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=0)  # the kernel as written: right, whatever the seed
    controls["no barrier after the write"].run(work, seed=11)  # no SimError: a race, not a hang
    assert not torch.allclose(out, want, rtol=1e-3, equal_nan=False), "reads of the warps' sums before their writes"
    # the other barrier: two block_sum_all in a row (LARS's norms of w, then of g) without it
    x = step_inputs(lengths=(4097, 70_001), seed=12)
    x["seg_flags"].fill_(ops.SEG_ADAPT | ops.SEG_DECAY)  # whole chunks, whose warps all hold elements
    C = x["chunks"].num_chunks
    right, wrong = torch.empty(2 * C), torch.empty(2 * C)
    [norms, _] = launches.kernel_launches(step_call(x, LARS, right))
    sim.modules(["lars_cuda.cu"])["lars_cuda.cu"].run([norms], seed=13)
    [norms, _] = launches.kernel_launches(step_call(x, LARS, wrong))
    controls["no barrier before the write"].run([norms], seed=13)
    adapt = (x["seg_flags"] & ops.SEG_ADAPT).bool()[x["chunks"].table[-C:]]
    w_norms = lambda p: p[:C][adapt]  # noqa: E731
    assert not torch.allclose(w_norms(wrong), w_norms(right), rtol=1e-3), "a second call overwriting sums must show"


def test_control_b_misaligned_head_is_reported_by_ubsan(controls):
    offsets = offsets_of([4097], start=1)  # the segment starts 4 bytes past a 16-byte boundary
    flat = torch.randn(4098, generator=torch.Generator().manual_seed(14))
    work, out, _keep = norms_launches(flat, offsets)
    sim.modules(["segment_sq_norms_cuda.cu"])["segment_sq_norms_cuda.cu"].run(work)  # the kernel as written: fine
    # the float4 the body's lambda reads: "load of" (Clang), "reference binding to" (GCC: `*ptr` bound to its result)
    with pytest.raises(sim.SimError, match=r"UBSan: cuda_common.cuh:\d+:\d+: runtime error: (load of|reference "
                       r"binding to) misaligned address 0x[0-9a-f]+ for type 'const (struct )?float4', which requires "
                       r"16 byte alignment"):  # fmt: skip
        controls["misaligned head"].run(work)


def test_control_c_partial_shuffle_mask_aborts(controls):
    work, _, _keep = norms_launches(torch.randn(100), offsets_of([100]))
    with pytest.raises(sim.SimError, match=r"__shfl_xor_sync with the partial mask 0x0000ffff at cuda_common.cuh:\d+"):
        controls["partial shuffle mask"].run(work)


def test_a_barrier_not_reached_by_every_live_thread_aborts(controls):
    x = step_inputs(seed=15)
    work = launches.kernel_launches(step_call(x, LARS, torch.empty(2 * x["chunks"].num_chunks)))
    with pytest.raises(sim.SimError, match=r"__syncthreads not reached by every live thread of the block: "
                       r"threads 0-127 at __syncthreads cuda_common.cuh:(\d+) \(its barrier #2\); "
                       r"threads 128-255 at __syncthreads cuda_common.cuh:(?!\1)\d+ \(its barrier #2\)"):  # fmt: skip
        controls["barrier in divergent code"].run(work)
