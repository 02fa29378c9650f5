"""Optimizers and schedule kinds by name: one entry each, registered here in the test alone, and
`python -m fastres.train` trains with them (their flag values, --help, the config's checks, the
schedule, the per-step values the loop sets, a step the loop takes), with nothing else changed."""

from __future__ import annotations

import pytest
import torch

from fastres.data.builtin import ensure_builtin_dataset
from fastres.optim.factory import OPTIMIZERS, OptimInfo
from fastres.optim.schedule import SCHEDULES, Decay
from fastres.train import main

import tiny


class PlainSGD(torch.optim.Optimizer):
    """w -= lr * g, recording the hyperparameters each step was given (the peer of nothing: a test's own)."""

    def __init__(self, params, taken: list):
        super().__init__(params, dict(lr=0.0, momentum=0.0, toy_epoch=-1.0))
        self.taken = taken

    @torch.no_grad()
    def step(self, closure=None):
        self.taken.append([(g["lr"], g["momentum"], g["toy_epoch"]) for g in self.param_groups])
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])


@pytest.fixture
def toy(monkeypatch) -> dict:
    """Registers optimizer `toy` and schedule kind `halving` for this test only; what the build saw."""
    seen: dict = {"taken": []}

    def build(groups, cfg, inside, layout):
        seen["built"] = (cfg.optimizer, inside, layout is not None, [g["weight_decay"] for g in groups])
        return PlainSGD(groups, seen["taken"])

    info = OptimInfo("plain SGD, a test's", build, conventions=("torch",), group_values=lambda cfg, e: {"toy_epoch": e})
    monkeypatch.setitem(OPTIMIZERS, "toy", info)
    monkeypatch.setitem(SCHEDULES, "halving", Decay("half the peak after the warm-up", lambda s, step, t: s.peak / 2))
    return seen


def test_an_optimizer_and_a_decay_of_one_entry_each_train_a_step_through_the_command_line(toy, tmp_path, capsys):
    data = ensure_builtin_dataset(tmp_path / "data", train_per_class=1, val_per_class=1, workers=1)  # 10 images
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "{sgd,fused-sgd,lars,rmsprop-warmup,toy}" in text and "toy (plain SGD, a test's)" in text
    assert "torch for sgd, fused-sgd and toy); sgd allows torch only; toy allows torch only" in text
    assert (
        "{cosine,poly,step,piecewise,constant,halving}" in text and "halving (half the peak after the warm-up)" in text
    )

    run = ["--data", str(data), *tiny.TINY, "--epochs", "1", "--lr", "0.256", "--out", str(tmp_path), "--name", "r"]
    assert main([*run, "--optimizer", "toy", "--schedule", "halving"]) == 0, capsys.readouterr().err
    assert toy["built"] == ("toy", False, True, [1e-4, 0.0])  # torch's convention, the run's flat layout, decay
    peak = 0.256 * 8 / 256  # one step of the global batch 8 (10 images), no warm-up: the decay's half of the peak
    assert toy["taken"] == [[(pytest.approx(peak / 2), 0.9, 0.0)] * 2]  # the per-step value: epoch 0 of 1

    # --momentum-convention mlperf: refused as the entry says, before any work
    assert main([*run, "--name", "s", "--optimizer", "toy", "--momentum-convention", "mlperf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "python -m fastres.train: error: --momentum-convention must be torch or auto with --optimizer toy (plain SGD, "
        "a test's; fused-sgd takes mlperf), got 'mlperf'"
    )
    assert not (tmp_path / "s").exists()


def test_without_the_entries_the_names_are_refused(capsys):
    for flag, value in (("--optimizer", "toy"), ("--schedule", "halving")):
        with pytest.raises(SystemExit) as e:
            main(["--print-config", flag, value])
        assert e.value.code == 2 and f"invalid choice: '{value}'" in capsys.readouterr().err
