"""Files that cannot be decoded during training: the substitute, the run's list, the limit.

A file that passes the check before training (`--data-check header` reads headers and the
JPEG end marker, not the pixels) can still fail to decode: a JPEG whose entropy-coded data
is corrupt, or any file with `--data-check none`. Every loader then puts a substitute in
the bad sample's place instead of stopping the run, and reports the file once
(`take_new_bad()` on each loader: fastres/data/loader.py).

The substitute is one image for every backend: a uniform image of the ImageNet mean colour
rounded to 8 bits, `SUBSTITUTE_RGB` = (124, 116, 104), with the sample's own label. After
normalisation it is within 0.01 of zero in every channel: it pulls no feature one way or the
other, and cross-entropy on it only nudges the classifier's bias. It replaces the sample
at the same position of the same batch, so the order of the other samples and the batch
size do not change, and it depends on nothing but the sample's position: a run that finds
the file bad now and a run that knows it from an earlier attempt (`known_bad`, read from
RUN/bad_files.txt) see bit-identical batches. The PIL loader fills the array directly and
does not open a known-bad file; DALI reads `substitute_image()`, a PNG of that colour written
once by fastres (lossless, so every decoder gives exactly that colour), which stands in the
reader's file list at the bad file's index.

RUN/bad_files.txt (`read_bad_list` / `append_bad_list`): one `path<TAB>reason` line per bad
file, appended and fsynced as files are found, so a preempted run's next attempt knows them.
`max_bad_default(train_size)`: the default of `--max-bad-samples`, 0.1% of the training set.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fastres.data.folder import DatasetError

__all__ = [
    "BAD_LIST",
    "SUBSTITUTE_RGB",
    "append_bad_list",
    "max_bad_default",
    "read_bad_list",
    "substitute_array",
    "substitute_image",
]

BAD_LIST = "bad_files.txt"  # in the run folder
SUBSTITUTE_RGB = (124, 116, 104)  # IMAGENET_MEAN (123.675, 116.28, 103.53) rounded to 8 bits
_SUBSTITUTE_NAME = "bad-sample-substitute-v1.png"
_SUBSTITUTE_SIDE = 64


def max_bad_default(train_size: int) -> int:
    """The default of --max-bad-samples: 0.1% of the training set, rounded up, at least 1."""
    return max(1, math.ceil(train_size / 1000))


def substitute_array(side: int) -> np.ndarray:
    """The substitute as the PIL loader's transforms return images: uint8 HWC, side x side."""
    out = np.empty((side, side, 3), np.uint8)
    out[...] = SUBSTITUTE_RGB
    return out


def substitute_image(folder: str | os.PathLike | None = None) -> str:
    """Path of the substitute PNG for DALI's file list, written once (atomically: processes
    that start together may all write it) under `folder`, by default fastres's cache folder
    ($FASTRES_DATA, else ~/.cache/fastres), or the temporary folder when that is read-only."""
    from PIL import Image

    if folder is None:
        from fastres.data.builtin import cache_folders

        folders = cache_folders()
    else:
        folders = [Path(folder)]
    errors = []
    for where in folders:
        path = Path(where) / _SUBSTITUTE_NAME
        if path.is_file():
            return str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".substitute-", suffix=".png", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                Image.fromarray(substitute_array(_SUBSTITUTE_SIDE)).save(fh, format="PNG")
            os.replace(tmp, path)
            return str(path)
        except OSError as e:
            errors.append(f"{path}: {e.strerror or e}")
    raise DatasetError(f"cannot write the bad-sample substitute image ({'; '.join(errors)})")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(text[i + 1], "\\" + text[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read_bad_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, reason) pairs of RUN/bad_files.txt in file order, each path once; [] when there
    is no such file. What a crash mid-write leaves (a last line without its newline, a line
    without its tab) is skipped: that file is found bad again and listed again."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read the bad-file list {path}: {getattr(e, 'strerror', None) or e}") from None
    out: dict[str, str] = {}
    for line in text.split("\n")[:-1]:  # after the last newline: nothing, or an unfinished line
        name, tab, reason = line.partition("\t")
        if tab and name:  # a line without its tab was cut by a crash, then closed by the next append
            out.setdefault(_unescape(name), _unescape(reason))
    return list(out.items())


def append_bad_list(path: str | os.PathLike, items: Iterable[tuple[str, str]]) -> None:
    """Append `path<TAB>reason` lines and fsync them: they outlive a crash right after. A line
    left unfinished by an earlier crash is closed first, so it cannot swallow the new one."""
    lines = "".join(f"{_escape(p)}\t{_escape(why)}\n" for p, why in items).encode("utf-8")
    if not lines:
        return
    try:
        with open(path, "a+b") as fh:
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    lines = b"\n" + lines
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise DatasetError(f"cannot write the bad-file list {path}: {e.strerror or e}") from None
