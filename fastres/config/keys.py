"""TrainConfig: every config key, flat (`cfg.lr`), composed from the sections that declare them
(fastres.config.sections); the choices and ranges of each key, and the checks.

Defaults are the ResNet-50 ImageNet recipe of Goyal et al. 2017 at batch 256 on one process.
A value that cannot work is a ConfigError naming the key as its flag (`--batch-size must be an
integer in [1, 1048576], got 0`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from fastres.config.key import ConfigError, Range, choices_of, range_of
from fastres.config.sections import (
    DEVICES,
    PRECISIONS,
    SECTIONS,
    BatchConfig,
    DataConfig,
    DistributedConfig,
    ExecutionConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
)

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


# The sections' fields in the order of SECTIONS: a dataclass collects its bases' fields from the last base to the first.
@dataclass
class TrainConfig(
    RunConfig, DistributedConfig, ExecutionConfig, ScheduleConfig, OptimizerConfig, BatchConfig, ModelConfig, DataConfig
):
    """Every config key (fastres.config.sections declares each one), with the checks of all the sections."""

    def validate(self, sources: typing.Mapping[str, str] | None = None) -> TrainConfig:
        """Raise ConfigError naming the first key whose value cannot work: a choice, a range, then each section's
        rules. `sources`: where each value came from (fastres.config.flags), said in the error when the user did
        not give the flag."""

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
            if isinstance(value, list):
                need(all(allowed.holds(v) for v in value), key, f"none or comma-separated numbers in {allowed}")
            elif value is not None:
                what = "an integer" if isinstance(value, int) else "a finite number"
                need(allowed.holds(value), key, f"{what} in {allowed}")
        for section in SECTIONS:
            section.rules(self, need)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The valid values of each choice key (the collection of the module that implements them, read when checked)
# and the allowed range of each numeric key (each number of a list key), from the sections' declarations.
CHOICES: dict[str, typing.Collection[str]] = {f.name: choices_of(f) for f in fields(TrainConfig) if choices_of(f)}
RANGES: dict[str, Range] = {f.name: range_of(f) for f in fields(TrainConfig) if range_of(f)}


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
