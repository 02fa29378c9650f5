"""Process groups: the default group and the intra- and inter-node groups of the hierarchy.

`init_distributed(topology)` joins the default process group (NCCL on CUDA, Gloo on CPU)
and builds the two subgroup families the hierarchical all-reduce needs (docs/design.md,
decision 4):

    intra  ranks that share a (virtual) node, ordered by local rank (reduce-scatter / all-gather)
    inter  ranks that share a local rank, one per node, ordered by node rank (all-reduce of a shard)

It first gathers every rank's placement and host name and checks them: every rank must see
the same shape, each machine one host, and (NCCL) one GPU per rank. `destroy()` leaves.

On one machine Gloo needs a network interface to bind: when MASTER_ADDR is a loopback address
and GLOO_SOCKET_IFNAME is unset, `init_distributed` sets it to the loopback interface (every
rank is on this machine then), so a box whose host name does not resolve still works.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fastres.distributed.errors import DistTimeoutError, TopologyError
from fastres.distributed.launcher import PLACEMENT_VARS
from fastres.distributed.topology import Topology

log = logging.getLogger(__name__)

__all__ = ["ProcessGroups", "cuda_device", "destroy", "init_distributed", "plan_groups", "set_collective_timeout"]


def plan_groups(
    placements: Sequence[tuple[int, int]], num_nodes: int, local_world_size: int, launcher: str = "none"
) -> tuple[list[list[int]], list[list[int]]]:
    """The intra groups (one per node, by local rank) and inter groups (one per local rank, by node).

    `placements[r]` is rank r's (node_rank, local_rank). Every node must hold exactly
    `local_world_size` ranks with distinct local ranks; otherwise a `TopologyError` names the
    launcher's variables. Pure, so the layout is testable without processes.
    """
    table: dict[tuple[int, int], int] = {}
    problems = []
    for r, (node, local) in enumerate(placements):
        if not (0 <= node < num_nodes and 0 <= local < local_world_size):
            problems.append(f"rank {r} claims node {node}, local rank {local}")
        elif (node, local) in table:
            problems.append(f"ranks {table[(node, local)]} and {r} both claim node {node}, local rank {local}")
        else:
            table[(node, local)] = r
    if not problems and len(table) != num_nodes * local_world_size:
        problems.append(f"{len(table)} ranks for {num_nodes} nodes x {local_world_size}")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} problems)" if len(problems) > 3 else "")
        raise TopologyError(
            f"rank placement does not fit {num_nodes} nodes x {local_world_size} ranks: {shown}; "
            f"check {PLACEMENT_VARS.get(launcher, launcher)}"
        )
    intra = [[table[(n, l)] for l in range(local_world_size)] for n in range(num_nodes)]
    inter = [[table[(n, l)] for n in range(num_nodes)] for l in range(local_world_size)]
    return intra, inter


@dataclass
class ProcessGroups:
    """The default group and this rank's intra-node and inter-node groups.

    World size 1: `world` is a real 1-rank group (over an in-memory HashStore, no network), so
    torch.distributed calls work unchanged; `intra`/`inter` are None. `intra_ranks` and
    `inter_ranks` list the global ranks of each group in group-rank order (intra by local
    rank, inter by node rank).
    """

    topology: Topology
    backend: str
    world: dist.ProcessGroup | None
    intra: dist.ProcessGroup | None
    inter: dist.ProcessGroup | None
    intra_ranks: list[int]
    inter_ranks: list[int]
    timeout: datetime.timedelta
    hostnames: list[str] = field(default_factory=list)  # per global rank, as gathered at init
    intra_gather: dist.ProcessGroup | None = None  # the intra ranks again, for the reducer's all-gathers
    setup_seconds: float = 0.0  # init + placement check + subgroups, for logs

    @property
    def hierarchical(self) -> bool:
        return self.topology.num_nodes > 1 and self.topology.local_world_size > 1


def _is_loopback(addr: str) -> bool:
    host = addr.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_ifname() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    for name in ("lo", "lo0"):
        if name in names:
            return name
    return None


def _prepare_gloo(master_addr: str | None) -> None:
    """Gloo binds the address its host name resolves to, unless GLOO_SOCKET_IFNAME says otherwise.

    With a loopback rendezvous every rank is on this machine, so the loopback interface is right
    and works even where the host name does not resolve (containers, CI sandboxes).
    """
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    if master_addr is None or _is_loopback(master_addr):
        ifname = _loopback_ifname()
        if ifname:
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
            log.debug("GLOO_SOCKET_IFNAME=%s (loopback rendezvous)", ifname)


def cuda_device(topology: Topology, device: torch.device | None = None) -> torch.device:
    """This rank's GPU: `device` if it names one; else GPU 0 when each process sees one GPU
    (CUDA_VISIBLE_DEVICES per rank), else the rank's local rank on its machine."""
    if device is not None and device.index is not None:
        return device
    count = torch.cuda.device_count()
    if count == 0:
        raise TopologyError("backend nccl needs a CUDA device, and torch sees none")
    if count == 1:  # one visible GPU per process (CUDA_VISIBLE_DEVICES set per rank)
        return torch.device("cuda", 0)
    if topology.physical_local_rank >= count:
        raise TopologyError(
            f"local rank {topology.physical_local_rank} on this machine but only {count} visible GPUs; "
            f"run at most {count} ranks per machine"
        )
    return torch.device("cuda", topology.physical_local_rank)


