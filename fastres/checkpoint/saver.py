"""When a run checkpoints, and what happens when a write fails.

    saver = Checkpointer(run_dir, keep=3, every_steps=500, every_minutes=30, writer=rank == 0)
    if saver.step_due(step) or verdict.save: saver.save(snapshot_fn, step)     # in the background
    saver.save(snapshot_fn, step, wait=True)                                    # preemption, the end

Checkpoints are taken at every epoch's end, every `every_steps` steps and every
`every_minutes` minutes (rank 0's clock decides; all ranks learn it through
fastres.run.preemption, so the loader states they gather agree). Rank 0 copies the state to
host memory (the training pause), and a thread serialises and writes it
(fastres.checkpoint.store) while training goes on. A failed write is one line with the path
and the system's reason; the older checkpoints stay valid, the next interval tries again,
and after `max_failures` failures in a row `failing` turns true and the trainer stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastres.checkpoint.store import BackgroundSaver, CheckpointStore, SaveResult

__all__ = ["BEST_NAME", "Checkpointer"]

BEST_NAME = "best.pt"  # RUN/best.pt: the checkpoint with the best validation top-1 so far


class Checkpointer:
    def __init__(
        self,
        run_dir: Path,
        *,
        keep: int,
        every_steps: int | None,
        every_minutes: float | None,
        writer: bool,
        say: Callable[[str], None] = print,
        max_failures: int = 3,
    ):
        self.store = CheckpointStore(run_dir, keep)
        self.best_path = Path(run_dir) / BEST_NAME
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self.writer, self.say, self.max_failures = writer, say, max_failures
        self.failures_in_a_row = 0
        self.pause_seconds: list[float] = []  # training pause per checkpoint (the host copy)
        self._saver = BackgroundSaver(self.store)
        self._last_time = time.monotonic()
        if writer:
            for p in self.store.remove_leftovers():
                say(f"fastres: removed {p}, left by a save that was killed")

    def step_due(self, step: int) -> bool:
        return bool(self.every_steps) and step % self.every_steps == 0

    def timer_due(self) -> bool:
        """Rank 0's clock: a timed checkpoint is due (all ranks hear of it one step later)."""
        return bool(self.every_minutes) and time.monotonic() - self._last_time >= 60 * self.every_minutes

    def save(
        self, snapshot: Callable[[], dict[str, Any]], step: int, *, best: bool = False, wait: bool = False
    ) -> None:
        """Checkpoint step `step` (rank 0; the others return). snapshot() copies the state to host memory."""
        self._last_time = time.monotonic()
        if not self.writer:
            return
        self._collect(self._saver.wait())  # one write at a time: the previous one's outcome first
        if self.failing:
            return  # the run is stopping (every rank hears it at the next step): no more attempts
        t0 = time.perf_counter()
        state = snapshot()
        self.pause_seconds.append(time.perf_counter() - t0)
        self._saver.submit(state, step, also=self.best_path if best else None)
        if wait:
            self._collect(self._saver.wait())

    def finish(self) -> None:
        """Wait for the write in flight and report it."""
        self._collect(self._saver.wait())

    @property
    def failing(self) -> bool:
        return self.failures_in_a_row >= self.max_failures

    def newest(self) -> Path | None:
        paths = self.store.paths()
        return paths[0] if paths else None

    def _collect(self, results: list[SaveResult]) -> None:
        for r in results:
            if r.error is None:
                self.failures_in_a_row = 0
                continue
            self.failures_in_a_row += 1
            older = self.newest()
            kept = f"the newest checkpoint is still {older}" if older else "no older checkpoint exists"
            then = "the run stops" if self.failing else "retrying at the next interval"
            self.say(f"fastres: {r.error}; {kept}; failure {self.failures_in_a_row} of {self.max_failures} in a row "
                     f"before the run stops, {then}")  # fmt: skip
