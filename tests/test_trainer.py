"""The training loop (fastres.run.trainer.Trainer) driven through stand-in parts: a tiny model, batches held
in memory, checkpoints and records kept in lists. No run folder, no process group, no loader processes.

The reference is a plain PyTorch loop written here (torch SGD, the loss averaged over the micro-batches of a
step, the rate of each step set before it): the trained weights must be the same, and the accuracy each
validation reports must be the model's on the validation images. A stop signal in training or in validation
ends the run in a checkpoint; a Trainer handed that checkpoint's model, optimizer and TrainState goes on to
the weights of a run never stopped.
"""

from __future__ import annotations

import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from fastres.kernels.flat import FlatParams
from fastres.run.execution import resolve_precision
from fastres.run.parts import RunParts
from fastres.run.preemption import Preempted, StopSignals
from fastres.run.state import TrainState
from fastres.run.step import NoLossScaling
from fastres.run.stepguard import StepGuard
from fastres.run.trainer import Trainer

BATCH, ACCUMULATE, STEPS, EPOCHS = 4, 2, 3, 2  # 3 optimizer steps of 2 micro-batches of 4 images per epoch
CLASSES = ("a", "b", "c")


@dataclass
class LoopConfig:
    """The settings the loop reads (fastres.config.TrainConfig has them among many others)."""

    epochs: int = EPOCHS
    accumulate: int = ACCUMULATE
    log_every: int = 2
    bn_eval: str = "running"
    target_top1: float | None = None
    name: str | None = "stand-in"
    progress: bool = False
    progress_seconds: float = 60.0
    arch: str = "tiny"

    def to_dict(self) -> dict:
        return asdict(self)


class Schedule:
    """A rate that changes every step, a constant momentum."""

    peak = 0.4

    def __call__(self, step: int) -> float:
        return 0.4 / (1 + step)

    unadapted = __call__

    def momentum(self, step: int) -> float:
        return 0.9

    def rmsprop_blend(self, step: int) -> float:
        return 0.0

    def group_values(self, step: int) -> dict[str, float]:
        """The per-step values of the param groups, by key (the loop writes those a group has)."""
        return {"momentum": self.momentum(step), "rmsprop_blend": self.rmsprop_blend(step)}


