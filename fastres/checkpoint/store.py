"""The checkpoints of one run folder: names, the newest K kept, the newest that verifies, leftovers.

    RUN/checkpoints/step-000001234.pt      one file per saved step (fastres.checkpoint.fileformat)
    RUN/checkpoints/.step-....pt.*.tmp     a save that was killed: removed at the next start

`CheckpointStore.save` writes synchronously (the final or preemption checkpoint);
`BackgroundSaver` takes a snapshot already copied to host memory and writes it in a thread,
so training pauses only for the copy. A failed write (full disk, I/O error, permissions) is
reported as one line with the path and the system's reason; the older checkpoints stay valid.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastres.checkpoint.fileformat import CheckpointError, dumps, read_checkpoint_file, write_bytes_atomic

__all__ = ["CHECKPOINT_DIR", "BackgroundSaver", "CheckpointStore", "SaveResult", "describe_os_error"]

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{9,})\.pt$")


def describe_os_error(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


@dataclass(frozen=True)
class SaveResult:
    step: int
    path: Path
    error: str | None = None  # one line: what failed and why; None when saved
    seconds: float = 0.0


class CheckpointStore:
    """The checkpoint files of `run_dir`, newest `keep` kept."""

    def __init__(self, run_dir: Path, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep: must be >= 1, got {keep}")
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.keep = keep

    def path_of(self, step: int) -> Path:
        return self.dir / f"step-{step:09d}.pt"

    def steps(self) -> list[int]:
        """Saved steps, newest first."""
        if not self.dir.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.dir.iterdir())
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def paths(self) -> list[Path]:
        return [self.path_of(s) for s in self.steps()]

    def remove_leftovers(self) -> list[Path]:
        """Delete the temporary files of saves that were killed (they may be large)."""
        if not self.dir.is_dir():
            return []
        gone = [p for p in self.dir.glob(".step-*.tmp") if p.is_file()]
        for p in gone:
            p.unlink(missing_ok=True)
        return gone

    def newest_valid(self, say: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies, with its state; each one that does not is named in one line."""
        for path in self.paths():
            try:
                return path, read_checkpoint_file(path)
            except CheckpointError as e:
                say(f"fastres: skipping checkpoint {path.name}: {e}; trying the next older one")
        return None

    def write(self, blob: bytes, step: int) -> Path:
        """Write one serialised checkpoint, then drop all but the newest `keep`. Raises OSError."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path_of(step)
        write_bytes_atomic(blob, path)
        self.prune()
        return path

    def save(self, state: dict[str, Any], step: int) -> Path:
        return self.write(dumps(state), step)

    def prune(self) -> None:
        for old in self.steps()[self.keep :]:
            self.path_of(old).unlink(missing_ok=True)


class BackgroundSaver:
    """Writes snapshots in a thread, one at a time; results are collected with `poll()` / `wait()`."""

    def __init__(self, store: CheckpointStore):
        self.store = store
        self._thread: threading.Thread | None = None
        self._results: list[SaveResult] = []
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, snapshot: dict[str, Any], step: int, also: Path | None = None) -> None:
        """Write `snapshot` (host memory only, not shared with training) as step `step`, and to `also`."""
        self.wait_idle()
        args = (snapshot, step, also)
        self._thread = threading.Thread(target=self._run, args=args, name="fastres-ckpt", daemon=True)
        self._thread.start()

    def _run(self, snapshot: dict[str, Any], step: int, also: Path | None) -> None:
        t0 = time.perf_counter()
        path = self.store.path_of(step)
        try:
            blob = dumps(snapshot)
            path = self.store.write(blob, step)
            if also is not None:
                path = also
                write_bytes_atomic(blob, also)
            result = SaveResult(step, self.store.path_of(step), None, time.perf_counter() - t0)
        except OSError as e:
            result = SaveResult(step, path, f"cannot write checkpoint {path}: {describe_os_error(e)}")
        except Exception as e:  # noqa: BLE001 - reported to the training thread, which decides
            result = SaveResult(step, path, f"cannot write checkpoint {path}: {type(e).__name__}: {e}")
        with self._lock:
            self._results.append(result)

    def wait_idle(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def poll(self) -> list[SaveResult]:
        """Results of the saves that finished since the last call."""
        with self._lock:
            out, self._results = self._results, []
        return out

    def wait(self) -> list[SaveResult]:
        self.wait_idle()
        return self.poll()
