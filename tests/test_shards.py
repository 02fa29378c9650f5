"""`python -m fastres.data shard` on real JPEG trees: it checks what it writes, refuses or leaves
out bad files, replaces the shards of an earlier write, and names its own arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jpegs import corrupt_scan, write_tree

pytest.importorskip("nvidia.dali")  # the shards' index files are made with DALI's wds2idx

from fastres.data import scan_imagenet  # noqa: E402
from fastres.data.__main__ import main  # noqa: E402
from fastres.data.dali import DaliLoader, DaliOptions  # noqa: E402
from fastres.data.folder import FolderSplit  # noqa: E402
from fastres.data.shards import Shards, write_split_shards  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture
def tree(tmp_path) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path / "data"
    return root, write_tree(root, per_class=(4, 2))  # 12 train, 6 val


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_refuses_bad_files_naming_them_and_writes_nothing(tree, tmp_path, capsys):
    root, files = tree
    cut = files["train"][3]
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # no end-of-image marker: the header check sees it
    assert main(["shard", str(root), str(tmp_path / "wds"), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert f"BAD  {cut}: truncated JPEG" in out
    line = one_line(err)
    assert "1 of 18 files cannot be decoded" in line and str(cut) in line and "--skip-bad-files" in line
    assert not (tmp_path / "wds").exists()


def test_decode_finds_the_corrupt_scan_jpeg_the_header_check_lets_through(tree, tmp_path, capsys):
    root, files = tree
    bad = files["val"][1]
    bad.write_bytes(corrupt_scan(bad.read_bytes()))
    assert main(["shard", str(root), str(tmp_path / "a"), "--quiet"]) == 0  # headers and end marker intact
    assert Shards(tmp_path / "a" / "val").size == 6
    capsys.readouterr()
    assert main(["shard", str(root), str(tmp_path / "b"), "--decode", "--quiet"]) == 1
    assert str(bad) in one_line(capsys.readouterr().err)
    assert main(["shard", str(root), str(tmp_path / "b"), "--decode", "--skip-bad-files", "--quiet"]) == 0
    assert "18 files decoded: 1 bad, 17 written" in capsys.readouterr().out
    val = Shards(tmp_path / "b" / "val")
    assert val.size == 5 and json.loads((tmp_path / "b" / "val" / "manifest.json").read_text())["samples"] == 5
    # DALI reads the five: every label but the bad file's, in folder order
    labels = torch.cat(
        [y for _, y in DaliLoader(val, DaliOptions(train=False, batch_size=4, size=16, device=CPU))]
    ).tolist()
    assert labels == [0, 0, 1, 2, 2]  # 2 per class (a_cat, b_dog, c_eel); b_dog_1 left out


def test_a_second_write_removes_the_shards_of_the_first(tree, tmp_path):
    root, _ = tree
    out = tmp_path / "wds"
    assert main(["shard", str(root), str(out), "--shard-size", "2", "--quiet"]) == 0
    assert len(list((out / "train").glob("*.tar"))) == 6
    (out / "train" / "notes.txt").write_text("kept: not a shard")
    assert main(["shard", str(root), str(out), "--shard-size", "5", "--quiet"]) == 0
    names = sorted(p.name for p in (out / "train").iterdir())
    assert names == [
        "manifest.json",
        "notes.txt",
        "train-000000.idx",
        "train-000000.tar",
        "train-000001.idx",
        "train-000001.tar",
        "train-000002.idx",
        "train-000002.tar",
    ]
    assert Shards(out / "train").size == 12


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda r, t: [str(t / "missing"), str(t / "o")], "ROOT {t}/missing does not exist"),
        (lambda r, t: [str(r), str(r / "train" / "a_cat" / "a_cat_0.JPEG")], "OUT {r}/train/a_cat/a_cat_0.JPEG is not"),
        (lambda r, t: [str(r), str(r)], "OUT {r} is ROOT"),
        (lambda r, t: [str(r), str(t / "o"), "--shard-size", "0"], "--shard-size must be a positive integer, got 0"),
        (lambda r, t: [str(t), str(t / "o")], "ROOT {t} has no train/ folder"),
    ],
)
def test_errors_name_its_own_arguments(tree, tmp_path, capsys, args, message):
    root, _ = tree
    assert main(["shard", *args(root, tmp_path), "--quiet"]) == 2
    line = one_line(capsys.readouterr().err)
    assert message.format(r=root, t=tmp_path) in line and "--data" not in line


@pytest.mark.parametrize("n, world", [(25, 2), (25, 3), (26, 3)])
def test_unequal_shards_are_padded_so_no_two_ranks_read_a_sample_in_one_epoch(tmp_path, monkeypatch, n, world):
    # Webdataset shards holding a number of samples the processes do not divide: DALI's shards move
    # through the samples from epoch to epoch and overlapped where unequal (e.g. 25 on 2 ranks shared 2
    # samples in epoch 2). Padded with copies of the first samples of the first tar, only those repeat.
    monkeypatch.setenv("FASTRES_DATA", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_tree(root, classes=tuple(f"c{i}" for i in range(5)), per_class=(6, 1))
    train, _ = scan_imagenet(root)
    samples = tuple((p, i) for i, (p, _) in enumerate(train.samples[:n]))  # labelled by position
    write_split_shards(FolderSplit(train.root, tuple(map(str, range(n))), samples), tmp_path / "s", "train", 10, False)
    shards = Shards(tmp_path / "s")
    extra = world - n % world
    padded = shards.padded(extra)
    assert padded.size == n + extra and padded.paths[:-1] == shards.paths
    assert shards.padded(extra).paths[-1] == padded.paths[-1]  # written once, found again
    loaders = [
        DaliLoader(shards, DaliOptions(train=True, batch_size=4, size=16, device=CPU, rank=r, world=world, threads=1))
        for r in range(world)
    ]
    for e in range(3):
        seen = [[i for _, y in lo for i in y.tolist()] for lo in loaders]
        assert {len(s) for s in seen} == {4 * len(loaders[0])}
        every = [i for s in seen for i in s]
        assert {i for i in every if every.count(i) > 1} <= set(range(extra)), e  # the first tar's first samples
