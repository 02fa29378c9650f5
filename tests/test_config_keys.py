"""fastres.config's keys, unit by unit: each key declared once in one section with its help, range or
choices; the ranges, choices and rules of TrainConfig.validate and the errors naming the flag; coercion
of preset values; one rule where the config and the optimizer or schedule both need it."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from fastres.config import CHOICES, HELP, RANGES, ConfigError, TrainConfig
from fastres.config.key import Range, sentence
from fastres.config.keys import SAVED, coerce, field_types
from fastres.config.sections import SECTIONS
from fastres.optim.factory import OPTIMIZERS, momentum_convention
from fastres.optim.schedule import SCHEDULES, LRSchedule

FREE_TEXT = {"data", "train_list", "val_list", "out", "name", "resume"}  # paths and names: no choices


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def refusal(**values) -> str:
    with pytest.raises(ConfigError) as e:
        TrainConfig(**values).validate()
    return str(e.value)


def test_the_sections_partition_the_keys_in_the_order_of_help():
    keys = [f.name for f in dataclasses.fields(TrainConfig)]
    by_section = [f.name for section in SECTIONS for f in dataclasses.fields(section)]
    assert by_section == keys and len(set(keys)) == len(keys)  # every key in one section, once, in that order
    assert [k for group in HELP.values() for k in group] == keys
    assert list(HELP) == list(dict.fromkeys(s.title for s in SECTIONS))  # a title's sections are next to each other
    for section in SECTIONS:  # a section is a config of its own keys, with their defaults
        assert dataclasses.asdict(section()) == {f.name: f.default for f in dataclasses.fields(section)}


def test_every_key_has_a_sentence_and_every_number_a_range_and_every_choice_its_values():
    for f in dataclasses.fields(TrainConfig):
        tp, _ = field_types()[f.name]
        text = sentence(f)
        assert isinstance(text, str) and len(text) > 10 and not text.endswith("."), f.name
        if tp in (int, float) or typing.get_origin(tp) is list:
            assert f.name in RANGES and f.name not in CHOICES, f.name
            assert f.default is None or RANGES[f.name].holds(f.default), f.name
        elif tp is str:
            assert (f.name in CHOICES) != (f.name in FREE_TEXT), f.name
            assert f.name in FREE_TEXT or f.default in CHOICES[f.name], f.name
        else:
            assert tp is bool and f.name not in RANGES and f.name not in CHOICES, f.name


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_range_refuses_what_lies_outside_naming_the_flag(key):
    allowed, (tp, _) = RANGES[key], field_types()[key]
    outside = [allowed.low if allowed.left == "(" else allowed.low - 1]
    outside.append(allowed.high if allowed.right == ")" else allowed.high + 1)
    if tp is not int:
        outside += [math.nan, math.inf]
    for value in outside:
        value = [value] if typing.get_origin(tp) is list else (int(value) if tp is int else float(value))
        message = refusal(**{key: value})
        assert message.startswith(f"{flag(key)} must be ") and f" in {allowed}, got {value!r}" in message, message


def test_range_bounds_are_as_written():
    assert str(Range("[", 0, 1, ")")) == "[0, 1)" and str(Range("(", 0, 0.5, "]")) == "(0, 0.5]"
    half_open = Range("(", 0, 1, "]")
    assert [half_open.holds(v) for v in (0, 1e-12, 1, 1.0000001, math.nan)] == [False, True, True, False, False]


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_each_choice_refuses_a_value_it_does_not_list(key):
    message = refusal(**{key: "nope"})
    assert message == f"{flag(key)} must be one of {', '.join(CHOICES[key])}, got 'nope'"


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(bn_group=2, bn_virtual_batch=32), "--bn-virtual-batch must be none with --bn-group above 1"),
        (dict(lr_global_batch=1024), "--lr-global-batch must be none with --lr-unit per-256"),
        (dict(optimizer="rmsprop-warmup"), "--rmsprop-lr must be set with --optimizer rmsprop-warmup, got None"),
        (
            dict(momentum_convention="mlperf"),
            "--momentum-convention must be torch or auto with --optimizer sgd "
            "(torch.optim.SGD; fused-sgd takes mlperf), got 'mlperf'",
        ),  # fmt: skip
        (dict(momentum_correction=True), "--momentum-correction must be used with --momentum-convention mlperf"),
        (dict(optimizer="fused-sgd", momentum_correction=True), "--momentum-correction must be used with"),
        (dict(epochs=4, warmup_epochs=4.5), "--warmup-epochs must be in [0, epochs=4], got 4.5"),
        (dict(milestones=[3, 2]), "--milestones must be increasing, got [3, 2]"),
        (dict(schedule="piecewise"), "--factors must be given with --schedule piecewise, got None"),
        (dict(schedule="step", factors=[1, 0.1]), "--factors must be 4 numbers (one more than the 3 milestones)"),
        (dict(schedule="step", milestones=[1, 2], factors=[1]), "--factors must be 3 numbers (one more than the 2"),
        (dict(schedule="cosine", factors=[1, 0.1]), "--factors must be 1 numbers (one more than the 0 milestones)"),
    ],
)
def test_each_sections_rules_name_the_flag(values, message):
    assert message in refusal(**values)


@pytest.mark.parametrize(
    "values",
    [
        dict(optimizer="lars", momentum_correction=True),  # auto: mlperf for lars
        dict(optimizer="fused-sgd", momentum_convention="mlperf", momentum_correction=True),
        dict(optimizer="rmsprop-warmup", rmsprop_lr=0.01),
        dict(lr_unit="absolute", lr_global_batch=1024),
        dict(schedule="piecewise", factors=[0.5]),
        dict(schedule="step", milestones=[1, 2], factors=[1, 0.5, 0.25]),
        dict(epochs=4, warmup_epochs=4.0),
    ],
)
def test_what_the_rules_allow_validates(values):
    assert TrainConfig(**values).validate() == TrainConfig(**values)


def test_the_auto_convention_is_the_optimizers_own_in_the_config_and_the_optimizer():
    from torch import nn

    from fastres.kernels import ops
    from fastres.optim.factory import build_optimizer

    for name, info in OPTIMIZERS.items():
        assert momentum_convention(name, "auto") == info.convention and momentum_convention(name, "torch") == "torch"
        cfg = TrainConfig(optimizer=name, rmsprop_lr=0.01).validate()  # auto
        opt = build_optimizer(cfg, nn.Linear(3, 2))
        inside = info.convention == "mlperf"
        if name == "sgd":
            assert not inside and type(opt).__name__ == "SGD"
        else:
            assert bool(opt.mode & ops.STEP_LR_AFTER_MOMENTUM) != inside, name


@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("milestones", [None, (), (10, 20)])
@pytest.mark.parametrize("factors", [None, (1.0,), (1.0, 0.1, 0.01), (1.0, 0.1, 0.01, 0.001)])
def test_the_factors_rule_is_one_for_the_config_and_the_schedule(kind, milestones, factors):
    """The config (epochs) and the schedule itself (steps, one step an epoch here) accept and refuse the same."""
    cfg = TrainConfig(schedule=kind, epochs=30, warmup_epochs=0, milestones=None if milestones is None else
                      list(milestones), factors=None if factors is None else list(factors))  # fmt: skip
    try:
        cfg.validate()
        config_ok = True
    except ConfigError as e:
        config_ok = False
        assert str(e).startswith("--factors must be "), e
    try:
        LRSchedule(1.0, 30, 0, kind=kind, milestone_steps=milestones, factors=factors)
        schedule_ok = True
    except ValueError as e:
        schedule_ok = False
        assert str(e).startswith("factors: must be "), e
    assert config_ok == schedule_ok


def test_an_error_says_where_a_value_not_given_came_from():
    message = refusal(lr=-1.0)  # no sources: as a flag
    assert message == "--lr must be a finite number in [0, 100], got -1.0"
    with pytest.raises(ConfigError) as e:
        TrainConfig(lr=-1.0).validate({"lr": "preset x"})
    assert (
        str(e.value)
        == "--lr must be a finite number in [0, 100], got -1.0 (preset x, not a flag: give --lr to change it)"
    )
    saved = f"{SAVED} (run/ckpt): give the flag to change it"
    with pytest.raises(ConfigError) as e:
        TrainConfig(lr=-1.0).validate({"lr": saved})
    assert str(e.value).endswith(f"got -1.0 ({saved})")


def test_the_global_batch_is_split_over_processes_and_passes_or_refused():
    assert TrainConfig(global_batch=96, accumulate=3).resolve_batch(4).batch_size == 8
    assert TrainConfig(batch_size=7).resolve_batch(4).batch_size == 7  # no global batch: as given
    with pytest.raises(ConfigError) as e:
        TrainConfig(global_batch=100, accumulate=3).resolve_batch(4)
    assert str(e.value) == "--global-batch 100 is not divisible by 4 processes x --accumulate 3 = 12"


@pytest.mark.parametrize(
    "key, value, want",
    [
        ("lr", 1, 1.0),  # an int is a fine float
        ("epochs", 3, 3),
        ("nesterov", True, True),
        ("name", "r", "r"),
        ("val_image_size", None, None),  # an optional key may be null
        ("milestones", [30, 60.5], [30.0, 60.5]),
        ("factors", (1, 0.1), [1.0, 0.1]),
    ],
)
def test_coerce_keeps_values_of_the_keys_type(key, value, want):
    got = coerce(key, value, "--config x.yaml")
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epochs", 2.5, "--config x.yaml: epochs must be int, got 2.5"),
        ("epochs", True, "--config x.yaml: epochs must be int, got True"),  # a bool is no number here
        ("lr", "0.1", "--config x.yaml: lr must be float, got '0.1'"),
        ("nesterov", "yes", "--config x.yaml: nesterov must be bool, got 'yes'"),
        ("threads", "2", "--config x.yaml: threads must be int or null, got '2'"),
        ("epochs", None, "--config x.yaml: epochs cannot be null"),
        ("milestones", [30, "x"], "--config x.yaml: milestones must be a list of numbers or null, got [30, 'x']"),
        ("factors", 0.1, "--config x.yaml: factors must be a list of numbers or null, got 0.1"),
    ],
)
def test_coerce_refuses_other_types_naming_the_key_and_the_file(key, value, message):
    with pytest.raises(ConfigError) as e:
        coerce(key, value, "--config x.yaml")
    assert str(e.value) == message
