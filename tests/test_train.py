"""`python -m fastres.train` end to end: bad input, a tiny real run, and resume."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fastres.train import main

import tiny
from multiproc import clean_environ, free_port, rank_env
from tiny import newest, one_line_error, records

TINY = [*tiny.TINY, "--lr", "0.2", "--log-every", "2"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASTRES_DATA": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "fastres.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: ["--data", str(d / "missing")], "does not exist"),
        (lambda d: ["--data", str(d / "empty")], "is empty"),
        (lambda d: ["--data", str(d / "flat")], "has no train/ folder"),
        (lambda d: ["--data", str(d / "noclass")], "has no class folders"),
        (lambda d: ["--batch-size", "0"], "--batch-size must be an integer in [1, 1048576], got 0"),
        (lambda d: ["--batch-size", "abc"], "argument --batch-size: invalid int value: 'abc'"),
        (lambda d: ["--epochs", "1", "--resume", str(d / "empty")], "no checkpoint that verifies in"),
        (lambda d: ["--config", str(d / "flat" / "a.JPEG")], "not valid YAML"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path, make_args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.JPEG").write_bytes(b"\xff\xd8\xff: [")  # not an image, not YAML
    (tmp_path / "noclass" / "train").mkdir(parents=True)
    (tmp_path / "noclass" / "val").mkdir()
    proc = run_cli(*make_args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in one_line_error(proc.stderr)
    assert not (tmp_path / "runs").exists()  # nothing started


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("step-*.pt")) if (run_dir / "checkpoints").is_dir() else False


def test_tiny_run_learns_and_leaves_evidence(tiny_data, tmp_path, capsys):
    torch.manual_seed(0)
    assert main(["--data", str(tiny_data), *TINY, "--epochs", "4", "--out", str(tmp_path), "--name", "r"]) == 0
    run = tmp_path / "r"
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["config"]["arch"] == "resnet18" and doc["config"]["epochs"] == 4
    assert doc["backend"] in ("dali", "pytorch") and doc["launcher"] == "none" and doc["ranks"] == 1  # what ran
    assert doc["train_images"] == 40 and doc["classes"] == 10 and doc["peak_lr"] == pytest.approx(0.2 * 8 / 256)
    recs = records(run)
    train = [r for r in recs if r["kind"] == "train"]
    val = [r for r in recs if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2, 3, 4] and all(r["images"] == 20 for r in val)
    assert len(train) == 4 * 3 and train[-1]["step"] == 20  # 5 steps/epoch, logged every 2 and at epoch end
    assert all(0 <= r["top1"] <= r["top5"] <= 100 for r in val)
    assert recs[-1]["kind"] == "summary" and recs[-1]["top1"] == val[-1]["top1"]
    # 40 images, 20 steps at lr 0.00625: the loss falls below its first value (chance: ln 10)
    assert train[-1]["loss"] < train[0]["loss"]
    ckpt = newest(run)
    assert ckpt["epoch"] == 4 and ckpt["step"] == 20 and ckpt["classes"][0] == "arrow"
    out = capsys.readouterr().out
    assert "fastres: done: 4 epochs" in out and str(run) in out


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "fused-sgd"])
def test_resume_continues_exactly_where_a_run_stopped(tiny_data, tmp_path, monkeypatch, capsys, optimizer):
    from fastres.run.trainer import Trainer

    common = ["--data", str(tiny_data), *TINY, "--out", str(tmp_path), "--epochs", "3", "--optimizer", optimizer]
    assert main([*common, "--name", "straight"]) == 0

    real_train_epoch = Trainer.train_epoch

    def dies_in_second_epoch(self, epoch, start=0):
        if epoch == 1:
            raise RuntimeError("power cut")  # the process dies mid-epoch, after checkpoint 1
        return real_train_epoch(self, epoch, start)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_second_epoch)
    with pytest.raises(RuntimeError, match="power cut"):
        main([*common, "--name", "cut"])
    monkeypatch.setattr(Trainer, "train_epoch", real_train_epoch)
    assert newest(tmp_path / "cut")["epoch"] == 1

    assert main(["--resume", str(tmp_path / "cut")]) == 0  # the saved config: no other flag needed
    straight, resumed = newest(tmp_path / "straight"), newest(tmp_path / "cut")
    assert resumed["epoch"] == 3 and resumed["step"] == straight["step"] == 15
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    val = [r["epoch"] for r in records(tmp_path / "cut") if r["kind"] == "val"]
    assert val == [1, 2, 3]


def test_resume_with_a_different_schedule_is_refused(tiny_data, tmp_path, capsys):
    common = ["--data", str(tiny_data), *TINY, "--out", str(tmp_path), "--epochs", "1", "--name", "a"]
    assert main(common) == 0
    code = main(
        ["--data", str(tiny_data), *TINY, "--batch-size", "4", "--epochs", "2", "--resume", str(tmp_path / "a")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--batch-size is 4 on this command line but the run was started with 8" in err, err


@pytest.mark.timeout(400)
def test_torchrun_four_ranks_on_two_virtual_nodes(tiny_data, tmp_path):
    """A real torchrun job: 4 processes, hierarchical bf16 all-reduce, LARS; rank 0 keeps the records."""
    env = {**clean_environ(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4", "-m",
           "fastres.train", "--data", str(tiny_data), *TINY, "--batch-size", "4", "--epochs", "2", "--optimizer",
           "lars", "--virtual-nodes", "2", "--wire-dtype", "bf16", "--dist-timeout", "60", "--out", str(tmp_path),
           "--name", "dist"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "hierarchical all-reduce over 2 nodes x 2 ranks" in proc.stdout, proc.stdout
    assert proc.stdout.count("fastres: done: 2 epochs") == 1  # rank 0 speaks for the job
    run = tmp_path / "dist"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]  # one run folder, not one per rank
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["ranks"] == 4 and doc["global_batch"] == 16 and "2 nodes" in doc["allreduce"]
    val = [r for r in records(run) if r["kind"] == "val"]
    assert [r["images"] for r in val] == [20, 20]  # every val image counted once over the 4 shards
    ckpt = newest(run)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * 2  # 40 images / 4 ranks = 10 per rank: 2 full batches of 4


def test_torchrun_three_ranks_on_dali_with_unequal_shards_ceil_steps_and_accumulation(tiny_data, tmp_path):
    """40 images over 3 DALI ranks (shards of 13, 13, 14): NVIDIA's ceil rounding makes 4 batches of 4
    per rank an epoch (ceil(13 / 4)), 2 optimizer steps of 2 accumulated batches; every rank runs the
    same steps each epoch (a rank left with a batch over would wait in a collective)."""
    pytest.importorskip("nvidia.dali")
    env = {**clean_environ(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3", "-m",
           "fastres.train", "--data", str(tiny_data), *TINY, "--backend", "dali", "--batch-size", "4",
           "--accumulate", "2", "--steps-rounding", "ceil", "--epochs", "3", "--workers", "1",
           "--dist-timeout", "60", "--out", str(tmp_path), "--name", "dali3"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "dali3"
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["backend"] == "dali" and doc["ranks"] == 3 and doc["global_batch"] == 24
    assert [r["images"] for r in records(run) if r["kind"] == "val"] == [20, 20, 20]
    ckpt = newest(run)
    assert ckpt["epoch"] == 3 and ckpt["step"] == 3 * 2 and ckpt["steps_per_epoch"] == 2


def launch_ranks(args: list[str], world: int, cwd: Path, port: int, stderr0=subprocess.DEVNULL) -> list:
    """`python -m fastres.train ARGS` as `world` plain processes, as srun or mpirun start them (no torchrun
    agent to tear the job down), each given its rank's variables."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "fastres.train", *args],
            cwd=cwd,
            env=rank_env(r, world, port),
            stdout=subprocess.DEVNULL,
            stderr=stderr0 if r == 0 else subprocess.DEVNULL,
            text=True,
        )
        for r in range(world)
    ]


