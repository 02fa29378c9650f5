"""fastres.config: the one typed training config: its keys, presets and flags (above data, model, optim and
distributed, whose choices it lists; below the run machinery and the commands).

  key       a key's declaration (default, --help sentence, range or choices), ConfigError
  sections  the sections that declare the keys (data, model, batch, optimizer, schedule, execution,
            distributed, run), each with its rules
  keys      TrainConfig: every key, flat, from the sections; the choices and ranges of each key, the checks
  help      the --help sentences, grouped as --help shows them
  presets   the shipped presets (presets/*.yaml) and YAML files of config keys
  flags     the command line: resolve_command_line (values and their sources), build_parser,
            --print-config, --print-schedule

Unknown keys and wrong types are errors that name the key; the resolved config is written
into the run folder and every checkpoint.
"""

from fastres.config.flags import (
    Resolved,
    build_parser,
    launch_world_size,
    parse_args,
    parse_command_line,
    print_config_requested,
    print_schedule_requested,
    resolve_command_line,
    smoke_requested,
)
from fastres.config.help import HELP
from fastres.config.keys import CHOICES, DEVICES, PRECISIONS, RANGES, ConfigError, TrainConfig
from fastres.config.presets import PRESET_DIR, load_preset, preset_names

__all__ = [
    "CHOICES",
    "DEVICES",
    "HELP",
    "PRECISIONS",
    "PRESET_DIR",
    "RANGES",
    "ConfigError",
    "Resolved",
    "TrainConfig",
    "build_parser",
    "launch_world_size",
    "load_preset",
    "parse_args",
    "parse_command_line",
    "preset_names",
    "print_config_requested",
    "print_schedule_requested",
    "resolve_command_line",
    "smoke_requested",
]
