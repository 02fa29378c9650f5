"""python -m fastres.eval: a checkpoint evaluated on its run's val split gives the accuracy the run logged,
on one process and on two (every image counted once); classes that differ and bad input are one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trained import records, short_run

from fastres.checkpoint import read_checkpoint_file
from fastres.eval import evaluate

from multiproc import check_ok, clean_environ, run_ranks


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return short_run(tmp_path_factory)


def logged_val(run: Path, epoch: int) -> dict:
    return next(r for r in records(run, "val") if r["epoch"] == epoch)


def test_eval_reproduces_the_accuracy_the_run_logged(trained):
    data, run = trained
    newest = evaluate(run, data, say=lambda _: None)
    state = read_checkpoint_file(newest.checkpoint.path)
    assert newest.checkpoint.path.parent == run / "checkpoints" and newest.checkpoint.step == state["step"]
    last = logged_val(run, state["epoch"])
    assert (newest.top1, newest.top5, newest.images) == (last["top1"], last["top5"], last["images"])
    assert newest.checkpoint.val == {"epoch": last["epoch"], "top1": last["top1"], "top5": last["top5"]}
    own = evaluate(run, None, say=lambda _: None)  # no --data: the dataset the run trained on
    assert own.val_dir == data / "val" and (own.top1, own.top5, own.images) == (newest.top1, newest.top5, 20)

    best = evaluate(run, data, best=True, say=lambda _: None)
    summary = records(run, "summary")[-1]
    assert best.checkpoint.path == run / "best.pt" and best.checkpoint.epoch == summary["best_epoch"]
    assert best.top1 == summary["best_top1"] == logged_val(run, summary["best_epoch"])["top1"]


def _eval_rank(run: str, data: str, backend: str) -> tuple[float, float, int, int]:
    # the test's ranks are daemon processes, which may not start DataLoader workers (DALI's are threads)
    workers = 0 if backend == "pytorch" else 1
    result = evaluate(run, data, device="cpu", backend=backend, workers=workers, say=lambda _: None)
    return result.top1, result.top5, result.images, result.rank


@pytest.mark.parametrize("backend", ["pytorch", "dali"])
def test_distributed_eval_counts_every_image_once(trained, backend):
    if backend == "dali":
        pytest.importorskip("nvidia.dali", reason="DALI is not installed")
    data, run = trained
    one = evaluate(run, data, backend=backend, workers=0 if backend == "pytorch" else 1, say=lambda _: None)
    results = check_ok(run_ranks(_eval_rank, world=2, args=(str(run), str(data), backend), timeout=180))
    assert [r[3] for r in results] == [0, 1]
    for top1, top5, images, _rank in results:  # each rank holds the sum over both ranks' shares
        assert (top1, top5, images) == (one.top1, one.top5, one.images) and images == 20


def run_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastres.eval", *args],
        cwd=cwd,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def one_line(proc: subprocess.CompletedProcess, status: int = 2) -> str:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("python -m fastres.eval: error: ")
    return lines[0]


def test_classes_that_differ_are_named(trained, tmp_path):
    data, run = trained
    val = tmp_path / "other" / "val"
    shutil.copytree(data / "val", val)
    shutil.rmtree(val / "star")
    shutil.copytree(val / "disc", val / "zebra")
    line = one_line(run_eval(str(run), "--data", str(tmp_path / "other"), cwd=tmp_path))
    assert f"--data {val}: its 10 class folders are not the checkpoint's 10 classes" in line
    assert "missing star" in line and "not in the checkpoint: zebra" in line


def test_bad_files_are_refused_by_name_or_left_out(trained, tmp_path):
    data, run = trained
    shutil.copytree(data / "val", tmp_path / "val")
    bad = tmp_path / "val" / "ring" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    line = one_line(run_eval(str(run), "--data", str(tmp_path), cwd=tmp_path))
    assert f"{bad} (not an image)" in line and "--skip-bad-files" in line
    proc = run_eval(str(run), "--data", str(tmp_path), "--skip-bad-files", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"images": 20' in proc.stdout and '"skipped": 1' in proc.stdout


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d, run: [str(d / "plain.pth"), "--data", str(d)], "plain.pth: not a fastres checkpoint"),
        (lambda d, run: [str(d / "empty_run"), "--data", str(d)], "holds no checkpoint that verifies"),
        (lambda d, run: [str(d / "empty_run"), "--best", "--data", str(d)], "best.pt does not exist"),
        (lambda d, run: [str(run), "--data", str(d / "nowhere")], "nowhere does not exist"),
        (lambda d, run: [str(run), "--data", str(d), "--batch-size", "0"], "--batch-size must be a positive"),
    ],
)
def test_bad_input_is_one_line(trained, tmp_path, make, message):
    _data, run = trained
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "plain.pth")  # a torch file, not fastres's
    (tmp_path / "empty_run").mkdir()
    assert message in one_line(run_eval(*make(tmp_path, run), cwd=tmp_path))


def test_the_logged_accuracy_is_shown_beside_only_a_measurement_of_the_same_split(trained, tmp_path):
    from fastres.eval import _report

    data, run = trained
    other = tmp_path / "other"
    shutil.copytree(data / "val", other / "val")
    for folder in sorted((other / "val").iterdir()):
        sorted(folder.iterdir())[0].unlink()  # another set of images: one of the two per class
    proc = run_eval(str(run), "--data", str(other), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "on 10 images of" in proc.stdout and "the run logged top-1" not in proc.stdout, proc.stdout
    assert f"not compared with the accuracy the run logged: that was measured on {data / 'val'}" in proc.stdout
    result = evaluate(run, other, say=lambda _: None).to_dict()
    assert result["logged"] is None and result["logged_on"] == str(data / "val")
    own = evaluate(run, data, say=lambda _: None)
    assert own.same_split and "\n  the run logged top-1 " in _report(own)
