"""Undecodable samples met during training: gathered from every rank, listed, logged, bounded.

The loaders (fastres.data) replace a sample they cannot decode by a neutral substitute and
report it once (`take_new_bad()`). At each log step and after validation the ranks pool
what they found; rank 0 appends the new ones to RUN/bad_files.txt (which later attempts
read, so they never decode those files again and substitute them identically) and writes
a `bad_file` record per file to metrics.jsonl. More than `--max-bad-samples` in total stops
the run with a message that names the list.
"""

from __future__ import annotations

from pathlib import Path

from fastres import FastresError
from fastres.data import BAD_LIST, append_bad_list, read_bad_list
from fastres.distributed import collectives as coll

__all__ = ["BAD_FILES_NAME", "BadSampleLedger", "TooManyBadSamples", "read_bad_files"]

BAD_FILES_NAME = BAD_LIST  # RUN/bad_files.txt (fastres.data.bad: one `path<TAB>reason` per line)


class TooManyBadSamples(FastresError):
    """More undecodable samples than --max-bad-samples allows."""

    shared = True  # every rank meets it: rank 0 says it


def read_bad_files(run_dir: Path) -> dict[str, str]:
    """path -> reason, from RUN/bad_files.txt (empty when there is none)."""
    return dict(read_bad_list(Path(run_dir) / BAD_FILES_NAME))


class BadSampleLedger:
    def __init__(self, run_dir: Path, limit: int, groups, writer: bool, write_record, say):
        self.path = Path(run_dir) / BAD_FILES_NAME
        self.known = read_bad_files(run_dir)
        self.limit, self.groups, self.writer = limit, groups, writer
        self.write_record, self.say = write_record, say

    def drain(self, *loaders) -> int:
        """Pool every rank's newly found bad samples (a collective: call on every rank); total so far."""
        mine = [item for loader in loaders for item in getattr(loader, "take_new_bad", list)()]
        found = {
            p: why for rank_items in coll.gather_objects(self.groups, mine, "bad samples") for p, why in rank_items
        }
        new = {p: why for p, why in sorted(found.items()) if p not in self.known}
        if new and self.writer:
            append_bad_list(self.path, new.items())
            for p, why in new.items():
                self.say(f"fastres: cannot decode {p} ({why}): training on with a neutral substitute; "
                         f"listed in {self.path}")  # fmt: skip
                self.write_record("bad_file", path=p, reason=why)
        self.known.update(new)
        if len(self.known) > self.limit:
            raise TooManyBadSamples(
                f"{len(self.known)} samples could not be decoded, more than --max-bad-samples {self.limit}; "
                f"they are listed in {self.path}: check the dataset (python -m fastres.data check --decode)"
            )
        return len(self.known)
