"""Emulated hosts: K network namespaces on one bridge, their links shaped with tc.

    with EmulatedNetwork(hosts=4, link_gbit=1.0) as net:    # needs root, `ip` and `tc`
        net.hosts[2].address                                # "198.18.0.3"
        net.wrap(net.hosts[2], ["python", "-c", "..."])     # a command line that runs inside host 2
        net.kill_host(net.hosts[1]); net.set_link(net.hosts[1], up=False)   # faults: a crash, a cut link

Layout of one emulation (`PREFIX-<pid>` names every namespace it makes, so a stale one is found):

    PREFIX-<pid>-sw   the switch: bridge br0 with ports port0..portK-1, no address, no route
    PREFIX-<pid>-hI   host I: lo, and eth0 (198.18.0.I+1/24) whose peer is portI on the bridge

Nothing is created in the namespace this runs in: every veth is made directly inside its two
namespaces, so no interface, address, route or qdisc of this machine changes. The addresses
come from 198.18.0.0/15, the range RFC 2544 reserves for benchmarking network devices, and a
host's only route is the /24 of the bridge: nothing can leave it. Each link is shaped in both
directions (tc `tbf` on eth0 for host -> switch, on portI for switch -> host), the way a NIC
meets a switch port; `delay_ms` adds one-way latency between two hosts with `netem` (half on
each side), where the kernel has sch_netem. Traffic between ranks of one host goes over that
namespace's loopback, unshaped.

`ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts, so every host resolves
every other host's name (`fastres-h0`, ...); commands get their host's name in a UTS
namespace of their own (`wrap`). `close()` (also on exceptions, through `with`) kills every
process still inside a namespace, deletes the namespaces (their veths and qdiscs go with
them) and the /etc/netns files. An emulation whose owner died without cleaning up (SIGKILL)
is removed by the next one (`sweep_stale`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fastres import FastresError

__all__ = [
    "NETWORK",
    "PREFIX",
    "EmulatedNetwork",
    "EmulationError",
    "Host",
    "missing_requirements",
    "our_namespaces",
    "sweep_stale",
]

PREFIX = "fastres-emu"
# RFC 2544 (section C.2.2): 198.18.0.0/15 is reserved for benchmarking network interconnect
# devices; no production network routes it. One /24 of it per emulation (each in its own namespaces).
NETWORK = ipaddress.ip_network("198.18.0.0/24")
RESERVED = ipaddress.ip_network("198.18.0.0/15")
MAX_HOSTS = 250
NETNS_ETC = Path("/etc/netns")
_NAME = re.compile(rf"^{re.escape(PREFIX)}-(\d+)-(sw|h\d+)$")


class EmulationError(FastresError):
    """The emulated network cannot be built here, or a flag asks for something it cannot do."""


@dataclass(frozen=True)
class Host:
    index: int
    name: str  # host name inside the emulation, resolvable from every host
    namespace: str
    address: str


def missing_requirements() -> str | None:
    """Why emulated hosts cannot be built on this machine, or None when they can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and tc need root (run as root)"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian package {package})"
    return None


def _run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise EmulationError(f"`{' '.join(cmd)}` failed: {why[0] if why else f'exit {proc.returncode}'}")
    return proc


