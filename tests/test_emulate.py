"""`python -m fastres.distributed.emulate`: real namespaces, real tc, real Gloo, and nothing left behind.

Every test that builds hosts needs root, `ip`, `tc` and `unshare` (skipped with the reason
otherwise) and checks afterwards that no namespace, /etc/netns folder, link or qdisc of this
machine is left or changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from fastres.distributed.emulate import network
from fastres.distributed.emulate.__main__ import main as emulate_main
from fastres.distributed.emulate.network import EmulatedNetwork, EmulationError

from emulated import EMULATE, assert_nothing_left, machine_state, needs_emulation, read_json_lines
from multiproc import clean_environ


def emulate(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*EMULATE, *args], capture_output=True, text=True, timeout=timeout, env=clean_environ())


def wait_for_namespaces(pid: int, count: int, proc: subprocess.Popen, seconds: float = 60) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        names = [n for n in machine_state()["namespaces"] if n.startswith(f"{network.PREFIX}-{pid}-")]
        hosts = [n for n in names if not n.endswith("-sw")]  # the switch holds no process; every host does
        pids = [
            subprocess.run(["ip", "netns", "pids", n], capture_output=True, text=True).stdout.split() for n in hosts
        ]
        if len(names) == count and all(pids):
            return names
        time.sleep(0.2)
    raise AssertionError(f"the emulation's {count} namespaces with a process in each host did not appear")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hosts", "0"], "--hosts must be an integer in 1..250, got 0"),
        (["--link-gbit", "-1"], "--link-gbit must be in (0, 1000] Gbit/s, got -1.0"),
        (["--delay-ms", "-2"], "--delay-ms must be in [0, 1000] ms, got -2.0"),
        (["--hosts", "two"], "argument --hosts: invalid int value: 'two'"),
        ([], "no command to run"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, capsys):
    argv = [*args, *(["--", "true"] if args else [])]
    if args[:2] == ["--hosts", "0"]:  # one case end to end, as a user runs it
        proc = emulate(*argv)
        code, err = proc.returncode, proc.stderr
    else:
        try:
            code = emulate_main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_missing_root_is_named(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert network.missing_requirements() == "network namespaces and tc need root (run as root)"
    with pytest.raises(EmulationError, match="cannot emulate hosts: .*need root"):
        EmulatedNetwork(2).open()


# ----------------------------------------------------------------------------- the network

PROBE = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys
    def sh(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True).stdout
    out = {
        "rank": os.environ["RANK"], "host": socket.gethostname(),
        "addr": sh("ip", "-4", "-o", "addr", "show", "dev", "eth0").split()[3],
        "routes": sh("ip", "-4", "route", "show", "table", "all").splitlines(),
        "links": sorted(l.split(":")[1].strip().split("@")[0] for l in sh("ip", "-o", "link").splitlines()),
        "qdisc": sh("tc", "qdisc", "show", "dev", "eth0"),
        "resolves": {n: socket.gethostbyname(n) for n in os.environ["FASTRES_EMU_HOSTNAMES"].split(",")},
        "env": {k: os.environ.get(k) for k in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                                               "MASTER_ADDR", "MASTER_PORT", "GLOO_SOCKET_IFNAME", "SLURM_PROCID")},
    }
    open(os.path.join(sys.argv[1], "rank" + os.environ["RANK"] + ".json"), "w").write(json.dumps(out))
    """
)


