"""The report's figures: PNG files drawn with matplotlib (no display needed), several runs overlaid.

    written = plot_runs(runs, out_dir)     # {"accuracy": out_dir/accuracy.png, ...}

accuracy.png    val top-1 (solid) and top-5 (dashed) against epoch and against wall time
loss.png        training loss against epoch and against wall time
schedule.png    learning rate and momentum against epoch
throughput.png  training images per second against epoch

A line has at most MAX_POINTS points: longer series (a 90-epoch ImageNet run logged every
step has 450,000 train records) are averaged over equal runs of records, which keeps the
figures fast to draw and smooths the loss the way a reader wants to see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastres import FastresError
from fastres.report.runs import Run

__all__ = ["FIGURES", "MAX_POINTS", "plot_runs", "time_unit"]

FIGURES = ("accuracy", "loss", "schedule", "throughput")
MAX_POINTS = 2000


def _figure_class():
    try:
        # Figure without pyplot: drawn by Agg when saved, no display, no global state touched
        from matplotlib.figure import Figure
    except ImportError:
        raise FastresError("python -m fastres.report needs matplotlib: pip install fastres[report]") from None
    return Figure


def _thin(x: list[float], y: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS (x, y) pairs: means over equal consecutive runs of points."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(xs) <= MAX_POINTS:
        return xs, ys
    edges = np.linspace(0, len(xs), MAX_POINTS + 1).astype(np.int64)
    counts = np.diff(edges)
    return np.add.reduceat(xs, edges[:-1]) / counts, np.add.reduceat(ys, edges[:-1]) / counts


def _series(run: Run, records, field: str, axis: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = [], []
    for r in records:
        value = r.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            continue  # a null loss (a skipped step) leaves a gap, not a zero
        where = (r.get("epoch") if records is run.val else run.epoch_of(r)) if axis == "epoch" else run.seconds_of(r)
        if where is None:
            continue
        x.append(float(where))
        y.append(float(value))
    return _thin(x, y)


def time_unit(runs: list[Run]) -> tuple[str, float]:
    """(unit name, seconds per unit) for a wall-time axis that fits the longest run."""
    longest = max((r.wall_seconds() or 0.0 for r in runs), default=0.0)
    if longest >= 3 * 3600:
        return "hours", 3600.0
    if longest >= 180:
        return "minutes", 60.0
    return "seconds", 1.0


def _new(Figure, panels: int):
    fig = Figure(figsize=(6.0 * panels, 4.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def _finish(fig, axes, path: Path, title: str) -> Path:
    for ax in axes:
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    fig.suptitle(title)
    fig.savefig(path)
    return path


def plot_runs(runs: list[Run], out_dir: Path) -> dict[str, Path]:
    """Write the FIGURES as PNG files into out_dir; returns their paths by name."""
    Figure = _figure_class()
    unit, per = time_unit(runs)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    out: dict[str, Path] = {}

    fig, (by_epoch, by_time) = _new(Figure, 2)
    for run, color in zip(runs, colors):
        for field, style in (("top1", "-"), ("top5", "--")):
            label = f"{run.name} top-{field[-1]}"
            x, y = _series(run, run.val, field, "epoch")
            by_epoch.plot(x, y, style, color=color, marker="." if len(x) < 40 else None, label=label)
            x, y = _series(run, run.val, field, "time")
            by_time.plot(x / per, y, style, color=color, marker="." if len(x) < 40 else None, label=label)
    by_epoch.set(xlabel="epoch", ylabel="val accuracy (%)")
    by_time.set(xlabel=f"wall time from the start of training ({unit})", ylabel="val accuracy (%)")
    out["accuracy"] = _finish(fig, (by_epoch, by_time), out_dir / "accuracy.png", "validation top-1 and top-5")

    fig, (by_epoch, by_time) = _new(Figure, 2)
    for run, color in zip(runs, colors):
        x, y = _series(run, run.train, "loss", "epoch")
        by_epoch.plot(x, y, color=color, label=run.name)
        x, y = _series(run, run.train, "loss", "time")
        by_time.plot(x / per, y, color=color, label=run.name)
    by_epoch.set(xlabel="epoch", ylabel="training loss")
    by_time.set(xlabel=f"wall time from the start of training ({unit})", ylabel="training loss")
    out["loss"] = _finish(fig, (by_epoch, by_time), out_dir / "loss.png", "training loss")

    fig, (lr_ax, mom_ax) = _new(Figure, 2)
    for run, color in zip(runs, colors):
        x, y = _series(run, run.train, "lr", "epoch")
        lr_ax.plot(x, y, color=color, label=run.name)
        x, y = _series(run, run.train, "momentum", "epoch")
        if len(x):
            mom_ax.plot(x, y, color=color, label=run.name)
    lr_ax.set(xlabel="epoch", ylabel="learning rate")
    mom_ax.set(xlabel="epoch", ylabel="momentum")
    out["schedule"] = _finish(fig, (lr_ax, mom_ax), out_dir / "schedule.png", "learning rate and momentum")

    fig, (ips_ax,) = _new(Figure, 1)
    for run, color in zip(runs, colors):
        x, y = _series(run, run.train, "img_per_s", "epoch")
        ips_ax.plot(x, y, color=color, alpha=0.6, label=f"{run.name} (logged steps)")
        x, y = _series(run, run.val, "img_per_s", "epoch")
        ips_ax.plot(x, y, "o", color=color, markersize=3, label=f"{run.name} (whole epochs)")
    ips_ax.set(xlabel="epoch", ylabel="training images / s (all processes)")
    ips_ax.set_ylim(bottom=0)
    out["throughput"] = _finish(fig, (ips_ax,), out_dir / "throughput.png", "training throughput")
    return out
