"""Undecodable samples met during training: gathered from every rank, listed, logged, bounded.

The loaders (fastres.data) replace a sample they cannot decode by a neutral substitute and
report it once (`take_new_bad()`). At each log step and after validation the ranks pool
what they found; rank 0 appends the new ones to RUN/bad_files.txt (which later attempts
read, so they never decode those files again and substitute them identically) and writes
a `bad_file` record per file to metrics.jsonl. More than `--max-bad-samples` of the training set, or
of the validation set (each set's own 0.1% by default), stops the run with a message that names the list.
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
    """limits: the most bad samples of each set ("train", "val") before the run stops; split_of(path): the set
    a file belongs to (a validation file counts against the validation set's limit, not the training set's)."""

    def __init__(self, run_dir: Path, limits: dict[str, int], split_of, groups, writer: bool, write_record, say):
        self.path = Path(run_dir) / BAD_FILES_NAME
        self.known = read_bad_files(run_dir)
        self.limits, self.split_of, self.groups, self.writer = limits, split_of, groups, writer
        self.write_record, self.say = write_record, say

    def drain(self, split: str, *loaders) -> int:
        """Pool every rank's newly found bad samples of `split`'s loaders (a collective: call on every rank); that
        set's total so far."""
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
        count = sum(self.split_of(p) == split for p in self.known)
        if count > self.limits[split]:
            what = "training" if split == "train" else "validation"
            raise TooManyBadSamples(
                f"{count} {what} samples could not be decoded, more than --max-bad-samples {self.limits[split]} "
                f"for the {what} set; they are listed in {self.path}: check the dataset "
                "(python -m fastres.data check --decode)"
            )
        return count
