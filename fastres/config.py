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
import sys
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from fastres import FastresError
from fastres.model import ARCHS
from fastres.optim.schedule import SCHEDULES

__all__ = ["TrainConfig", "ConfigError", "PRESET_DIR", "preset_names", "load_preset", "parse_args", "build_parser"]

PRESET_DIR = Path(__file__).parent / "configs"
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "lars", "fused-sgd")
DATA_CHECKS = ("none", "header", "decode")
ALLREDUCE = ("auto", "flat", "hierarchical")  # fastres.distributed.reducer.ALGORITHMS
WIRE_DTYPES = ("fp32", "bf16", "fp16")  # fastres.distributed.reducer.WIRE_DTYPES


class ConfigError(FastresError):
    """A config key, flag or value that fastres cannot use."""


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
    # model
    arch: str = "resnet50"
    # optimisation
    epochs: int = 90
    batch_size: int = 256  # images per process per step
    val_batch_size: int | None = None  # None: batch_size
    lr: float = 0.1  # peak lr per 256 images; scaled linearly with the global batch (Goyal et al.)
    momentum: float = 0.9
    nesterov: bool = False
    optimizer: str = "sgd"  # sgd (torch), lars (fastres FusedLARS, MLPerf convention), fused-sgd (fastres FusedSGD)
    lars_eta: float = 0.001  # LARS trust coefficient (You et al. 2017; MLPerf 0.001)
    weight_decay: float = 1e-4  # on conv/fc weights only: BN and bias tensors (ndim <= 1) get none
    label_smoothing: float = 0.1
    schedule: str = "cosine"  # lr decay after warm-up: cosine, poly, step, constant
    warmup_epochs: float = 5.0  # linear warm-up from 0 to the peak lr
    # execution
    device: str = "auto"  # auto (cuda if available), cpu, cuda
    precision: str = "auto"  # auto (bf16 autocast on cuda, fp32 on cpu), fp32, bf16
    channels_last: bool | None = None  # None: on for cuda, off for cpu
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
    resume: str | None = None  # checkpoint file or run folder to continue from

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first key whose value cannot work."""

        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"--{key.replace('_', '-')} must be {what}, got {getattr(self, key)!r}")

        need(self.arch in ARCHS, "arch", f"one of {', '.join(ARCHS)}")
        need(self.epochs >= 1, "epochs", "a positive integer")
        need(self.batch_size >= 1, "batch_size", "a positive integer")
        need(self.val_batch_size is None or self.val_batch_size >= 1, "val_batch_size", "a positive integer")
        need(self.lr >= 0, "lr", ">= 0")
        need(0 <= self.momentum < 1, "momentum", "in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        need(self.lars_eta >= 0, "lars_eta", ">= 0")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        need(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}")
        need(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", f"in [0, epochs={self.epochs}]")
        need(self.workers >= 0, "workers", ">= 0")
        need(self.prefetch >= 1, "prefetch", "a positive integer")
        need(0 <= self.hw_decoder_load <= 1, "hw_decoder_load", "in [0, 1]")
        need(self.data_check in DATA_CHECKS, "data_check", f"one of {', '.join(DATA_CHECKS)}")
        need(self.image_size >= 16, "image_size", ">= 16")
        need(self.val_image_size is None or self.val_image_size >= 16, "val_image_size", ">= 16")
        need(0 < self.crop_scale_min <= 1, "crop_scale_min", "in (0, 1]")
        need(self.device in DEVICES, "device", f"one of {', '.join(DEVICES)}")
        need(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")
        need(self.threads is None or self.threads >= 1, "threads", "a positive integer")
        need(self.log_every >= 1, "log_every", "a positive integer")
        need(self.virtual_nodes is None or self.virtual_nodes >= 1, "virtual_nodes", "a positive integer")
        need(self.allreduce in ALLREDUCE, "allreduce", f"one of {', '.join(ALLREDUCE)}")
        need(self.bucket_cap_mb > 0, "bucket_cap_mb", "> 0")
        need(self.wire_dtype in WIRE_DTYPES, "wire_dtype", f"one of {', '.join(WIRE_DTYPES)}")
        need(self.dist_timeout > 0, "dist_timeout", "> 0 seconds")
        from fastres.data.loader import BACKENDS  # the data layer owns the list of backends

        need(self.backend in BACKENDS, "backend", f"one of {', '.join(BACKENDS)}")
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


def _coerce(key: str, value: Any, source: str) -> Any:
    tp, optional = _field_types()[key]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be null")
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


def build_parser(prog: str = "python -m fastres.train", description: str | None = None) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        metavar="NAME|PATH",
        help=f"preset name ({', '.join(preset_names())}) or YAML file; flags override it",
    )
    defaults = TrainConfig()
    for key, (tp, optional) in _field_types().items():
        flag = "--" + key.replace("_", "-")
        default = getattr(defaults, key)
        if tp is bool:
            parser.add_argument(
                flag,
                dest=key,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"default: {default}",
            )
        else:
            parser.add_argument(
                flag,
                dest=key,
                type=_parse_optional(tp) if optional else tp,
                default=argparse.SUPPRESS,
                metavar=tp.__name__.upper(),
                help=f"default: {default}",
            )
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Flags -> validated TrainConfig. Raises ConfigError; argparse exits 2 on malformed flags."""
    parser = build_parser()
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    preset_arg = args.pop("config", None)
    if preset_arg is None and args.get("data") is None:
        preset_arg = "builtin"
    values = load_preset(preset_arg) if preset_arg else {}
    values.update(args)
    return TrainConfig(**values).validate()
