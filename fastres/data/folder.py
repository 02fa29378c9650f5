"""ImageNet folder layout: finding classes and samples, and saying clearly what is wrong.

    ROOT/train/<class>/*.JPEG
    ROOT/val/<class>/*.JPEG

Classes are the sub-folder names of `ROOT/train`, sorted by name; label i is the i-th
class, as in torchvision's ImageFolder and DALI's file reader, so every backend gives the
same label to the same file. Validation must have the same class folders as training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastres import FastresError

__all__ = ["IMG_EXTENSIONS", "FolderSplit", "DatasetError", "existing_dir", "scan_split", "scan_imagenet"]

# Lower-case suffixes of the files read as images (ImageNet's own files end in .JPEG).
IMG_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class DatasetError(FastresError):
    """The dataset on disk does not have the layout or content fastres needs."""


@dataclass(frozen=True)
class FolderSplit:
    """One split of an ImageNet-layout tree: its classes and (path, label) samples."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]

    def __len__(self) -> int:
        return len(self.samples)


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def scan_split(split_dir: str | os.PathLike, classes: tuple[str, ...] | None = None) -> FolderSplit:
    """List the images of one split. With `classes`, the split must have exactly those folders."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DatasetError(f"dataset split folder {split_dir} does not exist")
    found = tuple(_class_dirs(split_dir))
    if not found:
        raise DatasetError(f"{split_dir} has no class folders (expected {split_dir}/<class>/<image>.JPEG)")
    if classes is not None and found != classes:
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "",
                f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}" if extra else "",
            )
            if part
        )
        raise DatasetError(f"class folders of {split_dir} differ from the training classes: {detail}")
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    for label, name in enumerate(found):
        files = sorted(
            e.path for e in os.scandir(split_dir / name) if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)
        )
        if not files:
            empty.append(name)
        samples.extend((f, label) for f in files)
    if not samples:
        raise DatasetError(f"{split_dir} has class folders but no image files ({', '.join(IMG_EXTENSIONS)})")
    if empty:
        raise DatasetError(
            f"{len(empty)} class folder(s) of {split_dir} hold no images: {', '.join(empty[:5])}"
            f"{' ...' if len(empty) > 5 else ''}"
        )
    return FolderSplit(split_dir, found, tuple(samples))


def existing_dir(root: str | os.PathLike, prefix: str = "") -> Path:
    """ROOT as a Path, or DatasetError `<prefix>ROOT does not exist` / `is not a directory`."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{prefix}{root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{prefix}{root} is not a directory")
    return root


def scan_imagenet(root: str | os.PathLike) -> tuple[FolderSplit, FolderSplit]:
    """Scan ROOT/train and ROOT/val; raise DatasetError naming the first problem found."""
    root = existing_dir(root, "--data ")
    if not any(True for _ in os.scandir(root)):
        raise DatasetError(
            f"--data {root} is empty (expected {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG)"
        )
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(
                f"--data {root} has no {split}/ folder (expected ImageNet layout: {root}/{split}/<class>/*.JPEG)"
            )
    train = scan_split(root / "train")
    val = scan_split(root / "val", classes=train.classes)
    return train, val
