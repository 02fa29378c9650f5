"""The one typed training config: defaults, YAML presets, `--key value` overrides.

Precedence, lowest first: the defaults below (the ResNet-50 ImageNet recipe of Goyal et
al. 2017 at batch 256 on one process), then a preset (`--config NAME` for a file shipped in
fastres/configs/, or `--config PATH.yaml`), then command-line flags. With no `--data` and no
`--config`, the `builtin` preset applies: a run on the built-in dataset sized for a CPU.

Unknown keys and wrong types are errors that name the key; the resolved config is written
into the run folder and every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from fastres import FastresError
from fastres.data.dataset import CHECK_DEPTHS
from fastres.data.loader import BACKENDS
from fastres.distributed.reducer import ALGORITHMS, WIRE_DTYPES
from fastres.execution import DEVICES, PRECISIONS
from fastres.model import ARCHS
from fastres.optim.factory import OPTIMIZERS
from fastres.optim.schedule import SCHEDULES

__all__ = [
    "TrainConfig",
    "ConfigError",
    "PRESET_DIR",
    "preset_names",
    "load_preset",
    "parse_args",
    "parse_command_line",
    "build_parser",
    "launch_world_size",
    "print_schedule_requested",
]

PRESET_DIR = Path(__file__).parent / "configs"

LR_UNITS = ("per-256", "absolute")
MOMENTUM_CONVENTIONS = ("auto", "mlperf", "torch")
BN_EVAL = ("running", "batch")

# The valid values of each choice key, owned by the module that implements them.
CHOICES: dict[str, tuple[str, ...]] = {
    "backend": tuple(BACKENDS),
    "data_check": CHECK_DEPTHS,
    "arch": tuple(ARCHS),
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "device": DEVICES,
    "precision": PRECISIONS,
    "allreduce": ALGORITHMS,
    "wire_dtype": tuple(WIRE_DTYPES),
    "lr_unit": LR_UNITS,
    "momentum_convention": MOMENTUM_CONVENTIONS,
    "bn_eval": BN_EVAL,
}

# Allowed ranges of the numeric keys: (low, high, high excluded). NaN and infinities never pass.
RANGES: dict[str, tuple[float, float, bool]] = {
    "workers": (0, 1024, False),
    "prefetch": (1, 64, False),
    "hw_decoder_load": (0, 1, False),
    "image_size": (16, 2048, False),
    "val_image_size": (16, 2048, False),
    "crop_scale_min": (0, 1, False),
    "max_bad_samples": (0, 10**9, False),
    "epochs": (1, 100_000, False),
    "batch_size": (1, 1 << 20, False),
    "val_batch_size": (1, 1 << 20, False),
    "lr": (0, 100, False),
    "momentum": (0, 1, True),
    "lars_eta": (0, 1, False),
    "weight_decay": (0, 1, False),
    "label_smoothing": (0, 1, True),
    "warmup_epochs": (0, 100_000, False),
    "global_batch": (1, 1 << 24, False),
    "accumulate": (1, 1024, False),
    "warmup_start": (0, 1, False),
    "poly_power": (0, 100, False),
    "end_lr": (0, 100, False),
    "lars_eps": (0, 1, False),
    "rmsprop_lr": (0, 100, False),
    "rmsprop_center": (0, 100_000, False),
    "rmsprop_period": (0, 100_000, False),
    "rmsprop_beta": (0, 1, True),
    "rmsprop_eps": (0, 1, False),
    "target_top1": (0, 100, False),
    "bn_group": (1, 1 << 16, False),
    "train_images": (1, 1 << 40, False),
    "threads": (1, 1024, False),
    "seed": (0, 2**31 - 1, False),
    "virtual_nodes": (1, 1024, False),
    "bucket_cap_mb": (0, 4096, False),
    "dist_timeout": (0, 7 * 86400, False),
    "log_every": (1, 10**9, False),
    "checkpoint_every": (1, 10**9, False),
    "checkpoint_minutes": (0, 100_000, False),
    "keep_checkpoints": (1, 1000, False),
    "progress_seconds": (0, 86400, False),
    "max_skipped_steps": (1, 10**9, False),
}

# --help: one sentence per key, with its unit; keys grouped by subject, in this order.
HELP: dict[str, dict[str, str]] = {
    "data": {
        "data": "dataset root in ImageNet layout (ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG) or a folder "
        "of shards from `python -m fastres.data shard`; none: the built-in dataset",
        "backend": "data loader: dali (NVIDIA DALI; GPU decode on a GPU), pytorch (PIL in DataLoader workers), "
        "synthetic (one random batch, for benchmarks), auto (dali where installed, else pytorch)",
        "workers": "loader worker processes (pytorch) or DALI threads, per training process; capped at the CPU count",
        "prefetch": "batches DALI prepares ahead of the training step",
        "hw_decoder_load": "share of JPEGs, 0 to 1, that DALI sends to the GPU's hardware JPEG decoder",
        "data_check": "before training: none, header (open, size and JPEG end marker of every file: fast), or decode "
        "(decode every pixel: slow, finds every bad file)",
        "skip_bad_files": "train without the files the check finds bad, instead of refusing to start",
        "image_size": "side of the square training crop, in pixels",
        "val_image_size": "side of the square validation crop, in pixels; none: --image-size",
        "crop_scale_min": "smallest area of a random-resized crop, as a fraction (0 to 1] of the image",
        "max_bad_samples": "undecodable samples met during training (each replaced by a neutral substitute) before "
        "the run stops; none: 0.1%% of the training set",
        "train_list": "train only on the files this list names: `relative/path label` lines, relative to "
        "ROOT/train (the format `python -m fastres.data check --lists` writes, DALI's file_list)",
        "val_list": "validate only on the files this list names (same format, relative to ROOT/val)",
        "train_images": "training images per epoch that --print-schedule assumes; none: ImageNet's 1,281,167 "
        "(training itself counts its dataset)",
    },
    "model": {
        "arch": "ResNet depth (v1.5: the stride in the 3x3 convolution)",
        "zero_init_last_gamma": "start the last BN gamma of each residual block at 0 (Goyal et al. 2017, sec. 5.1); "
        "--no-zero-init-last-gamma starts it at 1",
        "bn_eval": "BN statistics for validation: running (the moving averages) or batch (no moving averages: "
        "statistics of training batches, averaged over the processes, recomputed before each validation; "
        "Akiba et al. 2017)",
        "bn_group": "processes whose BN statistics are computed together (SyncBN over groups of this many "
        "consecutive ranks; 1: each process alone), for small per-process batches",
    },
    "optimisation": {
        "epochs": "passes over the training set",
        "batch_size": "images per process per step; the global batch is this times the number of processes times "
        "--accumulate",
        "global_batch": "images per optimizer step over all processes; sets --batch-size to this / (processes x "
        "--accumulate), an error if that does not divide; none: --batch-size decides",
        "accumulate": "forward/backward passes whose gradients are summed before each optimizer step (a small "
        "machine runs a large global batch)",
        "val_batch_size": "images per process per validation step; none: --batch-size",
        "lr": "peak learning rate, in the unit of --lr-unit: per 256 images (the run uses lr x global batch / 256, "
        "Goyal et al. 2017) or absolute",
        "lr_unit": "unit of --lr and --end-lr: per-256 (scaled linearly with the global batch) or absolute",
        "momentum": "momentum coefficient, in [0, 1)",
        "nesterov": "Nesterov momentum",
        "optimizer": "sgd (torch.optim.SGD), fused-sgd (fastres FusedSGD: one fused kernel over the flat layout), "
        "lars (fastres FusedLARS, MLPerf convention), rmsprop-warmup (FusedSGD starting as RMSprop and blending "
        "into momentum SGD, Akiba et al. 2017)",
        "momentum_convention": "where the lr enters the momentum: mlperf (m = mu m + lr g; w -= m), torch "
        "(m = mu m + g; w -= lr m), auto (mlperf for lars and rmsprop-warmup, torch for sgd and fused-sgd); "
        "sgd allows torch only",
        "lars_eta": "LARS trust coefficient eta (You et al. 2017; MLPerf uses 0.001)",
        "lars_eps": "LARS epsilon: trust = eta ||w|| / (||g|| + wd ||w|| + eps)",
        "rmsprop_lr": "RMSprop's own learning rate in the RMSprop warm-up (absolute, not scaled with the batch); "
        "needed with --optimizer rmsprop-warmup",
        "rmsprop_center": "epoch at which the RMSprop warm-up is half RMSprop, half SGD",
        "rmsprop_period": "epochs over which the RMSprop warm-up turns into SGD (pure SGD from centre + period/2)",
        "rmsprop_beta": "RMSprop's decay of the average of squared gradients, in [0, 1)",
        "rmsprop_eps": "added to RMSprop's root mean square",
        "weight_decay": "L2 weight decay on conv and fc weights (BN parameters and biases get none)",
        "label_smoothing": "label smoothing of the cross-entropy loss, in [0, 1)",
        "schedule": "learning-rate decay after warm-up: cosine, poly (power --poly-power), step (x --factors, "
        "default x0.1 each, at --milestones, default 1/3, 2/3, 8/9 of training), piecewise (lr x --factors from "
        "each of --milestones), constant",
        "milestones": "epochs at which step and piecewise schedules change the lr, comma-separated (e.g. 30,60,80); "
        "none: 1/3, 2/3, 8/9 of training (step)",
        "factors": "lr as a fraction of the peak before the first milestone and from each one on, comma-separated, "
        "one more than --milestones; none: 1, 0.1, 0.01, ... (step)",
        "poly_power": "power of the poly decay",
        "end_lr": "lr at the end of a cosine or poly decay, in the unit of --lr-unit; none: 0",
        "warmup_epochs": "epochs of linear warm-up to the peak learning rate (may be fractional)",
        "warmup_start": "first lr of the warm-up as a fraction of the peak (Goyal et al. 2017 at 8K: 0.1 / 3.2 = "
        "0.03125)",
        "target_top1": "stop once validation top-1 reaches this percentage; none: train every epoch",
    },
    "precision and devices": {
        "device": "auto (CUDA where available), cpu or cuda; several processes take one GPU each",
        "precision": "auto (bf16 autocast on CUDA, fp32 on the CPU), fp32, bf16 (autocast, CPU or GPU), or fp16 "
        "(autocast with dynamic loss scaling; a step whose scaled gradients overflow is skipped)",
        "channels_last": "NHWC memory format for the model and batches; default: on CUDA only",
        "compile": "run the model's forward and backward through torch.compile (inductor); the first steps "
        "compile for a minute or more",
        "threads": "torch intra-op threads per process on the CPU; none: torch's default",
        "seed": "seed of the initialisation, the data order and the augmentations",
    },
    "distributed": {
        "virtual_nodes": "split each machine's processes into this many nodes, to run the hierarchical all-reduce "
        "on one machine; none: $FASTRES_VIRTUAL_NODES or 1",
        "allreduce": "gradient all-reduce: flat (one all_reduce per bucket), hierarchical (reduce-scatter in the "
        "node, all_reduce across nodes, all-gather in the node), auto (hierarchical when there are several nodes "
        "of several processes)",
        "bucket_cap_mb": "MiB of fp32 gradients per all-reduce bucket (the first bucket: 1 MiB)",
        "wire_dtype": "gradients on the wire: fp32, bf16 or fp16 (half the bytes; scaled and cast in one pass)",
        "dist_timeout": "seconds a rendezvous or collective waits for the other processes before the run stops",
    },
    "run": {
        "out": "parent folder of run folders",
        "name": "run folder name under --out; none: <arch>-<date>-<time>",
        "log_every": "steps between progress and metrics records (each one synchronises the device)",
        "progress": "progress bar on rank 0 (when stderr is a terminal)",
        "resume": "continue a run: a checkpoint file, a run folder (its newest checkpoint that verifies), or "
        "auto: continue OUT/NAME (--name) if it has a checkpoint, else start it",
        "checkpoint_every": "steps between checkpoints besides the one at each epoch's end; none: epoch ends only",
        "checkpoint_minutes": "minutes between checkpoints besides epoch ends; none: off",
        "keep_checkpoints": "newest checkpoints kept in RUN/checkpoints (older ones are deleted)",
        "progress_seconds": "seconds between progress lines when stderr is not a terminal (batch-system logs)",
        "max_skipped_steps": "steps in a row skipped for NaN/Inf gradients before the run stops",
        "tensorboard": "also write loss, lr, accuracy and img/s for TensorBoard into RUN/tensorboard",
    },
}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class ConfigError(FastresError):
    """A config key, flag or value that fastres cannot use."""

    shared = True  # every rank meets it: rank 0 says it


@dataclass
class TrainConfig:
    # data
    data: str | None = None  # ImageNet-layout root (ROOT/train, ROOT/val); None: built-in dataset
    backend: str = "auto"  # auto (dali where installed, else pytorch), dali, pytorch (PIL), synthetic
    workers: int = 8  # loader worker processes (pytorch) or DALI threads per training process (capped at the CPU count)
    prefetch: int = 2  # batches DALI prepares ahead (prefetch_queue_depth)
    hw_decoder_load: float = 0.65  # share of JPEGs for the GPU's hardware decoder (DALI mixed decode)
    data_check: str = "header"  # before training: none, header (open + size, fast), decode (full decode)
    skip_bad_files: bool = False  # train without files the check finds bad, instead of refusing
    image_size: int = 224  # train crop side, pixels
    val_image_size: int | None = None  # val crop side, pixels; None: image_size
    crop_scale_min: float = 0.08  # smallest area fraction of a random-resized crop
    max_bad_samples: int | None = None  # undecodable samples met in training before the run stops; None: 0.1%
    train_list: str | None = None  # file of `relative/path label` lines (DALI file_list) naming the train files
    val_list: str | None = None  # the same for the val files
    train_images: int | None = None  # --print-schedule's images per epoch; None: ImageNet's 1,281,167
    # model
    arch: str = "resnet50"
    zero_init_last_gamma: bool = True  # Goyal et al. 2017, sec. 5.1
    bn_eval: str = "running"  # running (moving averages) or batch (Akiba et al. 2017: none)
    bn_group: int = 1  # SyncBN over groups of this many ranks; 1: none
    # optimisation
    epochs: int = 90
    batch_size: int = 256  # images per process per forward/backward pass
    global_batch: int | None = None  # images per optimizer step over all processes; sets batch_size
    accumulate: int = 1  # forward/backward passes per optimizer step
    val_batch_size: int | None = None  # None: batch_size
    lr: float = 0.1  # peak lr per 256 images; scaled linearly with the global batch (Goyal et al.)
    lr_unit: str = "per-256"  # per-256 (scaled with the global batch) or absolute
    momentum: float = 0.9
    nesterov: bool = False
    optimizer: str = "sgd"  # sgd (torch), lars (fastres FusedLARS, MLPerf convention), fused-sgd (fastres FusedSGD),
    # rmsprop-warmup (FusedSGD with Akiba et al.'s RMSprop warm-up)
    momentum_convention: str = "auto"  # mlperf, torch, auto (mlperf for lars/rmsprop-warmup, else torch)
    lars_eta: float = 0.001  # LARS trust coefficient (You et al. 2017; MLPerf 0.001)
    lars_eps: float = 0.0  # LARS epsilon in the trust ratio's denominator
    rmsprop_lr: float | None = None  # RMSprop warm-up: RMSprop's own (absolute) rate
    rmsprop_center: float = 10.0  # RMSprop warm-up: centre, epochs (Akiba et al. 2017, sec. 2.2)
    rmsprop_period: float = 5.0  # RMSprop warm-up: period, epochs (Akiba et al. 2017, sec. 2.2)
    rmsprop_beta: float = 0.99  # RMSprop warm-up: decay of v
    rmsprop_eps: float = 1e-8  # RMSprop warm-up: added to sqrt(v)
    weight_decay: float = 1e-4  # on conv/fc weights only: BN and bias tensors (ndim <= 1) get none
    label_smoothing: float = 0.1
    schedule: str = "cosine"  # lr decay after warm-up: cosine, poly, step, piecewise, constant
    milestones: list[float] | None = None  # step, piecewise: epochs where the lr changes
    factors: list[float] | None = None  # step, piecewise: lr / peak before and from each milestone
    poly_power: float = 2.0
    end_lr: float | None = None  # final lr of cosine/poly, in lr_unit; None: 0
    warmup_epochs: float = 5.0  # linear warm-up to the peak lr
    warmup_start: float = 0.0  # first warm-up lr as a fraction of the peak
    target_top1: float | None = None  # stop at this val top-1 (%); None: train every epoch
    # execution
    device: str = "auto"  # auto (cuda if available), cpu, cuda
    precision: str = "auto"  # auto (bf16 autocast on cuda, fp32 on cpu), fp32, bf16
    channels_last: bool | None = None  # None: on for cuda, off for cpu
    compile: bool = False  # torch.compile the model for training and validation
    threads: int | None = None  # torch intra-op threads on cpu; None: torch's default
    seed: int = 0
    # distributed (start one process per GPU or CPU share with torchrun, srun or mpirun: fastres.distributed)
    virtual_nodes: int | None = (
        None  # split each machine's ranks into K nodes for the hierarchy; None: FASTRES_VIRTUAL_NODES or 1
    )
    allreduce: str = "auto"  # gradient all-reduce: auto (hierarchical across nodes), flat, hierarchical
    bucket_cap_mb: float = 25.0  # fp32 gradient MB per all-reduce bucket (the first one: 1 MB)
    wire_dtype: str = "fp32"  # gradients on the wire: fp32, bf16, fp16
    dist_timeout: float = 1800.0  # seconds a rendezvous or collective waits for the other ranks
    # output
    out: str = "runs"  # parent folder of run folders
    name: str | None = None  # run folder name; None: <arch>-<date>-<time>
    log_every: int = 20  # steps between progress/metric records (each one syncs the device)
    progress: bool = True  # rank-0 progress bar
    resume: str | None = None  # checkpoint file or run folder to continue from, or "auto" (with --name)
    checkpoint_every: int | None = None  # steps between checkpoints besides epoch ends; None: epoch ends only
    checkpoint_minutes: float | None = None  # minutes between checkpoints besides epoch ends; None: off
    keep_checkpoints: int = 3  # newest checkpoints kept in RUN/checkpoints
    progress_seconds: float = 30.0  # seconds between progress lines when stderr is not a terminal
    max_skipped_steps: int = 10  # steps in a row skipped for NaN/Inf gradients before the run stops
    tensorboard: bool = False  # also write scalars for TensorBoard into RUN/tensorboard

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first key whose value cannot work."""

        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"--{key.replace('_', '-')} must be {what}, got {getattr(self, key)!r}")

        for key, valid in CHOICES.items():
            need(getattr(self, key) in valid, key, f"one of {', '.join(valid)}")
        for key, (low, high, open_high) in RANGES.items():
            value = getattr(self, key)
            if value is None:
                continue
            ok = math.isfinite(value) and low <= value and (value < high if open_high else value <= high)
            what = "an integer" if isinstance(value, int) else "a finite number"
            need(ok, key, f"{what} in [{_num(low)}, {_num(high)}{')' if open_high else ']'}")
        need(self.crop_scale_min > 0, "crop_scale_min", "in (0, 1]")
        need(self.bucket_cap_mb > 0, "bucket_cap_mb", "> 0")
        need(self.dist_timeout > 0, "dist_timeout", "> 0 seconds")
        need(self.warmup_epochs <= self.epochs, "warmup_epochs", f"in [0, epochs={self.epochs}]")
        need(self.checkpoint_minutes is None or self.checkpoint_minutes > 0, "checkpoint_minutes", "> 0")
        need(self.progress_seconds > 0, "progress_seconds", "> 0")
        need(self.poly_power > 0, "poly_power", "> 0")
        need(self.rmsprop_period > 0, "rmsprop_period", "> 0 epochs")
        for key in ("milestones", "factors"):
            values = getattr(self, key)
            high = 100_000 if key == "milestones" else 100  # a milestone after the last epoch never applies
            ok = values is None or all(math.isfinite(v) and 0 <= v <= high for v in values)
            need(ok, key, f"none or comma-separated numbers in [0, {_num(high)}]")
        if self.milestones is not None:
            need(all(a < b for a, b in zip(self.milestones, self.milestones[1:])), "milestones", "increasing")
        if self.schedule == "piecewise":
            need(self.factors is not None, "factors", "given with --schedule piecewise")
        if self.factors is not None:
            n = len(self.milestones) if self.milestones is not None else (3 if self.schedule == "step" else 0)
            need(len(self.factors) == n + 1, "factors", f"{n + 1} numbers (one more than the {n} milestones)")
        if self.optimizer == "rmsprop-warmup":
            need(self.rmsprop_lr is not None, "rmsprop_lr", "set with --optimizer rmsprop-warmup")
        if self.optimizer == "sgd":
            need(self.momentum_convention != "mlperf", "momentum_convention", "torch or auto with --optimizer sgd "
                 "(torch.optim.SGD; fused-sgd takes mlperf)")  # fmt: skip
        return self

    def resolve_batch(self, world: int) -> TrainConfig:
        """With `global_batch` set: batch_size = global_batch / (world x accumulate), or a
        ConfigError naming both flags when that does not divide."""
        if self.global_batch is None:
            return self
        share = world * self.accumulate
        if self.global_batch % share:
            raise ConfigError(
                f"--global-batch {self.global_batch} is not divisible by {world} processes x --accumulate "
                f"{self.accumulate} = {share}"
            )
        self.batch_size = self.global_batch // share
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.cache
def _field_types() -> dict[str, tuple[type, bool]]:
    """key -> (scalar type, may be None), from the dataclass annotations."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for f in fields(TrainConfig):
        tp = hints[f.name]
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            out[f.name] = (next(a for a in args if a is not type(None)), True)
        else:
            out[f.name] = (tp, False)
    return out


def _is_list(tp) -> bool:
    return typing.get_origin(tp) is list


def _coerce(key: str, value: Any, source: str) -> Any:
    tp, optional = _field_types()[key]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be null")
    if _is_list(tp):
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            return [float(v) for v in value]
        raise ConfigError(f"{source}: {key} must be a list of numbers{' or null' if optional else ''}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{source}: {key} must be {tp.__name__}{' or null' if optional else ''}, got {value!r}")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Read a preset (a shipped name or a YAML path) into a dict of checked, typed values."""
    path = Path(name_or_path).expanduser()
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"--config {name_or_path}: no such preset; shipped presets: {', '.join(preset_names())}")
    if not path.is_file():
        raise ConfigError(f"--config {name_or_path}: file does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read ({e.strerror})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of key: value")
    known = _field_types()
    out = {}
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        if key not in known:
            raise ConfigError(f"--config {path}: unknown key {key!r}")
        out[key] = _coerce(key, value, f"--config {path}")
    return out


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming the flag) and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parse_optional(tp: type):
    def parse(text: str):
        if text.lower() in ("none", "null"):
            return None
        return tp(text)

    parse.__name__ = tp.__name__  # argparse names the type in "invalid int value"
    return parse


