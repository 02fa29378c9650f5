"""python -m fastres.report: PNG plots and report.md from a real short run's folder and from synthetic
90-epoch ImageNet logs (resumed, with bad files and a damaged line); one-line errors for bad input;
the console scripts of every tool."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from trained import records, short_run

from fastres import FastresError
from fastres.report import read_run, write_report
from fastres.report.markdown import _duration
from fastres.report.plots import FIGURES, MAX_POINTS, _thin

pytest.importorskip("matplotlib", reason="the report extra is not installed (pip install fastres[report])")

REPO = Path(__file__).resolve().parents[1]
T0 = 1_790_000_000.0
SPE, LOG_EVERY, BATCH, IPS = 5004, 20, 256, 2900.0  # ImageNet at batch 256: 5004 steps per epoch


def accuracy(epoch: int, lr: float) -> float:
    return (70 + 40 * lr) * (1 - math.exp(-epoch / 20))


def write_imagenet_run(run: Path, lr: float, crash_in_epoch: int | None = None) -> dict:
    """A 90-epoch ResNet-50 ImageNet log in the trainer's format; with `crash_in_epoch`, the run dies
    2000 steps into that epoch (mid-line), and a second attempt resumes from the epoch's start."""
    run.mkdir(parents=True)
    facts = dict(dataset="/data/imagenet", classes=1000, train_images=1281167, global_batch=BATCH, peak_lr=lr, ranks=8)
    doc = {
        "config": {"arch": "resnet50", "epochs": 90, "batch_size": 32, "lr": lr, "name": run.name, "out": "runs"},
        "fastres": "0.1.0",
        "started": "2026-11-23T10:00:00",
        **facts,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    lines, t = [], T0

    def log(kind, **fields):
        lines.append(json.dumps({"kind": kind, "time": round(t, 3), **fields}))

    log("bad_file", path="/data/imagenet/train/n02105855/n02105855_2933.JPEG", reason="PNG under a JPEG name")
    log("bad_file", path="/data/imagenet/val/n01739381/ILSVRC2012_val_00013230.JPEG", reason="truncated JPEG")
    epoch, crashed = 1, False
    while epoch <= 90:
        for i in range(1, SPE + 1):
            if i % LOG_EVERY and i != SPE:
                continue
            step = (epoch - 1) * SPE + i
            t = T0 + step * BATCH / IPS + 20 * (epoch - 1) + (900 if crashed else 0)
            if epoch == crash_in_epoch and not crashed and i == 2000:
                lines.append(lines.pop()[:40])  # killed in the middle of a line
                crashed, t = True, t + 900
                log(
                    "resume",
                    attempt=2,
                    checkpoint=f"checkpoints/step-{(epoch - 1) * SPE:09d}.pt",
                    step=(epoch - 1) * SPE,
                    world_size=8,
                    changed={"world_size": [8, 8]},
                )
                resume = lines.pop()
                lines[-1] += resume  # the new attempt's record appended to the unfinished line
                break
            loss = 6.9 * math.exp(-step / (SPE * 25)) + 0.8
            lr_now = lr * 0.5 * (1 + math.cos(math.pi * step / (90 * SPE)))
            log("train", epoch=epoch, step=step, loss=loss, lr=lr_now, momentum=0.9, img_per_s=IPS, skipped_steps=0)
        else:
            t += 20
            top1 = accuracy(epoch, lr)
            log(
                "val",
                epoch=epoch,
                step=epoch * SPE,
                top1=top1,
                top5=top1 + 17,
                images=50000,
                epoch_seconds=SPE * BATCH / IPS,
                img_per_s=IPS,
            )
            epoch += 1
    log(
        "summary",
        epochs=90,
        top1=top1,
        top5=top1 + 17,
        train_seconds=1.0,
        total_seconds=2.0,
        img_per_s=IPS,
        best_top1=top1,
        best_epoch=90,
    )
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return {"last_time": t, "top1": top1}


def check_png(path: Path, size: tuple[int, int]) -> None:
    assert path.is_file() and path.stat().st_size > 10_000, path
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == size
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is None or len(colors) > 20  # drawn lines and text, not a blank canvas


def table_row(text: str, run: str) -> list[str]:
    row = next(line for line in text.splitlines() if line.startswith(f"| {run} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_synthetic_imagenet_logs_resumed_compared(tmp_path):
    a = write_imagenet_run(tmp_path / "lr0.1", 0.1, crash_in_epoch=31)
    b = write_imagenet_run(tmp_path / "lr0.2", 0.2)

    run = read_run(tmp_path / "lr0.1")
    per_epoch = SPE // LOG_EVERY + 1
    steps = [r["step"] for r in run.train]
    assert len(run.train) == 90 * per_epoch and steps == sorted(set(steps))  # epoch 31 once, the resumed one
    assert [r["epoch"] for r in run.val] == list(range(1, 91))
    assert run.malformed == 1 and len(run.resumes) == 1 and len(run.bad_files) == 2
    assert run.first_time == pytest.approx(T0)  # training's start, from the first record's throughput

    written = write_report([tmp_path / "lr0.1", tmp_path / "lr0.2"], tmp_path / "cmp")
    assert set(written) == {*FIGURES, "report"}
    for name in FIGURES:
        check_png(written[name], (600, 400) if name == "throughput" else (1200, 400))
    text = written["report"].read_text()
    for name in FIGURES:
        assert f"![{name}]({name}.png)" in text
    row = table_row(text, "lr0.1")
    assert row[1:5] == ["90", f"{a['top1']:.2f}%", f"{a['top1'] + 17:.2f}%", f"{a['top1']:.2f}% (epoch 90)"]
    assert row[5] == _duration(a["last_time"] - T0) and row[5] != _duration(b["last_time"] - T0)  # the crash's gap
    assert row[6:] == [_duration(90 * SPE * BATCH / IPS), "2,900", "2", "1"]
    assert table_row(text, "lr0.2")[1:3] == ["90", f"{b['top1']:.2f}%"] and table_row(text, "lr0.2")[-2:] == ["2", "0"]
    assert table_row(text, "lr") == ["lr", "0.1", "0.2"] and table_row(text, "peak_lr") == ["peak_lr", "0.1", "0.2"]
    assert "| started |" not in text and "| name |" not in text  # differ between any two runs, say nothing
    assert "checkpoints/step-000150120.pt" in text  # the resume, with the checkpoint it came from
    assert "n02105855_2933.JPEG`: PNG under a JPEG name" in text
    assert "lr0.1: 1 lines of metrics.jsonl were not JSON" in text


def test_thinning_keeps_long_series_drawable_and_their_mean():
    x = list(range(450_000))  # 90 epochs of ImageNet logged at every step
    y = [math.sin(i / 1000) for i in x]
    tx, ty = _thin(x, y)
    assert len(tx) == MAX_POINTS and tx[0] < tx[-1]
    assert ty.mean() == pytest.approx(sum(y) / len(y), abs=1e-9)
    sx, sy = _thin(x[:100], y[:100])
    assert list(sx) == x[:100] and list(sy) == y[:100]


def test_report_of_a_real_short_run(tmp_path_factory):
    _data, run = short_run(tmp_path_factory)
    written = write_report([run])
    assert written["report"] == run / "report" / "report.md"
    for name in FIGURES:
        check_png(written[name], (600, 400) if name == "throughput" else (1200, 400))
    text = written["report"].read_text()
    val = records(run, "val")
    best = max(val, key=lambda r: (r["top1"], -r["epoch"]))
    row = table_row(text, "short")
    assert row[1:5] == [
        str(len(val)),
        f"{val[-1]['top1']:.2f}%",
        f"{val[-1]['top5']:.2f}%",
        f"{best['top1']:.2f}% (epoch {best['epoch']})",
    ]
    assert table_row(text, "arch") == ["arch", "resnet18"] and table_row(text, "global_batch") == ["global_batch", "8"]


def run_report(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastres.report", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "missing does not exist"),
        (lambda d: (d / "plain").mkdir() or d / "plain", "plain has no metrics.jsonl"),
        (lambda d: (d / "f.txt").write_text("x") and d / "f.txt", "f.txt is not a run folder"),
        (lambda d: (d / "e").mkdir() or (d / "e" / "metrics.jsonl").write_text("\n\n") and d / "e", "holds no records"),
    ],
)
def test_bad_run_folders_get_one_line(tmp_path, make, message):
    proc = run_report(str(make(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("python -m fastres.report: error: ") and message in lines[0]


def test_without_matplotlib_one_line_says_how_to_install(tmp_path, monkeypatch):
    write_imagenet_run(tmp_path / "r", 0.1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(FastresError, match=r"needs matplotlib: pip install fastres\[report\]"):
        write_report([tmp_path / "r"])


SCRIPTS = {
    "fastres-train": "fastres.train:main",
    "fastres-data": "fastres.data.__main__:main",
    "fastres-eval": "fastres.eval:main",
    "fastres-predict": "fastres.predict:main",
    "fastres-export": "fastres.export:main",
    "fastres-report": "fastres.report.cli:main",
}


def test_console_scripts_name_each_tools_main(capsys):
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {k: scripts.get(k) for k in SCRIPTS} == SCRIPTS
    for target in SCRIPTS.values():
        module, name = target.split(":")
        main = getattr(importlib.import_module(module), name)
        with pytest.raises(SystemExit) as e:
            main(["--help"])
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_plots_of_a_short_interrupted_run_read_well(tmp_path, monkeypatch):
    # one epoch, a stop and a resume in it: few points get their values written, top-1 and top-5 get two
    # colours, the resume is a line, the epoch axis starts at 0 and spans the epoch; no 'None' row in report.md
    from matplotlib.colors import to_rgb

    from fastres.report import plots

    run = tmp_path / "short"
    run.mkdir()
    doc = {"config": {"arch": "resnet50", "epochs": 1, "lr": 0.1}, "train_images": 80, "global_batch": 8,
           "amp": "None", "dataset": "/d"}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(doc))
    recs = [dict(kind="train", time=T0 + s, epoch=1, step=s, loss=2.3 - 0.1 * s, lr=0.1, momentum=0.9, img_per_s=9)
            for s in (2, 4, 6)]  # fmt: skip
    recs.append(dict(kind="resume", time=T0 + 60, attempt=2, checkpoint="checkpoints/step-000000004.pt", step=4,
                     world_size=1, previous_world_size=2, restart=1, steps_lost=2, seconds_lost=12.4))  # fmt: skip
    recs += [dict(kind="train", time=T0 + 60 + s, epoch=1, step=s, loss=2.0, lr=0.1, momentum=0.9, img_per_s=9)
             for s in (6, 8, 10)]  # fmt: skip
    recs.append(dict(kind="val", time=T0 + 80, epoch=1, step=10, top1=41.5, top5=88.0, images=20, img_per_s=9,
                     epoch_seconds=20.0))  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    drawn = {}
    finish = plots._finish

    def keep(fig, axes, path, title, epoch_axes=()):
        out = finish(fig, axes, path, title, epoch_axes)
        drawn[path.stem] = list(axes)
        return out

    monkeypatch.setattr(plots, "_finish", keep)
    written = write_report([run])
    by_epoch, by_time = drawn["accuracy"]
    lines = {line.get_label(): line for line in by_epoch.get_lines()}
    top1, top5 = lines["short top-1"], lines["short top-5"]
    assert to_rgb(top1.get_color()) != to_rgb(top5.get_color())
    assert {t.get_text() for t in by_epoch.texts} == {"41.5", "88.0"}  # the values, written beside the points
    assert by_epoch.get_xlim()[0] == 0 and by_epoch.get_xlim()[1] >= 1.1  # not 0.96..1.04 around one point
    (resumed,) = [line for label, line in lines.items() if "resumed (attempt 2)" in label]
    assert resumed.get_label() == "short resumed (attempt 2): 2 -> 1 processes, 2 steps and 12 s lost"
    assert resumed.get_xdata()[0] == pytest.approx(0.4)  # step 4 of 10 in the epoch
    loss_epoch, loss_time = drawn["loss"]
    assert any("resumed" in line.get_label() for line in loss_time.get_lines())
    text = written["report"].read_text()
    assert "None" not in text and "| amp |" not in text, text
    assert "| short |" in text and "| 2 | 1 | checkpoints/step-000000004.pt | 4 | 2 -> 1 | 2 | 12.4 |" in text, text
