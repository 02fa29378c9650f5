"""The reducer's stream discipline on a stream-ordered backend (its NCCL path), checked on the CPU.

NCCL cannot run two ranks on one GPU, and CI has no GPU at all, so the property that makes the
NCCL path overlap communication with backward is checked here with two stand-ins the reducer
runs on unchanged:
  - a process group (a Python torch.distributed.ProcessGroup, called through dist.all_reduce,
    reduce_scatter and all_gather as NCCL's is) whose collectives, like NCCL's, return at once
    and deliver their result only where a wait orders it: here, at the work's first wait();
  - CUDA streams and events (fastres.distributed.reducer._streams_for) that log every record,
    every stream wait, and which stream is current at each collective and each work.wait().
Each rank's peers are taken to hold the same gradients, so the mean over the ranks is this
rank's own gradient: the values are checked exactly (fp32) or to the wire's precision.

What must hold (docs/design.md: buckets leave while backward goes on, as in DDP):
  - during backward, every bucket's collectives are issued (all stages of the hierarchical
    scheme), on the communication stream, after it waited for the event recorded on the compute
    stream when the bucket was packed;
  - during backward, nothing makes the compute stream wait: no work.wait() while it is the
    current stream, no wait_event on it;
  - `wait()` waits for every collective, unpacks on the communication stream, and makes the
    caller's stream wait on each bucket's final event, recorded after its last collective.
"""

from __future__ import annotations

import contextlib
import datetime
import types

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fastres.distributed import reducer as reducer_mod
from fastres.distributed.reducer import Reducer, bucket_layout

SIZES = [1, 17, 1000, 4097, 3, 250_001, 16, 5, 70_003, 9, 33, 2049, 3001, 777, 12_345, 6, 8191]
SMALL_CAPS = dict(first_bucket_mb=0.002, bucket_cap_mb=0.02)  # ~520 then ~5.2K elements: several buckets


class Log:
    """What happened, in order, and in which phase of the step ("backward", "wait", ...)."""

    def __init__(self):
        self.phase = "setup"
        self.entries: list[dict] = []

    def add(self, kind: str, **fields) -> None:
        self.entries.append({"kind": kind, "phase": self.phase, **fields})

    def of(self, kind: str, phase: str | None = None) -> list[dict]:
        return [e for e in self.entries if e["kind"] == kind and (phase is None or e["phase"] == phase)]


class StandInStream:
    def __init__(self, name: str, log: Log):
        self.name, self.log = name, log

    def wait_event(self, event) -> None:
        self.log.add("stream_wait", stream=self.name, event=event)


class StandInEvent:
    def __init__(self, log: Log):
        self.log, self.recorded_on = log, None

    def record(self, stream=None) -> None:
        self.recorded_on = stream.name
        self.log.add("record", stream=stream.name, event=self)


class StandInStreams:
    """torch.cuda's streams as the reducer uses them (current(), event(), use(), comm)."""

    def __init__(self, log: Log):
        self.log = log
        self.compute = StandInStream("compute", log)
        self.comm = StandInStream("comm", log)
        self._current = [self.compute]

    def current(self) -> StandInStream:
        return self._current[-1]

    def event(self) -> StandInEvent:
        return StandInEvent(self.log)

    @contextlib.contextmanager
    def use(self, stream: StandInStream):
        self._current.append(stream)
        try:
            yield
        finally:
            self._current.pop()


class StandInWork(dist.Work):
    """A collective queued as NCCL's are: the result arrives where a wait orders it (here, at the first wait)."""

    def __init__(self, pg: StandInGroup, what: str, deliver):
        super().__init__()
        self.pg, self.what, self.deliver, self.waits = pg, what, deliver, 0

    def wait(self, timeout=None) -> bool:
        self.pg.log.add("work_wait", stream=self.pg.streams.current().name, what=self.what, work=self)
        if self.waits == 0:
            self.deliver()
        self.waits += 1
        return True


class StandInGroup(dist.ProcessGroup):
    """`size` ranks that all hold this rank's values; this rank is `rank` of them."""

    def __init__(self, name: str, rank: int, size: int, log: Log, streams: StandInStreams, gather_factor: int = 1):
        super().__init__(rank, size)
        self.name, self.log, self.streams, self.gather_factor = name, log, streams, gather_factor
        self._rank, self._size = rank, size
        self.works: list[StandInWork] = []

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size

    def getBackendName(self) -> str:
        return "nccl-stand-in"

    def _queue(self, what: str, deliver) -> StandInWork:
        work = StandInWork(self, what, deliver)
        self.log.add("issue", stream=self.streams.current().name, what=what, work=work)
        self.works.append(work)
        return work

    def allreduce(self, tensors, opts=None):
        t, n = tensors[0], self._size
        return self._queue(f"all_reduce {self.name}", lambda: t.mul_(n))

    def reduce_scatter_single(self, output, input, opts=None):
        L, r = self._size, self._rank

        def deliver():
            output.copy_(input.chunk(L)[r] * L)

        return self._queue(f"reduce_scatter {self.name}", deliver)

    def all_gather_single(self, output, input, opts=None):
        # peer j's shard is the same computation on chunk j of the same packed bucket
        L, r, f = self._size, self._rank, self.gather_factor

        def deliver():
            for j, chunk in enumerate(output.chunk(L)):
                chunk.copy_(input if j == r else chunk * f)

        return self._queue(f"all_gather {self.name}", deliver)

    _reduce_scatter_base = reduce_scatter_single  # torch < 2.12's names
    _allgather_base = all_gather_single