def our_namespaces() -> list[str]:
    """Every namespace an emulation (this or another, live or stale) has made."""
    out = _run("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if _NAME.match(n)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(namespace: str, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, every process inside `namespace` (ranks, daemons, their children)."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        out = _run("ip", "netns", "pids", namespace, check=False).stdout
        pids = [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                time.sleep(0.2)
                return
            sig = signal.SIGKILL
        time.sleep(0.1)


def _remove_namespace(namespace: str) -> None:
    _kill_inside(namespace)
    _run("ip", "netns", "del", namespace, check=False)
    shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)


def sweep_stale() -> list[str]:
    """Remove the namespaces of emulations whose owner process is gone; their names."""
    removed = []
    for ns in our_namespaces():
        owner = int(_NAME.match(ns).group(1))
        if not _pid_alive(owner):
            _remove_namespace(ns)
            removed.append(ns)
    if NETNS_ETC.is_dir():  # /etc/netns files of a namespace that is already gone
        for d in NETNS_ETC.iterdir():
            m = _NAME.match(d.name)
            if m and not _pid_alive(int(m.group(1))):
                shutil.rmtree(d, ignore_errors=True)
    return removed


def _tbf(rate_mbit: float) -> list[str]:
    # burst: about 1 ms of traffic at the rate (16 KB at least: above the MTU and one GSO
    # segment's share); queue bound 50 ms, so TCP sees a switch-sized buffer, not drops.
    burst = max(16384, int(rate_mbit * 1e6 / 8 / 1000))
    return ["tbf", "rate", f"{rate_mbit:g}mbit", "burst", str(burst), "latency", "50ms"]


class EmulatedNetwork:
    """K hosts (network namespaces) on one bridge, each link shaped to `link_gbit` both ways.

    link_gbit None: links unshaped (veth speed). delay_ms: one-way latency added between any
    two hosts (needs sch_netem). Use as a context manager; close() is idempotent.
    """

    def __init__(self, hosts: int, link_gbit: float | None = 1.0, delay_ms: float = 0.0) -> None:
        if isinstance(hosts, bool) or not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise EmulationError(f"--hosts must be an integer in 1..{MAX_HOSTS}, got {hosts!r}")
        if link_gbit is not None and not (link_gbit > 0 and link_gbit <= 1000):
            raise EmulationError(f"--link-gbit must be in (0, 1000] Gbit/s, got {link_gbit!r}")
        if not (delay_ms >= 0 and delay_ms <= 1000):
            raise EmulationError(f"--delay-ms must be in [0, 1000] ms, got {delay_ms!r}")
        self.link_gbit = link_gbit
        self.delay_ms = float(delay_ms)
        self.tag = f"{PREFIX}-{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        base = NETWORK.network_address
        self.hosts = [
            Host(i, f"fastres-h{i}", f"{self.tag}-h{i}", str(base + i + 1)) for i in range(hosts)
        ]  # fmt: skip
        assert all(ipaddress.ip_address(h.address) in RESERVED for h in self.hosts)
        self._made: list[str] = []
        self.closed = False

    # ------------------------------------------------------------------ build
    def __enter__(self) -> EmulatedNetwork:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        why = missing_requirements()
        if why:
            raise EmulationError(f"cannot emulate hosts: {why}")
        sweep_stale()
        if any(ns.startswith(self.tag + "-") for ns in our_namespaces()):
            raise EmulationError(f"namespaces {self.tag}-* already exist: one emulation per process at a time")
        self._netns_add(self.switch)
        sw = ["ip", "-n", self.switch]
        _run(*sw, "link", "add", "br0", "type", "bridge")
        _run(*sw, "link", "set", "br0", "addrgenmode", "none")
        _run(*sw, "link", "set", "br0", "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in self.hosts)
        for h in self.hosts:
            self._netns_add(h.namespace)
            (NETNS_ETC / h.namespace).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / h.namespace / "hosts").write_text(hosts_file)
            port = f"port{h.index}"
            _run("ip", "link", "add", "eth0", "netns", h.namespace, "type", "veth",
                 "peer", "name", port, "netns", self.switch)  # fmt: skip
            hn = ["ip", "-n", h.namespace]
            _run(*hn, "link", "set", "lo", "up")
            _run(*hn, "link", "set", "eth0", "addrgenmode", "none")  # no IPv6 link-local chatter
            _run(*hn, "addr", "add", f"{h.address}/{NETWORK.prefixlen}", "dev", "eth0")
            _run(*hn, "link", "set", "eth0", "up")
            _run(*sw, "link", "set", port, "addrgenmode", "none")
            _run(*sw, "link", "set", port, "master", "br0")
            _run(*sw, "link", "set", port, "up")
            self._shape(h.namespace, "eth0")
            self._shape(self.switch, port)
        self._check_routes()

    def _netns_add(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)

    def _shape(self, namespace: str, dev: str) -> None:
        tc = ["tc", "-n", namespace, "qdisc", "add", "dev", dev]
        if self.delay_ms > 0:
            proc = _run(*tc, "root", "handle", "1:", "netem", "delay", f"{self.delay_ms / 2 * 1000:.0f}us",
                        "limit", "100000", check=False)  # fmt: skip
            if proc.returncode != 0:
                raise EmulationError(
                    f"--delay-ms {self.delay_ms:g} needs tc's netem qdisc, which this kernel lacks "
                    f"(CONFIG_NET_SCH_NETEM; tc said: {proc.stderr.strip()}); use --delay-ms 0"
                )
            if self.link_gbit is not None:
                _run(*tc, "parent", "1:1", "handle", "10:", *_tbf(self.link_gbit * 1000))
        elif self.link_gbit is not None:
            _run(*tc, "root", "handle", "1:", *_tbf(self.link_gbit * 1000))

    def _check_routes(self) -> None:
        """Each host's only routes are its loopback and the bridge's /24: no way out."""
        for h in self.hosts:
            routes = _run("ip", "-n", h.namespace, "-4", "route", "show", "table", "all").stdout
            for line in routes.splitlines():
                dest = line.split()[0] if line.split() else ""
                if dest in ("local", "broadcast"):
                    dest = line.split()[1]
                if dest == "default" or (
                    dest and ipaddress.ip_network(dest, strict=False).subnet_of(RESERVED) is False
                    and not ipaddress.ip_network(dest, strict=False).is_loopback
                ):  # fmt: skip
                    raise EmulationError(f"host {h.name} has a route out of {RESERVED}: {line.strip()}")

    # ------------------------------------------------------------------ use
    def describe(self) -> str:
        link = "unshaped links" if self.link_gbit is None else f"{self.link_gbit:g} Gbit/s links each way"
        delay = f", {self.delay_ms:g} ms one-way delay" if self.delay_ms > 0 else ""
        first, last = self.hosts[0], self.hosts[-1]
        return (
            f"{len(self.hosts)} emulated hosts {first.name}..{last.name} ({first.address}-{last.address}) "
            f"on one bridge, {link}{delay}; namespaces {self.tag}-*"
        )

    def host(self, name_or_index: str | int) -> Host:
        for h in self.hosts:
            if name_or_index in (h.index, h.name, h.address):
                return h
        raise EmulationError(f"no emulated host {name_or_index!r}")

    def wrap(self, host: Host, cmd: list[str]) -> list[str]:
        """`cmd` run inside `host`: its network namespace, and its host name in a UTS namespace."""
        return ["ip", "netns", "exec", host.namespace, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', host.name, *cmd]  # fmt: skip

    def qdiscs(self, host: Host) -> dict[str, str]:
        """tc's view of the qdiscs shaping `host`'s link, both directions (for checks and records)."""
        return {
            "egress": _run("tc", "-n", host.namespace, "qdisc", "show", "dev", "eth0").stdout.strip(),
            "ingress": _run("tc", "-n", self.switch, "qdisc", "show", "dev", f"port{host.index}").stdout.strip(),
        }

    # ------------------------------------------------------------------ faults
    def kill_host(self, host: Host) -> list[int]:
        """SIGKILL every process inside `host` at once (`kill -9` of everything a crashed host ran): none of them
        runs a handler; their sockets are closed by the kernel, so their peers see the connections reset. The
        pids killed."""
        out = _run("ip", "netns", "pids", host.namespace, check=False).stdout
        pids = [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def set_link(self, host: Host, up: bool) -> None:
        """Take `host`'s link down (`ip link set eth0 down`: a cut cable or a dead switch port; its processes run
        on, and no packet reaches or leaves it, so its peers hear nothing, not even a reset) or up again."""
        _run("ip", "-n", host.namespace, "link", "set", "eth0", "up" if up else "down")

    # ------------------------------------------------------------------ tear down
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for ns in reversed(self._made):
            _remove_namespace(ns)
        left = [ns for ns in our_namespaces() if ns.startswith(self.tag + "-")]
        if left:
            raise EmulationError(f"could not remove namespaces {', '.join(left)}")
