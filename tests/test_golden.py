"""Golden regression test (in the manner of llm.c's test_gpt2): a silent change of numerics fails here.

A fixed seed, a small real model (ResNet-18 at 32 px, batch 8), real JPEG files written by
this test, 10 training steps through `python -m fastres.train`'s whole path (data check,
PIL loader, model, loss, backward, optimizer, schedule). The 10 per-step losses and a checksum
of the final parameters are written below. A refactor must leave them unchanged.

If a change of numerics is on purpose (a new default, a fixed bug in the math), re-record:

    FASTRES_GOLDEN_PRINT=1 pytest tests/test_golden.py -s

and paste the printed values here, saying in the commit message why they changed.

Tolerances: CPU training is bitwise deterministic on one machine with one library build;
another CPU model or oneDNN version rounds differently, by about 1e-6 relative over 10
steps. The tolerances (1e-4 on losses, 1e-5 on the checksums) allow that and nothing more: a
changed learning rate, momentum convention, weight decay set, initialisation or crop moves
the first loss or the checksums by far more.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastres.train import main

STEPS = 10
BATCH = 8

# Recorded on the fastres tree before the package refactor of `fastres.distributed` (and
# unchanged after it): torch 2.13.0 CPU, Pillow 13.0.
GOLDEN = {
    "sgd": {
        "losses": [
            0.6631080508232117,
            0.6060515642166138,
            0.452643483877182,
            0.3263556957244873,
            0.31177425384521484,
            0.24763524532318115,
            0.22918963432312012,
            0.2419014871120453,
            0.2516482472419739,
            0.24424651265144348,
        ],
        "checksum": [5392.358126676009, 12355.288983098626, 113051.46105352233],
    },
    "lars": {
        "losses": [
            0.6631080508232117,
            0.6459929943084717,
            0.6241723299026489,
            0.6211279630661011,
            0.6117051839828491,
            0.5829366445541382,
            0.5764119625091553,
            0.5662604570388794,
            0.5260186791419983,
            0.5252091884613037,
        ],
        "checksum": [5366.136849726415, 12272.563718582654, 112488.28771809896],
    },
}


def _write_jpegs(root: Path) -> None:
    """Two classes of textured images, 40 train + 4 val each, from a fixed numpy seed."""
    rng = np.random.default_rng(1234)
    for split, n in (("train", 40), ("val", 4)):
        for c, name in enumerate(("dark", "light")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                side = int(rng.integers(40, 72))
                base = 60 + 120 * c
                pixels = rng.normal(base, 40, size=(side, side, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i:03d}.JPEG", quality=90)


@pytest.fixture(scope="module")
def golden_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("golden")
    _write_jpegs(root)
    return root


def newest_checkpoint(run: Path) -> dict:
    """The run's last checkpoint, however the checkpoint files are laid out."""
    try:
        from fastres.checkpoint import CheckpointStore
    except ImportError:  # the layout before the checkpoint package: RUN/checkpoint.pt, a plain torch file
        return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    return CheckpointStore(run).newest_valid()[1]


def _checksum(state: dict) -> list[float]:
    """(sum, sum of squares, sum of |x| weighted by position) over every parameter, in float64."""
    total = torch.zeros(3, dtype=torch.float64)
    for name in sorted(state):
        t = state[name]
        if not t.is_floating_point():
            continue
        x = t.double().flatten()
        pos = torch.arange(1, x.numel() + 1, dtype=torch.float64) / x.numel()
        total += torch.stack([x.sum(), (x * x).sum(), (x.abs() * pos).sum()])
    return total.tolist()


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_golden_losses_and_parameters(golden_data, tmp_path, optimizer, capsys):
    torch.set_num_threads(1)  # a fixed reduction order for the check's own arithmetic
    args = [
        "--data",
        str(golden_data),
        "--arch",
        "resnet18",
        "--image-size",
        "32",
        "--batch-size",
        str(BATCH),
        "--epochs",
        "1",
        "--workers",
        "0",
        "--threads",
        "1",
        "--lr",
        "0.4",
        "--warmup-epochs",
        "0.5",
        "--optimizer",
        optimizer,
        "--backend",
        "pytorch",
        "--no-progress",
        "--log-every",
        "1",
        "--seed",
        "7",
        "--out",
        str(tmp_path),
        "--name",
        "golden",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]
    if optimizer == "lars":
        args += ["--lars-eta", "0.02"]
    assert main(args) == 0
    run = tmp_path / "golden"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if r["kind"] == "train"]
    assert len(losses) == STEPS, f"expected {STEPS} steps (80 images / batch {BATCH}), got {len(losses)}"
    state = newest_checkpoint(run)["model"]
    checksum = _checksum(state)
    if os.environ.get("FASTRES_GOLDEN_PRINT"):
        print(f"\n{optimizer}: losses {losses!r}\n{optimizer}: checksum {checksum!r}")
    want = GOLDEN[optimizer]
    assert want["losses"] is not None, "golden values not recorded"
    hint = (
        "the numerics of training changed; if that is on purpose, re-record with "
        "FASTRES_GOLDEN_PRINT=1 pytest tests/test_golden.py -s (see the module docstring)"
    )
    np.testing.assert_allclose(losses, want["losses"], rtol=1e-4, atol=1e-5, err_msg=hint)
    np.testing.assert_allclose(checksum, want["checksum"], rtol=1e-5, err_msg=hint)
