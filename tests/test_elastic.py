"""Elastic runs on emulated hosts: one torchrun elastic agent per host (`--nnodes 1:2`, c10d rendezvous on host 0),
each running `python -m fastres.train ... --resume auto`, and host 1 crashing, cut off, or coming back.

Host 1's processes killed with SIGKILL (a crash: the kernel resets their connections) or its link taken down (a
dead host or cable: nothing is heard from it): every process of host 0 leaves with one line (status 75), its agent
restarts it on the host that remains, and fastres resumes from the newest checkpoint on 1 process with the
global batch kept (4 x 2 passes for 2 x 4), saying what the attempt before lost. The steps done twice, before
the failure on 2 processes and after it on 1, give the same losses: the PIL loader's order is a function of the
global position, and the per-process batch (BN's statistics) is kept. Host 1's agent started again: the next
rendezvous takes it back, and the run ends on 2 hosts.

ResNet-18 at 32 px on 80 images, global batch 8 (10 steps an epoch), a checkpoint every 3 steps, every step
logged. TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: with torch's shared TCPStore, an agent that joins a running job
waits for a master address the others' agents never write again (torch 2.13) and the job fails at the next
rendezvous (README, "Elastic runs").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastres.data.builtin import ensure_builtin_dataset
from fastres.distributed.emulate.network import EmulatedNetwork
from fastres.distributed.emulate.processes import _die_with_parent, launcher_free_environ

from emulated import assert_nothing_left, machine_state, needs_emulation

pytestmark = [needs_emulation, pytest.mark.timeout(150)]
ETCD = shutil.which("etcd")
try:
    import etcd  # noqa: F401 - python-etcd, which torch's etcd-v2 rendezvous imports
except ImportError:
    ETCD = None

CHECKPOINT_EVERY = 3
COLLECTIVE_TIMEOUT = 15  # seconds: the cut link's bound
RDZV = "join_timeout=60,last_call_timeout=1,keep_alive_interval=1,keep_alive_max_attempt=3"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return ensure_builtin_dataset(tmp_path_factory.mktemp("data"), train_per_class=8, val_per_class=2, workers=1)


class ElasticJob:
    """A torchrun elastic agent per emulated host, all running one fastres.train command; the run folder's records."""

    def __init__(self, net: EmulatedNetwork, data: Path, out: Path, epochs: int, rdzv: str = "c10d",
                 launcher: str = "torch.distributed.run"):  # fmt: skip
        self.net, self.out, self.run = net, out, out / "run"
        self.agents: dict[int, subprocess.Popen] = {}
        self.rdzv, self.launcher, self.watched = rdzv, launcher, 0  # watched: the host whose agent must live
        self.train = ["-m", "fastres.train", "--data", str(data), "--arch", "resnet18", "--image-size", "32",
                      "--global-batch", "8", "--epochs", str(epochs), "--workers", "0", "--threads", "1",
                      "--no-progress", "--log-every", "1", "--warmup-epochs", "0", "--backend", "pytorch",
                      "--data-check", "none", "--checkpoint-every", str(CHECKPOINT_EVERY), "--keep-checkpoints", "20",
                      "--collective-timeout", str(COLLECTIVE_TIMEOUT), "--out", str(out), "--name", "run",
                      "--resume", "auto"]  # fmt: skip
        self.env = {**launcher_free_environ(), "GLOO_SOCKET_IFNAME": "eth0", "OMP_NUM_THREADS": "1",
                    "PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # fmt: skip
        if launcher == "fastres.distributed.elastic":
            del self.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"]  # it sets it itself

    def start(self, host: int) -> None:
        # c10d: the rendezvous on host 0's agent; etcd-v2: on the etcd server of the last host, which trains nothing
        endpoint = f"{self.net.hosts[0].address}:29400" if self.rdzv == "c10d" else f"{self.net.hosts[-1].address}:2379"
        torchrun = [sys.executable, "-m", self.launcher, "--nnodes", "1:2", "--nproc-per-node", "1", "--max-restarts",
                    "3", "--rdzv-backend", self.rdzv, "--rdzv-id", "job", "--rdzv-conf", RDZV, "--rdzv-endpoint",
                    endpoint, "--monitor-interval", "0.5"]  # fmt: skip
        log = open(self.out / f"host{host}.log", "a")  # noqa: SIM115 - the agent holds it; closed with the process
        self.agents[host] = subprocess.Popen(
            self.net.wrap(self.net.hosts[host], [*torchrun, *self.train]), env=self.env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        log.close()

    def log(self, host: int) -> str:
        return (self.out / f"host{host}.log").read_text(errors="replace")

    def records(self, kind: str | None = None) -> list[dict]:
        path = self.run / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written
        return [r for r in out if kind is None or r["kind"] == kind]

    def wait_for(self, condition, seconds: float, what: str) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            records = self.records()
            if condition(records):
                return records
            if self.agents[self.watched].poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{what}: not within {seconds:g} s; host {self.watched}'s agent: "
                             f"{self.agents[self.watched].poll()}\n{self.log(self.watched)[-4000:]}")  # fmt: skip

    def finish(self, seconds: float) -> int:
        host = self.watched
        try:
            return self.agents[host].wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            log = self.log(host)[-4000:]
            raise AssertionError(f"host {host}'s agent still running after {seconds:g} s\n{log}") from None

    def close(self) -> None:
        for proc in self.agents.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def steps(records: list[dict], kind: str = "train") -> list[int]:
    return [r["step"] for r in records if r["kind"] == kind]


def losses_by_attempt(records: list[dict]) -> dict[int, dict[int, float]]:
    """attempt (1, 2, ...) -> step -> the loss its train record logged; a resume record starts the next attempt."""
    out: dict[int, dict[int, float]] = {1: {}}
    for r in records:
        if r["kind"] == "resume":
            out[len(out) + 1] = {}
        elif r["kind"] == "train":
            out[len(out)][r["step"]] = r["loss"]
    return out


def losses_done_twice(records: list[dict]) -> list[tuple[int, float, float]]:
    """(step, loss before the failure, loss after it) for each step the resumed attempt did again."""
    by_attempt = losses_by_attempt(records)
    first, second = by_attempt[1], by_attempt.get(2, {})
    return [(step, first[step], loss) for step, loss in second.items() if step in first]


def run_through(job: ElasticJob, fault: str, then=None, victim: int = 1) -> tuple[list[dict], float]:
    """Both hosts' agents started; at step 4 or later host `victim` killed ("kill") or cut off ("cut"), then
    `then()`; the job must end well on the other host. Its records, and when the fault came."""
    job.watched = 1 - victim
    try:
        job.start(0)
        job.start(1)
        saved = job.run / "checkpoints" / f"step-{CHECKPOINT_EVERY:09d}.pt"  # written in the background: on disk
        job.wait_for(lambda rs: any(s >= 4 for s in steps(rs)) and saved.is_file(), 60, "step 4 of the 2-host job")
        failed_at = time.time()
        host = job.net.hosts[victim]
        job.net.kill_host(host) if fault == "kill" else job.net.set_link(host, up=False)
        if then is not None:
            then()
        assert job.finish(80) == 0, job.log(job.watched)[-4000:]
    finally:
        job.close()
    return job.records(), failed_at


def check_the_restart(job: ElasticJob, records: list[dict], failed_at: float, kill: bool = True) -> dict:
    """What every case shares: host 0 said what failed (rank 0's peer_lost record) and resumed from the newest
    checkpoint on 1 process with the global batch kept, losing at most a checkpoint interval; the steps it did
    again give the losses they gave before. Returns the numbers the test reports."""
    (lost,) = [r for r in records if r["kind"] == "peer_lost"]
    resume = [r for r in records if r["kind"] == "resume"][0]
    said = "198.18.0.2 is fastres-h1 (rank 1)" if kill else "no answer from fastres-h1 (rank 1)"
    assert lost["peers"] == said, lost
    assert (resume["previous_world_size"], resume["world_size"], resume["restart"]) == (2, 1, 1), resume
    assert resume["changed"] == {"accumulate": [1, 2]}  # 1 x 4 images x 2 passes keeps the global batch of 8
    assert resume["checkpoint_step"] == max(s for s in range(0, lost["step"] + 1, CHECKPOINT_EVERY))
    assert resume["reached_step"] == lost["step"] and resume["steps_lost"] == lost["step"] - resume["checkpoint_step"]
    assert 0 <= resume["steps_lost"] < CHECKPOINT_EVERY
    again = losses_done_twice(records)
    want = list(range(resume["checkpoint_step"] + 1, lost["step"] + 1))
    if lost["step"] not in losses_by_attempt(records)[1]:
        # the peer was lost in the collectives of that step's log line (bad-sample counts): the step was taken,
        # its record never written, so there is no first loss to compare it with
        want = want[:-1]
    assert [s for s, _, _ in again] == want
    for step, before, after in again:
        assert after == pytest.approx(before, rel=1e-5), (step, before, after)
    out = job.log(0)
    assert "lost a peer" in out and "exit status 75, which an elastic launcher restarts on" in out
    said = [ln for ln in out.splitlines() if "attempt 2, torchrun's elastic agent's restart 1 of at most 3" in ln]
    assert len(said) == 1 and f"world size 2 -> 1; {resume['steps_lost']} steps lost" in said[0], said
    return dict(detection_s=round(lost["time"] - failed_at, 1), steps_lost=resume["steps_lost"],
                seconds_lost=resume["seconds_lost"])  # fmt: skip


@pytest.mark.parametrize("fault", ["kill", "cut"])
def test_host_1_lost_mid_epoch_the_job_finishes_on_host_0(data, tmp_path, fault, record_property):
    """kill: every process of host 1 (its agent too) gets SIGKILL at step 4 or later of epoch 1; cut: its link
    goes down instead, and host 0 notices within --collective-timeout. Fails on a fastres that does not record
    what a restart lost (no peer_lost record, no steps/seconds lost in the resume record, no line saying so)."""
    before = machine_state()
    with EmulatedNetwork(hosts=2, link_gbit=None) as net:
        job = ElasticJob(net, data, tmp_path, epochs=2)
        records, failed_at = run_through(job, fault)
    numbers = check_the_restart(job, records, failed_at, kill=fault == "kill")
    if fault == "kill":  # the kernel reset host 1's connections: noticed at once
        assert numbers["detection_s"] < 5, numbers
    else:  # nothing is heard from host 1: noticed when the collective times out
        assert COLLECTIVE_TIMEOUT - 2 <= numbers["detection_s"] <= COLLECTIVE_TIMEOUT + 10, numbers
    assert steps(records, "val") == [10, 20] and records[-1]["kind"] == "summary"
    record_property("elastic", numbers)
    print(f"{fault}: {numbers}")
    assert_nothing_left(before)


def test_host_1_back_the_job_grows_to_2_hosts_again(data, tmp_path, record_property):
    """Host 1 killed, then its agent started again while host 0 trains alone: host 0's agent stops its process
    (SIGTERM: a checkpoint of the step every rank agreed on), the next rendezvous holds both hosts, and the run
    ends on 2 processes; its log shows world sizes 2, 1, 2. Fails on a fastres whose resume records do not say
    the world size of the attempt before."""
    before = machine_state()
    with EmulatedNetwork(hosts=2, link_gbit=None) as net:
        job = ElasticJob(net, data, tmp_path, epochs=3)

        def back() -> None:
            job.wait_for(lambda rs: any(r["kind"] == "resume" for r in rs), 60, "host 0 resumed alone")
            job.start(1)

        records, failed_at = run_through(job, "kill", then=back)
    numbers = check_the_restart(job, records, failed_at)
    resumes = [r for r in records if r["kind"] == "resume"]
    worlds = [resumes[0]["previous_world_size"], *(r["world_size"] for r in resumes)]
    assert worlds == [2, 1, 2], resumes
    grown = resumes[1]
    stop = [r for r in records if r["kind"] == "stop"][-1]  # the agent stopped the 1-process attempt for the rejoin
    assert stop["signal"] == "SIGTERM" and grown["checkpoint_step"] == stop["step"] and grown["steps_lost"] == 0
    assert grown["changed"] == {"accumulate": [2, 1]}
    done = [r["step"] for r in records[records.index(grown) :] if r["kind"] == "train"]
    assert done == list(range(grown["step"] + 1, 31)) and records[-1]["kind"] == "summary"
    numbers.update(grow_seconds_lost=grown["seconds_lost"])
    record_property("elastic", numbers)
    print(f"back: {numbers}")
    assert_nothing_left(before)


@pytest.mark.skipif(ETCD is None, reason="etcd (Debian: etcd-server) or python-etcd (pip) is not installed")
def test_with_the_rendezvous_on_etcd_outside_the_training_hosts_the_job_survives_rank_0_s_host(data, tmp_path):
    """etcd on a third host that trains nothing (torchrun's etcd-v2 rendezvous), the agents started by
    python -m fastres.distributed.elastic: host 0, which runs rank 0 and the processes' store, killed; host 1 goes
    on alone, resumed on 1 process. With c10d the rendezvous lives in the agent of host 0 and every other agent ends
    with it (README, "Elastic runs")."""
    before = machine_state()
    with EmulatedNetwork(hosts=3, link_gbit=None) as net:
        server = net.hosts[2].address
        with open(tmp_path / "etcd.log", "w") as log:
            etcd_server = subprocess.Popen(
                net.wrap(net.hosts[2], [ETCD, "--name", "rdzv", "--data-dir", str(tmp_path / "etcd"), "--enable-v2",
                                        "--listen-client-urls", f"http://{server}:2379", "--advertise-client-urls",
                                        f"http://{server}:2379", "--listen-peer-urls", "http://127.0.0.1:2380"]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while "ready to serve client requests" not in (tmp_path / "etcd.log").read_text():
                assert time.monotonic() < deadline and etcd_server.poll() is None, (tmp_path / "etcd.log").read_text()
                time.sleep(0.1)
            job = ElasticJob(net, data, tmp_path, epochs=2, rdzv="etcd-v2", launcher="fastres.distributed.elastic")
            records, _ = run_through(job, "kill", victim=0)
        finally:
            os.killpg(etcd_server.pid, signal.SIGKILL)
            etcd_server.wait()
    assert "fastres-h0" in job.log(0) and "rank 0/2" in job.log(0)  # host 0 ran rank 0
    (resume,) = [r for r in records if r["kind"] == "resume"]
    assert (resume["previous_world_size"], resume["world_size"]) == (2, 1), resume
    assert 0 <= resume["steps_lost"] < CHECKPOINT_EVERY and resume["checkpoint_step"] >= CHECKPOINT_EVERY
    assert steps(records, "val") == [10, 20] and records[-1]["kind"] == "summary"
    assert "attempt 2, torchrun's elastic agent's restart 1 of at most 3: world size 2 -> 1" in job.log(1)
    print(f"etcd, rank 0's host killed: steps_lost {resume['steps_lost']}, seconds_lost {resume['seconds_lost']}")
    assert_nothing_left(before)
