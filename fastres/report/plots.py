"""The report's figures: PNG files drawn with matplotlib (no display needed), several runs overlaid.

    written = plot_runs(runs, out_dir)     # {"accuracy": out_dir/accuracy.png, ...}

accuracy.png    val top-1 (solid) and top-5 (dashed, another colour) against epoch and against wall time
loss.png        training loss against epoch and against wall time
schedule.png    learning rate and momentum against epoch
throughput.png  training images per second against epoch

A line has at most MAX_POINTS points: longer series (a 90-epoch ImageNet run logged every
step has 450,000 train records) are averaged over equal runs of records, which keeps the
figures fast to draw and smooths the loss the way a reader wants to see it. Any run reads:
where a line has at most ANNOTATE points each is marked and labelled with its value, epoch
and time axes start at 0 and span at least one epoch, and every resume is a dotted vertical
line at the step it resumed from (a stop, or a lost host and a restart, then a resume), labelled with the
world sizes before and after and the steps and seconds the restart lost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastres import FastresError
from fastres.report.runs import Run

__all__ = ["ANNOTATE", "FIGURES", "MAX_POINTS", "plot_runs", "resume_label", "time_unit"]

FIGURES = ("accuracy", "loss", "schedule", "throughput")
MAX_POINTS = 2000
ANNOTATE = 12  # a line of this many points or fewer gets each value written beside its marker


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
        ax.margins(y=0.1)  # room for the values written above the highest points
    return fig, axes


def _line(ax, x: np.ndarray, y: np.ndarray, style: str = "-", fmt: str = "{:.3g}", **kw) -> None:
    """A line; with few points, each marked and labelled with its value."""
    few = len(x) <= ANNOTATE
    ax.plot(x, y, style, marker="o" if few else None, markersize=4, **kw)
    if few:
        for xi, yi in zip(x, y):
            ax.annotate(fmt.format(yi), (xi, yi), textcoords="offset points", xytext=(0, 5), ha="center",
                        fontsize="x-small", color=kw.get("color"))  # fmt: skip


def resume_label(run: Run, rec: dict) -> str:
    """`short resumed (attempt 2): 2 -> 1 processes, 1 steps and 12 s lost`: what the restart changed and cost, as
    far as its resume record says (fastres.run.attempts)."""
    label = f"{run.name} resumed (attempt {rec.get('attempt', '?')})"
    if rec.get("previous_world_size") is not None and rec.get("world_size") is not None:
        label += f": {rec['previous_world_size']} -> {rec['world_size']} processes"
    if rec.get("steps_lost") is not None and rec.get("seconds_lost") is not None:
        label += f"{',' if ':' in label else ':'} {rec['steps_lost']} steps and {rec['seconds_lost']:.0f} s lost"
    return label


def _resumes(ax, run: Run, axis: str, per: float, color: str) -> None:
    """A dotted vertical line where each resumed attempt of `run` took over (epoch or wall-time axis), labelled
    with the world sizes and what the restart lost."""
    for rec in run.resumes:
        where = run.epoch_of(rec) if axis == "epoch" else run.seconds_of(rec)
        if where is not None:
            x = where / (1.0 if axis == "epoch" else per)
            ax.axvline(x, color=color, linestyle=":", linewidth=1, label=resume_label(run, rec))


def _lighter(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return tuple(0.45 * c + 0.55 for c in to_rgb(color))


def _finish(fig, axes, path: Path, title: str, epoch_axes=()) -> Path:
    for ax in axes:
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_xlim(left=0)  # epochs and wall time from the start: one epoch is a point at 1, not the whole axis
    for ax in epoch_axes:
        ax.set_xlim(right=max(ax.get_xlim()[1], 1.1))
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
        # one run: top-1 and top-5 in two colours; several: each run's colour, top-5 a lighter shade of it
        shades = {"top1": color, "top5": "C1" if len(runs) == 1 else _lighter(color)}
        for field, style in (("top1", "-"), ("top5", "--")):
            label = f"{run.name} top-{field[-1]}"
            x, y = _series(run, run.val, field, "epoch")
            _line(by_epoch, x, y, style, "{:.1f}", color=shades[field], label=label)
            x, y = _series(run, run.val, field, "time")
            _line(by_time, x / per, y, style, "{:.1f}", color=shades[field], label=label)
        _resumes(by_epoch, run, "epoch", per, color)
        _resumes(by_time, run, "time", per, color)
    by_epoch.set(xlabel="epoch", ylabel="val accuracy (%)")
    by_time.set(xlabel=f"wall time from the start of training ({unit})", ylabel="val accuracy (%)")
    out["accuracy"] = _finish(fig, (by_epoch, by_time), out_dir / "accuracy.png", "validation top-1 and top-5",
                              epoch_axes=(by_epoch,))  # fmt: skip

    fig, (by_epoch, by_time) = _new(Figure, 2)
    for run, color in zip(runs, colors):
        x, y = _series(run, run.train, "loss", "epoch")
        _line(by_epoch, x, y, color=color, label=run.name)
        x, y = _series(run, run.train, "loss", "time")
        _line(by_time, x / per, y, color=color, label=run.name)
        _resumes(by_epoch, run, "epoch", per, color)
        _resumes(by_time, run, "time", per, color)
    by_epoch.set(xlabel="epoch", ylabel="training loss")
    by_time.set(xlabel=f"wall time from the start of training ({unit})", ylabel="training loss")
    out["loss"] = _finish(fig, (by_epoch, by_time), out_dir / "loss.png", "training loss", epoch_axes=(by_epoch,))

    fig, (lr_ax, mom_ax) = _new(Figure, 2)
    for run, color in zip(runs, colors):
        x, y = _series(run, run.train, "lr", "epoch")
        _line(lr_ax, x, y, color=color, label=run.name)
        x, y = _series(run, run.train, "momentum", "epoch")
        if len(x):
            _line(mom_ax, x, y, color=color, label=run.name)
    lr_ax.set(xlabel="epoch", ylabel="learning rate")
    mom_ax.set(xlabel="epoch", ylabel="momentum")
    out["schedule"] = _finish(fig, (lr_ax, mom_ax), out_dir / "schedule.png", "learning rate and momentum",
                              epoch_axes=(lr_ax, mom_ax))  # fmt: skip

    fig, (ips_ax,) = _new(Figure, 1)
    for run, color in zip(runs, colors):
        x, y = _series(run, run.train, "img_per_s", "epoch")
        ips_ax.plot(x, y, color=color, alpha=0.6, label=f"{run.name} (logged steps)")
        x, y = _series(run, run.val, "img_per_s", "epoch")
        _line(ips_ax, x, y, "", "{:.0f}", color=color, label=f"{run.name} (whole epochs)")
        _resumes(ips_ax, run, "epoch", per, color)
    ips_ax.set(xlabel="epoch", ylabel="training images / s (all processes)")
    ips_ax.set_ylim(bottom=0)
    out["throughput"] = _finish(fig, (ips_ax,), out_dir / "throughput.png", "training throughput",
                                epoch_axes=(ips_ax,))  # fmt: skip
    return out
