"""Who is where: rank, node and local rank from the launcher, and the process groups built on them.

`discover()` reads the launcher's environment (torchrun, Slurm, Open MPI, MPICH/Intel MPI hydra,
or nothing for a single process) into a `Topology`; `init_distributed()` joins the default
process group and builds the two subgroup families the hierarchical all-reduce needs
(DESIGN.md, decision 4):

    intra  ranks that share a node, ordered by local rank (reduce-scatter / all-gather)
    inter  ranks that share a local rank, one per node, ordered by node rank (all-reduce of a shard)

Virtual nodes split each machine's L local ranks into K "nodes" of L/K consecutive local ranks,
so the two-level scheme runs (and is tested) on one box:

    FASTRES_VIRTUAL_NODES=2 torchrun --nproc-per-node 8 -m fastres.train ...   # 2 nodes x 4

Sources, first match wins:

    torchrun  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT
    slurm     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_NTASKS_PER_NODE or
              SLURM_TASKS_PER_NODE, MASTER_ADDR or the first host of SLURM_JOB_NODELIST
    openmpi   OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}, MASTER_ADDR
    pmi       PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS, MASTER_ADDR
    none      one process: rank 0 of 1

MPI launchers do not export a node index, so node = rank // local world size: this assumes
block placement (`mpirun --map-by slot`, hydra's default `-ppn`). `init_distributed` gathers
every rank's (node, local rank, host name) and refuses a placement that does not fit, so a
round-robin mapping is an error that says so, never a silently wrong hierarchy.

Errors in the environment are `TopologyError` (a `FastresError`: the CLI prints one line); a
rendezvous that times out is `DistTimeoutError`, which says what it waited for.

On one machine Gloo needs a network interface to bind: when MASTER_ADDR is a loopback address
and GLOO_SOCKET_IFNAME is unset, `init_distributed` sets it to the loopback interface (every
rank is on this machine then), so a box whose host name does not resolve still works.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fastres import FastresError

log = logging.getLogger(__name__)

DEFAULT_PORT = 29500

__all__ = [
    "DistTimeoutError",
    "ProcessGroups",
    "Topology",
    "TopologyError",
    "cuda_device",
    "destroy",
    "discover",
    "init_distributed",
    "plan_groups",
]


class TopologyError(FastresError):
    """The launcher's environment is missing, malformed or inconsistent; the message names the variable."""


class DistTimeoutError(TopologyError):
    """A rendezvous or a setup collective waited longer than the timeout for other ranks."""


# The variables that place a rank on a node, per launcher: named in placement errors.
_PLACEMENT_VARS = {
    "torchrun": "RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK",
    "slurm": "SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_TASKS_PER_NODE",
    "openmpi": "OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_SIZE "
    "(node = rank // local size: launch with block placement, mpirun --map-by slot)",
    "pmi": "PMI_RANK, MPI_LOCALRANKID, MPI_LOCALNRANKS "
    "(node = rank // local size: launch with block placement, e.g. mpiexec -ppn N)",
    "none": "(no launcher)",
}


@dataclass(frozen=True)
class Topology:
    """One rank's place in the job, after the virtual-node split.

    `local_rank`, `local_world_size`, `node_rank`, `num_nodes` describe the (virtual) nodes the
    hierarchy uses; `physical_local_rank` / `physical_local_world_size` describe the machine
    and choose the CUDA device. Left out, they are derived from the virtual-node split.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    num_nodes: int
    launcher: str
    master_addr: str | None
    master_port: int | None
    virtual_nodes: int = 1
    physical_local_rank: int | None = None
    physical_local_world_size: int | None = None

    def __post_init__(self) -> None:
        k = self.virtual_nodes
        if self.physical_local_world_size is None:
            object.__setattr__(self, "physical_local_world_size", self.local_world_size * k)
        if self.physical_local_rank is None:
            within = self.node_rank % k if k > 0 else 0
            object.__setattr__(self, "physical_local_rank", within * self.local_world_size + self.local_rank)
        problems = []
        if k < 1:
            problems.append(f"virtual_nodes={k} < 1")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            problems.append(f"rank={self.rank} not in [0, world_size={self.world_size})")
        if self.local_world_size < 1 or not 0 <= self.local_rank < self.local_world_size:
            problems.append(f"local_rank={self.local_rank} not in [0, local_world_size={self.local_world_size})")
        if self.num_nodes * self.local_world_size != self.world_size:
            problems.append(
                f"num_nodes={self.num_nodes} x local_world_size={self.local_world_size} != world_size={self.world_size}"
            )
        if not 0 <= self.node_rank < self.num_nodes:
            problems.append(f"node_rank={self.node_rank} not in [0, num_nodes={self.num_nodes})")
        if problems:
            raise TopologyError("inconsistent Topology: " + "; ".join(problems))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def physical_node_rank(self) -> int:
        """The machine's index: `virtual_nodes` consecutive (virtual) nodes share one machine."""
        return self.node_rank // self.virtual_nodes

    @property
    def init_method(self) -> str | None:
        if self.master_addr is None or self.master_port is None:
            return None
        return f"tcp://{_url_host(self.master_addr)}:{self.master_port}"

    def describe(self) -> str:
        """One line for logs: 'rank 3/8, node 1/2 (virtual: 2 per machine), local rank 3/4, torchrun'."""
        node = f"node {self.node_rank}/{self.num_nodes}"
        if self.virtual_nodes > 1:
            node += f" (virtual: {self.virtual_nodes} per machine)"
        text = f"rank {self.rank}/{self.world_size}, {node}, local rank {self.local_rank}/{self.local_world_size}"
        text += f", {self.launcher}"
        if self.distributed and self.init_method:
            text += f" at {self.init_method}"
        return text


