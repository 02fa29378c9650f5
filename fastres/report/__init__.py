"""fastres.report: plots and a report.md from run folders, finished or running (`python -m fastres.report`);
reads the run folder's files, imports fastres.tools only.

runs      a run folder read back (config.yaml, metrics.jsonl), resumes applied
plots     the PNG figures (matplotlib), several runs overlaid
markdown  report.md: results, configuration or differences, resumes, bad files
cli       the command line
"""

from fastres.report.cli import main, write_report
from fastres.report.runs import Run, read_run, read_runs

__all__ = ["Run", "main", "read_run", "read_runs", "write_report"]
