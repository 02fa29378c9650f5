"""Topology: one rank's place in the job (rank, node, local rank), after the virtual-node split.

`discover()` reads the launcher's variables (fastres.distributed.launcher) and returns a
`Topology`. Virtual nodes split each machine's L local ranks into K "nodes" of L/K
consecutive local ranks, so the two-level all-reduce runs (and is tested) on one box:

    FASTRES_VIRTUAL_NODES=2 torchrun --nproc-per-node 8 -m fastres.train ...   # 2 nodes x 4

MPI launchers do not export a node index, so node = rank // local world size: this assumes
block placement (`mpirun --map-by slot`, hydra's default `-ppn`).
fastres.distributed.groups.init_distributed gathers every rank's (node, local rank, host
name) and refuses a placement that does not fit, so a round-robin mapping is an error that
says so, never a silently wrong hierarchy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from fastres.distributed.errors import TopologyError
from fastres.distributed.launcher import get_port, read_launcher

__all__ = ["Topology", "discover", "url_host"]


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
        return f"tcp://{url_host(self.master_addr)}:{self.master_port}"

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


def url_host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr


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


def discover(env: Mapping[str, str] | None = None, virtual_nodes: int | None = None) -> Topology:
    """This rank's `Topology` from the launcher's variables (`env` defaults to os.environ).

    `virtual_nodes` None reads FASTRES_VIRTUAL_NODES (default 1).
    """
    env = os.environ if env is None else env
    k, k_source = _parse_virtual_nodes(env, virtual_nodes)
    p = read_launcher(env)
    rank_n, world_n, local_n, local_world_n, node_n = p.names
    rank, world, local, local_world = p.rank, p.world, p.local, p.local_world

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
    node = p.node
    if node is None:
        node = rank // local_world  # block placement; init_distributed verifies it
    elif not 0 <= node < physical_nodes:
        raise TopologyError(
            f"{node_n}={node} is outside [0, {physical_nodes}) nodes "
            f"({world_n}={world} / {local_world_n}={local_world})"
        )

    if local_world % k:
        raise TopologyError(f"{k_source}={k} does not divide the local world size {local_world_n}={local_world}")

    addr, port = p.addr, None
    if world > 1:
        if not addr:
            raise TopologyError(
                f"{p.addr_names} is not set: {world} ranks need a rendezvous address (the host of rank 0)"
            )
        port = get_port(env)
    elif addr:
        port = get_port(env)

    sub = local_world // k
    return Topology(
        rank=rank,
        world_size=world,
        local_rank=local % sub,
        local_world_size=sub,
        node_rank=node * k + local // sub,
        num_nodes=physical_nodes * k,
        launcher=p.launcher,
        master_addr=addr,
        master_port=port,
        virtual_nodes=k,
        physical_local_rank=local,
        physical_local_world_size=local_world,
    )
