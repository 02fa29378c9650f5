"""Webdataset tar shards of an ImageNet-layout tree, for DALI's `fn.readers.webdataset`.

    python -m fastres.data shard ROOT OUT [--shard-size 1000] [--decode] [--skip-bad-files]

writes, for each split,

    OUT/<split>/<split>-000000.tar ...   members <key>.jpg (the file's bytes, unchanged),
                                         <key>.cls (label, ASCII: the webdataset convention),
                                         <key>.lbl (label, int64 little-endian: what DALI reads)
    OUT/<split>/<split>-000000.idx ...   DALI's index of each tar (made with DALI's wds2idx)
    OUT/<split>/manifest.json            classes, shard names and sample counts

Few large files instead of 1.28 M small ones: sequential reads on network file systems.
Training shards hold the samples in a seeded random order (DALI shuffles within a buffer
only, so classes must already be mixed on disk); validation shards keep the folder order.
Labels are those of `scan_split` (classes sorted by name), as on every other path.

A shard cannot take a substitute for a sample DALI fails to decode, so the command checks
every file before writing (the header check; `--decode` decodes every pixel) and refuses,
naming the bad files, or leaves them out with `--skip-bad-files` (`exclude` here). A write
into a folder that holds shards of an earlier write removes the old manifest first (a
half-written folder is never taken for shards) and the old shards it no longer names last.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from fastres.data.folder import DatasetError, FolderSplit, os_problem, scan_imagenet

__all__ = ["check_arguments", "write_shards", "read_manifest", "Shards"]

MANIFEST = "manifest.json"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible bytes
    tar.addfile(info, io.BytesIO(data))


def _index(tar_path: Path, idx_path: Path) -> None:
    try:
        from wds2idx import IndexCreator  # shipped with nvidia-dali
    except ImportError as e:
        raise DatasetError(f"cannot index {tar_path}: DALI's wds2idx is not installed ({e})") from None
    creator = IndexCreator(str(tar_path), str(idx_path))
    creator.create_index()
    creator.close()


def write_split_shards(
    split: FolderSplit,
    out: Path,
    name: str,
    shard_size: int,
    shuffle: bool,
    seed: int = 0,
    exclude: frozenset[str] = frozenset(),
) -> list[Path]:
    samples = [s for s in split.samples if s[0] not in exclude]
    order = np.random.default_rng(seed).permutation(len(samples)) if shuffle else np.arange(len(samples))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_problem(out, e, "OUT") from None
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one is written, this folder holds no shards
    shards, counts = [], []
    for first in range(0, len(samples), shard_size):
        tar_path = out / f"{name}-{len(shards):06d}.tar"
        chunk = order[first : first + shard_size]
        with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in chunk:
                path, label = samples[int(i)]
                key = f"{int(i):08d}"
                _add(tar, f"{key}.jpg", Path(path).read_bytes())
                _add(tar, f"{key}.cls", str(label).encode())
                _add(tar, f"{key}.lbl", np.int64(label).tobytes())
        _index(tar_path, tar_path.with_suffix(".idx"))
        shards.append(tar_path)
        counts.append(len(chunk))
    manifest = {
        "classes": list(split.classes),
        "shards": [p.name for p in shards],
        "counts": counts,
        "samples": len(samples),
        "shuffled": shuffle,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    # shards of an earlier, larger write: named like ours, not in the new manifest
    ours = re.compile(rf"{re.escape(name)}-\d{{6}}\.(tar|idx)")
    keep = {p.name for p in shards} | {p.with_suffix(".idx").name for p in shards}
    for stale in out.iterdir():
        if ours.fullmatch(stale.name) and stale.name not in keep:
            stale.unlink()
    return shards


def check_arguments(root: str | os.PathLike, out: str | os.PathLike, shard_size: int) -> Path:
    """OUT as a Path, or a one-line DatasetError naming the argument that cannot work."""
    if shard_size < 1:
        raise DatasetError(f"--shard-size must be a positive integer, got {shard_size}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"OUT {out} is not a directory")
    if out.resolve() == Path(root).expanduser().resolve():
        raise DatasetError(f"OUT {out} is ROOT: write the shards to another folder")
    return out


def write_shards(
    root: str | os.PathLike,
    out: str | os.PathLike,
    shard_size: int = 1000,
    seed: int = 0,
    exclude: frozenset[str] = frozenset(),
    splits: tuple[FolderSplit, FolderSplit] | None = None,
) -> dict[str, list[Path]]:
    """Shards of ROOT/train and ROOT/val under OUT, leaving out the files in `exclude` (this
    function checks nothing: `python -m fastres.data shard` checks the files first). `splits`:
    (train, val) as `scan_imagenet(root)` lists them, when the caller has them already."""
    out = check_arguments(root, out, shard_size)
    train, val = scan_imagenet(root, "ROOT") if splits is None else splits
    return {
        "train": write_split_shards(train, out / "train", "train", shard_size, True, seed, exclude),
        "val": write_split_shards(val, out / "val", "val", shard_size, False, seed, exclude),
    }


class Shards:
    """One split's shards as the DALI webdataset reader wants them."""

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        try:
            m = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(
                f"{folder}: no readable {MANIFEST} ({e}); write shards with python -m fastres.data shard"
            ) from None
        self.folder = folder
        self.classes = tuple(m["classes"])
        self.paths = [str(folder / n) for n in m["shards"]]
        self.index_paths = [str(folder / n).removesuffix(".tar") + ".idx" for n in m["shards"]]
        self.size = int(m["samples"])

    def __len__(self) -> int:
        return self.size

    def padded(self, extra: int) -> Shards:
        """These shards and one more holding copies of the first `extra` samples of the first shard:
        `extra` more samples in all (DALI's loader makes the count a multiple of the processes, see
        fastres.data.dali). The extra shard is written once to the first of fastres's cache folders
        that takes it (fastres.data.builtin.cache_folders), atomically: every rank of a job may
        write it, under a name that is the same in every process."""
        if extra <= 0:
            return self
        first = Path(self.paths[0])
        stat = first.stat()
        ident = f"{first.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{extra}".encode()
        name = f"pad-{hashlib.sha1(ident).hexdigest()[:16]}.tar"
        from fastres.data.builtin import cache_folders

        errors = []
        for where in cache_folders():
            tar_path = where / "shard-padding" / name
            if tar_path.is_file() and tar_path.with_suffix(".idx").is_file():
                break
            try:
                tar_path.parent.mkdir(parents=True, exist_ok=True)
                _write_padding(tar_path, _first_samples(first, extra))
                break
            except OSError as e:
                errors.append(f"{tar_path}: {e.strerror or e}")
        else:
            raise DatasetError(f"cannot write the shards' padding ({'; '.join(errors)})")
        padded = copy.copy(self)
        padded.size = self.size + extra
        padded.paths = [*self.paths, str(tar_path)]
        padded.index_paths = [*self.index_paths, str(tar_path.with_suffix(".idx"))]
        return padded


