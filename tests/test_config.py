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
    assert {"builtin", "resnet50-goyal"} <= set(preset_names())
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
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--epochs", "-1"], "--epochs must be a positive integer"),
        (["--momentum", "1.5"], "--momentum must be in"),
        (["--optimizer", "adam"], "--optimizer must be one of sgd, lars, fused-sgd"),
        (["--lars-eta", "-1"], "--lars-eta must be >= 0"),
        (["--arch", "vgg16"], "--arch must be one of resnet18"),
        (["--schedule", "linear"], "--schedule must be one of cosine"),
        (["--label-smoothing", "1"], "--label-smoothing must be in"),
        (["--warmup-epochs", "100", "--epochs", "10"], "--warmup-epochs must be in"),
        (["--backend", "ffcv"], "--backend must be one of auto, dali, pytorch, synthetic"),
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


def test_distributed_choices_match_the_reducer():
    from fastres.config import ALLREDUCE, WIRE_DTYPES
    from fastres.distributed.reducer import ALGORITHMS
    from fastres.distributed.reducer import WIRE_DTYPES as REDUCER_WIRE

    assert ALLREDUCE == ALGORITHMS and WIRE_DTYPES == tuple(REDUCER_WIRE)
    with pytest.raises(ConfigError, match="--wire-dtype must be one of fp32, bf16, fp16, got 'int8'"):
        parse_args(["--wire-dtype", "int8"])
    with pytest.raises(ConfigError, match="--virtual-nodes must be a positive integer"):
        parse_args(["--virtual-nodes", "0"])
