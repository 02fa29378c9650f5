"""Plots and a report.md from run folders: `python -m fastres.report RUN_DIR [RUN_DIR ...]`.

    python -m fastres.report runs/resnet50-20261123-101500            # -> runs/resnet50-.../report/
    python -m fastres.report runs/lr0.1 runs/lr0.2 runs/lars --out cmp  # three runs overlaid, in cmp/

Reads each run folder's metrics.jsonl and config.yaml (nothing else, so it works on a run
that is still training and on a copy of the two files) and writes:

  accuracy.png    val top-1 and top-5 against epoch and against wall time
  loss.png        training loss against epoch and against wall time
  schedule.png    learning rate and momentum against epoch
  throughput.png  training images per second against epoch
  report.md       final and best accuracy, wall and training time, img/s, bad files skipped and
                  resumes per run; the settings that differ between the runs (one run: its main
                  settings); the plots

Several runs are overlaid, each named by its folder. Needs matplotlib (pip install fastres[report]).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastres import FastresError
from fastres.report.markdown import write_markdown
from fastres.report.plots import plot_runs
from fastres.report.runs import read_runs
from fastres.tools.cli import ToolParser, run_tool

__all__ = ["build_parser", "main", "write_report"]


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> dict[str, Path]:
    """Read the runs, write the PNGs and report.md into `out` (default: RUN/report for one run, else
    ./report); returns every written file by name ("report" for report.md)."""
    if not run_dirs:
        raise FastresError("no run folder given")
    runs = read_runs(list(run_dirs))
    out_dir = Path(out).expanduser() if out else (runs[0].path / "report" if len(runs) == 1 else Path("report"))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FastresError(f"--out {out_dir}: cannot make the folder ({e.strerror or e})") from None
    written = plot_runs(runs, out_dir)
    report = out_dir / "report.md"
    write_markdown(runs, report, written)
    return {**written, "report": report}


def build_parser() -> ToolParser:
    p = ToolParser("fastres.report", description=__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (each with metrics.jsonl)")
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="folder for the PNGs and report.md, made if missing (default: RUN_DIR/report for one run, "
        "./report for several)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        written = write_report(args.runs, args.out)
        print(f"fastres report: wrote {written['report']}")
        for name, path in written.items():
            if name != "report":
                print(f"  {path}")
        return 0

    return run_tool("fastres.report", body)


if __name__ == "__main__":
    sys.exit(main())
