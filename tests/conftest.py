"""Fixtures shared by the test modules: what is expensive is made once per pytest run and read by many tests.

    tiny_data        the built-in dataset's small copy (tests/tiny.py): 40 training and 20 validation JPEGs
                     in 10 classes; read only, checked unchanged at the end of the run
    tiny_data_copy   a copy of it in the test's own folder, for a test that adds, breaks or renames files
    straight_run     RUN of an uninterrupted 3-epoch run with tiny.STEPPED's flags: the reference that
                     preempted, killed and requeued runs of the same command must repeat bit for bit
    straight_run_2_processes
                     RUN of an uninterrupted torchrun job of 2 processes of 4 images (global batch 8, 5 steps an
                     epoch), 2 epochs, a checkpoint every 2 steps (all kept): the reference of the 2-process
                     resumes, and the checkpoints the resumes on another process count start from

The helpers the tests import (tiny, jpegs, trained, multiproc, emulated) live beside this file; pytest puts
this folder on sys.path.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tiny
from multiproc import clean_environ


def _fingerprint(root: Path) -> dict[str, str]:
    """Every entry under `root` with its content's SHA-256 (folders: "dir")."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tiny.dataset(tmp_path_factory)
    before = _fingerprint(root)
    yield root
    after = _fingerprint(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared tiny dataset (use tiny_data_copy): {changed[:10]}"


@pytest.fixture
def tiny_data_copy(tiny_data, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root


STRAIGHT_EPOCHS = 3  # 15 steps


@pytest.fixture(scope="session")
def straight_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    args = ["--data", str(tiny_data), *tiny.STEPPED, "--epochs", str(STRAIGHT_EPOCHS), "--out", str(out)]
    proc = tiny.start([*args, "--name", "run"], out)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    return out / "run"


@pytest.fixture(scope="session")
def straight_run_2_processes(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight2")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "fastres.train", "--data", str(tiny_data), *tiny.STEPPED, "--batch-size", "4", "--epochs", "2",
           "--checkpoint-every", "2", "--keep-checkpoints", "10", "--dist-timeout", "60", "--out", str(out),
           "--name", "run"]  # fmt: skip
    env = {**clean_environ(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "run"