@needs_emulation
@pytest.mark.timeout(120)
def test_hosts_are_namespaces_on_a_shaped_bridge_with_no_route_out(tmp_path):
    before = machine_state()
    (tmp_path / "probe.py").write_text(PROBE)
    env_noise = {**clean_environ(), "SLURM_PROCID": "7"}  # another launcher's variable must not reach the ranks
    proc = subprocess.run(
        [*EMULATE, "--hosts", "3", "--ranks-per-host", "2", "--link-gbit", "0.5", "--port", "29611", "--timeout", "60",
         "--", sys.executable, str(tmp_path / "probe.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=100, env=env_noise,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ranks = read_json_lines(tmp_path)
    assert sorted(ranks) == [f"rank{r}" for r in range(6)]
    names = {f"fastres-h{h}": f"198.18.0.{h + 1}" for h in range(3)}
    for r in range(6):
        got = ranks[f"rank{r}"]
        h = r // 2
        assert got["host"] == f"fastres-h{h}"
        assert got["addr"] == f"198.18.0.{h + 1}/24"
        assert got["resolves"] == names
        assert got["env"] == {"WORLD_SIZE": "6", "LOCAL_RANK": str(r % 2), "LOCAL_WORLD_SIZE": "2",
                              "GROUP_RANK": str(h), "MASTER_ADDR": "198.18.0.1", "MASTER_PORT": "29611",
                              "GLOO_SOCKET_IFNAME": "eth0", "SLURM_PROCID": None}  # fmt: skip
        assert got["links"] == ["eth0", "lo"]  # the host's own namespace: not this machine's links
        assert "tbf" in got["qdisc"] and "rate 500Mbit" in got["qdisc"], got["qdisc"]
        routes = [line.split()[1] if line.split()[0] in ("local", "broadcast") else line.split()[0]
                  for line in got["routes"]]  # fmt: skip
        assert "default" not in routes, got["routes"]
        assert all(d.startswith(("198.18.0.", "127.")) for d in routes), got["routes"]
    assert "3 emulated hosts fastres-h0..fastres-h2 (198.18.0.1-198.18.0.3)" in proc.stderr
    assert_nothing_left(before)


@needs_emulation
@pytest.mark.timeout(60)
def test_both_directions_of_each_link_are_shaped_and_removed():
    before = machine_state()
    with EmulatedNetwork(2, link_gbit=2.5) as net:
        for h in net.hosts:
            q = net.qdiscs(h)
            assert "tbf" in q["egress"] and "rate 2500Mbit" in q["egress"], q
            assert "tbf" in q["ingress"] and "rate 2500Mbit" in q["ingress"], q
        ours = [n for n in machine_state()["namespaces"] if n.startswith(net.tag + "-")]
        assert sorted(ours) == sorted([net.switch, *(h.namespace for h in net.hosts)])
    assert_nothing_left(before)


@needs_emulation
@pytest.mark.timeout(60)
def test_delay_needs_netem_or_says_so():
    before = machine_state()
    proc = emulate("--hosts", "2", "--delay-ms", "0.2", "--", "tc", "qdisc", "show", "dev", "eth0")
    if proc.returncode == 2:  # a kernel without sch_netem (CONFIG_NET_SCH_NETEM)
        assert "--delay-ms 0.2 needs tc's netem qdisc" in proc.stderr and "use --delay-ms 0" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert "netem" in proc.stdout and "delay 100us" in proc.stdout and "tbf" in proc.stdout, proc.stdout
    assert_nothing_left(before)


# ----------------------------------------------------------------------------- processes and clean-up


@needs_emulation
@pytest.mark.timeout(60)
def test_a_failing_rank_ends_the_job_with_its_status():
    before = machine_state()
    t0 = time.monotonic()
    proc = emulate("--hosts", "2", "--grace", "1", "--", "sh", "-c", 'if [ "$RANK" = 1 ]; then exit 3; fi; sleep 50')
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - t0 < 40
    assert "rank1 exited with 3" in proc.stderr
    assert_nothing_left(before)


@needs_emulation
@pytest.mark.timeout(60)
def test_the_job_is_stopped_at_the_timeout():
    before = machine_state()
    t0 = time.monotonic()
    proc = emulate("--hosts", "2", "--timeout", "2", "--", "sleep", "50")
    assert proc.returncode == 124, proc.stderr
    assert time.monotonic() - t0 < 40
    assert "still running after 2 s (--timeout)" in proc.stderr
    assert_nothing_left(before)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@needs_emulation
@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 130)])
def test_ctrl_c_and_sigterm_stop_the_job_and_remove_everything(sig, code):
    before = machine_state()
    # started as a shell starts a background job: SIGINT ignored, which the emulation must override
    proc = subprocess.Popen([*EMULATE, "--hosts", "2", "--", "sleep", "60"], stderr=subprocess.PIPE, text=True,
                            env=clean_environ(), preexec_fn=_ignore_sigint)  # fmt: skip
    try:
        names = wait_for_namespaces(proc.pid, 3, proc)
        ranks = [int(p) for n in names for p in subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                                                   text=True).stdout.split()]  # fmt: skip
        assert len(ranks) >= 2
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "interrupted" in err and "removed the emulated hosts" in err, err
    assert not [p for p in ranks if _alive(p)]
    assert_nothing_left(before)


@needs_emulation
@pytest.mark.timeout(90)
def test_a_killed_emulation_takes_its_ranks_along_and_cleanup_removes_its_namespaces():
    before = machine_state()
    proc = subprocess.Popen([*EMULATE, "--hosts", "2", "--", "sleep", "60"], stderr=subprocess.DEVNULL,
                            env=clean_environ())  # fmt: skip
    try:
        names = wait_for_namespaces(proc.pid, 3, proc)
        ranks = [int(p) for n in names for p in subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                                                   text=True).stdout.split()]  # fmt: skip
        proc.kill()  # SIGKILL: no clean-up of its own
        proc.wait()
        deadline = time.monotonic() + 10
        while [p for p in ranks if _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in ranks if _alive(p)], "ranks outlived their emulation (PR_SET_PDEATHSIG)"
        assert set(names) <= set(machine_state()["namespaces"])  # left behind, as SIGKILL must
        done = emulate("--cleanup")
        assert done.returncode == 0 and all(n in done.stderr for n in names), done.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        network.sweep_stale()
    assert_nothing_left(before)


# ----------------------------------------------------------------------------- Gloo and fastres across hosts

