"""ImageNet folder layout: finding classes and samples, and saying clearly what is wrong.

    ROOT/train/<class>/*.JPEG
    ROOT/val/<class>/*.JPEG

Classes are the sub-folder names of `ROOT/train`, sorted by name; label i is the i-th
class, as in torchvision's ImageFolder and DALI's file reader, so every backend gives the
same label to the same file. Validation must have the same class folders as training.

A class folder's samples are its regular files (or links to them) with an image suffix.
Every other entry (a FIFO, a link to nothing, a directory even if named `*.JPEG`, a device
file, a file of another suffix) is left out and listed in `FolderSplit.skipped` with the
reason, which the checker, the trainer and eval print (`describe_skipped`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fastres import FastresError

__all__ = [
    "IMG_EXTENSIONS",
    "FolderSplit",
    "DatasetError",
    "class_dirs",
    "describe_skipped",
    "existing_dir",
    "os_problem",
    "split_folder",
    "scan_split",
    "scan_imagenet",
]

# Lower-case suffixes of the files read as images (ImageNet's own files end in .JPEG).
IMG_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class DatasetError(FastresError):
    """The dataset on disk does not have the layout or content fastres needs."""

    shared = True  # every rank meets it: rank 0 says it


@dataclass(frozen=True)
class FolderSplit:
    """One split of an ImageNet-layout tree: its classes and (path, label) samples."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (path, why) of the class folders' entries that are not samples

    def __len__(self) -> int:
        return len(self.samples)


def os_problem(path: str | os.PathLike, e: OSError, what: str = "") -> DatasetError:
    """A DatasetError of one line for an OSError met while listing or reading `path`."""
    what = f"{what} " if what else ""
    if e.errno == errno.ELOOP:
        return DatasetError(f"{what}{path} is a symbolic link loop")
    if e.errno in (errno.EACCES, errno.EPERM):
        return DatasetError(f"cannot read {what}{path}: permission denied")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return DatasetError(f"{what}{path} does not exist")
    return DatasetError(f"cannot read {what}{path}: {e.strerror or e}")


def _entries(folder: Path, what: str = "") -> list[tuple[str, str, bool, bool]]:
    """(name, path, is_dir, is_file) of a folder's entries; an unreadable folder or a symbolic
    link loop is a DatasetError naming it (os.scandir and DirEntry.is_dir raise OSError)."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as e:
        raise os_problem(folder, e, what) from None
    out = []
    for e in entries:
        try:
            is_dir = e.is_dir()
            out.append((e.name, e.path, is_dir, not is_dir and e.is_file()))
        except OSError as err:  # ELOOP: a link that points back at itself (dangling links are not files)
            raise os_problem(e.path, err) from None
    return out


def _why_not_a_sample(path: str, is_dir: bool, is_file: bool) -> str:
    """Why an entry of a class folder is not read as an image."""
    if is_dir:
        return "a directory"
    if is_file:
        return f"not an image file name (the suffix is not one of {', '.join(IMG_EXTENSIONS)})"
    try:
        mode = os.lstat(path).st_mode
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    link = stat.S_ISLNK(mode)
    if link:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return f"a symbolic link to nothing ({os.readlink(path)})"
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))  # fmt: skip
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"a symbolic link to {kind.removeprefix('a ')}" if link else kind


def describe_skipped(splits, limit: int = 5) -> str | None:
    """One line naming the entries of the splits' class folders that are not samples, or None."""
    skipped = [item for split in splits if split is not None for item in split.skipped]
    if not skipped:
        return None
    shown = "; ".join(f"{p} ({why})" for p, why in skipped[:limit])
    more = f"; and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"fastres: skipping {len(skipped)} entries of class folders that are not image files: {shown}{more}"


def class_dirs(split_dir: Path) -> list[str]:
    """The class folder names of a split, sorted (hidden folders are not classes)."""
    return sorted(name for name, _, is_dir, _ in _entries(split_dir) if is_dir and not name.startswith("."))


def scan_split(split_dir: str | os.PathLike, classes: tuple[str, ...] | None = None) -> FolderSplit:
    """List the images of one split. With `classes`, the split must have exactly those folders."""
    split_dir = existing_dir(split_dir, "dataset split folder ")
    found = tuple(class_dirs(split_dir))
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
    skipped: list[tuple[str, str]] = []
    empty: list[str] = []
    for label, name in enumerate(found):
        files = []
        for entry, path, is_dir, is_file in sorted(_entries(split_dir / name, "class folder")):
            if is_file and entry.lower().endswith(IMG_EXTENSIONS):
                files.append(path)
            else:
                skipped.append((path, _why_not_a_sample(path, is_dir, is_file)))
        files.sort()
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
    return FolderSplit(split_dir, found, tuple(samples), tuple(skipped))


def existing_dir(root: str | os.PathLike, prefix: str = "") -> Path:
    """ROOT as a Path, or DatasetError `<prefix>ROOT does not exist` / `is not a directory` /
    `is a symbolic link loop` (Path.exists calls a loop missing)."""
    root = Path(root).expanduser()
    try:
        mode = os.stat(root).st_mode
    except OSError as e:
        raise os_problem(root, e, prefix.strip()) from None
    if not stat.S_ISDIR(mode):
        raise DatasetError(f"{prefix}{root} is not a directory")
    return root


def scan_imagenet(root: str | os.PathLike, what: str = "--data") -> tuple[FolderSplit, FolderSplit]:
    """Scan ROOT/train and ROOT/val; raise DatasetError naming the first problem found.

    `what`: how the messages name ROOT (the flag or argument it came from)."""
    root = existing_dir(root, f"{what} ")
    if not _entries(root, what):
        raise DatasetError(
            f"{what} {root} is empty (expected {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG)"
        )
    for split in ("train", "val"):
        split_folder(root, split, what)
    train = scan_split(root / "train")
    val = scan_split(root / "val", classes=train.classes)
    return train, val


def split_folder(root: Path, split: str, what: str = "--data") -> Path:
    """ROOT/<split>, which must be a folder (a symbolic link loop is named as one)."""
    path = root / split
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise os_problem(path, e) from None
        is_dir = False
    if not is_dir:
        raise DatasetError(
            f"{what} {root} has no {split}/ folder (expected ImageNet layout: {root}/{split}/<class>/*.JPEG)"
        )
    return path
