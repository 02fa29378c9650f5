"""`--lr-global-batch`: a preset's absolute rate, meant for its own global batch, run at another one.

LARS's conv/fc step (lr x eta x ||w|| / ||g||) is what the records keep at every batch; BN parameters
and biases (trust 1) step by lr itself, as SGD does, so at global batch B their rate is scaled to
lr x B / lr_global_batch. Checked against the update written out in float64 (docs/design.md, decision 5),
through the pieces the trainer calls (build_optimizer, run_schedule, set_lrs, one step), and on
`--print-schedule`, which shows both rates.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastres import train
from fastres.config import TrainConfig, load_preset
from fastres.model import build_model
from fastres.optim import build_optimizer
from fastres.optim.factory import set_lrs
from fastres.optim.schedule import run_schedule


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)


def _first_step(cfg: TrainConfig, global_batch: int) -> tuple[nn.Module, dict, dict, float, float]:
    """One step at the peak from fresh momentum: the model, its tensors and gradients before the step (float64),
    and the rates the schedule gave the adapted and the other tensors."""
    torch.manual_seed(0)
    model = build_model("resnet18", 10, zero_init_last_gamma=False)
    opt = build_optimizer(cfg, model)
    sched = run_schedule(cfg, steps_per_epoch=4, global_batch=global_batch)
    step = sched.warmup_steps - 1  # the warm-up's last step: the peak (every schedule_origin)
    set_lrs(opt, sched(step), sched.unadapted(step))
    opt.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(6, 3, 16, 16)), torch.randint(0, 10, (6,))).backward()
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.double().clone() for n, p in model.named_parameters()}
    opt.step()
    return model, before, grads, sched(step), sched.unadapted(step)


@pytest.mark.parametrize("batch", [3264, 816])
def test_lars_preset_at_another_batch_scales_only_the_unadapted_rate(batch):
    """mlperf-lars-3k (LARS, 10.5 for 3,264 images, fc bias decayed) at its batch and at a quarter of it."""
    cfg = TrainConfig(**{**load_preset("mlperf-lars-3k"), "global_batch": batch, "epochs": 4}).validate()
    model, before, grads, lr, unadapted = _first_step(cfg, batch)
    assert lr == pytest.approx(10.5) and unadapted == pytest.approx(10.5 * batch / 3264)
    wd, eta = cfg.weight_decay, cfg.lars_eta
    after = dict(model.named_parameters())
    for name in ("conv1.weight", "layer3.0.conv2.weight", "fc.weight", "fc.bias", "bn1.weight", "layer2.1.bn2.bias"):
        w, g = before[name], grads[name]
        if w.ndim > 1:  # adapted: lr x trust x (g + wd w), trust = eta ||w|| / (||g|| + wd ||w||)
            step = lr * eta * w.norm() / (g.norm() + wd * w.norm()) * (g + wd * w)
        elif name == "fc.bias":  # bias_decay: decayed, not adapted
            step = unadapted * (g + wd * w)
        else:  # BN: neither
            step = unadapted * g
        torch.testing.assert_close(after[name].detach().double(), w - step, rtol=1e-5, atol=1e-7, msg=name)


def test_sgd_with_an_absolute_rate_for_another_batch_scales_every_tensor():
    """Without LARS no tensor is adapted: an absolute lr with --lr-global-batch is linear scaling for all."""
    over = {"optimizer": "fused-sgd", "momentum_convention": "torch", "momentum_correction": False,
            "global_batch": 1024, "epochs": 10, "bias_decay": False}  # fmt: skip
    cfg = TrainConfig(**{**load_preset("you-32k"), **over}).validate()
    model, before, grads, lr, unadapted = _first_step(cfg, 1024)
    assert unadapted == pytest.approx(20.87 * 1024 / 32768)
    after = dict(model.named_parameters())
    for name in ("conv1.weight", "fc.bias", "bn1.weight"):
        w, g = before[name], grads[name]
        wd = cfg.weight_decay if w.ndim > 1 else 0.0
        torch.testing.assert_close(after[name].detach().double(), w - unadapted * (g + wd * w), rtol=1e-5, atol=1e-7)


def test_print_schedule_shows_both_rates(capsys):
    """you-32k at 4,096 images per step: conv/fc weights at the preset's 20.87, BN and biases at 20.87 / 8."""
    assert (
        train.main(["--config", "you-32k", "--global-batch", "4096", "--train-images", "1281167", "--print-schedule"])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert "--lr-global-batch 32,768" in out[0] and out[1].split()[-1] == "lr_bn_bias"
    peak = [line.split() for line in out[2:] if line.split()[0] == "5"][0]  # the 5-epoch warm-up's end
    assert float(peak[2]) == pytest.approx(20.87) and float(peak[6]) == pytest.approx(20.87 * 4096 / 32768)
    assert (
        train.main(["--config", "you-32k", "--train-images", "1281167", "--print-schedule"]) == 0
    )  # at its own batch: one rate
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert all(r[2] == r[6] for r in rows)


def test_lr_global_batch_with_a_rate_per_256_images_is_refused_naming_the_flag(capsys):
    assert train.main(["--config", "you-32k", "--lr-unit", "per-256", "--print-schedule"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr-global-batch must be none with --lr-unit per-256" in err[0]
    assert "preset you-32k" in err[0] and "give --lr-global-batch" in err[0]
