"""Preemption-safe runs, end to end with real processes and real signals.

Every test runs `python -m fastres.train` as a child process (one, or two as srun/mpirun
start them), signals it the way Slurm, Kubernetes or a user would, and checks what the run
folder holds afterwards and what a resumed run computes. CPU training is bitwise
deterministic on one machine, so a resumed run must log the same loss at every step as a run
that was never stopped, and end with the same weights.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastres.checkpoint import CheckpointStore, read_checkpoint_file

from jpegs import corrupt_huffman
from multiproc import clean_environ, free_port, rank_env
from tiny import STEPPED, assert_same_run, one_line_error, records, start, wait_until

pytestmark = pytest.mark.timeout(600)


def test_signals_mid_epoch_each_end_in_a_checkpoint_and_resume_auto_repeats_every_loss_bit_for_bit(
    tiny_data, straight_run, tmp_path
):
    """The same command three times, as a requeued job script runs it: SIGTERM inside the second epoch, SIGUSR1
    (Slurm's --signal) inside the third, then to the end. Each stop is one line naming the signal and the step of
    its mid-epoch checkpoint; each resume continues from it; the losses and weights are the straight run's."""
    cmd = ["--data", str(tiny_data), *STEPPED, "--epochs", "3", "--out", str(tmp_path), "--name", "run", "--resume",
           "auto"]  # fmt: skip
    run = tmp_path / "run"
    stopped = []
    for sig, at in ((signal.SIGTERM, 7), (signal.SIGUSR1, 12)):  # step 7: epoch 2; step 12: epoch 3 (5 steps each)
        proc = start(cmd, tmp_path)
        wait_until(lambda at=at: any(r["step"] >= at for r in records(run, "train")), [proc])
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, err[-3000:]
        line = one_line_error(err)
        state = read_checkpoint_file(CheckpointStore(run).paths()[0])
        assert f"stopped by {signal.Signals(sig).name} after step {state['step']}" in line, line
        assert state["step"] % 5 != 0, "the preemption checkpoint should be mid-epoch here"
        assert "--resume auto --name run" in line
        stopped.append(state["step"])

    again = start(cmd, tmp_path)  # the same command: the job script, requeued
    out, err = again.communicate(timeout=400)
    assert again.returncode == 0, err[-3000:]
    resumes = records(run, "resume")
    assert [(r["step"], r["attempt"]) for r in resumes] == [(stopped[0], 2), (stopped[1], 3)], resumes
    assert_same_run(straight_run, run)


def launch_two(args: list[str], cwd: Path) -> list[subprocess.Popen]:
    port = free_port()
    return [
        subprocess.Popen(
            [sys.executable, "-m", "fastres.train", *args],
            cwd=cwd,
            env=rank_env(r, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]


@pytest.mark.slow
def test_two_ranks_a_signal_to_one_rank_stops_both_at_one_step_and_resume_repeats_the_run(
    tiny_data, straight_run_2_processes, tmp_path
):
    """The shared 2-process run's command (its checkpoint flags aside, which change no number), started as srun
    or mpirun start it; SIGTERM to rank 1 only; the same command again ends with the straight run's losses and
    weights."""
    cmd = ["--data", str(tiny_data), *STEPPED, "--batch-size", "4", "--epochs", "2", "--out", str(tmp_path),
           "--dist-timeout", "60"]  # fmt: skip
    run = tmp_path / "cut"
    cut_cmd = [*cmd, "--name", "cut", "--resume", "auto"]
    procs = launch_two(cut_cmd, tmp_path)
    wait_until(lambda: len(records(run, "train")) >= 3, procs)  # 5 steps per epoch (20 images per rank)
    procs[1].send_signal(signal.SIGTERM)  # one rank only: the other learns it through the stop flags
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], errs
    assert "stopped by SIGTERM" in errs[0] and errs[1].strip() == "", errs
    again = launch_two(cut_cmd, tmp_path)
    for p in again:
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
    assert_same_run(straight_run_2_processes, run)


def test_a_flipped_byte_in_the_newest_checkpoint_is_named_and_the_older_one_used(tiny_data, tmp_path):
    args = ["--data", str(tiny_data), *STEPPED, "--epochs", "1", "--out", str(tmp_path), "--name", "run",
            "--checkpoint-every", "2"]  # fmt: skip
    proc = start(args, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    store = CheckpointStore(tmp_path / "run")
    newest, older = store.paths()[:2]
    blob = bytearray(newest.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit, in the middle of the payload
    newest.write_bytes(bytes(blob))
    proc = start([*args[:-2], "--epochs", "2", "--resume", "auto"], tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"skipping checkpoint {newest.name}" in out and "SHA-256" in out, out
    assert records(tmp_path / "run", "resume")[0]["checkpoint"] == str(older)


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "checkpoint.pt"
    torch.save({"model": Evil()}, crafted)
    # with fastres's header and a correct checksum too: weights_only still refuses to unpickle code
    import hashlib
    import io

    from fastres.checkpoint.fileformat import MAGIC

    buf = io.BytesIO()
    torch.save({"model": Evil()}, buf)
    payload = buf.getvalue()
    disguised = tmp_path / "disguised.pt"
    disguised.write_bytes(MAGIC + f"sha256 {hashlib.sha256(payload).hexdigest()} {len(payload)}\n".encode() + payload)
    for path, why in ((crafted, "not a fastres checkpoint"), (disguised, "not loadable as data")):
        proc = subprocess.run([sys.executable, "-m", "fastres.train", "--resume", str(path)], cwd=tmp_path,
                              env=clean_environ(), capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0], proc.stderr
        assert not marker.exists(), "loading the checkpoint ran code"


def test_failed_checkpoint_writes_keep_the_older_ones_and_stop_after_three(tiny_data, tmp_path, capsys, monkeypatch):
    from fastres.checkpoint import store
    from fastres.train import main

    real = store.write_bytes_atomic
    writes = {"n": 0}

    def disk_full_after_two(blob, path):
        writes["n"] += 1
        if writes["n"] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(blob, path)

    monkeypatch.setattr(store, "write_bytes_atomic", disk_full_after_two)
    args = ["--data", str(tiny_data), *STEPPED, "--epochs", "3", "--out", str(tmp_path), "--name", "run",
            "--checkpoint-every", "1"]  # fmt: skip
    assert main(args) == 2
    out, err = capsys.readouterr()
    failures = [line for line in out.splitlines() if "No space left on device" in line]
    assert len(failures) == 3 and "failure 1 of 3 in a row" in failures[0], out
    assert "3 checkpoint writes in a row failed" in err and len(err.strip().splitlines()) == 1, err
    kept = CheckpointStore(tmp_path / "run")
    assert kept.steps() == [2, 1]  # the two that were written: intact and verified
    for path in kept.paths():
        read_checkpoint_file(path)
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))  # no partial file left behind


def test_a_second_job_on_a_live_run_folder_is_refused_and_a_second_signal_exits_at_once(tiny_data, tmp_path):
    """One live run: a second job on its folder is refused in one line naming the holder, before it starts
    anything; then two SIGTERMs in a row: the second one exits at once."""
    cmd = ["--data", str(tiny_data), *STEPPED, "--epochs", "50", "--out", str(tmp_path), "--name", "run", "--resume",
           "auto"]  # fmt: skip
    first = start(cmd, tmp_path)
    try:
        wait_until(lambda: len(records(tmp_path / "run", "train")) >= 1, [first])
        second = subprocess.run([sys.executable, "-m", "fastres.train", *cmd], cwd=tmp_path, env=clean_environ(),
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"is in use by pid {first.pid}" in one_line_error(second.stderr)
        assert first.poll() is None  # the first job trains on
        first.send_signal(signal.SIGTERM)
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
        assert first.returncode == 143
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()


def test_the_lock_of_a_job_killed_with_sigkill_is_taken_over(tmp_path):
    from fastres.run.runlock import RunLock

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fastres.run.runlock import RunLock; "
                               "RunLock(sys.argv[1]); print('locked', flush=True); time.sleep(120)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    from fastres.run.runlock import RunLockedError

    with pytest.raises(RunLockedError, match=f"in use by pid {holder.pid}"):
        RunLock(tmp_path)
    holder.kill()  # SIGKILL: no clean-up; the kernel releases the flock
    holder.wait()
    lock = RunLock(tmp_path)
    assert lock.previous_holder is not None and f"pid {holder.pid}" in lock.previous_holder
    lock.release()


@pytest.mark.slow
def test_killing_torchrun_with_sigkill_leaves_no_rank_training_on(tiny_data, tmp_path):
    run = tmp_path / "orphans"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "fastres.train", "--data", str(tiny_data), *STEPPED, "--batch-size", "4", "--epochs", "50", "--out",
           str(tmp_path), "--name", "orphans", "--dist-timeout", "60"]  # fmt: skip
    log = open(tmp_path / "job.log", "w")  # noqa: SIM115 - the job's output, for the failure message
    agent = subprocess.Popen(cmd, cwd=tmp_path, env={**clean_environ(), "OMP_NUM_THREADS": "1"},
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: len(records(run, "train")) >= 2, [agent])
        workers = subprocess.run(["pgrep", "-f", "--", "--name orphans"], capture_output=True, text=True).stdout.split()
        workers = [int(w) for w in workers if int(w) != agent.pid]
        assert len(workers) >= 2, workers
        agent.kill()  # SIGKILL of the agent only: its workers live in their own session
        agent.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.2)
        assert not any(Path(f"/proc/{w}").exists() for w in workers), "ranks kept training after torchrun died"
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
        log.close()
    summary = records(run, "summary")
    assert not summary, "an orphan finished the run"
    output = (tmp_path / "job.log").read_text()[-3000:]
    assert CheckpointStore(run).newest_valid() is not None, output  # they stopped in a checkpoint
    assert "stopped by the death of the launcher (parent process) after step" in output, output


def test_the_parent_death_signal_repeated_stops_once_and_never_exits_at_once():
    # The kernel sends the parent-death signal once per thread that asked for it; only a
    # second SIGTERM/SIGINT/SIGUSR1 means "exit now".
    from fastres.run.preemption import PARENT_DIED, StopSignals

    stop = StopSignals(follow_parent=True)
    try:
        assert stop.poll().signum == 0
        for _ in range(3):
            os.kill(os.getpid(), PARENT_DIED)
            time.sleep(0.01)  # the Python-level handler runs between bytecodes
        assert stop.parent_died and stop.poll().signum == signal.SIGTERM
    finally:
        stop.close()
    assert signal.getsignal(PARENT_DIED) == signal.SIG_DFL


def test_resume_checks_the_config_and_records_what_changed(tiny_data, tmp_path, capsys):
    from fastres.train import main

    base = ["--data", str(tiny_data), *STEPPED, "--out", str(tmp_path), "--name", "run"]
    assert main([*base, "--epochs", "1"]) == 0
    capsys.readouterr()
    run = str(tmp_path / "run")
    assert main(["--resume", run, "--lr", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "--lr is 0.3 on this command line but the run was started with 0.2" in err, err
    assert main(["--resume", run, "--optimizer", "lars"]) == 2
    assert "--optimizer is 'lars' on this command line but the run was started with 'sgd'" in capsys.readouterr().err
    assert main(["--resume", run]) == 0  # finished: says so, exits 0, appends nothing
    assert "is finished" in capsys.readouterr().out
    assert [r["kind"] for r in records(Path(run))].count("summary") == 1
    assert main(["--resume", run, "--epochs", "2", "--log-every", "3"]) == 0
    resume = records(Path(run), "resume")[-1]
    assert resume["changed"] == {"epochs": [1, 2], "log_every": [1, 3]} and resume["world_size"] == 1
    renamed = tmp_path / "renamed"
    shutil.copytree(tiny_data, renamed)
    (renamed / "train" / "arrow").rename(renamed / "train" / "zarrow")
    (renamed / "val" / "arrow").rename(renamed / "val" / "zarrow")
    assert main(["--resume", run, "--epochs", "3", "--data", str(renamed)]) == 2
    assert "not the same dataset" in capsys.readouterr().err


def test_progress_lines_in_a_log_file_and_bad_names_and_paths(tiny_data, tmp_path):
    log = tmp_path / "job.err"
    args = ["--data", str(tiny_data), *STEPPED, "--progress", "--progress-seconds", "0.01", "--epochs", "1",
            "--out", str(tmp_path), "--name", "run"]  # fmt: skip
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "fastres.train", *args], cwd=tmp_path, env=clean_environ(),
                              stdout=subprocess.DEVNULL, stderr=f, timeout=300)  # fmt: skip
    assert proc.returncode == 0
    text = log.read_text()
    assert "\r" not in text and "epoch 1/1 step" in text and "ETA" in text, text[:2000]
    for bad, message in (
        (["--name", "../../x"], "must be a plain folder name inside --out"),
        (["--out", str(log)], "is a file, not a folder"),
    ):
        proc = subprocess.run([sys.executable, "-m", "fastres.train", "--data", str(tiny_data), *STEPPED, "--epochs",
                               "1", *bad], cwd=tmp_path, env=clean_environ(), capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_checkpoint_files_follow_the_umask(tmp_path, mask, mode):
    from fastres.checkpoint import write_checkpoint_file

    old = os.umask(mask)
    try:
        write_checkpoint_file({"x": torch.zeros(2)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("backend", ["pytorch", "dali"])
def test_a_jpeg_that_passes_the_header_check_but_cannot_be_decoded_never_stops_the_run(
    tiny_data_copy, tmp_path, backend
):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    root = tiny_data_copy
    bad = sorted((root / "train").rglob("*.JPEG"))[7]
    bad.write_bytes(corrupt_huffman(bad.read_bytes()))  # header and end marker intact: the default check passes
    args = ["--data", str(root), *STEPPED, "--backend", backend, "--data-check", "header", "--epochs", "1",
            "--out", str(tmp_path), "--name", "run", "--resume", "auto"]  # fmt: skip
    proc = start(args, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and f"cannot decode {bad}" in out, out
    run = tmp_path / "run"
    listed = (run / "bad_files.txt").read_text()
    assert str(bad) in listed and len(listed.strip().splitlines()) == 1
    assert [r["path"] for r in records(run, "bad_file")] == [str(bad)]
    again = start([*args[:-6], "--epochs", "2", *args[-6:]], tmp_path)  # a later attempt knows the file
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert len(records(run, "bad_file")) == 1 and "cannot decode" not in out  # substituted, not decoded again


def test_a_bad_validation_file_counts_against_the_validation_set_s_limit_not_the_training_set_s(
    tiny_data_copy, tmp_path
):
    """40 training and 20 validation images: --max-bad-samples defaults to 1 for each. One bad file in each set
    keeps each within its limit (before, the validation file counted against the training set's one and the
    run stopped); a second bad validation file stops the run, naming the validation set."""
    root = tiny_data_copy
    bad = [sorted((root / split).rglob("*.JPEG"))[k] for split, k in (("train", 7), ("val", 3), ("val", 11))]
    for path in bad[:2]:
        path.write_bytes(corrupt_huffman(path.read_bytes()))
    args = ["--data", str(root), *STEPPED, "--data-check", "header", "--epochs", "1", "--out", str(tmp_path)]
    proc = start([*args, "--name", "one-each"], tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert sorted(r["path"] for r in records(tmp_path / "one-each", "bad_file")) == sorted(map(str, bad[:2]))
    bad[2].write_bytes(corrupt_huffman(bad[2].read_bytes()))
    proc = start([*args, "--name", "two-val"], tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "2 validation samples could not be decoded, more than --max-bad-samples 1 for the validation set" in (
        one_line_error(err)
    )


def test_a_save_killed_midway_leaves_the_old_checkpoint_and_its_leftover_is_removed(tmp_path, monkeypatch):
    from fastres.checkpoint import fileformat
    from fastres.checkpoint.saver import Checkpointer

    store = CheckpointStore(tmp_path, keep=3)
    store.save({"w": torch.ones(3)}, 1)

    def killed(src, dst):  # the process dies between the write and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(fileformat.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.save({"w": torch.zeros(3)}, 1)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint_file(store.path_of(1))["w"], torch.ones(3))  # the old one, whole
    leftover = store.dir / ".step-000000002.pt.abc123.tmp"  # what a SIGKILL during the write leaves
    leftover.write_bytes(b"x" * 1000)
    said = []
    Checkpointer(tmp_path, keep=3, every_steps=None, every_minutes=None, writer=True, say=said.append)
    assert not leftover.exists() and any("left by a save that was killed" in line for line in said)


def test_an_error_every_rank_shares_is_printed_once_by_rank_0(tiny_data, tmp_path):
    procs = launch_two(["--data", str(tiny_data), *STEPPED, "--lr", "inf", "--out", str(tmp_path)], tmp_path)
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], errs
    assert "--lr must be a finite number in [0, 100], got inf" in one_line_error(errs[0])
    assert errs[1].strip() == "", errs[1]


def test_sigterm_to_the_whole_process_group_with_loader_workers_still_checkpoints(tiny_data, tmp_path):
    # scancel and Ctrl-C signal every process of the job, DataLoader workers included
    run = tmp_path / "run"
    args = ["--data", str(tiny_data), *STEPPED, "--workers", "2", "--epochs", "50", "--out", str(tmp_path), "--name",
            "run"]  # fmt: skip
    proc = start(args, tmp_path, start_new_session=True)
    try:
        wait_until(lambda: len(records(run, "train")) >= 2, [proc])
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM" in one_line_error(err)
    assert CheckpointStore(run).newest_valid() is not None
