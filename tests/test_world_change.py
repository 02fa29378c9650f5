"""Resuming on another number of processes: the recipe fixes the global batch, the cluster the process count.

The PIL loader's sample order is a function of (seed, epoch, global position) (fastres.data.pil.ShardedSampler):
optimizer step k takes positions [k G, (k + 1) G) of the epoch's permutation for a global batch G, however G
is split into processes x per-process batch x --accumulate, each sample with the same crop seed; and a chunk of
one per-process batch is one forward pass wherever it runs, so BN's batch statistics are taken over the same
images when the per-process batch is kept. A run resumed on N' processes (per-process batch x --accumulate
chosen again, fastres.run.resume.batch_for) then computes what a run never stopped computes, up to the order
of float additions: the 2-process run averages two per-process gradients in the reducer where the 1-process
run accumulates two passes. Tolerance on the logged losses: 1e-5 relative (on one CPU they are observed equal
bit for bit); the BN running statistics (validation only) differ, since each rank's see its own chunks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastres.config import ConfigError
from fastres.data.pil import ShardedSampler
from fastres.run.resume import batch_for

from multiproc import clean_environ, free_port, rank_env
from tiny import STEPPED, records

pytestmark = pytest.mark.timeout(600)

TINY = [*STEPPED, "--dist-timeout", "60"]  # each test names its --backend


def step_batches(size: int, world: int, batch: int, accumulate: int, epoch: int = 2) -> list:
    """Per optimizer step: the (index, seed) pairs of each forward pass (chunk), as the ranks' loaders yield them."""
    per_rank = []
    for rank in range(world):
        sampler = ShardedSampler(size, shuffle=True, seed=5, rank=rank, world=world, chunk=batch)
        sampler.set_epoch(epoch)
        items = list(sampler)
        per_rank.append([items[i : i + batch] for i in range(0, len(items) - batch + 1, batch)])
    steps = (size // world // batch) // accumulate  # fastres.data.dataset.train_steps, in optimizer steps
    return [
        [tuple(per_rank[r][k * accumulate + a]) for a in range(accumulate) for r in range(world)] for k in range(steps)
    ]


@pytest.mark.parametrize("size", [37, 48])
def test_every_split_of_a_global_batch_takes_the_same_samples_with_the_same_seeds(size):
    reference = step_batches(size, 1, 12, 1)  # one process, the whole global batch in one pass
    for world, batch, accumulate in [(1, 6, 2), (2, 6, 1), (2, 3, 2), (3, 4, 1), (4, 3, 1), (6, 2, 1), (1, 4, 3)]:
        got = step_batches(size, world, batch, accumulate)
        assert len(got) == len(reference) == size // 12
        for k, (passes, ref) in enumerate(zip(got, reference)):
            assert sorted(p for chunk in passes for p in chunk) == sorted(ref[0]), (world, batch, accumulate, k)
    # the per-process batch kept: the forward passes (BN's batch statistics) are the same chunks
    assert sorted(map(sorted, sum(step_batches(size, 2, 3, 2), []))) == sorted(
        map(sorted, sum(step_batches(size, 1, 3, 4), []))
    )


def test_the_split_chosen_keeps_the_global_batch_and_the_per_process_batch_where_it_can():
    assert batch_for(8, 1, 4) == (4, 2)  # 2 processes of 4 -> 1 process: 2 passes of 4
    assert batch_for(8, 2, 4) == (4, 1)  # 1 process of 4 x 2 passes -> 2 processes
    assert batch_for(8, 2, 8) == (4, 1)  # 1 process of 8 -> 2 of 4 (BN over 4 images now)
    assert batch_for(96, 3, 32) == (32, 1)
    assert batch_for(24, 2, 8) == (6, 2)  # no integer number of passes of 8: the fewest passes below it
    assert batch_for(8, 1, 4, batch=8) == (8, 1) and batch_for(8, 1, 4, accumulate=4) == (2, 4)
    with pytest.raises(ConfigError, match="global batch of 8 images per step cannot be split over 3 processes"):
        batch_for(8, 3, 4)
    with pytest.raises(ConfigError, match="--batch-size 3 on 1 process cannot keep the run's global batch of 8"):
        batch_for(8, 1, 4, batch=3)
    with pytest.raises(ConfigError, match="--batch-size 4 and --accumulate 1 on 1 process cannot keep"):
        batch_for(8, 1, 4, batch=4, accumulate=1)


def run_cmd(args: list[str], cwd: Path, world: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world)]
    command = [*launcher, "-m", "fastres.train"] if world > 1 else [sys.executable, "-m", "fastres.train"]
    env = {**clean_environ(), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def last_attempt(run: Path) -> list[dict]:
    """The records from the last resume record on."""
    recs = records(run)
    return recs[max(i for i, r in enumerate(recs) if r["kind"] == "resume") :]


def attempt_losses(run: Path) -> dict[int, float]:
    """step -> loss of the last attempt's train records."""
    return {r["step"]: r["loss"] for r in last_attempt(run) if r["kind"] == "train"}


def keep_only(run: Path, step: int) -> Path:
    """Drop every checkpoint but step `step`'s; its path."""
    for path in (run / "checkpoints").glob("step-*.pt"):
        if path.name != f"step-{step:09d}.pt":
            path.unlink()
    return run / "checkpoints" / f"step-{step:09d}.pt"


def test_resume_on_one_process_then_on_two_sees_the_global_batches_of_a_run_never_stopped(
    straight_run_2_processes, tmp_path
):
    """torchrun, 2 processes of 4 images (global batch 8, 5 steps an epoch): checkpoints mid-epoch at steps 2
    and 6. Resumed from step 2 on 1 process (2 passes of 4), then from that attempt's step 6 on 2 processes
    again: every loss after each resume is the never-stopped run's."""
    straight = {r["step"]: r["loss"] for r in records(straight_run_2_processes, "train")}
    assert sorted(straight) == list(range(1, 11))

    one = resumed_copy(straight_run_2_processes, tmp_path / "one", step=2, world=1, saved_world=2, accumulate=[1, 2])
    assert "resumed on 1 process, saved by 2: --batch-size 4 x --accumulate 2 keeps the run's global batch of 8" in (
        one.stdout
    )
    losses = attempt_losses(tmp_path / "one")
    assert sorted(losses) == list(range(3, 11))
    assert [losses[s] for s in losses] == pytest.approx([straight[s] for s in losses], rel=1e-5)

    # from the checkpoint the 1-process attempt wrote
    resumed_copy(tmp_path / "one", tmp_path / "two", step=6, world=2, saved_world=1, accumulate=[2, 1])
    losses = attempt_losses(tmp_path / "two")
    assert sorted(losses) == list(range(7, 11))
    assert [losses[s] for s in losses] == pytest.approx([straight[s] for s in losses], rel=1e-5)


def resumed_copy(source: Path, run: Path, *, step: int, world: int, saved_world: int, accumulate: list[int]):
    """A copy of run folder `source` resumed from its step-`step` checkpoint on `world` processes; the
    resume record must say what changed."""
    shutil.copytree(source, run)
    proc = run_cmd(["--resume", str(keep_only(run, step))], run.parent, world=world)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resume = records(run, "resume")[-1]
    assert (resume["world_size"], resume["saved_world_size"], resume["step"]) == (world, saved_world, step)
    assert resume["changed"] == {"accumulate": accumulate}
    return proc


def test_dali_resumed_on_another_process_count_continues_from_the_next_epoch_boundary(tiny_data, tmp_path):
    """DALI's readers split each epoch by process: another process count cannot continue the epoch's order. The
    run continues from the next epoch boundary, validating the interrupted epoch first, said in one line."""
    pytest.importorskip("nvidia.dali", reason="DALI is not installed")
    common = ["--data", str(tiny_data), *TINY, "--backend", "dali", "--workers", "1", "--batch-size", "4",
              "--checkpoint-every", "2", "--keep-checkpoints", "10", "--out", str(tmp_path)]  # fmt: skip
    proc = run_cmd([*common, "--accumulate", "2", "--epochs", "1", "--name", "run"], tmp_path, world=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    port = free_port()
    args = ["--resume", str(run / "checkpoints" / "step-000000002.pt"), "--epochs", "2"]
    ranks = [subprocess.Popen([sys.executable, "-m", "fastres.train", *args], cwd=tmp_path, env=rank_env(r, 2, port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=400) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], [e[-2000:] for _, e in outs]
    said = [line for line in outs[0][0].splitlines() if "DALI's readers split each epoch by process" in line]
    assert len(said) == 1 and "continues from the next epoch boundary (step 5" in said[0], outs[0][0]
    banner = [line for line in outs[0][0].splitlines() if line.startswith("fastres: resuming at step")]
    assert banner and banner[0].endswith("first the validation of epoch 1 whose last 3 steps are skipped"), banner
    resume = records(run, "resume")[-1]
    assert (resume["checkpoint_step"], resume["step"], resume["world_size"]) == (2, 5, 2)
    after = last_attempt(run)
    assert [(r["epoch"], r["step"]) for r in after if r["kind"] == "val"] == [(1, 5), (2, 10)]
    assert [r["step"] for r in after if r["kind"] == "train"] == [6, 7, 8, 9, 10]
