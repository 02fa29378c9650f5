"""A run's dataset, found and listed once, then checked before training.

    dataset = open_dataset(cfg.data, cfg.train_list, cfg.val_list)   # built-in when None; scans ROOT once
    bad = check_dataset(dataset, "header", skip_bad_files=False)   # rank 0, before training
    loaders = make_loaders(cfg, device, dataset=dataset, exclude=bad)

`open_dataset` resolves the root (writing the built-in dataset on first use), tells an
ImageNet-layout tree from a folder of webdataset shards, and lists the tree's files; the
check and the loaders both use that one listing. With `--train-list` / `--val-list`
(fastres.data.lists) a split is the files its list names, with the tree's classes.

`check_dataset` runs fastres.data.check over the listed files: DALI stops the run at the
first file it cannot decode, so a bad file is found here, where the error can name it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from fastres.data.builtin import (
    CLASSES,
    TRAIN_PER_CLASS,
    VAL_PER_CLASS,
    builtin_root,
    builtin_sizes,
    ensure_builtin_dataset,
    rewrite_if_builtin,
)
from fastres.data.folder import (
    DatasetError,
    FolderSplit,
    class_dirs,
    existing_dir,
    scan_imagenet,
    scan_split,
    split_folder,
)
from fastres.data.lists import split_from_list

__all__ = [
    "CHECK_DEPTHS",
    "Dataset",
    "batches_per_epoch",
    "check_dataset",
    "check_depth",
    "find_bad_files",
    "is_shard_dir",
    "open_dataset",
    "optimizer_steps",
    "train_images",
    "train_steps",
]

CHECK_DEPTHS = ("none", "header", "decode")  # --data-check: nothing, open + size + end marker, full decode


def batches_per_epoch(where: str, images: int, world: int, batch_size: int, rounding: str = "floor") -> int:
    """train_steps, or a DatasetError when `images` (ROOT/train's, `where` names it) make no global batch."""
    steps = train_steps(images, world, batch_size, rounding)
    if steps == 0:
        raise DatasetError(
            f"{where} has {images} images, fewer than one global batch "
            f"({batch_size} x {world} processes): lower --batch-size"
        )
    return steps


def optimizer_steps(batches: int, accumulate: int) -> int:
    """Optimizer steps per epoch of `batches` per-process batches at --accumulate passes a step, or a
    DatasetError when they make none."""
    if batches // accumulate == 0:
        raise DatasetError(f"--accumulate {accumulate}: an epoch has only {batches} batches per process: lower "
                           "--accumulate or --batch-size")  # fmt: skip
    return batches // accumulate


def train_images(data: str | None, train_list: str | None = None) -> tuple[Path, int]:
    """(root, training images) of the dataset a run on `data` trains on, reading no image: the built-in
    dataset's sizes are known without it being written; a tree is listed as training lists it (its
    --train-list when given); shards are counted from their manifest."""
    sizes = builtin_sizes(data) if data else (TRAIN_PER_CLASS, VAL_PER_CLASS)
    if sizes is not None:
        return (Path(data) if data else builtin_root()), sizes[0] * len(CLASSES)
    root = Path(data).expanduser()
    if is_shard_dir(root):
        from fastres.data.shards import Shards

        return root, len(Shards(root / "train"))
    if train_list:
        train_dir = split_folder(existing_dir(root, "--data "), "train")
        return root, len(split_from_list(train_dir, tuple(class_dirs(train_dir)), train_list, "--train-list"))
    return root, len(scan_split(split_folder(existing_dir(root, "--data "), "train")))


def train_steps(num_images: int, world: int, batch_size: int, rounding: str = "floor") -> int:
    """Training steps per epoch, the same on every rank and every backend: full batches of the
    floor(num_images / world) images each rank is sure to have (the rest of an epoch is dropped);
    rounding "ceil": one more batch where they do not divide, filled up to a whole batch by the
    loaders (NVIDIA's MLPerf get_epoch_size: ceil(floor(images / processes) / batch))."""
    if rounding == "ceil":
        return -(-(num_images // world) // batch_size)
    return (num_images // world) // batch_size


def is_shard_dir(root: Path) -> bool:
    """ROOT/train/manifest.json: a tree of webdataset shards, not of image folders."""
    return (Path(root) / "train" / "manifest.json").is_file()


@dataclass(frozen=True)
class Dataset:
    """Where the data is and, for an ImageNet-layout tree, its listed files (None for shards)."""

    root: Path
    train: FolderSplit | None
    val: FolderSplit | None

    @property
    def shards(self) -> bool:
        return self.train is None


def open_dataset(data: str | None, train_list: str | None = None, val_list: str | None = None, say=None) -> Dataset:
    """The dataset at `data` (ROOT/train/<class>/*, ROOT/val/<class>/*, or shards), listed once.

    None: the built-in dataset, written on first use under $FASTRES_DATA (`say` is told so first). `train_list` /
    `val_list`: files of `relative/path label` lines (fastres.data.lists); a split with a list
    is the files it names, relative to ROOT/train or ROOT/val, with the classes of the
    folders of ROOT/train. Raises DatasetError naming the first problem of the layout or list."""
    if data:
        rewrite_if_builtin(Path(data).expanduser(), say)  # a run's built-in dataset, gone from its cache
    root = Path(data).expanduser() if data else ensure_builtin_dataset(say=say)
    if is_shard_dir(root):
        if train_list or val_list:
            raise DatasetError(
                f"--{'train' if train_list else 'val'}-list names files of an image tree, but --data {root} "
                "holds webdataset shards"
            )
        return Dataset(root, None, None)
    if not train_list and not val_list:
        train, val = scan_imagenet(root)
        return Dataset(root, train, val)
    root = existing_dir(root, "--data ")
    train_dir = split_folder(root, "train")
    if train_list:
        classes = tuple(class_dirs(train_dir))
        if not classes:
            raise DatasetError(f"{train_dir} has no class folders: --train-list labels are indices of its folders")
        train = split_from_list(train_dir, classes, train_list, "--train-list")
    else:
        train = scan_split(train_dir)
    val_dir = split_folder(root, "val")
    if val_list:  # ROOT/val needs no class folders here: a flat folder with a list of labels will do
        val = split_from_list(val_dir, train.classes, val_list, "--val-list")
    else:
        val = scan_split(val_dir, classes=train.classes)
    return Dataset(root, train, val)


def check_depth(depth: str) -> str:
    """`--data-check`'s value, or a DatasetError naming the choices."""
    if depth not in CHECK_DEPTHS:
        raise DatasetError(f"--data-check must be one of {', '.join(CHECK_DEPTHS)}, got {depth!r}")
    return depth


def find_bad_files(paths, depth: str, skip_bad_files: bool, advice: str, progress: bool = False):
    """The check before a run or an evaluation: None when `depth` is "none" or no file is bad; else a
    DatasetError naming them and ending in `advice` (how to go on without them), or, with
    `skip_bad_files`, their fastres.data.check.CheckReport (the caller leaves them out and says so)."""
    if check_depth(depth) == "none":
        return None
    from fastres.data.check import check_files

    report = check_files(paths, decode=depth == "decode", progress=progress)
    if not report.bad:
        return None
    if not skip_bad_files:
        raise DatasetError(f"{report.summary()}; {advice}")
    return report


def check_dataset(dataset: Dataset, depth: str, skip_bad_files: bool, progress: bool = False) -> frozenset[str]:
    """Find undecodable files before training; refuse naming them, or return them to leave out.

    depth: "none", "header" or "decode" (CHECK_DEPTHS). Shards were checked when written."""
    if dataset.shards:
        check_depth(depth)
        return frozenset()
    paths = [p for split in (dataset.train, dataset.val) for p, _ in split.samples]
    advice = f"train without them with --skip-bad-files, or list them with python -m fastres.data check {dataset.root}"
    report = find_bad_files(paths, depth, skip_bad_files, advice, progress and sys.stderr.isatty())
    if report is None:
        return frozenset()
    shown = "; ".join(f"{p} ({why})" for p, why in report.bad[:5]) + (" ..." if len(report.bad) > 5 else "")
    print(f"fastres: skipping {len(report.bad)} bad files (--skip-bad-files): {shown}", flush=True)
    return report.bad_paths
