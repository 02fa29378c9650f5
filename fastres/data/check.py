"""The dataset checker: find the files a run would die on, before the run starts.

DALI stops at the first file it cannot decode and has no option to skip it; real ImageNet
also carries a PNG and CMYK JPEGs under `.JPEG` names. `check_files` looks at every file
in a process pool and sorts out:

- bad (a loader would fail): zero bytes, unreadable, not an image, truncated (a JPEG
  without its end-of-image marker; with `decode=True`, any file whose full decode fails);
- odd but valid (reported, kept): CMYK, grayscale or palette images, a PNG (or other
  format) under a `.JPEG`/`.jpg` name, extreme sizes or aspect ratios.

Two depths: `header` opens each file with Pillow (format, mode, size: no pixel decode) and
looks for the JPEG end-of-image marker in the last bytes, about 0.1 ms a file; `decode`
decodes every pixel, as the loaders will (a few ms a file for ImageNet).

`python -m fastres.data check ROOT` runs it on an ImageNet-layout tree (exit 0: every file
good, 1: some bad, listed; 2: usage errors) and writes file lists without the bad files
(`train.txt`, `val.txt`: `relative/path label` lines, the format of DALI's
`fn.readers.file(file_root=ROOT/split, file_list=...)`, readable by `read_file_list`).
The trainer runs the header check before training (`--data-check`), and refuses with the
list or, with `--skip-bad-files`, trains without those files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from fastres.data.folder import FolderSplit, existing_dir, scan_imagenet, scan_split
from fastres.data.lists import parse_list

__all__ = ["FileReport", "CheckReport", "check_file", "check_files", "check_tree", "write_file_list", "read_file_list"]

JPEG_NAMES = (".jpeg", ".jpg")
TAIL_BYTES = 1024  # where the JPEG end-of-image marker must be (trailing padding is allowed)
MIN_SIDE, MAX_SIDE, MAX_ASPECT = 16, 8192, 10.0
# Below this many files a process pool costs more than it saves.
POOL_THRESHOLD = 2000


@dataclass(frozen=True)
class FileReport:
    path: str
    bad: str | None = None  # why no loader can use it
    odd: str | None = None  # valid, but not what the name or ImageNet suggests


@dataclass
class CheckReport:
    checked: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), sorted by path
    odd: list[tuple[str, str]] = field(default_factory=list)

    @property
    def bad_paths(self) -> frozenset[str]:
        return frozenset(p for p, _ in self.bad)

    def summary(self, limit: int = 5) -> str:
        shown = "; ".join(f"{p} ({why})" for p, why in self.bad[:limit])
        more = f"; and {len(self.bad) - limit} more" if len(self.bad) > limit else ""
        return f"{len(self.bad)} of {self.checked} files cannot be decoded: {shown}{more}"


def check_file(path: str, decode: bool = False) -> FileReport:
    """Classify one file; never raises for a problem with the file itself."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        return FileReport(path, bad=f"cannot stat: {e.strerror}")
    if size == 0:
        return FileReport(path, bad="zero bytes")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as e:
        return FileReport(path, bad=f"cannot read: {e.strerror}")
    try:
        with Image.open(path) as img:
            fmt, mode, (w, h) = img.format, img.mode, img.size
            if decode:
                img.load()
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        reason = str(e).split(" (")[0] if decode else "not an image"
        if "cannot identify image file" in str(e):
            reason = "not an image"
        return FileReport(path, bad=reason or type(e).__name__)
    if fmt == "JPEG" and not decode:
        with open(path, "rb") as fh:
            fh.seek(max(0, size - TAIL_BYTES))
            if b"\xff\xd9" not in fh.read():
                return FileReport(path, bad="truncated JPEG (no end-of-image marker)")
    notes = []
    if path.lower().endswith(JPEG_NAMES) and fmt != "JPEG":
        notes.append(f"{fmt} under a JPEG name")
    if mode == "CMYK":
        notes.append("CMYK")
    elif mode in ("L", "LA", "1", "I", "I;16", "F"):
        notes.append(f"grayscale ({mode})")
    elif mode not in ("RGB", "RGBA", "YCbCr"):
        notes.append(f"mode {mode}")
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE or max(w, h) / max(1, min(w, h)) > MAX_ASPECT:
        notes.append(f"extreme size {w}x{h}")
    return FileReport(path, odd=", ".join(notes) or None)


def _check_chunk(args: tuple[Sequence[str], bool]) -> list[FileReport]:
    paths, decode = args
    return [check_file(p, decode) for p in paths]


def check_files(
    paths: Sequence[str],
    decode: bool = False,
    workers: int | None = None,
    progress: bool = False,
    desc: str = "checking",
) -> CheckReport:
    """Check `paths` in a process pool (in this process for small lists), with a tqdm bar."""
    from tqdm import tqdm

    workers = workers or os.cpu_count() or 1
    chunk = 64 if decode else 256
    jobs = [(paths[i : i + chunk], decode) for i in range(0, len(paths), chunk)]
    report = CheckReport(checked=len(paths))
    on_a_terminal = sys.stderr.isatty() and sys.stdout.isatty()  # a pipe or a log file gets no bar frames
    bar = tqdm(total=len(paths), desc=desc, unit="file", disable=not (progress and on_a_terminal), dynamic_ncols=True,
               leave=False)  # fmt: skip
    if workers <= 1 or len(paths) < POOL_THRESHOLD:
        results: Iterable[list[FileReport]] = map(_check_chunk, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_check_chunk, jobs)
    try:
        for reports in results:
            for r in reports:
                if r.bad:
                    report.bad.append((r.path, r.bad))
                elif r.odd:
                    report.odd.append((r.path, r.odd))
            bar.update(len(reports))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    report.bad.sort()
    report.odd.sort()
    return report


def splits_of(root: str | os.PathLike) -> dict[str, FolderSplit]:
    """The splits of ROOT: {train, val} for an ImageNet tree, else ROOT itself as one split."""
    root = existing_dir(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, val = scan_imagenet(root)
        return {"train": train, "val": val}
    return {root.name or "root": scan_split(root)}


def check_tree(
    root: str | os.PathLike, decode: bool = False, workers: int | None = None, progress: bool = False
) -> tuple[dict[str, FolderSplit], CheckReport]:
    splits = splits_of(root)
    paths = [p for s in splits.values() for p, _ in s.samples]
    return splits, check_files(paths, decode=decode, workers=workers, progress=progress)


def write_file_list(split: FolderSplit, path: str | os.PathLike, exclude: frozenset[str] = frozenset()) -> int:
    """`relative/path label` lines for the split's good files (DALI's file_list format)."""
    lines = [f"{os.path.relpath(p, split.root)} {label}\n" for p, label in split.samples if p not in exclude]
    Path(path).write_text("".join(lines), encoding="utf-8")
    return len(lines)


def read_file_list(path: str | os.PathLike, split_root: str | os.PathLike) -> list[tuple[str, int]]:
    """(path under split_root, label) pairs from a list written by `write_file_list` (read as
    fastres.data.lists reads --train-list; the files are not looked for)."""
    return [(os.path.join(split_root, rel), label) for _, rel, label in parse_list(path)]