def wait_for(path: Path, procs: list, seconds: float = 200) -> None:

    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.1)
    assert path.exists(), f"{path} was not written"


@pytest.mark.timeout(400)
def test_two_ranks_killed_and_resumed_end_bit_identical_to_a_straight_run(tiny_data, tmp_path):
    """Both ranks are killed mid-run; --resume on both continues each rank's shard (its own loader state)
    and ends with the same weights as a run that was never stopped."""
    common = ["--data", str(tiny_data), *TINY, "--epochs", "4", "--data-check", "none", "--out", str(tmp_path)]
    straight = launch_ranks([*common, "--name", "straight"], 2, tmp_path, free_port())
    for p in straight:
        assert p.wait(timeout=300) == 0
    cut = launch_ranks([*common, "--name", "cut"], 2, tmp_path, free_port())
    ckpt = tmp_path / "cut" / "checkpoints"
    try:
        wait_for(ckpt, cut)
        while not has_checkpoint(tmp_path / "cut") and all(p.poll() is None for p in cut):
            time.sleep(0.1)
    finally:
        for p in cut:
            p.kill()
            p.wait()
    saved = newest(tmp_path / "cut")
    assert 1 <= saved["epoch"] < 4 and len(saved["data_per_rank"]) == 2
    resumed = launch_ranks(
        [*common, "--resume", str(tmp_path / "cut")], 2, tmp_path, free_port(), stderr0=subprocess.PIPE
    )
    _, err = resumed[0].communicate(timeout=300)
    assert resumed[0].returncode == 0 and resumed[1].wait(timeout=60) == 0, err[-3000:]
    a, b = newest(tmp_path / "straight"), newest(tmp_path / "cut")
    assert a["epoch"] == b["epoch"] == 4 and a["step"] == b["step"]
    for key, value in a["model"].items():
        assert torch.equal(b["model"][key], value), key