class InMemory:
    """Batches of images held in memory, in one fixed order every epoch; `signal_at`: SIGUSR1 to this process
    as batch `signal_at` of the next epoch read is handed over."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch: int):
        self.images, self.labels, self.batch = images, labels, batch
        self.start, self.signal_at = 0, None

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.start = start_step

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch)  # the last batch may be short

    def __iter__(self):
        start, self.start = self.start, 0
        for i in range(start, len(self)):
            if i == self.signal_at:
                self.signal_at = None
                os.kill(os.getpid(), signal.SIGUSR1)
            yield self.images[i * self.batch : (i + 1) * self.batch], self.labels[i * self.batch : (i + 1) * self.batch]


@dataclass
class Data:
    train: InMemory
    val: InMemory
    classes: tuple = CLASSES
    root: Path = Path("in-memory")

    @property
    def train_size(self) -> int:
        return len(self.train.labels)

    @property
    def val_size(self) -> int:
        return len(self.val.labels)

    def close(self) -> None:
        pass


class Saves:
    """Checkpoints kept in a list: (step, best, wait, the snapshot)."""

    max_failures, failing = 3, False

    def __init__(self):
        self.saved = []

    def timer_due(self) -> bool:
        return False

    def step_due(self, step: int) -> bool:
        return False

    def save(self, snapshot, step: int, best: bool = False, wait: bool = False) -> None:
        self.saved.append((step, best, wait, snapshot()))

    def newest(self):
        return f"saved step {self.saved[-1][0]}" if self.saved else None

    def finish(self) -> None:
        pass


class Records:
    def __init__(self):
        self.records = []

    def write(self, kind: str, **fields) -> None:
        self.records.append(dict(kind=kind, **fields))

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]

    def close(self) -> None:
        pass


class NoBadSamples:
    def drain(self, split: str, *loaders) -> int:
        return 0


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def data() -> Data:
    g = torch.Generator().manual_seed(1)
    n_train, n_val = STEPS * ACCUMULATE * BATCH, 10
    images = torch.randn(n_train + n_val, 3, 8, 8, generator=g)
    labels = torch.randint(0, len(CLASSES), (n_train + n_val,), generator=g)
    return Data(InMemory(images[:n_train], labels[:n_train], BATCH), InMemory(images[n_train:], labels[n_train:], 4))


def stand_in_parts(model: nn.Module, data: Data, cfg: LoopConfig | None = None) -> RunParts:
    layout = FlatParams(model)  # the parameters become views of one flat buffer, as in a run
    guard = StepGuard(torch.device("cpu"), max_in_a_row=3)
    return RunParts(
        cfg or LoopConfig(),
        precision=resolve_precision("fp32", "cpu"),
        stop=StopSignals(),
        run_dir=Path("in-memory-run"),
        bad=NoBadSamples(),
        data=data,
        model=model,
        forward=model,
        criterion=nn.CrossEntropyLoss(),
        layout=layout,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9),
        scaler=NoLossScaling(guard.check),
        guard=guard,
        schedule=Schedule(),
        steps_per_epoch=STEPS,
        global_batch=BATCH * ACCUMULATE,
        saver=Saves(),
        log=Records(),
    )


def plain_loop(model: nn.Module, data: Data, epochs: int = EPOCHS) -> list[float]:
    """The reference: what the loop must compute, written with torch alone; each epoch's top-1 (%)."""
    opt, schedule, top1 = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9), Schedule(), []
    step = 0
    for _ in range(epochs):
        model.train()
        batches = iter(data.train)
        for _ in range(STEPS):
            for g in opt.param_groups:
                g["lr"], g["momentum"] = schedule(step), 0.9
            opt.zero_grad()
            for _ in range(ACCUMULATE):
                images, labels = next(batches)
                (nn.functional.cross_entropy(model(images), labels) / ACCUMULATE).backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            right = sum(int((model(x).argmax(1) == y).sum()) for x, y in data.val)
        top1.append(100.0 * right / data.val_size)
    return top1


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_the_loop_trains_as_a_plain_loop_and_records_and_saves_each_epoch(capsys):
    reference = tiny_model()
    want_top1 = plain_loop(reference, data())
    model = tiny_model()
    parts = stand_in_parts(model, data())
    log, saves = parts.log, parts.saver  # fit() releases its parts: kept here to read
    summary = Trainer(parts).fit()

    for got, want in zip(weights(model), weights(reference)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    val = log.of("val")
    assert [r["epoch"] for r in val] == [1, 2] and [r["step"] for r in val] == [3, 6]
    assert [r["top1"] for r in val] == pytest.approx(want_top1)
    assert [r["step"] for r in log.of("train")] == [2, 3, 5, 6]  # every 2nd step and each epoch's last
    assert [r["lr"] for r in log.of("train")] == pytest.approx([0.4 / 2, 0.4 / 3, 0.4 / 5, 0.4 / 6])
    assert summary.epochs == 2 and summary.top1 == pytest.approx(want_top1[-1])
    assert [(step, wait) for step, _, wait, _ in saves.saved] == [(3, False), (6, True)]  # each epoch; the last waits
    last = saves.saved[-1][3]
    best = max(want_top1)
    assert last["step"] == 6 and last["extra"]["attempt"] == 1 and last["extra"]["world"] == 1
    assert last["extra"]["best"] == [best, 1 + want_top1.index(best)] and "val_pending" not in last["extra"]
    assert "loss_scaler" not in last["extra"]  # fp32: nothing to save for it
    out = capsys.readouterr().out
    assert "fastres: tiny on in-memory (24 train / 10 val images, 3 classes), cpu, global batch 8" in out
    assert parts.log is None and parts.stop is None  # released


def resumed_parts(saved: dict) -> tuple[RunParts, TrainState]:
    """Fresh parts with a checkpoint's model and optimizer, and the TrainState it continues from."""
    model = tiny_model()
    parts = stand_in_parts(model, data())
    model.load_state_dict(saved["model"])
    parts.optimizer.load_state_dict(saved["optimizer"])
    return parts, TrainState.resumed(saved["step"], saved["extra"])


def test_a_stop_in_training_saves_the_step_and_a_resume_ends_where_an_unstopped_run_ends():
    straight = tiny_model()
    Trainer(stand_in_parts(straight, data())).fit()

    stopped_data = data()
    stopped_data.train.signal_at = 3  # the second micro-batch of step 2
    parts = stand_in_parts(tiny_model(), stopped_data)
    log, saves = parts.log, parts.saver
    with pytest.raises(Preempted, match="stopped by SIGUSR1 after step 2; checkpoint saved step 2; continue with"):
        Trainer(parts).fit()
    (stop,) = log.of("stop")
    assert stop["step"] == 2 and stop["during"] == "training"
    step, _, wait, saved = saves.saved[-1]
    assert step == saved["step"] == 2 and wait and "val_pending" not in saved["extra"]

    parts, state = resumed_parts(saved)
    assert state.step == 2 and state.attempt == 2
    Trainer(parts, state).fit()
    for got, want in zip(weights(parts.model), weights(straight)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_a_stop_in_validation_is_saved_as_pending_and_the_resumed_run_validates_first():
    stopped_data = data()
    stopped_data.val.signal_at = 1  # the second of the 3 validation batches (4, 4, 2 images) of epoch 1
    parts = stand_in_parts(tiny_model(), stopped_data)
    log, saves = parts.log, parts.saver
    with pytest.raises(Preempted, match=r"after step 3, in the validation of epoch 1 \(batch 1 of 3; done again"):
        Trainer(parts).fit()
    (stop,) = log.of("stop")
    assert (stop["during"], stop["epoch"], stop["val_batches_done"], stop["val_batches"]) == ("validation", 1, 1, 3)
    assert not log.of("val")
    saved = saves.saved[-1][3]
    assert saved["step"] == 3 and saved["extra"]["val_pending"] == 1

    parts, state = resumed_parts(saved)
    log = parts.log
    assert state.val_pending == 1
    Trainer(parts, state).fit()
    val = log.of("val")
    assert (val[0]["epoch"], val[0]["step"], val[0]["epoch_seconds"]) == (1, 3, None)  # done again, first
    assert [r["epoch"] for r in val] == [1, 2]


def test_a_non_finite_step_is_skipped_on_the_device_and_counted():
    bad_data = data()
    bad_data.train.images[BATCH : 2 * BATCH] = float("nan")  # the second micro-batch of step 1
    model = tiny_model()
    parts = stand_in_parts(model, bad_data, LoopConfig(epochs=1, log_every=1))
    trainer = Trainer(parts)
    trainer.train_epoch(0)
    parts.stop.close()
    train = parts.log.of("train")
    assert [r["skipped_steps"] for r in train] == [1, 0, 0] and train[0]["loss"] is None
    assert trainer.state.step == STEPS
    # the reference: steps 2 and 3 of a plain loop from the first weights (step 1 changed nothing)
    reference = tiny_model()
    opt = torch.optim.SGD(reference.parameters(), lr=0.0, momentum=0.9)
    images, labels = bad_data.train.images, bad_data.train.labels
    for step in (1, 2):
        for g in opt.param_groups:
            g["lr"] = Schedule()(step)
        opt.zero_grad()
        for i in range(step * ACCUMULATE, (step + 1) * ACCUMULATE):
            x, y = images[i * BATCH : (i + 1) * BATCH], labels[i * BATCH : (i + 1) * BATCH]
            (nn.functional.cross_entropy(reference(x), y) / ACCUMULATE).backward()
        opt.step()
    for got, want in zip(weights(model), weights(reference)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
