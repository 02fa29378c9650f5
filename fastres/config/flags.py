"""The command line of `python -m fastres.train`: one flag per config key, presets, the resolved config.

Precedence, lowest first: the defaults (fastres.config.keys), then a preset (`--config NAME` for a
file shipped in fastres/config/presets/, or `--config PATH.yaml`), then command-line flags. With no
`--data` and no `--config`, the `builtin` preset applies: a run on the built-in dataset sized for a CPU.
"""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Any

from fastres import FastresError
from fastres.config.help import HELP
from fastres.config.keys import CHOICES, ConfigError, TrainConfig, _num, field_types, is_list
from fastres.config.presets import load_preset, preset_names

__all__ = ["build_parser", "launch_world_size", "parse_args", "parse_command_line", "print_schedule_requested"]


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
    types_ = field_types()
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
    if cfg.resume is not None:  # validated once merged with the run's saved config (fastres.run.resume)
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