@pytest.mark.timeout(300)
def test_a_rank_killed_mid_run_ends_the_other_with_one_line_and_keeps_the_checkpoint(tiny_data, tmp_path):
    """srun/mpirun-style launch (no torchrun to tear the job down): rank 1 is killed after the
    first checkpoint; rank 0 must stop with a one-line error naming a collective, no traceback,
    and the checkpoint must still load."""

    args = ["--data", str(tiny_data), *TINY, "--epochs", "50", "--collective-timeout", "30", "--data-check", "none",
            "--out", str(tmp_path), "--name", "killed"]  # fmt: skip
    procs = launch_ranks(args, 2, tmp_path, free_port(), stderr0=subprocess.PIPE)
    ckpt = tmp_path / "killed" / "checkpoints"
    try:
        wait_for(ckpt, procs)
        while not has_checkpoint(tmp_path / "killed") and all(p.poll() is None for p in procs):
            time.sleep(0.1)
        procs[1].kill()
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 75, err[-3000:]  # a lost peer: EX_TEMPFAIL, what a launcher restarts on
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("python -m fastres.train: error:")]
    assert len(errors) == 1, err[-3000:]
    assert "failed" in errors[0] and (
        "bucket" in errors[0] or "all_reduce" in errors[0] or "broadcast" in errors[0] or "all_gather" in errors[0]
    ), errors[0]
    assert waited < 30 + 20, waited  # the dead peer is noticed at once (closed socket) or at the timeout
    state = newest(tmp_path / "killed")  # intact: the rename makes a checkpoint whole or absent
    assert state["epoch"] >= 1 and state["step"] == state["epoch"] * 2  # 20 images per rank: 2 steps of 8
    from fastres.model import build_model

    build_model("resnet18", 10).load_state_dict(state["model"])


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_WORLD_SIZE"),
        (
            {
                "RANK": "0",
                "WORLD_SIZE": "2",
                "LOCAL_RANK": "0",
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "FASTRES_VIRTUAL_NODES": "3",
            },
            "FASTRES_VIRTUAL_NODES",
        ),
    ],
)
def test_inconsistent_launcher_environment_is_one_line_exit_2(tmp_path, env, message):
    proc = subprocess.run(
        [sys.executable, "-m", "fastres.train", "--epochs", "1"],
        cwd=tmp_path,
        env={**clean_environ(), **env, "FASTRES_DATA": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in one_line_error(proc.stderr)
    assert not (tmp_path / "runs").exists()


def test_a_diverging_run_stops_with_one_line_and_keeps_its_checkpoint(tiny_data, tmp_path, capsys, monkeypatch):
    from torch import nn

    from fastres.run import trainer as trainer_module

    real = nn.CrossEntropyLoss.forward
    calls = {"n": 0}

    def nan_after_one_epoch(self, logits, labels):
        calls["n"] += 1
        loss = real(self, logits, labels)
        return loss * float("nan") if calls["n"] > 5 else loss  # 5 steps per epoch

    monkeypatch.setattr(nn.CrossEntropyLoss, "forward", nan_after_one_epoch)
    args = ["--data", str(tiny_data), *TINY, "--epochs", "3", "--out", str(tmp_path), "--name", "nan"]
    code = main([*args, "--max-skipped-steps", "3"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps in a row had NaN/Inf gradients" in err[0], err
    assert issubclass(trainer_module.TrainingDiverged, FloatingPointError)
    state = newest(tmp_path / "nan")
    assert state["epoch"] == 1 and f"the last checkpoint is {tmp_path / 'nan' / 'checkpoints'}" in err[0], err
    train = [r for r in records(tmp_path / "nan") if r["kind"] == "train"]
    assert all(r["loss"] is None or r["loss"] == r["loss"] for r in train)  # never a NaN in the log
    assert sum(r["skipped_steps"] for r in train) >= 3


@pytest.mark.parametrize("backend", ["pytorch", "dali"])
def test_fit_releases_loader_workers_and_the_log_when_it_raises(tiny_data, tmp_path, monkeypatch, backend):
    import multiprocessing

    from fastres.config import parse_args
    from fastres.run.trainer import Trainer

    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    args = [*TINY, "--data", str(tiny_data), "--workers", "2", "--backend", backend, "--out", str(tmp_path)]
    trainer = Trainer.from_config(parse_args(args))
    run = trainer.parts

    def dies_after_one_batch(self, epoch, start=0):
        for _ in self.parts.data.train:  # the loader's worker processes are up now
            break
        raise RuntimeError("boom")

    monkeypatch.setattr(Trainer, "train_epoch", dies_after_one_batch)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    assert run.log is None and run.lock is None  # closed, released
    if backend == "pytorch":
        assert run.data.train.loader._iterator is None
    else:
        assert run.data.train._iter is None  # the DALI pipeline dropped
    assert not multiprocessing.active_children(), multiprocessing.active_children()  # no worker left behind


@pytest.mark.slow
def test_compile_trains_like_eager_and_saves_the_plain_model(tiny_data, tmp_path):
    # --compile: torch.compile (inductor) runs forward and backward; the parameters, the
    # checkpoint and its keys are the model's own, and the losses are eager's up to rounding
    from torch._dynamo.utils import counters

    losses, graphs = {}, {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        counters.clear()
        # --val-batch-size 20: the 20 validation images in one full batch, so no partial batch
        # makes dynamo compile a second, dynamic-shape graph (minutes on a slow 2-core box)
        args = ["--data", str(tiny_data), *TINY, "--epochs", "1", "--val-batch-size", "20", "--out", str(tmp_path),
                "--name", name, *extra]  # fmt: skip
        assert main(args) == 0
        losses[name] = [r["loss"] for r in records(tmp_path / name, "train")]
        graphs[name] = counters["stats"]["unique_graphs"]
    assert graphs == {"eager": 0, "compiled": graphs["compiled"]} and graphs["compiled"] >= 1  # dynamo traced it
    assert len(losses["eager"]) == 3
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3)
    eager, compiled = newest(tmp_path / "eager"), newest(tmp_path / "compiled")
    assert list(compiled["model"]) == list(eager["model"])  # no "_orig_mod." prefix
    for key, value in eager["model"].items():
        assert torch.allclose(compiled["model"][key].float(), value.float(), rtol=1e-2, atol=1e-4), key