# ----------------------------------------------------------------------------- discovery


def _get_int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        if default is not None:
            return default
        raise TopologyError(f"{name} is not set")
    try:
        return int(raw.strip())
    except ValueError:
        raise TopologyError(f"{name}={raw!r} is not an integer") from None


def _get_port(env: Mapping[str, str]) -> int:
    raw = env.get("MASTER_PORT")
    if raw is None or raw.strip() == "":
        return DEFAULT_PORT
    try:
        port = int(raw.strip())
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise TopologyError(f"MASTER_PORT={raw!r} is not a valid port (an integer in 1..65535)")
    return port


def parse_tasks_per_node(value: str, name: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """Slurm's compressed per-node task counts: "4" -> [4], "4(x2),3" -> [4, 4, 3]."""
    counts: list[int] = []
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise TopologyError(f"{name}={value!r} is not a Slurm task count list like '4(x2),3'")
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: "gpu[001-004,007],cpu01" -> "gpu001", "a,b" -> "a"."""
    # The first top-level comma-separated entry (commas inside brackets belong to a range).
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == "," and depth == 0:
            end = i
            break
    entry = nodelist[:end].strip()
    # Each bracket group "[001-004,007]" contributes its first value: "001".
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1))[0].strip(), entry)


def _parse_virtual_nodes(env: Mapping[str, str], virtual_nodes: int | None) -> tuple[int, str]:
    if virtual_nodes is not None:
        source = "--virtual-nodes"
        if isinstance(virtual_nodes, bool) or not isinstance(virtual_nodes, int) or virtual_nodes < 1:
            raise TopologyError(f"{source}={virtual_nodes!r} must be a positive integer")
        return virtual_nodes, source
    source = "FASTRES_VIRTUAL_NODES"
    raw = env.get(source)
    if raw is None or raw.strip() == "":
        return 1, source
    try:
        k = int(raw.strip())
    except ValueError:
        k = 0
    if k < 1:
        raise TopologyError(f"{source}={raw!r} must be a positive integer")
    return k, source


def _read_launcher(env: Mapping[str, str]) -> dict:
    """The physical placement as the launcher states it, plus the variable names to blame."""
    if "RANK" in env and "WORLD_SIZE" in env:
        for name in ("LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            if name not in env:
                raise TopologyError(
                    f"RANK and WORLD_SIZE are set (torchrun-style) but {name} is not; "
                    "set LOCAL_RANK and LOCAL_WORLD_SIZE too, or launch with torchrun"
                )
        rank, world = _get_int(env, "RANK"), _get_int(env, "WORLD_SIZE")
        local, local_world = _get_int(env, "LOCAL_RANK"), _get_int(env, "LOCAL_WORLD_SIZE")
        node = _get_int(env, "GROUP_RANK") if env.get("GROUP_RANK", "").strip() else None
        return dict(
            launcher="torchrun", rank=rank, world=world, local=local, local_world=local_world, node=node,
            names=("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"),
            addr=env.get("MASTER_ADDR") or None, addr_names="MASTER_ADDR",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world = _get_int(env, "SLURM_PROCID"), _get_int(env, "SLURM_NTASKS")
        local = _get_int(env, "SLURM_LOCALID")
        node = _get_int(env, "SLURM_NODEID")
        local_world_name = next(
            (n for n in ("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE") if env.get(n, "").strip()), None)
        if local_world_name is None:
            raise TopologyError("neither SLURM_NTASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set")
        counts = parse_tasks_per_node(env[local_world_name], local_world_name)
        if len(set(counts)) > 1:
            raise TopologyError(
                f"{local_world_name}={env[local_world_name]!r}: nodes run different numbers of tasks; "
                "the hierarchical all-reduce needs the same number on every node (srun --ntasks-per-node)"
            )
        local_world = counts[0] if counts else 0
        addr, addr_names = env.get("MASTER_ADDR") or None, "MASTER_ADDR"
        if addr is None:
            for name in ("SLURM_JOB_NODELIST", "SLURM_NODELIST"):
                if env.get(name, "").strip():
                    addr = first_host(env[name]) or None
                    break
            addr_names = "MASTER_ADDR or SLURM_JOB_NODELIST"
        return dict(
            launcher="slurm", rank=rank, world=world, local=local, local_world=local_world, node=node,
            names=("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", local_world_name, "SLURM_NODEID"),
            addr=addr, addr_names=addr_names,
        )
    for launcher, names in (
        ("openmpi", ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                     "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")),
        ("pmi", ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")),
    ):  # fmt: skip
        if names[0] in env and names[1] in env:
            rank, world, local, local_world = (_get_int(env, n) for n in names)
            return dict(
                launcher=launcher, rank=rank, world=world, local=local, local_world=local_world, node=None,
                names=(*names, None), addr=env.get("MASTER_ADDR") or None, addr_names="MASTER_ADDR",
            )
    return dict(
        launcher="none", rank=0, world=1, local=0, local_world=1, node=0,
        names=("(no launcher) rank", "world size", "local rank", "local world size", None),
        addr=env.get("MASTER_ADDR") or None, addr_names="MASTER_ADDR",
    )


def discover(env: Mapping[str, str] | None = None, virtual_nodes: int | None = None) -> Topology:
    """This rank's `Topology` from the launcher's variables (`env` defaults to os.environ).

    `virtual_nodes` None reads FASTRES_VIRTUAL_NODES (default 1).
    """
    env = os.environ if env is None else env
    k, k_source = _parse_virtual_nodes(env, virtual_nodes)
    p = _read_launcher(env)
    rank_n, world_n, local_n, local_world_n, node_n = p["names"]
    rank, world, local, local_world = p["rank"], p["world"], p["local"], p["local_world"]

    if world < 1:
        raise TopologyError(f"{world_n}={world} must be at least 1")
    if not 0 <= rank < world:
        raise TopologyError(f"{rank_n}={rank} is outside [0, {world_n}={world})")
    if local_world < 1:
        raise TopologyError(f"{local_world_n}={local_world} must be at least 1")
    if not 0 <= local < local_world:
        raise TopologyError(f"{local_n}={local} is outside [0, {local_world_n}={local_world})")
    if world % local_world:
        raise TopologyError(
            f"{world_n}={world} is not divisible by {local_world_n}={local_world}: "
            "every node must run the same number of ranks"
        )
    physical_nodes = world // local_world
    node = p["node"]
    if node is None:
        node = rank // local_world  # block placement; init_distributed verifies it
    elif not 0 <= node < physical_nodes:
        raise TopologyError(
            f"{node_n}={node} is outside [0, {physical_nodes}) nodes ({world_n}={world} / {local_world_n}={local_world})"
        )

    if local_world % k:
        raise TopologyError(
            f"{k_source}={k} does not divide the local world size {local_world_n}={local_world}"
        )

    addr, port = p["addr"], None
    if world > 1:
        if not addr:
            raise TopologyError(
                f"{p['addr_names']} is not set: {world} ranks need a rendezvous address (the host of rank 0)"
            )
        port = _get_port(env)
    elif addr:
        port = _get_port(env)

    sub = local_world // k
    return Topology(
        rank=rank,
        world_size=world,
        local_rank=local % sub,
        local_world_size=sub,
        node_rank=node * k + local // sub,
        num_nodes=physical_nodes * k,
        launcher=p["launcher"],
        master_addr=addr,
        master_port=port,
        virtual_nodes=k,
        physical_local_rank=local,
        physical_local_world_size=local_world,
    )


# ----------------------------------------------------------------------------- groups


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
            f"check {_PLACEMENT_VARS.get(launcher, launcher)}"
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


def _url_host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr


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
    where = (
        f"{t.init_method} (world size {t.world_size}, this is rank {t.rank}, launcher {t.launcher})"
    )
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
        raise TopologyError("torch.distributed is already initialised; call fastres.dist.topology.destroy() first")
    t = topology
    device = torch.device(device) if device is not None else None
    backend = _choose_backend(backend, device)
    td = datetime.timedelta(seconds=timeout)
    device_id = None
    if backend == "nccl":
        device_id = cuda_device(t, device)
        torch.cuda.set_device(device_id)
    else:
        _prepare_gloo(t.master_addr)
    start = time.perf_counter()

    if not t.distributed:
        try:
            dist.init_process_group(
                backend, store=dist.HashStore(), rank=0, world_size=1, timeout=td, device_id=device_id
            )
        except Exception as exc:
            raise _explain(exc, "init_process_group", t, timeout) from exc
        return ProcessGroups(
            t, backend, dist.group.WORLD, None, None, [0], [0], td, [socket.gethostname()],
            time.perf_counter() - start,
        )  # fmt: skip

    if t.init_method is None:
        raise TopologyError(f"MASTER_ADDR is not set: {t.world_size} ranks need a rendezvous address")
    try:  # a name that does not resolve would otherwise cost a full timeout, then read as one
        socket.getaddrinfo(t.master_addr, t.master_port, type=socket.SOCK_STREAM)
    except OSError as exc:
        source = "MASTER_ADDR or SLURM_JOB_NODELIST" if t.launcher == "slurm" else "MASTER_ADDR"
        raise TopologyError(
            f"the rendezvous host {t.master_addr!r} (from {source}) does not resolve: {exc.strerror or exc}"
        ) from None
    try:
        dist.init_process_group(
            backend, init_method=t.init_method, rank=t.rank, world_size=t.world_size, timeout=td,
            device_id=device_id,
        )  # fmt: skip
    except Exception as exc:
        raise _explain(exc, "init_process_group", t, timeout) from exc

    try:
        mine = (t.node_rank, t.local_rank, socket.gethostname(), t.world_size, t.local_world_size,
                t.num_nodes, t.virtual_nodes, str(device_id) if device_id is not None else "")  # fmt: skip
        gathered: list = [None] * t.world_size
        try:
            dist.all_gather_object(gathered, mine)
        except Exception as exc:
            raise _explain(exc, "all_gather_object (placement check)", t, timeout) from exc
        _check_agreement(gathered, t, backend)
        intra, inter = plan_groups([(g[0], g[1]) for g in gathered], t.num_nodes, t.local_world_size, t.launcher)
        groups: dict[str, object] = {}
        try:
            for n, ranks in enumerate(intra):
                pg = _new_group(ranks, td, backend)
                if n == t.node_rank:
                    groups["intra"] = pg
            for l, ranks in enumerate(inter):
                pg = _new_group(ranks, td, backend)
                if l == t.local_rank:
                    groups["inter"] = pg
            # the same intra ranks again: the reducer's all-gathers get a group (and, on Gloo, a
            # queue) of their own, so they never interleave with its reduce-scatters
            for n, ranks in enumerate(intra):
                pg = _new_group(ranks, td, backend)
                if n == t.node_rank:
                    groups["intra_gather"] = pg
        except Exception as exc:
            raise _explain(exc, "new_group (intra/inter subgroups)", t, timeout) from exc
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    return ProcessGroups(
        topology=t,
        backend=backend,
        world=dist.group.WORLD,
        intra=groups["intra"],
        inter=groups["inter"],
        intra_ranks=intra[t.node_rank],
        inter_ranks=inter[t.local_rank],
        timeout=td,
        hostnames=[g[2] for g in gathered],
        intra_gather=groups["intra_gather"],
        setup_seconds=time.perf_counter() - start,
    )


def _check_agreement(gathered: list, t: Topology, backend: str) -> None:
    """Every rank must see the same shape, each machine one host name, and (NCCL) one GPU per rank."""
    # Virtual nodes first: a rank without FASTRES_VIRTUAL_NODES also disagrees on the rest.
    for i, name in ((6, "virtual nodes"), (3, "world size"), (4, "local world size"), (5, "number of nodes")):
        values = {g[i] for g in gathered}
        if len(values) > 1:
            hint = " (is FASTRES_VIRTUAL_NODES the same on every rank?)" if name == "virtual nodes" else ""
            raise TopologyError(
                f"ranks disagree on the {name}: {sorted(values)}{hint}; check {_PLACEMENT_VARS[t.launcher]}"
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
                f"{_PLACEMENT_VARS[t.launcher]}"
            )
    if backend == "nccl":
        seen: dict[tuple[str, str], int] = {}
        for r, g in enumerate(gathered):
            key = (g[2], g[7])
            if key in seen:
                raise TopologyError(
                    f"ranks {seen[key]} and {r} both use {g[7]} on host {g[2]}; check {_PLACEMENT_VARS[t.launcher]}"
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
