"""The command line of `python -m fastres.train`: one flag per config key, presets, the resolved config.

Precedence, lowest first: the defaults (fastres.config.keys: the ResNet-50 ImageNet recipe), then a
preset (`--config NAME` for a file shipped in fastres/config/presets/, or `--config PATH.yaml`), then
command-line flags. With no `--data` and no `--config`, the `builtin` preset applies: a run on the
built-in dataset sized for a CPU.

Every value keeps where it came from (`Resolved.sources`): `--print-config` prints them, `--help`
shows the defaults that apply to the command line given (with `--data` and `--config` taken into
account), and an error about a value the user did not give says where it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from fastres import ArgumentParser, FastresError
from fastres.config.help import help_groups
from fastres.config.key import _num
from fastres.config.keys import CHOICES, FLAG, ConfigError, TrainConfig, field_types, is_list
from fastres.config.presets import load_preset, preset_names

__all__ = [
    "Resolved",
    "build_parser",
    "launch_world_size",
    "parse_args",
    "parse_command_line",
    "print_config_requested",
    "print_schedule_requested",
    "resolve_command_line",
    "smoke_requested",
]

RECIPE = "the ResNet-50 ImageNet recipe's default"  # the source of a value nothing else set
PATH_KEYS = ("data", "train_list", "val_list")  # stored absolute: a run folder is used from anywhere


@dataclasses.dataclass
class Resolved:
    """A command line, resolved: the config, the keys it set, and where every value came from."""

    cfg: TrainConfig
    given: frozenset[str]  # flags given and, with an explicit --config, the preset's keys
    sources: dict[str, str]  # key -> RECIPE, "preset NAME", FLAG or what derived it
    title: str = "the resolved config of this command line"  # --print-config's first line
    said: tuple[str, ...] = ()  # lines for the user (stderr, rank 0): what resolving changed that no one gave

    def describe(self, notes: dict[str, str] | None = None) -> str:
        """--print-config: every key as YAML (a preset file could hold it), its source in a comment, then
        `notes[key]` where given (what a value resolves to on this machine, e.g. precision auto)."""
        values = self.cfg.to_dict()
        width = max(len(k) for k in values) + 2
        lines = [f"# {self.title}; after each value, where it came from"]
        for title, keys in help_groups().items():
            lines.append(f"# {title}")
            for key in keys:
                text = yaml.safe_dump({key: values[key]}, default_flow_style=True, width=1 << 16).strip()[1:-1]
                source = self.sources[key]
                if key == "data" and values[key] is None:
                    source += "; none: the built-in dataset, under $FASTRES_DATA or ~/.cache/fastres"
                if notes and key in notes:
                    source += f"; {notes[key]}"
                lines.append(f"{text:<{width + 24}} # {source}")
        return "\n".join(lines)


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


def _default_text(key: str, preset: dict[str, Any], preset_name: str | None, implicit: bool) -> str:
    """`(default: 1, preset builtin; with --data: 5)`: the value that applies and, for the builtin
    preset (which --data replaces), the recipe's where it differs."""
    recipe = getattr(TrainConfig(), key)
    if key not in preset:
        return f"(default: {_show(recipe)})"
    text = f"(default: {_show(preset[key])}, preset {preset_name}"
    if implicit and preset[key] != recipe:
        text += f"; with --data: {_show(recipe)}"
    return text + ")"


