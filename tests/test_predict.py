"""python -m fastres.predict: after a short run, the built-in dataset's training images get their own
classes far above chance; a bad image is one line and the others are still classified."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from trained import short_run

from fastres.eval import evaluate
from fastres.predict import predict
from fastres.tools.loading import load_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return short_run(tmp_path_factory)


def test_classes_of_the_training_images_far_above_chance(trained):
    data, run = trained
    loaded = load_model(run)
    images = sorted((data / "train").glob("*/*.JPEG"))
    preds = list(predict(loaded, map(str, images), top=5, batch_size=7, on_error=pytest.fail))
    assert [p.path for p in preds] == list(map(str, images))
    for p in preds:
        probs = [q for _, q in p.top]
        assert len(p.top) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert {c for c, _ in p.top} <= set(loaded.classes)
    hits = sum(p.top[0][0] == Path(p.path).parent.name for p in preds)
    # 40 images of 10 classes: chance is 4 hits, and 12 or more by luck has probability < 0.001
    assert hits >= 12, f"{hits} of {len(preds)} training images classified right"
    # the same model through fastres.eval's loader counts the same hits
    assert evaluate(run, data / "train", workers=0, say=lambda _: None).top1 == pytest.approx(100 * hits / len(preds))


def run_predict(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastres.predict", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_bad_images_get_one_line_each_and_the_rest_are_classified(trained, tmp_path):
    data, run = trained
    good = sorted((data / "val" / "disc").glob("*.JPEG"))
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    shutil.copy(good[0], tmp_path / "truncated.JPEG")
    (tmp_path / "truncated.JPEG").write_bytes((tmp_path / "truncated.JPEG").read_bytes()[:300])
    args = [str(good[0]), str(not_image), str(tmp_path / "missing.png"), str(tmp_path / "truncated.JPEG"), str(good[1])]
    proc = run_predict(str(run), *args, "--top", "3", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("python -m fastres.predict: error: ") for e in errors), errors
    assert f"cannot decode image {not_image}" in errors[1] and "missing.png: no such file" in errors[0]
    assert "truncated.JPEG" in errors[2] and "Traceback" not in proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["image"] for o in out] == [str(good[0]), str(good[1])]
    assert all(len(o["top"]) == 3 and set(o["top"][0]) == {"class", "probability"} for o in out)


def test_a_folder_is_every_image_under_it_and_text_output(trained, tmp_path):
    data, run = trained
    proc = run_predict(str(run), str(data / "val" / "star"), "--top", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("star_00000.JPEG") and lines[3].endswith("star_00001.JPEG") and len(lines) == 6
    assert lines[1].strip().endswith(tuple(load_model(run).classes)) and lines[1].strip()[-1] != "%"


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda d: [str(d / "x.jpg"), str(d / "x.jpg")], "x.jpg: not a fastres checkpoint"),
        (lambda d: [str(d), str(d / "x.jpg")], "holds no checkpoint that verifies"),
        (lambda d: [str(d / "nope"), str(d / "x.jpg")], "nope does not exist"),
    ],
)
def test_bad_checkpoint_is_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff")
    proc = run_predict(*args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
