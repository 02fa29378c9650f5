"""What `python -m fastres.train` tells its user and where it keeps its dataset: the resume banner, the
estimate of the run's length, the smoke run, and dataset paths that travel with the run folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from fastres.data.builtin import builtin_root
from fastres.train import main

import tiny

TINY = [*tiny.TINY, "--lr", "0.2", "--log-every", "2"]


def run(*args: str, cwd: Path, data_home: Path, module: str = "fastres.train") -> subprocess.CompletedProcess:
    env = {**os.environ, "FASTRES_DATA": str(data_home), "OMP_NUM_THREADS": "1"}  # one thread, as tiny.TINY says
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_run_records_its_built_in_dataset_and_eval_finds_it_from_anywhere(tmp_path):
    # a small copy of the built-in dataset, named as builtin_root names it: written by the run itself
    data = builtin_root(tmp_path / "cache", 4, 2)
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    first = run("--data", os.path.relpath(data, work), *TINY, "--epochs", "1", "--name", "r", cwd=work,
                data_home=tmp_path / "other-cache")  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert f"fastres: writing the built-in dataset (60 JPEGs, once) to {data.resolve()}" in first.stdout
    config = yaml.safe_load((work / "runs" / "r" / "config.yaml").read_text())
    assert config["config"]["data"] == str(data.resolve())  # absolute, though given relative
    # the cache is cleared and FASTRES_DATA points elsewhere: eval, from another folder, writes the run's
    # dataset again where the run had it, saying so first, and evaluates on it
    shutil.rmtree(data)
    ev = run(str(work / "runs" / "r"), cwd=elsewhere, data_home=tmp_path / "other-cache", module="fastres.eval")
    assert ev.returncode == 0, ev.stderr
    said = ev.stdout.splitlines()
    assert said[0] == f"fastres: writing the built-in dataset (60 JPEGs, once) to {data.resolve()}"
    assert said[1] == f"fastres eval: on {data.resolve()}, the dataset the run trained on"
    assert "top-1" in said[-2] and str(data.resolve()) in said[-2]
    assert not (tmp_path / "other-cache").exists()  # nothing written under the other FASTRES_DATA


def test_a_resume_says_where_it_continues_and_records_a_changed_dataset_path(tmp_path, capsys):
    data = builtin_root(tmp_path / "cache", 4, 2)
    common = ["--data", str(data), *TINY, "--out", str(tmp_path), "--name", "r"]
    assert main([*common, "--epochs", "1"]) == 0
    capsys.readouterr()
    moved = tmp_path / "moved" / data.name
    shutil.copytree(data, moved)
    assert main(["--resume", str(tmp_path / "r"), "--epochs", "2", "--data", str(moved)]) == 0
    out = capsys.readouterr().out
    steps = 40 // 8  # 40 training images, batch 8
    banner = f"fastres: resuming at step {steps}, epoch 2, 0/{steps} of the epoch, from "
    assert banner in out and "(attempt 2)" in out, out
    resume = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    resume = [r for r in resume if r["kind"] == "resume"]
    assert resume[-1]["changed"]["data"] == [str(data.resolve()), str(moved.resolve())]


def test_the_estimate_of_the_run_s_length_comes_early_and_once(tmp_path, capsys, monkeypatch):
    from fastres.run import progress

    data = builtin_root(tmp_path / "cache", 4, 2)
    monkeypatch.setattr(progress, "ESTIMATE_AFTER", 0.0)  # say it at the first step
    monkeypatch.setattr(progress, "ESTIMATE_MIN_SECONDS", 0.0)  # however short the run
    assert main(["--data", str(data), *TINY, "--epochs", "3", "--out", str(tmp_path), "--name", "r"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("fastres: estimate:")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("fastres: estimate: the 3 epochs left take about ")
    assert "img/s" in lines[0] and "--epochs" in lines[0] and "--smoke" in lines[0]


def test_smoke_touches_every_part_and_says_it_passed(tmp_path):
    smoke = ["--smoke", "--out", str(tmp_path / "runs"), "--name", "smoke", "--resume", "auto"]
    done = run(*smoke, cwd=tmp_path, data_home=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("fastres: smoke run passed in ") and "`python -m fastres.eval`" in last, done.stdout
    # the same command again: the run is finished, and the eval of its checkpoint still says passed or failed
    again = run(*smoke, cwd=tmp_path, data_home=tmp_path / "cache")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.strip().splitlines()
    assert "is finished" in lines[-2] and lines[-1].startswith("fastres: smoke run passed in "), again.stdout
    # synthetic images cannot be checked against the real ones python -m fastres.eval reads: refused, nothing run
    refused = run("--smoke", "--backend", "synthetic", "--out", str(tmp_path / "synthetic"), cwd=tmp_path,
                  data_home=tmp_path / "cache")  # fmt: skip
    assert refused.returncode == 2 and not (tmp_path / "synthetic").exists()
    assert "--smoke checks every part of a run, its data included: --backend synthetic" in tiny.one_line_error(
        refused.stderr
    )
    (run_dir,) = (tmp_path / "runs").iterdir()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.pt"))
    assert checkpoints == ["step-000000010.pt", "step-000000012.pt"], (
        checkpoints
    )  # mid-epoch (every 5) and the epoch's end
    assert (tmp_path / "cache" / "shapes-v1-20-5" / ".complete").is_file()  # its own 250-image dataset
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["config"]
    assert (config["arch"], config["image_size"], config["epochs"]) == ("resnet18", 32, 1)