def build_parser(
    prog: str = "python -m fastres.train",
    description: str | None = None,
    defaults: dict[str, Any] | None = None,
    preset: str | None = None,
    implicit: bool = False,
) -> argparse.ArgumentParser:
    """The flag parser: one flag per config key, grouped as in --help (help_groups), each with its sentence and the
    default that applies. `defaults`: the preset's values; `preset`: its name; `implicit`: the preset
    applies because neither --data nor --config was given (the builtin preset)."""
    defaults = defaults or {}
    if preset is None:
        applies = "the ResNet-50 ImageNet recipe's (--data without --config)"
    elif implicit:
        applies = (
            f"those of preset {preset}, which applies without --data and --config; with --data the ResNet-50 "
            "ImageNet recipe's apply instead (shown as 'with --data' where they differ)"
        )
    else:
        applies = f"those of preset {preset} where it sets a key, else the ResNet-50 ImageNet recipe's"
    epilog = (
        f"Defaults shown are {applies}; flags override them. `--help` with --data and/or --config shows the "
        "defaults of that command line; --print-config prints the whole resolved config. Unknown keys and wrong "
        "types are errors naming the key. Valid values of a choice flag are in its {braces}."
    )
    parser = ArgumentParser(
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
        "this launch; for the images of the dataset the run trains on, or --train-images) and exit, reading no image "
        "and no device; refused as training would refuse it",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=argparse.SUPPRESS,
        help="a check in seconds that every part of a run works here: preset smoke (resnet18, 32 px, one epoch) "
        "on a 250-image copy of the built-in dataset, checkpoints, validation, then python -m fastres.eval on the "
        "checkpoint; says whether it passed. Other flags still apply",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the resolved config of this command line, each value with where it came from (preset, "
        "default, flag), and exit, touching no data and no device",
    )
    types_ = field_types()
    for title, keys in help_groups().items():
        group = parser.add_argument_group(title)
        for key, sentence in keys.items():
            tp, optional = types_[key]
            flag = "--" + key.replace("_", "-")
            text = f"{sentence} {_default_text(key, defaults, preset, implicit)}"
            if tp is bool:
                group.add_argument(
                    flag, dest=key, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
                )
            elif is_list(tp):
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


def _preset_of(argv: list[str]) -> tuple[str | None, bool]:
    """(the preset a command line selects, whether implicitly): --config, else builtin when --data is
    not given."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    pre.add_argument("--data")
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        return known.config, False
    return ("builtin", True) if known.data in (None, "none", "null") else (None, False)


def _absolute(path: str | None) -> str | None:
    """A path as the run folder stores it: absolute, `~` expanded, symlinks resolved."""
    return None if path is None else str(Path(path).expanduser().resolve())


def resolve_command_line(argv: list[str] | None = None) -> Resolved:
    """Flags -> the validated config, the keys the command line set, and the source of every value.

    The keys set are the flags given and, with an explicit --config, the preset's keys: on a
    resume they are compared with the run's saved config. `--resume auto` resolves like a fresh
    run (its first attempt is one); `--resume RUN|FILE` leaves the values unresolved, to be
    validated merged with the saved config. Paths (--data, --train-list, --val-list) become
    absolute. Raises ConfigError; argparse exits 2 on malformed flags."""
    argv = sys.argv[1:] if argv is None else argv
    preset, implicit = _preset_of(argv)
    values = load_preset(preset) if preset else {}
    origin = f"preset {preset}" + (" (no --data, no --config)" if implicit else "")
    sources = {f.name: RECIPE for f in dataclasses.fields(TrainConfig)} | {k: origin for k in values}
    args = vars(build_parser(defaults=values, preset=preset, implicit=implicit).parse_args(argv))
    explicit_preset = args.pop("config", None) is not None
    args.pop("print_schedule", None)  # fastres.train's: see print_schedule_requested
    args.pop("print_config", None)
    args.pop("smoke", None)  # fastres.train's: see smoke_requested
    if "batch_size" in args and "global_batch" not in args and values.get("global_batch") is not None:
        values["global_batch"] = None  # a --batch-size flag overrides a preset's global batch
        sources["global_batch"] = "--batch-size on the command line (it replaces the preset's --global-batch)"
    given = set(args) | (set(values) if explicit_preset else set())
    values.update(args)
    sources.update({k: FLAG for k in args})
    for key in PATH_KEYS:
        if values.get(key) is not None:
            values[key] = _absolute(values[key])
    cfg = TrainConfig(**values)
    if cfg.resume not in (None, "auto"):
        # --resume RUN|FILE: the flags change a run whose other values are saved in its checkpoint; they are
        # validated merged with it (fastres.run.resume), each value's source known there
        return Resolved(cfg, frozenset(given), sources)
    # a fresh run, or --resume auto: every attempt runs the same whole command line, and the first one
    # starts the run, so it resolves as a fresh run's; the resume then compares it with the saved config
    said = _fit_warmup(cfg, given, sources)
    cfg.validate(sources)
    world = launch_world_size()
    if "batch_size" in args and "global_batch" in args and cfg.global_batch is not None:
        if cfg.batch_size * world * cfg.accumulate != cfg.global_batch:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} x {world} processes x --accumulate {cfg.accumulate} is not "
                f"--global-batch {cfg.global_batch}: give one of the two"
            )
    if cfg.global_batch is not None:
        procs = f"{world} process{'es' if world != 1 else ''}"
        sources["batch_size"] = f"--global-batch {cfg.global_batch} / ({procs} x --accumulate {cfg.accumulate})"
    return Resolved(cfg.resolve_batch(world), frozenset(given), sources, said=said)


def _fit_warmup(cfg: TrainConfig, given: set[str], sources: dict[str, str]) -> tuple[str, ...]:
    """A warm-up the command line did not give (no --warmup-epochs, no explicit preset setting it), fitted to a
    short run (ScheduleConfig.short_warmup): the value, its source, and the line that says so."""
    short = None if "warmup_epochs" in given else cfg.short_warmup()
    if short is None:
        return ()
    was, source = cfg.warmup_epochs, sources["warmup_epochs"]
    cfg.warmup_epochs = short
    sources["warmup_epochs"] = (f"{_num(was)} from {source}, shortened to half of --epochs {cfg.epochs}: give "
                                "--warmup-epochs to choose")  # fmt: skip
    return (f"fastres: --warmup-epochs {_num(short)}: the warm-up of {_num(was)} epochs ({source}) is shortened to "
            f"half of this {cfg.epochs}-epoch run; give --warmup-epochs to choose another",)  # fmt: skip


def parse_command_line(argv: list[str] | None = None) -> tuple[TrainConfig, frozenset[str]]:
    """Flags -> (validated TrainConfig, the keys the command line set): see resolve_command_line."""
    resolved = resolve_command_line(argv)
    return resolved.cfg, resolved.given


def launch_world_size() -> int:
    """The number of processes the launcher says this run has (1 without a launcher)."""
    from fastres.distributed.launcher import read_launcher

    try:
        return read_launcher(os.environ).world
    except FastresError:
        return 1  # the trainer reports a malformed launcher environment itself


def _requested(flag: str, argv: list[str] | None) -> bool:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument(flag, action="store_true")
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return getattr(known, flag.lstrip("-").replace("-", "_"))


def print_schedule_requested(argv: list[str] | None = None) -> bool:
    """True when the command line asks for --print-schedule."""
    return _requested("--print-schedule", argv)


def smoke_requested(argv: list[str] | None = None) -> bool:
    """True when the command line asks for --smoke."""
    return _requested("--smoke", argv)


def print_config_requested(argv: list[str] | None = None) -> bool:
    """True when the command line asks for --print-config."""
    return _requested("--print-config", argv)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Flags -> validated TrainConfig (see parse_command_line)."""
    return parse_command_line(argv)[0]
