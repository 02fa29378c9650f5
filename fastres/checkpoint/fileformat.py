"""The checkpoint file: a checksummed torch payload, written atomically, read as data only.

    FASTRES-CHECKPOINT 1\\n
    sha256 <64 hex digits> <payload bytes>\\n
    <payload: torch.save of a dict of tensors and plain Python values>

`write_checkpoint_file` serialises, then writes a temporary file in the target folder,
fsyncs it, renames it over the target and fsyncs the folder: after a crash the path holds
the previous complete file or the new one, never half of one. The file's mode follows the
umask like any other file the run writes (a temporary file is created 0600).

`read_checkpoint_file` checks the header and the payload's length and SHA-256 before it
unpickles anything, then loads with `torch.load(weights_only=True)`: a file that is not a
fastres checkpoint, or one with a flipped byte, is refused with a one-line
`CheckpointError`, and nothing in a checkpoint can run code while it is read.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from fastres import FastresError

__all__ = ["MAGIC", "CheckpointError", "dumps", "read_checkpoint_file", "write_bytes_atomic", "write_checkpoint_file"]

MAGIC = b"FASTRES-CHECKPOINT 1\n"
_HEADER_MAX = 200  # bytes: the magic line and the checksum line


class CheckpointError(FastresError):
    """A checkpoint file that cannot be used: missing, unreadable, not fastres's, or corrupt."""

    shared = True  # every rank meets it: rank 0 says it


def dumps(state: dict[str, Any]) -> bytes:
    """The file's bytes for `state`: header, checksum, payload."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    return MAGIC + f"sha256 {digest} {len(payload)}\n".encode() + payload


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(blob: bytes, path: Path) -> None:
    """Write `blob` to `path` atomically and durably (temp file, fsync, rename, fsync of the folder).

    Raises OSError (ENOSPC, EIO, EACCES, ...) with nothing left behind but the old file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself reaches the disk
    finally:
        os.close(dir_fd)


def write_checkpoint_file(state: dict[str, Any], path: Path) -> None:
    write_bytes_atomic(dumps(state), path)


def read_checkpoint_file(path: Path) -> dict[str, Any]:
    """The state saved at `path`, after checking header, length and checksum. Raises CheckpointError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
            if head != MAGIC:
                raise CheckpointError(f"{path}: not a fastres checkpoint (no fastres checkpoint header)")
            line = f.readline(_HEADER_MAX)
            payload = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        kind, digest, length = line.decode("ascii").split()
        length = int(length)
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{path}: corrupt checkpoint (damaged checksum line)") from None
    if kind != "sha256" or len(payload) != length:
        raise CheckpointError(f"{path}: corrupt checkpoint ({len(payload)} payload bytes, the header says {length})")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path}: corrupt checkpoint (SHA-256 of the payload does not match its header)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refuses anything but data
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: not loadable as data ({first[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a fastres checkpoint (payload is a {type(state).__name__})")
    return state
