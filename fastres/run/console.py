"""Console output that never stops a run: stdout and stderr as sinks that may fail.

    with guarded_streams():              # fastres.train's main: sys.stdout and sys.stderr wrapped
        ...
        sinks = active_sinks()
        sinks.attach(record)             # the Run: each dropped sink becomes a metrics.jsonl record
        ...
        sinks.detach()

A log reader that goes away (`... | head -1`, a `tee` whose reader dies, a log collector that
restarts) makes the next write to the pipe fail with EPIPE (Python ignores SIGPIPE, so the
write raises BrokenPipeError); a terminal that hangs up gives EIO; a stream closed under the
process gives ValueError. Unguarded, any of them ends the run with a traceback at the next
epoch-end line, losing the work since the last checkpoint.

A failed write drops that stream: its file descriptor is pointed at /dev/null (so nothing
else in the process, a DataLoader worker or Python's own flush at exit, meets the error
again), one line says so on the other stream if it still works, and one `sink_dropped`
record (sink, reason) goes to metrics.jsonl; training, checkpoints and metrics.jsonl go on.
The run's exit status is what it would have been. A character the stream cannot encode is
not a failure of the sink: that error propagates as before.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Callable, Iterator

__all__ = ["GuardedStream", "Sinks", "active_sinks", "describe_failure", "guarded_streams"]


def describe_failure(e: BaseException) -> str:
    """`Broken pipe (EPIPE)`, `Input/output error (EIO)`, `closed stream`: why a write failed."""
    if isinstance(e, OSError) and e.errno is not None:
        name = errno.errorcode.get(e.errno, str(e.errno))
        return f"{e.strerror or os.strerror(e.errno)} ({name})"
    if isinstance(e, ValueError):
        return "closed stream"
    return f"{type(e).__name__}: {e}"


class GuardedStream:
    """A text stream whose write/flush failures drop it instead of raising (everything else is the stream's)."""

    def __init__(self, stream, name: str, sinks: Sinks):
        self._stream, self.name, self._sinks = stream, name, sinks
        self.dropped = False

    @property
    def wrapped(self):
        return self._stream

    def _guard(self, op: Callable, *args):
        if self.dropped:
            return None
        try:
            return op(*args)
        except UnicodeError:
            raise  # the text, not the sink
        except (OSError, ValueError) as e:
            self._sinks.drop(self, e)
            return None

    def write(self, text: str) -> int:
        written = self._guard(self._stream.write, text)
        return len(text) if written is None else written

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def isatty(self) -> bool:
        if self.dropped:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Sinks:
    """The process's guarded stdout and stderr, and where a dropped one is recorded."""

    def __init__(self, stdout, stderr):
        self.stdout = GuardedStream(stdout, "stdout", self)
        self.stderr = GuardedStream(stderr, "stderr", self)
        self._record: Callable[..., None] | None = None
        self._pending: list[dict] = []  # drops before a record sink is attached

    def drop(self, stream: GuardedStream, error: BaseException) -> None:
        """Stop writing to `stream` for good; say it on the other stream and in the run's records."""
        stream.dropped = True
        reason = describe_failure(error)
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            fd = stream.wrapped.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)  # later writes of anyone, and the flush at exit, go nowhere
            finally:
                os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            stream.wrapped.flush()  # what the failed write left in the buffer, now to /dev/null
        other = self.stderr if stream is self.stdout else self.stdout
        other.write(f"fastres: {stream.name} failed ({reason}): no more output there; training goes on, "
                    "its records are in metrics.jsonl\n")  # fmt: skip
        other.flush()
        self._pending.append(dict(sink=stream.name, reason=reason))
        self._emit()

    def attach(self, record: Callable[..., None]) -> None:
        """record(sink=..., reason=...) for every drop, those already seen first."""
        self._record = record
        self._emit()

    def detach(self) -> None:
        self._record = None

    def _emit(self) -> None:
        while self._record is not None and self._pending:
            self._record(**self._pending.pop(0))


_ACTIVE: list[Sinks] = []


def active_sinks() -> Sinks | None:
    """The Sinks of the innermost `guarded_streams()` in force, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def guarded_streams() -> Iterator[Sinks]:
    """sys.stdout and sys.stderr guarded for the block (whatever they are: a pipe, a file, pytest's capture)."""
    saved = sys.stdout, sys.stderr
    sinks = Sinks(*saved)
    sys.stdout, sys.stderr = sinks.stdout, sinks.stderr
    _ACTIVE.append(sinks)
    try:
        yield sinks
    finally:
        _ACTIVE.remove(sinks)
        if sys.stdout is sinks.stdout:
            sys.stdout = saved[0]
        if sys.stderr is sinks.stderr:
            sys.stderr = saved[1]
