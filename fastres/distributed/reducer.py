"""fastres.distributed.reducer: the bucketed gradient all-reduce, flat or hierarchical, overlapped with backward.

    groups = init_distributed(discover())                  # fastres.distributed
    layout = bucket_layout(model, groups, bucket_cap_mb=25)  # the model's one FlatParams
    reducer = Reducer(layout, groups, bucket_cap_mb=25, wire_dtype="bf16")
    optimizer = FusedLARS(param_groups, lr, layout=layout)  # the same layout, handed over
    for images, labels in loader:
        layout.zero_grad()                                 # in place: .grad stay views of the flat buffer
        loss_fn(model(images), labels).backward()          # buckets leave as soon as they fill
        reducer.wait()                                     # all gradients averaged over the ranks
        optimizer.step()

Buckets are slices of fastres.kernels.flat's gradient buffer, in backward order: the parameters are
laid out in registration order and gradients arrive roughly in reverse, so a bucket is a run
of consecutive segments counted from the end. The first bucket holds about
`first_bucket_mb` (1 MB: it fills early in backward, so communication starts at once), the
others about `bucket_cap_mb` (25 MB, DDP's default) of fp32 gradients; a tensor larger than a
cap is a bucket of its own. There is no packing copy for fp32: autograd accumulates into the
views of the flat buffer, and the collective runs on the bucket's slice in place.
`bucket_layout` builds the model's layout with each bucket padded to a multiple of local
world size x ALIGN elements, so it splits into aligned, equal shards; on any other layout a
bucket that does not split evenly is reduced through a padded staging buffer.

A post-accumulate-grad hook on every parameter counts down its bucket; a full bucket is sent
when all buckets before it have been sent, so every rank issues the same collectives in the
same order (NCCL and Gloo both need that) whatever order autograd finishes them in.

Algorithms (per bucket):
  flat          one all_reduce over all ranks
  hierarchical  reduce-scatter inside the node, all_reduce of this rank's shard among the
                ranks with the same local rank on the other nodes, all-gather inside the
                node (Horovod's hierarchical all-reduce, ChainerMN's two-dimensional
                communicator, Mikami et al.'s 2D-torus): the inter-node traffic per rank is
                1 / local_world_size of the bucket. On Gloo the node's phases are L reduces
                (chunk i to local rank i) and L broadcasts (chunk i from local rank i), in
                place: torch's Gloo reduce-scatter and all-gather are 2-3.5x slower
  auto          hierarchical when there are several nodes of several ranks, else flat. On
                one node (or one rank per node) hierarchical is flat: no extra collectives.

Gradients are pre-divided by the world size (so the sum is the mean and fp16 sums do not
overflow). The wire dtype may be bf16 or fp16: fastres.kernels.ops.pack_wire scales and casts a
bucket into a staging buffer in one pass, the collectives run on it, and ops.unpack_wire
writes the fp32 result back. A NaN or Inf in any rank's gradient reaches every rank (a sum
keeps it), so the optimizer's found-inf check sees it on all of them.

Execution: the hook packs a full bucket on the stream backward runs on (the compute stream)
and records an event there; with CUDA tensors every collective of the bucket is issued on the
reducer's own communication stream, which first waits on that event, and the unpack runs on
it too. Nothing in a hook makes the compute stream wait, so backward's later kernels never
queue behind a bucket's collective (DDP's overlap). With NCCL, whose `work.wait()` only orders
the current stream, the hook queues every stage of the bucket at once, each ordered after the
previous one on the communication stream; `wait()` orders that stream after the last stage,
unpacks there, and makes the caller's current stream wait on each bucket's final event
(events only: no host sync). With Gloo a collective's wait blocks the host: the hook issues a
bucket's first stage asynchronously (several buckets are in flight); one waiter thread per
later stage waits for the stage before it in bucket order and issues the next one while
autograd goes on; `wait()` waits for each bucket's last stage and unpacks it. The two are two
small classes behind one interface (`_StreamOrdered` for NCCL, `_HostWaiting` for Gloo: a
bucket's stages, and how they are sent), chosen by the process groups' backend.

Gradient accumulation: inside `with reducer.no_sync():` backward only accumulates; the next
backward outside it sends the sums. Parameters that get no gradient in a backward (unused
branches, frozen parameters are simply not hooked) are handled: `wait()` sends their buckets
after backward (without overlap) with a zero gradient for them, and warns once naming them.

Failures: a collective that fails or times out (a rank died or never came: the process
group's timeout, fastres.distributed.groups) raises CollectiveError from `wait()`, naming the
collective, the bucket, its parameters and the ranks involved. With NCCL the watchdog of the
process group enforces the timeout (TORCH_NCCL_ASYNC_ERROR_HANDLING).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from functools import partial

import torch
import torch.distributed as dist
from torch import nn

from fastres.distributed.collectives import cause
from fastres.distributed.errors import CollectiveError
from fastres.distributed.groups import ProcessGroups
from fastres.distributed.topology import Topology
from fastres.kernels import ops
from fastres.kernels.flat import ALIGN, FlatParams

__all__ = ["ALGORITHMS", "WIRE_DTYPES", "CollectiveError", "Reducer", "bucket_layout", "plan_buckets"]

ALGORITHMS = ("auto", "flat", "hierarchical")
WIRE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# torch >= 2.12 names them *_single; older ones *_tensor (same arguments)
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

_MB = 1 << 20


def plan_buckets(sizes: list[int], first_cap: int, cap: int) -> list[tuple[int, int]]:
    """Buckets as segment ranges [first, end), in backward order (the last segments first).

    sizes: elements per segment; a bucket closes once it holds >= its cap (first_cap for the
    first, cap after), so a segment larger than the cap is a bucket of its own."""
    if first_cap < 1 or cap < 1:
        raise ValueError(f"bucket caps must be >= 1 element, got first_cap={first_cap}, cap={cap}")
    buckets, end, acc, limit = [], len(sizes), 0, first_cap
    for i in range(len(sizes) - 1, -1, -1):
        acc += sizes[i]
        if acc >= limit:
            buckets.append((i, end))
            end, acc, limit = i, 0, cap
    if end > 0:
        buckets.append((0, end))
    return buckets


@dataclasses.dataclass
class _Bucket:
    index: int
    grad: torch.Tensor  # its slice of layout.grads: consecutive segments, padding included
    wire: torch.Tensor | None  # staging buffer (padded, wire dtype), or None: in place on grad
    segments: list[int]  # the trainable segments (hooked parameters) in it
    pending: int = 0  # hooks still to fire this step
    stages: list = dataclasses.field(default_factory=list)  # (what, ranks, [issue, ...]) (_stages_of)
    packed: object = None  # event recorded on the compute stream after the pack (CUDA; else a no-op)
    done: object = None  # event recorded on the communication stream after the unpack
    last: list | None = None  # the works of its last stage, once issued this step (wait() waits for them)
    t0: float = 0.0  # when its current stage was issued (error messages)

    @property
    def buffer(self) -> torch.Tensor:
        return self.grad if self.wire is None else self.wire


class _NoStream:
    """CPU tensors: no streams, nothing to order."""

    def wait_event(self, event) -> None:
        pass


class _NoEvent:
    def record(self, stream=None) -> None:
        pass


class _NoStreams:
    comm = _NoStream()

    def current(self):
        return self.comm

    def event(self):
        return _NoEvent()

    def use(self, stream):
        return contextlib.nullcontext()


class _CudaStreams:
    """The caller's current stream (where backward packs) and the reducer's communication stream."""

    def __init__(self, device: torch.device):
        self.device = device
        self.comm = torch.cuda.Stream(device)

    def current(self):
        return torch.cuda.current_stream(self.device)

    def event(self):
        return torch.cuda.Event()

    def use(self, stream):
        return torch.cuda.stream(stream)


def _streams_for(device: torch.device):
    """How the reducer orders its work on `device`: CUDA streams and events, or nothing (CPU)."""
    return _CudaStreams(device) if device.type == "cuda" else _NoStreams()


def _groups_or_default(groups) -> ProcessGroups:
    """`groups`, or for None the default process group as one node (or one process where torch.distributed
    is not initialised): who talks to whom, read from fastres.distributed.groups.ProcessGroups."""
    if groups is not None:
        return groups
    if not (dist.is_available() and dist.is_initialized()):
        alone = Topology(0, 1, 0, 1, 0, 1, "none", None, None)
        return ProcessGroups(alone, "none", None, None, None, [0], [0], datetime.timedelta(0))
    rank, size = dist.get_rank(), dist.get_world_size()
    one_node = Topology(rank, size, rank, size, 0, 1, "none", None, None)
    # the default group's own timeout is not public: its default bounds the wait
    return ProcessGroups(one_node, dist.get_backend(), None, None, None, list(range(size)), [rank],
                         dist.default_pg_timeout)  # fmt: skip


def _ranks_text(groups: ProcessGroups, ranks) -> str:
    """How an error names a group: "all 8 ranks" or "ranks [0, 1, 2, 3]"."""
    return f"all {len(ranks)} ranks" if len(ranks) == groups.topology.world_size else f"ranks {list(ranks)}"


def _hierarchical(groups: ProcessGroups, algorithm: str) -> bool:
    t = groups.topology
    return algorithm in ("auto", "hierarchical") and t.num_nodes > 1 and t.local_world_size > 1


def _caps(first_bucket_mb: float, bucket_cap_mb: float) -> tuple[int, int]:
    """The bucket caps in fp32 elements (first bucket, the others)."""
    for name, v in (("bucket_cap_mb", bucket_cap_mb), ("first_bucket_mb", first_bucket_mb)):
        if not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name}: must be > 0, got {v!r}")
    return max(1, int(first_bucket_mb * _MB) // 4), max(1, int(bucket_cap_mb * _MB) // 4)


def bucket_layout(
    model: nn.Module, groups=None, *, algorithm: str = "auto", bucket_cap_mb: float = 25.0, first_bucket_mb: float = 1.0
) -> FlatParams:
    """The model's FlatParams, each of the Reducer's buckets padded to split into equal aligned shards.

    Build it once, after the model's last .to(), and hand it to the Reducer (same caps and
    algorithm) and to a fused optimizer."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    groups = _groups_or_default(groups)
    first_cap, cap = _caps(first_bucket_mb, bucket_cap_mb)
    named = list(model.named_parameters())
    ranges = plan_buckets([q.numel() for _, q in named], first_cap, cap)
    multiple = groups.topology.local_world_size * ALIGN if _hierarchical(groups, algorithm) else ALIGN
    return FlatParams(model, pad_before={a for a, _ in ranges} | {len(named)}, pad_multiple=multiple)


