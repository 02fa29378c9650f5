"""The sweep as a PNG (`--plot FILE`): time to accuracy and device-hours against the devices booked.

matplotlib is imported when a plot is asked for (pip install matplotlib; fastres's [report] extra).
"""

from __future__ import annotations

from fastres.plan.sweep import Sweep

__all__ = ["plot_sweep"]


def plot_sweep(sw: Sweep, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [p.devices for p in sw.points]
    minutes = [p.time_s / 60 for p in sw.points]
    knee, gain = sw.knee
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.loglog(n, minutes, "o-", color="C0", label="time to accuracy (predicted)")
    ax.loglog(n, [minutes[0] * n[0] / x for x in n], ":", color="C0", alpha=0.6, label="linear scaling")
    for p, m in zip(sw.points, minutes):
        ax.annotate(f"{p.batch_per_device}", (p.devices, m), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=7, color="C0")  # fmt: skip
    if gain is not None:
        ax.axvline(knee.devices, color="C3", linestyle="--", alpha=0.7, label=f"knee: {knee.devices:,} devices")
    if sw.cost_doubled is not None:
        ax.axvline(sw.cost_doubled.devices, color="C2", linestyle="-.", alpha=0.7,
                   label=f"device-hours x2 from {sw.cost_doubled.devices:,}")  # fmt: skip
    ax.set_xlabel("devices (the numbers: images per device)")
    ax.set_ylabel("minutes to the target")
    ax.grid(True, which="both", alpha=0.3)
    ax2 = ax.twinx()
    ax2.semilogx(n, [p.device_hours for p in sw.points], "s--", color="C1", label="device-hours")
    ax2.set_ylabel("device-hours", color="C1")
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, loc="center left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
