"""Files that fail to decode during training, on real JPEG trees, real workers, real DALI pipelines.

What must hold (fastres/data/bad.py, fastres/data/loader.py): the run never stops for a bad
file; its sample becomes the substitute in the same place (labels, order and batch size
unchanged, every other sample's pixels unchanged); a file found bad now and the same file
known bad from an earlier attempt give bit-identical batches, and a known-bad file is not
read at all; each bad file is reported once by `take_new_bad()`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_cfg import loader_cfg
from PIL import Image

from fastres.data import append_bad_list, max_bad_default, open_dataset, read_bad_list
from fastres.data.bad import SUBSTITUTE_RGB, substitute_image
from fastres.data.check import check_file
from fastres.data.loader import make_loaders
from fastres.data.transforms import normalize_batch

from jpegs import corrupt_huffman, corrupt_scan, write_tree

CPU = torch.device("cpu")


def Cfg():  # noqa: N802 (the tests build it as they built the stand-in it replaces)
    return loader_cfg(backend="pytorch", batch_size=4, image_size=24, crop_scale_min=0.25, workers=2, seed=3)


def cfg_for(root: Path, **kw) -> Cfg:
    cfg = Cfg()
    cfg.data = str(root)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def run_epochs(loaders, epochs: int = 2):
    """Train batches of `epochs` epochs, then one validation pass; what take_new_bad said."""
    train, reported = [], []
    for epoch in range(epochs):
        loaders.train.set_epoch(epoch)
        for x, y in loaders.train:
            train.append((x.clone(), y.clone()))
            reported += loaders.train.take_new_bad()
    val = [(x.clone(), y.clone()) for x, y in loaders.val]
    return train, val, reported, loaders.val.take_new_bad()


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def differing_samples(a, b) -> list[torch.Tensor]:
    """Samples of `a` whose pixels differ from `b`'s at the same place (labels must agree)."""
    out = []
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and xa.shape == xb.shape
        out += [xa[i] for i in range(len(xa)) if not torch.equal(xa[i], xb[i])]
    return out


def substitute_normalised(size: int) -> torch.Tensor:
    return normalize_batch(torch.tensor(SUBSTITUTE_RGB, dtype=torch.uint8).expand(1, size, size, 3))[0]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """A good tree, and the same tree with bad files that all pass the default header check."""
    base = tmp_path_factory.mktemp("bad")
    good = base / "good"
    files = write_tree(good)
    bad = base / "bad"
    shutil.copytree(good, bad)
    rel = {name: files[split][i].relative_to(good) for name, split, i in BAD_FILES}
    for name, r in rel.items():
        path = bad / r
        path.write_bytes(MAKE[name](path.read_bytes()))
    return good, bad, {name: str(bad / r) for name, r in rel.items()}


BAD_FILES = [("scan", "train", 5), ("huffman", "train", 12), ("val-scan", "val", 4)]
MAKE = {"scan": corrupt_scan, "huffman": corrupt_huffman, "val-scan": corrupt_scan}


def test_the_bad_files_pass_the_header_check_and_fail_a_full_decode(trees):
    _, _, bad = trees
    for path in bad.values():
        assert check_file(path).bad is None  # SOI, headers and end marker intact
        assert check_file(path, decode=True).bad  # the pixels cannot be decoded
        with pytest.raises(OSError), Image.open(path) as img:
            img.load()


# ----------------------------------------------------------------------------- PIL


