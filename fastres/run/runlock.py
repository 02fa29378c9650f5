"""One job per run folder: an exclusive lock on RUN/.lock, held by rank 0 while the run lives.

The lock is `flock(2)` on an open file: the kernel releases it when the holding process ends,
however it ends (SIGKILL included), so a lock left by a dead job is free and is taken over.
The file holds the holder's pid, host and start time while it runs, and is emptied when the
job ends in order: a name found in it by the next holder is a job that died, and is reported. A second
job on a live run folder gets a one-line error naming the holder.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import socket
from pathlib import Path

from fastres import FastresError

__all__ = ["RunLock", "RunLockedError"]

LOCK_NAME = ".lock"


class RunLockedError(FastresError):
    """Another live job holds the run folder."""


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.previous_holder: str | None = None  # a dead job's lock that was taken over
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise FastresError(f"cannot open the run folder's lock {self.path} ({e.strerror or e})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read() or "another process"
            os.close(self._fd)
            raise RunLockedError(
                f"run folder {run_dir} is in use by {holder}; wait for that job to end or stop it "
                "(a lock left by a dead job is released by the system and taken over)"
            ) from None
        self.previous_holder = self._read() or None
        me = f"pid {os.getpid()} on {socket.gethostname()} since {_dt.datetime.now().isoformat(timespec='seconds')}"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, me.encode(), 0)

    def _read(self) -> str:
        try:
            return os.pread(self._fd, 512, 0).decode(errors="replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # released in order: the next holder has no one to report
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
