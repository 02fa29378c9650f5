"""The timing call every pytest-benchmark file in bench/ shares.

    stats = time_kernel(benchmark, device, "lars-cpu", opt.step, nbytes, rounds=15)

One warm-up call (allocator, page faults, lazy loads), then pytest-benchmark times `fn`
followed by a device sync (a CUDA kernel is timed to its end, not to its launch): `rounds`
given, that many rounds of one call (`benchmark.pedantic`); else pytest-benchmark's own
calibration. Records the bytes under `bytes_key`, the thread count, and the GB/s over the
`stat` ("mean" or "median") in the JSON's extra_info. Returns the stats (mean, median, ...),
or None under --benchmark-disable.
"""

from __future__ import annotations

import torch


def time_kernel(
    benchmark,
    device: torch.device,
    group: str,
    fn,
    nbytes: int,
    *,
    bytes_key: str = "bytes_moved",
    rounds: int | None = None,
    warmup_rounds: int = 1,
    stat: str = "mean",
):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call():
        out = fn()
        sync()
        return out

    call()
    benchmark.group = group
    benchmark.extra_info[bytes_key] = nbytes
    benchmark.extra_info["threads"] = torch.get_num_threads()
    if rounds is None:
        benchmark(call)
    else:
        benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    if benchmark.stats is None:
        return None
    stats = benchmark.stats.stats
    benchmark.extra_info["GB/s"] = round(nbytes / getattr(stats, stat) / 1e9, 2)
    return stats