def _number_list(text: str) -> list[float]:
    """`30,60,80` -> [30.0, 60.0, 80.0] (argparse calls a ValueError here an invalid value)."""
    return [float(part) for part in text.split(",") if part.strip()]


_number_list.__name__ = "comma-separated number list"


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_num(v) for v in value)
    return "none" if value is None else str(value)


def build_parser(
    prog: str = "python -m fastres.train",
    description: str | None = None,
    defaults: dict[str, Any] | None = None,
    defaults_from: str = "",
) -> argparse.ArgumentParser:
    """The flag parser: one flag per config key, grouped as in HELP, each with its sentence.

    `defaults`: the values shown as defaults (a preset's over the dataclass's); `defaults_from`
    says where they come from, in the epilog."""
    shown = {**TrainConfig().to_dict(), **(defaults or {})}
    epilog = (
        f"Defaults shown are {defaults_from or 'the built-in defaults'}; flags override them. "
        "Unknown keys and wrong types are errors naming the key. Valid values of a choice flag are in its {braces}."
    )
    parser = _OneLineParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        metavar="NAME|PATH",
        help=f"preset name ({', '.join(preset_names())}) or YAML file of config keys; without --config and --data "
        "the preset builtin applies",
    )
    parser.add_argument(
        "--print-schedule",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the lr, momentum and batch of every epoch (for the global batch of --global-batch, else of "
        "this launch; for --train-images images per epoch) and exit, touching no data and no device",
    )
    types_ = _field_types()
    for title, keys in HELP.items():
        group = parser.add_argument_group(title)
        for key, sentence in keys.items():
            tp, optional = types_[key]
            flag = "--" + key.replace("_", "-")
            text = f"{sentence} (default: {_show(shown[key])})"
            if tp is bool:
                group.add_argument(
                    flag, dest=key, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
                )
            elif _is_list(tp):
                group.add_argument(
                    flag,
                    dest=key,
                    type=_parse_optional(_number_list) if optional else _number_list,
                    default=argparse.SUPPRESS,
                    metavar="X,Y,...",
                    help=text,
                )
            else:
                group.add_argument(
                    flag,
                    dest=key,
                    type=_parse_optional(tp) if optional else tp,
                    default=argparse.SUPPRESS,
                    metavar=None if key in CHOICES or tp is str else tp.__name__.upper(),
                    choices=CHOICES.get(key),
                    help=text,
                )
    return parser


def _preset_of(argv: list[str]) -> str | None:
    """The preset a command line selects: --config, else builtin when --data is not given."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--data")
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        return known.config
    return "builtin" if known.data in (None, "none", "null") else None


def parse_command_line(argv: list[str] | None = None) -> tuple[TrainConfig, frozenset[str]]:
    """Flags -> (validated TrainConfig, the keys the command line set).

    The keys set are the flags given and, with an explicit --config, the preset's keys: on a
    resume they are compared with the run's saved config. Raises ConfigError; argparse exits
    2 on malformed flags."""
    argv = sys.argv[1:] if argv is None else argv
    preset_arg = _preset_of(argv)
    values = load_preset(preset_arg) if preset_arg else {}
    source = f"those of preset {preset_arg}" if preset_arg else "the ResNet-50 ImageNet recipe's (no preset)"
    args = vars(build_parser(defaults=values, defaults_from=source).parse_args(argv))
    explicit_preset = args.pop("config", None) is not None
    args.pop("print_schedule", None)  # fastres.train's: see print_schedule_requested
    if "batch_size" in args and "global_batch" not in args and values.get("global_batch") is not None:
        values["global_batch"] = None  # a --batch-size flag overrides a preset's global batch
    given = set(args) | (set(values) if explicit_preset else set())
    values.update(args)
    cfg = TrainConfig(**values)
    if cfg.resume is not None:  # validated once merged with the run's saved config (fastres.checkpoint.resume)
        return cfg, frozenset(given)
    cfg.validate()
    if "batch_size" in args and "global_batch" in args and cfg.global_batch is not None:
        world = launch_world_size()
        if cfg.batch_size * world * cfg.accumulate != cfg.global_batch:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} x {world} processes x --accumulate {cfg.accumulate} is not "
                f"--global-batch {cfg.global_batch}: give one of the two"
            )
    return cfg.resolve_batch(launch_world_size()), frozenset(given)


def launch_world_size() -> int:
    """The number of processes the launcher says this run has (1 without a launcher)."""
    import os

    from fastres.distributed.launcher import read_launcher

    try:
        return read_launcher(os.environ).world
    except FastresError:
        return 1  # the trainer reports a malformed launcher environment itself


def print_schedule_requested(argv: list[str] | None = None) -> bool:
    """True when the command line asks for --print-schedule."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--print-schedule", action="store_true")
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return known.print_schedule


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Flags -> validated TrainConfig (see parse_command_line)."""
    return parse_command_line(argv)[0]