def _choose_backend(backend: str, device: torch.device | None) -> str:
    if backend == "auto":
        return "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"
    if backend not in ("nccl", "gloo"):
        raise TopologyError(f"backend={backend!r} must be one of auto, nccl, gloo")
    if backend == "nccl" and not dist.is_nccl_available():
        raise TopologyError("backend nccl is not available in this torch build; use gloo")
    return backend


_TIMEOUT_WORDS = ("timed out", "timeout", "time out", "deadline")
_ADDRESS_WORDS = (
    "refused", "getaddrinfo", "name or service", "resolve", "address already in use",
    "eaddrinuse", "no route", "unreachable", "cannot assign", "not known",
)  # fmt: skip


def _explain(exc: BaseException, stage: str, topology: Topology, timeout: float) -> TopologyError:
    """One line for a failure of a setup step: what waited for what, and which variables to check."""
    t = topology
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if len(first) > 200:
        first = first[:200] + "..."
    where = f"{t.init_method} (world size {t.world_size}, this is rank {t.rank}, launcher {t.launcher})"
    lowered = text.lower()
    if any(w in lowered for w in _TIMEOUT_WORDS):
        return DistTimeoutError(
            f"{stage}: timed out after {timeout:g} s waiting for ranks at {where}; "
            f"did every rank start, with the same MASTER_ADDR/MASTER_PORT? (torch: {first})"
        )
    if any(w in lowered for w in _ADDRESS_WORDS):
        return TopologyError(
            f"{stage}: cannot reach or bind the rendezvous at {where}; "
            f"check MASTER_ADDR={t.master_addr} and MASTER_PORT={t.master_port} (torch: {first})"
        )
    return TopologyError(f"{stage} failed at {where}: {type(exc).__name__}: {first}")


def _new_group(ranks: list[int], timeout: datetime.timedelta, backend: str):
    # new_group orders members by global rank unless told not to; the hierarchy wants group rank
    # == local rank (intra) and == node rank (inter), which block placement gives sorted anyway.
    if ranks == sorted(ranks):
        return dist.new_group(ranks, timeout=timeout, backend=backend)
    return dist.new_group(ranks, timeout=timeout, backend=backend, sort_ranks=False)


def init_distributed(
    topology: Topology,
    *,
    backend: str = "auto",
    device: torch.device | None = None,
    timeout: float = 1800.0,
) -> ProcessGroups:
    """Join the default process group and build the intra- and inter-node groups.

    backend "auto": nccl when `device` is CUDA, else gloo. `timeout` (seconds) applies to the
    rendezvous, the default group and every subgroup. With NCCL the CUDA device is the
    machine's local rank (or `device.index`), set before init. Every rank creates every
    subgroup in the same order (new_group is collective) and keeps its own.
    """
    if dist.is_initialized():
        raise TopologyError("torch.distributed is already initialised; call fastres.distributed.destroy() first")
    t = topology
    device = torch.device(device) if device is not None else None
    backend = _choose_backend(backend, device)
    td = datetime.timedelta(seconds=timeout)
    device_id = _prepare_backend(backend, t, device)
    start = time.perf_counter()
    if not t.distributed:
        return _join_alone(t, backend, td, device_id, start)
    _check_rendezvous_host(t)
    _join_default_group(t, backend, td, device_id)
    try:
        gathered = _gather_placements(t, device_id, td)
        _check_agreement(gathered, t, backend)
        intra, inter = plan_groups([(g[0], g[1]) for g in gathered], t.num_nodes, t.local_world_size, t.launcher)
        mine = _new_subgroups(t, intra, inter, td, backend)
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    return ProcessGroups(
        topology=t,
        backend=backend,
        world=dist.group.WORLD,
        intra=mine["intra"],
        inter=mine["inter"],
        intra_ranks=intra[t.node_rank],
        inter_ranks=inter[t.local_rank],
        timeout=td,
        hostnames=[g[2] for g in gathered],
        intra_gather=mine["intra_gather"],
        setup_seconds=time.perf_counter() - start,
    )


