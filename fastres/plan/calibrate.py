"""The declared calibration: which published run sets which speed, and the speeds it gives.

RECIPES (fastres.plan.speed.Recipe) read only runs in fastres.plan.records.CALIBRATION; every
constant the planner uses for a device's compute is computed here, at import, from those runs:

  p100-tf           TensorFlow's table, 1 x P100 fp32 at batch 64 and 32: R and t0 of the CUDA-core path
  p100-pcie-tf      p100-tf carried over by the data sheets (SCALE, below); same b_half
  p40-tf            p100-tf carried over by the data sheets; same b_half (assumed: same path)
  p100-caffe2       Goyal et al.'s one-server baseline (8 P100, 29 h) for R; b_half from p100-tf
  a100-mlperf       MLPerf v2.0 DGX A100: one node (408 per GPU) and eight nodes (51 per GPU), same software
  h100-mlperf       MLPerf v4.0 Eos: one node (400 per GPU) and eight nodes (50 per GPU), same software
  h200-mlperf       MLPerf v4.0 HGX H200, one node, for R; b_half from h100-mlperf (same compute die)
  v100-sxm3-mlperf  MLPerf v0.7 DGX-2H: one node (208 per GPU) and 32 nodes (65 per GPU), same software
                    (no eight-node V100 run was published in v0.6-v0.7; the 32-node one is the nearest)
  v100-mlperf       MLPerf v0.7 DGX-1, one node, for R; b_half from v100-sxm3-mlperf (same V100 chip)
  a100-tf32-dle     DeepLearningExamples MXNet table, 1 x A100 TF32 at 512 per GPU; b_half from p100-tf
  v100-fp32-dle     DeepLearningExamples MXNet table, 1 x V100 FP32 at 96 per GPU; b_half from p100-tf
  tpu-v3-mlperf     MLPerf v0.5 TPU v3-8 (one host) for R; b_half from a100-mlperf (assumed)
  xeon-8180-mlperf  MLPerf v0.5 Intel, one node of 2 x Xeon 8180, for R per socket; t0 = the optimizer's
                    pass over the parameters at the socket's memory bandwidth (CPU_T0, below)
  xeon-8160, xeon-phi-7250
                    xeon-8180-mlperf carried over by the data sheets (cores x base clock x 64 FLOP,
                    DRAM / MCDRAM bandwidth); t0 from their own memory bandwidth

SCALE: a device with no published run of its own takes a calibrated sibling's time per image,
split into the share that moves activations (ACTIVATION_ELEMENTS x PASSES elements of 4 bytes
(fp32) or 2 (mixed) at the sibling's data-sheet memory bandwidth) and the rest (compute), and
scales the first by the memory bandwidths and the second by the peak FLOP/s of the data sheets.

A calibration run's step time is what its source states; the model's own all-reduce for that
run is subtracted (iterated, since the overlap depends on the compute it is solving for) so
that R and t0 describe compute alone. `--calibrate-cpu` adds a speed measured on the machine at
hand (fastres.plan.cpu).
"""

from __future__ import annotations

from dataclasses import replace

from fastres.plan.cost import RESNET50_PARAMS, Cluster, Job, estimate
from fastres.plan.devices import DEVICES, DeviceSpec
from fastres.plan.records import CALIBRATION, Run
from fastres.plan.scenario import Scenario, build
from fastres.plan.speed import Recipe, Speed, fit_one, fit_pair

__all__ = [
    "CPU_T0_BYTES_PER_PARAM",
    "DEFAULT_SPEED",
    "RECIPES",
    "SPEEDS",
    "cluster_for",
    "compute_speeds",
    "cpu_t0",
    "default_speed",
    "job_for",
    "scenario_for",
    "speed_for",
]

# A momentum (or LARS) step reads w, g, m and writes w, m: 5 x 4 bytes per fp32 parameter (assumed
# to be all a CPU step spends outside the images: the optimizer pass at DRAM bandwidth).
CPU_T0_BYTES_PER_PARAM = 5 * 4
# Inputs + outputs of every leaf module of fastres.model.resnet50 for one 224-px image, forward
# (counted with forward hooks; tests/test_plan.py recounts it); backward moves about twice as
# much (assumed, as its FLOPs), so a training step moves PASSES times that per image.
ACTIVATION_ELEMENTS = 64_330_728
PASSES = 3

