"""bench/bench_compile.py: `python -m fastres.train` timed end to end with and without --compile.

A real run of the script (eager only, fp32, a tiny model on a small copy of the built-in dataset: the
compiled runs take minutes), its figures checked against the run's own records; what it compares
(compile's cost, the speed ratio, when compiling pays) against figures worked out by hand; and which
precisions it measures on a CPU with and without native bf16 (flags faked as in tests/test_precision.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastres.run import execution

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_compile  # noqa: E402


def test_the_script_times_the_main_command_and_reads_its_records(tiny_data, tmp_path):
    data = tiny_data
    out, work = tmp_path / "compile.json", tmp_path / "runs"
    flags = ["--config", "builtin", "--data", str(data), "--arch", "resnet18", "--image-size", "32", "--batch-size",
             "8", "--threads", "1", "--no-progress"]  # fmt: skip
    cmd = [sys.executable, str(ROOT / "bench" / "bench_compile.py"), "--modes", "eager", "--precisions", "fp32",
           "--epochs", "2", "--skip", "1", "--out", str(out), "--work", str(work), "--", *flags]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    (row,) = result["runs"]
    assert result["compile_vs_eager"] == [] and result["machine"]["cores"] and "torch" in result["machine"]
    assert row["label"] == "fp32 eager" and row["precision_chosen"] == "fp32: --precision fp32"
    assert " -m fastres.train --precision fp32 --log-every 1 --epochs 2 --config builtin " in row["command"]
    assert "--compile" not in row["command"]
    assert row["inductor_cache"] == "cold (a fresh folder)" and not list(work.glob("*.inductor-cache"))
    records = [json.loads(x) for x in (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    summary = next(r for r in records if r["kind"] == "summary")
    assert [r["step"] for r in train] == list(range(1, 11))  # 40 images, batch 8: 5 steps an epoch, all logged
    assert row["steps_per_epoch"] == 5 and row["epochs"] == 2 and row["global_batch"] == 8
    assert (row["top1"], row["top5"]) == (summary["top1"], summary["top5"])
    assert 0 < row["first_step_s"] < row["wall_s"] and row["first_validation_s"] > 0
    # steps 2-5 of each epoch are steady (--skip 1): their rate lies between the slowest and the fastest
    # step's own (the trainer's clock, not the records' times)
    steady = [r["img_per_s"] for r in train if (r["step"] - 1) % 5 >= 1]
    assert row["steady_steps"] == len(steady) == 8
    assert min(steady) * 0.9 <= row["steady_img_per_s"] <= max(steady) * 1.1


def test_what_compiling_costs_and_when_it_pays():
    eager = dict(first_step_s=10.0, first_validation_s=2.0, steady_img_per_s=50.0, wall_s=700.0,
                 steps_per_epoch=188, global_batch=32)  # fmt: skip
    compiled = dict(eager, first_step_s=100.0, first_validation_s=60.0, steady_img_per_s=60.0, wall_s=760.0)
    got = bench_compile.compare(eager, compiled)
    # 90 s before the first step and 58 s in the first validation; an epoch (6,016 images) takes
    # 120.32 s eager, 100.27 s compiled: 148 s / 20.05 s an epoch = 7.4 epochs
    assert got == dict(compile_seconds_first_step=90.0, compile_seconds_first_validation=58.0, wall_ratio=0.921,
                       steady_ratio=1.2, pays_after_epochs=7.4)  # fmt: skip
    slower = bench_compile.compare(eager, dict(compiled, steady_img_per_s=45.0))
    assert slower["steady_ratio"] == 0.9 and slower["pays_after_epochs"] is None  # never


@pytest.mark.parametrize("flags, auto, bf16", [
    ("fpu avx2 avx512f avx512_bf16", ["fp32", "bf16"], "bf16 (native: AVX-512 BF16) --compile"),
    ("fpu avx2 fma", ["fp32"], "bf16 (emulated: no native bf16 on this CPU) --compile"),
])  # fmt: skip
def test_bf16_is_measured_where_native_and_labelled_emulated_elsewhere(tmp_path, monkeypatch, flags, auto, bf16):
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(execution, "CPUINFO", str(tmp_path / "cpuinfo"))
    assert bench_compile.precisions("auto") == auto
    assert bench_compile.precisions("fp32,bf16") == ["fp32", "bf16"]
    assert bench_compile.label("bf16", "compile") == bf16 and bench_compile.label("fp32", "eager") == "fp32 eager"
    with pytest.raises(SystemExit, match="--precisions: fp32, bf16 or auto, got 'fp16'"):
        bench_compile.precisions("fp16")
