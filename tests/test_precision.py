"""`--precision auto`: bf16 autocast on a CPU that computes bf16 natively, fp32 on any other CPU, bf16 on CUDA.

The CPU's flags are faked (a cpuinfo file of the test's own, fastres.run.execution.CPUINFO pointed at it),
so the choice is checked for a native-bf16 CPU on any machine: the resolution itself, fastres.doctor
(the same detection, not a copy of it), --print-config, the startup and estimate lines of a real run,
and a run trained in bf16 that is evaluated in bf16 and in fp32, predicted from, exported and resumed
on a CPU without native bf16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fastres import FastresError
from fastres.run import execution
from fastres.run.execution import resolve_precision

AVX512_BF16 = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni"
AMX = "fpu sse2 avx2 avx512f amx_tile amx_bf16 amx_int8"
AVX2 = "fpu sse2 avx avx2 fma"  # this kind of box: no native bf16
AVX512_ONLY = "fpu sse2 avx2 avx512f avx512bw"  # AVX-512 without its BF16 extension: not native either


def fake_cpu(tmp_path: Path, monkeypatch, flags: str | None) -> Path:
    """/proc/cpuinfo as fastres reads it, with `flags` (None: no file at all, as off Linux)."""
    info = tmp_path / "cpuinfo"
    if flags is not None:
        info.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(execution, "CPUINFO", str(info))
    return info


@pytest.mark.parametrize(
    "flags, name, why",
    [
        (AVX512_BF16, "bf16", "this CPU computes bf16 natively (AVX-512 BF16)"),
        (AMX, "bf16", "this CPU computes bf16 natively (AMX)"),
        (AMX + " avx512_bf16", "bf16", "this CPU computes bf16 natively (AVX-512 BF16, AMX)"),
        (AVX2, "fp32", "this CPU has no native bf16 (no AVX-512 BF16 or AMX): emulated bf16 is slower"),
        (AVX512_ONLY, "fp32", "this CPU has no native bf16 (no AVX-512 BF16 or AMX): emulated bf16 is slower"),
        (None, "fp32", "cannot tell whether this CPU computes bf16 natively"),
    ],
)
def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_without(tmp_path, monkeypatch, flags, name, why):
    fake_cpu(tmp_path, monkeypatch, flags)
    chosen = resolve_precision("auto", torch.device("cpu"))
    assert chosen.name == name and chosen.dtype == (torch.bfloat16 if name == "bf16" else None)
    assert chosen.why.startswith(why) and str(chosen) == f"{name}: {chosen.why}"
    assert execution.amp_dtype("auto", torch.device("cpu")) is chosen.dtype
    assert not chosen.emulated
    # CUDA is bf16 whatever the CPU; a named precision is what it says, on either device
    assert resolve_precision("auto", "cuda") == execution.Precision("bf16", torch.bfloat16, "autocast on CUDA")
    assert resolve_precision("fp32", "cpu").dtype is None and resolve_precision("fp32", "cpu").why == "--precision fp32"
    assert resolve_precision("fp16", "cpu").dtype is torch.float16
    bf16 = resolve_precision("bf16", "cpu")
    assert bf16.dtype is torch.bfloat16 and bf16.emulated == (flags in (AVX2, AVX512_ONLY))
    assert ("emulated on this CPU" in bf16.why) == bf16.emulated


def test_a_precision_that_does_not_exist_is_one_line_naming_the_flag():
    with pytest.raises(FastresError, match="--precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("flags, native", [(AVX512_BF16, True), (AVX2, False), (None, None)])
def test_doctor_reads_the_same_detection(tmp_path, monkeypatch, flags, native):
    from fastres import doctor

    fake_cpu(tmp_path, monkeypatch, flags)
    facts = doctor._torch()
    assert facts["cpu_native_bf16"] is native
    assert facts["cpu_auto_precision"] == str(resolve_precision("auto", "cpu"))
    assert facts["cpu_auto_precision"].startswith("bf16: " if native else "fp32: ")


@pytest.mark.parametrize(
    "flags, says",
    [(AVX512_BF16, "here: bf16: this CPU computes bf16 natively (AVX-512 BF16)"),
     (AVX2, "here: fp32: this CPU has no native bf16 (no AVX-512 BF16 or AMX): emulated bf16 is slower")],
)  # fmt: skip
def test_print_config_says_what_auto_chose_and_why(tmp_path, monkeypatch, capsys, flags, says):
    from fastres.train import main

    fake_cpu(tmp_path, monkeypatch, flags)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--print-config"]) == 0  # the builtin preset: precision auto
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("precision:")]
    assert line.split("#")[0].strip() == "precision: auto"
    assert line.endswith(f"# preset builtin (no --data, no --config); {says}"), line
    assert main(["--print-config", "--precision", "fp32"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("precision:")]
    assert line.endswith("# the command line; here: fp32: --precision fp32"), line


# channels_last as in the builtin preset: emulated bf16 in NCHW is ~40x slower than fp32 on an AVX2 CPU (~5x here)
TINY = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--no-progress",
        "--lr", "3.2", "--warmup-epochs", "0", "--label-smoothing", "0", "--crop-scale-min", "1.0", "--seed", "0",
        "--backend", "pytorch", "--threads", "1", "--channels-last"]  # fmt: skip


def test_a_run_trained_in_bf16_by_auto_evaluates_predicts_exports_and_resumes_in_fp32(
    tiny_data, tmp_path, monkeypatch, capsys
):
    from fastres import export, predict
    from fastres.eval import _report, evaluate
    from fastres.run import progress
    from fastres.train import main

    data = tiny_data
    out = tmp_path / "runs"
    fake_cpu(tmp_path, monkeypatch, AVX512_BF16)
    monkeypatch.setattr(progress, "ESTIMATE_AFTER", 0.0)  # the estimate at the first timed step
    monkeypatch.setattr(progress, "ESTIMATE_MIN_SECONDS", 0.0)
    assert main(["--data", str(data), *TINY, "--epochs", "1", "--out", str(out), "--name", "r"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert "fastres: precision bf16: this CPU computes bf16 natively (AVX-512 BF16)" in said, said
    (estimate,) = [x for x in said if x.startswith("fastres: estimate:")]
    assert " img/s in bf16; " in estimate, estimate
    run = out / "r"
    facts = yaml.safe_load((run / "config.yaml").read_text())
    assert facts["amp"] == "bfloat16" and facts["precision_chosen"].startswith("bf16: this CPU computes")
    (val,) = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "val"]

    # on the same CPU, auto evaluates in bf16: exactly the accuracy the run logged
    same = evaluate(run, None, say=lambda _: None)
    assert same.precision.name == "bf16" and same.top1 == val["top1"] and same.top5 == val["top5"]
    # the run folder moved to a CPU without native bf16: auto is fp32 there, bf16 can still be asked for
    fake_cpu(tmp_path, monkeypatch, AVX2)
    moved = evaluate(run, None, say=lambda _: None)
    assert moved.precision.name == "fp32" and moved.images == val["images"] == 20
    assert " in fp32 (this CPU has no native bf16 " in _report(moved)  # eval says what it computed in
    assert abs(moved.top1 - val["top1"]) <= 10.0  # the same weights in fp32: at most 2 of 20 images change
    asked = evaluate(run, None, precision="bf16", say=lambda _: None)
    assert asked.precision.emulated and asked.top1 == val["top1"]  # emulated bf16 computes the same numbers

    # predict and export read the fp32 weights a bf16 run saves, on any CPU
    image = sorted((data / "val").rglob("*.JPEG"))[0]
    assert predict.main([str(run), str(image), "--json", "--top", "1"]) == 0
    top = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top"]
    assert top[0]["class"] in {p.name for p in (data / "val").iterdir()}
    assert export.main([str(run), str(tmp_path / "r.pth"), "--format", "torchvision"]) == 0
    state = torch.load(tmp_path / "r.pth", weights_only=True)
    assert all(t.dtype != torch.bfloat16 for t in state.values())  # fp32 weights (and BN's int64 counts)

    # and the run continues there in fp32 from its bf16 checkpoint
    assert main(["--resume", str(run), "--epochs", "2"]) == 0
    said = capsys.readouterr().out
    assert "fastres: precision fp32: this CPU has no native bf16" in said and "fastres: resuming at step 5" in said
    vals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "val"]
    assert [v["epoch"] for v in vals] == [1, 2] and all(0 <= v["top1"] <= 100 for v in vals)
