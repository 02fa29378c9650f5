"""fastres.checkpoint.state: what a checkpoint holds and how a run is restored from it, on a small real model.

The reference for a restore is a run never stopped: a model and its SGD with momentum trained N steps
straight, against the same trained K steps, snapshot, written and read back as a checkpoint file, restored
into a fresh model and optimizer, and trained the remaining N - K steps: every weight and momentum buffer
equal bit for bit, and the random draws after the restore the draws the straight run made.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from fastres import FastresError
from fastres.checkpoint import read_checkpoint_file, restore_run, run_state, write_checkpoint_file
from fastres.checkpoint.state import host_copy, restore_rng, rng_state, saved_world_size

STEPS_PER_EPOCH = 4


def make(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> list:
    """One step on a batch drawn from every generator a run uses (torch, numpy, Python); the draws."""
    x = torch.randn(8, 6) + float(np.random.rand()) + random.random()
    y = torch.randint(0, 3, (8,))
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    return [x.sum().item(), y.tolist()]


class Loader:
    """A training loader with a state (DALI's have one; the PIL loader's order follows from seed and epoch)."""

    def __init__(self):
        self.loaded = None

    def load_state_dict(self, state):
        self.loaded = state


def snapshot(model, optimizer, step: int, loaders=None, **kw) -> dict:
    return run_state(model, optimizer, step=step, steps_per_epoch=STEPS_PER_EPOCH, config={"lr": 0.1},
                     classes=("a", "b", "c"), loader_states=loaders or [None], **kw)  # fmt: skip


@pytest.mark.parametrize("cut", [1, 4, 6])
def test_a_run_restored_from_a_checkpoint_file_continues_like_a_run_never_stopped(tmp_path, cut):
    total = 9
    model, optimizer = make()
    straight_draws = [train_step(model, optimizer) for _ in range(total)]

    first, first_opt = make()
    for _ in range(cut):
        train_step(first, first_opt)
    path = tmp_path / "c.pt"
    write_checkpoint_file(snapshot(first, first_opt, cut, extra={"best": 12.5}), path)  # weights_only read
    for _ in range(3):
        train_step(first, first_opt)  # what the stopped run did after its checkpoint: lost, and moves the RNGs

    state = read_checkpoint_file(path)
    assert (state["step"], state["epoch"], state["steps_per_epoch"]) == (cut, cut // STEPS_PER_EPOCH, 4)
    assert state["classes"] == ["a", "b", "c"] and state["extra"] == {"best": 12.5} and state["config"]["lr"] == 0.1
    resumed, resumed_opt = make(seed=1)  # other initial weights: all must come from the checkpoint
    loader = Loader()
    assert restore_run(state, resumed, resumed_opt, loader, steps_per_epoch=4, rank=0, world=1, where="c.pt") == cut
    assert loader.loaded is None  # no loader state was saved
    draws = [train_step(resumed, resumed_opt) for _ in range(total - cut)]
    assert draws == straight_draws[cut:]
    for (name, want), got in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(want, got), name  # BN's running statistics and its step count included
    for want, got in zip(optimizer.state_dict()["state"].values(), resumed_opt.state_dict()["state"].values()):
        assert torch.equal(want["momentum_buffer"], got["momentum_buffer"])


def test_the_snapshot_is_a_host_copy_that_training_on_does_not_change():
    model, optimizer = make()
    train_step(model, optimizer)
    state = snapshot(model, optimizer, 1)
    before = {k: v.clone() for k, v in state["model"].items()}
    momentum = next(iter(state["optimizer"]["state"].values()))["momentum_buffer"].clone()
    for _ in range(2):
        train_step(model, optimizer)
    assert all(torch.equal(before[k], v) for k, v in state["model"].items())
    assert torch.equal(next(iter(state["optimizer"]["state"].values()))["momentum_buffer"], momentum)
    assert not torch.equal(model.state_dict()["0.weight"], before["0.weight"])  # the model did move on


def test_host_copy_copies_every_tensor_and_keeps_containers_and_plain_values():
    t = torch.arange(4.0)
    view = t[1:3]
    obj = {"a": t, "b": [view, 3, "s", None], "c": (t, {"d": 1.5}), "e": 7}
    out = host_copy(obj)
    assert type(out["b"]) is list and type(out["c"]) is tuple and out["e"] == 7 and out["b"][1:] == [3, "s", None]
    t.add_(100)
    assert out["a"].tolist() == [0.0, 1.0, 2.0, 3.0] and out["b"][0].tolist() == [1.0, 2.0]
    assert out["b"][0].untyped_storage().nbytes() == 2 * 4  # the view's own values, not its base's storage
    assert out["c"][1] == {"d": 1.5} and out["c"][0] is not out["a"]


def test_rng_state_survives_a_weights_only_file_and_restores_every_generator(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()  # a cached Gaussian in numpy's state (has_gauss) ...
    random.gauss(0, 1)  # ... and in Python's
    write_checkpoint_file({"rng": rng_state()}, tmp_path / "r.pt")

    def draws():
        return torch.rand(3).tolist(), np.random.standard_normal(3).tolist(), [random.gauss(0, 1) for _ in range(3)]

    want = draws()
    draws()
    restore_rng(read_checkpoint_file(tmp_path / "r.pt")["rng"])
    assert draws() == want


def test_each_rank_gets_its_own_loader_state_only_when_the_process_count_is_the_saved_one():
    model, optimizer = make()
    state = snapshot(model, optimizer, 5, loaders=[{"rank": 0}, {"rank": 1}], extra={"world": 2})
    for rank in (0, 1):
        loader = Loader()
        restore_run(state, *make(), loader, steps_per_epoch=4, rank=rank, world=2, where="x")
        assert loader.loaded == {"rank": rank}
    loader = Loader()
    restore_run(state, *make(), loader, steps_per_epoch=4, rank=0, world=3, where="x")
    assert loader.loaded is None  # another process count: the caller decides (fastres.run)
    restore_run(state, *make(), object(), steps_per_epoch=4, rank=0, world=2, where="x")  # a loader without state


def test_saved_world_size_reads_the_extra_key_else_counts_the_loader_states():
    assert saved_world_size({"extra": {"world": 4}, "data_per_rank": [None]}) == 4
    assert saved_world_size({"extra": {}, "data_per_rank": [{}, {}, {}]}) == 3
    assert saved_world_size({"data_per_rank": None}) == 1 and saved_world_size({}) == 1


def test_a_checkpoint_of_another_schedule_or_model_is_one_line_naming_it():
    model, optimizer = make()
    state = snapshot(model, optimizer, 3)
    with pytest.raises(FastresError) as e:
        restore_run(state, *make(), None, steps_per_epoch=5, rank=0, world=1, where="RUN/step-3.pt")
    assert str(e.value) == (
        "RUN/step-3.pt: the checkpoint was taken at 4 steps per epoch, this run makes 5 (a changed global batch or "
        "dataset)"
    )
    wider = nn.Sequential(nn.Linear(6, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    with pytest.raises(FastresError, match=r"^RUN/step-3.pt: the checkpoint does not fit this model/optimizer \(") as e:
        restore_run(state, wider, torch.optim.SGD(wider.parameters(), lr=0.1), None, steps_per_epoch=4, rank=0,
                    world=1, where="RUN/step-3.pt")  # fmt: skip
    assert "\n" not in str(e.value)
    params = list(model.parameters())
    two_groups = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)  # as fastres groups them
    with pytest.raises(FastresError, match="does not fit this model/optimizer"):
        restore_run(state, model, two_groups, None, steps_per_epoch=4, rank=0, world=1, where="x")
