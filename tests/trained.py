"""One short real training run, shared by the tests of the after-training tools (report, eval, predict, export).

    data, run = short_run(tmp_path_factory)    # the dataset root and RUN (config.yaml, metrics.jsonl,
                                               # checkpoints/, best.pt), made once per pytest process

`python -m fastres.train`'s own entry point on the shared tiny dataset (tests/tiny.py: the built-in dataset's
generator at 4 train and 2 val images per class, real JPEGs): ResNet-18 at 32 px, batch 8, EPOCHS epochs. The settings
make it learn its 40 training images quickly (no label smoothing, whole-image crops, a high
learning rate), so a test can ask for better than chance on them; the 20 val images stay
near chance, which no test relies on. Where tensorboard is installed the run also writes its
TensorBoard events (--tensorboard). One torch thread: on a box shared with other jobs, two
threads that wait for each other's cores take several times as long.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastres.train import main

import tiny
from tiny import records  # noqa: F401 - the tests of the after-training tools read the run's records from here

EPOCHS = 10
FLAGS = [
    "--arch", "resnet18", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--no-progress",
    "--lr", "3.2", "--warmup-epochs", "0", "--label-smoothing", "0", "--crop-scale-min", "1.0",
    "--epochs", str(EPOCHS), "--seed", "0", "--backend", "pytorch", "--threads", "1",
]  # fmt: skip

if importlib.util.find_spec("tensorboard") is not None:
    FLAGS.append("--tensorboard")  # RUN/tensorboard, read back by tests/test_tensorboard.py

_MADE: dict[str, tuple[Path, Path]] = {}


def short_run(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset root, run folder) of the shared run; trains it on the first call."""
    if "run" not in _MADE:
        data = tiny.dataset(tmp_path_factory)
        out = tmp_path_factory.mktemp("runs")
        assert main(["--data", str(data), *FLAGS, "--out", str(out), "--name", "short"]) == 0
        _MADE["run"] = (data, out / "short")
    return _MADE["run"]