def _prepare_backend(backend: str, t: Topology, device: torch.device | None) -> torch.device | None:
    """NCCL: this rank's GPU, made current (returned); Gloo: the interface it binds (None)."""
    if backend != "nccl":
        _prepare_gloo(t.master_addr)
        return None
    # a collective that times out aborts its communicator and fails the rank (the default of torchrun's agent,
    # said here for srun and mpirun too): a dead peer never leaves a rank blocked on the GPU
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    device_id = cuda_device(t, device)
    torch.cuda.set_device(device_id)
    return device_id


def _join_alone(
    t: Topology, backend: str, td: datetime.timedelta, device_id: torch.device | None, start: float
) -> ProcessGroups:
    """One process: a real 1-rank default group over an in-memory store (no network), no subgroups."""
    try:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=td, device_id=device_id)
    except Exception as exc:
        raise _explain(exc, "init_process_group", t, td.total_seconds()) from exc
    return ProcessGroups(
        topology=t,
        backend=backend,
        world=dist.group.WORLD,
        intra=None,
        inter=None,
        intra_ranks=[0],
        inter_ranks=[0],
        timeout=td,
        hostnames=[socket.gethostname()],
        setup_seconds=time.perf_counter() - start,
    )


def _check_rendezvous_host(t: Topology) -> None:
    """The rendezvous address is set and resolves: a name that does not would otherwise cost a full timeout,
    then read as one."""
    if t.init_method is None:
        raise TopologyError(f"MASTER_ADDR is not set: {t.world_size} ranks need a rendezvous address")
    try:
        socket.getaddrinfo(t.master_addr, t.master_port, type=socket.SOCK_STREAM)
    except OSError as exc:
        source = "MASTER_ADDR or SLURM_JOB_NODELIST" if t.launcher == "slurm" else "MASTER_ADDR"
        raise TopologyError(
            f"the rendezvous host {t.master_addr!r} (from {source}) does not resolve: {exc.strerror or exc}"
        ) from None


def _join_default_group(t: Topology, backend: str, td: datetime.timedelta, device_id: torch.device | None) -> None:
    try:
        dist.init_process_group(
            backend, init_method=t.init_method, rank=t.rank, world_size=t.world_size, timeout=td,
            device_id=device_id,
        )  # fmt: skip
    except Exception as exc:
        raise _explain(exc, "init_process_group", t, td.total_seconds()) from exc


def _gather_placements(t: Topology, device_id: torch.device | None, td: datetime.timedelta) -> list:
    """Every rank's (node rank, local rank, host name, world size, local world size, nodes, virtual nodes,
    device), by rank: what `_check_agreement` and `plan_groups` read."""
    mine = (t.node_rank, t.local_rank, socket.gethostname(), t.world_size, t.local_world_size,
            t.num_nodes, t.virtual_nodes, str(device_id) if device_id is not None else "")  # fmt: skip
    gathered: list = [None] * t.world_size
    try:
        dist.all_gather_object(gathered, mine)
    except Exception as exc:
        raise _explain(exc, "all_gather_object (placement check)", t, td.total_seconds()) from exc
    return gathered


def _new_subgroups(
    t: Topology, intra: list[list[int]], inter: list[list[int]], td: datetime.timedelta, backend: str
) -> dict[str, dist.ProcessGroup]:
    """Every intra and inter group, created by every rank in the same order; this rank's own, by name."""
    mine: dict[str, dist.ProcessGroup] = {}
    try:
        for n, ranks in enumerate(intra):
            pg = _new_group(ranks, td, backend)
            if n == t.node_rank:
                mine["intra"] = pg
        for l, ranks in enumerate(inter):
            pg = _new_group(ranks, td, backend)
            if l == t.local_rank:
                mine["inter"] = pg
        # the same intra ranks again: the reducer's all-gathers get a group (and, on Gloo, a
        # queue) of their own, so they never interleave with its reduce-scatters
        for n, ranks in enumerate(intra):
            pg = _new_group(ranks, td, backend)
            if n == t.node_rank:
                mine["intra_gather"] = pg
    except Exception as exc:
        raise _explain(exc, "new_group (intra/inter subgroups)", t, td.total_seconds()) from exc
    return mine


