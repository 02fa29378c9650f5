"""How many devices are worth booking: `python -m fastres.plan --sweep-devices`, its knee and its plot."""

from __future__ import annotations

import json

import pytest

from fastres.plan.cli import main
from fastres.plan.epochs import FAMILIES
from fastres.plan.sweep import KNEE_GAIN, Point, Sweep, batch_candidates, parse_sizes

H100 = ["--device", "h100", "--devices-per-node", "8", "--inter-node-gbps", "3200", "--target-top1", "75.9"]


def point(devices: int, minutes: float) -> Point:
    return Point(devices, 32, 32 * devices, 40, 10, minutes * 60, 0.01, 0.9, "tree", "fp32", "compute")


def test_sizes_batches_and_the_knee_rule():
    assert parse_sizes("8:3584") == [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3584]
    assert parse_sizes("8,64,512,4096") == [8, 64, 512, 4096]
    for bad in ("8,4", "0:64", "x", ""):
        with pytest.raises(ValueError, match="--sweep-devices must be"):
            parse_sizes(bad)
    assert batch_candidates("16:40") == [16, 20, 24, 28, 32, 40] and batch_candidates("32") == [32]
    # times 100, 50, 30, 25 minutes: gains 50%, 40%, 17% per doubling; the knee is the last size before < 25%
    sw = Sweep([point(8, 100), point(16, 50), point(32, 30), point(64, 25)], [], "")
    assert sw.gains() == pytest.approx([0.5, 0.4, 1 - 25 / 30])
    assert sw.knee == (sw.points[2], pytest.approx(1 - 25 / 30)) and KNEE_GAIN == 0.25
    # not a doubling apart: the gain per doubling, 4x the devices for a quarter of the time off is 13% a doubling
    sw = Sweep([point(8, 100), point(32, 75)], [], "")
    assert sw.gains() == pytest.approx([1 - 0.75**0.5]) and sw.knee[0].devices == 8
    assert Sweep([point(8, 100), point(16, 50)], [], "").knee == (point(16, 50), None)  # none in range
    assert sw.efficiency(sw.points[1]) == pytest.approx(100 * 8 / (75 * 32)) and sw.cost_doubled.devices == 32


def test_the_sweep_picks_the_fastest_allowed_batch_and_matches_single_plans(capsys):
    assert main([*H100, "--sweep-devices", "8,512,4096", "--batch-per-device", "16:400", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["devices"] for p in doc["points"]] == [8, 512, 4096]
    for p in doc["points"]:
        times = {}
        for b in batch_candidates("16:400"):
            if p["devices"] * b > FAMILIES["lars"].max_batch or b > 1113:  # beyond the law, or the memory rule
                continue
            assert main([*H100, "--devices", str(p["devices"]), "--global-batch", str(p["devices"] * b),
                         "--bucket-mb", "25", "--json"]) == 0  # fmt: skip
            times[b] = json.loads(capsys.readouterr().out)["time_to_train_s"]
        assert p["batch_per_device"] == min(times, key=times.get) and p["time_s"] == pytest.approx(min(times.values()))
        assert p["device_hours"] == pytest.approx(p["devices"] * p["time_s"] / 3600)
    assert doc["points"][-1]["global_batch"] <= FAMILIES["lars"].max_batch
    assert doc["points"][0]["efficiency_vs_smallest"] == 1 > doc["points"][-1]["efficiency_vs_smallest"]


def test_the_text_names_the_knee_and_the_plot_is_drawn(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sweep.png"
    argv = ["--device", "h100", "--devices-per-node", "8", "--inter-node-gbps", "400", "--target-top1", "75.9",
            "--sweep-devices", "256:4096", "--plot", str(png)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| devices | per device | global batch | epochs |" in out and "knee: 1,024 devices" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--plot", "x.png"], "--plot draws a sweep: give --sweep-devices"),
        (["--sweep-devices", "8:64", "--devices", "16"], "give --batch-per-device, not --devices or --global-batch"),
        (["--sweep-devices", "8,12"], "--sweep-devices 12 is not divisible by --devices-per-node 8"),
        (["--sweep-devices", "8:64", "--batch-per-device", "0"], "--batch-per-device must be B or LO:HI"),
    ],
)
def test_bad_sweeps_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
