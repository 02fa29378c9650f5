"""The data layer on real JPEG files: layout scanning, transforms, sampling, the built-in set."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_cfg import loader_cfg
from PIL import Image

from fastres.data import DatasetError, scan_imagenet
from fastres.data.builtin import CLASSES, ensure_builtin_dataset, render_image
from fastres.data.loader import make_loaders
from fastres.data.pil import ShardedSampler
from fastres.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomResizedCropFlip,
    ResizeCenterCrop,
    normalize_batch,
    random_resized_crop_box,
)


def write_jpeg(path: Path, w: int, h: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


def make_tree(root: Path, classes=("b_dog", "a_cat", "c_eel"), per_class=(5, 2)) -> Path:
    for split, n in zip(("train", "val"), per_class):
        for ci, name in enumerate(classes):
            for i in range(n):
                write_jpeg(
                    root / split / name / f"{name}_{i}.JPEG", 40 + 7 * i, 30 + 5 * ci, hash((split, ci, i)) % 1000
                )
    return root


def Cfg():  # noqa: N802 (the tests build it as they built the stand-in it replaces)
    return loader_cfg(backend="pytorch", batch_size=4, image_size=32, crop_scale_min=0.08, workers=0)


# ----------------------------------------------------------------------------- layout


def test_classes_are_sorted_and_labels_follow_them(tmp_path):
    train, val = scan_imagenet(make_tree(tmp_path))
    assert train.classes == ("a_cat", "b_dog", "c_eel") == val.classes
    assert len(train) == 15 and len(val) == 6
    for path, label in train.samples:
        assert Path(path).parent.name == train.classes[label]


def test_non_image_files_and_hidden_folders_are_ignored(tmp_path):
    root = make_tree(tmp_path)
    (root / "train" / "a_cat" / "notes.txt").write_text("x")
    (root / "train" / ".cache").mkdir()
    train, _ = scan_imagenet(root)
    assert len(train) == 15 and ".cache" not in train.classes


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda r: None, "does not exist"),
        (lambda r: r.mkdir(), "is empty"),
        (lambda r: (r / "images").mkdir(parents=True), "has no train/ folder"),
        (lambda r: ((r / "train").mkdir(parents=True), (r / "val").mkdir()), "has no class folders"),
        (lambda r: ((r / "train" / "a").mkdir(parents=True), (r / "val" / "a").mkdir(parents=True)), "no image files"),
    ],
)
def test_bad_layouts_name_the_problem(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        scan_imagenet(root)


def test_val_classes_must_match_train(tmp_path):
    root = make_tree(tmp_path)
    (root / "val" / "c_eel").rename(root / "val" / "d_fox")
    with pytest.raises(DatasetError, match="missing c_eel; unexpected d_fox"):
        scan_imagenet(root)


def test_a_class_without_images_is_named(tmp_path):
    root = make_tree(tmp_path)
    (root / "train" / "e_emu").mkdir()
    with pytest.raises(DatasetError, match="hold no images: e_emu"):
        scan_imagenet(root)


# ----------------------------------------------------------------------------- transforms


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = random.Random(0)
    for _ in range(2000):
        w, h = rng.randint(20, 500), rng.randint(20, 500)
        l, t, r, b = random_resized_crop_box(w, h, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= l < r <= w and 0 <= t < b <= h
        cw, ch = r - l, b - t
        if (cw, ch) != (w, h) and l + t > 0 or cw * ch < w * h:
            # a sampled crop (not the fallback): area and aspect within the bounds, up to rounding
            assert cw * ch >= 0.08 * w * h * 0.8 - 2 * (cw + ch)


def test_random_resized_crop_fallback_is_a_centered_clamped_crop():
    rng = random.Random(0)
    # a 1000x10 strip: no crop of aspect <= 4/3 with area >= 50% fits, so the fallback runs
    l, t, r, b = random_resized_crop_box(1000, 10, (0.5, 1.0), (3 / 4, 4 / 3), rng)
    assert (b - t) == 10 and (r - l) == round(10 * 4 / 3) and l == (1000 - (r - l)) // 2


def test_train_transform_shape_and_flip():
    img = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (48, 1, 3)))  # left dark, right bright
    t = RandomResizedCropFlip(16, scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48))
    outs = [t(img, random.Random(s)) for s in range(20)]
    assert all(o.shape == (16, 16, 3) and o.dtype == np.uint8 for o in outs)
    increasing = [o[0, -1, 0] > o[0, 0, 0] for o in outs]
    assert any(increasing) and not all(increasing)  # both orientations occur


def test_val_transform_resizes_shorter_side_then_center_crops():
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, 100:] = 255  # right half white
    out = ResizeCenterCrop(56, crop_ratio=0.875)(Image.fromarray(arr))
    assert out.shape == (56, 56, 3)
    # shorter side 100 -> 64, width 128; the central 56 columns straddle the edge at 64
    assert out[:, :20].max() == 0 and out[:, -20:].min() == 255


def test_normalize_batch_matches_the_formula_and_layouts():
    images = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    want = (images.double() - torch.tensor(IMAGENET_MEAN, dtype=torch.float64)) / torch.tensor(
        IMAGENET_STD, dtype=torch.float64
    )
    want = want.permute(0, 3, 1, 2)
    out = normalize_batch(images)
    assert out.shape == (2, 3, 5, 6) and out.is_contiguous()
    torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=1e-6)
    cl = normalize_batch(images, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, out)
    assert normalize_batch(images, torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="uint8 NHWC"):
        normalize_batch(images.float())


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("size, world", [(10, 1), (10, 3), (17, 4), (5, 8)])
def test_train_shards_cover_every_sample_each_epoch_with_equal_lengths(size, world):
    for epoch in range(2):
        shards = []
        for rank in range(world):
            s = ShardedSampler(size, shuffle=True, seed=3, rank=rank, world=world)
            s.set_epoch(epoch)
            shards.append([i for i, _ in s])
        assert len({len(x) for x in shards}) == 1 and len(shards[0]) == len(s)
        seen = [i for x in shards for i in x]
        assert set(seen) == set(range(size))
        assert len(seen) - size == (-size) % world  # only the padding repeats


@pytest.mark.parametrize("size, world", [(10, 3), (7, 8), (16, 4)])
def test_val_shards_count_every_sample_exactly_once(size, world):
    seen = sorted(i for rank in range(world) for i, _ in ShardedSampler(size, shuffle=False, rank=rank, world=world))
    assert seen == list(range(size))


def test_epochs_differ_and_seeds_repeat():
    a, b = ShardedSampler(100, True, seed=1), ShardedSampler(100, True, seed=1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first


def test_loader_batches_depend_on_seed_not_on_worker_count(tmp_path):
    root = make_tree(tmp_path)
    cfg = Cfg()
    cfg.data = str(root)
    batches = {}
    for workers in (0, 2):
        cfg.workers = workers
        loaders = make_loaders(cfg, torch.device("cpu"))
        loaders.train.set_epoch(1)
        batches[workers] = [(x.clone(), y.clone()) for x, y in loaders.train]
    assert len(batches[0]) == 15 // 4  # drop_last
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2]):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    x, y = batches[0][0]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_val_loader_counts_every_image_once_with_true_labels(tmp_path):
    root = make_tree(tmp_path)
    cfg = Cfg()
    cfg.data = str(root)
    cfg.batch_size = 4
    labels = torch.cat([y for _, y in make_loaders(cfg, torch.device("cpu")).val])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_undecodable_file_is_substituted_and_named(tmp_path):
    root = make_tree(tmp_path)
    bad = root / "val" / "a_cat" / "a_cat_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    cfg = Cfg()
    cfg.data = str(root)
    loaders = make_loaders(cfg, torch.device("cpu"))
    images = torch.cat([x for x, _ in loaders.val])
    assert images.shape[0] == 6 and (images[0].abs() < 0.01).all()  # the mean colour: ~0 once normalised
    ((path, why),) = loaders.val.take_new_bad()
    assert path == str(bad) and "cannot identify image file" in why
    assert loaders.val.take_new_bad() == []


def test_too_few_images_for_one_batch_is_named(tmp_path):
    cfg = Cfg()
    cfg.data = str(make_tree(tmp_path))
    cfg.batch_size = 64
    with pytest.raises(DatasetError, match="fewer than one global batch"):
        make_loaders(cfg, torch.device("cpu"))


# ----------------------------------------------------------------------------- built-in dataset


def test_render_is_deterministic_and_varied():
    a = np.asarray(render_image(3, 42))
    assert np.array_equal(a, np.asarray(render_image(3, 42)))
    sizes = {render_image(c, s).size for c in range(3) for s in range(10)}
    assert len(sizes) > 20 and all(64 <= w <= 160 and 64 <= h <= 160 for w, h in sizes)


def test_class_is_not_predicted_by_mean_colour():
    # Mean RGB of 30 images per class: the spread within a class dwarfs the spread of the
    # class means, so a colour lookup cannot classify the built-in dataset.
    means = np.array(
        [[np.asarray(render_image(c, s), np.float64).mean((0, 1)) for s in range(30)] for c in range(len(CLASSES))]
    )
    within = means.std(axis=1).mean()
    between = means.mean(axis=1).std(axis=0).mean()
    assert between < 0.5 * within


def test_builtin_dataset_is_written_once_in_imagenet_layout(tmp_path):
    root = ensure_builtin_dataset(tmp_path, train_per_class=3, val_per_class=2, workers=2)
    train, val = scan_imagenet(root)
    assert train.classes == CLASSES and len(train) == 30 and len(val) == 20
    stamp = (root / "train" / CLASSES[0] / f"{CLASSES[0]}_00000.JPEG").stat().st_mtime_ns
    again = ensure_builtin_dataset(tmp_path, train_per_class=3, val_per_class=2)
    assert again == root
    assert (root / "train" / CLASSES[0] / f"{CLASSES[0]}_00000.JPEG").stat().st_mtime_ns == stamp
    with Image.open(train.samples[0][0]) as img:
        assert img.format == "JPEG" and img.mode == "RGB"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_builtin_dataset_is_identical_across_writes(tmp_path):
    a = ensure_builtin_dataset(tmp_path / "a", train_per_class=2, val_per_class=1, workers=1)
    b = ensure_builtin_dataset(tmp_path / "b", train_per_class=2, val_per_class=1, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*.JPEG"))
    assert len(files) == 30
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
