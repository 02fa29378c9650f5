"""The config's keys: their types and defaults (TrainConfig), valid choices and ranges, and the checks.

Defaults are the ResNet-50 ImageNet recipe of Goyal et al. 2017 at batch 256 on one process.
A value that cannot work is a ConfigError naming the key as its flag (`--batch-size must be an
integer in [1, 1048576], got 0`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from fastres import FastresError
from fastres.data.dataset import CHECK_DEPTHS
from fastres.data.loader import BACKENDS
from fastres.distributed.reducer import ALGORITHMS, WIRE_DTYPES
from fastres.model import ARCHS
from fastres.optim.factory import OPTIMIZERS
from fastres.optim.schedule import ORIGINS, ROUNDINGS, SCHEDULES

FLAG = "the command line"  # the source of a value given as a flag (fastres.config.flags)
SAVED = "the run's saved config"  # the start of the source of a value a resume keeps (fastres.run.resume)

__all__ = [
    "FLAG",
    "SAVED",
    "CHOICES",
    "DEVICES",
    "PRECISIONS",
    "RANGES",
    "ConfigError",
    "Range",
    "TrainConfig",
    "field_types",
    "coerce",
]

LR_UNITS = ("per-256", "absolute")
MOMENTUM_CONVENTIONS = ("auto", "mlperf", "torch")
BN_EVAL = ("running", "batch")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # fp16: autocast + dynamic loss scaling (fastres.optim.amp)

# The valid values of each choice key, owned by the module that implements them (devices and precisions
# here: fastres.run.execution implements them, a layer above the config).
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
    "schedule_origin": ORIGINS,
    "steps_rounding": ROUNDINGS,
}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class Range(typing.NamedTuple):
    """An interval of allowed values, printed as written: `[0, 1)`, `(0, 4096]`."""

    left: str  # "[": low allowed, "(": low excluded
    low: float
    high: float
    right: str  # "]": high allowed, ")": high excluded

    def holds(self, value: float) -> bool:
        above = self.low < value if self.left == "(" else self.low <= value
        below = value < self.high if self.right == ")" else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        return f"{self.left}{_num(self.low)}, {_num(self.high)}{self.right}"


# Allowed ranges of the numeric keys: Range("[" or "(", low, high, "]" or ")"), as an interval is written.
# NaN and infinities never pass; None (an optional key left unset) is not checked.
RANGES: dict[str, Range] = {
    "workers": Range("[", 0, 1024, "]"),
    "prefetch": Range("[", 1, 64, "]"),
    "hw_decoder_load": Range("[", 0, 1, "]"),
    "image_size": Range("[", 16, 2048, "]"),
    "val_image_size": Range("[", 16, 2048, "]"),
    "crop_scale_min": Range("(", 0, 1, "]"),
    "max_bad_samples": Range("[", 0, 10**9, "]"),
    "epochs": Range("[", 1, 100_000, "]"),
    "batch_size": Range("[", 1, 1 << 20, "]"),
    "val_batch_size": Range("[", 1, 1 << 20, "]"),
    "lr": Range("[", 0, 100, "]"),
    "momentum": Range("[", 0, 1, ")"),
    "lars_eta": Range("[", 0, 1, "]"),
    "weight_decay": Range("[", 0, 1, "]"),
    "label_smoothing": Range("[", 0, 1, ")"),
    "warmup_epochs": Range("[", 0, 100_000, "]"),
    "global_batch": Range("[", 1, 1 << 24, "]"),
    "lr_global_batch": Range("[", 1, 1 << 24, "]"),
    "accumulate": Range("[", 1, 1024, "]"),
    "warmup_start": Range("[", 0, 1, "]"),
    "poly_power": Range("(", 0, 100, "]"),
    "end_lr": Range("[", 0, 100, "]"),
    "lars_eps": Range("[", 0, 1, "]"),
    "rmsprop_lr": Range("[", 0, 100, "]"),
    "rmsprop_center": Range("[", 0, 100_000, "]"),
    "rmsprop_period": Range("(", 0, 100_000, "]"),
    "rmsprop_beta": Range("[", 0, 1, ")"),
    "rmsprop_eps": Range("[", 0, 1, "]"),
    "target_top1": Range("[", 0, 100, "]"),
    "bn_group": Range("[", 1, 1 << 16, "]"),
    "bn_virtual_batch": Range("[", 1, 1 << 20, "]"),
    "train_images": Range("[", 1, 1 << 40, "]"),
    "threads": Range("[", 1, 1024, "]"),
    "seed": Range("[", 0, 2**31 - 1, "]"),
    "virtual_nodes": Range("[", 1, 1024, "]"),
    "bucket_cap_mb": Range("(", 0, 4096, "]"),
    "dist_timeout": Range("(", 0, 7 * 86400, "]"),
    "collective_timeout": Range("(", 0, 7 * 86400, "]"),
    "log_every": Range("[", 1, 10**9, "]"),
    "checkpoint_every": Range("[", 1, 10**9, "]"),
    "checkpoint_minutes": Range("(", 0, 100_000, "]"),
    "keep_checkpoints": Range("[", 1, 1000, "]"),
    "progress_seconds": Range("(", 0, 86400, "]"),
    "max_skipped_steps": Range("[", 1, 10**9, "]"),
}


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
    max_bad_samples: int | None = None  # undecodable samples of each set before the run stops; None: 0.1%
    train_list: str | None = None  # file of `relative/path label` lines (DALI file_list) naming the train files
    val_list: str | None = None  # the same for the val files
    train_images: int | None = None  # --print-schedule's images per epoch; None: the dataset's own count
    # model
    arch: str = "resnet50"
    zero_init_last_gamma: bool = True  # Goyal et al. 2017, sec. 5.1
    bn_eval: str = "running"  # running (moving averages) or batch (Akiba et al. 2017: none)
    bn_group: int = 1  # SyncBN over groups of this many ranks; 1: none
    bn_virtual_batch: int | None = None  # ghost BN: statistics over groups of this many images; None: the batch
    # optimisation
    epochs: int = 90
    batch_size: int = 256  # images per process per forward/backward pass
    global_batch: int | None = None  # images per optimizer step over all processes; sets batch_size
    accumulate: int = 1  # forward/backward passes per optimizer step
    val_batch_size: int | None = None  # None: batch_size
    lr: float = 0.1  # peak lr per 256 images; scaled linearly with the global batch (Goyal et al.)
    lr_unit: str = "per-256"  # per-256 (scaled with the global batch) or absolute
    lr_global_batch: int | None = None  # absolute lr: the global batch it was set for; the rate of tensors LARS does
    # not adapt (BN, biases; every tensor of SGD) is lr x global batch / lr_global_batch; None: lr at every batch
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
    bias_decay: bool = False  # weight decay on biases too (NVIDIA's MLPerf: the fc bias); never on BN
    momentum_correction: bool = False  # momentum x lr_t / lr_t-1 (Goyal eq. 10, NVIDIA's sgdwfastlars)
    schedule_origin: str = "fastres"  # fastres, mxnet (update numbers from 1), zero (Goyal: step 0 at the start)
    steps_rounding: str = "floor"  # steps per epoch: floor or ceil (NVIDIA's get_epoch_size)
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
    precision: str = "auto"  # auto (bf16 autocast on cuda and on cpus with native bf16, else fp32), fp32, bf16
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
    dist_timeout: float = 1800.0  # seconds the rendezvous and the setup (rank 0 checking the data) wait for the others
    collective_timeout: float = 300.0  # seconds a collective of the running job waits for a peer (a dead or cut-off
    # host) before every rank leaves; Gloo's and NCCL's timeouts from the first step on
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

    def validate(self, sources: typing.Mapping[str, str] | None = None) -> TrainConfig:
        """Raise ConfigError naming the first key whose value cannot work. `sources`: where each value
        came from (fastres.config.flags), said in the error when the user did not give the flag."""

        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                flag = "--" + key.replace("_", "-")
                source = (sources or {}).get(key, FLAG)
                whence = "" if source == FLAG else f" ({source}, not a flag: give {flag} to change it)"
                if source.startswith(SAVED):  # a resume's: the source says whether a flag may change it
                    whence = f" ({source})"
                raise ConfigError(f"{flag} must be {what}, got {getattr(self, key)!r}{whence}")

        for key, valid in CHOICES.items():
            need(getattr(self, key) in valid, key, f"one of {', '.join(valid)}")
        for key, allowed in RANGES.items():
            value = getattr(self, key)
            if value is not None:
                what = "an integer" if isinstance(value, int) else "a finite number"
                need(allowed.holds(value), key, f"{what} in {allowed}")
        need(self.warmup_epochs <= self.epochs, "warmup_epochs", f"in [0, epochs={self.epochs}]")
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
        if self.lr_global_batch is not None:
            need(self.lr_unit == "absolute", "lr_global_batch", "none with --lr-unit per-256 (the rate is scaled "
                 "with the global batch already)")  # fmt: skip
        if self.optimizer == "rmsprop-warmup":
            need(self.rmsprop_lr is not None, "rmsprop_lr", "set with --optimizer rmsprop-warmup")
        if self.momentum_correction:
            inside = self.momentum_convention == "mlperf" or (
                self.momentum_convention == "auto" and self.optimizer in ("lars", "rmsprop-warmup")
            )
            need(inside, "momentum_correction", "used with --momentum-convention mlperf (the lr inside the "
                 "momentum; torch's convention needs no correction)")  # fmt: skip
        if self.bn_virtual_batch is not None:
            need(self.bn_group == 1, "bn_virtual_batch", "none with --bn-group above 1 (one or the other)")
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
def field_types() -> dict[str, tuple[type, bool]]:
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


def is_list(tp) -> bool:
    return typing.get_origin(tp) is list


def coerce(key: str, value: Any, source: str) -> Any:
    tp, optional = field_types()[key]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be null")
    if is_list(tp):
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