def stand_in_groups(nodes: int, per_node: int, log: Log, streams: StandInStreams):
    """fastres.distributed.groups.ProcessGroups' fields for rank 0 of `nodes` x `per_node`, on NCCL stand-ins."""
    W = nodes * per_node
    g = lambda name, size, **kw: StandInGroup(name, 0, size, log, streams, **kw)
    hier = nodes > 1 and per_node > 1
    return types.SimpleNamespace(
        topology=types.SimpleNamespace(world_size=W, local_rank=0, local_world_size=per_node, num_nodes=nodes),
        backend="nccl",
        world=g("world", W),
        intra=g("intra", per_node) if hier else None,
        inter=g("inter", nodes) if hier else None,
        intra_gather=g("intra_gather", per_node, gather_factor=W) if hier else None,
        intra_ranks=list(range(per_node)),
        inter_ranks=[n * per_node for n in range(nodes)],
        timeout=datetime.timedelta(seconds=60),
    )


CASES = [
    ("flat", 1, 4, "fp32"),
    ("flat", 1, 2, "bf16"),
    ("hierarchical", 2, 2, "fp32"),
    ("hierarchical", 2, 4, "bf16"),
]


@pytest.mark.parametrize("algorithm,nodes,per_node,wire", CASES)
def test_nccl_path_never_makes_backward_wait(monkeypatch, algorithm, nodes, per_node, wire):
    log = Log()
    streams = StandInStreams(log)
    monkeypatch.setattr(reducer_mod, "_streams_for", lambda device: streams, raising=False)
    groups = stand_in_groups(nodes, per_node, log, streams)
    params = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in SIZES)
    layout = bucket_layout(params, groups, algorithm=algorithm, **SMALL_CAPS)
    r = Reducer(layout, groups, algorithm=algorithm, wire_dtype=wire, **SMALL_CAPS)
    assert r.algorithm == algorithm and len(r.buckets) >= 5
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(n, generator=gen) * 10.0 ** ((i % 5) - 2) for i, n in enumerate(SIZES)]

    log.phase = "backward"
    sum((p * g).sum() for p, g in zip(params, grads)).backward()
    log.phase = "wait"
    r.wait()
    log.phase = "after"

    # 1. nothing in a hook made the compute stream wait
    blocked = [e for e in log.of("work_wait", "backward") if e["stream"] == "compute"]
    assert not blocked, f"work.wait() inside a hook with the compute stream current: {[e['what'] for e in blocked]}"
    stalled = [e for e in log.of("stream_wait", "backward") if e["stream"] == "compute"]
    assert not stalled, f"{len(stalled)} waits of the compute stream inside hooks"

    # 2. every bucket left during backward, every stage of it, on the communication stream
    per_bucket = 3 if algorithm == "hierarchical" else 1
    issued = log.of("issue", "backward")
    assert r.sent_during_backward == len(r.buckets)
    assert len(issued) == per_bucket * len(r.buckets), [e["what"] for e in issued]
    assert all(e["stream"] == "comm" for e in log.of("issue")), "a collective issued off the communication stream"
    assert not log.of("issue", "wait")

    # ... each bucket's after the communication stream waited on the event its pack recorded on the compute stream
    order = {id(e): i for i, e in enumerate(log.entries)}
    issues = log.of("issue")  # bucket by bucket, its stages in order
    for b in r.buckets:
        first = issues[b.index * per_bucket]
        rec = [e for e in log.of("record") if e["event"] is b.packed]
        waited = [e for e in log.of("stream_wait") if e["event"] is b.packed]
        assert [e["stream"] for e in rec] == ["compute"] and [e["stream"] for e in waited] == ["comm"], b.index
        assert order[id(rec[0])] < order[id(waited[0])] < order[id(first)], f"bucket {b.index} issued before its pack"

    # 3. wait() waited for every collective (on the communication stream), then joined every bucket
    works = [e["work"] for e in issues]
    assert all(w.waits == 1 for w in works), "a collective never waited for (or twice)"
    assert all(e["stream"] == "comm" for e in log.of("work_wait")), "a work waited for off the communication stream"
    assert r.collectives == len(works)
    for b in r.buckets:
        last = issues[b.index * per_bucket + per_bucket - 1]["work"]
        last_wait = [e for e in log.of("work_wait", "wait") if e["work"] is last]
        done = [e for e in log.of("record") if e["event"] is b.done]
        joined = [e for e in log.of("stream_wait", "wait") if e["event"] is b.done]
        assert last_wait, f"bucket {b.index}: its last collective was not waited for in wait()"
        assert [e["stream"] for e in done] == ["comm"], f"bucket {b.index}: final event not on the comm stream"
        assert [e["stream"] for e in joined] == ["compute"], f"bucket {b.index}: the caller's stream did not wait"
        assert order[id(last_wait[0])] < order[id(done[0])] < order[id(joined[0])], f"bucket {b.index}: out of order"

    # 4. the mean over ranks that all hold these gradients is these gradients
    for p, g in zip(params, grads):
        if wire == "fp32":
            assert torch.equal(p.grad, g)
        else:
            torch.testing.assert_close(p.grad, g, rtol=2**-7, atol=1e-30)
    r.remove()
