"""Run folders: what a run leaves behind so it can be read, compared and resumed.

<out>/<name>/config.yaml       resolved config, what ran (backend, launcher, ranks), versions, git revision, host;
                               written atomically, again by every attempt
<out>/<name>/metrics.jsonl     one JSON object per line: train records every log_every steps, a val
                               record per epoch, resume / bad_file / target records, a summary at the end
<out>/<name>/checkpoints/      the newest checkpoints, <out>/<name>/best.pt the best val top-1
                               (fastres.checkpoint); bad_files.txt (fastres.run.badsamples); .lock (fastres.run.runlock)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

import fastres
from fastres import FastresError
from fastres.checkpoint.fileformat import write_bytes_atomic

__all__ = [
    "CONFIG_DIGEST",
    "check_name",
    "config_digest",
    "git_revision",
    "hand_edited_config",
    "make_run_dir",
    "write_config",
    "MetricsLog",
    "Summary",
]


def git_revision(path: Path | None = None) -> str | None:
    """The git commit of the source fastres runs from (with '-dirty' for local changes), if any."""
    where = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def check_name(name: str) -> str:
    """A run folder name must stay inside --out: one plain path component."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise FastresError(f"--name {name!r} must be a plain folder name inside --out (no '/', not '.' or '..')")
    return name


def make_run_dir(out: str, name: str | None, arch: str, exact: bool = False) -> Path:
    """The run folder under `out`: a new one (an existing name gets a numeric suffix, never
    overwritten), or with `exact` OUT/NAME itself, created when missing (`--resume auto`)."""
    base = check_name(name) if name else f"{arch}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    parent = Path(out).expanduser()
    try:
        if parent.exists() and not parent.is_dir():
            raise FastresError(f"--out {out} is a file, not a folder")
        parent.mkdir(parents=True, exist_ok=True)
        if exact:
            (parent / base).mkdir(exist_ok=True)
            return parent / base
        for k in range(1000):
            run = parent / (base if k == 0 else f"{base}-{k}")
            try:
                run.mkdir()
                return run
            except FileExistsError:
                continue
    except OSError as e:
        raise FastresError(f"--out {out}: cannot make the run folder {parent / base} ({e.strerror or e})") from None
    raise FastresError(f"--out {out}: 1000 run folders named {base}-* exist already; choose another --name")


CONFIG_DIGEST = "config_sha256"  # config.yaml: the digest of its config section as written, to tell a hand edit


def config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


def hand_edited_config(run_dir: Path) -> dict[str, Any] | None:
    """RUN/config.yaml's config section when someone edited it after fastres wrote it (its digest no longer
    matches), else None (not edited, or a file of a fastres that wrote no digest, or none)."""
    try:
        doc = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict) or CONFIG_DIGEST not in doc:
        return None
    config = doc.get("config")
    if isinstance(config, dict) and config_digest(config) == doc[CONFIG_DIGEST]:
        return None
    return config if isinstance(config, dict) else {}


def write_config(run_dir: Path, config: dict[str, Any], extra: dict[str, Any]) -> None:
    """RUN/config.yaml: the resolved config, what ran (backend, launcher, world size, ...), versions.

    Written atomically (a temporary file renamed over it): a crash leaves the old file or the new
    one, never half of one; every attempt of a run writes it again (what ran may have changed).
    The digest of the config section beside it tells a later resume that the file was edited."""
    doc = {
        "config": config,
        CONFIG_DIGEST: config_digest(config),
        "fastres": fastres.__version__,
        "torch": str(torch.__version__),
        "git": git_revision(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        **extra,
    }
    write_bytes_atomic(yaml.safe_dump(doc, sort_keys=False).encode("utf-8"), run_dir / "config.yaml")


@dataclass
class Summary:
    """What a finished run reports (its `summary` record in metrics.jsonl, and fit()'s return value)."""

    epochs: int
    top1: float
    top5: float
    train_seconds: float
    total_seconds: float
    images_per_second: float
    run_dir: Path
    rank: int = 0


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: a bare NaN is not JSON, and readers of the log choke on it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class MetricsLog:
    """Append-only JSON-lines log; every record is flushed, so a crash loses none."""

    def __init__(self, path: Path):
        self.path = path
        # a run killed mid-record left a partial last line: the next record starts a line of its own
        cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self._f = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        if cut:
            self._f.write("\n")

    def write(self, kind: str, **fields: Any) -> None:
        record = {"kind": kind, "time": round(_dt.datetime.now().timestamp(), 3), **fields}
        self._f.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")
        self._f.flush()
        if kind != "train":  # epoch-level records reach the disk even if the machine dies
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()
