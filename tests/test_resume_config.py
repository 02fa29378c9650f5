"""What a resume runs with: `--resume auto` resolves its command line as a fresh run does (every attempt of
a requeued job runs the same command, and the first one starts the run), then compares it with the run's
saved config; `--print-config` and `--print-schedule` show what the resume would use, with its refusals.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastres.config import ConfigError, resolve_command_line
from fastres.run.resume import plan_resume
from fastres.train import main

from tiny import records

pytestmark = pytest.mark.timeout(300)

# the smoke preset (resnet18, 32 px, batch 16) on 40 train images, every step logged
SMALL = ["--config", "smoke", "--workers", "0", "--threads", "1", "--backend", "pytorch", "--data-check", "none",
         "--no-progress", "--log-every", "1", "--checkpoint-every", "1000"]  # fmt: skip


def test_resume_auto_starting_a_run_trains_at_the_global_batch_of_its_command_line(tiny_data, tmp_path, capsys):
    """The requeue pattern's first attempt: --global-batch 8 over the preset's batch 16 gives 5 steps of 8 on 40
    images, as the same command without --resume auto does (before, it trained 2 steps of 16)."""
    args = ["--data", str(tiny_data), *SMALL, "--global-batch", "8", "--out", str(tmp_path)]
    assert main([*args, "--name", "auto", "--resume", "auto"]) == 0, capsys.readouterr().err
    assert main([*args, "--name", "fresh"]) == 0, capsys.readouterr().err
    for name in ("auto", "fresh"):
        doc = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
        assert (doc["global_batch"], doc["config"]["batch_size"], doc["config"]["global_batch"]) == (8, 8, 8), name
        assert [r["step"] for r in records(tmp_path / name, "train")] == [1, 2, 3, 4, 5], name


def test_resume_auto_refuses_what_a_fresh_run_refuses_with_the_same_words(tmp_path):
    out = ["--out", str(tmp_path), "--name", "r"]
    for argv in (
        ["--config", "goyal-8k", "--epochs", "3"],  # the preset's 5 warm-up epochs
        ["--config", "smoke", "--global-batch", "24", "--accumulate", "5"],  # 24 is not 5 x a batch
        ["--config", "smoke", "--global-batch", "32", "--batch-size", "8"],  # 8 x 1 process x 1 pass is not 32
    ):
        with pytest.raises(ConfigError) as fresh:
            resolve_command_line([*argv, *out])
        with pytest.raises(ConfigError) as auto:
            resolve_command_line([*argv, *out, "--resume", "auto"])
        assert str(auto.value) == str(fresh.value), argv
    rate = _refusal(["--data", str(tmp_path), "--optimizer", "rmsprop-warmup", *out, "--resume", "auto"])
    assert "(the ResNet-50 ImageNet recipe's default, not a flag: give --rmsprop-lr to change it)" in str(rate)
    # a warm-up no one gave, fitted to a short run, is fitted the same way
    short = [
        resolve_command_line(["--data", str(tmp_path), "--epochs", "3", *out, *auto])
        for auto in ([], ["--resume", "auto"])
    ]
    assert [r.cfg.warmup_epochs for r in short] == [1.5, 1.5] and short[0].said == short[1].said != ()
    # a preset's global batch applies under --resume auto: goyal-8k's 8,192 images per step on 1 process
    cfg = resolve_command_line(["--config", "goyal-8k", *out, "--resume", "auto"]).cfg
    assert (cfg.batch_size, cfg.global_batch) == (8192, 8192)
    assert plan_resume(cfg, frozenset(), say=lambda *_: None).cfg.batch_size == 8192  # nothing to resume: as is


def _refusal(argv: list[str]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        resolve_command_line(argv)
    return e.value


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory) -> Path:
    """A finished 1-epoch run at global batch 8 (5 steps), its checkpoints kept."""
    out = tmp_path_factory.mktemp("finished")
    args = ["--data", str(tiny_data), *SMALL, "--global-batch", "8", "--out", str(out), "--name", "run", "--resume",
            "auto"]  # fmt: skip
    assert main(args) == 0
    return out / "run"


def test_print_config_of_a_resume_prints_the_config_it_continues_with_and_its_refusals(finished, capsys):
    capsys.readouterr()
    run = str(finished)
    assert main(["--print-config", "--resume", run, "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# the config the resume continues with, from ") and "step-000000005.pt" in out.split("\n")[0]
    doc = yaml.safe_load(out)
    assert (doc["batch_size"], doc["global_batch"], doc["epochs"], doc["resume"]) == (8, 8, 3, run)
    lines = {ln.split(":")[0]: ln for ln in out.splitlines() if not ln.startswith("#")}
    assert lines["epochs"].endswith("# the command line")
    assert "# the run's saved config (" in lines["lr"] and "give the flag" not in lines["lr"]
    assert lines["log_every"].endswith(": give the flag to change it")  # a key a resume may change
    # what the resume refuses, --print-config refuses: one line, exit 2
    assert main(["--print-config", "--resume", run, "--lr", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr is 0.5 on this command line but the run was started with 0.2" in err[0], err
    # a value the merged config cannot take
    assert main(["--print-config", "--resume", run, "--epochs", "1", "--checkpoint-every", "0"]) == 2
    assert "--checkpoint-every must be an integer in [1, 1000000000], got 0" in capsys.readouterr().err


def test_a_hand_edit_of_config_yaml_is_refused_where_the_resume_would_drop_it(finished, tmp_path, capsys):
    """config.yaml only records a run's config (the checkpoint holds it, and every attempt writes the file
    again): an edit that the resume would drop is refused in one line, the edited file kept; an edit the
    command line makes too is no conflict. Before, the edit was dropped without a word."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    path = run / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"].update(lr=0.5, epochs=2)
    edited = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, indent=4)  # another style, too
    path.write_text(edited)
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path} was edited by hand (lr: 0.5 there, 0.2 in the run)" in err[0], err
    assert path.read_text() == edited and len(records(run, "resume")) == 0  # nothing written
    doc["config"]["lr"] = 0.2  # only the edit the command line makes too: the run continues
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["--resume", str(run), "--epochs", "2"]) == 0, capsys.readouterr().err
    assert [r["step"] for r in records(run, "train")][-5:] == [6, 7, 8, 9, 10]
    assert yaml.safe_load(path.read_text())["config"]["epochs"] == 2


