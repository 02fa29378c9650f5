"""Topology discovery, virtual nodes, and real Gloo process groups built from them.

The discovery tests feed dict environments for every launcher; the process tests start real
ranks the way torchrun does (RANK, WORLD_SIZE, LOCAL_RANK, ... in the environment), check the
intra/inter groups with all-reduces, and check that a rank that never starts ends every other
rank with an error that says what it waited for, within the timeout.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.distributed as dist

from fastres import FastresError
from fastres.distributed import (
    DistTimeoutError,
    ProcessGroups,
    Topology,
    TopologyError,
    cuda_device,
    destroy,
    discover,
    init_distributed,
    plan_groups,
)
from fastres.distributed.groups import _check_agreement
from fastres.distributed.launcher import first_host, parse_tasks_per_node

from multiproc import free_port, rank_env


def torchrun_env(rank, world, local_world, **extra):
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank % local_world),
        "LOCAL_WORLD_SIZE": str(local_world),
        "GROUP_RANK": str(rank // local_world),
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29400",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def slurm_env(rank, world, per_node, **extra):
    env = {
        "SLURM_PROCID": str(rank),
        "SLURM_NTASKS": str(world),
        "SLURM_LOCALID": str(rank % per_node),
        "SLURM_NODEID": str(rank // per_node),
        "SLURM_TASKS_PER_NODE": f"{per_node}(x{world // per_node})",
        "SLURM_JOB_NODELIST": "gpu[001-004,007],cpu01",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ----------------------------------------------------------------------------- discovery


def test_torchrun():
    t = discover(torchrun_env(5, 8, 4))
    assert (t.rank, t.world_size, t.local_rank, t.local_world_size, t.node_rank, t.num_nodes) == (5, 8, 1, 4, 1, 2)
    assert (t.launcher, t.master_addr, t.master_port, t.virtual_nodes) == ("torchrun", "10.0.0.1", 29400, 1)
    assert (t.physical_local_rank, t.physical_local_world_size, t.physical_node_rank) == (1, 4, 1)
    assert t.distributed
    assert t.describe() == "rank 5/8, node 1/2, local rank 1/4, torchrun at tcp://10.0.0.1:29400"


def test_torchrun_group_rank_wins_and_defaults_to_block_placement():
    env = torchrun_env(5, 8, 4)
    env["GROUP_RANK"] = "0"  # torchrun's word for the node; trusted, then verified at init
    assert discover(env).node_rank == 0
    del env["GROUP_RANK"]
    assert discover(env).node_rank == 1


def test_slurm_tasks_per_node_formats():
    assert parse_tasks_per_node("4") == [4]
    assert parse_tasks_per_node("4(x2)") == [4, 4]
    assert parse_tasks_per_node("4(x2),3") == [4, 4, 3]
    assert parse_tasks_per_node(" 2(x3) , 2 ") == [2, 2, 2, 2]
    for value in ("4", "4(x2)"):
        env = slurm_env(5, 8, 4, SLURM_TASKS_PER_NODE=value)
        t = discover(env)
        assert (t.launcher, t.rank, t.world_size, t.local_rank, t.local_world_size, t.node_rank) == (
            "slurm", 5, 8, 1, 4, 1,
        )  # fmt: skip
    env = slurm_env(2, 8, 2, SLURM_NTASKS_PER_NODE="2", SLURM_TASKS_PER_NODE="garbage")
    assert discover(env).local_world_size == 2  # SLURM_NTASKS_PER_NODE first


def test_slurm_uses_slurm_nodeid_not_rank_arithmetic():
    # srun --distribution=cyclic: rank 1 is on node 1 as its local task 0.
    env = slurm_env(1, 4, 2, SLURM_LOCALID=0, SLURM_NODEID=1)
    t = discover(env)
    assert (t.node_rank, t.local_rank) == (1, 0)


def test_slurm_rendezvous_address():
    t = discover(slurm_env(0, 8, 4))
    assert (t.master_addr, t.master_port) == ("gpu001", 29500)
    t = discover(slurm_env(0, 8, 4, MASTER_ADDR="head", MASTER_PORT="1234"))
    assert (t.master_addr, t.master_port) == ("head", 1234)
    env = slurm_env(0, 8, 4)
    del env["SLURM_JOB_NODELIST"]
    env["SLURM_NODELIST"] = "n[3-4]"
    assert discover(env).master_addr == "n3"


@pytest.mark.parametrize(
    "nodelist, host",
    [
        ("gpu[001-004,007],cpu01", "gpu001"),
        ("a,b", "a"),
        ("host", "host"),
        ("node[7]", "node7"),
        ("node[10-12,3]-ib", "node10-ib"),
        ("rack[2-3]-n[05-06]", "rack2-n05"),
        ("x[1,3],y[2-4]", "x1"),
    ],
)
def test_first_host_of_a_nodelist(nodelist, host):
    assert first_host(nodelist) == host


@pytest.mark.parametrize(
    "launcher, names",
    [
        ("openmpi", ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                     "OMPI_COMM_WORLD_LOCAL_SIZE")),
        ("pmi", ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")),
    ],
)  # fmt: skip
def test_mpi_launchers_assume_block_placement(launcher, names):
    env = dict(zip(names, ("6", "8", "2", "4")), MASTER_ADDR="head")
    t = discover(env)
    assert (t.launcher, t.rank, t.world_size, t.local_rank, t.local_world_size) == (launcher, 6, 8, 2, 4)
    assert (t.node_rank, t.num_nodes, t.master_addr, t.master_port) == (1, 2, "head", 29500)


def test_no_launcher_is_one_process():
    t = discover({})
    assert (t.rank, t.world_size, t.local_rank, t.local_world_size, t.node_rank, t.num_nodes) == (0, 1, 0, 1, 0, 1)
    assert (t.launcher, t.master_addr, t.master_port, t.distributed) == ("none", None, None, False)
    assert t.describe() == "rank 0/1, node 0/1, local rank 0/1, none"


def test_single_torchrun_rank_needs_no_master():
    t = discover({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    assert (t.launcher, t.distributed, t.master_addr) == ("torchrun", False, None)


def test_priority_torchrun_then_slurm_then_openmpi_then_pmi():
    slurm = slurm_env(3, 8, 4)
    ompi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MASTER_ADDR": "h"}  # fmt: skip
    pmi = {"PMI_RANK": "0", "PMI_SIZE": "1", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "1"}
    # torchrun inside a Slurm allocation: torchrun's variables describe the worker.
    t = discover({**slurm, **ompi, **pmi, **torchrun_env(6, 8, 2)})
    assert (t.launcher, t.rank, t.local_world_size) == ("torchrun", 6, 2)
    assert discover({**ompi, **pmi, **slurm}).launcher == "slurm"
    assert discover({**pmi, **ompi}).launcher == "openmpi"
    assert discover(pmi).launcher == "pmi"


# ----------------------------------------------------------------------------- virtual nodes


@pytest.mark.parametrize("local_world, k", [(4, 1), (4, 2), (4, 4), (8, 1), (8, 2), (8, 4)])
def test_virtual_nodes_split_each_machine(local_world, k):
    machines = 2
    world = machines * local_world
    topos = [discover(torchrun_env(r, world, local_world, FASTRES_VIRTUAL_NODES=k)) for r in range(world)]
    sub = local_world // k
    for r, t in enumerate(topos):
        machine, physical_local = r // local_world, r % local_world
        assert (t.local_world_size, t.num_nodes, t.virtual_nodes) == (sub, machines * k, k)
        assert t.local_rank == physical_local % sub
        assert t.node_rank == machine * k + physical_local // sub
        assert (t.physical_local_rank, t.physical_local_world_size, t.physical_node_rank) == (
            physical_local, local_world, machine,
        )  # fmt: skip
    assert len({(t.node_rank, t.local_rank) for t in topos}) == world

    intra, inter = plan_groups([(t.node_rank, t.local_rank) for t in topos], machines * k, sub, "torchrun")
    assert sorted(r for g in intra for r in g) == list(range(world))  # a partition of the world
    assert sorted(r for g in inter for r in g) == list(range(world))
    assert len(intra) == machines * k and all(len(g) == sub for g in intra)
    assert len(inter) == sub and all(len(g) == machines * k for g in inter)
    for n, group in enumerate(intra):  # group rank == local rank
        assert [(topos[r].node_rank, topos[r].local_rank) for r in group] == [(n, l) for l in range(sub)]
    for l, group in enumerate(inter):  # group rank == node rank
        assert [(topos[r].node_rank, topos[r].local_rank) for r in group] == [(n, l) for n in range(machines * k)]
    # Each intra group stays on one machine (the fast links), each inter group spans machines.
    assert all(len({topos[r].physical_node_rank for r in g}) == 1 for g in intra)
    if k > 1:
        t = topos[sub]
        assert t.describe().startswith(f"rank {sub}/{world}, node 1/{machines * k} (virtual: {k} per machine)")


def test_virtual_nodes_argument_beats_the_environment():
    env = torchrun_env(3, 4, 4, FASTRES_VIRTUAL_NODES=4)
    assert discover(env, virtual_nodes=2).virtual_nodes == 2
    assert discover(env).virtual_nodes == 4
    t = discover(slurm_env(5, 8, 4), virtual_nodes=2)
    assert (t.node_rank, t.local_rank, t.num_nodes) == (2, 1, 4)


def test_plan_groups_refuses_a_round_robin_mpi_placement():
    # mpirun --map-by node: rank r on machine r % 2 as local rank r // 2, but MPI exports no
    # node index, so discover() assumes blocks; the gathered placement then does not fit.
    placements = []
    for r in range(8):
        env = {"OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": str(r // 2),
               "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "MASTER_ADDR": "h"}  # fmt: skip
        t = discover(env)
        placements.append((t.node_rank, t.local_rank))
    with pytest.raises(TopologyError, match=r"both claim node 0, local rank 0.*OMPI_COMM_WORLD_LOCAL_RANK.*--map-by"):
        plan_groups(placements, 2, 4, "openmpi")


def test_plan_groups_refuses_a_missing_slot():
    with pytest.raises(TopologyError, match="rank 3 claims node 2.*GROUP_RANK"):
        plan_groups([(0, 0), (0, 1), (1, 0), (2, 1)], 2, 2, "torchrun")


def _gathered(topos, hosts, devices=None):
    # What init_distributed gathers from every rank, built from discover() for each rank.
    return [(t.node_rank, t.local_rank, h, t.world_size, t.local_world_size, t.num_nodes, t.virtual_nodes,
             devices[r] if devices else "") for r, (t, h) in enumerate(zip(topos, hosts))]  # fmt: skip


def test_gathered_placement_checks():
    topos = [discover(torchrun_env(r, 8, 4, FASTRES_VIRTUAL_NODES=2)) for r in range(8)]
    hosts = ["a"] * 4 + ["b"] * 4
    _check_agreement(_gathered(topos, hosts), topos[0], "gloo")
    # Two virtual nodes of one machine on two hosts: the launcher's node assignment is wrong.
    with pytest.raises(
        TopologyError, match=r"machine 1 .node ranks 2..3. spans several hosts: rank 4 on b, rank 6 on c.*GROUP_RANK"
    ):
        _check_agreement(_gathered(topos, hosts[:6] + ["c", "c"]), topos[0], "gloo")
    # One rank without FASTRES_VIRTUAL_NODES.
    odd = [discover(torchrun_env(0, 8, 4))] + topos[1:]
    with pytest.raises(TopologyError, match=r"disagree on the virtual nodes: \[1, 2\].*FASTRES_VIRTUAL_NODES"):
        _check_agreement(_gathered(odd, hosts), topos[0], "gloo")
    # NCCL: two ranks of one host on one GPU.
    devices = [f"cuda:{r % 4}" for r in range(8)]
    _check_agreement(_gathered(topos, hosts, devices), topos[0], "nccl")
    devices[3] = "cuda:0"
    with pytest.raises(TopologyError, match="ranks 0 and 3 both use cuda:0 on host a"):
        _check_agreement(_gathered(topos, hosts, devices), topos[0], "nccl")


def test_topology_checks_itself():
    with pytest.raises(TopologyError, match="num_nodes=3 x local_world_size=4 != world_size=8"):
        Topology(0, 8, 0, 4, 0, 3, "torchrun", "h", 1)
    with pytest.raises(TopologyError, match="rank=8 not in"):
        Topology(8, 8, 0, 4, 0, 2, "torchrun", "h", 1)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "env, virtual_nodes, names",
    [
        (torchrun_env(0, 4, 4, RANK="zero"), None, ["RANK='zero'", "not an integer"]),
        (torchrun_env(0, 4, 4, WORLD_SIZE="4.0"), None, ["WORLD_SIZE='4.0'"]),
        (torchrun_env(0, 4, 4, RANK=4), None, ["RANK=4", "WORLD_SIZE=4"]),
        (torchrun_env(0, 4, 4, RANK=-1), None, ["RANK=-1"]),
        (torchrun_env(0, 4, 4, LOCAL_RANK=4), None, ["LOCAL_RANK=4", "LOCAL_WORLD_SIZE=4"]),
        (torchrun_env(0, 6, 4), None, ["WORLD_SIZE=6", "LOCAL_WORLD_SIZE=4", "not divisible"]),
        (torchrun_env(0, 8, 4, GROUP_RANK=2), None, ["GROUP_RANK=2"]),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, None, ["LOCAL_RANK"]),
        ({k: v for k, v in torchrun_env(0, 4, 4).items() if k != "MASTER_ADDR"}, None, ["MASTER_ADDR"]),
        (torchrun_env(0, 4, 4, MASTER_PORT="http"), None, ["MASTER_PORT='http'"]),
        (torchrun_env(0, 4, 4, MASTER_PORT="0"), None, ["MASTER_PORT='0'"]),
        (torchrun_env(0, 4, 4, MASTER_PORT="65536"), None, ["MASTER_PORT='65536'"]),
        (torchrun_env(0, 4, 4, FASTRES_VIRTUAL_NODES="0"), None, ["FASTRES_VIRTUAL_NODES='0'", "positive"]),
        (torchrun_env(0, 4, 4, FASTRES_VIRTUAL_NODES="two"), None, ["FASTRES_VIRTUAL_NODES='two'"]),
        (torchrun_env(0, 4, 4, FASTRES_VIRTUAL_NODES="3"), None, ["FASTRES_VIRTUAL_NODES=3", "LOCAL_WORLD_SIZE=4"]),
        (torchrun_env(0, 4, 4), 0, ["--virtual-nodes=0"]),
        (torchrun_env(0, 4, 4), 8, ["--virtual-nodes=8", "LOCAL_WORLD_SIZE=4"]),
        ({}, 2, ["--virtual-nodes=2", "local world size"]),
        (slurm_env(0, 8, 4, SLURM_TASKS_PER_NODE="4(x2),3"), None, ["SLURM_TASKS_PER_NODE='4(x2),3'", "same number"]),
        (slurm_env(0, 8, 4, SLURM_TASKS_PER_NODE="4(y2)"), None, ["SLURM_TASKS_PER_NODE='4(y2)'"]),
        (slurm_env(0, 8, 4, SLURM_NTASKS_PER_NODE="4"), 3, ["--virtual-nodes=3", "SLURM_NTASKS_PER_NODE=4"]),
        (slurm_env(0, 8, 4, SLURM_LOCALID="a"), None, ["SLURM_LOCALID='a'"]),
        (slurm_env(0, 8, 4, SLURM_NODEID="9"), None, ["SLURM_NODEID=9"]),
        (slurm_env(0, 8, 4, SLURM_JOB_NODELIST=""), None, ["MASTER_ADDR", "SLURM_JOB_NODELIST"]),
        ({"OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "2"}, None, ["OMPI_COMM_WORLD_RANK='x'"]),
        (
            {
                "OMPI_COMM_WORLD_RANK": "1",
                "OMPI_COMM_WORLD_SIZE": "2",
                "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                "OMPI_COMM_WORLD_LOCAL_SIZE": "1",  # 2 hosts: no loopback default for the rendezvous
            },
            None,
            ["MASTER_ADDR"],
        ),  # fmt: skip
        (
            {"PMI_RANK": "0", "PMI_SIZE": "6", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "4", "MASTER_ADDR": "h"},
            None,
            ["PMI_SIZE=6", "MPI_LOCALNRANKS=4"],
        ),  # fmt: skip
    ],
)
def test_errors_name_the_variable(env, virtual_nodes, names):
    with pytest.raises(TopologyError) as info:
        discover(env, virtual_nodes=virtual_nodes)
    message = str(info.value)
    assert isinstance(info.value, FastresError) and "\n" not in message
    for name in names:
        assert name in message


# ----------------------------------------------------------------------------- one process


@pytest.fixture
def gloo_env(monkeypatch):
    # init_distributed may set GLOO_SOCKET_IFNAME for a loopback rendezvous; setenv + delenv
    # makes monkeypatch restore "unset" afterwards.
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "unset")
    monkeypatch.delenv("GLOO_SOCKET_IFNAME")
    yield
    destroy(None)


def test_one_process_gets_a_working_world_group(gloo_env):
    groups = init_distributed(discover({}), timeout=30)
    assert isinstance(groups, ProcessGroups)
    assert (groups.backend, groups.intra, groups.inter, groups.intra_ranks, groups.inter_ranks) == (
        "gloo",
        None,
        None,
        [0],
        [0],
    )
    assert not groups.hierarchical and groups.timeout.total_seconds() == 30
    x = torch.tensor([3.0])
    dist.all_reduce(x, group=groups.world)
    assert x.item() == 3.0 and dist.get_world_size() == 1
    with pytest.raises(TopologyError, match="already initialised"):
        init_distributed(discover({}))
    destroy(groups)
    destroy(groups)  # twice is fine
    assert not dist.is_initialized()


def test_port_in_use_names_master_port(gloo_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = torchrun_env(0, 2, 2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        with pytest.raises(TopologyError, match=f"init_process_group.*MASTER_PORT={port}"):
            init_distributed(discover(env), backend="gloo", timeout=10)
    assert not dist.is_initialized()


def test_unresolvable_master_names_master_addr(gloo_env):
    env = slurm_env(1, 2, 2, SLURM_JOB_NODELIST="no-such-host.invalid")
    with pytest.raises(
        TopologyError, match="'no-such-host.invalid' .from MASTER_ADDR or SLURM_JOB_NODELIST. does not resolve"
    ):
        init_distributed(discover(env), backend="gloo", timeout=10)


def test_backend_must_be_known():
    with pytest.raises(TopologyError, match="backend='mpi'"):
        init_distributed(discover({}), backend="mpi")


# ----------------------------------------------------------------------------- real ranks

WORKER = textwrap.dedent(
    """
    import json, sys, time
    import torch, torch.distributed as dist
    from fastres.distributed import destroy, discover, init_distributed

    out, timeout = sys.argv[1], float(sys.argv[2])
    result, code = {}, 0
    try:
        t = discover()
        start = time.perf_counter()
        g = init_distributed(t, backend="gloo", timeout=timeout)
        result.update(setup_s=time.perf_counter() - start, hierarchical=g.hierarchical,
                      intra=g.intra_ranks, inter=g.inter_ranks, node=t.node_rank, local=t.local_rank)
        x = torch.tensor([float(t.rank)])
        dist.all_reduce(x)
        result["world_sum"] = x.item()
        if g.intra is not None:
            y = torch.tensor([float(t.rank), 1.0])
            dist.all_reduce(y, group=g.intra)
            z = torch.tensor([float(t.rank), 1.0])
            dist.all_reduce(z, group=g.inter)
            result.update(intra_sum=y.tolist(), inter_sum=z.tolist(),
                          intra_group_rank=dist.get_rank(g.intra), inter_group_rank=dist.get_rank(g.inter))
        destroy(g)
        destroy(g)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        code = 2
    with open(out, "w") as f:
        json.dump(result, f)
    sys.exit(code)
    """
)


def launch(tmp_path, world, local_world, virtual_nodes, *, timeout, skip=(), deadline):
    """Start the ranks like torchrun on one host; return {rank: (exit code, seconds, result)}."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    port = free_port()
    procs = {}
    start = time.monotonic()
    for r in range(world):
        if r in skip:
            continue
        env = rank_env(r, world, port, local_world, FASTRES_VIRTUAL_NODES=str(virtual_nodes))
        log = open(tmp_path / f"rank{r}.log", "wb")
        procs[r] = subprocess.Popen(
            [sys.executable, str(worker), str(tmp_path / f"rank{r}.json"), str(timeout)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
    results = {}
    try:
        for r, p in procs.items():
            try:
                p.wait(timeout=max(0.1, deadline - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                pass
            results[r] = [p.returncode, time.monotonic() - start, None]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for r in results:
        path = tmp_path / f"rank{r}.json"
        if path.exists():
            results[r][2] = json.loads(path.read_text())
        if results[r][0] is None:
            log = (tmp_path / f"rank{r}.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"rank {r} still running after {deadline} s; its output:\n{log}")
    return results


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world, local_world, virtual_nodes", [(4, 4, 2), (8, 8, 2), (4, 4, 1)])
def test_gloo_groups_on_one_host(tmp_path, world, local_world, virtual_nodes):
    results = launch(tmp_path, world, local_world, virtual_nodes, timeout=60, deadline=100)
    sub = local_world // virtual_nodes
    num_nodes = world // sub
    for r, (code, _, result) in results.items():
        assert code == 0 and "error" not in result, (r, result, (tmp_path / f"rank{r}.log").read_text()[-2000:])
        node, local = r // sub, r % sub  # block placement: rank = node * sub + local
        intra = [node * sub + l for l in range(sub)]
        inter = [n * sub + local for n in range(num_nodes)]
        assert (result["node"], result["local"]) == (node, local)
        assert (result["intra"], result["inter"]) == (intra, inter)
        assert result["hierarchical"] == (num_nodes > 1 and sub > 1)
        assert result["world_sum"] == world * (world - 1) / 2
        assert result["intra_sum"] == [sum(intra), len(intra)]
        assert result["inter_sum"] == [sum(inter), len(inter)]
        assert (result["intra_group_rank"], result["inter_group_rank"]) == (local, node)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("missing", [3, 0])  # 0: nobody serves the TCPStore; others: rank 0 waits for them
def test_a_rank_that_never_starts_ends_the_others_with_a_named_timeout(tmp_path, missing):
    timeout = 5
    results = launch(tmp_path, 4, 4, 1, timeout=timeout, skip=(missing,), deadline=timeout + 40)
    assert sorted(results) == sorted(set(range(4)) - {missing})
    for r, (code, seconds, result) in results.items():
        assert code == 2, (r, code, result)
        assert seconds < timeout + 30, (r, seconds)  # torch import on a loaded 2-core box included
        message = result["error"]
        assert message.startswith("DistTimeoutError: init_process_group: timed out after 5 s"), message
        assert "world size 4" in message and f"this is rank {r}" in message and "tcp://127.0.0.1:" in message
        assert "\n" not in message
    assert issubclass(DistTimeoutError, TopologyError)


def test_cuda_device_is_the_given_one_or_a_named_error():
    t = discover(torchrun_env(1, 4, 4))
    assert cuda_device(t, torch.device("cuda", 3)) == torch.device("cuda", 3)  # named: taken as is
    if torch.cuda.device_count() == 0:
        with pytest.raises(TopologyError, match="needs a CUDA device"):
            cuda_device(t)
    elif torch.cuda.device_count() == 1:
        assert cuda_device(t) == torch.device("cuda", 0)  # one visible GPU per process


def test_one_rank_groups_have_every_field_in_its_place():
    # a positional construction once put the setup time into `intra_gather`
    t = discover({})
    g = init_distributed(t, backend="gloo", timeout=30)
    try:
        assert g.topology is t and g.backend == "gloo" and g.world is not None
        assert g.intra is None and g.inter is None and g.intra_gather is None
        assert g.intra_ranks == [0] and g.inter_ranks == [0]
        assert g.timeout.total_seconds() == 30 and len(g.hostnames) == 1
        assert isinstance(g.setup_seconds, float) and 0 < g.setup_seconds < 30
    finally:
        destroy(g)


# ----------------------------------------------------------------------------- MPI on one host


@pytest.mark.parametrize(
    "names",
    [
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
        ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ],
)
def test_mpi_on_one_host_without_master_addr_meets_on_loopback(names):
    """mpirun -np 4 on one host: local size = world size, so the rendezvous is this host's loopback."""
    t = discover(dict(zip(names, ("3", "4", "3", "4"))))
    assert (t.master_addr, t.master_port, t.world_size, t.num_nodes) == ("127.0.0.1", 29500, 4, 1)
    assert t.init_method == "tcp://127.0.0.1:29500"
    given = discover({**dict(zip(names, ("3", "4", "3", "4"))), "MASTER_ADDR": "head", "MASTER_PORT": "1234"})
    assert (given.master_addr, given.master_port) == ("head", 1234)  # an explicit address still wins
    with pytest.raises(TopologyError, match="MASTER_ADDR is not set: 4 ranks need a rendezvous address"):
        discover(dict(zip(names, ("3", "4", "1", "2"))))  # 2 hosts: no default