def test_pil_replaces_a_corrupt_jpeg_by_the_substitute_and_changes_nothing_else(trees):
    good, bad, files = trees
    want_train, want_val, none, none_val = run_epochs(make_loaders(cfg_for(good), CPU))
    assert none == [] and none_val == []
    train, val, reported, reported_val = run_epochs(make_loaders(cfg_for(bad), CPU))
    # never stops, same number of full batches, same labels in the same order
    assert len(train) == len(want_train) == 2 * (24 // 4)
    # the bad samples, and only they, differ: each is the substitute (once per epoch per file)
    changed = differing_samples(train, want_train)
    assert len(changed) == 2 * 2
    assert all(torch.equal(x, substitute_normalised(24)) for x in changed)
    changed_val = differing_samples(val, want_val)
    assert len(changed_val) == 1 and torch.equal(changed_val[0], substitute_normalised(24))
    # each file named once (a worker decodes it again every epoch; it is reported once)
    assert sorted(p for p, _ in reported) == sorted([files["scan"], files["huffman"]])
    assert all("broken data stream" in why for _, why in reported)
    assert [p for p, _ in reported_val] == [files["val-scan"]]


def test_pil_known_bad_files_give_the_same_batches_without_being_read(trees, tmp_path):
    _, bad, files = trees
    found_train, found_val, reported, reported_val = run_epochs(make_loaders(cfg_for(bad), CPU))
    known = {p for p, _ in reported + reported_val}
    # a later attempt: the known files are not even there any more; reading one would report it
    root = tmp_path / "again"
    shutil.copytree(bad, root)
    dataset = open_dataset(str(root))
    moved = {str(root / Path(p).relative_to(bad)) for p in known}
    for p in moved:
        Path(p).unlink()
    train, val, again, again_val = run_epochs(make_loaders(cfg_for(root), CPU, dataset=dataset, known_bad=moved))
    assert again == [] and again_val == []
    assert_same(train, found_train)
    assert_same(val, found_val)


def test_known_bad_paths_match_however_the_root_was_spelt(trees, monkeypatch):
    _, bad, files = trees
    monkeypatch.chdir(bad.parent)
    loaders = make_loaders(cfg_for(Path(bad.name), workers=0), CPU, known_bad={files["scan"]})  # relative root
    _, _, reported, _ = run_epochs(loaders, epochs=1)
    assert [p for p, _ in reported] == [str(Path(bad.name) / Path(files["huffman"]).relative_to(bad))]


# ----------------------------------------------------------------------------- DALI


def dali_tree(trees, tmp_path) -> tuple[Path, dict[str, str]]:
    """The bad tree plus files DALI cannot read either: a text file named .JPEG (DALI's error
    names no file), an empty file (DALI's reader fails, not its decoder)."""
    _, bad, files = trees
    root = tmp_path / "dali"
    shutil.copytree(bad, root)
    paths = {name: str(root / Path(p).relative_to(bad)) for name, p in files.items()}
    train = sorted((root / "train").rglob("*.JPEG"))
    Path(train[20]).write_text("this is not an image\n")
    Path(train[2]).write_bytes(b"")
    val = root / "val" / "c_eel" / "c_eel_2.JPEG"  # in the last batch of validation, which DALI pads
    val.write_bytes(corrupt_huffman(val.read_bytes()))
    paths.update(text=str(train[20]), empty=str(train[2]), val=str(val))
    return root, paths


def test_dali_never_stops_for_a_bad_file_and_reports_each_once(trees, tmp_path):
    pytest.importorskip("nvidia.dali")
    good, _, _ = trees
    root, paths = dali_tree(trees, tmp_path)
    cfg = dict(backend="dali")
    want_train, want_val, _, _ = run_epochs(make_loaders(cfg_for(good, **cfg), CPU))
    train, val, reported, reported_val = run_epochs(make_loaders(cfg_for(root, **cfg), CPU))
    # DALI decodes the corrupt-scan JPEG (its fallback decoder fills what it cannot read): not
    # reported there. It cannot decode the others: each one reported once, with DALI's words.
    named = {p: why for p, why in reported}
    assert len(named) == len(reported)
    assert {paths["huffman"], paths["text"], paths["empty"]} <= set(named) <= set(paths.values())
    assert "Failed to decode" in named[paths["huffman"]] and "File mapping" in named[paths["empty"]]
    assert all(why.startswith("DALI") for why in named.values())
    assert paths["val"] in {p for p, _ in reported_val} <= {paths["val"], paths["val-scan"]}
    # same batches, same labels; the bad samples, and only they, differ from the good tree's
    assert len(train) == len(want_train) == 12 and len(torch.cat([y for _, y in val])) == 9
    changed = differing_samples(train, want_train)
    assert len(changed) == 2 * 4  # four bad files, in each of two epochs
    sub = [x for x in changed if (x - substitute_normalised(24)).abs().max() < 0.02]  # the mean colour
    assert len(sub) == 2 * len(named) and all(torch.equal(x, sub[0]) for x in sub)
    assert len(differing_samples(val, want_val)) == 2


@pytest.mark.parametrize("rank, world", [(0, 1), (1, 2)])
def test_dali_found_now_and_known_bad_give_bit_identical_batches(trees, tmp_path, rank, world):
    pytest.importorskip("nvidia.dali")
    root, _ = dali_tree(trees, tmp_path)
    dataset = open_dataset(str(root))
    cfg = cfg_for(root, backend="dali")
    found_train, found_val, reported, reported_val = run_epochs(
        make_loaders(cfg, CPU, rank=rank, world=world, dataset=dataset), epochs=3
    )
    known = {p for p, _ in reported + reported_val}
    assert len(known) >= 2
    for p in known:  # a known-bad file is never read: remove it
        Path(p).unlink()
    loaders = make_loaders(cfg, CPU, rank=rank, world=world, dataset=dataset, known_bad=known)
    train, val, again, again_val = run_epochs(loaders, epochs=3)
    assert again == [] and again_val == []
    assert_same(train, found_train)
    assert_same(val, found_val)


@pytest.mark.parametrize("known", [False, True])
def test_dali_run_resumed_mid_epoch_sees_the_uninterrupted_batches(trees, tmp_path, known):
    """Preempted in epoch 1 after two steps: the next attempt, with or without the bad-file list
    of the first, restores DALI's state and sees what the uninterrupted run saw."""
    pytest.importorskip("nvidia.dali")
    root, _ = dali_tree(trees, tmp_path)
    dataset = open_dataset(str(root))
    cfg = cfg_for(root, backend="dali")
    straight = make_loaders(cfg, CPU, dataset=dataset)
    straight.train.set_epoch(0)
    list(straight.train)
    reported = straight.train.take_new_bad()
    straight.train.set_epoch(1)
    want, state = [], None
    for step, (x, y) in enumerate(straight.train):
        want.append((x.clone(), y.clone()))
        if step == 1:
            state = straight.train.state_dict()  # what a checkpoint after step 2 holds
    resumed = make_loaders(cfg, CPU, dataset=dataset, known_bad={p for p, _ in reported} if known else set())
    resumed.train.load_state_dict(state)
    resumed.train.set_epoch(1, start_step=2)
    got = [(x.clone(), y.clone()) for x, y in resumed.train]
    assert_same(got, want[2:])
    assert (resumed.train.take_new_bad() == []) == known


def test_dali_bad_sample_in_webdataset_shards_is_one_line(trees, tmp_path):
    pytest.importorskip("nvidia.dali")
    from fastres import FastresError
    from fastres.data.shards import write_shards

    root, _ = dali_tree(trees, tmp_path)
    write_shards(root, tmp_path / "wds", shard_size=8)  # the library call checks nothing: the CLI does
    loaders = make_loaders(cfg_for(tmp_path / "wds", backend="dali"), CPU)
    with pytest.raises(FastresError, match=r"cannot decode a sample of the shards in .*python -m fastres.data shard"):
        for _ in range(2):
            list(loaders.train)


# ----------------------------------------------------------------------------- the run's list


def test_bad_list_round_trip_and_crash_cut_lines(tmp_path):
    path = tmp_path / "bad_files.txt"
    assert read_bad_list(path) == []
    append_bad_list(path, [("/d/train/a/x.JPEG", "broken data stream"), ("/d/odd\tname.JPEG", "two\nlines")])
    append_bad_list(path, [("/d/train/a/x.JPEG", "again")])  # listed twice: read once, first reason
    assert read_bad_list(path) == [("/d/train/a/x.JPEG", "broken data stream"), ("/d/odd\tname.JPEG", "two\nlines")]
    assert path.read_text().count("\n") == 3
    with open(path, "a") as fh:
        fh.write("/d/train/b/cut-by-a-cra")  # a crash mid-write
    assert len(read_bad_list(path)) == 2
    append_bad_list(path, [("/d/train/c/y.JPEG", "DALI: Failed to decode sample")])
    assert read_bad_list(path)[-1] == ("/d/train/c/y.JPEG", "DALI: Failed to decode sample")
    assert len(read_bad_list(path)) == 3


def test_max_bad_default_is_a_thousandth_of_the_training_set():
    assert max_bad_default(1_281_167) == 1282 and max_bad_default(6000) == 6 and max_bad_default(10) == 1


def test_substitute_image_is_the_mean_colour_and_written_once(tmp_path):
    path = substitute_image(tmp_path)
    stamp = Path(path).stat().st_mtime_ns
    with Image.open(path) as img:
        assert img.format == "PNG" and np.all(np.asarray(img.convert("RGB")) == np.array(SUBSTITUTE_RGB, np.uint8))
    assert substitute_image(tmp_path) == path and Path(path).stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]  # no temporary file left


def test_synthetic_loaders_report_nothing(trees):
    good, _, _ = trees
    loaders = make_loaders(cfg_for(good, backend="synthetic"), CPU)
    list(loaders.train)
    assert loaders.train.take_new_bad() == [] and loaders.val.take_new_bad() == []
