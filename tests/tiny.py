"""What the tests that run `python -m fastres.train` share: a tiny ResNet-18 configuration, its dataset, starting
a run as a child process, and readers of what a run leaves behind.

    TINY                       flags of a run that takes seconds on the built-in dataset's small copy
    STEPPED                    TINY with every step logged, one thread, the PIL loader: runs compared step by step
    dataset(tmp_path_factory)  that small copy (tests/conftest.py's `tiny_data`), written once per pytest process
    start(args, cwd)           `python -m fastres.train ARGS` as a child process with pipes
    wait_until(pred, procs)    until pred() holds; fails at once when a process exits first
    records(run, kind=None)    metrics.jsonl as dicts (only those of `kind` when given)
    newest(run)                the state of the run's newest checkpoint that verifies
    assert_same_run(a, b)      the same loss at every step and the same final weights
    one_line_error(stderr)     the single error line of a run that failed as fastres promises
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from fastres.checkpoint import CheckpointStore
from fastres.data.builtin import ensure_builtin_dataset

from multiproc import clean_environ

# fp32 on every CPU: the tests compare runs at fp32's tolerances, and `--precision auto` is bf16 on a CPU
# with native bf16 (tests/test_precision.py checks auto). One torch thread: on a box shared with other jobs, two
# threads that wait for each other's cores take several times as long (a 4-epoch run: 13-16 s with one thread,
# 29-79 s with torch's default of two, on the 2-core EPYC under a load of 6).
TINY = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--warmup-epochs", "0",
        "--no-progress", "--precision", "fp32", "--threads", "1"]  # fmt: skip

# 40 train images, batch 8: 5 steps per epoch, every step logged; CPU training is bitwise deterministic on one
# machine, so two runs of these flags log the same loss at every step.
STEPPED = [*TINY, "--lr", "0.2", "--log-every", "1", "--backend", "pytorch", "--data-check", "none"]

TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 2  # 10 classes: 40 training and 20 validation images

_MADE: dict[str, Path] = {}


def dataset(tmp_path_factory) -> Path:
    """The built-in dataset's generator at 4 train and 2 val images per class (real JPEGs, 60 of them), written
    on the first call of this pytest process. Shared: read it only (tests/conftest.py checks that nothing
    changed it); a test that changes files works on a copy (the `tiny_data_copy` fixture)."""
    if "data" not in _MADE:
        base = tmp_path_factory.mktemp("tiny-data")
        _MADE["data"] = ensure_builtin_dataset(base, TRAIN_PER_CLASS, VAL_PER_CLASS, workers=1)
    return _MADE["data"]


def start(args: list[str], cwd: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    """`python -m fastres.train ARGS` in `cwd`, one OpenMP thread, no launcher's variables; text pipes."""
    env = {**clean_environ(), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "fastres.train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


def wait_until(pred, procs: list[subprocess.Popen], seconds: float = 240) -> None:
    """Poll pred() until it holds; an AssertionError with the process's stderr when one of `procs` exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            _, err = dead[0].communicate()
            raise AssertionError(f"exited {dead[0].returncode} before the condition: {(err or '')[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def records(run_dir: Path, kind: str | None = None) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in out if kind is None or r["kind"] == kind]


def newest(run_dir: Path) -> dict:
    """The state of the run's newest checkpoint that verifies."""
    found = CheckpointStore(run_dir).newest_valid()
    assert found is not None, f"no checkpoint that verifies in {run_dir}"
    return found[1]


def losses(run_dir: Path) -> dict[int, float]:
    """step -> logged loss, over every attempt of the run."""
    return {r["step"]: r["loss"] for r in records(run_dir, "train")}


def assert_same_run(a: Path, b: Path) -> None:
    """Runs `a` and `b` logged the same loss at every step and end with the same weights, bit for bit."""
    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) and la == lb, {s: (la.get(s), lb.get(s)) for s in la if la.get(s) != lb.get(s)}
    wa, wb = newest(a), newest(b)
    assert wa["step"] == wb["step"]
    for key, value in wa["model"].items():
        assert torch.equal(value, wb["model"][key]), key


def one_line_error(stderr: str) -> str:
    """The one line a failed run printed; fails the test on a traceback or several lines."""
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]
