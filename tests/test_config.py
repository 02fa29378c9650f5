"""The typed config: presets, overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from fastres.config import ConfigError, TrainConfig, load_preset, parse_args, preset_names


def test_no_data_means_the_builtin_preset():
    cfg = parse_args([])
    assert cfg.data is None
    builtin = load_preset("builtin")
    for key, value in builtin.items():
        assert getattr(cfg, key) == value


def test_with_data_the_defaults_are_the_imagenet_recipe(tmp_path):
    cfg = parse_args(["--data", str(tmp_path)])
    assert (cfg.arch, cfg.image_size, cfg.epochs, cfg.lr, cfg.batch_size) == ("resnet50", 224, 90, 0.1, 256)


def test_flags_override_the_preset():
    cfg = parse_args(
        ["--config", "builtin", "--epochs", "3", "--lr", "0.5", "--no-progress", "--val-image-size", "none"]
    )
    assert (cfg.epochs, cfg.lr, cfg.progress, cfg.val_image_size) == (3, 0.5, False, None)
    assert cfg.image_size == load_preset("builtin")["image_size"]


def test_shipped_presets_all_load_and_validate():
    assert {"builtin", "goyal-8k", "pfn-32k", "mlperf-lars-3k", "mlperf-lars-32k"} <= set(preset_names())
    for name in preset_names():
        TrainConfig(**load_preset(name)).validate()


def test_yaml_unknown_key_and_wrong_type_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        parse_args(["--config", str(bad)])
    bad.write_text("epochs: three\n")
    with pytest.raises(ConfigError, match="epochs must be int"):
        parse_args(["--config", str(bad)])
    bad.write_text("lr: 1\nbatch-size: 8\n")  # an int is a fine float; dashes are accepted
    cfg = parse_args(["--config", str(bad)])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.batch_size == 8


def test_missing_preset_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="no such preset; shipped presets: .*builtin"):
        parse_args(["--config", "nope"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "--batch-size must be an integer in [1, 1048576], got 0"),
        (["--lr", "inf"], "--lr must be a finite number in [0, 100], got inf"),
        (["--lr", "nan"], "--lr must be a finite number in [0, 100], got nan"),
        (["--image-size", "100000"], "--image-size must be an integer in [16, 2048], got 100000"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be an integer in [1, "),
        (["--keep-checkpoints", "0"], "--keep-checkpoints must be an integer in [1, 1000]"),
        (["--epochs", "-1"], "--epochs must be an integer in [1, 100000], got -1"),
        (["--momentum", "1.5"], "--momentum must be a finite number in [0, 1), got 1.5"),
        (["--lars-eta", "-1"], "--lars-eta must be a finite number in [0, 1]"),
        (["--label-smoothing", "1"], "--label-smoothing must be a finite number in [0, 1)"),
        (["--warmup-epochs", "100", "--epochs", "10"], "--warmup-epochs must be in"),
    ],
)
def test_bad_values_name_the_flag(flags, message):
    with pytest.raises(ConfigError) as e:
        parse_args(flags)
    assert message in str(e.value)


def test_malformed_flag_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--batch-size", "abc"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size" in err[0] and "'abc'" in err[0]


@pytest.mark.parametrize(
    "flag, value, valid",
    [
        ("--optimizer", "adam", "sgd, fused-sgd, lars"),
        ("--arch", "vgg16", "resnet18, resnet34"),
        ("--schedule", "linear", "cosine, poly, step, constant"),
        ("--backend", "ffcv", "auto, dali, pytorch, synthetic"),
        ("--wire-dtype", "int8", "fp32, bf16, fp16"),
        ("--allreduce", "ring", "auto, flat, hierarchical"),
        ("--data-check", "full", "none, header, decode"),
    ],
)
def test_bad_choice_is_one_line_listing_the_valid_values(capsys, flag, value, valid):
    with pytest.raises(SystemExit) as e:
        parse_args([flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and repr(value) in err[0], err
    assert all(repr(v) in err[0] for v in valid.split(", ")), err


def test_choice_lists_come_from_the_modules_that_implement_them():
    from fastres.config import CHOICES
    from fastres.data.loader import BACKENDS
    from fastres.distributed.reducer import ALGORITHMS, WIRE_DTYPES
    from fastres.optim.factory import OPTIMIZERS

    assert CHOICES["allreduce"] is ALGORITHMS and CHOICES["optimizer"] is OPTIMIZERS
    assert CHOICES["wire_dtype"] == tuple(WIRE_DTYPES) and CHOICES["backend"] == tuple(BACKENDS)
    with pytest.raises(ConfigError, match="--virtual-nodes must be an integer in"):
        parse_args(["--virtual-nodes", "0"])
    with pytest.raises(ConfigError, match="--optimizer must be one of sgd, fused-sgd, lars, rmsprop-warmup, got"):
        TrainConfig(optimizer="adam").validate()  # a preset file goes through validate(), not argparse


def help_text(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside the phrases checked
    with pytest.raises(SystemExit) as e:
        parse_args([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # unwrap argparse's line breaks


def test_help_explains_every_flag_in_groups_with_units(capsys, monkeypatch):
    from dataclasses import fields

    from fastres.config import HELP

    grouped = [k for keys in HELP.values() for k in keys]
    assert sorted(grouped) == sorted(f.name for f in fields(TrainConfig))  # every key, once
    text = help_text(capsys, monkeypatch)
    for title in ("data:", "model:", "optimisation:", "precision and devices:", "distributed:", "run:"):
        assert title in text
    assert "--lr FLOAT peak learning rate, in the unit of --lr-unit: per 256 images (the run uses lr x global" in text
    assert "--global-batch INT images per optimizer step over all processes" in text
    assert "--milestones X,Y,... epochs at which step and piecewise schedules change the lr" in text
    assert "--print-schedule print the lr, momentum and batch of every epoch" in text
    assert "--batch-size INT images per process per step" in text
    assert "--backend {auto,dali,pytorch,synthetic}" in text and "--wire-dtype {fp32,bf16,fp16}" in text
    assert "--optimizer {sgd,fused-sgd,lars,rmsprop-warmup}" in text and "--allreduce {auto,flat,hierarchical}" in text


def test_help_shows_the_defaults_of_the_preset_in_use(capsys, monkeypatch):
    builtin = help_text(capsys, monkeypatch)  # no --data, no --config: the builtin preset
    assert "Defaults shown are those of preset builtin, which applies without --data and --config" in builtin
    assert "--epochs INT passes over the training set (default: 6, preset builtin; with --data: 90)" in builtin
    assert "(default: 0.5, preset builtin; with --data: 5.0)" in builtin  # --warmup-epochs
    assert "on CUDA only, not on the CPU (default: True, preset builtin; with --data: none)" in builtin
    assert "--momentum FLOAT momentum coefficient, in [0, 1) (default: 0.9)" in builtin  # the same either way
    recipe = help_text(capsys, monkeypatch, "--data", "/x")
    assert "--epochs INT passes over the training set (default: 90)" in recipe
    assert "Defaults shown are the ResNet-50 ImageNet recipe's" in recipe and ", preset builtin" not in recipe
    goyal = help_text(capsys, monkeypatch, "--config", "goyal-8k")
    assert "Defaults shown are those of preset goyal-8k" in goyal
    per_process = "--batch-size INT images per process per step; the global batch is this times the number of processes"
    assert f"{per_process} times --accumulate (default: 32, preset goyal-8k)" in goyal
    assert "(default: 30,60,80, preset goyal-8k)" in goyal and "--global-batch INT" in goyal
    assert "(default: 8192, preset goyal-8k)" in goyal and "; with --data:" not in goyal


def test_an_error_about_a_value_not_given_says_where_it_came_from(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_args(["--data", str(tmp_path), "--optimizer", "rmsprop-warmup"])  # the recipe sets no RMSprop rate
    assert str(e.value) == (
        "--rmsprop-lr must be set with --optimizer rmsprop-warmup, got None (the ResNet-50 ImageNet recipe's default, "
        "not a flag: give --rmsprop-lr to change it)"
    )
    with pytest.raises(ConfigError) as e:
        parse_args(["--config", "goyal-8k", "--epochs", "3"])  # a preset the user chose sets the warm-up: kept
    assert str(e.value) == (
        "--warmup-epochs must be in [0, epochs=3], got 5.0 (preset goyal-8k, not a flag: give --warmup-epochs to "
        "change it)"
    )
    with pytest.raises(ConfigError) as e:
        parse_args(["--config", "builtin", "--epochs", "1", "--warmup-epochs", "2"])
    assert str(e.value) == "--warmup-epochs must be in [0, epochs=1], got 2.0"  # given: nothing to add


def test_a_short_run_fits_a_warmup_nobody_gave_into_half_of_it(tmp_path):
    from fastres.config import resolve_command_line

    data = ["--data", str(tmp_path)]
    for epochs, warmup in ((1, 0.5), (3, 1.5), (9, 4.5), (10, 5.0), (90, 5.0)):  # the recipe's 5 epochs, at most half
        resolved = resolve_command_line([*data, "--epochs", str(epochs)])
        assert resolved.cfg.warmup_epochs == warmup and len(resolved.said) == (epochs < 10), epochs
    resolved = resolve_command_line([*data, "--epochs", "1"])
    assert resolved.said == (
        "fastres: --warmup-epochs 0.5: the warm-up of 5 epochs (the ResNet-50 ImageNet recipe's default) is shortened "
        "to half of this 1-epoch run; give --warmup-epochs to choose another",
    )
    assert resolved.sources["warmup_epochs"] == (
        "5 from the ResNet-50 ImageNet recipe's default, shortened to half of --epochs 1: give --warmup-epochs to "
        "choose"
    )
    # a warm-up the user gave is theirs: kept where it fits, refused as before where it does not
    given = resolve_command_line([*data, "--epochs", "9", "--warmup-epochs", "5"])
    assert given.cfg.warmup_epochs == 5.0 and given.said == ()
    with pytest.raises(ConfigError, match=r"^--warmup-epochs must be in \[0, epochs=1\], got 5.0$"):
        parse_args([*data, "--epochs", "1", "--warmup-epochs", "5"])
    assert parse_args(["--epochs", "1"]).warmup_epochs == 0.5  # the builtin preset's half epoch fits as it is


def test_the_shortened_warmup_is_one_line_on_stderr_and_its_source_in_print_config(tmp_path, capsys):
    from fastres.train import main

    assert main(["--data", str(tmp_path), "--epochs", "2", "--print-config"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "fastres: --warmup-epochs 1: the warm-up of 5 epochs (the ResNet-50 ImageNet recipe's default) is shortened "
        "to half of this 2-epoch run; give --warmup-epochs to choose another"
    ]
    line = next(x for x in out.splitlines() if x.startswith("warmup_epochs:"))
    assert line.split("#")[0].strip() == "warmup_epochs: 1.0"
    assert line.endswith("# 5 from the ResNet-50 ImageNet recipe's default, shortened to half of --epochs 2: give "
                         "--warmup-epochs to choose")  # fmt: skip


def test_print_config_names_the_source_of_every_value(tmp_path):
    import yaml

    from fastres.config import resolve_command_line

    flags = ["--config", "goyal-8k", "--data", str(tmp_path / "d" / ".." / "d"), "--epochs", "10", "--lr", "0.2"]
    resolved = resolve_command_line(flags)
    text = resolved.describe()
    lines = {ln.split(":")[0]: ln for ln in text.splitlines() if not ln.startswith("#")}
    assert lines["epochs"].endswith("# the command line") and lines["arch"].endswith("# preset goyal-8k")
    assert lines["prefetch"].endswith("# the ResNet-50 ImageNet recipe's default")
    assert lines["batch_size"].endswith("# --global-batch 8192 / (1 process x --accumulate 1)")  # derived
    # as YAML it is the resolved config itself, paths absolute
    assert yaml.safe_load(text) == resolved.cfg.to_dict()
    assert resolved.cfg.data == str((tmp_path / "d").resolve())


def test_print_config_of_the_command_prints_and_exits_without_touching_data(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("FASTRES_DATA", str(tmp_path / "never-written"))
    out = subprocess.run(
        [sys.executable, "-m", "fastres.train", "--print-config", "--epochs", "2"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "epochs: 2" in out.stdout and "# preset builtin (no --data, no --config)" in out.stdout
    assert not (tmp_path / "never-written").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flag, suggestion",
    [("--epoch", "did you mean --epochs"), ("--epcohs", "did you mean --epochs"), ("--batch", "--batch-size")],
)
def test_long_flags_are_never_abbreviated_and_unknown_ones_get_a_suggestion(capsys, flag, suggestion):
    with pytest.raises(SystemExit) as e:
        parse_args([flag, "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"unrecognized arguments: {flag} 3" in err[0] and suggestion in err[0], err


def test_an_unknown_yaml_key_gets_a_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nwarmup_epoch: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'warmup_epoch'; did you mean 'warmup_epochs'"):
        parse_args(["--config", str(bad)])


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "lists").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = parse_args(["--data", "data", "--train-list", "lists/train.txt"])
    assert cfg.data == str(tmp_path.resolve() / "data")
    assert cfg.train_list == str(tmp_path.resolve() / "lists" / "train.txt")
