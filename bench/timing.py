"""How bench/ times a kernel: device time from CUDA events with the host queue filled first.

    t = time_calls(lambda: ops.pack_wire(src, dst, 0.125), device, calls=50)
    t.device_s, t.host_s, t.queue_filled   # seconds per call on the GPU; host seconds per call to enqueue
    stats = time_kernel(benchmark, device, "lars-cuda", opt.step, nbytes, rounds=15)   # pytest-benchmark

On a GPU, timing one call plus torch.cuda.synchronize() with the host clock measures the launch
overhead of the Python that queues the kernels (a LARS step is ~150 us of GPU work behind loops
over 161 tensors), not the kernels. `time_calls` does what Triton's do_bench and NVIDIA's
nvbench do instead: it holds the GPU back with a spin kernel (`torch.cuda._sleep`) long enough
for the host to queue `calls` back-to-back calls behind it, records CUDA events around those
calls, and reports

  device_s      GPU seconds per call: elapsed time between the events over `calls` (the median
                over `rounds` rounds), which the host cannot inflate once the queue is full
  host_s        host seconds per call to queue them (measured while the GPU was held back)
  queue_filled  whether the host had queued every call before the GPU reached the first event
                (the start event had not completed when the host finished); a round where it
                had is run again with a twice longer sleep, up to three times, and then reported
                as not filled. Every round starts from the first sleep again, and after a round
                that did not fill even so, the later rounds run once each: a row whose calls
                hold more launches than the GPU's launch queue takes (a foreach LARS: ~130 a
                step) can never fill it, and must not sleep 8x longer, then 64x, round after round

On a CPU both figures are the host clock around `calls` back-to-back calls. `time_kernel` runs
it under pytest-benchmark (whose own table then shows the host time of whole rounds) and
returns the device-time statistics, recording device and host microseconds per call and GB/s
in the JSON's extra_info.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
import types

import torch

__all__ = ["Timing", "time_calls", "time_kernel"]


@dataclasses.dataclass
class Timing:
    device_s: float  # seconds per call on the device (median over rounds)
    host_s: float  # host seconds per call to queue the calls (median over rounds)
    calls: int
    queue_filled: bool  # every round had the host queue filled before the GPU started
    rounds: list  # device seconds per call, each round

    def describe(self) -> str:
        filled = "" if self.queue_filled else ", QUEUE NOT FILLED: host-bound"
        return f"{self.device_s * 1e6:9.1f} us device, {self.host_s * 1e6:7.1f} us host per call{filled}"


@functools.cache
def _cycles_per_second(index: int) -> float:
    """Clock cycles per second of torch.cuda._sleep's spin on GPU `index`, measured with events."""
    with torch.cuda.device(index):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        cycles = 20_000_000
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        return cycles / (start.elapsed_time(end) / 1e3)


def _cuda_round(fn, calls: int, sleep_s: float, index: int) -> tuple[float, float, bool]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    torch.cuda._sleep(int(sleep_s * _cycles_per_second(index)))
    start.record()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - t0
    end.record()
    filled = not start.query()  # the GPU was still asleep when the host had queued every call
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / calls, host / calls, filled


def time_calls(fn, device: torch.device | str, *, calls: int = 20, rounds: int = 5, warmup: int = 2) -> Timing:
    """Device and host seconds per call of `fn`, `calls` calls back to back, `rounds` times."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        dev = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            dev.append((time.perf_counter() - t0) / calls)
        return Timing(statistics.median(dev), statistics.median(dev), calls, True, dev)
    index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.cuda.device(index):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sleep_s = max(2.0 * (time.perf_counter() - t0), 1e-3)  # twice what queueing took, unsynchronised
        dev, host, all_filled = _rounds(lambda s: _cuda_round(fn, calls, s, index), rounds, sleep_s)
    return Timing(statistics.median(dev), statistics.median(host), calls, all_filled, dev)


def _rounds(run_round, rounds: int, sleep_s: float, attempts: int = 4) -> tuple[list, list, bool]:
    """`rounds` rounds of run_round(sleep) -> (device s, host s, filled), each retried with twice the
    sleep while the queue did not fill, at most `attempts` times, from `sleep_s` every round; once
    a round has not filled after all its attempts, the others run once each (the module docstring
    says why). Returns the device and host seconds per round and whether every round filled."""
    dev, host, all_filled, tries = [], [], True, attempts
    for _ in range(rounds):
        sleep = sleep_s
        for _attempt in range(tries):
            d, h, filled = run_round(sleep)
            if filled:
                break
            sleep *= 2
        if not filled:
            tries = 1
        all_filled &= filled
        dev.append(d)
        host.append(h)
    return dev, host, all_filled


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
    calls: int = 20,
):
    """Time `fn` under pytest-benchmark: on a CPU its own timing of single calls; on a GPU
    `rounds` rounds of `time_calls` (device time per call). Returns stats with .mean and
    .median (seconds per call), or None under --benchmark-disable."""
    benchmark.group = group
    benchmark.extra_info[bytes_key] = nbytes
    benchmark.extra_info["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        timings: list[Timing] = []
        benchmark.pedantic(
            lambda: timings.append(time_calls(fn, device, calls=calls, rounds=1, warmup=1)),
            rounds=rounds or 10,
            iterations=1,
            warmup_rounds=warmup_rounds,
        )
        if benchmark.stats is None:
            return None
        timed = timings[warmup_rounds:]
        per_call = [t.device_s for t in timed]
        stats = types.SimpleNamespace(mean=statistics.mean(per_call), median=statistics.median(per_call))
        benchmark.extra_info["device_us_per_call"] = round(getattr(stats, stat) * 1e6, 2)
        benchmark.extra_info["host_us_per_call"] = round(statistics.median(t.host_s for t in timed) * 1e6, 2)
        benchmark.extra_info["queue_filled"] = all(t.queue_filled for t in timed)
        benchmark.extra_info["timing"] = f"CUDA events around {calls} back-to-back calls, host queue filled first"
        benchmark.extra_info["GB/s"] = round(nbytes / getattr(stats, stat) / 1e9, 2)
        return stats

    fn()
    if rounds is None:
        benchmark(fn)
    else:
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    if benchmark.stats is None:
        return None
    stats = benchmark.stats.stats
    benchmark.extra_info["GB/s"] = round(nbytes / getattr(stats, stat) / 1e9, 2)
    return stats
