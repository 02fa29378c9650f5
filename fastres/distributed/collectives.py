"""The few collectives a training job makes outside the gradient reducer, each failing in one line.

    checked(what, fn, *args)            a torch.distributed call whose failure is a CollectiveError naming `what`
    peers_named(text, hostnames)        the hosts and ranks behind the peer addresses of a Gloo error
    other_hosts(hostnames, rank)        the hosts a rank waits for when an error names no peer
    rank0_first(groups, fn)             fn() on rank 0, its result (or its FastresError) on every rank
    broadcast_tensors(groups, ts, what) rank 0's tensors to every rank, in place
    sum_over_ranks(groups, t, what)     an all_reduce (sum) of a tensor, in place
    mean_over_ranks(groups, t)          the mean of a scalar tensor over the ranks, as a float (syncs)
    gather_objects(groups, obj, what)   every rank's picklable object, by rank
    check_weights_agree(groups, flat)   raise when the ranks no longer hold identical weights

`groups` is a fastres.distributed.groups.ProcessGroups, or None for one process: then every
function is the single-process identity. A peer that died surfaces as one line naming the
collective, not as a stack trace from inside Gloo or NCCL.
"""

from __future__ import annotations

import re
import socket

import torch
import torch.distributed as dist

from fastres import FastresError
from fastres.distributed.errors import CollectiveError

__all__ = [
    "broadcast_tensors",
    "cause",
    "check_weights_agree",
    "checked",
    "gather_objects",
    "mean_over_ranks",
    "other_hosts",
    "peers_named",
    "rank0_first",
    "sum_over_ranks",
]


def cause(e: BaseException) -> str:
    """The first line of a torch.distributed error, without Gloo's boilerplate advice and source location."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    first = re.sub(r"^\[[^\]\s]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", first)  # [.../gloo/transport/tcp/pair.cc:537]
    return first.split(" This is typically caused by")[0]


_ADDRESS = re.compile(r"\[([0-9A-Fa-f:.]+)\]:\d+")  # how Gloo names a peer: [198.18.0.2]:37004


def peers_named(text: str, hostnames: list[str]) -> str:
    """The hosts and ranks behind the peer addresses a Gloo error names (`hostnames`: each rank's, as
    fastres.distributed.groups gathered them), e.g. "198.18.0.2 is fastres-h1 (rank 1)"; "" when it names none."""
    addresses = sorted(set(_ADDRESS.findall(text)))
    if not addresses:
        return ""
    by_address: dict[str, set[str]] = {}
    for host in set(hostnames):
        try:
            for *_, sockaddr in socket.getaddrinfo(host, None):
                by_address.setdefault(sockaddr[0], set()).add(host)
        except OSError:
            continue  # a name that does not resolve here names nothing
    said = []
    for address in addresses:
        for host in sorted(by_address.get(address, ())):
            ranks = [r for r, h in enumerate(hostnames) if h == host]
            said.append(f"{address} is {host} (rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))})")
    return "; ".join(said)


def other_hosts(hostnames: list[str], rank: int, most: int = 3) -> str:
    """The hosts other than `rank`'s and their ranks, for an error that names no peer (a collective that timed
    out: one of them did not answer), e.g. "fastres-h1 (rank 1)"; "" when every rank is on this host."""
    mine = hostnames[rank] if 0 <= rank < len(hostnames) else None
    hosts = list(dict.fromkeys(h for h in hostnames if h != mine))
    said = []
    for host in hosts[:most]:
        ranks = [r for r, h in enumerate(hostnames) if h == host]
        shown = ", ".join(map(str, ranks[:4])) + (", ..." if len(ranks) > 4 else "")
        said.append(f"{host} (rank{'s' if len(ranks) > 1 else ''} {shown})")
    return ", ".join(said) + (f" and {len(hosts) - most} more hosts" if len(hosts) > most else "")


def checked(what: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), a torch.distributed call; its failure becomes a CollectiveError naming `what`."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, ValueError) as e:  # torch.distributed.DistError is a RuntimeError
        raise CollectiveError(f"{what} failed (a rank that died or never reached this point?): {cause(e)}") from e


def rank0_first(groups, fn):
    """fn() on rank 0, its result (or its error, as a FastresError) on every rank.

    For work only rank 0 does (checking the data, making the run folder): the others must
    hear of a failure, or they would wait for the timeout."""
    if groups is None:
        return fn()
    box: list = [None]
    failure = None
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # noqa: BLE001 - re-raised here, sent to the others as text
            failure = e
            box[0] = ("error", type(e) if isinstance(e, FastresError) else FastresError, f"rank 0: {e}")
    name = getattr(fn, "__name__", "setup").strip("_")
    checked(f"broadcast of rank 0's {name} result", dist.broadcast_object_list, box, src=0, group=groups.world)
    if failure is not None:
        raise failure
    if box[0][0] == "error":
        error = box[0][1](box[0][2])
        error.shared = True  # rank 0 says it
        raise error
    return box[0][1]


def broadcast_tensors(groups, tensors, what: str) -> None:
    """Rank 0's values of `tensors` to every rank, in place."""
    if groups is None:
        return
    with torch.no_grad():
        for t in tensors:
            checked(f"broadcast of rank 0's {what}", dist.broadcast, t, src=0, group=groups.world)


def sum_over_ranks(groups, t: torch.Tensor, what: str) -> torch.Tensor:
    """t summed over the ranks, in place (returned for chaining)."""
    if groups is not None:
        checked(f"all_reduce of {what}", dist.all_reduce, t, group=groups.world)
    return t


def mean_over_ranks(groups, value: torch.Tensor, what: str = "the logged loss") -> float:
    """The mean of a scalar tensor over the ranks, as a Python float (synchronises the device)."""
    value = value.detach().clone()
    if groups is not None:
        sum_over_ranks(groups, value, what)
        value /= dist.get_world_size(groups.world)
    return value.item()


def gather_objects(groups, obj, what: str) -> list:
    """Every rank's `obj`, indexed by rank ([obj] for one process)."""
    if groups is None:
        return [obj]
    out = [None] * dist.get_world_size(groups.world)
    checked(f"all_gather of {what}", dist.all_gather_object, out, obj, group=groups.world)
    return out


def check_weights_agree(groups, flat: torch.Tensor, when: str) -> None:
    """All ranks must hold the same weights (a desynchronised rank would train on silently).

    One fp64 copy of the flat parameter buffer gives its sum and norm; the ranks compare them."""
    if groups is None:
        return
    w = flat.double()
    mine = torch.stack([w.sum(), w.norm()])
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size(groups.world))]
    checked("all_gather of weight checksums", dist.all_gather, every, mine, group=groups.world)
    bad = [r for r, t in enumerate(every) if not torch.equal(t, every[0])]
    if bad:
        raise FastresError(
            f"{when}: the weights of ranks {bad} differ from rank 0's "
            f"(checksums {[t.tolist() for t in every[:4]]}...); the ranks no longer train one model"
        )