class Reducer:
    """Averages a model's gradients over the ranks, bucket by bucket, during backward.

    layout:         the model's fastres.kernels.flat.FlatParams (from `bucket_layout`: buckets padded
                    to equal shards; any other layout works, through staging buffers)
    groups:         fastres.distributed.groups.ProcessGroups; None: the default process group as
                    one node (flat), or nothing to do when torch.distributed is not initialised
    algorithm:      "auto", "flat" or "hierarchical" (see the module docstring)
    bucket_cap_mb:  fp32 gradient MB per bucket after the first (DDP's default: 25)
    first_bucket_mb: fp32 gradient MB of the first bucket (the last layers' gradients)
    wire_dtype:     "fp32", "bf16" or "fp16" (or the torch dtype): what goes over the network

    torch optimizers see the same parameters (views of the layout); FusedLARS/FusedSGD take
    the same layout as `layout=`.
    """

    def __init__(
        self,
        layout: FlatParams,
        groups=None,
        *,
        algorithm: str = "auto",
        bucket_cap_mb: float = 25.0,
        first_bucket_mb: float = 1.0,
        wire_dtype="fp32",
    ):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        if not isinstance(layout, FlatParams):
            raise TypeError(
                f"layout: expected a fastres.kernels.flat.FlatParams (from bucket_layout(model, groups)), "
                f"got {type(layout).__name__}"
            )
        first_cap, cap = _caps(first_bucket_mb, bucket_cap_mb)
        if isinstance(wire_dtype, str):
            if wire_dtype not in WIRE_DTYPES:
                raise ValueError(f"wire_dtype: must be one of {', '.join(WIRE_DTYPES)}, got {wire_dtype!r}")
            wire_dtype = WIRE_DTYPES[wire_dtype]
        if wire_dtype not in WIRE_DTYPES.values():
            raise ValueError(f"wire_dtype: must be torch.float32, bfloat16 or float16, got {wire_dtype}")
        self.wire_dtype = wire_dtype
        self.groups = g = _groups_or_default(groups)
        world_size = g.topology.world_size
        hier = _hierarchical(g, algorithm)
        self.algorithm = "hierarchical" if hier else "flat"
        shard_multiple = g.topology.local_world_size * ALIGN if hier else ALIGN
        ranges = plan_buckets(list(layout.sizes), first_cap, cap)
        self.layout = layout
        self._trainable = [q.requires_grad for q in layout.param_list]

        off = layout.offsets.tolist()
        self.buckets: list[_Bucket] = []
        self._bucket_of: dict[int, _Bucket] = {}
        for first, end in ranges:
            segs = [s for s in range(first, end) if self._trainable[s]]
            if not segs:
                continue  # frozen parameters only: nothing to reduce
            grad = layout.grads[off[first] : off[end]]
            n = grad.numel()
            padded = -(-n // shard_multiple) * shard_multiple if hier else n
            wire = None
            if wire_dtype != torch.float32 or padded != n:
                wire = torch.zeros(padded, dtype=wire_dtype, device=layout.device)
            b = _Bucket(len(self.buckets), grad, wire, segs)
            self.buckets.append(b)
            for s in segs:
                self._bucket_of[s] = b

        self.enabled = world_size > 1
        self.collectives = 0  # collective operations completed so far (tests and logs)
        self.sent_during_backward = 0  # buckets the last step sent from hooks, before wait()
        self._sync = True
        self._fired = [False] * layout.num_segments
        self._next = 0  # first bucket not yet sent this step
        self._error: BaseException | None = None
        self._cv = threading.Condition()
        self._scale = 1.0 / world_size  # pre-divided: the sum is the mean, and fp16 sums do not overflow
        self._sending = _StreamOrdered(self) if g.backend == "nccl" else _HostWaiting(self)
        self._broken: BaseException | None = None
        self._streams = _streams_for(layout.device) if self.enabled else _NoStreams()
        for b in self.buckets:
            b.stages = self._sending.stages(b)
            b.packed, b.done = self._streams.event(), self._streams.event()
        self._warned_unused = False
        self._reset_counts()
        self._handles = [
            q.register_post_accumulate_grad_hook(self._make_hook(s))
            for s, q in enumerate(layout.param_list)
            if self._trainable[s]
        ]

    # ------------------------------------------------------------------ public

    def describe(self) -> str:
        sizes = ", ".join(f"{b.grad.numel() * 4 / _MB:.1f}" for b in self.buckets)
        t = self.groups.topology
        if not self.enabled:
            return f"no gradient all-reduce (1 rank); {len(self.buckets)} buckets ({sizes} MB)"
        where = (
            f"{t.num_nodes} nodes x {t.local_world_size} ranks"
            if self.algorithm == "hierarchical"
            else f"{t.world_size} ranks"
        )
        return (
            f"{self.algorithm} all-reduce over {where}, {self.groups.backend}, wire {str(self.wire_dtype)[6:]}, "
            f"{len(self.buckets)} buckets ({sizes} MB of fp32 gradients)"
        )

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate gradients without communicating (micro-steps)."""
        old, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = old

    def wait(self) -> None:
        """Send the buckets backward did not send, wait for all, and leave the mean gradients in place.

        Call it after the last backward of a step and before the optimizer step. Raises
        CollectiveError when a collective failed or timed out."""
        if self._broken is not None:
            raise CollectiveError(f"fastres.distributed.reducer: unusable after an earlier failure ({self._broken})")
        try:
            if self.enabled:
                self.sent_during_backward = self._next
                unused = [s for b in self.buckets[self._next :] for s in b.segments if not self._fired[s]]
                for b in self.buckets[self._next :]:
                    for s in b.segments:
                        if not self._fired[s]:
                            self.layout.attach_grad(s, zero_if_missing=True)
                    b.pending = 0
                self._launch_ready()
                self._wait_all()
                if unused and not self._warned_unused and any(self._fired):
                    self._warned_unused = True
                    names = [self.layout.names[s] for s in unused]
                    warnings.warn(
                        f"fastres.distributed.reducer: {len(names)} parameters got no gradient in backward "
                        f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); their buckets were "
                        "averaged after backward (no overlap), with a zero gradient from this rank",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        finally:
            self._reset_counts()

    def remove(self) -> None:
        """Remove the hooks (the layout stays)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._sending.close()

    # ------------------------------------------------------------------ hooks

    def _make_hook(self, s: int):
        def hook(param: torch.Tensor) -> None:
            self.layout.attach_grad(s, zero_if_missing=False)  # a .grad autograd made anew (after set_to_none)
            if not (self._sync and self.enabled) or self._broken is not None:
                return
            b = self._bucket_of[s]
            if self._fired[s]:
                raise RuntimeError(
                    f"fastres.distributed.reducer: {self.layout.names[s]} got a second gradient before reducer.wait() "
                    "(two backward passes in one step?): call wait() (and step) in between, or run the "
                    "accumulation passes inside reducer.no_sync()"
                )
            self._fired[s] = True
            b.pending -= 1
            if b.pending == 0 and b.index == self._next:
                self._launch_ready()

        return hook

    def _reset_counts(self) -> None:
        for b in self.buckets:
            b.pending = len(b.segments)
        self._fired = [False] * self.layout.num_segments
        self._next = 0
        with self._cv:
            for b in self.buckets:
                b.last = None

    # ------------------------------------------------------------------ sending

    def _launch_ready(self) -> None:
        """Send buckets in index order, as far as they are full (the hook's thread, or wait()).

        The pack runs on the current stream (backward's); everything after it on the
        communication stream, ordered after the pack by an event: nothing here makes the
        current stream wait."""
        st = self._streams
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            b = self.buckets[self._next]
            self._next += 1
            try:
                if b.wire is not None:
                    ops.pack_wire(b.grad, b.wire, self._scale)
                elif self._scale != 1.0:
                    b.grad.mul_(self._scale)
                b.packed.record(st.current())
                st.comm.wait_event(b.packed)
            except Exception as e:  # noqa: BLE001 - reported by wait()
                self._fail(e)
                continue
            with st.use(st.comm):
                self._sending.send(b)

    def _deliver(self, b: _Bucket, works: list) -> None:
        """b's last stage is issued: wait() may wait for it."""
        with self._cv:
            b.last = works
            self._cv.notify_all()

    def _timeout_s(self) -> float:
        return self.groups.timeout.total_seconds()

    def _fail(self, error: BaseException) -> None:
        with self._cv:
            self._error = self._error or error
            self._cv.notify_all()

    def _error_for(self, b: _Bucket, k: int, e: BaseException, t0: float) -> CollectiveError:
        what, ranks = b.stages[k][0], b.stages[k][1]
        first = cause(e)
        err = CollectiveError(
            f"fastres.distributed.reducer: {what} of gradient bucket {b.index} ({b.buffer.numel()} x "
            f"{str(b.buffer.dtype)[6:]}, {self._params_of(b)}) over {_ranks_text(self.groups, ranks)} failed after "
            f"{time.monotonic() - t0:.1f} s (process group timeout {self._timeout_s():.0f} s; a rank "
            f"that died or never reached this step?): {first}"
        )
        err.__cause__ = e
        return err

    def _wait_all(self) -> None:
        """Wait for every bucket's last stage in bucket order, unpack it, and order the caller's
        current stream after every unpack (events: no host sync with NCCL)."""
        timeout_s = self._timeout_s()
        limit = timeout_s + 60.0 if timeout_s else None
        t0, st = time.monotonic(), self._streams
        for b in self.buckets:
            with self._cv:
                while b.last is None and self._error is None:
                    left = None if limit is None else limit - (time.monotonic() - t0)
                    if left is not None and left <= 0:
                        raise CollectiveError(
                            f"fastres.distributed.reducer: gradient bucket {b.index} ({self._params_of(b)}) did "
                            f"not finish within {limit:.0f} s (process group timeout {timeout_s:.0f} s "
                            "+ 60 s)"
                        )
                    self._cv.wait(timeout=left if left is not None else 1.0)
                error, self._error = self._error, None
            if error is None:
                error = self._finish(b)
            if error is not None:
                self._broken = error
                raise error
            with self._cv:
                self.collectives += len(b.last)
        caller = st.current()
        for b in self.buckets:
            caller.wait_event(b.done)

    def _finish(self, b: _Bucket) -> BaseException | None:
        """On the communication stream: wait for b's last stage, unpack, record b.done; the error, if any."""
        st = self._streams
        with st.use(st.comm):
            try:
                for work in b.last:
                    work.wait()
            except Exception as e:  # noqa: BLE001
                return self._error_for(b, len(b.stages) - 1, e, b.t0)
            try:
                if b.wire is not None:
                    ops.unpack_wire(b.wire, b.grad, 1.0)
                b.done.record(st.comm)
            except Exception as e:  # noqa: BLE001
                return e
        return None

    def _params_of(self, b: _Bucket) -> str:
        names = self.layout.names
        return f"{names[b.segments[0]]} .. {names[b.segments[-1]]}" if len(b.segments) > 1 else names[b.segments[0]]


# ---------------------------------------------------------------------------------- how a bucket travels
# Two strategies behind one interface: `stages(b)` (what a bucket's collectives are), `send(b)` (issue them,
# on the communication stream, from the hook's thread or wait()), `close()`.


class _Sending:
    def __init__(self, reducer: Reducer):
        self.reducer = reducer

    def stages(self, b: _Bucket) -> list[tuple]:
        """(what, ranks, [issue, ...]) for each stage of bucket b, in order.

        Each `issue()` starts one asynchronous collective and returns its work; a stage's
        collectives all run on one group."""
        g, buf = self.reducer.groups, b.buffer
        if self.reducer.algorithm == "flat":
            everyone = tuple(range(g.topology.world_size))
            return [("all_reduce", everyone, [partial(dist.all_reduce, buf, group=g.world, async_op=True)])]
        return self._node_stages(g, buf)

    def _node_stages(self, g: ProcessGroups, buf: torch.Tensor) -> list[tuple]:
        raise NotImplementedError

    def send(self, b: _Bucket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _StreamOrdered(_Sending):
    """NCCL, whose `work.wait()` only orders the current stream and returns: the hook queues every stage of
    a bucket at once on the communication stream, each ordered after the one before; `Reducer.wait()` orders
    that stream after the last stage. The node's phases are reduce-scatter and all-gather."""

    def _node_stages(self, g: ProcessGroups, buf: torch.Tensor) -> list[tuple]:
        # this rank's shard in a buffer of its own: the reduce-scatter writes it and the
        # all-gather reads it (no copy either way), and no backend's aliasing rules are relied on
        shard = torch.empty(buf.numel() // g.topology.local_world_size, dtype=buf.dtype, device=buf.device)
        return [
            (
                "reduce_scatter (intra-node)",
                tuple(g.intra_ranks),
                [partial(_reduce_scatter, shard, buf, group=g.intra, async_op=True)],
            ),
            (
                "all_reduce (inter-node)",
                tuple(g.inter_ranks),
                [partial(dist.all_reduce, shard, group=g.inter, async_op=True)],
            ),
            (
                "all_gather (intra-node)",
                tuple(g.intra_ranks),
                [partial(_all_gather, buf, shard, group=g.intra_gather, async_op=True)],
            ),
        ]

    def send(self, b: _Bucket) -> None:
        r = self.reducer
        for k, (_what, _ranks, issues) in enumerate(b.stages):
            b.t0 = time.monotonic()
            try:
                works = [issue() for issue in issues]
                if k + 1 < len(b.stages):
                    for work in works:
                        work.wait()
            except Exception as e:  # noqa: BLE001
                r._fail(r._error_for(b, k, e, b.t0))
                return
            if k + 1 < len(b.stages):
                with r._cv:
                    r.collectives += len(works)
        r._deliver(b, works)


class _HostWaiting(_Sending):
    """Gloo, whose `work.wait()` blocks the host: the hook's thread only issues the first collective of a
    bucket (asynchronous, so several buckets are in flight); one waiter thread per stage but the last waits
    for its stage's collectives in bucket order and issues the next stage; `Reducer.wait()` waits for the
    last. Every group thus sees its collectives issued in bucket order on every rank, and each stage has a
    group of its own (the all-gathers use a second intra-node group), so no two threads ever issue on one
    group. One stage (flat): no thread at all.

    The node's phases are L reduces (chunk i to local rank i) and L broadcasts (chunk i from local rank i),
    in place on the bucket: torch's Gloo reduce-scatter and all-gather take 2x and 3.5x the time of those
    moving the same bytes (bench/README.md)."""

    def __init__(self, reducer: Reducer):
        super().__init__(reducer)
        self._waiters: list[tuple[queue.SimpleQueue, threading.Thread] | None] = [None, None, None]

    def _node_stages(self, g: ProcessGroups, buf: torch.Tensor) -> list[tuple]:
        owners = list(g.intra_ranks)
        chunks = buf.chunk(g.topology.local_world_size)
        mine = chunks[g.topology.local_rank]
        return [
            (
                "reduce (intra-node, chunk i to local rank i)",
                tuple(g.intra_ranks),
                [partial(dist.reduce, c, dst=r, group=g.intra, async_op=True) for c, r in zip(chunks, owners)],
            ),
            (
                "all_reduce (inter-node)",
                tuple(g.inter_ranks),
                [partial(dist.all_reduce, mine, group=g.inter, async_op=True)],
            ),
            (
                "broadcast (intra-node, chunk i from local rank i)",
                tuple(g.intra_ranks),
                [
                    partial(dist.broadcast, c, src=r, group=g.intra_gather, async_op=True)
                    for c, r in zip(chunks, owners)
                ],
            ),
        ]

    def send(self, b: _Bucket) -> None:
        self._issue(b, 0)

    def _issue(self, b: _Bucket, k: int) -> None:
        r = self.reducer
        b.t0 = time.monotonic()
        try:
            works = [issue() for issue in b.stages[k][2]]
        except Exception as e:  # noqa: BLE001
            r._fail(r._error_for(b, k, e, b.t0))
            return
        if k + 1 == len(b.stages):
            r._deliver(b, works)
            return
        if self._waiters[k] is None:
            q: queue.SimpleQueue = queue.SimpleQueue()
            t = threading.Thread(target=self._wait_stage, args=(k, q), name=f"fastres-reducer-{k}", daemon=True)
            t.start()
            self._waiters[k] = (q, t)
        self._waiters[k][0].put((b, works))

    def _wait_stage(self, k: int, q: queue.SimpleQueue) -> None:
        r = self.reducer
        st = r._streams
        while (item := q.get()) is not None:
            b, works = item
            try:
                with st.use(st.comm):  # CUDA tensors: Gloo's wait orders the current stream after the collective
                    for work in works:
                        work.wait()
            except Exception as e:  # noqa: BLE001 - a thread must not die: wait() re-raises it
                r._fail(r._error_for(b, k, e, b.t0))
                continue
            with r._cv:
                r.collectives += len(works)
            if r._error is not None:
                continue
            with st.use(st.comm):  # the next stage reads what this one wrote: issued on the same stream
                self._issue(b, k + 1)

    def close(self) -> None:
        for i, w in enumerate(self._waiters):
            if w is not None:
                w[0].put(None)
                w[1].join(timeout=5)
                self._waiters[i] = None
