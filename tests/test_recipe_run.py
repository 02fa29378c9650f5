"""The recipe keys the training loop acts on, end to end: gradient accumulation (also across a
preemption), a target accuracy, fp16 with loss scaling, the RMSprop warm-up, BN options."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch

from fastres.train import main

from tiny import STEPPED, assert_same_run, newest, one_line_error, records, start, wait_until

pytestmark = pytest.mark.timeout(600)


def test_accumulation_steps_once_per_n_batches_and_resumes_mid_step_count_exactly(tiny_data, tmp_path):
    # 40 images, batch 4, 2 passes per step: 5 optimizer steps per epoch, global batch 8
    cmd = ["--data", str(tiny_data), *STEPPED, "--batch-size", "4", "--accumulate", "2", "--epochs", "2",
           "--out", str(tmp_path)]  # fmt: skip
    straight = start([*cmd, "--name", "straight"], tmp_path)
    _, err = straight.communicate(timeout=400)
    assert straight.returncode == 0, err[-3000:]
    train = records(tmp_path / "straight", "train")
    assert [r["step"] for r in train] == list(range(1, 11)) and newest(tmp_path / "straight")["step"] == 10
    assert train[0]["lr"] == pytest.approx(0.2 * 8 / 256 * (1 + __import__("math").cos(0)) / 2, rel=1e-6)
    run = tmp_path / "cut"
    proc = start([*cmd, "--name", "cut", "--resume", "auto"], tmp_path)
    wait_until(lambda: len(records(run, "train")) >= 3, [proc])
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    again = start([*cmd, "--name", "cut", "--resume", "auto"], tmp_path)
    _, err = again.communicate(timeout=400)
    assert again.returncode == 0, err[-3000:]
    assert_same_run(tmp_path / "straight", run)


def test_target_accuracy_stops_the_run(tiny_data, tmp_path, capsys):
    args = [
        "--data",
        str(tiny_data),
        *STEPPED,
        "--epochs",
        "3",
        "--target-top1",
        "0",
        "--out",
        str(tmp_path),
        "--name",
        "t",
    ]
    assert main(args) == 0
    assert "reached the target top-1 0.0% after epoch 1" in capsys.readouterr().out
    kinds = [r["kind"] for r in records(tmp_path / "t")]
    assert kinds.count("val") == 1 and "target" in kinds and records(tmp_path / "t", "summary")[0]["epochs"] == 1


def test_fp16_loss_scaling_rmsprop_warmup_and_bn_options_run(tiny_data, tmp_path):
    args = ["--data", str(tiny_data), *STEPPED, "--epochs", "1", "--precision", "fp16", "--optimizer", "rmsprop-warmup",
            "--rmsprop-lr", "0.001", "--bn-eval", "batch", "--no-zero-init-last-gamma", "--out", str(tmp_path),
            "--name", "r"]  # fmt: skip
    assert main(args) == 0
    state = newest(tmp_path / "r")
    scale = state["extra"]["loss_scaler"]["scale"]
    assert scale.item() > 0 and torch.isfinite(scale)
    losses = [r["loss"] for r in records(tmp_path / "r", "train") if r["loss"] is not None]
    assert losses and all(loss == loss for loss in losses)
    last_gamma = state["model"]["layer1.0.bn2.weight"]  # resnet18's last BN of a block: not zero-initialised
    assert not torch.equal(last_gamma, torch.zeros_like(last_gamma))


def test_bn_group_that_does_not_divide_the_processes_is_one_line(tiny_data, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastres.train", "--data", str(tiny_data), *STEPPED, "--bn-group", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert "--bn-group 2 must divide the 1 processes" in one_line_error(proc.stderr)
