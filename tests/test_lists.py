"""Training from file lists (--train-list / --val-list) on real JPEG trees, every backend.

Each image is one uniform colour that names it, so the pixels a loader delivers say which
files it read, whatever its crops, flips and order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from loader_cfg import loader_cfg
from PIL import Image

from fastres.data import DatasetError, check_dataset, open_dataset
from fastres.data.loader import make_loaders
from fastres.data.transforms import IMAGENET_MEAN, IMAGENET_STD

CPU = torch.device("cpu")
CLASSES = ("a_cat", "b_dog", "c_eel")


def colour(k: int) -> tuple[int, int, int]:
    return (20 + 24 * (k % 9), 20 + 24 * (k // 9), 128)


def write_coloured_tree(root: Path, per_class=(6, 3)) -> dict[str, list[tuple[str, int]]]:
    """ROOT/{train,val}/<class>/<class>_<i>.JPEG, each a uniform colour; (relative path, label)
    per split, numbered k in this order (train first) for `colour(k)`."""
    listed: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    k = 0
    for split, n in zip(("train", "val"), per_class):
        for label, name in enumerate(CLASSES):
            for i in range(n):
                rel = f"{name}/{name}_{i}.JPEG"
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40 + 4 * i, 36), colour(k)).save(root / split / rel, quality=95)
                listed[split].append((rel, label))
                k += 1
    return listed


def which(images: torch.Tensor) -> list[int]:
    """The k of each image's colour (images normalised, NCHW)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (images.float() * std + mean).mean((2, 3))
    out = []
    for r, g, _ in rgb.tolist():
        k = round((r - 20) / 24) + 9 * round((g - 20) / 24)
        assert abs(colour(k)[0] - r) < 6 and abs(colour(k)[1] - g) < 6, (r, g)
        out.append(k)
    return out


def Cfg():  # noqa: N802 (the tests build it as they built the stand-in it replaces)
    return loader_cfg(backend="pytorch", batch_size=2, image_size=16, crop_scale_min=0.5, workers=0)


def write_list(path: Path, lines) -> Path:
    path.write_text("".join(f"{rel} {label}\n" for rel, label in lines))
    return path


@pytest.mark.parametrize("backend", ["pytorch", "dali"])
def test_list_training_reads_exactly_the_listed_files(tmp_path, backend):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    root = tmp_path / "data"
    files = write_coloured_tree(root)
    number = {(split, rel): k for k, (split, rel) in enumerate((s, r) for s in ("train", "val") for r, _ in files[s])}
    train_pick = [files["train"][i] for i in (0, 2, 3, 7, 8, 10, 12, 17)]  # 8 of 18, every class
    val_pick = [files["val"][i] for i in (5, 1, 8)]  # list order, not folder order
    cfg = Cfg()
    cfg.data, cfg.backend = str(root), backend
    cfg.train_list = str(write_list(tmp_path / "train.txt", train_pick))
    cfg.val_list = str(write_list(tmp_path / "val.txt", val_pick))
    loaders = make_loaders(cfg, CPU)
    assert loaders.classes == CLASSES and loaders.train_size == 8 and loaders.val_size == 3
    for epoch in range(2):
        loaders.train.set_epoch(epoch)
        seen, labels = [], []
        for x, y in loaders.train:
            seen += which(x)
            labels += y.tolist()
        assert sorted(seen) == sorted(number["train", rel] for rel, _ in train_pick)  # each listed file once
        label_of = {number["train", rel]: label for rel, label in train_pick}
        assert labels == [label_of[k] for k in seen]
    x, y = map(torch.cat, zip(*[(x, y) for x, y in loaders.val]))
    assert which(x) == [number["val", rel] for rel, _ in val_pick] and y.tolist() == [lab for _, lab in val_pick]


def test_a_flat_val_folder_with_a_list_of_labels(tmp_path):
    root = tmp_path / "data"
    files = write_coloured_tree(root, per_class=(2, 1))
    flat = []
    for rel, label in files["val"]:  # ILSVRC2012's own layout: val/<image>, labels in a list
        name = Path(rel).name
        (root / "val" / rel).rename(root / "val" / name)
        (root / "val" / Path(rel).parent).rmdir()
        flat.append((name, label))
    dataset = open_dataset(str(root), val_list=str(write_list(tmp_path / "val.txt", flat)))
    assert dataset.val.samples == tuple((str(root / "val" / n), label) for n, label in flat)
    assert dataset.train.classes == CLASSES and len(dataset.train) == 6  # no train list: the whole tree


def test_the_check_reads_only_the_listed_files(tmp_path):
    root = tmp_path / "data"
    files = write_coloured_tree(root, per_class=(2, 1))
    (root / "train" / files["train"][0][0]).write_bytes(b"")  # bad, but not listed
    dataset = open_dataset(str(root), train_list=str(write_list(tmp_path / "t.txt", files["train"][1:])))
    assert check_dataset(dataset, "header", skip_bad_files=False) == frozenset()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "--train-list {list} does not exist"),
        ("dir", "--train-list {list} is a directory, not a file list"),
        (b"a_cat/a_cat_0.JPEG 0\n\xff\xfe 1\n", "--train-list {list} is not a UTF-8 text file list"),
        ("", "--train-list {list} lists no files"),
        ("a_cat/a_cat_0.JPEG 0\na_cat/a_cat_1.JPEG\n", "--train-list {list}:2: expected 'relative/path label'"),
        ("a_cat/a_cat_0.JPEG 0\nb_dog/b_dog_0.JPEG 3\n", "{list}:2: b_dog/b_dog_0.JPEG has label 3, out of range"),
        ("a_cat/a_cat_0.JPEG -1\n", "{list}:1: a_cat/a_cat_0.JPEG has label -1, out of range"),
        ("b_dog/b_dog_0.JPEG 0\n", "{list}:1: b_dog/b_dog_0.JPEG has label 0 but lies in class folder b_dog (label 1)"),
        ("a_cat/a_cat_0.JPEG 0\n\na_cat/gone.JPEG 0\n", "{list}:3: {root}/train/a_cat/gone.JPEG does not exist"),
        ("/etc/passwd 0\n", "{list}:1: /etc/passwd is an absolute path"),
        ("../val/a_cat/a_cat_0.JPEG 0\n", "{list}:1: ../val/a_cat/a_cat_0.JPEG is not a file inside"),
        ("a_cat 0\n", "{list}:1: {root}/train/a_cat is not a file"),
    ],
)
def test_bad_train_lists_are_one_line_errors_naming_list_line_and_path(tmp_path, content, message):
    root = tmp_path / "data"
    write_coloured_tree(root, per_class=(2, 1))
    listed = tmp_path / "train.txt"
    if content == "dir":
        listed.mkdir()
    elif isinstance(content, bytes):
        listed.write_bytes(content)
    elif content is not None:
        listed.write_text(content)
    with pytest.raises(DatasetError) as err:
        open_dataset(str(root), train_list=str(listed))
    text = str(err.value)
    assert "\n" not in text and message.format(list=listed, root=root) in text


def test_lists_with_shards_are_refused(tmp_path):
    (tmp_path / "wds" / "train").mkdir(parents=True)
    (tmp_path / "wds" / "train" / "manifest.json").write_text("{}")
    with pytest.raises(DatasetError, match="--val-list names files of an image tree, but --data .* holds webdataset"):
        open_dataset(str(tmp_path / "wds"), val_list=str(tmp_path / "v.txt"))
