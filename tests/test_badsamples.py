"""fastres.run.badsamples.BadSampleLedger: every rank's undecodable samples pooled, listed once, counted per set.

Loaders here are stand-ins that report given (path, reason) pairs the way fastres.data's loaders do
(`take_new_bad()`: each bad file once); the pooling runs over real Gloo processes (tests/multiproc.py);
RUN/bad_files.txt is read back with fastres.data's reader. tests/test_bad_samples.py checks the loaders'
side on real JPEGs, tests/test_preemption.py a whole run with bad files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fastres.data import append_bad_list, read_bad_list
from fastres.run.badsamples import BAD_FILES_NAME, BadSampleLedger, TooManyBadSamples, read_bad_files

from multiproc import check_ok, run_ranks


class Loader:
    """Reports `batches` of bad samples, one list per call of take_new_bad()."""

    def __init__(self, *batches: list[tuple[str, str]]):
        self.batches = list(batches)

    def take_new_bad(self) -> list[tuple[str, str]]:
        return self.batches.pop(0) if self.batches else []


def split_of(path: str) -> str:
    return "val" if "/val/" in path else "train"


def ledger(run: Path, limits=None, groups=None, writer=True):
    said, records = [], []
    led = BadSampleLedger(run, limits or {"train": 5, "val": 5}, split_of, groups, writer,
                          lambda kind, **kw: records.append((kind, kw)), said.append)  # fmt: skip
    return led, said, records


def test_new_bad_samples_are_listed_said_and_recorded_once_each_in_path_order(tmp_path):
    led, said, records = ledger(tmp_path)
    train = Loader([("/d/train/b.JPEG", "bad Huffman"), ("/d/train/a.JPEG", "two SOI")], [("/d/train/c.JPEG", "x")])
    val = Loader([("/d/val/v.JPEG", "truncated")])
    assert led.drain("train", train, object()) == 2  # a loader without take_new_bad reports nothing
    assert led.drain("val", val) == 1
    assert led.drain("train", train) == 3
    want = [("/d/train/a.JPEG", "two SOI"), ("/d/train/b.JPEG", "bad Huffman"), ("/d/val/v.JPEG", "truncated"),
            ("/d/train/c.JPEG", "x")]  # fmt: skip
    assert read_bad_list(tmp_path / BAD_FILES_NAME) == want and read_bad_files(tmp_path) == dict(want)
    assert records == [("bad_file", {"path": p, "reason": why}) for p, why in want]
    path = tmp_path / BAD_FILES_NAME
    assert said == [f"fastres: cannot decode {p} ({why}): training on with a neutral substitute; listed in {path}"
                    for p, why in want]  # fmt: skip


def test_files_a_former_attempt_listed_are_not_listed_again_but_count(tmp_path):
    append_bad_list(tmp_path / BAD_FILES_NAME, [("/d/train/a.JPEG", "two SOI"), ("/d/val/v.JPEG", "cut")])
    led, said, records = ledger(tmp_path)
    again = Loader([("/d/train/a.JPEG", "two SOI"), ("/d/train/n.JPEG", "new")])
    assert led.drain("train", again) == 2 and led.drain("val") == 1
    assert [r[1]["path"] for r in records] == ["/d/train/n.JPEG"] and len(said) == 1
    assert len(read_bad_list(tmp_path / BAD_FILES_NAME)) == 3


def test_a_rank_that_does_not_write_counts_the_same_and_writes_nothing(tmp_path):
    led, said, records = ledger(tmp_path, writer=False)
    assert led.drain("train", Loader([("/d/train/a.JPEG", "x"), ("/d/val/v.JPEG", "y")])) == 1
    assert led.drain("val") == 1
    assert not (tmp_path / BAD_FILES_NAME).exists() and said == [] and records == []


@pytest.mark.parametrize("split, what", [("train", "training"), ("val", "validation")])
def test_one_more_than_a_set_s_limit_stops_with_one_line_naming_the_set_and_the_list(tmp_path, split, what):
    led, _, _ = ledger(tmp_path, limits={"train": 2, "val": 2})
    other = "val" if split == "train" else "train"
    files = [(f"/d/{split}/{i}.JPEG", "x") for i in range(3)] + [(f"/d/{other}/{i}.JPEG", "x") for i in range(3)]
    loader = Loader(files[:2] + files[3:], files[2:3])
    assert led.drain(split, loader) == 2  # at the limit: goes on, though the other set is over its own
    with pytest.raises(TooManyBadSamples) as e:
        led.drain(split, loader)
    assert str(e.value) == (
        f"3 {what} samples could not be decoded, more than --max-bad-samples 2 for the {what} set; they are listed "
        f"in {tmp_path / BAD_FILES_NAME}: check the dataset (python -m fastres.data check --decode)"
    )
    assert len(read_bad_list(tmp_path / BAD_FILES_NAME)) == 6  # listed before the stop: the next attempt knows them
    assert TooManyBadSamples.shared  # every rank meets it: rank 0 says it


def _rank_drains(run: str, reports: list) -> list:
    """One rank: a ledger over the job's groups, drained once per entry of `reports[rank]`; its counts, or the
    error's text when the limit stops it."""
    import os

    import torch

    from fastres.distributed import destroy, discover, init_distributed

    topology = discover()
    groups = init_distributed(topology, device=torch.device("cpu"), timeout=60)
    rank = int(os.environ["RANK"])
    out = []
    try:
        led = BadSampleLedger(Path(run), {"train": 3, "val": 9}, split_of, groups, rank == 0,
                              lambda *a, **k: None, lambda line: None)  # fmt: skip
        for batch in reports[rank]:
            try:
                out.append(led.drain("train", Loader(batch)))
            except TooManyBadSamples as e:
                out.append(str(e).split(",")[0])
                break
    finally:
        destroy(groups)
    return out


def test_two_ranks_pool_what_each_found_and_stop_at_the_same_drain(tmp_path):
    """Rank 0 and rank 1 find different files, and one both find: every rank counts the union; rank 0 alone
    writes the list, each file once; the drain that takes the union past the limit stops both."""
    reports = [
        [[("/d/train/a.JPEG", "x"), ("/d/train/both.JPEG", "x")], [], [("/d/train/d.JPEG", "x")]],
        [[("/d/train/both.JPEG", "x")], [("/d/train/c.JPEG", "x")], []],
    ]
    results = check_ok(run_ranks(_rank_drains, world=2, args=(str(tmp_path), reports), timeout=120))
    stop = "4 training samples could not be decoded"
    assert results == [[2, 3, stop], [2, 3, stop]], results
    listed = [p for p, _ in read_bad_list(tmp_path / BAD_FILES_NAME)]
    assert listed == ["/d/train/a.JPEG", "/d/train/both.JPEG", "/d/train/c.JPEG", "/d/train/d.JPEG"]