def _first_samples(tar_path: Path, count: int) -> list[tuple[str, bytes]]:
    """(member name, bytes) of the first `count` samples of a shard, reading it only that far."""
    try:
        with tarfile.open(tar_path) as tar:
            members: dict[str, list[tarfile.TarInfo]] = {}
            for m in tar:
                key = m.name.rsplit(".", 1)[0]
                if key not in members and len(members) == count:
                    break
                members.setdefault(key, []).append(m)
            if len(members) < count:
                raise DatasetError(f"{tar_path}: fewer than {count} samples to pad the shards with")
            return [(m.name, tar.extractfile(m).read()) for ms in members.values() for m in ms]
    except (OSError, tarfile.TarError) as e:
        raise DatasetError(f"{tar_path}: cannot read it to pad the shards ({e})") from None


def _write_padding(tar_path: Path, payload: list[tuple[str, bytes]]) -> None:
    """The padding shard and its index, each put in place by a rename (OSError where the folder refuses)."""
    fd, tmp = tempfile.mkstemp(prefix=".pad-", suffix=".tar", dir=tar_path.parent)
    os.close(fd)
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as out:
        for member, data in payload:
            _add(out, f"pad{member}", data)
    idx_tmp = Path(tmp).with_suffix(".idx")
    _index(Path(tmp), idx_tmp)
    os.replace(idx_tmp, tar_path.with_suffix(".idx"))
    os.replace(tmp, tar_path)


def read_manifest(folder: str | os.PathLike) -> Shards:
    return Shards(folder)
