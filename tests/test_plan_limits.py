"""Sizes no run can have are refused by `python -m fastres.plan` (fastres.plan.limits), and every published run has
a size the rule allows."""

from __future__ import annotations

import pytest

from fastres.plan.calibrate import ACTIVATION_ELEMENTS
from fastres.plan.cli import main
from fastres.plan.cost import RESNET50_PARAMS
from fastres.plan.devices import DEVICES
from fastres.plan.limits import USABLE_MEMORY, max_batch_per_device, size_errors
from fastres.plan.records import RUNS


def test_the_memory_rule_by_hand_and_every_published_run_fits():
    # 80 GB H100, mixed: 90% of 80e9 less 25.6M x 14 bytes of state, over 32.2M activations x 2 bytes per image
    by_hand = (USABLE_MEMORY * 80e9 - RESNET50_PARAMS * 14) / (ACTIVATION_ELEMENTS / 2 * 2)
    assert max_batch_per_device(DEVICES["h100"], "mixed") == int(by_hand) == 1113
    assert max_batch_per_device(DEVICES["v100"], "fp32") < max_batch_per_device(DEVICES["v100"], "mixed")
    for r in RUNS:
        assert not size_errors(DEVICES[r.device], r.devices, r.global_batch, r.precision), r.key
    # the tightest published run sits close to the rule: it is no looser than it needs to be
    assert max(r.global_batch / r.devices / max_batch_per_device(DEVICES[r.device], r.precision) for r in RUNS) > 0.9


@pytest.mark.parametrize(
    "argv, messages",
    [
        (["--device", "h100", "--devices", "64", "--global-batch", "2560000"],
         ["40,000 images per device do not fit in a h100's 80 GB (mixed: at most 1,113",
          "less than one step per epoch"]),
        (["--devices", "1000000000000"], ["more than any machine built holds"]),
        (["--device", "tpu-v3", "--devices", "2048", "--global-batch", "65536"], ["a tpu-v3 pod is 1,024 chips"]),
        (["--device", "v100", "--devices", "8", "--global-batch", "2048"], ["256 images per device do not fit"]),
        (["--device", "tpu-v3", "--devices", "64", "--allreduce", "tree"], ["2-D torus with no switch"]),
    ],
)  # fmt: skip
def test_absurd_sizes_are_refused_in_one_line(argv, messages, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1
    for m in messages:
        assert m in lines[0], lines[0]
