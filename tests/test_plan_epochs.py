"""fastres.plan.epochs: epochs to a target top-1 from the global batch, fitted on declared MLPerf results and
checked on the validation runs held back; `--target-top1` / `--epochs auto` on the command line; `--validate`'s
second column."""

from __future__ import annotations

import json
import statistics

import pytest

from fastres.plan.cli import main
from fastres.plan.epoch_records import LARS, LARS_V06, SGD, source
from fastres.plan.epochs import FAMILIES, family_for_target, fit_critical_batch
from fastres.plan.records import VALIDATION, run_by_key
from fastres.plan.validate import LAW_BAND, check, checks, law_summary


def run(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _folder(run) -> str:
    return run.source.split()[1].rsplit("/resnet/", 1)[0]


def test_the_fit_recovers_a_known_law_and_refuses_what_is_not_one():
    e_min, b_noise = 30.0, 20_000.0
    points = [(b, e_min * (1 + b / b_noise)) for b in (1000, 4000, 16000, 64000)]
    assert fit_critical_batch(points) == pytest.approx((e_min, b_noise))
    with pytest.raises(ValueError, match="two batch sizes"):
        fit_critical_batch([(1000, 30.0), (1000, 31.0)])
    with pytest.raises(ValueError, match="no critical batch"):
        fit_critical_batch([(1000, 40.0), (64000, 30.0)])  # fewer epochs at a larger batch


def test_each_law_is_fitted_on_its_declared_results_only():
    lars = FAMILIES["lars"]
    by_batch = {}
    for _, _, batch, epochs in LARS:
        by_batch.setdefault(batch, []).append(statistics.fmean(epochs))
    # the same fit, by hand: one point per batch, the median of the results' means
    points = [(b, statistics.median(v)) for b, v in sorted(by_batch.items())]
    assert lars.law == pytest.approx(fit_critical_batch(points))
    assert lars.law == pytest.approx((34.32, 43_616), rel=1e-3)  # the figures README.md states
    assert len(LARS) == 290 and len(points) == 39 and lars.max_batch == 65_536
    # a result's epochs move the law: it is fitted on them
    moved = [(b, e * 1.1 if b == 65_536 else e) for b, e in points]
    assert fit_critical_batch(moved)[1] != pytest.approx(lars.law[1], rel=1e-3)


def test_no_validation_run_is_in_the_lars_or_sgd_calibration():
    systems = {_folder(r).split("/")[-1] for r in VALIDATION if r.key.startswith("mlperf")}
    for _, folder, _, _ in LARS + SGD:
        assert folder.split("/")[-1] not in systems, folder
    # v0.6: Google's six TPU results are fitted on (and marked so), the NVIDIA and Fujitsu ones held back
    fitted = {c.run.key for c in checks(VALIDATION) if c.law_role == "fitted"}
    assert fitted == {f"mlperf-v0.6-tpu-v3-{n}" for n in (32, 128, 256, 512, 1024, 2048)}
    assert {folder for _, folder, _, _ in LARS_V06} >= {_folder(run_by_key(k)) for k in fitted}


def test_every_epoch_count_cites_its_mlperf_log():
    for result in LARS + SGD + LARS_V06:
        rnd, folder, batch, epochs = result
        assert rnd in {"v0.6", "v0.7", "v1.0", "v1.1", "v2.0", "v2.1", "v3.0", "v3.1", "v4.0"}
        assert folder.count("/") == 2 and "/results/" in folder and batch > 0 and epochs
        assert source(result) == f"mlcommons/training_results_{rnd} {folder}/resnet/result_*.txt"
        assert all(25 <= e <= 100 for e in epochs), result


def test_the_law_predicts_the_held_back_runs_epochs():
    held = [c for c in checks(VALIDATION) if c.law_role == "held back"]
    assert len(held) >= 20
    for c in held:
        assert c.law.epochs / c.run.epochs == pytest.approx(1, abs=0.10), c.run.key
    # time to accuracy with those epochs: >= 80% of the held-back runs within +-25%
    inside = [c for c in held if abs(c.law_ratio - 1) <= LAW_BAND]
    assert len(inside) >= 0.8 * len(held)
    assert f"{len(inside)} of {len(held)} held-back runs" in law_summary()


def test_families_by_target_and_the_fixed_schedule():
    assert family_for_target(75.9).name == "lars" and family_for_target(74.9).name == "lars"
    assert family_for_target(76.3).name == "goyal" and family_for_target(75.9, "sgd").name == "sgd"
    with pytest.raises(ValueError, match="no published recipe reaches 77"):
        family_for_target(77)
    with pytest.raises(ValueError, match="reaches 75.9% top-1 in the published runs, not 76.3%"):
        family_for_target(76.3, "lars")
    goyal = FAMILIES["goyal"].predict(8192)
    assert goyal.epochs == 90 and not goyal.extrapolated and FAMILIES["goyal"].predict(16384).extrapolated
    lars = FAMILIES["lars"].predict(32768)
    assert lars.epochs == pytest.approx(34.32 * (1 + 32768 / 43616), rel=1e-3) and lars.evals == 16  # every 4


def test_target_top1_gives_time_to_accuracy_and_says_where_the_epochs_came_from(capsys):
    base = ["--device", "h100", "--devices", "256", "--global-batch", "16384", "--inter-node-gbps", "3200", "--json"]
    code, out, _ = run(*base, "--target-top1", "75.9", capsys=capsys)
    doc = json.loads(out)
    law = FAMILIES["lars"].predict(16384)
    assert code == 0 and doc["epochs"] == pytest.approx(law.epochs) and doc["evals"] == law.evals
    assert doc["epochs_from"]["how"] == "law" and doc["epochs_from"]["recipe"] == "lars"
    assert "E = 34.32 (1 + B / 43,616)" in doc["epochs_from"]["law"] and doc["time_to_accuracy_s"] > 0
    assert run(*base, "--epochs", "auto", capsys=capsys)[1] == out  # auto: the default target, 75.9%
    code, out, _ = run(*base, "--epochs", "50", capsys=capsys)  # --epochs N keeps working
    doc = json.loads(out)
    assert doc["epochs"] == 50 and doc["epochs_from"]["how"] == "flag" and doc["time_to_accuracy_s"] is None
    assert doc["time_to_train_s"] == pytest.approx(50 * doc["epoch_time_s"])
    code, out, _ = run(*base[:-1], "--target-top1", "75.9", capsys=capsys)
    assert "epochs: 47.2 epochs to 75.9% top-1 at a batch of 16,384: MLPerf LARS" in out and "time to accuracy" in out


def test_an_extrapolated_batch_or_a_lower_target_is_said(capsys):
    code, out, _ = run("--device", "h100", "--devices", "1024", "--global-batch", "81920", "--inter-node-gbps",
                       "3200", "--target-top1", "75", capsys=capsys)  # fmt: skip
    assert code == 0 and "warning: the global batch 81,920 is beyond the largest the lars law" in out
    assert "its epochs are an upper bound for 75%" in out


def test_validate_shows_both_columns_for_every_run_that_reached_a_target():
    table = check(run_by_key("mlperf-v3.0-dgxh100-n64"))
    assert table.to_accuracy_s is not None and table.law_role == "held back"
    assert table.law_ratio == pytest.approx(table.to_accuracy_s / 30.19)
    for c in checks(VALIDATION):
        assert (c.law is not None) == bool(c.run.kind == "time" and c.run.epochs_law), c.run.key
