"""report.md: the runs side by side in tables (results, configuration, resumes, bad files), with the plots.

    text = write_markdown(runs, out_dir / "report.md", figures)

Figures are linked by paths relative to report.md, so the folder can be moved or published whole.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from fastres.report.runs import Run

__all__ = ["KEY_SETTINGS", "config_differences", "flat_config", "write_markdown"]

# The settings shown for a single run (those present), in this order.
KEY_SETTINGS = (
    "arch", "dataset", "classes", "train_images", "val_images", "epochs", "batch_size", "global_batch", "ranks",
    "optimizer", "lr", "peak_lr", "momentum", "schedule", "warmup_epochs", "label_smoothing", "weight_decay",
    "image_size", "val_image_size", "backend", "device", "precision", "amp", "fastres", "torch", "git", "host",
)  # fmt: skip
# Keys that differ between any two runs and say nothing about them.
_NOT_SETTINGS = ("started", "name", "out", "config_sha256")


def flat_config(run: Run) -> dict[str, Any]:
    """The run's config keys and the facts config.yaml records beside them (dataset, ranks, versions, ...).
    A fact named like a config key is what the setting resolved to (global_batch, channels_last): it
    takes the plain name, and the setting as given is shown as config.<key>."""
    facts = {k: v for k, v in run.doc.items() if k != "config" and k not in _NOT_SETTINGS}
    flat = {}
    for key, value in run.config.items():
        if key not in _NOT_SETTINGS:
            flat[f"config.{key}" if key in facts else key] = value
    flat.update(facts)
    return flat


def config_differences(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """(key, value per run) for every key whose values are not all the same (missing counts as a value)."""
    flats = [flat_config(r) for r in runs]
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys)
    missing = object()
    out = []
    for key in keys:
        values = [f.get(key, missing) for f in flats]
        if any(_show(v) != _show(values[0]) for v in values[1:]):
            out.append((key, [None if v is missing else v for v in values]))
    return out


def _show(value: Any, width: int = 60) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _pct(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _status(run: Run) -> str:
    epochs = run.final()["epoch"] if run.final() else 0
    planned = run.epochs_planned
    if run.summary is not None:
        return f"{epochs}" if planned in (None, epochs) else f"{epochs} of {planned}"
    return f"{epochs} of {planned if planned is not None else '?'} (no summary: stopped or still running)"


def _results(runs: list[Run]) -> list[str]:
    rows = []
    for run in runs:
        final, best = run.final() or {}, run.best()
        ips = run.images_per_second()
        rows.append([
            run.name, _status(run), _pct(final.get("top1")), _pct(final.get("top5")),
            f"{best[0]:.2f}% (epoch {best[1]})" if best else "-",
            _duration(run.wall_seconds()), _duration(run.training_seconds()),
            f"{ips:,.0f}" if ips else "-", str(len(run.bad_files)), str(len(run.resumes)),
        ])  # fmt: skip
    header = ["run", "epochs", "final top-1", "final top-5", "best top-1", "wall time", "training time", "img/s",
              "bad files skipped", "resumes"]  # fmt: skip
    return _table(header, rows)


def write_markdown(runs: list[Run], path: Path, figures: dict[str, Path]) -> str:
    """Write report.md at `path` (figures linked relative to it); returns its text."""
    now = _dt.datetime.now().isoformat(timespec="seconds")
    lines = [
        "# fastres report",
        "",
        f"Written by `python -m fastres.report` on {now} from each run's `metrics.jsonl` and `config.yaml`:",
        "",
    ]
    lines += [f"- **{r.name}**: `{r.path}`" for r in runs]
    lines += [
        "",
        "## Results",
        "",
        *_results(runs),
        "",
        "Final: the last validation. Wall time: from the first training step to the run's last record, interruptions "
        "included. Training time: the training epochs alone (no set-up, validation or time between attempts). "
        "img/s: training images per second over all processes, the median epoch's.",
        "",
    ]
    if len(runs) > 1:
        diffs = config_differences(runs)
        lines += ["## Differences between the runs", ""]
        if diffs:
            lines += _table(["setting", *[r.name for r in runs]], [[k, *[_show(v) for v in vs]] for k, vs in diffs])
        else:
            lines.append("None: every run has the same config.yaml settings.")
        lines.append("")
    else:
        flat = flat_config(runs[0])
        shown = [[k, _show(flat[k])] for k in KEY_SETTINGS if flat.get(k) not in (None, "None")]
        lines += ["## Configuration", "", *_table(["setting", "value"], shown), "",
                  f"Every setting: `{runs[0].path / 'config.yaml'}`.", ""]  # fmt: skip
    lines += ["## Plots", ""]
    for name, figure in figures.items():
        lines += [f"![{name}]({figure.relative_to(path.parent).as_posix()})", ""]
    resumed = [r for r in runs if r.resumes]
    if resumed:
        lines += ["## Resumes", ""]
        rows = []
        for run in resumed:
            for rec in run.resumes:
                when = rec.get("time")
                when = _dt.datetime.fromtimestamp(when).isoformat(timespec="seconds") if when else "-"
                fields = [rec.get(k) for k in ("attempt", "restart", "checkpoint", "step")]
                before = rec.get("previous_world_size")
                processes = f"{before} -> {rec.get('world_size')}" if before is not None else rec.get("world_size")
                lost = [rec.get(k) for k in ("steps_lost", "seconds_lost", "changed")]
                rows.append([run.name, when, *[_show(v) for v in [*fields, processes, *lost]]])
        lines += _table(["run", "time", "attempt", "restart", "checkpoint", "step", "processes", "steps lost",
                         "seconds lost", "changed"], rows)  # fmt: skip
        lines += ["", "Records logged after a resumed step are replaced by the resumed attempt's.", ""]
    with_bad = [r for r in runs if r.bad_files]
    if with_bad:
        lines += ["## Bad files skipped", ""]
        for run in with_bad:
            shown = run.bad_files[:20]
            lines.append(f"{run.name}: {len(run.bad_files)} files")
            lines += [f"- `{_show(b.get('path'), 200)}`: {_show(b.get('reason'), 200)}" for b in shown]
            if len(run.bad_files) > len(shown):
                lines.append(f"- ... and {len(run.bad_files) - len(shown)} more (`bad_file` records in metrics.jsonl)")
            lines.append("")
    notes = [
        f"{r.name}: {r.malformed} lines of metrics.jsonl were not JSON and were skipped" for r in runs if r.malformed
    ]
    notes += [f"{r.name}: no config.yaml" for r in runs if not r.doc]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    text = "\n".join(lines)
    path.write_text(text, encoding="utf-8")
    return text
