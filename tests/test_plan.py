"""`python -m fastres.plan`: the cost model's formulas, the advice, the CLI and its bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from fastres.plan import GPUS, Cluster, Job, estimate, lookup_gpu
from fastres.plan.choose import recommend
from fastres.plan.cli import main, read_calibration, validation_table
from fastres.plan.cost import RESNET50_PARAMS, allreduce_seconds, gpu_images_per_second
from fastres.plan.records import RECORDS, predict


def cluster(gpus=16, per_node=8, intra=800.0, inter=100.0, **kw) -> Cluster:
    return Cluster(gpu=lookup_gpu("a100"), gpus=gpus, gpus_per_node=per_node, intra_gbps=intra, inter_gbps=inter, **kw)


def run(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- the model


def test_gpu_table_has_the_issue_s_gpus_with_data_sheet_figures():
    assert {"p100", "v100", "a100", "h100", "h200"} <= set(GPUS)
    assert GPUS["h100"].mixed_tflops == GPUS["h200"].mixed_tflops == 989  # same compute, dense
    assert GPUS["h200"].memory_gbs > GPUS["h100"].memory_gbs > GPUS["a100"].memory_gbs > GPUS["v100"].memory_gbs
    assert not GPUS["p100"].tensor_cores and GPUS["v100"].tensor_cores


def test_allreduce_formulas():
    s, a_in, a_out = 100e6, 5e-6, 10e-6
    b_in, b_out = 800e9 / 8, 100e9 / 8
    one_node = cluster(gpus=8, per_node=8)
    assert allreduce_seconds(one_node, s, "hierarchical") == pytest.approx(2 * 7 * a_in + 2 * 7 / 8 * s / b_in)
    c = cluster(gpus=32, per_node=8)  # 4 nodes x 8
    assert allreduce_seconds(c, s, "ring") == pytest.approx(2 * 31 * a_out + 2 * 31 / 32 * s / b_out)
    hier = 2 * 7 / 8 * s / b_in + 2 * 7 * a_in + 2 * 3 / 4 * s / b_out + 2 * 3 * a_out
    assert allreduce_seconds(c, s, "hierarchical") == pytest.approx(hier)
    assert allreduce_seconds(c, s, "tree") == pytest.approx(2 * math.log2(4) * a_out + 2 * s / b_out)
    assert allreduce_seconds(cluster(gpus=1, per_node=1), s, "ring") == 0.0
    with pytest.raises(ValueError, match="algorithm must be one of"):
        allreduce_seconds(c, s, "butterfly")


def test_hierarchical_beats_ring_by_the_bytes_on_a_slow_link_and_ring_latency_grows_with_gpus():
    slow = cluster(gpus=8, per_node=2, intra=800, inter=1)  # 4 nodes x 2 on 1 Gbit/s: bandwidth-bound
    ratio = allreduce_seconds(slow, 102e6, "ring") / allreduce_seconds(slow, 102e6, "hierarchical")
    assert ratio == pytest.approx((2 * 7 / 8) / (2 * 3 / 4), rel=0.02)  # 1.75 S vs 1.5 S on each node's link
    big = cluster(gpus=4096, per_node=8, inter=400)
    assert allreduce_seconds(big, 1e6, "ring") > 10 * allreduce_seconds(big, 1e6, "tree")  # 2(N-1) vs 2 log2 K steps


def test_step_epoch_and_time_to_train_are_consistent():
    c = cluster(gpus=64, per_node=8, inter=200)
    job = Job(global_batch=4096, epochs=90, wire_dtype="bf16", allreduce="hierarchical")
    e = estimate(c, job)
    assert e.steps_per_epoch == math.ceil(1_281_167 / 4096)
    assert e.epoch_time_s == pytest.approx(e.steps_per_epoch * e.step_time_s)
    assert e.time_to_train_s == pytest.approx(90 * e.epoch_time_s)
    assert e.images_per_s == pytest.approx(4096 / e.step_time_s)
    assert 0 < e.scaling_efficiency <= 1 and e.step_time_s >= e.compute_s
    solo = estimate(cluster(gpus=1, per_node=1), Job(global_batch=64, epochs=1))
    assert solo.allreduce_s == 0 and solo.scaling_efficiency == 1


def test_more_bandwidth_never_slows_and_a_16_bit_wire_halves_the_bytes():
    job = Job(global_batch=8192, epochs=1, allreduce="ring", overlap=False)
    times = [estimate(cluster(gpus=128, inter=g), job).step_time_s for g in (10, 25, 100, 400)]
    assert times == sorted(times, reverse=True)
    c = cluster(gpus=16, per_node=8, intra=1e6, inter=1, inter_alpha_s=0, intra_alpha_s=0)
    fp32 = estimate(c, Job(global_batch=1024, epochs=1, allreduce="ring", wire_dtype="fp32", overlap=False))
    bf16 = estimate(c, Job(global_batch=1024, epochs=1, allreduce="ring", wire_dtype="bf16", overlap=False))
    assert bf16.allreduce_s == pytest.approx(fp32.allreduce_s / 2, rel=1e-3)
    assert fp32.allreduce_s == pytest.approx(2 * 15 / 16 * RESNET50_PARAMS * 4 / (1e9 / 8), rel=1e-3)


def test_overlap_hides_communication_behind_backward():
    c = cluster(gpus=16, per_node=8, inter=100)
    job = Job(global_batch=4096, epochs=1, allreduce="hierarchical")
    with_overlap, without = estimate(c, job), estimate(c, Job(**{**job.__dict__, "overlap": False}))
    assert without.step_time_s == pytest.approx(without.compute_s + without.allreduce_s)
    assert with_overlap.step_time_s < without.step_time_s


def test_gpu_rate_is_a_roofline_and_small_batches_run_slower():
    big, bound = gpu_images_per_second(GPUS["p100"], "fp32", 256)
    assert bound == "compute"  # fp32 on CUDA cores
    assert gpu_images_per_second(GPUS["h100"], "mixed", 256)[1] == "memory"  # tensor cores wait for HBM
    assert gpu_images_per_second(GPUS["p100"], "fp32", 16)[0] < big
    assert gpu_images_per_second(GPUS["h200"], "mixed", 256)[0] > gpu_images_per_second(GPUS["h100"], "mixed", 256)[0]


def test_the_data_loader_can_bound_the_step():
    c = cluster(gpus=8, per_node=8, data_images_per_s_per_node=1000)
    e = estimate(c, Job(global_batch=512, epochs=1))
    assert e.bound == "data" and e.step_time_s == pytest.approx(512 / 1000)


def test_advice_picks_the_fastest_and_a_16_bit_wire_only_when_it_pays():
    slow = cluster(gpus=64, per_node=8, inter=10)
    job, est = recommend(slow, Job(global_batch=2048, epochs=1))
    assert job.wire_dtype == "bf16"  # a 10 Gbit/s network: halving the bytes pays
    for algorithm in ("ring", "tree", "hierarchical"):
        for wire in ("fp32", "bf16"):
            other = estimate(slow, Job(global_batch=2048, epochs=1, allreduce=algorithm, wire_dtype=wire))
            assert est.step_time_s <= other.step_time_s + 1e-12
    one_node = cluster(gpus=8, per_node=8)
    assert recommend(one_node, Job(global_batch=2048, epochs=1))[0].wire_dtype == "fp32"  # NVLink: no gain


# ----------------------------------------------------------------------------- the record runs


def test_validation_table_lists_every_record_with_its_ratio():
    table = validation_table().splitlines()
    assert len(table) == 2 + len(RECORDS) == 6
    for r, line in zip(RECORDS, table[2:]):
        ratio = predict(r).time_to_train_s / r.published_s
        assert line.startswith(f"| {r.name} |") and line.endswith(f"| {ratio:.2f} |")
        assert r.gpu in GPUS
    assert [r.gpus for r in RECORDS] == [256, 1024, 2176, 3584]
    assert [r.published_s for r in RECORDS] == [3600, 900, 224, pytest.approx(11, abs=0.1)]


# ----------------------------------------------------------------------------- the command line


def test_json_output_has_the_promised_keys(capsys):
    args = ["--gpu", "v100", "--gpus", "64", "--gpus-per-node", "8", "--global-batch", "4096", "--epochs", "90"]
    code, out, _ = run(*args, "--inter-node-gbps", "100", "--wire-dtype", "bf16", "--json", capsys=capsys)
    assert code == 0
    doc = json.loads(out)
    for key in ("time_to_train_s", "step_time_s", "scaling_efficiency", "allreduce", "epoch_time_s", "recommended"):
        assert key in doc
    assert doc["allreduce"]["wire_dtype"] == "bf16" and doc["allreduce"]["algorithm"] in (
        "ring",
        "tree",
        "hierarchical",
    )
    assert doc["nodes"] == 8 and doc["batch_per_gpu"] == 64 and doc["gpu"] == "v100"
    assert doc["time_to_train_s"] == pytest.approx(90 * doc["epoch_time_s"])


def test_text_output_names_every_figure(capsys):
    code, out, _ = run("--gpu", "h200", "--gpus", "16", capsys=capsys)
    assert code == 0
    for words in ("step", "epoch", "time to train", "scaling efficiency", "advice:", "H200"):
        assert words in out


def test_calibration_from_bench_hosts_results(tmp_path, capsys):
    results = {"topologies": {
        "2x2": {"calibration": {"alpha_s": 1e-3, "inter_node_gbps": 0.9, "world": 4}},
        "4x2": {"calibration": {"alpha_s": 8e-4, "inter_node_gbps": 0.95, "world": 8}},
    }}  # fmt: skip
    f = tmp_path / "hosts.json"
    f.write_text(json.dumps(results))
    assert read_calibration(str(f)) == {"alpha_s": 8e-4, "inter_node_gbps": 0.95, "from": str(f)}
    code, out, _ = run("--gpu", "a100", "--gpus", "8", "--gpus-per-node", "2", "--calibrate", str(f), "--json",
                       capsys=capsys)  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and doc["inter_node_gbps"] == 0.95 and doc["inter_node_alpha_s"] == 8e-4
    code, out, _ = run("--gpus", "8", "--calibrate", str(f), "--inter-node-gbps", "25", "--json", capsys=capsys)
    assert json.loads(out)["inter_node_gbps"] == 25  # an explicit flag wins


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus", "0"], "--gpus must be a positive integer, got 0"),
        (["--gpus", "3", "--global-batch", "100"], "--global-batch 100 is not divisible by --gpus 3"),
        (["--gpu", "x100"], "--gpu 'x100': unknown GPU; known: p100, p100-pcie, v100, a100, h100, h200"),
        (["--inter-node-gbps", "-10"], "--inter-node-gbps must be > 0, got -10"),
        (["--intra-node-gbps", "0"], "--intra-node-gbps must be > 0, got 0"),
        (["--gpus", "12", "--gpus-per-node", "8"], "--gpus 12 is not divisible by --gpus-per-node 8"),
        (["--epochs", "0"], "--epochs must be > 0, got 0"),
        (["--wire-dtype", "int8"], "--wire-dtype must be one of fp32, bf16, fp16, got 'int8'"),
        (["--calibrate", "/nonexistent/x.json"], "--calibrate /nonexistent/x.json: cannot read it"),
        (["--gpus", "two"], "argument --gpus: invalid int value: 'two'"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "fastres.plan", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_calibration_file_without_a_calibration_is_named(tmp_path, capsys):
    f = tmp_path / "x.json"
    f.write_text('{"topologies": {}}')
    code, _, err = run("--calibrate", str(f), capsys=capsys)
    assert code == 2 and "no calibration in it" in err and len(err.strip().splitlines()) == 1
