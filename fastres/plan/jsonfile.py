"""Read a JSON file a flag names; every failure is one line naming the flag and the file."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_json"]


def read_json(path: str, flag: str, error: type[Exception]) -> object:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise error(f"{flag} {path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise error(f"{flag} {path}: not JSON ({e})") from None
