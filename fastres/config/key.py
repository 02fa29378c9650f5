"""One config key's declaration: its default, its --help sentence, its range or its choices, in one place.

    lr: float = key(0.1, "peak learning rate, ...", Range("[", 0, 100, "]"))

A section of the config (fastres.config.sections) is a dataclass of such fields; --help, --print-config,
the presets' checks and TrainConfig.validate read them from the field's metadata.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Collection
from typing import Any

from fastres import FastresError

__all__ = ["ConfigError", "Need", "Range", "Section", "choices_of", "key", "range_of", "sentence"]

Need = Callable[[bool, str, str], None]  # need(ok, key, what it must be): a ConfigError naming --key unless ok


class ConfigError(FastresError):
    """A config key, flag or value that fastres cannot use."""

    shared = True  # every rank meets it: rank 0 says it


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


def key(
    default: Any,
    help: str | Callable[[], str],
    range: Range | None = None,
    choices: Collection[str] | None = None,
) -> Any:
    """A config key: `default`; `help`, its --help sentence (or a function making it from a registry that may
    grow, e.g. fastres.optim.factory.OPTIMIZERS); `range`, the interval a number must lie in (NaN and infinities
    never do; None, an optional key left unset, is not checked); `choices`, the values a choice key takes (the
    implementing module's own collection, read when checked)."""
    return dataclasses.field(default=default, metadata={"help": help, "range": range, "choices": choices})


def sentence(field: dataclasses.Field) -> str:
    """The --help sentence of a config key."""
    text = field.metadata["help"]
    return text() if callable(text) else text


def range_of(field: dataclasses.Field) -> Range | None:
    return field.metadata["range"]


def choices_of(field: dataclasses.Field) -> Collection[str] | None:
    return field.metadata["choices"]


class Section:
    """A section of the config: a dataclass of keys (`key`) shown under `title` in --help, with its rules."""

    title: typing.ClassVar[str]  # its group in --help and --print-config

    def rules(self, need: Need) -> None:
        """The rules across this section's keys: need(ok, key, what) for each, `key` being one of its own (it may
        read the other sections' keys: `self` is the whole TrainConfig)."""
