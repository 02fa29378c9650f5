"""fastres.run.console: stdout and stderr as sinks that may fail, on real pipes, files and closed streams.

tests/test_faults.py runs `python -m fastres.train ... | head -1` end to end; here each piece is driven alone:
which failures drop a stream and which propagate, where the dropped stream's descriptor points afterwards,
the one line on the other stream, and the records (those before a record sink is attached included).
"""

from __future__ import annotations

import errno
import io
import os
import sys

import pytest

from fastres.run.console import GuardedStream, Sinks, active_sinks, describe_failure, guarded_streams


def pipe_stream() -> tuple[io.TextIOWrapper, int]:
    """A text stream on the write end of a real pipe, and the read end's descriptor."""
    r, w = os.pipe()
    return io.TextIOWrapper(io.FileIO(w, "w"), encoding="utf-8", write_through=True), r


def is_devnull(fd: int) -> bool:
    st, null = os.fstat(fd), os.stat(os.devnull)
    return (st.st_dev, st.st_ino, st.st_rdev) == (null.st_dev, null.st_ino, null.st_rdev)


@pytest.mark.parametrize(
    "error, said",
    [
        (BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)), "Broken pipe (EPIPE)"),
        (OSError(errno.EIO, os.strerror(errno.EIO)), "Input/output error (EIO)"),
        (OSError(errno.ENOSPC, ""), f"{os.strerror(errno.ENOSPC)} (ENOSPC)"),  # no strerror: the system's
        (ValueError("I/O operation on closed file."), "closed stream"),
        (OSError("no errno"), "OSError: no errno"),
    ],
)
def test_describe_failure_names_the_reason_and_the_errno(error, said):
    assert describe_failure(error) == said


def test_a_pipe_whose_reader_went_away_is_dropped_its_descriptor_is_dev_null_and_the_other_stream_says_so():
    out, r = pipe_stream()
    err = io.StringIO()
    sinks = Sinks(out, err)
    records = []
    sinks.attach(lambda **kw: records.append(kw))
    try:
        assert sinks.stdout.write("first\n") == 6 and os.read(r, 100) == b"first\n"
        os.close(r)  # the reader goes away: the next write meets EPIPE
        assert sinks.stdout.write("second\n") == 7  # written as far as the caller knows
        assert sinks.stdout.dropped and not sinks.stderr.dropped
        assert is_devnull(out.fileno())  # later writes of anyone, and the flush at exit, go nowhere
        assert err.getvalue() == (
            "fastres: stdout failed (Broken pipe (EPIPE)): no more output there; training goes on, its records "
            "are in metrics.jsonl\n"
        )
        assert records == [{"sink": "stdout", "reason": "Broken pipe (EPIPE)"}]
        for _ in range(3):  # dropped for good: no second line, no second record, nothing raised
            sinks.stdout.write("more\n")
            sinks.stdout.flush()
        assert err.getvalue().count("\n") == 1 and len(records) == 1 and not sinks.stdout.isatty()
    finally:
        out.close()


def test_a_closed_stream_is_dropped_and_a_character_it_cannot_encode_is_not():
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    err = io.StringIO()
    sinks = Sinks(ascii_out, err)
    with pytest.raises(UnicodeEncodeError):  # the text's fault, not the sink's: raised as before
        sinks.stdout.write("caf\u00e9\n")
    assert not sinks.stdout.dropped and err.getvalue() == ""
    ascii_out.close()
    sinks.stdout.write("x")  # ValueError: I/O operation on closed file
    assert sinks.stdout.dropped and "stdout failed (closed stream)" in err.getvalue()


def test_drops_before_a_record_sink_is_attached_are_recorded_in_order_when_it_is_and_none_after_detach():
    a, b = io.StringIO(), io.StringIO()
    sinks = Sinks(a, b)
    a.close()
    sinks.stdout.write("lost")  # before attach: kept
    assert "stdout failed (closed stream)" in b.getvalue()
    b.close()
    sinks.stderr.write("lost too")  # both gone: the line about it has nowhere to go, and nothing raises
    assert sinks.stdout.dropped and sinks.stderr.dropped
    records = []
    sinks.attach(lambda **kw: records.append(kw))
    assert records == [{"sink": "stdout", "reason": "closed stream"}, {"sink": "stderr", "reason": "closed stream"}]
    sinks.detach()
    c, d = io.StringIO(), io.StringIO()
    later = Sinks(c, d)
    later.attach(lambda **kw: records.append(kw))
    later.detach()
    c.close()
    later.stdout.write("x")  # dropped while detached: recorded at the next attach
    assert len(records) == 2
    later.attach(lambda **kw: records.append(kw))
    assert records[2:] == [{"sink": "stdout", "reason": "closed stream"}]


def test_everything_but_write_and_flush_is_the_wrapped_stream_s():
    inner = io.StringIO()
    stream = GuardedStream(inner, "stdout", Sinks(io.StringIO(), io.StringIO()))
    stream.write("abc")
    assert stream.getvalue() == "abc" and stream.wrapped is inner and stream.isatty() is False


def test_guarded_streams_wraps_sys_streams_for_the_block_nests_and_restores_them():
    saved = sys.stdout, sys.stderr
    assert active_sinks() is None
    with guarded_streams() as outer:
        assert (sys.stdout, sys.stderr) == (outer.stdout, outer.stderr) and outer.stdout.wrapped is saved[0]
        with guarded_streams() as inner:
            assert active_sinks() is inner and inner.stdout.wrapped is outer.stdout
        assert active_sinks() is outer and sys.stdout is outer.stdout
        replaced = io.StringIO()
        sys.stderr = replaced  # someone else's redirection inside the block is left alone
    try:
        assert active_sinks() is None and sys.stdout is saved[0] and sys.stderr is replaced
    finally:
        sys.stderr = saved[1]