RECIPES: list[Recipe] = [
    Recipe("p100-tf", "p100", "fp32", "pair", large="tf-p100-b64", small="tf-p100-b32"),
    Recipe("p100-pcie-tf", "p100-pcie", "fp32", "scale", scale_from="p100-tf"),
    Recipe("p40-tf", "p40", "fp32", "scale", scale_from="p100-tf"),
    Recipe("p100-caffe2", "p100", "fp32", "one", large="goyal-8gpu", half_batch_from="p100-tf"),
    Recipe("a100-mlperf", "a100", "mixed", "pair", large="mlperf-v2.0-dgxa100", small="mlperf-v2.0-dgxa100-n8"),
    Recipe("h100-mlperf", "h100", "mixed", "pair", large="mlperf-v4.0-eos", small="mlperf-v4.0-eos-n8"),
    Recipe("h200-mlperf", "h200", "mixed", "one", large="mlperf-v4.0-h200", half_batch_from="h100-mlperf"),
    Recipe("v100-sxm3-mlperf", "v100-sxm3", "mixed", "pair", large="mlperf-v0.7-dgx2h", small="mlperf-v0.7-dgx2h-n32"),
    Recipe("v100-mlperf", "v100", "mixed", "one", large="mlperf-v0.7-dgx1", half_batch_from="v100-sxm3-mlperf"),
    Recipe("tpu-v3-mlperf", "tpu-v3", "mixed", "one", large="mlperf-v0.5-tpu-v3-8", half_batch_from="a100-mlperf"),
    Recipe("a100-tf32-dle", "a100", "fp32", "one", large="dle-a100-tf32", half_batch_from="p100-tf"),
    Recipe("v100-fp32-dle", "v100", "fp32", "one", large="dle-v100-fp32", half_batch_from="p100-tf"),
    Recipe("xeon-8180-mlperf", "xeon-8180", "fp32", "cpu", large="mlperf-v0.5-intel-2s"),
    Recipe("xeon-8160", "xeon-8160", "fp32", "scale", scale_from="xeon-8180-mlperf"),
    Recipe("xeon-phi-7250", "xeon-phi-7250", "fp32", "scale", scale_from="xeon-8180-mlperf"),
]

# (device, precision) -> the recipe `python -m fastres.plan --device X` uses.
DEFAULT_SPEED: dict[tuple[str, str], str] = {
    ("p100", "fp32"): "p100-tf",
    ("p100-pcie", "fp32"): "p100-pcie-tf",
    ("p40", "fp32"): "p40-tf",
    ("v100", "mixed"): "v100-mlperf",
    ("v100-sxm3", "mixed"): "v100-sxm3-mlperf",
    ("a100", "mixed"): "a100-mlperf",
    ("h100", "mixed"): "h100-mlperf",
    ("h200", "mixed"): "h200-mlperf",
    ("a100", "fp32"): "a100-tf32-dle",
    ("v100", "fp32"): "v100-fp32-dle",
    ("tpu-v3", "mixed"): "tpu-v3-mlperf",
    ("xeon-8180", "fp32"): "xeon-8180-mlperf",
    ("xeon-8160", "fp32"): "xeon-8160",
    ("xeon-phi-7250", "fp32"): "xeon-phi-7250",
}


def cpu_t0(device: DeviceSpec) -> float:
    return RESNET50_PARAMS * CPU_T0_BYTES_PER_PARAM / (device.memory_gbs * 1e9)


def _peak(device: DeviceSpec, precision: str) -> float:
    return device.mixed_tflops if precision == "mixed" and device.tensor_cores else device.fp32_tflops


def memory_seconds_per_image(device: DeviceSpec, precision: str) -> float:
    """Activation traffic of one training image at the data-sheet memory bandwidth."""
    elem_bytes = 2 if precision == "mixed" else 4
    return PASSES * ACTIVATION_ELEMENTS * elem_bytes / (device.memory_gbs * 1e9)


def scaled_rate(rate: float, src: DeviceSpec, dst: DeviceSpec, precision: str) -> float:
    """SCALE: `rate` measured on `src`, carried over to `dst` by their data sheets."""
    t_image = 1 / rate
    t_mem = min(0.9 * t_image, memory_seconds_per_image(src, precision))
    t_comp = t_image - t_mem
    t_dst = t_comp * _peak(src, precision) / _peak(dst, precision) + t_mem * src.memory_gbs / dst.memory_gbs
    return 1 / t_dst


