"""A run's parts one by one, without a run: fastres.run.parts.RunParts (checkpoints, release, a lost peer),
fastres.run.restore (a resume on another number of processes), fastres.run.state.TrainState, the do-nothing
loss scaler, the one clock and the estimate, and the validation loop with its stop polls. The whole run is
tests/test_train.py's; the loop over stand-in parts tests/test_trainer.py's."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fastres import FastresError
from fastres.distributed import CollectiveError
from fastres.optim.amp import LossScaler
from fastres.run import progress
from fastres.run.parts import RunParts
from fastres.run.preemption import Verdict
from fastres.run.restore import _dali_epoch_boundary, restore
from fastres.run.state import TrainState
from fastres.run.step import NoLossScaling
from fastres.run.stepguard import StepGuard
from fastres.run.timing import WARM_STEPS, StepTimer
from fastres.run.validation import validate

CPU = torch.device("cpu")


class Saves:
    def __init__(self):
        self.saved = []

    def save(self, snapshot, step, best=False, wait=False):
        self.saved.append(snapshot())

    def finish(self):
        pass

    def newest(self):
        return Path("RUN/checkpoints/step-3.pt") if self.saved else None


class Records:
    def __init__(self):
        self.records = []

    def write(self, kind, **fields):
        self.records.append(dict(kind=kind, **fields))

    def close(self):
        pass


def checkpointing_parts(scaler=None) -> RunParts:
    model = nn.Linear(3, 2)
    guard = StepGuard(CPU, max_in_a_row=5)
    cfg = SimpleNamespace(to_dict=lambda: {"epochs": 2})
    train = SimpleNamespace(state_dict=lambda: {"position": 7})
    return RunParts(cfg, world=1, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), guard=guard,
                    scaler=scaler or NoLossScaling(guard.check), steps_per_epoch=5, saver=Saves(), log=Records(),
                    data=SimpleNamespace(train=train, classes=("a", "b")))  # fmt: skip


def test_no_checkpoint_while_steps_are_skipped_and_it_is_said_once(capsys):
    parts = checkpointing_parts()
    state = TrainState(step=3)
    parts.guard.add(torch.tensor(1.0), torch.tensor(True))  # the last step was skipped (NaN/Inf gradients)
    assert parts.checkpoint(state) is False and parts.checkpoint(state) is False
    out = capsys.readouterr().out.splitlines()
    assert out == ["fastres: no checkpoint of step 3: its last 1 steps were skipped (NaN/Inf gradients); none is "
                   "written until a step succeeds; no checkpoint was written yet"], out  # fmt: skip
    parts.guard.add(torch.tensor(1.0), torch.tensor(False))
    assert parts.checkpoint(state) is True and len(parts.saver.saved) == 1


def test_a_checkpoint_holds_the_loop_state_as_one_object_and_fp16_s_loss_scale():
    state = TrainState(step=3, best=(61.5, 2), last_val=dict(epoch=3, top1=60.0, top5=90.0), attempt=2, val_pending=3)
    fp32 = checkpointing_parts()
    assert fp32.checkpoint(state)
    saved = fp32.saver.saved[-1]
    assert saved["step"] == 3 and saved["data_per_rank"] == [{"position": 7}] and saved["config"] == {"epochs": 2}
    assert saved["extra"] == {"best": [61.5, 2], "val": state.last_val, "attempt": 2, "time": state.step_done_at,
                              "val_pending": 3, "world": 1}  # fmt: skip
    again = TrainState.resumed(saved["step"], saved["extra"])
    assert (again.step, again.best, again.attempt, again.val_pending) == (3, (61.5, 2), 3, 3)  # the attempt after
    assert again.last_val == state.last_val
    assert "val_pending" not in TrainState(step=3).state_dict()  # nothing pending: not saved

    scaler = LossScaler(CPU, init_scale=2.0**10)
    fp16 = checkpointing_parts(scaler)
    assert fp16.checkpoint(state)
    assert fp16.saver.saved[-1]["extra"]["loss_scaler"]["scale"] == 2.0**10


def test_close_releases_every_part_once_in_reverse_order():
    released = []

    def part(name, method):
        return SimpleNamespace(**{method: lambda *a, **k: released.append(name)})

    parts = RunParts(SimpleNamespace(), sinks=part("sinks", "detach"), saver=part("saver", "finish"),
                     log=part("log", "close"), tb=part("tb", "close"), reducer=part("reducer", "remove"),
                     data=part("data", "close"), stop=part("stop", "close"), lock=part("lock", "release"))  # fmt: skip
    parts.close()
    parts.close(error=True)
    assert released == ["sinks", "saver", "log", "tb", "reducer", "data", "stop", "lock", "data"]  # loaders: idempotent


def test_a_lost_peer_is_one_line_and_a_record_with_the_step_and_the_seconds_since():
    parts = RunParts(SimpleNamespace(), world=4, log=Records())
    state = TrainState(step=7, step_done_at=time.time() - 2.5)
    error = parts.peer_lost(RuntimeError("Connection closed by peer [10.0.0.2]:4242"), state)
    assert isinstance(error, CollectiveError)
    assert str(error).startswith("lost a peer 2.5 s after step 7: a collective failed: Connection closed by peer")
    assert str(error).endswith("which an elastic launcher restarts on; no checkpoint was written yet")
    (record,) = parts.log.records
    assert record["kind"] == "peer_lost" and record["step"] == 7 and record["world_size"] == 4
    assert record["seconds_after_step"] == pytest.approx(2.5, abs=0.5)


def test_a_dali_run_resumed_on_another_world_size_goes_on_from_the_next_epoch_boundary(capsys):
    parts = RunParts(SimpleNamespace(), world=2, steps_per_epoch=5)
    mid = TrainState(step=7)
    _dali_epoch_boundary(parts, mid, "ckpt.pt", saved_world=4)
    assert (mid.step, mid.val_pending, mid.val_pending_why) == (10, 2, "whose last 3 steps are skipped")
    at_boundary = TrainState(step=10)
    _dali_epoch_boundary(parts, at_boundary, "ckpt.pt", saved_world=4)
    assert (at_boundary.step, at_boundary.val_pending) == (10, None)
    out = capsys.readouterr().out.splitlines()
    assert "so the run continues from the next epoch boundary (step 10: the last 3 steps of epoch 2" in out[0]
    assert out[1] == ("fastres: ckpt.pt: saved by 4 processes, resumed by 2: DALI's readers split each epoch by "
                      "process: epoch 3 on reads a new order")  # fmt: skip


def test_a_resume_on_other_classes_is_refused_naming_both():
    parts = RunParts(SimpleNamespace(), data=SimpleNamespace(classes=("cat", "dog")))
    resume = SimpleNamespace(state={"classes": ["ant", "bee", "cow"]}, checkpoint=Path("ckpt.pt"))
    with pytest.raises(FastresError, match=r"--resume ckpt.pt: the run was trained on classes \['ant', 'bee', 'cow'\]"):
        restore(parts, resume)


def test_the_do_nothing_loss_scaler_scales_nothing_and_flags_a_non_finite_gradient():
    scaler = NoLossScaling(StepGuard(CPU, 5).check)
    loss = torch.tensor(2.5)
    assert scaler.scale(loss) is loss and scaler.state_dict() == {}
    for grads, bad in ((torch.ones(5), False), (torch.tensor([1.0, float("nan")]), True),
                       (torch.tensor([float("inf"), 0.0]), True)):  # fmt: skip
        flag = scaler.unscale_(grads) != 0
        assert flag.dtype == torch.bool and bool(flag) is bad  # what LossScaler.unscale_ gives the step


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_the_one_clock_times_the_epoch_the_log_window_and_the_steady_steps():
    clock = FakeClock()
    timer = StepTimer(clock)
    timer.start_epoch()
    for _ in range(5):
        clock.t += 2.0
        timer.step()
    assert timer.steps == 5 and timer.epoch_seconds() == 10.0
    assert timer.window() == (5, 10.0)
    clock.t += 1.0  # a log step's sync and writes: not the next window's
    timer.new_window()
    clock.t += 2.0
    timer.step()
    assert timer.window() == (1, 2.0) and timer.epoch_seconds() == 13.0
    assert timer.steady() == (6 - WARM_STEPS, 13.0 - 2.0 * WARM_STEPS)  # timed from the end of the warm steps
    timer.start_epoch()
    assert timer.steady() is None and timer.window() == (0, 0.0)


def test_the_estimate_is_said_once_from_the_steady_steps(monkeypatch):
    monkeypatch.setattr(progress, "ESTIMATE_AFTER", 5.0)
    monkeypatch.setattr(progress, "ESTIMATE_MIN_SECONDS", 0.0)
    clock = FakeClock()
    timer = StepTimer(clock)
    estimate = progress.Estimate(True, epochs=3, steps_per_epoch=100, global_batch=64, precision="bf16")
    timer.start_epoch()
    lines = []
    for step in range(1, 9):
        clock.t += 1.0 if step > WARM_STEPS else 30.0  # slow first steps: not in the rate
        timer.step()
        lines.append(estimate.line(timer, 0, step))
    said = [line for line in lines if line]
    assert len(said) == 1 and lines.index(said[0]) == 6  # step 7: 5 s of steady steps
    # 5 steady steps in 5 s: 1 s a step, 93 + 200 steps left, 64 images a step
    assert said[0].startswith(
        "fastres: estimate: the 3 epochs left take about 4m53s of training here (64 img/s in bf16;"
    )


class StopAt:
    """StopSignals' polls as validation makes them: `signal` from poll `at` on; the other ranks have `most`."""

    def __init__(self, most: int, at: int | None):
        self.polled, self._most, self.at = 0, most, at

    def most(self, n: int, what: str) -> int:
        return max(n, self._most)

    def poll(self) -> Verdict:
        self.polled += 1
        return Verdict(10 if self.at is not None and self.polled > self.at else 0)


