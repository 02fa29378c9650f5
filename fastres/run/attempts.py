"""What a resumed attempt of a run lost to the end of the attempt before it: steps, seconds, the world size.

    lost = attempt_loss(run_dir, checkpoint_step, checkpoint_time, world, attempt)   # rank 0, before it writes there
    say(lost.line())                                                                 # one line
    write("resume", ..., **lost.record())                                           # the metrics log's resume record

The attempt before is read from the run folder: its world size from config.yaml (which every attempt writes as
it starts), the last step it reached and when from the end of metrics.jsonl: a `peer_lost` or `stop` record
says it exactly, else its last `train` record (written every --log-every steps: a rank 0 that died with its
host may have gone a few steps further). The restart's number is the launcher's: torchrun's elastic agent
gives TORCHELASTIC_RESTART_COUNT (of at most TORCHELASTIC_MAX_RESTARTS), Slurm SLURM_RESTART_COUNT.

    steps lost    the last step reached - the checkpoint's step: the steps this attempt does again
    seconds lost  now - when the checkpoint's step was done: the training done again, and the time it took to
                  notice the failure, restart and get back to training
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["AttemptLoss", "attempt_loss", "earlier_attempt", "restart_label"]

TAIL_BYTES = 1 << 18  # the end of metrics.jsonl that holds the attempt before's last records


@dataclass(frozen=True)
class AttemptLoss:
    world_before: int | None  # None: the attempt before left no config.yaml
    world: int
    reached_step: int
    reached_time: float
    checkpoint_step: int
    checkpoint_time: float
    now: float
    label: str  # "restart 1 of at most 3 (torchrun's elastic agent)", ...
    restart: int | None  # the launcher's restart count, None without one

    @property
    def steps_lost(self) -> int:
        return max(0, self.reached_step - self.checkpoint_step)

    @property
    def seconds_lost(self) -> float:
        return max(0.0, self.now - self.checkpoint_time)

    @property
    def redone_seconds(self) -> float:
        """Of the seconds lost: training done after the checkpoint, up to the last step reached."""
        if self.steps_lost == 0:
            return 0.0
        return min(self.seconds_lost, max(0.0, self.reached_time - self.checkpoint_time))

    def line(self, checkpoint: bool = True) -> str:
        """checkpoint False: the attempt before left none, and this one starts the run again."""
        before = "?" if self.world_before is None else self.world_before
        resumes = f"resumes from step {self.checkpoint_step}"
        if not checkpoint:
            resumes = "starts again from step 0: no checkpoint yet"
        return (
            f"fastres: {self.label}: world size {before} -> {self.world}; {self.steps_lost} steps lost (the attempt "
            f"before reached step {self.reached_step}, this one {resumes}); "
            f"{self.seconds_lost:.1f} s lost ({self.redone_seconds:.1f} s of training done again, "
            f"{self.seconds_lost - self.redone_seconds:.1f} s from the last step before to this resume)"
        )

    def record(self) -> dict[str, Any]:
        return dict(restart=self.restart, previous_world_size=self.world_before, reached_step=self.reached_step,
                    steps_lost=self.steps_lost, seconds_lost=round(self.seconds_lost, 3),
                    redone_seconds=round(self.redone_seconds, 3))  # fmt: skip


def restart_label(attempt: int, env: Mapping[str, str] | None = None) -> tuple[str, int | None]:
    """("attempt 3, torchrun's elastic agent's restart 1 of at most 3", 1): the attempt of the run and the
    launcher's restart count (torchrun counts the restarts after a failure, not those for a host that joined;
    Slurm its requeues), or ("attempt 2", None) without one."""
    env = os.environ if env is None else env
    count = env.get("TORCHELASTIC_RESTART_COUNT", "").strip()
    if count.isdigit() and int(count) > 0:
        most = env.get("TORCHELASTIC_MAX_RESTARTS", "").strip()
        of = f" of at most {most}" if most.isdigit() else ""
        return f"attempt {attempt}, torchrun's elastic agent's restart {count}{of}", int(count)
    count = env.get("SLURM_RESTART_COUNT", "").strip()
    if count.isdigit() and int(count) > 0:
        return f"attempt {attempt}, Slurm's requeue {count}", int(count)
    return f"attempt {attempt}", None


def _last_records(metrics: Path) -> list[dict]:
    try:
        with open(metrics, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = tail.splitlines()[1:] if size > TAIL_BYTES else tail.splitlines()  # the first may be cut
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line a crash cut short
        if isinstance(record, dict):
            out.append(record)
    return out


def _config_yaml(run_dir: Path) -> dict:
    try:
        doc = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _world_before(run_dir: Path) -> int | None:
    ranks = _config_yaml(run_dir).get("ranks")
    return ranks if isinstance(ranks, int) else None


def earlier_attempt(run_dir: Path) -> tuple[int, float] | None:
    """(its attempt number, when it started) of the attempt that left `run_dir` with no checkpoint, None when no
    attempt ran there (no metrics.jsonl record)."""
    records = _last_records(Path(run_dir) / "metrics.jsonl")
    if not records:
        return None
    attempt = max([1, *(r.get("attempt", 1) for r in records if r.get("kind") == "resume")])
    started = _config_yaml(Path(run_dir)).get("started")
    try:
        when = datetime.datetime.fromisoformat(started).timestamp()
    except (TypeError, ValueError):
        when = min(float(r.get("time", time.time())) for r in records)
    return attempt, when


def attempt_loss(
    run_dir: Path, checkpoint_step: int, checkpoint_time: float, world: int, attempt: int,
    env: Mapping[str, str] | None = None,
) -> AttemptLoss:  # fmt: skip
    """What this attempt lost to the one before (read from `run_dir` before this attempt writes to it)."""
    reached_step, reached_time = checkpoint_step, checkpoint_time
    for record in _last_records(Path(run_dir) / "metrics.jsonl"):
        if isinstance(record.get("step"), int) and isinstance(record.get("time"), (int, float)):
            reached_step, reached_time = record["step"], float(record["time"])
    label, restart = restart_label(attempt, env)
    return AttemptLoss(_world_before(Path(run_dir)), world, reached_step, reached_time, checkpoint_step,
                       checkpoint_time, time.time(), label, restart)  # fmt: skip
