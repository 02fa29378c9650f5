"""bench/gpu_suite.sh on a machine without a GPU: its plan, and what it leaves behind.

The suite itself needs a GPU; what CI can check is that `--dry-run` lists the parts in the
issue's order of value with caps that fit the 480 s a lent GPU gives it (the sanitizers before
anything that only times), that a run where no GPU is visible writes OUT/summary.md and
OUT/gpu-suite.tgz and nothing else, and that the sanitizers' script calls every kernel on the
CPU kernels without a mismatch.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "gpu_suite.sh"
ORDER = ["build", "memcheck", "racecheck", "synccheck", "tests", "kernels", "train", "reducer", "rtc"]


def test_dry_run_lists_the_parts_in_order_within_480_s():
    run = subprocess.run(["bash", str(SUITE), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    rows = re.findall(r"^(\w+)\s+(\d+) s", run.stdout, re.MULTILINE)
    parts = [name for name, _ in rows[:-1]]
    caps = [int(cap) for _, cap in rows[:-1]]
    assert parts == ORDER, run.stdout
    assert rows[-1][0] == "total" and int(rows[-1][1]) == sum(caps) <= 480, run.stdout
    assert all(cap > 0 for cap in caps)
    sanitizers = [parts.index(p) for p in ("memcheck", "racecheck", "synccheck")]
    assert max(sanitizers) < parts.index("kernels") < parts.index("train"), "the sanitizers run before the timings"


def test_bad_arguments_are_one_line_exit_2(tmp_path):
    run = subprocess.run(["bash", str(SUITE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.strip().startswith("usage:"), run.stderr


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


def test_the_sanitizers_script_runs_every_op_on_the_cpu_kernels():
    from fastres.kernels import ops

    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)
    script = ROOT / "bench" / "gpu_kernels_once.py"
    run = subprocess.run([sys.executable, str(script), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ALL KERNELS RAN"), run.stdout + run.stderr
    assert run.stdout.count(" ok") == 20
