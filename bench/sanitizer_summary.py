"""What a compute-sanitizer log says about fastres's kernels, apart from CUDA API errors of torch and CuPy.

    python bench/sanitizer_summary.py LOG --tool memcheck     # FIGURES lines; exit 0 (pass) or 1 (fail)

compute-sanitizer counts in its ERROR SUMMARY every CUDA API call that returned an error
(`--report-api-errors explicit`, its default), and torch and CuPy make such calls on purpose
inside their own code (probing a device attribute, querying an event that has not completed,
looking up a driver entry point): a log of fastres's kernels, all clean, can end in "ERROR
SUMMARY: 34 errors". bench/gpu_suite.sh's sanitizer parts decide with this file instead of the
exit status:

  - an API error whose saved host backtrace does not pass through fastres (fastres/_C, the
    run-time compiled kernels' launches) is reported on its own line, by call and library, and
    does not fail the part;
  - every other error counts: the ERROR SUMMARY (or racecheck's hazard count) less those API
    errors, so that a report of a kind this file does not know (a new message of a new
    compute-sanitizer) counts as fastres's, never the other way round;
  - the script under the sanitizer must have printed `ALL KERNELS RAN` (bench/gpu_kernels_once.py's
    last line: every op ran and matched the CPU kernels).

tests/test_gpu_suite.py checks it on logs in compute-sanitizer's format.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

_PREFIX = re.compile(r"^========= ?")
_API = re.compile(r"Program hit (\w+) \(error \d+\).* on CUDA API call to (\w+)")
_OURS = re.compile(r"fastres|_C\.cpython")  # host frames in fastres's module or package
_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) errors?")
_RACES = re.compile(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, (\d+) warnings?\)")


def reports(text: str) -> list[list[str]]:
    """The log's reports: runs of `=========` lines from one at the margin to the next."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("========="):
            continue
        body = _PREFIX.sub("", line, count=1)
        if body and not body.startswith(" "):
            out.append([body])
        elif out and body.strip():
            out[-1].append(body.strip())
    return out


def summarize(text: str, tool: str) -> tuple[bool, list[str]]:
    """(passed, FIGURES lines) for the log `text` of compute-sanitizer's `tool`."""
    api = collections.Counter()
    ours_api = 0
    for rep in reports(text):
        m = _API.search(rep[0])
        if not m:
            continue
        libraries = sorted({Path(f.split(" in ", 1)[1]).name for f in rep[1:] if " in /" in f})
        if any(_OURS.search(f) for f in rep[1:]):
            ours_api += 1
        else:
            api[f"{m.group(1)} on {m.group(2)} ({', '.join(libraries) or 'no host frames'})"] += 1
    summaries = [int(n) for n in _SUMMARY.findall(text)]  # one per process the sanitizer followed
    races = _RACES.findall(text)
    total = sum(summaries) if summaries else None
    warnings = sum(int(w) for _, w in races)
    if races:
        total = max(total or 0, sum(int(e) for e, _ in races) + sum(api.values()))
    lines = []
    if total is None:
        return False, [f"compute-sanitizer {tool}: no ERROR SUMMARY in the log (the run did not finish)"]
    counted = total - sum(api.values())
    ran = "ALL KERNELS RAN" in text
    lines.append(
        f"compute-sanitizer {tool}: {counted} errors in fastres's kernels and launches"
        + (f" ({ours_api} of them CUDA API errors of fastres's own calls)" if ours_api else "")
        + (f", {warnings} racecheck warnings" if races else "")
        + ("" if ran else "; the script did not print ALL KERNELS RAN")
    )
    if api:
        detail = "; ".join(f"{n} x {what}" for what, n in api.most_common())
        lines.append(f"CUDA API errors inside torch or CuPy, reported and not counted ({sum(api.values())}): {detail}")
    return counted == 0 and ran, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", help="compute-sanitizer's output")
    ap.add_argument("--tool", default="memcheck", help="the tool that wrote it (for the figures' wording)")
    args = ap.parse_args()
    passed, lines = summarize(Path(args.log).read_text(errors="replace"), args.tool)
    for line in lines:
        print(f"FIGURES {line}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
