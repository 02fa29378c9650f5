"""What a failed attempt says and what the next one lost: the peer a collective's error names, by host and rank
(fastres.distributed.collectives); the steps, seconds and world size lost, read from a run folder as the attempt
before left it, and the launchers' restart counts (fastres.run.attempts). tests/test_elastic.py checks the same end
to end under torchrun's elastic agent on emulated hosts."""

from __future__ import annotations

import json

import yaml

from fastres.distributed.collectives import cause, other_hosts, peers_named
from fastres.run.attempts import TAIL_BYTES, attempt_loss, restart_label


def write_run(run, ranks: int, records: list[dict]) -> None:
    run.mkdir(exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"config": {}, "ranks": ranks}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_steps_and_seconds_lost_are_counted_from_the_checkpoint_to_the_last_step_reached(tmp_path):
    run = tmp_path / "run"
    train = [{"kind": "train", "time": 1000.0 + s, "step": s, "loss": 2.0} for s in range(1, 8)]
    write_run(run, 4, [*train, {"kind": "peer_lost", "time": 1007.5, "step": 7}])
    lost = attempt_loss(run, checkpoint_step=6, checkpoint_time=1006.0, world=2, attempt=2, env={})
    lost = type(lost)(**{**lost.__dict__, "now": 1030.0})  # a fixed clock
    assert (lost.world_before, lost.reached_step, lost.steps_lost) == (4, 7, 1)
    assert (lost.seconds_lost, lost.redone_seconds) == (24.0, 1.5)
    assert lost.line() == (
        "fastres: attempt 2: world size 4 -> 2; 1 steps lost (the attempt before reached step 7, this one resumes "
        "from step 6); 24.0 s lost (1.5 s of training done again, 22.5 s from the last step before to this resume)"
    )
    assert lost.record() == dict(restart=None, previous_world_size=4, reached_step=7, steps_lost=1,
                                 seconds_lost=24.0, redone_seconds=1.5)  # fmt: skip


def test_a_stop_in_a_checkpoint_loses_no_step_and_a_long_log_is_read_from_its_end(tmp_path):
    run = tmp_path / "run"
    filler = [{"kind": "train", "time": 1.0, "step": 1, "loss": 2.0, "pad": "x" * 200}] * (2 * TAIL_BYTES // 200)
    write_run(run, 2, [*filler, {"kind": "train", "time": 50.0, "step": 9}, {"kind": "stop", "time": 51.0, "step": 9}])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "ti')  # a record a crash cut short
    lost = attempt_loss(run, checkpoint_step=9, checkpoint_time=50.0, world=4, attempt=3, env={})
    assert (lost.reached_step, lost.steps_lost, lost.redone_seconds, lost.world_before) == (9, 0, 0.0, 2)


def test_the_launchers_restart_counts_name_the_attempt():
    torchrun = {"TORCHELASTIC_RESTART_COUNT": "2", "TORCHELASTIC_MAX_RESTARTS": "5"}
    assert restart_label(3, torchrun) == ("attempt 3, torchrun's elastic agent's restart 2 of at most 5", 2)
    assert restart_label(4, {"TORCHELASTIC_RESTART_COUNT": "0"}) == ("attempt 4", None)  # a host joined: no failure
    assert restart_label(2, {"SLURM_RESTART_COUNT": "1"}) == ("attempt 2, Slurm's requeue 1", 1)
    assert restart_label(2, {}) == ("attempt 2", None)


def test_a_lost_peer_is_named_by_host_and_rank():
    gloo = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:37004: "
                        "Connection reset by peer. This is typically caused by a remote peer dying")  # fmt: skip
    assert cause(gloo) == "Read error [127.0.0.1]:37004: Connection reset by peer."
    hostnames = ["node-a", "node-a", "localhost", "localhost"]  # "localhost" resolves to 127.0.0.1 everywhere
    assert peers_named(str(gloo), hostnames) == "127.0.0.1 is localhost (ranks 2, 3)"
    assert peers_named("Timed out waiting 15000ms for recv operation to complete", hostnames) == ""
    assert other_hosts(hostnames, 0) == "localhost (ranks 2, 3)"  # a timeout names no peer: the other hosts
    many = [f"h{i // 2}" for i in range(20)]
    assert other_hosts(many, 0) == "h1 (ranks 2, 3), h2 (ranks 4, 5), h3 (ranks 6, 7) and 6 more hosts"
    assert other_hosts(["a", "a"], 1) == ""
