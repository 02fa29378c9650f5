"""TensorBoard scalars of a run (`--tensorboard`): the metrics.jsonl records, written as TensorBoard events.

    tb = TensorBoardWriter(run_dir)          # events under RUN/tensorboard; FastresError without tensorboard
    tb.write("train", epoch=1, step=20, loss=6.9, lr=0.1, momentum=0.9, img_per_s=2890.0, time=...)
    tb.write("val", epoch=1, step=5005, top1=7.1, top5=19.8, images=50000, epoch_seconds=443.0, img_per_s=2891.0)
    tb.close()

    tensorboard --logdir runs                # every run folder under runs/, side by side

`write` takes exactly what fastres.run.runlog.MetricsLog writes (the record's kind and fields) and
maps each number to a tag; the x axis is the record's optimizer `step`, TensorBoard's wall
time the record's `time` when it has one:

  train    train/loss, train/lr, train/momentum, train/img_per_s, train/loss_scale,
           train/skipped_steps; any other number as train/<field>
  val      val/top1, val/top5; the epoch's training throughput and duration as
           epoch/img_per_s and epoch/seconds
  summary  summary/top1, summary/top5, summary/best_top1, summary/img_per_s, summary/train_seconds,
           summary/total_seconds, at the last step seen
  resume   a text entry (attempt, checkpoint, step, world size, what changed) at its step
  bad_file a text entry (path, reason)

Other kinds are ignored, so a newer log never breaks an older reader. TensorBoard itself is
an optional dependency (pip install fastres[tensorboard]); the writer is torch's own
(torch.utils.tensorboard).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from fastres import FastresError

__all__ = ["TENSORBOARD_DIR", "TensorBoardWriter", "tag_of"]

TENSORBOARD_DIR = "tensorboard"

# field -> tag, per record kind; a field mapped to None is not a scalar worth plotting
_TAGS: dict[str, dict[str, str | None]] = {
    "train": {"epoch": None, "step": None, "time": None},
    "val": {
        "epoch": None,
        "step": None,
        "time": None,
        "images": None,
        "top1": "val/top1",
        "top5": "val/top5",
        "img_per_s": "epoch/img_per_s",  # the epoch's training throughput, logged with its validation
        "epoch_seconds": "epoch/seconds",
    },
    "summary": {"epochs": None, "time": None, "best_epoch": None},
}
_TEXT_KINDS = ("resume", "bad_file")


def tag_of(kind: str, field: str) -> str | None:
    """The TensorBoard tag of a numeric field of a record of `kind`, or None when it is not written."""
    if kind not in ("train", "val", "summary"):
        return None
    table = _TAGS[kind]
    return table[field] if field in table else f"{kind}/{field}"


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FastresError("--tensorboard needs the tensorboard package: pip install fastres[tensorboard]") from None
    return SummaryWriter


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # null losses (a skipped step), strings, lists
    value = float(value)
    return value if math.isfinite(value) else None


class TensorBoardWriter:
    """Writes a run's records as TensorBoard events under RUN/tensorboard (rank 0 only, like the log)."""

    def __init__(self, run_dir: str | Path):
        writer_class = _summary_writer_class()
        self.dir = Path(run_dir) / TENSORBOARD_DIR
        self._writer = writer_class(log_dir=str(self.dir))
        self._step = 0

    def write(self, kind: str, **fields: Any) -> None:
        """One metrics.jsonl record: its kind and fields (fastres.run.runlog.MetricsLog.write's arguments)."""
        if self._writer is None:
            raise ValueError("TensorBoardWriter.write after close()")
        walltime = _number(fields.get("time")) or time.time()
        step = fields.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            self._step = step
        if kind in _TEXT_KINDS:
            text = ", ".join(f"{k}: {v}" for k, v in fields.items() if k != "time")
            self._writer.add_text(kind, text, global_step=self._step, walltime=walltime)
        else:
            for field, value in fields.items():
                tag, number = tag_of(kind, field), _number(value)
                if tag is not None and number is not None:
                    self._writer.add_scalar(tag, number, global_step=self._step, walltime=walltime)
        if kind != "train":  # epoch-level records reach the disk at once; train records within ~2 min
            self._writer.flush()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (safe to call twice)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