def scenario_for(run: Run, speed: Speed) -> Scenario:
    """A published run's inputs, as the command line would take them (fastres.plan.scenario)."""
    return Scenario(
        device=DEVICES[run.device],
        devices=run.devices,
        per_node=run.per_node,
        global_batch=run.global_batch,
        speed=speed,
        epochs=run.epochs,
        evals=run.evals,
        precision=run.precision,
        allreduce=run.allreduce,
        wire_dtype=run.wire_dtype,
        bucket_mb=run.bucket_mb,
        overlap=run.overlap,
        inter_gbps=run.inter_gbps or None,
        backend=run.backend,
    )


def cluster_for(run: Run, speed: Speed) -> Cluster:
    """The cluster a published run ran on, as the model sees it."""
    return build(scenario_for(run, speed))[0]


def job_for(run: Run) -> Job:
    return build(scenario_for(run, Speed(1.0, 0.0, "")))[1]


def _step_seconds(run: Run) -> float:
    if run.kind == "step":
        return run.published_s
    if run.kind == "time" and not run.evals:
        return run.published_s / (run.epochs * run.steps_per_epoch)
    raise ValueError(f"{run.key}: a calibration run needs a step figure or a time without evaluations")


def _compute_seconds(run: Run, guess: Speed) -> float:
    """The run's stated step less the all-reduce the model adds to it at speed `guess`."""
    est = estimate(cluster_for(run, guess), job_for(run))
    return _step_seconds(run) - est.exposed_allreduce_s


def _batch(run: Run) -> float:
    return run.global_batch / run.devices


def compute_speeds(runs: list[Run] = CALIBRATION, recipes: list[Recipe] = RECIPES) -> dict[str, Speed]:
    """Every recipe's Speed, from `runs` (which must all be calibration runs) only."""
    by_key = {r.key: r for r in runs}
    for r in runs:
        if r.role != "calibration":
            raise ValueError(f"{r.key} is a {r.role} run: it cannot set a constant")
    speeds: dict[str, Speed] = {}
    for rec in recipes:
        dev = DEVICES[rec.device]
        if rec.how == "scale":
            src = speeds[rec.scale_from]
            src_dev = DEVICES[next(x.device for x in recipes if x.name == rec.scale_from)]
            rate = scaled_rate(src.rate, src_dev, dev, rec.precision)
            t0 = cpu_t0(dev) if dev.is_cpu else src.half_batch / rate
            how = (
                f"{rec.scale_from} carried over by data sheets: {_peak(dev, rec.precision):g} vs "
                f"{_peak(src_dev, rec.precision):g} TFLOP/s, {dev.memory_gbs:g} vs {src_dev.memory_gbs:g} GB/s"
            )
            speeds[rec.name] = Speed(rate, t0, how)
            continue
        large = by_key[rec.large]
        b1 = _batch(large)
        guess = Speed(b1 / _step_seconds(large), 0.0, "")
        for _ in range(6):  # the overlap term depends on the speed being solved for
            t1 = _compute_seconds(large, guess)
            if rec.how == "pair":
                small = by_key[rec.small]
                rate, t0 = fit_pair(b1, t1, _batch(small), _compute_seconds(small, guess))
                how = f"pair: {rec.large} ({b1:g}/device) and {rec.small} ({_batch(small):g}/device)"
            elif rec.how == "one":
                rate, t0 = fit_one(b1, t1, speeds[rec.half_batch_from].half_batch)
                how = f"{rec.large} ({b1:g}/device), b_half from {rec.half_batch_from}"
            elif rec.how == "cpu":
                t0 = cpu_t0(dev)
                rate = b1 / (t1 - t0)
                how = f"{rec.large} ({b1:g}/socket), t0 = optimizer pass at {dev.memory_gbs:g} GB/s"
            else:
                raise ValueError(f"recipe {rec.name}: unknown method {rec.how!r}")
            guess = Speed(rate, t0, how)
        speeds[rec.name] = guess
    return speeds


SPEEDS: dict[str, Speed] = compute_speeds()


def default_speed(device: str, precision: str) -> Speed:
    """The speed `--device` uses; KeyError when no calibrated speed exists for that compute path."""
    return SPEEDS[DEFAULT_SPEED[(device, precision)]]


def speed_for(run: Run) -> Speed:
    return SPEEDS[run.speed] if run.speed else default_speed(run.device, run.precision)


def with_speed(run: Run, name: str) -> Run:
    return replace(run, speed=name)
