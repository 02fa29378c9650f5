"""Every fastres CUDA kernel once, on small unaligned inputs: what compute-sanitizer runs.

    compute-sanitizer --tool memcheck --kernel-name kns=fastres python bench/gpu_kernels_once.py
    python bench/gpu_kernels_once.py --device cpu      # the same calls on the CPU kernels (a dry run)
    python bench/gpu_kernels_once.py --device cpu --sim   # and on the CUDA kernels, executed on the CPU

bench/gpu_suite.sh runs it under memcheck, racecheck and synccheck: a test suite would take
minutes under the sanitizers, this takes seconds. Each op runs on inputs whose starts and
lengths are not multiples of 4 (the kernels' vector loads have a scalar head and tail) and with
segments that span several chunks, empty ones and one-element ones; every result is checked
against the CPU kernels (bit for bit where the kernels promise it) so that a call that silently
did nothing fails here too. Kernels, by file (csrc/):
  segment_sq_norms_cuda.cu  chunk_sq_sums_kernel, segment_partials_sum_kernel
  lars_cuda.cu              chunk_norms_kernel, fused_update_kernel<false> (LARS, momentum SGD,
                            the RMSprop warm-up, cached weight norms, a found-inf step) and
                            fused_update_kernel<true> (Nesterov)
  wire_cuda.cu              pack_kernel, unpack_kernel, unpack_chunks_kernel for fp32, fp16 and
                            bf16 wires, and its segment_partials_sum_kernel
`--rtc` runs them once more through the run-time compiled path (fastres.kernels.rtc; needs CuPy);
`--device cpu --sim` once more through the sim (fastres.kernels.sim: the same CUDA kernels on the
CPU, warps in a random order, UBSan's checks), the CPU stand-in for the sanitizers.
Prints one line per op and `ALL KERNELS RAN` at the end; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import sys

import torch

from fastres.kernels import ops, rtc

LENGTHS = [0, 1, 3, 5, 4095, 4097, 9001, 0, 7]


def offsets_of(lengths, start: int) -> torch.Tensor:
    return torch.tensor([start, *lengths], dtype=torch.int64).cumsum(0)


def step_inputs(device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    offsets = offsets_of([5, 4097, 0, 300, 1, 9001], start=1)
    n = int(offsets[-1]) + 2
    groups = torch.tensor([0, 1, 0, 1, 1, 0], dtype=torch.int32)
    flags = torch.tensor([3, 0, 3, 2, 1, 3], dtype=torch.int32)
    hp = torch.zeros(2 * ops.HPARAM_STRIDE)
    for k, (lr, wd) in enumerate(((0.1, 1e-3), (0.05, 0.0))):
        hp[k * ops.HPARAM_STRIDE : k * ops.HPARAM_STRIDE + 8] = torch.tensor([lr, wd, 0.9, 0.01, 0.5, 0.02, 0.99, 1e-8])
    t = lambda: torch.randn(n, generator=g).to(device)
    return dict(
        params=t(),
        grads=t(),
        momentum=t(),
        chunks=ops.segment_chunks(offsets, device),
        seg_group=groups.to(device),
        seg_flags=flags.to(device),
        hparams=hp.to(device),
    )


def run(device: torch.device, path: str) -> list[str]:
    """Every op once on `device` through `path`, checked against the CPU; the mismatches."""
    bad = []

    def check(what: str, got: torch.Tensor, want: torch.Tensor, exact: bool) -> None:
        got = got.cpu()
        ok = torch.equal(got, want) if exact else torch.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        print(f"  {path:6s} {what:44s} {'ok' if ok else 'MISMATCH'}", flush=True)
        if not ok:
            bad.append(f"{path} {what}")

    # segment_sq_norms: both stages
    offsets = offsets_of(LENGTHS, start=3)
    flat_cpu = torch.randn(int(offsets[-1]) + 5, generator=torch.Generator().manual_seed(1))
    want = ops.segment_sq_norms(flat_cpu, offsets)
    got = ops.segment_sq_norms(flat_cpu.to(device), ops.segment_chunks(offsets, device), path=path)
    check("segment_sq_norms", got, want, exact=False)

    # fused step: every mode the trainer can ask for
    modes = {
        "LARS": ops.STEP_LARS,
        "LARS, Nesterov": ops.STEP_LARS | ops.STEP_NESTEROV,
        "LARS, lr after momentum": ops.STEP_LARS | ops.STEP_LR_AFTER_MOMENTUM,
        "momentum SGD": 0,
        "momentum SGD, Nesterov": ops.STEP_NESTEROV,
        "SGD + RMSprop warm-up": ops.STEP_RMSPROP,
    }
    for name, mode in modes.items():
        ref, dev = step_inputs("cpu"), step_inputs(device)
        extra_cpu, extra_dev = {}, {}
        if mode & ops.STEP_RMSPROP:
            extra_cpu["sq_avg"] = torch.rand(ref["params"].numel())
            extra_dev["sq_avg"] = extra_cpu["sq_avg"].clone().to(device)
        ops.fused_step(**ref, mode=mode, eps=1e-9, **extra_cpu)
        ops.fused_step(**dev, mode=mode, eps=1e-9, **extra_dev, path=path)
        check(f"fused_step {name}", dev["params"], ref["params"], exact=False)
    # cached weight norms (two steps, the second reusing the first's sum of w^2) and a skipped step
    ref, dev = step_inputs("cpu", 2), step_inputs(device, 2)
    for inputs, where in ((ref, "cpu"), (dev, device)):
        C = inputs["chunks"].num_chunks
        parts = [torch.empty(2 * C, device=where), torch.empty(2 * C, device=where)]
        p = {"path": path} if inputs is dev else {}
        ops.fused_step(**inputs, mode=ops.STEP_LARS, partials=parts[0], wsq_out=parts[1][:C], **p)
        ops.fused_step(**inputs, mode=ops.STEP_LARS | ops.STEP_W_NORM_CACHED, partials=parts[1], wsq_out=parts[0][:C],
                       **p)  # fmt: skip
        inf = torch.ones((), device=where)
        ops.fused_step(**inputs, mode=ops.STEP_LARS, found_inf=inf, partials=parts[0], wsq_out=parts[1][:C], **p)
    check("fused_step LARS, cached norms, found-inf", dev["params"], ref["params"], exact=False)

    # wire: pack and unpack for every wire dtype, unaligned, with and without the norms
    n = 20_003
    src_cpu = (torch.randn(n + 1, generator=torch.Generator().manual_seed(3)) * 100)[1:]
    chunk_offsets = offsets_of([3, 4097, 0, 9000, 9], start=2)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype)[6:]
        wire_cpu = torch.empty(n, dtype=dtype)
        ops.pack_wire(src_cpu, wire_cpu, 0.125)
        wire_dev = torch.empty(n + 1, dtype=dtype, device=device)[1:]
        ops.pack_wire(src_cpu.to(device), wire_dev, 0.125, path=path)
        check(f"pack_wire {name}", wire_dev.view(torch.uint8), wire_cpu.view(torch.uint8), exact=True)
        back_cpu = torch.empty(n)
        ops.unpack_wire(wire_cpu, back_cpu, 8.0)
        back_dev = torch.empty(n, device=device)
        ops.unpack_wire(wire_dev, back_dev, 8.0, path=path)
        check(f"unpack_wire {name}", back_dev, back_cpu, exact=True)
        dev_chunks = ops.segment_chunks(chunk_offsets, device)
        norms_dev = ops.unpack_wire(wire_dev, back_dev, 8.0, chunks=dev_chunks, path=path)
        check(f"unpack_wire {name} + norms", back_dev, back_cpu, exact=True)
        check(f"  its norms {name}", norms_dev, ops.segment_sq_norms(back_cpu, chunk_offsets), exact=False)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run")
    ap.add_argument("--rtc", action="store_true", help="also the run-time compiled kernels (needs CuPy)")
    ap.add_argument("--sim", action="store_true", help="with --device cpu: also the CUDA kernels on the CPU (sim)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_kernels_once: no CUDA GPU visible to torch")
    if not ops.native_available():
        raise SystemExit(ops._missing_native_message())
    if args.sim and device.type != "cpu":
        raise SystemExit("gpu_kernels_once: --sim runs the CUDA kernels on the CPU: use it with --device cpu")
    bad = run(device, "auto" if device.type == "cpu" else "native")
    if args.sim:
        bad += run(device, "sim")
    if args.rtc:
        ok, why = rtc.available()
        if not ok:
            raise SystemExit(f"gpu_kernels_once: --rtc: {why}")
        bad += run(device, "rtc")
    if device.type == "cuda":
        torch.cuda.synchronize()
    if bad:
        print(f"MISMATCH in {len(bad)} ops: {', '.join(bad)}")
        return 1
    print("ALL KERNELS RAN")
    return 0


if __name__ == "__main__":
    sys.exit(main())
