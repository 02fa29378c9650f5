"""What a long job meets on a cluster, round two: a log reader that goes away, a divergence, a stop signal
during a long validation, odd entries in class folders, a config.yaml cut short.

Every test runs `python -m fastres.train` (or `python -m fastres.data`) as a child process with real pipes,
real signals and real files, and checks what the process did and what the run folder holds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fastres.checkpoint import CheckpointStore, read_checkpoint_file

from multiproc import clean_environ
from tiny import STEPPED, one_line_error, records, start, wait_until

pytestmark = pytest.mark.timeout(600)


def with_odd_entries(root: Path) -> list[tuple[Path, str]]:
    """Entries no loader can read added to the class folders of the dataset copy at `root`, with the reason each is
    skipped."""
    folder = root / "train" / "arrow"
    os.mkfifo(folder / "fifo.JPEG")
    (folder / "gone.JPEG").symlink_to(folder / "nowhere.JPEG")
    (folder / "folder.JPEG").mkdir()
    (folder / "null.JPEG").symlink_to("/dev/null")
    (root / "val" / "arrow" / "notes.txt").write_text("not an image")
    return [
        (folder / "fifo.JPEG", "a FIFO"),
        (folder / "gone.JPEG", f"a symbolic link to nothing ({folder / 'nowhere.JPEG'})"),
        (folder / "folder.JPEG", "a directory"),
        (folder / "null.JPEG", "a symbolic link to character device"),
        (root / "val" / "arrow" / "notes.txt", "not an image file name"),
    ]


def test_a_log_reader_that_goes_away_never_stops_the_run(tiny_data_copy, tmp_path):
    """`python -m fastres.train ... | head -1`: the reader exits after the first line. The run trains on, writes
    its checkpoints and metrics, says once on stderr that stdout is gone, records it, and exits 0. The data has
    entries no loader reads (a FIFO, a link to nothing, a directory and a link to a device named *.JPEG, a text
    file): the first line names every one of them."""
    root = tiny_data_copy
    odd = with_odd_entries(root)
    run = tmp_path / "run"
    proc = start(["--data", str(root), *STEPPED, "--epochs", "1", "--out", str(tmp_path), "--name", "run"], tmp_path)
    first = proc.stdout.readline()  # `head -1`
    proc.stdout.close()  # ... and its reader goes away: the next write meets EPIPE
    err = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert first.startswith(f"fastres: skipping {len(odd)} entries of class folders that are not image files"), first
    for path, why in odd:
        assert f"{path} ({why}" in first, (path, first)
    line = one_line_error(err)
    assert line.startswith("fastres: stdout failed (Broken pipe (EPIPE))") and "training goes on" in line, line
    dropped = records(run, "sink_dropped")
    assert [(r["sink"], r["reason"]) for r in dropped] == [("stdout", "Broken pipe (EPIPE)")], dropped
    assert [r["epoch"] for r in records(run, "val")] == [1] and records(run)[-1]["kind"] == "summary"
    assert read_checkpoint_file(CheckpointStore(run).paths()[0])["step"] == 5  # the run's end was saved


def test_a_divergence_keeps_the_last_good_checkpoint_and_resume_continues_from_it(tiny_data, tmp_path):
    """lr 100 blows the weights up (losses up to ~1e21), then every step's gradients are NaN and skipped. With a
    checkpoint every step and --keep-checkpoints 2, none is written while steps are skipped, so the one of the
    last good step survives; the stop names it; the same command continues from it."""
    run = tmp_path / "run"
    args = ["--data", str(tiny_data), *STEPPED, "--lr", "100", "--lr-unit", "absolute", "--epochs", "3",
            "--checkpoint-every", "1", "--keep-checkpoints", "2", "--max-skipped-steps", "2", "--out", str(tmp_path),
            "--name", "run", "--resume", "auto"]  # fmt: skip
    proc = start(args, tmp_path)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 2, err[-3000:]
    line = one_line_error(err)
    train = records(run, "train")
    first_skipped = min(r["step"] for r in train if r["skipped_steps"])
    good = first_skipped - 1
    assert max(r["loss"] for r in train if r["loss"] is not None) > 1e6  # it blew up before the NaNs
    store = CheckpointStore(run)
    assert "steps in a row had NaN/Inf gradients" in line and f"the last checkpoint is {store.path_of(good)}" in line
    assert store.steps()[0] == good  # nothing written while steps were skipped: the good one was never pruned
    assert f"no checkpoint of step {first_skipped}" in out, out
    state = read_checkpoint_file(store.path_of(good))
    assert state["step"] == good
    # the forward passes of skipped steps write NaN into the BN statistics: none of them reached this one
    assert not any(torch.isnan(t).any() for t in state["model"].values() if t.is_floating_point())

    again = start(args, tmp_path)  # the job requeued: the same command
    _, err = again.communicate(timeout=400)
    assert again.returncode == 2 and f"the last checkpoint is {store.path_of(good)}" in one_line_error(err)
    resume = records(run, "resume")
    assert [r["checkpoint_step"] for r in resume] == [good]
    steps = [r for r in records(run, "train") if r["step"] == good]
    assert len(steps) == 1  # step `good` came from the checkpoint, not trained again
    repeated = [r for r in records(run, "train") if r["step"] == first_skipped]
    assert len(repeated) == 2 and repeated[1]["skipped_steps"] == 1  # the same step, computed again from it


def reading(pid: int, folder: Path) -> bool:
    """Whether process `pid` has a file under `folder` open now."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd).startswith(f"{folder}/") for fd in fds.iterdir())
    except OSError:  # a descriptor closed while listed
        return False


