"""Run a function in N real processes, the way torchrun would start them, and collect results.

    results = run_ranks(worker, world=4, env={"FASTRES_VIRTUAL_NODES": "2"}, args=(...,), timeout=120)

Each rank is a fresh `spawn` process with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT) set before it imports fastres.distributed;
`worker(*args)` runs there and its return value (anything torch.save can write) comes back.
A rank that raises comes back as RankError carrying its traceback; a rank still running at
`timeout` is killed and comes back as RankTimeout, so a test never hangs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class RankError:
    rank: int
    kind: str  # the exception's class name
    message: str  # str(exception)
    traceback: str


@dataclass
class RankTimeout:
    rank: int


# Every launcher's variables (fastres.distributed.topology reads them): a test's ranks get torchrun's
# only, whatever launcher the test itself runs under.
LAUNCHER_NAMES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "FASTRES_VIRTUAL_NODES",
    "GLOO_SOCKET_IFNAME",
)
LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "MPI_LOCAL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environ() -> dict:
    """os.environ without any launcher's variables."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER_NAMES and not k.startswith(LAUNCHER_PREFIXES)}


def rank_env(rank: int, world: int, port: int, local_world: int | None = None, threads: int = 1, **extra) -> dict:
    """The environment torchrun would give `rank` of a `world`-rank job on 127.0.0.1:`port`."""
    local_world = local_world or world
    return {
        **clean_environ(),
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank % local_world),
        "LOCAL_WORLD_SIZE": str(local_world),
        "GROUP_RANK": str(rank // local_world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": str(threads),
        **extra,
    }


def _entry(fn, args, env: dict, out: str, threads: int) -> None:
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads(threads)
    try:
        result = fn(*args)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        result = RankError(int(env["RANK"]), type(e).__name__, str(e), traceback.format_exc())
    torch.save(result, out + ".tmp")
    os.replace(out + ".tmp", out)


def run_ranks(
    fn,
    world: int,
    *,
    args: tuple = (),
    env: dict | None = None,
    timeout: float = 120.0,
    ranks: list[int] | None = None,
    local_world: int | None = None,
    threads: int = 1,
) -> list:
    """Start `ranks` (default: all) of a `world`-rank job on this machine; one result per started rank.

    local_world: ranks per physical node (default: all on one node)."""
    port = free_port()
    ranks = list(range(world)) if ranks is None else ranks
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="fastres-ranks-") as tmp:
        procs = []
        for r in ranks:
            e = rank_env(r, world, port, local_world, threads, **(env or {}))
            p = ctx.Process(target=_entry, args=(fn, args, e, str(Path(tmp) / f"{r}.pt"), threads), daemon=True)
            p.start()
            procs.append((r, p))
        deadline = time.monotonic() + timeout
        for _, p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        results = []
        for r, p in procs:
            if p.is_alive():
                p.kill()
                p.join()
            f = Path(tmp) / f"{r}.pt"
            results.append(torch.load(f, weights_only=False) if f.exists() else RankTimeout(r))
        return results


def check_ok(results: list) -> list:
    """The results, or an AssertionError showing every failed rank's traceback."""
    bad = [r for r in results if isinstance(r, (RankError, RankTimeout))]
    if bad:
        raise AssertionError(
            "\n".join(
                f"rank {b.rank}: timed out" if isinstance(b, RankTimeout) else f"rank {b.rank}: {b.traceback}"
                for b in bad
            )
        )
    return results
