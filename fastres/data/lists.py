"""File lists: train or validate on the files a list names (`--train-list`, `--val-list`).

A list has one `relative/path label` line per file, relative to ROOT/train (or ROOT/val):
the format `python -m fastres.data check --lists` writes and DALI's `file_list` reads. The
class names stay those of the tree (the folders of ROOT/train, sorted), so a label means
the same class as in a run without a list, and a list is checked against the tree:

- every listed file exists (one listing of each folder the list names, not a stat per file);
- every label is a class of the tree (0 <= label < number of class folders);
- a file inside a class folder carries that folder's label (a list written for another set
  of classes would otherwise train on shifted labels without a word).

A file outside the class folders (e.g. a flat ROOT/val with a list of labels) takes the
label its line gives. Problems are one-line DatasetErrors naming the list, the line and the
path. Lines are kept in list order; a file listed twice is read twice.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from pathlib import Path

from fastres.data.folder import DatasetError, FolderSplit, os_problem

__all__ = ["parse_list", "split_from_list"]


def _read_text(list_path: Path, flag: str) -> str:
    try:
        data = list_path.read_bytes()
    except IsADirectoryError:
        raise DatasetError(f"{flag} {list_path} is a directory, not a file list") from None
    except OSError as e:
        raise os_problem(list_path, e, flag) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{flag} {list_path} is not a UTF-8 text file list (byte {e.start}): expected 'relative/path label' lines"
        ) from None


def parse_list(list_path: str | os.PathLike, flag: str = "file list") -> list[tuple[int, str, int]]:
    """(line number, relative path, label) for each non-blank line of a `relative/path label` list.

    The label is the last whitespace-separated field, so paths may hold spaces."""
    list_path = Path(list_path).expanduser()
    out = []
    for n, line in enumerate(_read_text(list_path, flag).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip().rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"{flag} {list_path}:{n}: expected 'relative/path label', got {line.strip()!r}")
        out.append((n, parts[0].strip(), int(parts[1])))
    return out


def split_from_list(
    split_dir: Path, classes: tuple[str, ...], list_path: str | os.PathLike, flag: str = "file list"
) -> FolderSplit:
    """The split made of the files `list_path` names, relative to `split_dir`, labelled by the
    list and checked against `classes` (the tree's class folders, sorted)."""
    list_path = Path(list_path).expanduser()
    where = f"{flag} {list_path}"
    index = {name: i for i, name in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    lines: list[int] = []
    for n, rel, label in parse_list(list_path, flag):
        if os.path.isabs(rel):
            raise DatasetError(f"{where}:{n}: {rel} is an absolute path; list paths are relative to {split_dir}")
        rel = os.path.normpath(rel)
        if rel == os.curdir or rel.split(os.sep)[0] == os.pardir:
            raise DatasetError(f"{where}:{n}: {rel} is not a file inside {split_dir}")
        if not 0 <= label < len(classes):
            raise DatasetError(
                f"{where}:{n}: {rel} has label {label}, out of range: {split_dir.parent}/train has "
                f"{len(classes)} class folders (labels 0-{len(classes) - 1})"
            )
        folder = rel.split(os.sep)[0]
        if os.sep in rel and folder in index and index[folder] != label:
            raise DatasetError(
                f"{where}:{n}: {rel} has label {label} but lies in class folder {folder} (label {index[folder]}); "
                "was the list written for other classes?"
            )
        samples.append((os.path.join(split_dir, rel), label))
        lines.append(n)
    if not samples:
        raise DatasetError(f"{where} lists no files")
    _check_exist(samples, lines, where)
    return FolderSplit(split_dir, classes, tuple(samples))


def _check_exist(samples: list[tuple[str, int]], lines: list[int], where: str) -> None:
    """Every listed path is a file: one listing per folder named, a stat only for the rest."""
    by_folder: dict[str, list[int]] = defaultdict(list)
    for i, (path, _) in enumerate(samples):
        by_folder[os.path.dirname(path)].append(i)
    for folder, members in by_folder.items():
        names = set()
        try:
            with os.scandir(folder) as it:
                for e in it:
                    try:
                        if e.is_file():
                            names.add(e.name)
                    except OSError:  # a symbolic link loop: the stat below names it
                        pass
        except OSError:  # a missing or unreadable folder: the stat below names the first file
            pass
        for i in members:
            path = samples[i][0]
            if os.path.basename(path) in names:
                continue
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError as e:
                raise DatasetError(f"{where}:{lines[i]}: {os_problem(path, e)}") from None
            if not regular:
                raise DatasetError(f"{where}:{lines[i]}: {path} is not a file")
