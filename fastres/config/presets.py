"""Presets: YAML files of config keys, shipped in fastres/config/presets/ or given as a path."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from fastres.config.keys import ConfigError, coerce, field_types

__all__ = ["PRESET_DIR", "load_preset", "preset_names"]

PRESET_DIR = Path(__file__).parent / "presets"


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
    known = field_types()
    out = {}
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"--config {path}: unknown key {key!r}{hint}")
        out[key] = coerce(key, value, f"--config {path}")
    return out
