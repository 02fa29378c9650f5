"""Launcher discovery: where this process sits, as the launcher's environment variables say.

`read_launcher(env)` returns the physical placement (rank, world size, local rank, local
world size, node when the launcher states it, rendezvous address) and the names of the
variables it came from, so every later error can name them. Sources, first match wins:

    torchrun  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT
    slurm     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_NTASKS_PER_NODE or
              SLURM_TASKS_PER_NODE, MASTER_ADDR or the first host of SLURM_JOB_NODELIST
    openmpi   OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}, MASTER_ADDR
    pmi       PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS, MASTER_ADDR
    none      one process: rank 0 of 1

MPI launchers do not export a node index (`node` is None then): fastres.distributed.topology
assumes block placement and fastres.distributed.groups verifies it. Nor do they export a
rendezvous address: where every rank is on this host (local size = world size) and MASTER_ADDR
is unset, it is the loopback address; across hosts, MASTER_ADDR must be passed (mpirun -x).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from fastres.distributed.errors import TopologyError

__all__ = [
    "DEFAULT_PORT",
    "LAUNCHERS",
    "LOOPBACK",
    "PLACEMENT_VARS",
    "LaunchEnv",
    "first_host",
    "get_port",
    "parse_tasks_per_node",
    "read_launcher",
]

DEFAULT_PORT = 29500
LOOPBACK = "127.0.0.1"  # MPI's rendezvous when every rank runs on this host and MASTER_ADDR is unset
LAUNCHERS = ("torchrun", "slurm", "openmpi", "pmi", "none")

# The variables that place a rank on a node, per launcher: named in placement errors.
PLACEMENT_VARS = {
    "torchrun": "RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK",
    "slurm": "SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_TASKS_PER_NODE",
    "openmpi": "OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_SIZE "
    "(node = rank // local size: launch with block placement, mpirun --map-by slot)",
    "pmi": "PMI_RANK, MPI_LOCALRANKID, MPI_LOCALNRANKS "
    "(node = rank // local size: launch with block placement, e.g. mpiexec -ppn N)",
    "none": "(no launcher)",
}


@dataclass(frozen=True)
class LaunchEnv:
    """The placement as the launcher states it, with the variable names to blame in errors."""

    launcher: str
    rank: int
    world: int
    local: int
    local_world: int
    node: int | None  # None: the launcher does not say (MPI); block placement is assumed
    names: tuple  # the variables of rank, world, local rank, local world, node (None: none)
    addr: str | None
    addr_names: str


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


def get_port(env: Mapping[str, str]) -> int:
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


# The pairs whose presence makes read_launcher see a launcher (rank and world size of each kind).
MARKERS = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
           ("PMI_RANK", "PMI_SIZE"))  # fmt: skip


def without_launcher(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the variables that tell a process it is one rank of a job: a child started from
    inside a job then runs alone."""
    return {k: v for k, v in env.items() if not any(k in pair for pair in MARKERS)}


def read_launcher(env: Mapping[str, str]) -> LaunchEnv:
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
        return LaunchEnv(
            launcher="torchrun",
            rank=rank,
            world=world,
            local=local,
            local_world=local_world,
            node=node,
            names=("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"),
            addr=env.get("MASTER_ADDR") or None,
            addr_names="MASTER_ADDR",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world = _get_int(env, "SLURM_PROCID"), _get_int(env, "SLURM_NTASKS")
        local = _get_int(env, "SLURM_LOCALID")
        node = _get_int(env, "SLURM_NODEID")
        local_world_name = next(
            (n for n in ("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE") if env.get(n, "").strip()), None
        )
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
        return LaunchEnv(
            launcher="slurm",
            rank=rank,
            world=world,
            local=local,
            local_world=local_world,
            node=node,
            names=("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", local_world_name, "SLURM_NODEID"),
            addr=addr,
            addr_names=addr_names,
        )
    for launcher, names in (
        ("openmpi", ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                     "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")),
        ("pmi", ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")),
    ):  # fmt: skip
        if names[0] in env and names[1] in env:
            rank, world, local, local_world = (_get_int(env, n) for n in names)
            addr = env.get("MASTER_ADDR") or None
            if addr is None and local_world == world:
                addr = LOOPBACK  # every rank on this host: mpirun -np N without -x MASTER_ADDR
            return LaunchEnv(
                launcher=launcher,
                rank=rank,
                world=world,
                local=local,
                local_world=local_world,
                node=None,
                names=(*names, None),
                addr=addr,
                addr_names="MASTER_ADDR",
            )
    return LaunchEnv(
        launcher="none",
        rank=0,
        world=1,
        local=0,
        local_world=1,
        node=0,
        names=("(no launcher) rank", "world size", "local rank", "local world size", None),
        addr=env.get("MASTER_ADDR") or None,
        addr_names="MASTER_ADDR",
    )
