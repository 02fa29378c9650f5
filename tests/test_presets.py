"""The recipe presets: each parses, prints its schedule without data or device, and steps.

goyal-8k runs 3 steps through `fastres.train.main` on the built-in data scaled down (every
key it sets is one the trainer honours today: schedule keys through run_schedule, optimizer
keys through build_optimizer). pfn-32k and the MLPerf presets set keys that the trainer does
not wire yet (the RMSprop blend per step, BN without moving averages, the target accuracy,
zero-init off), so their 3 steps run here through build_model / build_optimizer /
run_schedule, the pieces the trainer calls, with the per-step calls a trainer makes.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from fastres import train
from fastres.config import TrainConfig, load_preset, parse_args
from fastres.model import build_model
from fastres.optim import build_optimizer
from fastres.optim.schedule import run_schedule

RECIPES = {"goyal-8k": (8192, 90), "pfn-32k": (32768, 90), "mlperf-lars-3k": (3264, 37), "mlperf-lars-32k": (33280, 58),
           "you-32k": (32768, 90)}  # fmt: skip


def _nvidia_poly(base: float, warmup: int, total: int):
    """NVIDIA's PolySchedule (training_results_v0.7 / v2.0, NVIDIA/benchmarks/resnet/implementations/mxnet/
    common/fit.py) at MXNet's update number i = step + 1."""
    return lambda s: base * (s + 1) / warmup if s + 1 <= warmup else 1e-4 + (base - 1e-4) * (
        1 - (s + 1 - warmup) / (total - warmup)) ** 2  # fmt: skip


def _goyal(s: int) -> float:
    """Goyal et al. sec. 2.2 / 5.1 at 8K, 156 steps per epoch: 0.1 at iteration 0, + a constant each to 3.2
    after 5 epochs, x0.1 at epochs 30, 60, 80."""
    if s < 5 * 156:
        return 0.1 + (3.2 - 0.1) * s / (5 * 156)
    return 3.2 * 0.1 ** sum(s >= e * 156 for e in (30, 60, 80))


def _you(s: int) -> float:  # the preset's (UNCONFIRMED) values: 5-epoch warm-up to 20.87, poly(2) to 0; 39 steps
    W, T = 5 * 39, 90 * 39
    return 20.87 * (s + 1) / W if s < W else 20.87 * (1 - (s - W) / (T - W)) ** 2


def _pfn(s: int) -> float:  # Akiba et al. sec. 2.3: 0.1 x 32768 / 256 x 0.5, 0.075, 0.01, 0.001 from 0, 40, 70, 85
    return 12.8 * (0.5, 0.075, 0.01, 0.001)[sum(s >= e * 39 for e in (40, 70, 85))]


# name -> (steps per epoch as the source counts them, lr(step) as the source writes it, momentum mu, corrected)
SOURCES = {
    "goyal-8k": (156, _goyal, 0.9, True),
    "mlperf-lars-32k": (39, _nvidia_poly(21.2, 16 * 39, 58 * 39), 0.94, True),  # ceil(floor(1281167/512)/65)
    "mlperf-lars-3k": (393, _nvidia_poly(10.5, 2 * 393, 37 * 393), 0.9, True),  # ceil(floor(1281167/64)/51)
    "you-32k": (39, _you, 0.9, False),
    "pfn-32k": (39, _pfn, 0.9, True),
}


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_preset_parses_and_prints_its_schedule(name, capsys):
    global_batch, epochs = RECIPES[name]
    cfg = parse_args(["--config", name])
    assert (cfg.global_batch, cfg.epochs, cfg.batch_size) == (global_batch, epochs, global_batch)  # one process
    assert train.main(["--config", name, "--print-schedule", "--train-images", "1281167"]) == 0  # ImageNet's
    out = capsys.readouterr().out.splitlines()
    header = out[1].split()
    assert header[:5] == ["epoch", "step", "lr", "momentum", "batch"]
    rows = [line.split() for line in out[2:]]
    assert len(rows) == epochs and [int(r[0]) for r in rows] == list(range(epochs))
    assert {int(r[4]) for r in rows} == {global_batch}
    steps, lr_of, mu, corrected = SOURCES[name]
    assert f"x {steps} steps" in out[0]
    for r in rows:
        s = int(r[0]) * steps
        assert float(r[1]) == s
        assert float(r[2]) == pytest.approx(lr_of(s), rel=1e-5)
        momentum = mu * lr_of(s) / lr_of(s - 1) if corrected and s > 0 else mu
        assert float(r[3]) == pytest.approx(momentum, rel=1e-3)
    if name == "goyal-8k":
        assert float(rows[0][2]) == 0.1  # the paper's first iteration, exactly