def set_collective_timeout(groups: ProcessGroups, seconds: float, *more: dist.ProcessGroup | None) -> None:
    """From now on a collective of `groups` (and of the groups in `more`) waits at most `seconds` for the other
    ranks, Gloo's and NCCL's alike: the setup's long waits (--dist-timeout) are over, and a peer that died or
    was cut off ends every rank's wait within `seconds` (--collective-timeout)."""
    td = datetime.timedelta(seconds=seconds)
    every = (groups.world, groups.intra, groups.inter, groups.intra_gather, *more)
    for pg in {id(g): g for g in every if g is not None}.values():
        dist.distributed_c10d._set_pg_timeout(td, pg)  # torch's own setter (public since 2.3 in all but name)
    groups.timeout = td


def _check_agreement(gathered: list, t: Topology, backend: str) -> None:
    """Every rank must see the same shape, each machine one host name, and (NCCL) one GPU per rank."""
    # Virtual nodes first: a rank without FASTRES_VIRTUAL_NODES also disagrees on the rest.
    for i, name in ((6, "virtual nodes"), (3, "world size"), (4, "local world size"), (5, "number of nodes")):
        values = {g[i] for g in gathered}
        if len(values) > 1:
            hint = " (is FASTRES_VIRTUAL_NODES the same on every rank?)" if name == "virtual nodes" else ""
            raise TopologyError(
                f"ranks disagree on the {name}: {sorted(values)}{hint}; check {PLACEMENT_VARS[t.launcher]}"
            )
    hosts: dict[int, dict[str, int]] = {}
    for r, g in enumerate(gathered):
        hosts.setdefault(g[0] // t.virtual_nodes, {}).setdefault(g[2], r)
    for machine, names_seen in sorted(hosts.items()):
        if len(names_seen) > 1:
            shown = ", ".join(f"rank {r} on {h}" for h, r in names_seen.items())
            raise TopologyError(
                f"machine {machine} (node ranks {machine * t.virtual_nodes}..{(machine + 1) * t.virtual_nodes - 1}) "
                f"spans several hosts: {shown}; the launcher's node assignment is wrong, check "
                f"{PLACEMENT_VARS[t.launcher]}"
            )
    if backend == "nccl":
        seen: dict[tuple[str, str], int] = {}
        for r, g in enumerate(gathered):
            key = (g[2], g[7])
            if key in seen:
                raise TopologyError(
                    f"ranks {seen[key]} and {r} both use {g[7]} on host {g[2]}; check {PLACEMENT_VARS[t.launcher]}"
                )
            seen[key] = r


_EXIT_GRACE_S = 1.0


def destroy(groups: ProcessGroups | None = None, *, barrier: bool = True) -> None:
    """Tear down the default group and its subgroups; safe to call twice.

    With Gloo, a rank that leaves while a peer still finishes its last collective can abort
    that peer at exit ("terminate called without an active exception", SIGABRT; seen here in
    about one run in three of 4 ranks). So on the normal path every rank first meets the
    others in a monitored barrier (bounded by the groups' timeout). On an error path, where
    the others may never arrive, pass barrier=False to leave at once.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gloo_peers = dist.get_world_size() > 1 and dist.get_backend() == "gloo"
    try:
        if barrier and gloo_peers:
            timeout = groups.timeout if groups is not None else None
            dist.monitored_barrier(timeout=timeout)
    except Exception as exc:  # a missing peer must not keep this rank from cleaning up
        log.warning("destroy: barrier before destroy_process_group failed: %s", str(exc).splitlines()[0])
    finally:
        dist.destroy_process_group()
    if barrier and gloo_peers:
        # The abort above also hit a peer still inside destroy_process_group when this process
        # exited and closed its sockets (1 in 3 runs without the barrier; once in ~40 with it,
        # on a loaded box): a grace period lets the peers finish before this one can exit.
        time.sleep(_EXIT_GRACE_S)
