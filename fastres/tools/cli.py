"""What every after-training tool's command line shares: its name, one-line usage errors, exit codes.

    parser = ToolParser("fastres.eval", description=__doc__)
    return run_tool("fastres.eval", lambda: _main(parser.parse_args(argv)))

A tool is reached as `python -m fastres.eval` or as its console script `fastres-eval`
(pyproject.toml); messages name it the way it was called. A `FastresError` (a bad
checkpoint, image, folder or flag value) ends as one line on stderr and exit status 2;
argparse's own usage errors are one line and status 2 as well. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fastres import ArgumentParser, FastresError

__all__ = ["ToolParser", "prog_name", "run_tool"]


def prog_name(module: str) -> str:
    """`fastres-eval` when started by that console script, else `python -m fastres.eval`."""
    script = "fastres-" + module.rsplit(".", 1)[-1]
    return script if Path(sys.argv[0]).name == script else f"python -m {module}"


class ToolParser(ArgumentParser):
    """fastres's parser (one-line usage errors, no abbreviated flags) with the tool's name as it was
    called and the module docstring kept as written."""

    def __init__(self, module: str, description: str | None = None, **kw):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog_name(module), description=description, **kw)


def run_tool(module: str, body: Callable[[], int]) -> int:
    """body()'s exit status; a FastresError becomes one line on stderr and status 2, Ctrl-C status 130,
    a closed pipe on stdout status 1 without a traceback."""
    try:
        return body()
    except FastresError as e:
        print(f"{prog_name(module)}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog_name(module)}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader left (`... | head`): stop quietly; Python would print a traceback at exit
        # while flushing stdout again, so point stdout at /dev/null first
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