def test_resume_auto_where_an_attempt_left_no_checkpoint_says_it_starts_again(finished, tmp_path, capsys):
    """An attempt that died before its first checkpoint (here: its checkpoints deleted) leaves records and no
    checkpoint: the next attempt of the same command says in one line that it starts again from step 0 and what
    that lost, and keeps the earlier records (before, it started over without a word)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "checkpoints")
    (run / "best.pt").unlink()
    earlier = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    args = ["--data", str(yaml.safe_load((run / "config.yaml").read_text())["config"]["data"]), *SMALL,
            "--global-batch", "8", "--out", str(tmp_path), "--name", "run", "--resume", "auto"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fastres: attempt 2")]
    assert len(said) == 1 and "world size 1 -> 1; 5 steps lost (the attempt before reached step 5, this one starts "
    "again from step 0: no checkpoint yet)" in said[0], said
    assert (run / "metrics.jsonl").read_text().startswith(earlier)  # nothing lost
    (resume,) = records(run, "resume")
    assert (resume["checkpoint"], resume["step"], resume["steps_lost"], resume["attempt"]) == (None, 0, 5, 2)
    assert [r["step"] for r in records(run, "train")] == [1, 2, 3, 4, 5] * 2


@pytest.mark.parametrize(
    "argv, refusal",
    [
        (["--batch-size", "4"], "--resume: --batch-size 4 on 3 processes cannot keep the run's global batch of 8"),
        ([], "--resume: the run's global batch of 8 images per step cannot be split over 3 processes"),
    ],
)
def test_a_resume_on_a_process_count_that_cannot_keep_the_global_batch_is_one_line_and_loses_nothing(
    finished, monkeypatch, capsys, argv, refusal
):
    """The run (global batch 8) resumed by 3 processes (the hosts that remain after a failure): refused in one
    line before anything is written, by rank 0 (every rank meets it)."""
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "3"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "3"),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):  # fmt: skip
        monkeypatch.setenv(name, value)
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*")}
    capsys.readouterr()
    assert main(["--resume", str(finished), "--epochs", "2", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and refusal in err[0], err
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*")} == before
