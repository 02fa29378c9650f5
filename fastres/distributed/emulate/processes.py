"""Processes on emulated hosts: start a command inside each host, bounded in time, and end them.

    code = run_on_hosts(net, ["python", "-m", "fastres.train", ...], ranks_per_host=2, timeout=600)

`each="rank"` starts ranks_per_host processes per host with torchrun's variables (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR = the first host,
MASTER_PORT), the way srun or mpirun start plain processes, so `fastres.train` runs
unchanged; ranks are placed in blocks (host h: h*M ..) or cyclically (host h: h, h+K, ..).
`each="host"` starts the command once per host (for torchrun --nnodes, or a daemon per host)
and `each="job"` once on the first host (for mpirun, which starts the others itself through
the rsh agent in $FASTRES_EMU_RSH). In those two, `{host}`, `{hosts}`, `{name}`,
`{addr}` and `{master}` in the command are replaced by the host's index, the number of hosts,
its name and address, and the first host's address. Every process gets GLOO_SOCKET_IFNAME=eth0
(its host's link) and no other launcher's variables.

Each process runs in a session of its own and dies with this one (PR_SET_PDEATHSIG); when one
fails, the others get `grace` seconds to end by themselves, then are stopped (SIGTERM, then
SIGKILL), and so is everything still running at `timeout` (exit 124).
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from fastres.distributed.emulate.network import EmulatedNetwork, EmulationError

__all__ = [
    "EACH",
    "PLACEMENTS",
    "TIMED_OUT",
    "launcher_free_environ",
    "rank_variables",
    "run_on_hosts",
    "write_rsh_agent",
]

EACH = ("rank", "host", "job")
PLACEMENTS = ("block", "cyclic")
TIMED_OUT = 124
_LAUNCHER_NAMES = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "GLOO_SOCKET_IFNAME", "TORCHELASTIC_RUN_ID"}  # fmt: skip
_LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "FASTRES_EMU_")
_PR_SET_PDEATHSIG = 1


def launcher_free_environ(env: dict | None = None) -> dict:
    """`env` (default os.environ) without any launcher's variables: the emulation sets its own."""
    env = dict(os.environ if env is None else env)
    return {k: v for k, v in env.items() if k not in _LAUNCHER_NAMES and not k.startswith(_LAUNCHER_PREFIXES)}


def rank_variables(
    net: EmulatedNetwork, host: int, local: int, ranks_per_host: int, port: int, placement: str = "block"
) -> dict:
    """torchrun's variables for local rank `local` of emulated host `host`.

    placement "block": host h holds ranks h*M .. h*M+M-1 (torchrun, srun's default, mpirun --map-by slot);
    "cyclic": host h holds ranks h, h+K, ... (srun --distribution=cyclic, mpirun --map-by node)."""
    rank = host * ranks_per_host + local if placement == "block" else local * len(net.hosts) + host
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(len(net.hosts) * ranks_per_host),
        "LOCAL_RANK": str(local),
        "LOCAL_WORLD_SIZE": str(ranks_per_host),
        "GROUP_RANK": str(host),
        "MASTER_ADDR": net.hosts[0].address,
        "MASTER_PORT": str(port),
    }


def write_rsh_agent(net: EmulatedNetwork, folder: Path) -> Path:
    """An rsh/ssh stand-in: `AGENT [-opts] HOST CMD...` runs CMD inside emulated HOST (name or address).

    What mpirun's `--mca plm_rsh_agent` calls to start its daemons on the other hosts."""
    cases = "".join(
        f"  {h.name}|{h.address}) ns={h.namespace}; name={h.name} ;;\n" for h in net.hosts
    )  # fmt: skip
    script = (
        "#!/bin/sh\n"
        "# fastres emulated hosts: run a command on one of them (an ssh stand-in for mpirun)\n"
        'while [ "${1#-}" != "$1" ]; do shift; done\n'
        'host="$1"; shift\n'
        'case "$host" in\n'
        f"{cases}"
        '  *) echo "fastres emulated hosts: no host $host" >&2; exit 255 ;;\n'
        "esac\n"
        'exec ip netns exec "$ns" unshare --uts -- sh -c \'hostname "$0" && exec sh -c "$1"\' "$name" "$*"\n'
    )
    path = folder / "fastres-emu-rsh"
    path.write_text(script)
    path.chmod(0o755)
    return path


