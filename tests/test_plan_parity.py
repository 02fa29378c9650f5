"""One model for `python -m fastres.plan` and `--validate`: every published run's inputs, given to the command line
as flags, give the table's prediction; the defaults the command line fills in are --validate's."""

from __future__ import annotations

import json

import pytest

from fastres.plan.allreduce import NCCL_NET_STEP_S, NCCL_NVLINK_STEP_S, NCCL_PCIE_STEP_S
from fastres.plan.cli import main
from fastres.plan.records import RUNS, run_by_key
from fastres.plan.validate import check


def plan(argv: list[str], capsys) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def flags(run) -> list[str]:
    """The command line of a published run: what records.py states about it, nothing else."""
    argv = ["--device", run.device, "--devices", str(run.devices), "--devices-per-node", str(run.per_node),
            "--global-batch", str(run.global_batch), "--precision", run.precision, "--allreduce", run.allreduce,
            "--wire-dtype", run.wire_dtype, "--bucket-mb", repr(run.bucket_mb), "--backend", run.backend,
            "--json"]  # fmt: skip
    if run.inter_gbps:
        argv += ["--inter-node-gbps", repr(run.inter_gbps)]
    if not run.overlap:
        argv.append("--no-overlap")
    if run.speed:
        argv += ["--speed", run.speed]
    return argv


def test_every_published_run_through_the_command_line_gives_the_table_s_prediction(capsys):
    laws = 0
    for run in RUNS:
        c = check(run)
        doc = plan([*flags(run), "--epochs", repr(run.epochs), "--evals", repr(run.evals)], capsys)
        if run.kind == "step":
            assert doc["step_time_s"] == pytest.approx(c.predicted_s, rel=1e-9), run.key
        elif run.kind == "throughput":
            assert 1 / doc["images_per_s"] == pytest.approx(c.predicted_s, rel=1e-9), run.key
        else:
            assert doc["time_to_train_s"] == pytest.approx(c.predicted_s, rel=1e-9), run.key
        if c.law is not None:  # the second column: --recipe's law at the run's batch
            doc = plan([*flags(run), "--recipe", run.epochs_law], capsys)
            assert doc["epochs"] == pytest.approx(c.law.epochs) and doc["evals"] == c.law.evals, run.key
            assert doc["time_to_accuracy_s"] == pytest.approx(c.to_accuracy_s, rel=1e-9), run.key
            laws += 1
    assert laws >= 20


def test_the_command_line_s_defaults_are_validate_s(capsys):
    # a PCIe node: NCCL's PCIe ring step, as --validate models PFN's MN-1
    doc = plan(["--device", "p100-pcie", "--devices", "16", "--json"], capsys)
    assert doc["intra_node_alpha_s"] == NCCL_PCIE_STEP_S and doc["inter_node_alpha_s"] == NCCL_NET_STEP_S
    assert check(run_by_key("akiba-2017")).estimate.step_time_s > 0  # built by the same fastres.plan.scenario
    doc = plan(["--device", "h100", "--devices", "16", "--json"], capsys)
    assert doc["intra_node_alpha_s"] == NCCL_NVLINK_STEP_S
    # buckets: fastres's 25 MB unless asked, as a published run that states none
    doc = plan(["--device", "h100", "--devices", "64", "--allreduce", "ring", "--json"], capsys)
    assert doc["allreduce"]["bucket_mb"] == 25 == run_by_key("mlperf-v3.0-dgxh100-n8").bucket_mb
    # a TPU's ICI hop: the same latency in both
    doc = plan(["--device", "tpu-v3", "--devices", "64", "--devices-per-node", "1", "--json"], capsys)
    assert doc["inter_node_alpha_s"] == NCCL_NVLINK_STEP_S and doc["backend"] == "nccl"
