"""Your own speed in `python -m fastres.plan`: `--device-images-per-s R[@b]`, `--calibrate-run RUN_DIR` (a real
fastres run folder, the shared short run of tests/trained.py), `--speed NAME`; Goyal et al.'s cluster from
Caffe2's own measured speed."""

from __future__ import annotations

import json
import statistics

import pytest
from trained import records, short_run

from fastres.plan.calibrate import SPEEDS, cpu_t0, default_speed
from fastres.plan.cli import main
from fastres.plan.cpu import cpu_device
from fastres.plan.records import run_by_key
from fastres.plan.speed import fit_one
from fastres.plan.userspeed import GMACS_224
from fastres.plan.validate import check

GOYAL = ["--device", "p100", "--devices", "256", "--devices-per-node", "8", "--global-batch", "8192",
         "--inter-node-gbps", "50", "--allreduce", "hierarchical"]  # fmt: skip


def plan(argv: list[str], capsys) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_goyal_s_cluster_from_caffe2_s_measured_speed_lands_within_20_percent(capsys):
    # Goyal et al.'s 8-GPU baseline: 90 epochs in 29 h (records.py, goyal-8gpu) is 1.28M x 90 / 29 h / 8 GPUs
    per_gpu = 1_281_167 * 90 / (29 * 3600) / 8
    assert per_gpu == pytest.approx(138, abs=0.5)
    doc = plan([*GOYAL, "--device-images-per-s", "138@32"], capsys)
    assert doc["time_to_train_s"] / 3600 == pytest.approx(1.0, abs=0.20)  # "one hour" (arXiv:1706.02677 abstract)
    half = default_speed("p100", "fp32").half_batch
    assert doc["speed"]["images_per_s_large_batch"] == pytest.approx(fit_one(32, 32 / 138, half)[0])
    assert doc["device_images_per_s"] == pytest.approx(138, rel=1e-9)  # the figure given, back at 32 per device
    without = plan(GOYAL, capsys)  # TensorFlow's P100 speed, 195 img/s at 32: the cluster looks a third faster
    assert without["time_to_train_s"] < 0.75 * doc["time_to_train_s"]
    # the published runs that use no speed of their own stay where they are
    for key in ("akiba-2017", "mlperf-v3.1-coreweave-n448", "mlperf-v2.0-dgxa100-n527"):
        assert abs(check(run_by_key(key)).ratio - 1) <= 0.20


def test_a_rate_alone_takes_t0_from_the_device_s_half_speed_batch(capsys):
    doc = plan(["--device", "h100", "--devices", "8", "--device-images-per-s", "3000"], capsys)
    half = default_speed("h100", "mixed").half_batch
    assert doc["speed"]["images_per_s_large_batch"] == 3000 and doc["speed"]["t0_s"] == pytest.approx(half / 3000)
    doc = plan(["--device", "p100", "--devices", "8", "--speed", "p100-caffe2"], capsys)
    assert doc["speed"]["images_per_s_large_batch"] == SPEEDS["p100-caffe2"].rate


def _expected_cpu_speed(run, cores: int) -> tuple[float, float]:
    """R and t0 the planner should read from the run folder, computed here from its files."""
    rates = [r["img_per_s"] for r in records(run, "train")][1:]  # the first window holds the warm-up
    batch = 8  # tests/trained.py: --batch-size 8, one process
    work = GMACS_224["resnet18"] * (32 / 224) ** 2  # ResNet-18 at 32 px, carried to ResNet-50 at 224 px
    step = batch / statistics.median(rates) * GMACS_224["resnet50"] / work
    t0 = cpu_t0(cpu_device(cores))
    return batch / (step - t0), t0


def test_calibrate_run_reads_a_real_fastres_run_folder(tmp_path_factory, capsys):
    _, run = short_run(tmp_path_factory)
    capsys.readouterr()  # what the training printed
    assert len(records(run, "train")) >= 2
    doc = plan(["--device", "cpu", "--cores-per-device", "4", "--devices", "64", "--devices-per-node", "2",
                "--calibrate-run", str(run), "--target-top1", "75.9"], capsys)  # fmt: skip
    rate, t0 = _expected_cpu_speed(run, 4)
    assert doc["speed"]["images_per_s_large_batch"] == pytest.approx(rate, rel=1e-9)
    assert doc["speed"]["t0_s"] == pytest.approx(t0) and doc["precision"] == "fp32"
    (used,) = doc["speed"]["calibrate_run"]
    assert used["run"] == str(run) and used["batch_per_device"] == 8 and "resnet18 at 32 px" in used["carried"]
    assert doc["epochs_from"]["how"] == "law" and doc["time_to_accuracy_s"] > 0
    # a GPU plan from a CPU run is refused, by name
    assert main(["--device", "h100", "--calibrate-run", str(run)]) == 2
    assert "the run trained on a CPU (cpu), not on --device h100" in capsys.readouterr().err


def test_two_runs_at_two_batches_give_rate_and_t0(tmp_path, capsys):
    # two run folders as python -m fastres.train writes them: config.yaml and metrics.jsonl (8 and 32 per device)
    true_rate, true_t0 = 2000.0, 0.004
    for b in (8, 32):
        d = tmp_path / f"b{b}"
        d.mkdir()
        d.joinpath("config.yaml").write_text(
            f"config:\n  arch: resnet50\n  image_size: 224\n  batch_size: {b}\nglobal_batch: {b}\nranks: 1\n"
            "device: cuda:0\namp: bfloat16\n"
        )
        ips = b / (b / true_rate + true_t0)
        lines = [{"kind": "train", "step": 20 * i, "img_per_s": ips * (0.5 if i == 1 else 1)} for i in (1, 2, 3)]
        d.joinpath("metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    doc = plan(["--device", "h100", "--calibrate-run", str(tmp_path / "b8"), "--calibrate-run",
                str(tmp_path / "b32")], capsys)  # fmt: skip
    assert doc["speed"]["images_per_s_large_batch"] == pytest.approx(true_rate)
    assert doc["speed"]["t0_s"] == pytest.approx(true_t0) and doc["precision"] == "mixed"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device-images-per-s", "fast"], "--device-images-per-s must be R or R@b"),
        (["--device-images-per-s", "100@0"], "--device-images-per-s must be R or R@b"),
        (["--speed", "p100-caffe2"], "--speed p100-caffe2 is a p100 speed, not one of --device h100"),
        (["--speed", "p100-tf", "--device-images-per-s", "100"], "give one speed, not several"),
        (["--calibrate-run", "/nonexistent/run"], "--calibrate-run /nonexistent/run: no config.yaml"),
        (["--device", "h100", "--precision", "fp32", "--device-images-per-s", "900"], "no calibrated speed to take"),
    ],
)
def test_bad_speeds_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
