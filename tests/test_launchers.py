"""fastres under real launchers: Open MPI's mpirun (one host, and across emulated hosts) and a real Slurm.

tests/test_topology.py feeds each launcher's variables as dicts; here the launchers set them.
Each test skips with the reason where its launcher is missing (Debian: openmpi-bin, slurm-wlm,
munge; `.ci/run` installs them where apt-get is there) or its daemons cannot start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from slurm_cluster import SlurmCluster

from emulated import EMULATE, WHY_NOT, assert_nothing_left, machine_state
from multiproc import clean_environ, free_port

TRAIN = ["-m", "fastres.train", "--arch", "resnet18", "--image-size", "32", "--batch-size", "4", "--epochs", "1",
         "--workers", "0", "--threads", "1", "--no-progress", "--log-every", "1", "--dist-timeout", "120",
         "--warmup-epochs", "0"]  # fmt: skip
MPIRUN = ["mpirun", "--allow-run-as-root", "--bind-to", "none", "--oversubscribe"]
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed (Debian: openmpi-bin)")


def one_line_errors(text: str) -> list[str]:
    """fastres.train's one-line errors in a job's output (rank 0 says a shared one; others name their rank)."""
    return [line for line in text.splitlines() if re.match(r"python -m fastres\.train: error( \(rank \d+\))?: ", line)]


def check_run(run: Path, ranks: int, launcher: str) -> None:
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["ranks"] == ranks and f", {launcher} at tcp://" in doc["topology"], doc["topology"]
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["images"] for r in val if r["kind"] == "val"] == [20]  # every val image once over the ranks


# ----------------------------------------------------------------------------- Open MPI


@needs_mpirun
@pytest.mark.timeout(300)
def test_mpirun_on_one_host_trains_without_master_addr(tiny_data, tmp_path):
    """mpirun -np 2 with no -x MASTER_ADDR: every rank is on this host, so they meet on 127.0.0.1."""
    cmd = [*MPIRUN, "-np", "2", sys.executable, *TRAIN, "--data", str(tiny_data), "--out", str(tmp_path),
           "--name", "mpi"]  # fmt: skip
    env = {**clean_environ(), "MASTER_PORT": str(free_port())}  # a port of its own on this shared host
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("fastres: done: 1 epochs") == 1  # rank 0 speaks for the job
    check_run(tmp_path / "mpi", 2, "openmpi")


def mpirun_on_hosts(hosts: int, per_host: int, args: list[str], master: bool) -> list[str]:
    """A command for `emulate --each job`: mpirun on host 0 starts ranks on every emulated host through
    the emulation's ssh stand-in, with Open MPI's own traffic on the emulated links."""
    spec = ",".join(f"fastres-h{h}:{per_host}" for h in range(hosts))
    mpi = [*MPIRUN, "-np", str(hosts * per_host), "--host", spec, "--mca", "plm_rsh_agent", "$FASTRES_EMU_RSH",
           "--mca", "oob_tcp_if_include", "eth0", "--mca", "btl_tcp_if_include", "eth0", "--map-by", "slot",
           "-x", "GLOO_SOCKET_IFNAME", "-x", "PATH", "-x", "OMP_NUM_THREADS=1",
           *(["-x", "PYTHONPATH"] if os.environ.get("PYTHONPATH") else []),
           *(["-x", "MASTER_ADDR", "-x", "MASTER_PORT"] if master else []), sys.executable, *args]  # fmt: skip
    # without it: the emulation's MASTER_ADDR is removed, or ranks would inherit it through mpirun's daemons
    unset = [] if master else ["env", "-u", "MASTER_ADDR", "-u", "MASTER_PORT"]
    return ["sh", "-c", " ".join(a if a.startswith("$") else f"'{a}'" for a in [*unset, *mpi])]


@needs_mpirun
@pytest.mark.skipif(WHY_NOT is not None, reason=f"emulated hosts: {WHY_NOT}")
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_mpirun_across_emulated_hosts_trains_and_without_master_addr_the_job_says_why(tiny_data, tmp_path):
    before = machine_state()
    args = [*TRAIN, "--data", str(tiny_data), "--out", str(tmp_path), "--name", "mpi-hosts"]
    run = [*EMULATE, "--hosts", "2", "--each", "job", "--timeout", "300", "--"]
    proc = subprocess.run([*run, *mpirun_on_hosts(2, 2, args, master=True)], cwd=tmp_path, env=clean_environ(),
                          capture_output=True, text=True, timeout=360)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "hierarchical all-reduce over 2 nodes x 2 ranks" in proc.stdout, proc.stdout[-2000:]
    check_run(tmp_path / "mpi-hosts", 4, "openmpi")
    # two hosts and no MASTER_ADDR: no default to guess, so the job ends with one line naming it (per rank that speaks)
    proc = subprocess.run([*run, *mpirun_on_hosts(2, 2, args[:-2] + ["--name", "x"], master=False)], cwd=tmp_path,
                          env=clean_environ(), capture_output=True, text=True, timeout=200)  # fmt: skip
    assert proc.returncode != 0
    errors = one_line_errors(proc.stdout + proc.stderr)
    assert 1 <= len(errors) <= 4 and all(
        "MASTER_ADDR is not set: 4 ranks need a rendezvous address" in e for e in errors
    )
    assert_nothing_left(before)


# ----------------------------------------------------------------------------- Slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = SlurmCluster.why_not()
    if why:
        pytest.skip(f"Slurm: {why}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    why = cluster.start()
    if why:
        pytest.skip(f"Slurm: the test cluster's daemons cannot start here: {why.splitlines()[0]}")
    yield cluster
    cluster.stop()


@pytest.mark.timeout(300)
def test_srun_trains_with_slurm_s_own_variables(slurm, tiny_data, tmp_path):
    """srun -n 2: SLURM_PROCID/NTASKS/LOCALID/TASKS_PER_NODE from slurmd, the rendezvous host from the node list."""
    cmd = ["srun", "-n", "2", "--time", "5", sys.executable, *TRAIN, "--data", str(tiny_data), "--out", str(tmp_path),
           "--name", "slurm"]  # fmt: skip
    env = slurm.env({**clean_environ(), "MASTER_PORT": str(free_port())})  # srun passes the environment on
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + slurm.logs()[-3000:]
    assert proc.stdout.count("fastres: done: 1 epochs") == 1
    check_run(tmp_path / "slurm", 2, "slurm")
    assert f"at tcp://{slurm.node}:" in yaml.safe_load((tmp_path / "slurm" / "config.yaml").read_text())["topology"]


@pytest.mark.timeout(120)
def test_srun_with_a_bad_flag_ends_the_job_with_one_line(slurm, tmp_path):
    cmd = ["srun", "-n", "2", "--time", "2", sys.executable, "-m", "fastres.train", "--batch-size", "0"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=slurm.env(clean_environ()), capture_output=True, text=True,
                          timeout=100)  # fmt: skip
    assert proc.returncode != 0
    errors = one_line_errors(proc.stderr)
    assert 1 <= len(errors) <= 2 and all("--batch-size" in e and "got 0" in e for e in errors), proc.stderr


@pytest.mark.timeout(300)
def test_the_readme_s_srun_line_runs_an_elastic_job_under_slurm(slurm, tiny_data, tmp_path):
    """README, "Elastic runs": srun starts one elastic agent per node (here the one node, 2 processes); the
    rendezvous id and endpoint come from Slurm's variables inside the step, and each process sees the world the
    rendezvous made (the config it would train with: --global-batch 8 over 2 processes)."""
    port = free_port()
    train = " ".join([*TRAIN, "--global-batch", "8", "--data", str(tiny_data), "--out", str(tmp_path), "--name", "rn",
                      "--resume", "auto", "--print-config"])  # fmt: skip
    first_host = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    line = (
        f"{sys.executable} -m fastres.distributed.elastic --nnodes 1:2 --nproc-per-node 2 --max-restarts 3 "
        f'--rdzv-backend c10d --rdzv-id "$SLURM_JOB_ID" --rdzv-endpoint "{first_host}:{port}" '
        f"--rdzv-conf last_call_timeout=1 {train}"
    )  # fmt: skip; last_call: 30 s of waiting for a second node
    cmd = ["srun", "--nodes", "1", "--ntasks-per-node", "1", "--no-kill", "--time", "5", "bash", "-c", line]
    proc = subprocess.run(cmd, cwd=tmp_path, env=slurm.env(clean_environ()), capture_output=True, text=True,
                          timeout=280)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + slurm.logs()[-3000:]
    batch = [line for line in proc.stdout.splitlines() if line.startswith("batch_size:")]
    assert len(batch) == 2 and all("# --global-batch 8 / (2 processes x --accumulate 1)" in b for b in batch), batch
    assert all(line.startswith("batch_size: 4 ") for line in batch), batch


def job_state(slurm, job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=slurm.env({})).stdout
    m = re.search(r"JobState=(\w+)", out)
    return m.group(1) if m else "UNKNOWN"


def wait_job(slurm, job: str, states: tuple[str, ...], seconds: float = 240) -> str:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = job_state(slurm, job)
        if state in states:
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job} still {job_state(slurm, job)} after {seconds} s:\n{slurm.logs()[-3000:]}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_slurm_preemption_checkpoints_requeues_and_ends_as_an_uninterrupted_job(
    slurm, tiny_data, straight_run, tmp_path
):
    """sbatch a job script that always runs the same command with --resume auto; scancel --signal=TERM
    stops its step in a checkpoint; scontrol requeue runs the script again; the run continues and
    ends with every loss and weight of a job that was never stopped (the shared straight run: that command,
    started once without Slurm)."""
    import time

    from tiny import STEPPED, assert_same_run, records

    env = {**clean_environ(), "OMP_NUM_THREADS": "1"}
    args = ["-m", "fastres.train", "--data", str(tiny_data), *STEPPED, "--epochs", "3", "--out", str(tmp_path)]
    command = " ".join([sys.executable, *args, "--name", "job", "--resume", "auto"])
    submit = subprocess.run(["sbatch", "--parsable", "--requeue", "--time", "10", "--chdir", str(tmp_path),
                             "--output", str(tmp_path / "job-%j.out"), "--wrap", f"srun {command}"],
                            cwd=tmp_path, env=slurm.env(env), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    run = tmp_path / "job"
    deadline = time.monotonic() + 240
    while len(records(run, "train")) < 7 and time.monotonic() < deadline:  # inside the second epoch
        time.sleep(0.2)
    assert len(records(run, "train")) >= 7, slurm.logs()[-3000:]
    subprocess.run(["scancel", "--signal=TERM", job], env=slurm.env({}), check=True, timeout=30)
    wait_job(slurm, job, ("FAILED", "COMPLETED", "CANCELLED"))
    out = "".join(p.read_text() for p in tmp_path.glob("job-*.out"))
    assert "stopped by SIGTERM after step" in out, out[-3000:]
    first = records(run, "train")[-1]["step"]
    subprocess.run(["scontrol", "requeue", job], env=slurm.env({}), check=True, timeout=30)
    time.sleep(1)
    assert wait_job(slurm, job, ("COMPLETED", "FAILED"), seconds=400) == "COMPLETED", slurm.logs()[-3000:]
    resumes = records(run, "resume")
    assert len(resumes) == 1 and resumes[0]["step"] == first
    assert_same_run(straight_run, run)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--nnodes", "2:1"], "--nnodes 2:1: give N or MIN:MAX hosts, 0 < MIN <= MAX"),
        (["--nnodes", "1:2:3"], "--nnodes 1:2:3: give N or MIN:MAX hosts"),
        (["--max-restarts", "-1"], "--max-restarts -1: give 0 or more restarts"),
        (["--nnodes", "1:2"], "an elastic job needs a dynamic rendezvous (--rdzv-backend c10d or etcd-v2"),
        (["--nnodes", "1:2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:1"],
         "fastres.train restarts here (--nnodes MIN:MAX or --max-restarts above 0): give it --resume auto --name"),
    ],
)  # fmt: skip
def test_the_elastic_launcher_says_what_torchrun_would_refuse_with_a_traceback_in_one_line(flags, message, capsys):
    """python -m fastres.distributed.elastic: torchrun's flags; what torchrun refuses with an AssertionError
    traceback (--nnodes 2:1) or runs wrongly (an elastic fastres.train that would start over at each restart) is
    one line, exit 2, before any process starts."""
    from fastres.distributed.elastic import main

    argv = [*flags, "--nproc-per-node", "1", "-m", "fastres.train", "--name", "r"]
    if message == "--nnodes 2:1: give N or MIN:MAX hosts, 0 < MIN <= MAX":  # one case as a user runs it
        done = subprocess.run([sys.executable, "-m", "fastres.distributed.elastic", *argv], capture_output=True,
                              text=True, timeout=120, env=clean_environ())  # fmt: skip
        code, err = done.returncode, done.stderr
    else:
        code, err = main(argv), capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("python -m fastres.distributed.elastic: error: ")
    assert message in lines[0], lines


def test_the_elastic_launcher_runs_torchrun_with_a_store_a_returning_host_can_join(tmp_path):
    """The same flags reach torchrun, and its processes see TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (a host that joins
    a running job needs it with torch 2.13: tests/test_elastic.py grows a job back to 2 hosts)."""
    script = tmp_path / "show.py"
    script.write_text("import os, sys\nprint('seen', os.environ['WORLD_SIZE'], os.environ.get("
                      "'TORCH_DISABLE_SHARE_RDZV_TCP_STORE'), sys.argv[1:])\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "fastres.distributed.elastic", "--standalone", "--nproc-per-node",
                           "2", str(script), "--x", "1"], capture_output=True, text=True, timeout=120,
                          env=clean_environ())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("seen 2 1 ['--x', '1']") == 2, done.stdout
