"""`python -m fastres.plan`: the model's formulas, its calibration, the published runs, the CLI, its bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fastres.plan import DEVICES, GPUS, Cluster, Job, Speed, estimate, lookup_device
from fastres.plan.allreduce import NCCL_BASE_S, TREE_BW, allreduce_seconds
from fastres.plan.calibrate import (
    ACTIVATION_ELEMENTS,
    RECIPES,
    SPEEDS,
    compute_speeds,
    cpu_t0,
    default_speed,
)
from fastres.plan.choose import recommend
from fastres.plan.cli import main, read_calibration
from fastres.plan.cost import RESNET50_PARAMS
from fastres.plan.cpu import cpu_device
from fastres.plan.records import BAND, CALIBRATION, RUNS, VALIDATION, run_by_key
from fastres.plan.speed import fit_one, fit_pair
from fastres.plan.validate import check, checks, law_summary, validation_table

ROOT = Path(__file__).resolve().parent.parent
SPEED = Speed(3000.0, 4e-3, "test")


def cluster(devices=16, per_node=8, intra=800.0, inter=100.0, **kw) -> Cluster:
    return Cluster(device=lookup_device("a100"), devices=devices, per_node=per_node, intra_gbps=intra,
                   inter_gbps=inter, speed=kw.pop("speed", SPEED), **kw)  # fmt: skip


def run(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- devices and the all-reduce


def test_device_table_has_gpus_tpu_and_cpus_with_data_sheet_figures():
    assert {"p100", "p40", "v100", "a100", "h100", "h200", "tpu-v3", "xeon-8160", "xeon-phi-7250"} <= set(DEVICES)
    assert DEVICES["h100"].mixed_tflops == DEVICES["h200"].mixed_tflops == 989  # same compute, dense
    assert DEVICES["h200"].memory_gbs > DEVICES["h100"].memory_gbs > DEVICES["a100"].memory_gbs
    assert not DEVICES["p100"].tensor_cores and DEVICES["v100"].tensor_cores
    assert DEVICES["xeon-8160"].fp32_tflops == pytest.approx(24 * 2.1 * 64 / 1000)  # cores x base GHz x 64 FLOP
    assert DEVICES["xeon-phi-7250"].fp32_tflops == pytest.approx(68 * 1.4 * 64 / 1000)
    assert set(GPUS) == {k for k, d in DEVICES.items() if d.kind == "gpu"}


def test_ring_tree_hierarchical_and_2d_torus_formulas():
    s, a_in, a_tree, a_out, base = 100e6, 3.4e-6, 4.0e-6, 14e-6, NCCL_BASE_S
    b_in, b_out = 800e9 / 8, 100e9 / 8
    one = cluster(devices=8, per_node=8)
    for alg in ("ring", "tree", "flat", "hierarchical", "2d-torus"):  # one node: the ring inside it
        assert allreduce_seconds(one, s, alg) == pytest.approx(base + 14 * a_in + 2 * 7 / 8 * s / b_in)
    c = cluster(devices=32, per_node=8)  # 4 nodes x 8
    ring = base + (62 - 6) * a_in + 6 * a_out + 2 * 31 / 32 * s / b_out
    tree = base + 2 * (7 * a_tree + 2 * a_out) + 2 * s / (TREE_BW * b_out)
    assert allreduce_seconds(c, s, "ring") == pytest.approx(ring)
    assert allreduce_seconds(c, s, "tree") == pytest.approx(tree)
    assert allreduce_seconds(c, s, "flat") == pytest.approx(min(ring, tree))  # NCCL's rule
    node_phase = base + 7 * a_in + 7 / 8 * s / b_in
    across_ring = base + 6 * a_out + 2 * 3 / 4 * (s / 8) / (b_out / 8)
    across_tree = base + 2 * 2 * a_out + 2 * (s / 8) / (TREE_BW * b_out / 8)
    assert allreduce_seconds(c, s, "hierarchical") == pytest.approx(2 * node_phase + min(across_ring, across_tree))
    assert allreduce_seconds(c, s, "2d-torus") == pytest.approx(2 * node_phase + across_ring)  # Y is always a ring
    gloo = replace(c, backend="gloo")  # Gloo: rings only
    assert allreduce_seconds(gloo, s, "flat") == pytest.approx(ring)
    assert allreduce_seconds(gloo, s, "hierarchical") == pytest.approx(2 * node_phase + across_ring)
    assert allreduce_seconds(cluster(devices=1, per_node=1), s, "ring") == 0.0
    with pytest.raises(ValueError, match="algorithm must be one of"):
        allreduce_seconds(c, s, "butterfly")


def test_torus_of_single_device_nodes_is_square_and_tree_wins_at_scale():
    pod = cluster(devices=1024, per_node=1, inter=560)  # one GPU per node on a switched network, as a 32 x 32 grid
    s, b, base = 50e6, 560e9 / 8, NCCL_BASE_S
    along = base + 31 * pod.inter_alpha_s + 31 / 32 * s / b
    across = base + 62 * pod.inter_alpha_s + 2 * 31 / 32 * (s / 32) / b
    assert allreduce_seconds(pod, s, "2d-torus") == pytest.approx(2 * along + across)
    big = cluster(devices=4096, per_node=8, inter=400)
    assert allreduce_seconds(big, 1e6, "ring") > 10 * allreduce_seconds(big, 1e6, "tree")  # 2(N-1) vs 2 log2 K steps


def test_a_tpu_pod_is_a_torus_of_four_links_per_chip_where_2d_torus_beats_the_ring(capsys):
    tpu = lookup_device("tpu-v3")  # Cloud TPU v3: 340 TB/s of all-reduce bandwidth per pod of 1,024 chips
    assert tpu.torus_links == 4 and tpu.intra_node_gbs * 4 * 1024 == pytest.approx(340e3, rel=0.01)
    pod = Cluster(device=tpu, devices=1024, per_node=4, intra_gbps=83 * 8, inter_gbps=1, speed=SPEED,
                  inter_alpha_s=3.4e-6, torus_links=4)  # fmt: skip
    s, a, base, b = 25e6, 3.4e-6, NCCL_BASE_S, 2 * 83e9  # a dimension's ring runs over both of its links
    along = base + 31 * a + 31 / 32 * s / b
    across = base + 62 * a + 2 * 31 / 32 * (s / 32) / b
    assert allreduce_seconds(pod, s, "2d-torus") == pytest.approx(2 * along + across)
    assert allreduce_seconds(pod, s, "ring") == pytest.approx(base + 2046 * a + 2 * 1023 / 1024 * s / b)
    assert allreduce_seconds(pod, s, "2d-torus") < allreduce_seconds(pod, s, "ring") / 4
    assert allreduce_seconds(replace(pod, per_node=1), s, "2d-torus") == allreduce_seconds(pod, s, "2d-torus")
    for algorithm in ("tree", "flat", "hierarchical"):  # no switch, no node between the chips
        with pytest.raises(ValueError, match="no switch"):
            allreduce_seconds(pod, s, algorithm)
    code, out, _ = run("--device", "tpu-v3", "--devices", "1024", "--global-batch", "32768", "--json", capsys=capsys)
    doc = json.loads(out)
    assert code == 0 and doc["allreduce"]["algorithm"] == "2d-torus" and doc["bound"] == "compute"


# Seconds per epoch in a steady 4-epoch block of the v0.6 TPU pod runs (block_start to block_stop, one
# evaluation included; the median over the blocks after the first, then over the five logs of
# mlcommons/training_results_v0.6 Google/results/tpu-v3-<cores>/resnet/result_*.txt).
V06_TPU_EPOCH_S = {32: 41.0302, 128: 10.2430, 256: 5.3273, 512: 3.0893, 1024: 1.7299, 2048: 0.9870}


def test_tpu_pod_steps_are_compute_bound_as_the_published_logs_show():
    for cores, seconds in V06_TPU_EPOCH_S.items():
        e = check(run_by_key(f"mlperf-v0.6-tpu-v3-{cores}")).estimate
        assert e.bound == "compute" and e.exposed_allreduce_s < 0.15 * e.step_time_s, cores
        assert (e.epoch_time_s + e.eval_s / 4) / seconds == pytest.approx(1, abs=0.10), cores


def test_hierarchical_beats_the_flat_ring_by_the_bytes_on_a_slow_link():
    slow = replace(cluster(devices=8, per_node=2, intra=800, inter=1), backend="gloo")
    ratio = allreduce_seconds(slow, 102e6, "flat") / allreduce_seconds(slow, 102e6, "hierarchical")
    assert ratio == pytest.approx((2 * 7 / 8) / (2 * 3 / 4), rel=0.02)  # 1.75 S vs 1.5 S on each node's link


# ----------------------------------------------------------------------------- speed and its calibration


def test_speed_fits_recover_rate_and_t0():
    true = Speed(2000.0, 5e-3, "")
    assert fit_pair(256, true.step_s(256), 32, true.step_s(32)) == pytest.approx((2000.0, 5e-3))
    assert fit_one(256, true.step_s(256), true.half_batch) == pytest.approx((2000.0, 5e-3))
    assert true.half_batch == pytest.approx(10) and true.images_per_s(10) == pytest.approx(1000)
    with pytest.raises(ValueError, match="negative t0"):
        fit_pair(64, 0.1, 32, 0.02)  # more than linear in the batch


def test_tf_p100_table_calibrates_the_cuda_core_path():
    p100 = SPEEDS["p100-tf"]  # 219 img/s at 64, 195 at 32, one GPU, nothing sent
    assert p100.images_per_s(64) == pytest.approx(219) and p100.images_per_s(32) == pytest.approx(195)
    assert p100.half_batch == pytest.approx(9.0, abs=0.1)
    for name in ("a100-mlperf", "h100-mlperf", "v100-sxm3-mlperf"):  # tensor cores need bigger batches to fill
        assert 12 < SPEEDS[name].half_batch < 30


def test_only_calibration_runs_set_constants():
    keys = {r.key for r in CALIBRATION}
    used = {k for rec in RECIPES for k in (rec.large, rec.small) if k}
    assert used <= keys and not used & {r.key for r in VALIDATION}
    assert all(r.role == "calibration" for r in CALIBRATION) and all(r.role == "validation" for r in VALIDATION)
    with pytest.raises(ValueError, match="cannot set a constant"):
        compute_speeds([*CALIBRATION, VALIDATION[0]])
    # every calibration run feeds its recipe: change its figure and that speed moves
    for key in used:
        moved = [replace(r, published_s=r.published_s * 1.1) if r.key == key else r for r in CALIBRATION]
        speeds = compute_speeds(moved)
        assert any(speeds[n].rate != pytest.approx(SPEEDS[n].rate, rel=1e-6) for n in SPEEDS), key


def test_calibration_runs_are_reproduced():
    for r in CALIBRATION:
        assert check(r).ratio == pytest.approx(1.0, rel=1e-3), r.key


def test_activation_count_matches_fastres_model():
    torch = pytest.importorskip("torch")
    from fastres.model import resnet50

    net = resnet50(num_classes=1000).eval()
    total = [0]

    def hook(module, inputs, output):
        if not list(module.children()):
            total[0] += sum(t.numel() for t in inputs if torch.is_tensor(t)) + output.numel()

    for m in net.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(1, 3, 224, 224))
    assert total[0] == ACTIVATION_ELEMENTS
    assert sum(p.numel() for p in net.parameters()) == RESNET50_PARAMS


# ----------------------------------------------------------------------------- the published runs


def test_every_validation_run_stays_in_its_band():
    for c in checks(VALIDATION):
        r = c.run
        assert abs(c.ratio - 1) <= r.band, f"{r.key}: predicted / published {c.ratio:.2f} left its band {r.band}"
        if r.band > BAND:  # a wider band is an explained miss, and the README says what was measured
            assert r.explained, r.key


def test_explained_misses_are_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for r in VALIDATION:
        if r.band > BAND:
            assert f"`{r.key}`" in readme, f"README.md does not explain {r.key}"


def test_validation_covers_the_issue_s_runs():
    keys = {r.key for r in VALIDATION}
    assert len(VALIDATION) >= 12 and len(CALIBRATION) >= 5
    for key in ("goyal-2017", "akiba-2017", "you-2017-skylake", "you-2017-knl", "jia-2018", "mikami-2018",
                "yamazaki-2019", "ying-2018", "mlperf-v3.1-coreweave-n448"):  # fmt: skip
        assert key in keys
    mlperf = [
        r for r in VALIDATION if r.key.startswith("mlperf-") and r.device in ("v100", "v100-sxm3", "a100", "h100")
    ]
    for lo, hi in ((1, 1), (10, 99), (100, 10_000)):  # one node, tens of nodes, hundreds of nodes
        rounds = {r.key.split("-")[1] for r in mlperf if lo <= r.nodes <= hi}
        assert len(rounds) >= 3, (lo, hi, rounds)
    assert run_by_key("mlperf-v3.1-coreweave-n448").published_s == pytest.approx(10.98, abs=0.01)
    assert run_by_key("akiba-2017").inter_gbps == 2 * 56  # two FDR ports per MN-1 node


def test_readme_shows_the_table_validate_prints():
    assert validation_table() in (ROOT / "README.md").read_text()


def test_validation_table_marks_roles_and_names_sources():
    table = validation_table().splitlines()
    assert len(table) == 2 + len(RUNS)
    for r, line in zip(RUNS, table[2:]):
        c = check(r)
        assert line.startswith(f"| {r.role} | {r.name} |") and f"| {c.ratio:.2f}" in line and r.source in line


# ----------------------------------------------------------------------------- the model


def test_step_epoch_evals_and_time_to_train_are_consistent():
    c = cluster(devices=64, per_node=8, inter=200)
    e = estimate(c, Job(global_batch=4096, epochs=90, wire_dtype="bf16", evals=10))
    assert e.steps_per_epoch == math.ceil(1_281_167 / 4096)
    assert e.epoch_time_s == pytest.approx(e.steps_per_epoch * e.step_time_s)
    assert e.compute_s == pytest.approx(64 / 3000 + 4e-3)
    assert e.eval_s == pytest.approx(50_000 / 64 / (3 * 3000) + 4e-3)
    assert e.time_to_train_s == pytest.approx(90 * e.epoch_time_s + 10 * e.eval_s)
    assert 0 < e.scaling_efficiency <= 1 and e.step_time_s >= e.compute_s
    solo = estimate(cluster(devices=1, per_node=1), Job(global_batch=64, epochs=1))
    assert solo.allreduce_s == 0 and solo.scaling_efficiency == 1


def test_more_bandwidth_never_slows_a_16_bit_wire_halves_the_bytes_and_overlap_hides():
    job = Job(global_batch=8192, epochs=1, allreduce="ring", overlap=False)
    times = [estimate(cluster(devices=128, inter=g), job).step_time_s for g in (10, 25, 100, 400)]
    assert times == sorted(times, reverse=True)
    c = cluster(devices=16, per_node=8, intra=1e6, inter=1, inter_alpha_s=0, intra_alpha_s=0, base_s=0)
    fp32 = estimate(c, Job(global_batch=1024, epochs=1, allreduce="ring", wire_dtype="fp32", overlap=False))
    bf16 = estimate(c, Job(global_batch=1024, epochs=1, allreduce="ring", wire_dtype="bf16", overlap=False))
    assert bf16.allreduce_s == pytest.approx(fp32.allreduce_s / 2, rel=1e-3)
    assert fp32.allreduce_s == pytest.approx(2 * 15 / 16 * RESNET50_PARAMS * 4 / (1e9 / 8), rel=1e-3)
    hidden = estimate(cluster(inter=100), Job(global_batch=4096, epochs=1))
    shown = estimate(cluster(inter=100), Job(global_batch=4096, epochs=1, overlap=False))
    assert shown.step_time_s == pytest.approx(shown.compute_s + shown.allreduce_s)
    assert hidden.step_time_s < shown.step_time_s


def test_the_data_loader_can_bound_the_step():
    e = estimate(cluster(devices=8, per_node=8, data_images_per_s_per_node=1000), Job(global_batch=512, epochs=1))
    assert e.bound == "data" and e.step_time_s == pytest.approx(512 / 1000)


def test_advice_picks_the_fastest_and_a_16_bit_wire_only_when_it_pays():
    slow = cluster(devices=64, per_node=8, inter=10)
    job, est = recommend(slow, Job(global_batch=2048, epochs=1))
    assert job.wire_dtype == "bf16"  # a 10 Gbit/s network: halving the bytes pays
    for algorithm in ("ring", "tree", "flat", "hierarchical", "2d-torus"):
        for wire in ("fp32", "bf16"):
            other = estimate(slow, Job(global_batch=2048, epochs=1, allreduce=algorithm, wire_dtype=wire))
            assert est.step_time_s <= other.step_time_s + 1e-12
    assert recommend(cluster(devices=8, per_node=8), Job(global_batch=2048, epochs=1))[0].wire_dtype == "fp32"


# ----------------------------------------------------------------------------- the command line


def test_json_output_has_the_promised_keys_under_old_and_new_flags(capsys):
    args = ["--gpu", "v100", "--gpus", "64", "--gpus-per-node", "8", "--global-batch", "4096", "--epochs", "90"]
    code, out, _ = run(*args, "--inter-node-gbps", "100", "--wire-dtype", "bf16", "--json", capsys=capsys)
    assert code == 0
    doc = json.loads(out)
    for key in ("time_to_train_s", "step_time_s", "scaling_efficiency", "allreduce", "epoch_time_s", "recommended"):
        assert key in doc
    assert doc["allreduce"]["wire_dtype"] == "bf16"
    assert doc["nodes"] == 8 and doc["batch_per_gpu"] == doc["batch_per_device"] == 64 and doc["gpu"] == "v100"
    assert doc["time_to_train_s"] == pytest.approx(90 * doc["epoch_time_s"])
    assert doc["speed"]["images_per_s_large_batch"] == pytest.approx(default_speed("v100", "mixed").rate)
    code, out2, _ = run("--device", "v100", "--devices", "64", "--devices-per-node", "8", "--global-batch", "4096",
                        "--inter-node-gbps", "100", "--wire-dtype", "bf16", "--epochs", "90", "--json",
                        capsys=capsys)  # fmt: skip
    assert json.loads(out2) == doc


def test_text_output_and_the_cpu_devices(capsys):
    code, out, _ = run("--device", "h200", "--devices", "16", capsys=capsys)
    assert code == 0
    for words in ("step", "epoch", "time to train", "scaling efficiency", "advice:", "H200", "speed:"):
        assert words in out
    code, out, _ = run("--device", "xeon-phi-7250", "--devices", "2048", "--global-batch", "32768", "--json",
                       capsys=capsys)  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and doc["precision"] == "fp32" and doc["nodes"] == 2048


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


def test_calibrate_cpu_from_a_measurement_and_from_bench_train(tmp_path, capsys):
    measured = tmp_path / "cpu.json"
    measured.write_text(json.dumps({"images_per_s_per_core": 2.0, "image_size": 224, "t0_s": 0.05}))
    args = ["--device", "cpu", "--calibrate-cpu", str(measured), "--cores-per-device", "32", "--devices", "4"]
    code, out, _ = run(*args, "--devices-per-node", "2", "--global-batch", "256", "--json", capsys=capsys)
    doc = json.loads(out)
    assert code == 0 and doc["speed"]["images_per_s_large_batch"] == pytest.approx(64)
    assert doc["speed"]["t0_s"] == 0.05
    assert doc["compute_s"] == pytest.approx(64 / 64 + 0.05)
    bench = tmp_path / "train-cpu.json"
    bench.write_text(json.dumps({"ceiling": {"fp32 channels_last": 100.0}, "setup": {"image_size": 112},
                                 "machine": {"cores": 2}}))  # fmt: skip
    code, out, _ = run("--device", "cpu", "--calibrate-cpu", str(bench), "--cores-per-device", "8", "--json",
                       capsys=capsys)  # fmt: skip
    doc = json.loads(out)
    assert doc["speed"]["images_per_s_large_batch"] == pytest.approx(100 / 2 / 4 * 8)  # per core, per pixel
    assert doc["speed"]["t0_s"] == pytest.approx(cpu_t0(cpu_device(8)))


def test_measure_cpu_fits_a_rate_and_t0(tmp_path):
    pytest.importorskip("torch")
    from fastres.plan.cpu import measure

    # 22 images apart: their time (about 0.4 s here) stands well above a busy box's noise
    doc = measure(batches=(2, 24), image_size=32, threads=1, reps=2, arch="resnet18")
    assert doc["images_per_s_per_core"] > 0 and doc["t0_s"] >= 0 and set(doc["step_seconds"]) == {"2", "24"}
    b1, b2 = doc["step_seconds"]["2"], doc["step_seconds"]["24"]
    assert doc["images_per_s_per_core"] == pytest.approx(22 / (b2 - b1))
    assert len(doc["load_average_1min"]) == 2  # before and after: how busy the machine was


def test_validate_prints_the_table(capsys):
    code, out, _ = run("--validate", capsys=capsys)
    assert code == 0 and out.strip() == validation_table() + "\n\n" + law_summary()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus", "0"], "--devices must be a positive integer, got 0"),
        (["--gpus", "3", "--global-batch", "100"], "--global-batch 100 is not divisible by --devices 3"),
        (["--gpu", "x100"], "--device 'x100': unknown device; known: p100, p100-pcie, p40, v100"),
        (["--inter-node-gbps", "-10"], "--inter-node-gbps must be > 0, got -10"),
        (["--intra-node-gbps", "0"], "--intra-node-gbps must be > 0, got 0"),
        (["--gpus", "12", "--gpus-per-node", "8"], "--devices 12 is not divisible by --devices-per-node 8"),
        (["--epochs", "0"], "--epochs must be > 0, got 0"),
        (["--wire-dtype", "int8"], "--wire-dtype must be one of fp32, bf16, fp16, got 'int8'"),
        (["--calibrate", "/nonexistent/x.json"], "--calibrate /nonexistent/x.json: cannot read it"),
        (["--gpus", "two"], "argument --devices/--gpus: invalid int value: 'two'"),
        (["--device", "cpu"], "--device cpu needs --calibrate-cpu"),
        (["--calibrate-cpu", "x.json"], "--calibrate-cpu needs --device cpu"),
        (["--device", "cpu", "--calibrate-cpu", "/nonexistent.json"], "--calibrate-cpu /nonexistent.json: cannot read"),
        (["--device", "h100", "--precision", "fp32"], "--device h100 --precision fp32: no calibrated speed"),
        (["--allreduce", "butterfly"], "argument --allreduce: invalid choice: 'butterfly'"),
        (["--measure-cpu", "x.json", "--measure-batches", "8"], "--measure-batches must be two different positive"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "fastres.plan", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_calibration_files_without_a_calibration_are_named(tmp_path, capsys):
    f = tmp_path / "x.json"
    f.write_text('{"topologies": {}}')
    code, _, err = run("--calibrate", str(f), capsys=capsys)
    assert code == 2 and "no calibration in it" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("--device", "cpu", "--calibrate-cpu", str(f), capsys=capsys)
    assert code == 2 and "neither --measure-cpu's images_per_s_per_core" in err