def test_a_signal_during_a_long_validation_stops_it_within_a_batch_and_the_resume_redoes_it(tiny_data_copy, tmp_path):
    """204 validation images in 51 batches of 4 take far longer than a training step. SIGTERM once validation
    has begun (its first batch is 4 large JPEGs: the process holds one open while decoding it): validation stops
    within a few batches, the checkpoint of the last step is written (marked: validation still to do), exit 143
    with one line. The same command validates that epoch again, first, with the accuracy of that checkpoint
    (fastres.eval's), and a config.yaml left cut short is written whole again."""
    from fastres.eval import evaluate

    from jpegs import jpeg_bytes

    root = tiny_data_copy
    for f in sorted((root / "val").rglob("*.JPEG")):
        for k in range(9):
            shutil.copy(f, f.with_name(f"{f.stem}-{k}.JPEG"))
    first = sorted((root / "val").iterdir())[0]
    for k in range(4):  # the first batch: slow to decode
        (first / f"0-large-{k}.JPEG").write_bytes(jpeg_bytes(3000, 2000, seed=k))
    run = tmp_path / "run"
    args = ["--data", str(root), *STEPPED, "--val-batch-size", "4", "--epochs", "1", "--out", str(tmp_path), "--name",
            "run", "--resume", "auto"]  # fmt: skip
    proc = start(args, tmp_path)
    wait_until(lambda: reading(proc.pid, root / "val"), [proc])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    line = one_line_error(err)
    assert "stopped by SIGTERM after step 5, in the validation of epoch 1" in line, line
    stop = records(run, "stop")
    assert len(stop) == 1 and stop[0]["during"] == "validation" and stop[0]["val_batches"] == 51, stop
    assert stop[0]["val_batches_done"] < 12, stop  # within a few batches of the signal, not at the end
    assert not records(run, "val") and not records(run, "summary")
    path = CheckpointStore(run).paths()[0]
    state = read_checkpoint_file(path)
    assert state["step"] == 5 and state["extra"]["val_pending"] == 1

    config = run / "config.yaml"
    config.write_bytes(config.read_bytes()[: config.stat().st_size // 2])  # cut short, as a crash mid-write left it
    again = start(args, tmp_path)
    out, err = again.communicate(timeout=400)
    assert again.returncode == 0, err[-3000:]
    val = records(run, "val")
    assert [(r["epoch"], r["step"], r["images"]) for r in val] == [(1, 5, 204)], val
    assert "(validation done again after the resume)" in out
    mine = evaluate(path, root, device="cpu", workers=0, say=lambda _: None)
    assert (val[0]["top1"], val[0]["top5"]) == (mine.top1, mine.top5)
    doc = yaml.safe_load(config.read_text())
    assert doc["config"]["name"] == "run" and doc["attempt"] == 2 and doc["resumed_at_step"] == 5


def test_the_checker_names_every_entry_of_a_class_folder_it_does_not_read(tiny_data_copy, tmp_path):
    root = tiny_data_copy
    odd = with_odd_entries(root)
    proc = subprocess.run([sys.executable, "-m", "fastres.data", "check", str(root), "--quiet"], cwd=tmp_path,
                          env=clean_environ(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for path, why in odd:
        assert any(line.startswith(f"skip {path}: {why}") for line in lines), (path, proc.stdout)
    assert lines[-1].endswith(f"0 bad, 0 odd but valid; {len(odd)} entries skipped (not image files)"), lines[-1]


def _validation_polls(batches_by_rank: list[int], scenarios: list[tuple[int, int | None]]) -> list[tuple]:
    """One rank of a job validating its share, once per scenario (signal_rank, signal_at): a poll per batch, as
    many as the rank with the most batches, and one after the last (the trainer's loop); SIGUSR1 to itself on
    `signal_rank` before poll `signal_at`. Per scenario: (the poll it stopped at, polls, signal)."""
    from fastres.distributed import destroy, discover, init_distributed
    from fastres.run.preemption import StopSignals

    topology = discover()
    groups = init_distributed(topology, device=torch.device("cpu"), timeout=60)
    results = []
    try:
        for signal_rank, signal_at in scenarios:
            stop = StopSignals(groups)
            try:
                polls = stop.most(batches_by_rank[topology.rank], "validation batches")
                for b in range(polls):
                    if topology.rank == signal_rank and b == signal_at:
                        os.kill(os.getpid(), signal.SIGUSR1)
                    verdict = stop.poll()
                    if verdict.signum:
                        results.append((b, polls, verdict.signum))
                        break
                else:  # the signal of the last batch, if any: after validation
                    results.append((polls, polls, stop.poll().signum))
            finally:
                stop.close()
    finally:
        destroy(groups)
    return results


def test_ranks_with_uneven_validation_shares_poll_as_often_and_stop_at_the_same_batch():
    """Rank 0 has 5 validation batches, rank 1 has 4 (and polls once more after its last). A signal to either,
    at any poll, stops both at the same poll, the one after it (the flags' reduction is read one poll later): the
    last batch's signal at the poll after validation."""
    from multiproc import check_ok, run_ranks

    scenarios = [(1, 2), (0, 4), (1, None)]
    results = check_ok(run_ranks(_validation_polls, world=2, args=([5, 4], scenarios), timeout=120))
    expected = [(3, 5, signal.SIGUSR1), (5, 5, signal.SIGUSR1), (5, 5, 0)]
    assert results == [expected, expected], results
