"""Real JPEG files for the data tests: good ones, and bad ones that pass the header check.

A bad JPEG here keeps its SOI marker, its headers and its EOI marker, so `python -m
fastres.data check` without `--decode` (open + size + end marker) calls it good:

- `corrupt_scan`: markers written into the middle of the entropy-coded data. libjpeg stops
  there with a fatal error ("two SOI markers"), so PIL cannot decode it; DALI 2.4's CPU
  decoder falls back and fills the rest (it decodes, with a warning).
- `corrupt_huffman`: the counts of the first Huffman table overwritten. No decoder can
  decode the scan ("Bogus Huffman table definition"): PIL and DALI both fail on it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(w: int, h: int, seed: int, quality: int = 90) -> bytes:
    """A smooth random image (JPEG keeps it close): low-frequency noise, upsampled."""
    small = np.random.default_rng(seed).integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.BILINEAR).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _scan(data: bytes) -> tuple[int, int]:
    """[start, end) of the entropy-coded data of a baseline JPEG with one scan."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    assert data[-2:] == b"\xff\xd9", "no end-of-image marker"
    return start, len(data) - 2


def corrupt_scan(data: bytes) -> bytes:
    """Sixteen SOI markers over the middle of the entropy-coded data; everything else intact."""
    start, end = _scan(data)
    middle = (start + end) // 2
    assert end - start > 64, "scan too short to corrupt in the middle"
    out = bytearray(data)
    out[middle : middle + 32] = b"\xff\xd8" * 16
    return bytes(out)


def corrupt_huffman(data: bytes) -> bytes:
    """The 16 code counts of the first Huffman table set to 255: no decoder builds the table."""
    dht = data.index(b"\xff\xc4")
    out = bytearray(data)
    out[dht + 5 : dht + 21] = b"\xff" * 16
    return bytes(out)


def write_tree(
    root: Path, classes=("b_dog", "a_cat", "c_eel"), per_class=(8, 3), seed: int = 0
) -> dict[str, list[Path]]:
    """ROOT/{train,val}/<class>/<class>_<i>.JPEG of varied sizes; returns the files per split."""
    files: dict[str, list[Path]] = {}
    for split, n in zip(("train", "val"), per_class):
        files[split] = []
        for ci, name in enumerate(classes):
            for i in range(n):
                path = root / split / name / f"{name}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg_bytes(48 + 5 * i, 40 + 6 * ci, seed * 1000 + 100 * ci + i + 17 * len(split)))
                files[split].append(path)
    return files
