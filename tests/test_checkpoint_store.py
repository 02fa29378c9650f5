"""fastres.checkpoint.store: a run folder's checkpoint files (names, the newest K, the newest that verifies,
leftovers) and the background saver, on real files; write failures are real ones (a file where the
checkpoint folder should be, a state torch cannot save)."""

from __future__ import annotations

import threading

import pytest
import torch

from fastres.checkpoint import CHECKPOINT_DIR, BackgroundSaver, CheckpointStore, read_checkpoint_file


def test_names_sort_by_step_and_anything_else_in_the_folder_is_ignored(tmp_path):
    store = CheckpointStore(tmp_path, keep=10)
    assert store.steps() == [] and store.paths() == [] and store.newest_valid() is None  # no folder yet
    for step in (9, 1_000_000_000, 12, 3):
        store.save({"step": step}, step)
    assert store.path_of(12) == tmp_path / CHECKPOINT_DIR / "step-000000012.pt"
    assert store.path_of(1_000_000_000).name == "step-1000000000.pt"  # ten digits past 999,999,999
    for other in ("step-12.pt", "step-000000013.pt.bak", "best.pt", ".step-000000014.pt.x1.tmp", "step-00000001x.pt"):
        (store.dir / other).write_bytes(b"")
    assert store.steps() == [1_000_000_000, 12, 9, 3]  # newest first, numerically
    assert [read_checkpoint_file(p)["step"] for p in store.paths()] == store.steps()


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_only_the_newest_keep_remain_after_each_write(tmp_path, keep):
    store = CheckpointStore(tmp_path, keep=keep)
    for step in range(1, 7):
        store.save({"step": step}, step)
        assert store.steps() == list(range(step, max(0, step - keep), -1))
    (store.dir / "step-000000002.pt").write_bytes(b"")  # an old one that reappeared: pruned at the next write
    store.save({"step": 7}, 7)
    assert store.steps() == list(range(7, 7 - keep, -1))


def test_keep_below_one_is_refused():
    with pytest.raises(ValueError, match="keep: must be >= 1, got 0"):
        CheckpointStore("run", keep=0)


def test_the_newest_that_verifies_is_used_and_each_one_skipped_is_named(tmp_path):
    store = CheckpointStore(tmp_path, keep=5)
    for step in (1, 2, 3):
        store.save({"w": torch.full((100,), float(step))}, step)
    flipped = store.path_of(3)
    blob = bytearray(flipped.read_bytes())
    blob[-10] ^= 0x40
    flipped.write_bytes(bytes(blob))
    store.path_of(2).write_bytes(store.path_of(2).read_bytes()[:-1])  # cut short
    said = []
    path, state = store.newest_valid(say=said.append)
    assert path == store.path_of(1) and torch.equal(state["w"], torch.ones(100))
    assert len(said) == 2
    assert said[0].startswith("fastres: skipping checkpoint step-000000003.pt: ") and "SHA-256" in said[0]
    assert said[1].startswith("fastres: skipping checkpoint step-000000002.pt: ") and "payload bytes" in said[1]
    assert all(line.endswith("; trying the next older one") for line in said)
    store.path_of(1).write_bytes(b"not a checkpoint")
    assert store.newest_valid(say=said.append) is None and len(said) == 5


def test_leftovers_of_killed_saves_are_removed_and_nothing_else(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.remove_leftovers() == []  # no folder yet
    store.save({"x": 1}, 4)
    left = [store.dir / ".step-000000005.pt.a1b2.tmp", store.dir / ".step-000000006.pt.zz.tmp"]
    for p in left:
        p.write_bytes(b"x" * 100)
    kept = [store.dir / "notes.tmp", store.dir / ".other.tmp"]
    for p in kept:
        p.write_bytes(b"")
    assert sorted(store.remove_leftovers()) == sorted(left)
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept) and store.steps() == [4]


def test_the_background_saver_writes_the_snapshot_and_its_copy_and_reports_once(tmp_path):
    saver = BackgroundSaver(CheckpointStore(tmp_path, keep=2))
    best = tmp_path / "best.pt"
    saver.submit({"w": torch.arange(5.0), "step": 1}, 1, also=best)
    saver.submit({"w": torch.arange(6.0), "step": 2}, 2)  # waits for the first: one save at a time
    results = saver.wait()
    assert [(r.step, r.path, r.error) for r in results] == [
        (1, saver.store.path_of(1), None),
        (2, saver.store.path_of(2), None),
    ]
    assert all(r.seconds > 0 for r in results) and not saver.busy and saver.poll() == []
    assert torch.equal(read_checkpoint_file(best)["w"], torch.arange(5.0))
    assert best.read_bytes() == saver.store.path_of(1).read_bytes()
    assert read_checkpoint_file(saver.store.path_of(2))["step"] == 2


def test_the_background_saver_runs_in_another_thread_and_the_caller_goes_on(tmp_path, monkeypatch):
    from fastres.checkpoint import store as store_module

    release, started = threading.Event(), threading.Event()
    real = store_module.write_bytes_atomic

    def slow_disk(blob, path):
        started.set()
        assert release.wait(60)
        real(blob, path)

    monkeypatch.setattr(store_module, "write_bytes_atomic", slow_disk)
    saver = BackgroundSaver(CheckpointStore(tmp_path))
    saver.submit({"x": torch.zeros(1)}, 7)
    assert started.wait(60) and saver.busy and saver.poll() == []  # returned while the write is under way
    release.set()
    (result,) = saver.wait()
    assert result.error is None and read_checkpoint_file(result.path)["x"].tolist() == [0.0]


def test_a_write_that_fails_is_one_line_with_the_path_and_the_reason_and_the_older_ones_stay(tmp_path):
    store = CheckpointStore(tmp_path / "ok")
    store.save({"step": 1}, 1)
    saver = BackgroundSaver(store)
    saver.submit({"f": lambda: 0}, 2)  # torch.save cannot pickle a lambda
    (result,) = saver.wait()
    assert result.step == 2 and result.path == store.path_of(2)
    assert result.error.startswith(f"cannot write checkpoint {store.path_of(2)}: ") and "\n" not in result.error
    assert store.steps() == [1] and not list(store.dir.glob(".*.tmp"))
    assert read_checkpoint_file(store.path_of(1)) == {"step": 1}

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / CHECKPOINT_DIR).write_text("a file where the folder should be")
    saver = BackgroundSaver(CheckpointStore(blocked))
    saver.submit({"step": 3}, 3)
    (result,) = saver.wait()
    assert result.error == f"cannot write checkpoint {blocked / CHECKPOINT_DIR / 'step-000000003.pt'}: File exists"