def _substitute(cmd: list[str], net: EmulatedNetwork, host: int) -> list[str]:
    h = net.hosts[host]
    values = {"host": str(host), "hosts": str(len(net.hosts)), "name": h.name, "addr": h.address,
              "master": net.hosts[0].address}  # fmt: skip
    out = []
    for arg in cmd:
        for k, v in values.items():
            arg = arg.replace("{" + k + "}", v)
        out.append(arg)
    return out


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _stop(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM to each process's session, then SIGKILL to whatever is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        if all(p.poll() is not None for p in procs):
            return
    for p in procs:
        p.wait()


def run_on_hosts(
    net: EmulatedNetwork,
    cmd: list[str],
    *,
    each: str = "rank",
    ranks_per_host: int = 1,
    placement: str = "block",
    port: int = 29500,
    timeout: float = 600.0,
    grace: float = 10.0,
    log_dir: str | Path | None = None,
    env: dict | None = None,
    say=print,
) -> int:
    """Run `cmd` on the emulated hosts (see the module's docstring); the job's exit status.

    0 when every process exits 0; else the first failure's status; TIMED_OUT (124) when the job
    is still running at `timeout` seconds. Every process is gone when this returns or raises."""
    if each not in EACH:
        raise EmulationError(f"--each must be one of {', '.join(EACH)}, got {each!r}")
    if isinstance(ranks_per_host, bool) or not isinstance(ranks_per_host, int) or not 1 <= ranks_per_host <= 256:
        raise EmulationError(f"--ranks-per-host must be an integer in 1..256, got {ranks_per_host!r}")
    if placement not in PLACEMENTS:
        raise EmulationError(f"--placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if not 1 <= port <= 65535:
        raise EmulationError(f"--port must be in 1..65535, got {port!r}")
    if not timeout > 0:
        raise EmulationError(f"--timeout must be > 0 seconds, got {timeout!r}")
    if not cmd:
        raise EmulationError("no command to run (put it after --)")
    base = launcher_free_environ(env)
    logs = Path(log_dir) if log_dir is not None else None
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fastres-emu-") as tmp:
        rsh = write_rsh_agent(net, Path(tmp))
        common = {
            **base,
            "MASTER_ADDR": net.hosts[0].address,
            "MASTER_PORT": str(port),
            "GLOO_SOCKET_IFNAME": "eth0",
            "FASTRES_EMU_HOSTS": str(len(net.hosts)),
            "FASTRES_EMU_HOSTNAMES": ",".join(h.name for h in net.hosts),
            "FASTRES_EMU_RSH": str(rsh),
        }
        plan = []  # (label, host index, env, argv)
        if each == "rank":
            for h in range(len(net.hosts)):
                for l in range(ranks_per_host):
                    v = rank_variables(net, h, l, ranks_per_host, port, placement)
                    plan.append((f"rank{v['RANK']}", h, {**common, **v, "FASTRES_EMU_HOST": str(h)}, list(cmd)))
        else:
            for h in range(len(net.hosts) if each == "host" else 1):
                plan.append((f"host{h}", h, {**common, "FASTRES_EMU_HOST": str(h)}, _substitute(cmd, net, h)))
        procs: list[subprocess.Popen] = []
        labels: list[str] = []
        files = []
        start = time.monotonic()
        try:
            for label, h, e, argv in plan:
                out = None
                if logs is not None:
                    out = open(logs / f"{label}.log", "w")  # noqa: SIM115 - closed below
                    files.append(out)
                procs.append(
                    subprocess.Popen(
                        net.wrap(net.hosts[h], argv),
                        env=e,
                        stdout=out,
                        stderr=subprocess.STDOUT if out else None,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )  # fmt: skip
                )
                labels.append(label)
            say(f"fastres emulate: started {len(procs)} processes ({each} mode): {shlex.join(cmd)}")
            first_failure: tuple[str, int] | None = None
            failed_at = None
            while True:
                codes = [p.poll() for p in procs]
                if all(c is not None for c in codes):
                    break
                now = time.monotonic()
                if first_failure is None:
                    bad = [(labels[i], c) for i, c in enumerate(codes) if c not in (None, 0)]
                    if bad:
                        first_failure, failed_at = bad[0], now
                        say(f"fastres emulate: {bad[0][0]} exited with {bad[0][1]}; the others get {grace:g} s")
                if failed_at is not None and now - failed_at > grace:
                    _stop(procs)
                    break
                if now - start > timeout:
                    say(f"fastres emulate: still running after {timeout:g} s (--timeout): stopping every process")
                    _stop(procs)
                    return TIMED_OUT
                time.sleep(0.05)
            if first_failure is None:
                bad = [(labels[i], p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
                first_failure = bad[0] if bad else None
            if first_failure is not None:
                code = first_failure[1]
                return code if code > 0 else 128 - code  # killed by a signal: 128 + its number, as a shell says
            return 0
        finally:
            _stop(procs)
            for f in files:
                f.close()
