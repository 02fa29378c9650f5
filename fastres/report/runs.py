"""A run folder read back: config.yaml and metrics.jsonl as the history the report plots and tabulates.

    run = read_run("runs/resnet50-20261123-101500")
    run.train, run.val          # records in step order, as the run's final model saw them
    run.best(), run.final()     # (top-1, epoch) of the best validation; the last val record

A run that was resumed logs again the steps after its checkpoint: each `resume` record drops
the train and val records logged after the step it resumed from, so the history is the one
that led to the final model (the records stay in metrics.jsonl). A line that is not JSON (a
run killed in the middle of a write) is skipped and counted; a whole record that the next
attempt appended to it is kept.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastres import FastresError

__all__ = ["Run", "read_run", "read_runs"]


@dataclass
class Run:
    path: Path
    name: str
    doc: dict[str, Any]  # config.yaml ({} when the run folder has none)
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)
    bad_files: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0  # lines of metrics.jsonl that were not JSON objects
    first_time: float | None = None  # when training started (see _start_time), else the first record's time
    last_time: float | None = None

    @property
    def config(self) -> dict[str, Any]:
        config = self.doc.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def steps_per_epoch(self) -> float | None:
        """From the first validation (taken at an epoch's end), else from the dataset and the global batch."""
        for r in self.val:
            if _num(r.get("step")) and _num(r.get("epoch")):
                return r["step"] / r["epoch"]
        images, batch = _num(self.doc.get("train_images")), _num(self.doc.get("global_batch"))
        return images // batch if images and batch and images >= batch else None

    def epoch_of(self, record: dict[str, Any]) -> float | None:
        """A train record's position in epochs (fractional), from its step."""
        spe, step = self.steps_per_epoch, _num(record.get("step"))
        if spe and step is not None:
            return step / spe
        return _num(record.get("epoch"))

    def seconds_of(self, record: dict[str, Any]) -> float | None:
        """Seconds from the start of training to this record (interruptions included)."""
        t = _num(record.get("time"))
        return None if t is None or self.first_time is None else t - self.first_time

    def best(self) -> tuple[float, int] | None:
        scored = [(r["top1"], r["epoch"]) for r in self.val if _num(r.get("top1")) is not None]
        return max(scored, key=lambda s: (s[0], -s[1])) if scored else None

    def final(self) -> dict[str, Any] | None:
        return self.val[-1] if self.val else None

    @property
    def epochs_planned(self) -> int | None:
        return _num(self.config.get("epochs"))

    def wall_seconds(self) -> float | None:
        if self.first_time is None or self.last_time is None:
            return None
        return self.last_time - self.first_time

    def training_seconds(self) -> float | None:
        """Seconds spent in training epochs (the val records' epoch_seconds), without set-up, validation
        or time between attempts."""
        seconds = [_num(r.get("epoch_seconds")) for r in self.val]
        return sum(s for s in seconds if s is not None) if any(s is not None for s in seconds) else None

    def images_per_second(self) -> float | None:
        """The median epoch's training throughput (val records), else the median train record's."""
        for records in (self.val, self.train):
            rates = [r["img_per_s"] for r in records if _num(r.get("img_per_s"))]
            if rates:
                return statistics.median(rates)
        return None


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return value


def _recover(line: str) -> dict[str, Any] | None:
    """The whole record at the end of a damaged line: a run killed in the middle of a line leaves it
    unfinished, and the next attempt's first record is appended to it."""
    start = line.rfind('{"kind"', 1)
    if start < 0:
        return None
    try:
        rec = json.loads(line[start:])
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _drop_after(records: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    return [r for r in records if not (_num(r.get("step")) is not None and r["step"] > step)]


def _start_time(first_train: dict[str, Any] | None, global_batch: Any) -> float | None:
    """When the first training step started: the first train record's time less the time its steps
    took (step x global batch / img_per_s: the trainer measures img_per_s from the epoch's start).
    Set-up (data check, loader start) comes before and is not counted."""
    if first_train is None:
        return None
    t, step, ips = (_num(first_train.get(k)) for k in ("time", "step", "img_per_s"))
    batch = _num(global_batch)
    if t is None or not step or not ips or not batch:
        return None
    return t - step * batch / ips


def read_run(path: str | Path, name: str | None = None) -> Run:
    """Read RUN/config.yaml and RUN/metrics.jsonl. Raises FastresError naming what is missing."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FastresError(f"{path} does not exist")
    if not path.is_dir():
        raise FastresError(f"{path} is not a run folder (expected a folder with metrics.jsonl)")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise FastresError(f"{path} has no metrics.jsonl: not a fastres run folder, or the run logged nothing yet")
    doc: dict[str, Any] = {}
    config_file = path / "config.yaml"
    if config_file.is_file():
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
            raise FastresError(f"{config_file}: cannot read ({str(e).splitlines()[0]})") from None
        doc = loaded if isinstance(loaded, dict) else {}
    run = Run(path=path, name=name or path.name, doc=doc)
    try:
        lines = metrics.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise FastresError(f"{metrics}: cannot read ({e.strerror or e})") from None
    first_train = None
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            run.malformed += 1
            rec = _recover(line)
            if rec is None:
                continue
        if not isinstance(rec, dict):
            run.malformed += 1
            continue
        t = _num(rec.get("time"))
        if t is not None:
            run.first_time = t if run.first_time is None else min(run.first_time, t)
            run.last_time = t if run.last_time is None else max(run.last_time, t)
        kind = rec.get("kind")
        if kind == "train":
            if first_train is None and not run.resumes:
                first_train = rec
            run.train.append(rec)
        elif kind == "val":
            run.val.append(rec)
        elif kind == "summary":
            run.summary = rec
        elif kind == "resume":
            run.resumes.append(rec)
            # the step the checkpoint was taken at: what came after it in the log was not kept (the run may
            # continue at a later step: DALI on another process count skips to the next epoch boundary)
            step = _num(rec.get("checkpoint_step", rec.get("step"))) or 0
            run.train, run.val = _drop_after(run.train, step), _drop_after(run.val, step)
            run.summary = None  # a summary before a resume closed an earlier attempt
        elif kind == "bad_file":
            run.bad_files.append(rec)
    if run.first_time is None and not (run.train or run.val or run.summary):
        raise FastresError(f"{metrics} holds no records")
    start = _start_time(first_train, doc.get("global_batch"))
    if start is not None and run.first_time is not None and 0 <= run.first_time - start <= 7 * 86400:
        run.first_time = start
    return run


def read_runs(paths: list[str | Path]) -> list[Run]:
    """Every run, named by its folder; folders of the same name get their parent's name in front."""
    resolved = [Path(p).expanduser() for p in paths]
    names = [p.resolve().name for p in resolved]
    taken: set[str] = set()
    runs = []
    for p, name in zip(resolved, names):
        if names.count(name) > 1:
            name = f"{p.resolve().parent.name}/{name}"
        base, k = name, 1
        while name in taken:  # the same folder given twice
            k += 1
            name = f"{base} ({k})"
        taken.add(name)
        runs.append(read_run(p, name))
    return runs
