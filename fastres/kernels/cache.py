"""Where fastres.kernels keeps what it builds at run time: the cubins of fastres.kernels.rtc and the
CPU modules of fastres.kernels.sim, each in a folder of the user's cache.

    folder = cache_dir("rtc", "FASTRES_RTC_CACHE")   # $FASTRES_RTC_CACHE, $XDG_CACHE_HOME/fastres/rtc,
                                                      # ~/.cache/fastres/rtc, else a temporary folder
    write_atomically(folder / "x.cubin", data)        # ranks of one machine may race: none reads half a file
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "write_atomically"]


def cache_dir(name: str, env: str) -> Path:
    """A writable folder: $`env`, else $XDG_CACHE_HOME/fastres/`name` or ~/.cache/fastres/`name`, else
    a temporary folder of this process."""
    chosen = os.environ.get(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    d = chosen or os.path.join(base, "fastres", name)
    try:
        os.makedirs(d, exist_ok=True)
        if os.access(d, os.W_OK):
            return Path(d)
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix=f"fastres-{name}-"))


def write_atomically(path: Path, data: bytes) -> None:
    """`data` into `path` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
