"""--tensorboard: TensorBoardWriter turns metrics.jsonl records into TensorBoard events, read back here
with TensorBoard's own reader; without the tensorboard package, one line saying how to get it."""

from __future__ import annotations

import sys

import pytest

from fastres import FastresError

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install fastres[tensorboard])")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from trained import records, short_run  # noqa: E402

from fastres.run.tensorboard import TENSORBOARD_DIR, TensorBoardWriter, tag_of  # noqa: E402

T0 = 1_790_000_000.0


def read_events(run_dir):
    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    return [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)]


def test_records_become_scalars_at_their_steps(tmp_path):
    tb = TensorBoardWriter(tmp_path)
    tb.write("bad_file", path="/data/train/a/x.JPEG", reason="truncated JPEG", time=T0)
    tb.write("train", epoch=1, step=20, loss=6.5, lr=0.01, momentum=0.9, img_per_s=1000.0, skipped_steps=0, time=T0 + 1)
    tb.write(
        "train", epoch=1, step=40, loss=None, lr=0.02, momentum=0.9, img_per_s=1100.0, skipped_steps=1, time=T0 + 2
    )
    tb.write(
        "train", epoch=1, step=50, loss=6.0, lr=0.025, momentum=0.9, img_per_s=1200.0, loss_scale=65536.0, time=T0 + 3
    )
    tb.write(
        "val", epoch=1, step=50, top1=12.5, top5=40.0, images=1000, epoch_seconds=12.0, img_per_s=1050.0, time=T0 + 4
    )
    tb.write(
        "resume", attempt=2, checkpoint="checkpoints/step-000000040.pt", step=40, world_size=2, changed={}, time=T0 + 5
    )
    tb.write(
        "summary",
        epochs=1,
        top1=12.5,
        top5=40.0,
        train_seconds=12.0,
        total_seconds=20.0,
        img_per_s=1050.0,
        best_top1=12.5,
        best_epoch=1,
        time=T0 + 6,
    )
    tb.write("a_kind_from_a_newer_fastres", step=60, x=1.0)  # ignored, not an error
    tb.close()
    tb.close()  # twice is fine

    acc = read_events(tmp_path)
    assert scalars(acc, "train/loss") == [(20, 6.5, T0 + 1), (50, 6.0, T0 + 3)]  # the null loss left out
    assert [(s, round(v, 6)) for s, v, _ in scalars(acc, "train/lr")] == [(20, 0.01), (40, 0.02), (50, 0.025)]
    assert [v for _, v, _ in scalars(acc, "train/momentum")] == pytest.approx([0.9] * 3)
    assert [v for _, v, _ in scalars(acc, "train/img_per_s")] == [1000.0, 1100.0, 1200.0]
    assert [(s, v) for s, v, _ in scalars(acc, "train/skipped_steps")] == [(20, 0.0), (40, 1.0)]
    assert [(s, v) for s, v, _ in scalars(acc, "train/loss_scale")] == [(50, 65536.0)]
    assert scalars(acc, "val/top1") == [(50, 12.5, T0 + 4)]
    assert [(s, v) for s, v, _ in scalars(acc, "val/top5")] == [(50, 40.0)]
    assert [(s, v) for s, v, _ in scalars(acc, "epoch/img_per_s")] == [(50, 1050.0)]
    assert [(s, v) for s, v, _ in scalars(acc, "epoch/seconds")] == [(50, 12.0)]
    # the summary lands at the last step seen (the resume's 40), as does nothing else from it
    assert [(s, v) for s, v, _ in scalars(acc, "summary/best_top1")] == [(40, 12.5)]
    tags = set(acc.Tags()["scalars"])
    assert not {"val/images", "val/epoch", "train/epoch", "train/step", "summary/epochs"} & tags
    assert not any("newer" in t or t.endswith("/x") for t in tags)
    text_tags = set(acc.Tags()["tensors"])  # add_text is stored as a tensor summary
    assert {"resume/text_summary", "bad_file/text_summary"} <= text_tags
    resume = acc.Tensors("resume/text_summary")[0]
    assert resume.step == 40 and b"step-000000040.pt" in resume.tensor_proto.string_val[0]


def test_tag_names():
    assert tag_of("train", "loss") == "train/loss" and tag_of("train", "loss_scale") == "train/loss_scale"
    assert tag_of("val", "img_per_s") == "epoch/img_per_s" and tag_of("val", "images") is None
    assert tag_of("resume", "step") is None and tag_of("bad_file", "path") is None


def test_write_after_close_is_an_error(tmp_path):
    tb = TensorBoardWriter(tmp_path)
    tb.close()
    with pytest.raises(ValueError, match="after close"):
        tb.write("train", step=1, loss=1.0)


def test_without_tensorboard_one_line_says_how_to_install(tmp_path, monkeypatch):
    # None in sys.modules makes `import` fail as if the package were not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(FastresError) as e:
        TensorBoardWriter(tmp_path)
    assert str(e.value) == "--tensorboard needs the tensorboard package: pip install fastres[tensorboard]"
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_a_real_run_with_tensorboard_has_its_metrics_as_events(tmp_path_factory):
    _data, run = short_run(tmp_path_factory)
    acc = read_events(run)
    for kind, field, tag in (("val", "top1", "val/top1"), ("val", "top5", "val/top5"), ("train", "lr", "train/lr")):
        want = [(r["step"], pytest.approx(r[field], rel=1e-6)) for r in records(run, kind)]
        assert [(s, v) for s, v, _ in scalars(acc, tag)] == want, tag
    want = [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in records(run, "train") if r["loss"] is not None]
    assert [(s, v) for s, v, _ in scalars(acc, "train/loss")] == want