def test_validation_counts_every_image_and_stops_at_the_poll_the_signal_is_seen():
    torch.manual_seed(0)
    model = nn.Linear(6, 7).eval()
    batches = [(torch.randn(n, 6), torch.randint(0, 7, (n,))) for n in (5, 5, 3)]
    logits = torch.cat([model(x) for x, _ in batches]).detach()
    labels = torch.cat([y for _, y in batches])
    top5 = logits.topk(5, dim=1).indices
    want1 = 100.0 * float((logits.argmax(1) == labels).sum()) / 13
    want5 = 100.0 * float((top5 == labels[:, None]).any(1).sum()) / 13
    done = validate(model, batches, CPU, None, None)
    assert (done.top1, done.top5) == pytest.approx((want1, want5)) and (done.images, done.signum) == (13, 0)
    assert done.stopped is None
    full = validate(model, batches, CPU, None, None, StopAt(most=4, at=None))
    assert full.images == 13 and full.stopped is None
    stop = StopAt(most=4, at=None)
    validate(model, batches, CPU, None, None, stop)
    assert stop.polled == 4 + 1  # as often as the rank with 4 batches, and once after the last
    stopped = validate(model, batches, CPU, None, None, StopAt(most=3, at=1))
    assert stopped.stopped == (1, 3) and stopped.signum == 10 and stopped.images == 0
    padding = validate(model, batches, CPU, None, None, StopAt(most=4, at=3))  # seen in the padding poll
    assert padding.stopped == (3, 4)
    last = validate(model, batches, CPU, None, None, StopAt(most=3, at=3))  # during the last batch
    assert last.stopped is None and last.signum == 10 and last.images == 13