GLOO = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from fastres.distributed import destroy, discover, init_distributed
    torch.set_num_threads(1)
    g = init_distributed(discover(), backend="gloo", timeout=60)
    t = g.topology
    sums = {}
    for name, group in (("world", g.world), ("intra", g.intra), ("inter", g.inter)):
        x = torch.tensor([float(t.rank)])
        dist.all_reduce(x, group=group)
        sums[name] = x.item()
    def peers():  # remote IPv4 addresses of this process's established TCP connections
        out = set()
        for line in open("/proc/net/tcp").read().splitlines()[1:]:
            f = line.split()
            if f[3] == "01":
                ip = bytes.fromhex(f[2].split(":")[0])[::-1]
                out.add(".".join(str(b) for b in ip))
        return sorted(out)
    res = {"node": t.node_rank, "local": t.local_rank, "hosts": g.hostnames, "intra": g.intra_ranks,
           "inter": g.inter_ranks, "sums": sums, "hierarchical": g.hierarchical, "peers": peers()}
    destroy(g)
    open(os.path.join(sys.argv[1], f"rank{t.rank}.json"), "w").write(json.dumps(res))
    """
)


@needs_emulation
@pytest.mark.timeout(150)
@pytest.mark.parametrize("placement", ["block", "cyclic"])
def test_gloo_groups_across_emulated_hosts(tmp_path, placement):
    """Block: host h runs ranks 2h, 2h+1; cyclic: host h runs h, h+2. Each rank's group and its peers."""
    before = machine_state()
    (tmp_path / "gloo.py").write_text(GLOO)
    proc = emulate("--hosts", "2", "--ranks-per-host", "2", "--placement", placement, "--timeout", "100", "--",
                   sys.executable, str(tmp_path / "gloo.py"), str(tmp_path), timeout=140)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = read_json_lines(tmp_path)
    assert sorted(ranks) == ["rank0", "rank1", "rank2", "rank3"]
    where = {r: divmod(r, 2) if placement == "block" else (r % 2, r // 2) for r in range(4)}  # (host, local)
    host_of = [f"fastres-h{where[r][0]}" for r in range(4)]
    for r in range(4):
        got = ranks[f"rank{r}"]
        node, local = where[r]
        intra = sorted(q for q in range(4) if where[q][0] == node)
        inter = sorted(q for q in range(4) if where[q][1] == local)
        assert (got["node"], got["local"]) == (node, local)
        assert got["hosts"] == host_of
        assert got["intra"] == intra and got["inter"] == inter
        assert got["sums"] == {"world": 6.0, "intra": float(sum(intra)), "inter": float(sum(inter))}
        assert got["hierarchical"] is True
        other = f"198.18.0.{2 - node}"
        assert other in got["peers"], got["peers"]  # Gloo's pairs to the other host cross the emulated link
        assert all(p.startswith("198.18.0.") for p in got["peers"]), got["peers"]
    assert_nothing_left(before)


@needs_emulation
@pytest.mark.timeout(60)
def test_once_per_host_and_once_per_job_with_the_host_s_values(tmp_path):
    before = machine_state()
    line = 'echo "{host} {hosts} {name} {addr} {master} $(hostname)" > ' + str(tmp_path) + "/out{host}.txt"
    proc = emulate("--hosts", "3", "--each", "host", "--", "sh", "-c", line)
    assert proc.returncode == 0, proc.stderr
    for h in range(3):
        got = (tmp_path / f"out{h}.txt").read_text().split()
        assert got == [str(h), "3", f"fastres-h{h}", f"198.18.0.{h + 1}", "198.18.0.1", f"fastres-h{h}"]
    # the ssh stand-in runs a command on another host, as mpirun's daemons are started
    proc = emulate(
        "--hosts", "2", "--each", "job", "--", "sh", "-c", '"$FASTRES_EMU_RSH" fastres-h1 hostname; hostname'
    )
    assert proc.returncode == 0 and proc.stdout.split() == ["fastres-h1", "fastres-h0"], proc.stdout + proc.stderr
    assert_nothing_left(before)


@needs_emulation
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_fastres_train_runs_unchanged_across_emulated_hosts(tiny_data, tmp_path):
    """python -m fastres.train on 2 hosts x 2 ranks over 1 Gbit/s links: hierarchical bf16, one run folder."""
    before = machine_state()
    data = tiny_data
    proc = emulate(
        "--hosts", "2", "--ranks-per-host", "2", "--link-gbit", "1", "--timeout", "300", "--",
        sys.executable, "-m", "fastres.train", "--data", str(data), "--arch", "resnet18", "--image-size", "32",
        "--batch-size", "4", "--epochs", "1", "--workers", "0", "--threads", "1", "--no-progress",
        "--log-every", "1", "--warmup-epochs", "0", "--allreduce", "hierarchical", "--wire-dtype", "bf16",
        "--out", str(tmp_path),
        "--name", "hosts", "--dist-timeout", "120",
        timeout=360,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "hierarchical all-reduce over 2 nodes x 2 ranks" in proc.stdout, proc.stdout[-3000:]
    assert proc.stdout.count("fastres: done: 1 epochs") == 1
    doc = yaml.safe_load((tmp_path / "hosts" / "config.yaml").read_text())
    assert doc["ranks"] == 4 and doc["global_batch"] == 16
    records = [json.loads(line) for line in (tmp_path / "hosts" / "metrics.jsonl").read_text().splitlines()]
    assert [r["images"] for r in records if r["kind"] == "val"] == [20]
    assert_nothing_left(before)
