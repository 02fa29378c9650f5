"""fastres's kernels on one GPU, timed as kernels: device time per call from CUDA events.

    python bench/gpu_kernels.py --json kernels.json          # on a GPU (bench/gpu_suite.sh runs it)
    python bench/gpu_kernels.py --device cpu --small          # the same script on a CPU: a dry run

Every row is timed by bench/timing.py's `time_calls`: `--calls` back-to-back calls between two
CUDA events, the GPU held back by a spin kernel until the host has queued them all, so the
Python that queues a kernel does not count in its time; the host microseconds per call are
reported beside it. In the same run:

  segment_sq_norms   ResNet-50's 161 tensors (25.6M fp32, 102 MB read): fastres, torch's
                     _foreach_norm squared; peer ceiling: a device-to-device copy of the same bytes
  pack / unpack      one 25 MiB fp32 bucket to and from a bf16 wire (6 bytes per element moved),
                     unpack with the 40 segments' norms in the same pass; torch's one-pass
                     mul(out=) for the pack; ceiling: a copy moving 6 bytes per element
  optimizer step     ResNet-50's 161 tensors: fastres FusedLARS and FusedSGD (the flat layout),
                     torch.optim.SGD(fused=True), a foreach LARS (timm-style, plain PyTorch);
                     ceiling: a copy moving 5 x 102 MB (what a momentum-SGD step must move)
  run-time compiled  the same fastres kernels through fastres.kernels.rtc, where CuPy is installed

"GB/s" counts the bytes a kernel must move; "of copy" is that bandwidth as a fraction of the
copy's, measured in the same run; "x fused SGD" is the step's device time over
torch.optim.SGD(fused=True)'s. Results are checked against each other before anything is
timed. Prints a `FIGURES` line per row as soon as it is measured, and the ratios at the end
(bench/gpu_suite.sh puts them in its summary), and writes the rows measured so far with the
machine (GPU, clocks, driver, versions) to `--json` after every row: a run stopped at its cap
keeps what it measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # timing.py, machine.py (this folder holds no fastres/)

import torch  # noqa: E402

from fastres.kernels import ops, rtc  # noqa: E402
from fastres.model import resnet50  # noqa: E402
from fastres.optim import FusedLARS, FusedSGD  # noqa: E402

from bench_lars import ETA, LR, MU, ForeachLARS, groups  # noqa: E402  (the same peer and groups)
from machine import describe, gpu_state  # noqa: E402
from timing import time_calls  # noqa: E402

SCALE = 0.125  # 1 / world size


@functools.cache
def _resnet50_tensors(small: bool) -> tuple:
    torch.manual_seed(0)
    model = resnet50(num_classes=10 if small else 1000)
    tensors = tuple(p.detach() for p in model.parameters())
    if small:  # the same 161 tensors, each cut to at most 4K elements
        tensors = tuple(t.reshape(-1)[:4096].reshape(-1, *([1] * (t.ndim - 1))).clone() for t in tensors)
    return tensors


def resnet50_params(device, small: bool):
    """ResNet-50's parameters, fresh ones at every call (the model is built once), with gradients:
    the same values at every call."""
    params = [torch.nn.Parameter(t.to(device, copy=True)) for t in _resnet50_tensors(small)]
    gen = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
    return params


def optimizer(kind: str, params):
    if kind.startswith("fastres FusedLARS"):
        backend = "rtc" if kind.endswith("run-time compiled") else "native"
        return FusedLARS(groups(params), lr=LR, momentum=MU, eta=ETA, lr_inside_momentum=False, backend=backend)
    if kind.startswith("fastres FusedSGD"):
        return FusedSGD(groups(params), lr=LR, momentum=MU, backend="native")
    if kind == "torch SGD fused=True":
        return torch.optim.SGD(groups(params), lr=LR, momentum=MU, fused=True)
    return ForeachLARS(params)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run")
    ap.add_argument("--calls", type=int, default=30, help="back-to-back calls between the events (default 30)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per row; the median is reported (default 5)")
    ap.add_argument("--small", action="store_true", help="small tensors (a quick dry run)")
    ap.add_argument("--json", help="write the rows and the machine here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_kernels: no CUDA GPU visible to torch (--device cpu runs the same script on the CPU)")
    if not ops.native_available():
        raise SystemExit(ops._missing_native_message())
    use_rtc = device.type == "cuda" and rtc.available()[0]
    rows: list[dict] = []
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    state_before = gpu_state() if device.type == "cuda" else {}
    t_start = time.perf_counter()

    def save() -> None:
        if not args.json:
            return
        out = {
            "bench": "bench/gpu_kernels.py",
            "command": "python " + " ".join(sys.argv),
            "rows": rows,
            "seconds": time.perf_counter() - t_start,
            "machine": describe(
                gpu=where,
                cuda=torch.version.cuda,
                capability=list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
                gpu_before=state_before,
                gpu_after=gpu_state() if device.type == "cuda" else {},
                fastres_build=ops.build_info(),
                rtc=rtc.status() if use_rtc else None,
                date=time.strftime("%Y-%m-%d"),
            ),
        }
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps(out, indent=1, default=str) + "\n")
        tmp.replace(args.json)  # whole, or not at all, if the run is stopped

    def row(group: str, name: str, fn, nbytes: int) -> dict:
        t = time_calls(fn, device, calls=args.calls, rounds=args.rounds)
        r = dict(group=group, name=name, device_us=t.device_s * 1e6, host_us=t.host_s * 1e6, bytes=nbytes,
                 GB_per_s=nbytes / t.device_s / 1e9, queue_filled=t.queue_filled)  # fmt: skip
        rows.append(r)
        filled = "" if t.queue_filled else " [host-bound: queue not filled]"
        print(f"FIGURES   {group}: {name} {r['device_us']:.1f} us (host {r['host_us']:.1f} us), "
              f"{r['GB_per_s']:.1f} GB/s{filled}", flush=True)  # fmt: skip
        save()
        return r

    clock = f"CUDA events around {args.calls} calls queued first" if device.type == "cuda" else "the host clock"
    print(f"FIGURES kernel timings on {where} (time per call, {clock}):", flush=True)
    # ------------------------------------------------------------------ segment_sq_norms
    params = resnet50_params(device, args.small)
    sizes = [p.numel() for p in params]
    offsets = torch.tensor([0, *sizes], dtype=torch.int64).cumsum(0)
    flat = torch.randn(int(offsets[-1]), generator=torch.Generator().manual_seed(1)).to(device)
    chunks = ops.segment_chunks(offsets, device)
    views = [flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    torch.testing.assert_close(ops.segment_sq_norms(flat, chunks), torch.stack(torch._foreach_norm(views, 2)).square())
    nb = flat.numel() * 4
    half = flat[: flat.numel() // 2]
    copy_dst = torch.empty_like(half)
    row("segment_sq_norms", "ceiling: copy of the same bytes", lambda: copy_dst.copy_(half), nb)
    row("segment_sq_norms", "fastres", lambda: ops.segment_sq_norms(flat, chunks), nb)
    row("segment_sq_norms", "torch _foreach_norm ** 2", lambda: torch.stack(torch._foreach_norm(views, 2)).square(), nb)
    if use_rtc:
        rtc_norms = lambda: ops.segment_sq_norms(flat, chunks, path="rtc")
        row("segment_sq_norms", "fastres, run-time compiled", rtc_norms, nb)

    # ------------------------------------------------------------------ wire pack / unpack
    n = (2**16 if args.small else 25 * 2**20 // 4) // 4 * 4
    src = (torch.randn(n, generator=torch.Generator().manual_seed(2)) * 1e-3).to(device)
    wire = torch.empty(n, dtype=torch.bfloat16, device=device)
    back = torch.empty(n, device=device)
    bucket_chunks = ops.segment_chunks(torch.linspace(0, n, 41).to(torch.int64), device)
    ops.pack_wire(src, wire, SCALE)
    assert torch.equal(wire.view(torch.int16), (src * SCALE).to(torch.bfloat16).view(torch.int16))
    nb = n * 6
    copy_src = torch.empty(n * 6 // 8, device=device)
    copy_dst = torch.empty_like(copy_src)
    row("wire", "ceiling: copy of the same bytes", lambda: copy_dst.copy_(copy_src), nb)
    row("wire", "fastres pack bf16", lambda: ops.pack_wire(src, wire, SCALE), nb)
    row("wire", "torch pack bf16, mul(out=)", lambda: torch.mul(src, SCALE, out=wire), nb)
    row("wire", "fastres unpack bf16 + norms", lambda: ops.unpack_wire(wire, back, 1 / SCALE, chunks=bucket_chunks), nb)
    row("wire", "torch unpack bf16, 2 passes", lambda: back.copy_(wire).mul_(1 / SCALE), nb)
    if use_rtc:
        row("wire", "fastres pack bf16, run-time compiled", lambda: ops.pack_wire(src, wire, SCALE, path="rtc"), nb)
        row(
            "wire",
            "fastres unpack bf16 + norms, run-time compiled",
            lambda: ops.unpack_wire(wire, back, 1 / SCALE, chunks=bucket_chunks, path="rtc"),
            nb,
        )

    # ------------------------------------------------------------------ optimizer step
    kinds = ["fastres FusedLARS", "fastres FusedSGD", "torch SGD fused=True", "foreach LARS (timm-style)"]
    kinds += ["fastres FusedLARS, run-time compiled"] if use_rtc else []
    after = {}
    for kind in kinds:  # check first: two steps each agree
        ps = resnet50_params(device, args.small)
        opt = optimizer(kind, ps)
        opt.step()
        opt.step()
        after[kind] = torch.cat([p.detach().reshape(-1) for p in ps])
    torch.testing.assert_close(after["fastres FusedLARS"], after["foreach LARS (timm-style)"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after["fastres FusedSGD"], after["torch SGD fused=True"], rtol=1e-5, atol=1e-6)
    numel = sum(sizes)
    big = torch.empty(5 * numel // 2, device=device)
    big_dst = torch.empty_like(big)
    row("optimizer step", "ceiling: copy of 5 x the parameters", lambda: big_dst.copy_(big), 5 * numel * 4)
    for kind in kinds:
        opt = optimizer(kind, resnet50_params(device, args.small))
        moves = 6 if "FusedLARS" in kind else 7 if "LARS" in kind else 5
        row("optimizer step", kind, opt.step, moves * numel * 4)

    # ------------------------------------------------------------------ ratios, figures
    for group in ("segment_sq_norms", "wire", "optimizer step"):
        mine = [r for r in rows if r["group"] == group]
        ceiling = next(r for r in mine if r["name"].startswith("ceiling"))
        sgd = next((r for r in mine if r["name"] == "torch SGD fused=True"), None)
        for r in mine:
            r["of_copy"] = r["GB_per_s"] / ceiling["GB_per_s"]
            if sgd:
                r["x_fused_sgd"] = r["device_us"] / sgd["device_us"]
    print(f"FIGURES kernel ratios on {where} (from the times above):")
    for r in rows:
        if r["name"].startswith("ceiling"):
            continue
        line = f"{r['group']}: {r['name']} {r['of_copy']:.0%} of copy"
        if "x_fused_sgd" in r:
            line += f", {r['x_fused_sgd']:.2f}x fused SGD's time"
        print(f"FIGURES   {line}")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