def test_print_schedule_follows_global_batch_train_images_and_the_launch(capsys, monkeypatch):
    assert train.main(["--config", "goyal-8k", "--print-schedule", "--global-batch", "1024", "--train-images",
                       "10240"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert "10 steps" in out[0] and out[2].split()[4] == "1024"
    assert float(out[7].split()[2]) == pytest.approx(0.1 * 1024 / 256)  # epoch 5: the peak
    # no --global-batch: the launch's, batch x processes x accumulate
    monkeypatch.setenv("WORLD_SIZE", "4")
    for var, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "4"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", "29500")):  # fmt: skip
        monkeypatch.setenv(var, value)
    assert train.main(["--config", "goyal-8k", "--print-schedule", "--batch-size", "16", "--accumulate", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[4] == str(16 * 4 * 2)


def test_goyal_8k_runs_3_steps_on_the_builtin_data_scaled_down(tiny_data, tmp_path, capsys):

    data = tiny_data
    argv = ["--config", "goyal-8k", "--data", str(data), "--arch", "resnet18", "--image-size", "32",
            "--batch-size", "13", "--workers", "0", "--epochs", "1", "--warmup-epochs", "0.5", "--device", "cpu",
            "--out", str(tmp_path / "runs"), "--name", "g", "--no-progress", "--log-every", "1"]  # fmt: skip
    assert train.main(argv) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "runs" / "g" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3]  # 40 images at 13 per step
    # the lr of each step is the preset's schedule: warm-up from 1/32 of the peak, Nesterov SGD
    sched = run_schedule(parse_args(argv), 3, 13)
    assert [r["lr"] for r in steps] == pytest.approx([sched(i) for i in range(3)])
    assert steps[0]["lr"] == pytest.approx(0.1 * 13 / 256 * 0.03125)  # iteration 0 at the warm-up's start
    # momentum correction: the step's momentum is 0.9 x lr_t / lr_t-1 (the trainer logs the group's)
    assert steps[1]["momentum"] == pytest.approx(0.9 * steps[1]["lr"] / steps[0]["lr"])
    assert all(math.isfinite(r["loss"]) for r in steps)


def _three_steps(name: str, **over):
    cfg = TrainConfig(**{**load_preset(name), **over}).validate()
    torch.manual_seed(0)
    model = build_model("resnet18", 10, zero_init_last_gamma=cfg.zero_init_last_gamma)
    last_gammas = torch.cat([m.last_bn().weight.detach().clone() for m in model.modules() if hasattr(m, "last_bn")])
    opt = build_optimizer(cfg, model)
    sched = run_schedule(cfg, steps_per_epoch=3, global_batch=cfg.global_batch)
    start = opt.layout.params.clone() if hasattr(opt, "layout") else None
    losses = []
    for step in range(3):
        x = torch.randn(4, 3, 16, 16)
        y = torch.randint(0, 10, (4,))
        for g in opt.param_groups:  # what the trainer does each step
            g["lr"] = sched(step)
            g["momentum"] = sched.momentum(step)
            g["rmsprop_blend"] = sched.rmsprop_blend(step)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return cfg, last_gammas, opt, sched, start, losses


@pytest.mark.parametrize("name", ["pfn-32k", "mlperf-lars-3k", "mlperf-lars-32k"])
def test_the_other_presets_step_3_times_through_the_trainers_pieces(name):
    warmup = min(1, load_preset(name).get("warmup_epochs", 0))
    cfg, last_gammas, opt, sched, start, losses = _three_steps(name, epochs=2, warmup_epochs=warmup)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(start, opt.layout.params)
    # Goyal et al. sec. 5.1 starts the last gamma of each block at 0; NVIDIA's MLPerf runs at 1
    assert torch.equal(last_gammas, torch.full_like(last_gammas, 0.0 if cfg.zero_init_last_gamma else 1.0))
    assert cfg.zero_init_last_gamma == (name == "pfn-32k")
    if name == "pfn-32k":
        assert sched.rmsprop_blend(0) > 0.98 and opt.rmsprop_sq_avg is not None and opt.rmsprop_sq_avg.abs().sum() > 0
        assert opt.mode & 2 == 0  # MLPerf convention: the rates inside the momentum
    else:
        assert type(opt).__name__ == "FusedLARS" and opt.eps == cfg.lars_eps


def _error_of(argv, capsys) -> str:
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_input_gets_one_line_errors(capsys, monkeypatch):
    assert "--config nope: no such preset; shipped presets: builtin, goyal-8k" in _error_of(
        ["--config", "nope", "--print-schedule"], capsys
    )
    assert "--accumulate must be an integer in [1, 1024], got 0" in _error_of(
        ["--config", "goyal-8k", "--accumulate", "0", "--print-schedule"], capsys
    )
    assert "--factors must be 4 numbers" in _error_of(
        ["--config", "goyal-8k", "--factors", "1,0.1", "--print-schedule"], capsys
    )
    assert "--rmsprop-lr must be set with --optimizer rmsprop-warmup" in _error_of(
        ["--config", "builtin", "--optimizer", "rmsprop-warmup", "--print-schedule"], capsys
    )
    assert "--momentum-convention must be torch or auto with --optimizer sgd" in _error_of(
        ["--config", "builtin", "--optimizer", "sgd", "--momentum-convention", "mlperf", "--print-schedule"], capsys
    )
    for var, value in (("RANK", "0"), ("WORLD_SIZE", "3"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "3"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):  # fmt: skip
        monkeypatch.setenv(var, value)
    assert "--global-batch 8192 is not divisible by 3 processes x --accumulate 1 = 3" in _error_of(
        ["--config", "goyal-8k", "--print-schedule"], capsys
    )
    assert "--batch-size 8 x 3 processes x --accumulate 1 is not --global-batch 48" in _error_of(
        ["--config", "goyal-8k", "--batch-size", "8", "--global-batch", "48", "--print-schedule"], capsys
    )


def test_mlperf_lars_3k_scaled_down_runs_ceil_steps_with_ghost_bn_and_the_correction(tiny_data, tmp_path, capsys):
    """--steps-rounding ceil: 40 images at 12 per step make 4 steps (the last one of 4 images), as NVIDIA's
    get_epoch_size counts; ghost BN over 5, the fc bias decayed, LARS with the momentum correction."""

    data = tiny_data
    argv = ["--config", "mlperf-lars-3k", "--data", str(data), "--arch", "resnet18", "--image-size", "32",
            "--batch-size", "12", "--bn-virtual-batch", "5", "--workers", "0", "--backend", "pytorch", "--epochs", "1",
            "--warmup-epochs", "0.5", "--device", "cpu", "--out", str(tmp_path / "runs"), "--name", "m",
            "--no-progress", "--log-every", "1", "--target-top1", "100"]  # fmt: skip
    assert train.main(argv) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "runs" / "m" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]  # ceil(40 / 12); floor would make 3
    assert steps[0]["lr"] == pytest.approx(10.5 * 1 / 2)  # MXNet's update 1 of a 2-step warm-up
    assert steps[1]["momentum"] == pytest.approx(0.9 * 2)  # lr 5.25 -> 10.5: mu x lr_t / lr_t-1
    assert all(math.isfinite(r["loss"]) for r in steps)


@pytest.mark.timeout(400)
def test_you_32k_runs_on_two_cpu_processes_over_gloo(tiny_data, tmp_path):
    """The Berkeley record ran on CPUs: you-32k as 2 CPU processes (torchrun, Gloo), scaled down."""
    import os
    import subprocess
    import sys

    data = tiny_data
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_",
                                                                     "SLURM_", "OMPI_", "PMI_"))}  # fmt: skip
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "fastres.train", "--config", "you-32k", "--data", str(data), "--arch", "resnet18", "--image-size", "32",
           "--global-batch", "16", "--workers", "0", "--threads", "1", "--epochs", "1", "--warmup-epochs", "0.5",
           "--device", "cpu", "--dist-timeout", "60", "--out", str(tmp_path / "runs"), "--name", "y",
           "--no-progress", "--log-every", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cpu, global batch 16" in proc.stdout and "gloo" in (tmp_path / "runs" / "y" / "config.yaml").read_text()
    records = [json.loads(line) for line in (tmp_path / "runs" / "y" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2]  # 40 images / 2 processes = 20 each: 2 batches of 8
    assert steps[0]["lr"] == pytest.approx(20.87 / 1)  # the 1-step warm-up reaches the peak at its step


def test_print_schedule_counts_the_dataset_the_run_trains_on_and_refuses_what_training_refuses(capsys, tmp_path):
    """The built-in preset's 6,000 images and --smoke's 200 (counted without writing them), a tree's files as
    training lists them; an epoch with no optimizer step is refused in training's words (before, the printer
    assumed ImageNet's 1,281,167 images and printed a schedule training refuses)."""
    from fastres.data.builtin import ensure_builtin_dataset

    for argv, steps in ((["--config", "builtin"], "187 steps (6,000 images"), (["--smoke"], "12 steps (200 images")):
        assert train.main([*argv, "--print-schedule"]) == 0
        assert steps in capsys.readouterr().out.splitlines()[0], argv
    data = ensure_builtin_dataset(tmp_path, train_per_class=4, val_per_class=2, workers=1)
    renamed = data.rename(tmp_path / "tree")  # not named as the built-in dataset: listed
    assert train.main(["--data", str(renamed), "--batch-size", "8", "--print-schedule"]) == 0
    assert "5 steps (40 images" in capsys.readouterr().out.splitlines()[0]
    refused = "--accumulate 1000: an epoch has only 3 batches per process: lower --accumulate or --batch-size"
    assert refused in _error_of(["--config", "builtin", "--accumulate", "1000", "--train-images", "100",
                                 "--print-schedule"], capsys)  # fmt: skip
    # the same words as training's own refusal
    run = ["--data", str(renamed), "--batch-size", "8", "--accumulate", "6", "--workers", "0", "--backend", "pytorch",
           "--out", str(tmp_path / "runs"), "--no-progress"]  # fmt: skip
    printed = _error_of([*run, "--print-schedule"], capsys)
    assert printed == _error_of(run, capsys) and "an epoch has only 5 batches per process" in printed
