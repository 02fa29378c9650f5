"""A one-machine Slurm cluster for tests: munged, slurmctld and slurmd in the foreground, stopped after.

    with SlurmCluster(tmp_path) as cluster:     # or SlurmCluster.why_not() -> a reason to skip
        subprocess.run(["srun", "-n", "2", ...], env=cluster.env(os.environ))

Writes a minimal slurm.conf (the one node: this host, CPUs = 2, 127.0.0.1; proctrack/linuxproc,
task/none, jobacct_gather/none, select/cons_tres), its own munge key and socket, state and
spool folders and logs under one folder, and ports of its own, so it neither needs nor
touches a system Slurm or munge. Needs root (munged and slurmd run as root here).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CRED_EXPIRE = 30  # seconds: long enough to launch a job step on a loaded 2-core box
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "srun", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, folder: Path, cpus: int = 2) -> None:
        self.dir = Path(folder)
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.dir / "slurm.conf"
        self.procs: list[tuple[str, subprocess.Popen]] = []

    @staticmethod
    def why_not() -> str | None:
        if os.geteuid() != 0:
            return "a test Slurm cluster runs its daemons as root"
        missing = [d for d in DAEMONS if shutil.which(d) is None]
        if missing:
            return f"{', '.join(missing)} not installed (Debian: slurm-wlm, munge)"
        return None

    def env(self, base: dict) -> dict:
        return {**base, "SLURM_CONF": str(self.conf)}

    def _write(self) -> None:
        d = self.dir
        for sub in ("state", "spool"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        d.chmod(0o711)  # munged wants its socket's folder searchable by everyone
        ctld, slurmd = _free_port(), _free_port()
        self.conf.write_text(
            f"ClusterName=fastrestest\n"
            f"SlurmctldHost={self.node}(127.0.0.1)\n"
            f"SlurmctldPort={ctld}\nSlurmdPort={slurmd}\n"
            "SlurmUser=root\nSlurmdUser=root\n"
            # cred_expire: a requeued job waits this long before it starts again (Slurm's default: 120 s)
            f"AuthType=auth/munge\nAuthInfo=socket={d / 'munge.sock'},cred_expire={CRED_EXPIRE}\nCredType=cred/munge\n"
            f"StateSaveLocation={d / 'state'}\nSlurmdSpoolDir={d / 'spool'}\n"
            f"SlurmctldPidFile={d / 'slurmctld.pid'}\nSlurmdPidFile={d / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={d / 'slurmctld.log'}\nSlurmdLogFile={d / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n"
            "SelectType=select/cons_tres\nMpiDefault=none\nReturnToService=2\n"
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN\n"
            "PartitionName=test Nodes=ALL Default=YES MaxTime=15 State=UP\n"
        )

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.dir / f"{name}.out", "w")  # noqa: SIM115 - the daemon's, closed with it
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=self.env(dict(os.environ)))  # fmt: skip
        log.close()
        self.procs.append((name, p))

    def logs(self) -> str:
        out = []
        for f in sorted(self.dir.glob("*.out")) + sorted(self.dir.glob("*.log")):
            out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-1500:])
        return "\n".join(out)

    def start(self, seconds: float = 60) -> str | None:
        """Start the daemons; None when the node is up, else why it is not (the daemons are stopped then)."""
        self._write()
        d = self.dir
        key = subprocess.run(["mungekey", "-c", "-k", str(d / "munge.key")], capture_output=True, text=True)
        if key.returncode != 0:
            return f"mungekey failed: {key.stderr.strip()}"
        self._start("munged", ["munged", "-F", "-f", f"--key-file={d / 'munge.key'}", f"--socket={d / 'munge.sock'}",
                               f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                               f"--seed-file={d / 'munged.seed'}"])  # fmt: skip
        self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs if p.poll() is not None]
            if dead:
                self.stop()
                return f"{', '.join(dead)} exited at start:\n{self.logs()}"
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env({}))
            if state.stdout.strip() in ("idle", "mix", "alloc"):
                return None
            time.sleep(0.5)
        self.stop()
        return f"the node did not come up in {seconds:g} s:\n{self.logs()}"

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
