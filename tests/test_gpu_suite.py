"""bench/gpu_suite.sh on a machine without a GPU: its plan, its dry run, and what it leaves behind.

The suite itself needs a GPU; what CI can check: that `--plan` lists the parts in the order of
value with caps that fit the 480 s a lent GPU gives it (the sanitizers before anything that only
times) and names every bench/gpu_*.py; that `--dry-run` runs the GPU scripts in their CPU modes
and writes summary.md before and after every part, so that a suite killed in the middle leaves
the parts done so far; that a run where no GPU is visible writes OUT/summary.md and
OUT/gpu-suite.tgz and nothing else; that the sanitizers' script calls every kernel on the CPU
kernels and, through the sim, on the CUDA kernels without a mismatch; that the sanitizer parts
count fastres's errors and not the CUDA API errors raised inside torch and CuPy; and that the
timing's backoff does not grow from round to round.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "gpu_suite.sh"
ORDER = ["build", "memcheck", "racecheck", "synccheck", "tests", "kernels", "train", "reducer", "rtc"]


def test_plan_lists_the_parts_in_order_within_480_s_and_every_gpu_script():
    run = subprocess.run(["bash", str(SUITE), "--plan"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    rows = re.findall(r"^(\w+)\s+(\d+) s", run.stdout, re.MULTILINE)
    parts = [name for name, _ in rows[:-1]]
    caps = [int(cap) for _, cap in rows[:-1]]
    assert parts == ORDER, run.stdout
    assert rows[-1][0] == "total" and int(rows[-1][1]) == sum(caps) <= 480, run.stdout
    assert all(cap > 0 for cap in caps)
    sanitizers = [parts.index(p) for p in ("memcheck", "racecheck", "synccheck")]
    assert max(sanitizers) < parts.index("kernels") < parts.index("train"), "the sanitizers run before the timings"
    cpu_modes = re.findall(r"^\s+CPU mode: (.*)$", run.stdout, re.MULTILINE)
    assert len(cpu_modes) == len(ORDER), run.stdout
    scripts = {p.name for p in (ROOT / "bench").glob("gpu_*.py")}
    named = {name for mode in cpu_modes for name in re.findall(r"bench/(gpu_\w+\.py)", mode)}
    assert named == scripts, f"GPU scripts without a CPU mode in the dry run: {sorted(scripts - named)}"


def test_bad_arguments_are_one_line_exit_2(tmp_path):
    for args in ([], ["--dry-run", "a", "b"], ["--nope"]):
        run = subprocess.run(["bash", str(SUITE), *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and run.stderr.strip().startswith("usage:"), (args, run.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run where no GPU is visible")
def test_without_a_gpu_it_says_so_and_leaves_two_files(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(SUITE), str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu-suite.tgz", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert "no CUDA GPU visible to torch" in summary
    for part in ORDER:
        assert re.search(rf"^- NOT RUN {part} \(0 s of \d+ s\)", summary, re.MULTILINE), part
    with tarfile.open(out / "gpu-suite.tgz") as tar:
        assert "./environment.txt" in tar.getnames()


def test_the_sanitizers_script_runs_every_op_on_the_cpu_kernels_and_the_sim():
    from fastres.kernels import ops

    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)
    script = ROOT / "bench" / "gpu_kernels_once.py"
    cmd = [sys.executable, str(script), "--device", "cpu", "--sim"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ALL KERNELS RAN"), run.stdout + run.stderr
    assert run.stdout.count(" ok") == 40  # 20 on the CPU kernels, 20 on the CUDA kernels executed on the CPU
    assert len(re.findall(r"^  sim .* ok$", run.stdout, re.MULTILINE)) == 20


def test_timing_starts_its_backoff_again_every_round(monkeypatch):
    # a row whose calls never fill the launch queue (a foreach LARS queues ~130 launches a step):
    # each round may double its sleep three times, and once that has not filled the queue, the
    # later rounds run once each, never at a sleep carried over and doubled again
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import timing

    sleeps = []

    def never_fills(fn, calls, sleep_s, index):
        sleeps.append(sleep_s)
        return 1e-3, 1e-4, False

    monkeypatch.setattr(timing, "_cuda_round", never_fills)
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    t = timing.time_calls(lambda: None, torch.device("cuda", 0), calls=30, rounds=5)
    assert not t.queue_filled and len(t.rounds) == 5
    first = sleeps[0]
    assert sleeps == [first, 2 * first, 4 * first, 8 * first] + [first] * 4, sleeps


def dry_run(out: Path, parts: str, tmp_path: Path, python: str = sys.executable, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHON": python, "FASTRES_SUITE_PARTS": parts, "TMPDIR": str(tmp_path)}
    cmd = ["bash", str(SUITE), "--dry-run", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_a_dry_run_killed_midway_leaves_the_parts_done_so_far(tmp_path):
    # a Python that hangs in the train part's script: the suite is killed (SIGKILL: no trap runs)
    # while that part runs, after memcheck passed
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\nfor a in "$@"; do [[ $a == *gpu_train_step.py ]] && exec sleep 600; done\n'
                      f'exec {sys.executable} "$@"\n')  # fmt: skip
    python.chmod(0o755)
    out = tmp_path / "out"
    suite = dry_run(out, "memcheck train", tmp_path, python=str(python), start_new_session=True)
    summary = out / "summary.md"
    try:
        deadline = time.monotonic() + 240
        while not (summary.is_file() and "- RUNNING train" in summary.read_text()):
            assert suite.poll() is None, suite.communicate()[0]
            assert time.monotonic() < deadline, "summary.md never showed the train part running"
            time.sleep(0.2)
    finally:
        os.killpg(suite.pid, signal.SIGKILL)
        suite.wait()
    text = summary.read_text()
    assert re.search(r"^- PASS memcheck \(\d+ s of 40 s\)", text, re.MULTILINE), text
    assert "    - 20 ops ok (the CPU kernels): ALL KERNELS RAN" in text
    assert re.search(r"^- RUNNING train \(\d+ s of 55 s\): .*suite stopped during this part", text, re.MULTILINE), text
    for part in ("build", "racecheck", "synccheck", "tests", "kernels"):
        assert re.search(rf"^- NOT RUN {part} .*: not in FASTRES_SUITE_PARTS$", text, re.MULTILINE), part
    for part in ("reducer", "rtc"):
        assert re.search(rf"^- NOT RUN {part} .*: not reached yet$", text, re.MULTILINE), part
    assert not (out / "gpu-suite.tgz").exists()


def test_the_gpu_scripts_run_in_their_cpu_modes(tmp_path):
    # bench/gpu_kernels.py, gpu_train_step.py and gpu_reducer_check.py as the dry run runs them
    out = tmp_path / "out"
    suite = dry_run(out, "kernels train reducer", tmp_path)
    log, _ = suite.communicate(timeout=400)
    text = (out / "summary.md").read_text()
    assert suite.returncode == 0, text + log
    for part in ("kernels", "train", "reducer"):
        assert re.search(rf"^- PASS {part} ", text, re.MULTILINE), text
    assert re.search(r"optimizer step: fastres FusedLARS .* of copy, [\d.]+x fused SGD's time", text)
    assert re.search(r"train step: fastres / plain = [\d.]+", text)
    assert len(re.findall(r"reducer (flat|hierarchical) (fp32|bf16), 2 ranks: relative error", text)) == 4
    kernels = json.loads(tarfile.open(out / "gpu-suite.tgz").extractfile("./kernels.json").read())
    assert len(kernels["rows"]) == 13 and kernels["machine"]["gpu"] == "CPU"


# ----------------------------------------------------------------------------- compute-sanitizer's logs


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SANITIZER_SUMMARY = ROOT / "bench" / "sanitizer_summary.py"
sanitizer_summary = _load(SANITIZER_SUMMARY)

_HOST = "=========         Host Frame: {f} [0x{a:x}] in {lib}"
_TORCH = "/usr/local/lib/python3.11/dist-packages/torch/lib/libtorch_cuda.so"
_CUPY = "/usr/local/lib/python3.11/dist-packages/cupy_backends/cuda/api/runtime.cpython-311-x86_64-linux-gnu.so"
_OURS = "/usr/local/lib/python3.11/dist-packages/fastres/_C.cpython-311-x86_64-linux-gnu.so"


def api_error(error: str, call: str, lib: str) -> list[str]:
    """A CUDA API error as compute-sanitizer writes it, called from `lib`."""
    return [
        f'========= Program hit {error} (error 1) due to "invalid argument" on CUDA API call to {call}.',
        "=========     Saved host backtrace up to driver entry point at error",
        _HOST.format(f="", a=0x2EE1D4, lib="/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        _HOST.format(f=call, a=0x5F3A0, lib=lib),
        _HOST.format(f="_PyEval_EvalFrameDefault", a=0x1234, lib="/usr/bin/python3.11"),
        "=========",
    ]


INVALID_READ = [
    "========= Invalid __global__ read of size 16 bytes",
    "=========     at fastres::<unnamed>::chunk_sq_sums_kernel(const float *, const long *, long, long, float *)+0x3f0"
    " in /src/csrc/cuda_common.cuh:126",
    "=========     by thread (5,0,0) in block (2,0,0)",
    "=========     Address 0x7f6510c00004 is out of bounds",
    "=========",
]


def sanitizer_log(*reports: list[str], summary: int | None, ran: bool = True, races: str = "") -> str:
    lines = ["========= COMPUTE-SANITIZER", "  native segment_sq_norms                       ok"]
    lines += ["ALL KERNELS RAN"] if ran else []
    for rep in reports:
        lines += rep
    lines += [races] if races else []
    lines += [f"========= ERROR SUMMARY: {summary} errors"] if summary is not None else []
    return "\n".join(lines) + "\n"


def test_cuda_api_errors_inside_torch_and_cupy_are_reported_not_counted():
    # compute-sanitizer exits with --error-exitcode on these; the part passes, saying what they were
    log = sanitizer_log(
        api_error("cudaErrorInvalidValue", "cudaFuncGetAttributes", _TORCH),
        api_error("cudaErrorInvalidValue", "cudaFuncGetAttributes", _TORCH),
        api_error("cudaErrorNotReady", "cudaEventQuery", _CUPY),
        summary=3,
    )
    passed, lines = sanitizer_summary.summarize(log, "memcheck")
    assert passed, lines
    assert lines[0] == "compute-sanitizer memcheck: 0 errors in fastres's kernels and launches"
    assert lines[1] == (
        "CUDA API errors inside torch or CuPy, reported and not counted (3): "
        "2 x cudaErrorInvalidValue on cudaFuncGetAttributes (libcuda.so.1, libtorch_cuda.so, python3.11); "
        "1 x cudaErrorNotReady on cudaEventQuery (libcuda.so.1, python3.11, runtime.cpython-311-x86_64-linux-gnu.so)"
    )


@pytest.mark.parametrize(
    "log, why",
    [
        (sanitizer_log(INVALID_READ, api_error("e", "cudaMemGetInfo", _TORCH), summary=2), "1 errors in fastres"),
        (sanitizer_log(api_error("cudaErrorInvalidConfiguration", "cudaLaunchKernel", _OURS), summary=1),
         "1 errors in fastres's kernels and launches \\(1 of them CUDA API errors of fastres's own calls\\)"),
        # a report of a kind the summary does not know still counts
        (sanitizer_log(["========= Some new kind of error", "========="], summary=1), "1 errors in fastres"),
        (sanitizer_log(summary=0, ran=False), "the script did not print ALL KERNELS RAN"),
        (sanitizer_log(summary=None), "no ERROR SUMMARY"),
        (sanitizer_log(races="========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)", summary=None),
         "1 errors in fastres's kernels and launches, 0 racecheck warnings"),
    ],
)  # fmt: skip
def test_every_other_error_counts(log, why):
    passed, lines = sanitizer_summary.summarize(log, "racecheck" if "RACECHECK" in log else "memcheck")
    assert not passed and re.search(why, lines[0]), lines


def test_a_clean_racecheck_with_torch_api_errors_passes(tmp_path):
    log = tmp_path / "racecheck-run.log"
    races = "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"
    log.write_text(sanitizer_log(api_error("cudaErrorInvalidValue", "cudaGetDriverEntryPoint", _TORCH), races=races,
                                 summary=None))  # fmt: skip
    cmd = [sys.executable, str(SANITIZER_SUMMARY), str(log), "--tool", "racecheck"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FIGURES compute-sanitizer racecheck: 0 errors in fastres's kernels and launches, 0 racecheck warnings" in (
        run.stdout
    )
