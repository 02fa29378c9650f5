"""What the tests that run `python -m fastres.train` share: a tiny ResNet-18 configuration and
readers of what a run leaves behind.

    TINY                       flags of a run that takes seconds on the built-in dataset's small copy
    records(run, kind=None)    metrics.jsonl as dicts (only those of `kind` when given)
    one_line_error(stderr)     the single error line of a run that failed as fastres promises
"""

from __future__ import annotations

import json
from pathlib import Path

# fp32 on every CPU: the tests compare runs at fp32's tolerances, and `--precision auto` is bf16 on a CPU
# with native bf16 (tests/test_precision.py checks auto)
TINY = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--warmup-epochs", "0",
        "--no-progress", "--precision", "fp32"]  # fmt: skip


def records(run_dir: Path, kind: str | None = None) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in out if kind is None or r["kind"] == kind]


def one_line_error(stderr: str) -> str:
    """The one line a failed run printed; fails the test on a traceback or several lines."""
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]
