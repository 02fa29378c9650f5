"""The dataset checker and the trainer's pre-check, on planted bad and odd files."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastres.data import DatasetError, open_dataset
from fastres.data.builtin import ensure_builtin_dataset
from fastres.data.check import check_files, check_tree, read_file_list, write_file_list
from fastres.train import main

import tiny

BAD = {"truncated": "truncated", "zero": "zero bytes", "text": "not an image"}
ODD = {"cmyk": "CMYK", "gray": "grayscale", "png": "PNG under a JPEG name", "strip": "extreme size"}


def plant(folder: Path) -> dict[str, Path]:
    """Write one good, three bad and four odd-but-valid files named .JPEG into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    p = {name: folder / f"{name}.JPEG" for name in ("good", *BAD, *ODD)}
    rgb.save(p["good"], "JPEG", quality=90)
    data = p["good"].read_bytes()
    p["truncated"].write_bytes(data[: len(data) // 2])
    p["zero"].write_bytes(b"")
    p["text"].write_text("this is not an image\n")
    rgb.convert("CMYK").save(p["cmyk"], "JPEG", quality=90)
    rgb.convert("L").save(p["gray"], "JPEG", quality=90)
    rgb.save(p["png"], "PNG")
    rgb.resize((400, 12)).save(p["strip"], "JPEG", quality=90)
    return p


@pytest.mark.parametrize("decode", [False, True])
def test_every_planted_bad_file_is_found_and_odd_ones_are_kept(tmp_path, decode):
    files = plant(tmp_path)
    report = check_files([str(v) for v in files.values()], decode=decode)
    assert report.checked == 8
    bad = {Path(p).stem: why for p, why in report.bad}
    assert set(bad) == set(BAD)
    assert "zero bytes" in bad["zero"] and "not an image" in bad["text"] and "truncated" in bad["truncated"]
    odd = {Path(p).stem: why for p, why in report.odd}
    assert set(odd) == set(ODD)
    for name, what in ODD.items():
        assert what in odd[name]


def test_process_pool_gives_the_same_report(tmp_path, monkeypatch):
    import fastres.data.check as check

    files = [str(v) for v in plant(tmp_path).values()]
    serial = check_files(files)
    monkeypatch.setattr(check, "POOL_THRESHOLD", 0)
    pooled = check_files(files, workers=2)
    assert pooled.bad == serial.bad and pooled.odd == serial.odd


def tree_with_bad_files(base: Path) -> Path:
    root = ensure_builtin_dataset(base, train_per_class=4, val_per_class=2, workers=1)
    (root / "train" / "disc" / "disc_00001.JPEG").write_bytes(b"")
    data = (root / "val" / "ring" / "ring_00000.JPEG").read_bytes()
    (root / "val" / "ring" / "ring_00000.JPEG").write_bytes(data[:200])
    return root


def run_data_cli(*args: str, drop_root_reads: bool = False) -> subprocess.CompletedProcess:
    """`python -m fastres.data ARGS`. drop_root_reads: as root, without the capabilities that let
    root read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so permissions apply to it."""

    def drop():
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH (linux/capability.h)
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the process we exec
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    preexec = drop if drop_root_reads and os.geteuid() == 0 else None
    return subprocess.run(
        [sys.executable, "-m", "fastres.data", *args], capture_output=True, text=True, timeout=120, preexec_fn=preexec
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def data_cli_error(capsys, *args: str) -> str:
    """`python -m fastres.data ARGS` in this process (an uncaught exception fails the test):
    exit status 2 and one line on stderr."""
    from fastres.data.__main__ import main as data_main

    capsys.readouterr()
    assert data_main(list(args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="drops Linux capabilities when run as root")
def test_class_folder_without_read_permission_is_one_line(tmp_path):
    root = ensure_builtin_dataset(tmp_path, train_per_class=1, val_per_class=1, workers=1)
    folder = root / "train" / "disc"
    folder.chmod(0o000)
    try:
        line = one_line_error(run_data_cli("check", str(root), "--quiet", drop_root_reads=True))
    finally:
        folder.chmod(0o755)
    assert line.endswith(f"cannot read class folder {folder}: permission denied")


@pytest.mark.parametrize(
    "make, named",
    [
        (lambda r: (r / "train" / "zebra").symlink_to(r / "train" / "zebra"), "train/zebra"),  # a class folder
        (lambda r: (r / "val" / "ring" / "x.JPEG").symlink_to(r / "val" / "ring" / "x.JPEG"), "val/ring/x.JPEG"),
        (lambda r: (r / "a").symlink_to(r / "b") or (r / "b").symlink_to(r / "a"), "a"),  # a loop of two, as ROOT
    ],
)
def test_symbolic_link_loop_under_the_data_is_one_line(tmp_path, capsys, make, named):
    root = ensure_builtin_dataset(tmp_path, train_per_class=1, val_per_class=1, workers=1)
    make(root)
    target = root / "a" if named == "a" else root
    line = data_cli_error(capsys, "check", str(target), "--quiet")
    assert line.endswith(f"{root / named} is a symbolic link loop")
    if named != "a":
        with pytest.raises(DatasetError, match=f"{root / named} is a symbolic link loop"):
            open_dataset(str(root))


def test_lists_naming_a_file_is_one_line(tmp_path, capsys):
    root = ensure_builtin_dataset(tmp_path, train_per_class=1, val_per_class=1, workers=1)
    (tmp_path / "lists").write_text("a file")
    line = data_cli_error(capsys, "check", str(root), "--lists", str(tmp_path / "lists"), "--quiet")
    assert line.endswith(f"--lists {tmp_path / 'lists'} is a file, not a directory")


def test_cli_lists_bad_files_exits_1_and_writes_lists(tmp_path):
    root = tree_with_bad_files(tmp_path / "d")
    proc = run_data_cli("check", str(root), "--lists", str(tmp_path / "lists"), "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert "BAD" in proc.stdout and "disc_00001.JPEG: zero bytes" in proc.stdout and "ring_00000.JPEG" in proc.stdout
    train = read_file_list(tmp_path / "lists" / "train.txt", root / "train")
    val = read_file_list(tmp_path / "lists" / "val.txt", root / "val")
    assert len(train) == 39 and len(val) == 19
    assert str(root / "train" / "disc" / "disc_00001.JPEG") not in {p for p, _ in train}
    assert {label for _, label in train} == set(range(10))


def test_cli_exits_0_on_a_good_tree_and_2_on_a_missing_root(tmp_path):
    root = ensure_builtin_dataset(tmp_path, train_per_class=2, val_per_class=1, workers=1)
    proc = run_data_cli("check", str(root), "--quiet")
    assert proc.returncode == 0 and "30 files header-checked: 0 bad" in proc.stdout
    proc = run_data_cli("check", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "missing does not exist" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "noclass").mkdir()
    proc = run_data_cli("check", str(tmp_path / "noclass"))
    assert proc.returncode == 2 and "has no class folders" in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_bad(tmp_path):
    p = plant(tmp_path)["good"]
    p.chmod(0)
    try:
        assert "cannot read" in check_files([str(p)]).bad[0][1]
    finally:
        p.chmod(0o644)


def test_file_list_round_trip(tmp_path):
    root = ensure_builtin_dataset(tmp_path, train_per_class=2, val_per_class=1, workers=1)
    splits, _ = check_tree(root)
    write_file_list(splits["train"], tmp_path / "t.txt")
    assert read_file_list(tmp_path / "t.txt", root / "train") == list(splits["train"].samples)


TINY = [*tiny.TINY, "--epochs", "1", "--backend", "pytorch"]


def test_trainer_refuses_bad_files_before_training(tmp_path, capsys):
    root = tree_with_bad_files(tmp_path / "d")
    assert main(["--data", str(root), *TINY, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 60 files cannot be decoded" in err[0] and "disc_00001.JPEG (zero bytes)" in err[0]
    assert "--skip-bad-files" in err[0]
    assert not (tmp_path / "runs").exists()


def test_trainer_skips_bad_files_when_asked(tmp_path, capsys):
    root = tree_with_bad_files(tmp_path / "d")
    assert main(["--data", str(root), *TINY, "--out", str(tmp_path / "runs"), "--skip-bad-files", "--name", "r"]) == 0
    out = capsys.readouterr().out
    assert "skipping 2 bad files" in out and "39 train / 19 val images" in out


def test_trainer_reads_webdataset_shards(tiny_data, tmp_path, capsys):
    pytest.importorskip("nvidia.dali")
    from fastres.data.__main__ import main as data_main

    root = tiny_data
    assert data_main(["shard", str(root), str(tmp_path / "wds"), "--shard-size", "16"]) == 0
    tiny = [a if a != "pytorch" else "dali" for a in TINY]
    assert main(["--data", str(tmp_path / "wds"), *tiny, "--out", str(tmp_path / "runs"), "--name", "w"]) == 0
    assert "40 train / 20 val images, 10 classes" in capsys.readouterr().out
    assert main(["--data", str(tmp_path / "wds"), *TINY, "--out", str(tmp_path / "runs")]) == 2
    assert "only --backend dali reads them" in capsys.readouterr().err
