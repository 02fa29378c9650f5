"""Top-1 and top-5 of a trained model on a validation tree: `python -m fastres.eval CHECKPOINT_OR_RUN [--data ROOT]`.

    python -m fastres.eval runs/resnet50-20261123-101500 --data /data/imagenet          # the run's newest checkpoint
    python -m fastres.eval runs/resnet50-20261123-101500 --best --data /data/imagenet   # its best.pt
    python -m fastres.eval runs/r/checkpoints/step-000450450.pt --data /data/imagenet/val
    python -m fastres.eval runs/r                     # on the dataset the run trained on
    torchrun --standalone --nproc-per-node 8 -m fastres.eval runs/r --data /data/imagenet  # 8 GPUs

The model, the class names and the crop size are the checkpoint's; the images go through
the run's own validation path (resize the shorter side to size*256/224, central crop, the
same loader backend and precision as the run unless --backend / --precision say otherwise),
so a checkpoint evaluated on the run's validation split gives the accuracy the run logged.
The logged accuracy is shown beside the result only then: on the same folder (the run's
ROOT/val, no --val-list) and the same files (no bad file left out that the run kept);
otherwise the report says where it was measured and does not compare.
ROOT is an ImageNet-layout tree (ROOT/val/<class>/*) or one split folder (ROOT/<class>/*);
its class folders must be the checkpoint's classes, or the error names the difference.

Several processes (torchrun, srun, mpirun, as for training) each take a share of the images
and the counts are summed: every image is counted once. Before evaluating, rank 0 checks the
files as training does (--data-check) and refuses bad ones by name, or leaves them out with
--skip-bad-files.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fastres.data.dataset import CHECK_DEPTHS, check_depth, find_bad_files
from fastres.data.folder import DatasetError, FolderSplit, describe_skipped, existing_dir, scan_split
from fastres.data.loader import BACKENDS as LOADER_BACKENDS
from fastres.data.loader import ValLoaderOptions, resolve_backend, val_loader, without_files
from fastres.distributed import collectives as coll
from fastres.distributed import destroy, discover, init_distributed
from fastres.run.execution import DEVICES, PRECISIONS, Precision, pick_device, resolve_precision, use_channels_last
from fastres.run.validation import validate
from fastres.tools.cli import ToolParser, run_tool
from fastres.tools.loading import Loaded, find_checkpoint, load_model

__all__ = ["EvalResult", "evaluate", "main", "open_val_split"]

BACKENDS = tuple(b for b in LOADER_BACKENDS if b != "synthetic")  # eval reads images: auto, dali, pytorch


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float
    images: int  # counted over every rank
    skipped: int  # bad files left out (--skip-bad-files)
    val_dir: Path
    checkpoint: Loaded
    rank: int = 0  # this process's rank (only rank 0 reports)
    run_val_dir: Path | None = None  # where the run measured the accuracy it logged (None: not a plain folder)
    precision: Precision | None = None  # what the model computed in here, and why

    @property
    def same_split(self) -> bool:
        """Whether these are the images the run validated on, so that its logged accuracy compares."""
        cfg = self.checkpoint.config
        same_files = not self.skipped or bool(cfg.get("skip_bad_files"))
        return self.run_val_dir is not None and same_files and _same_path(self.val_dir, self.run_val_dir)

    def to_dict(self) -> dict:
        c = self.checkpoint
        return dict(
            checkpoint=str(c.path),
            arch=c.arch,
            step=c.step,
            epoch=c.epoch,
            data=str(self.val_dir),
            top1=self.top1,
            top5=self.top5,
            images=self.images,
            skipped=self.skipped,
            logged=c.val if self.same_split else None,  # only where it is the same measurement
            logged_on=str(self.run_val_dir) if self.run_val_dir else None,
            precision=self.precision.name if self.precision else None,
        )


def _class_difference(found: tuple[str, ...], expected: tuple[str, ...]) -> str:
    missing = [c for c in expected if c not in set(found)]
    extra = [c for c in found if c not in set(expected)]

    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    parts = [f"missing {some(missing)}" if missing else "", f"not in the checkpoint: {some(extra)}" if extra else ""]
    return "; ".join(p for p in parts if p) or "the same names in another label order"


def open_val_split(data: str | Path, classes: tuple[str, ...]) -> FolderSplit:
    """The images of ROOT/val (or of ROOT itself when it has no val/), labelled in the checkpoint's
    class order. Raises DatasetError naming the difference when the class folders are not `classes`."""
    root = existing_dir(data, "--data ")
    split_dir = root / "val" if (root / "val").is_dir() else root
    split = scan_split(split_dir)
    if split.classes != classes:
        raise DatasetError(
            f"--data {split_dir}: its {len(split.classes)} class folders are not the checkpoint's "
            f"{len(classes)} classes ({_class_difference(split.classes, classes)})"
        )
    return split


def _run_dataset(cfg: dict, say) -> Path:
    """The dataset the run trained on, as its checkpoint recorded it (a built-in dataset missing from
    there is written there again, saying so); a checkpoint whose config has no dataset path (None)
    gets the built-in dataset of this machine."""
    from fastres.data.builtin import ensure_builtin_dataset, rewrite_if_builtin

    if cfg.get("data"):
        rewrite_if_builtin(cfg["data"], say)
        say(f"fastres eval: on {cfg['data']}, the dataset the run trained on")
        return Path(cfg["data"])
    root = ensure_builtin_dataset(say=say)
    say(f"fastres eval: on the built-in dataset at {root} (the run trained on the built-in dataset)")
    return root


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def run_val_dir(cfg: dict) -> Path | None:
    """The folder the run validated on (its ROOT/val; the built-in dataset's when it had no --data), found
    without writing anything; None when the run's val split was a --val-list (a subset eval cannot name)."""
    if cfg.get("val_list"):
        return None
    if cfg.get("data"):
        return Path(cfg["data"]).expanduser() / "val"
    from fastres.data.builtin import VERSION, default_cache_dir

    return default_cache_dir() / VERSION / "val"


def _prepare(data: str, classes: tuple[str, ...], depth: str, skip_bad: bool, say) -> tuple[FolderSplit, int]:
    """Rank 0's listing of the split, without the bad files when asked (the other ranks get it)."""
    split = open_val_split(data, classes)
    skipped_entries = describe_skipped([split])
    if skipped_entries:
        say(skipped_entries)
    paths = [p for p, _ in split.samples]
    report = find_bad_files(paths, depth, skip_bad, "evaluate without them with --skip-bad-files")
    if report is None:
        return split, 0
    kept = without_files(split, report.bad_paths)
    say(f"fastres: leaving out {len(report.bad)} bad files (--skip-bad-files): {report.summary(3)}")
    return kept, len(report.bad)


def evaluate(
    target: str | Path,
    data: str | Path | None,
    *,
    best: bool = False,
    device: str = "auto",
    precision: str | None = None,
    backend: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    image_size: int | None = None,
    data_check: str = "header",
    skip_bad_files: bool = False,
    dist_timeout: float = 1800.0,
    say=print,
) -> EvalResult:
    """Top-1/top-5 of the checkpoint at `target` (a file or a run folder) on the split at `data` (None:
    the run's own dataset), on this process or on every process of a torchrun/srun/mpirun job (counts
    summed over ranks).

    None for precision, backend, batch_size, workers, image_size: the run's own settings."""
    check_depth(data_check)
    topology = discover()
    rank, world = topology.rank, topology.world_size
    say0 = say if rank == 0 else (lambda _text: None)
    dev = pick_device(device, topology)
    groups = init_distributed(topology, device=dev, timeout=dist_timeout) if topology.distributed else None
    loader = None
    try:
        if groups is None:
            loaded = load_model(target, "cpu", best=best, say=say0)
        else:  # rank 0 picks the file (a run folder's newest that verifies); every rank reads that one
            path = coll.rank0_first(groups, lambda: find_checkpoint(target, best=best, say=say0)[0])
            loaded = load_model(path, "cpu", say=say0)
        cfg = loaded.config
        chosen_precision = resolve_precision(precision or cfg.get("precision", "auto"), dev)
        if precision is None and cfg.get("precision", "auto") != "auto":  # the run's named precision
            chosen_precision = replace(chosen_precision, why=f"the run's {chosen_precision.why}")
        amp = chosen_precision.dtype
        channels_last = use_channels_last(cfg.get("channels_last"), dev)
        model = loaded.model.to(dev)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def prepare():
            return _prepare(str(data or _run_dataset(cfg, say0)), loaded.classes, data_check, skip_bad_files, say0)

        split, skipped = coll.rank0_first(groups, prepare)
        chosen = resolve_backend(backend or cfg.get("backend", "auto"))
        chosen = "pytorch" if chosen == "synthetic" else chosen  # a synthetic run still has real val images
        batch = batch_size or cfg.get("val_batch_size") or cfg.get("batch_size") or 256
        options = ValLoaderOptions(
            batch_size=batch, image_size=image_size or loaded.image_size,
            workers=cfg.get("workers", 8) if workers is None else workers, device=dev, channels_last=channels_last,
            rank=rank, world=world, seed=cfg.get("seed", 0), prefetch=cfg.get("prefetch", 2),
            hw_decoder_load=cfg.get("hw_decoder_load", 0.65),
        )  # fmt: skip
        loader = val_loader(split, chosen, options)
        result = validate(model, loader, dev, amp, groups, what="evaluation counts")
    except BaseException:
        if loader is not None:
            loader.close()
        destroy(groups, barrier=False)
        raise
    loader.close()
    destroy(groups)
    top1, top5, n = result.top1, result.top5, result.images
    if n != len(split):
        raise DatasetError(f"{split.root}: {n} images were evaluated of {len(split)} listed")  # a loader lost some
    return EvalResult(top1, top5, n, skipped, split.root, loaded, rank, run_val_dir(loaded.config), chosen_precision)


def _report(result: EvalResult) -> str:
    c = result.checkpoint
    line = (
        f"fastres eval: {c.describe()}: top-1 {result.top1:.2f}% top-5 {result.top5:.2f}% "
        f"on {result.images} images of {result.val_dir}"
    )
    if result.precision is not None:
        line += f" in {result.precision.name} ({result.precision.why})"
    if result.skipped:
        line += f" ({result.skipped} bad files left out)"
    if not (c.val and all(isinstance(c.val.get(k), (int, float)) for k in ("top1", "top5"))):
        return line
    if not result.same_split:
        where = result.run_val_dir or "its --val-list"
        line += f"\n  not compared with the accuracy the run logged: that was measured on {where}, not on these images"
    else:
        line += (
            f"\n  the run logged top-1 {c.val['top1']:.2f}% top-5 {c.val['top5']:.2f}% "
            f"after epoch {c.val.get('epoch', '?')} (before this checkpoint)"
        )
    return line


def build_parser() -> ToolParser:
    p = ToolParser("fastres.eval", description=__doc__)
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT_OR_RUN",
        help="a checkpoint file, or a run folder (its newest checkpoint that verifies; with --best its best.pt)",
    )
    p.add_argument(
        "--data",
        metavar="ROOT",
        help="ImageNet-layout tree (ROOT/val/<class>/*) or one split folder (ROOT/<class>/*) whose class folders "
        "are the checkpoint's classes (default: the dataset the run trained on; the built-in one when it had "
        "no --data)",
    )
    p.add_argument(
        "--best",
        action="store_true",
        help="with a run folder: evaluate RUN/best.pt, the checkpoint of "
        "the best val top-1, instead of the newest checkpoint",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto (one GPU per process where torch sees GPUs, else the CPU), cpu or cuda (default: auto)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="autocast precision: auto (bf16 on CUDA and on CPUs with native bf16, else fp32) or one named "
        "(default: the run's; a checkpoint evaluates in any of them)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="image loader: dali, pytorch (PIL) or auto "
        "(dali where installed) (default: the run's; pytorch for a synthetic-data run)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="images per process per step (default: the run's validation batch size)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="loader worker processes (PIL) or DALI threads per process, capped at the CPU count (default: the run's)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="side of the central crop in pixels (default: the run's validation crop)",
    )
    p.add_argument(
        "--data-check",
        choices=CHECK_DEPTHS,
        default="header",
        help="before evaluating: none, header "
        "(open, size and JPEG end marker of every file) or decode (every pixel) "
        "(default: header)",
    )
    p.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="leave out the files the check finds bad instead of refusing to start",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object (top1, top5, images, checkpoint, the accuracy the run logged)",
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="seconds a process waits for the others in a distributed evaluation (default: 1800)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        for flag in ("batch_size", "workers", "image_size"):
            value = getattr(args, flag)
            if value is not None and (value < (0 if flag == "workers" else 1) or value > 1 << 20):
                raise DatasetError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
        if not math.isfinite(args.dist_timeout) or args.dist_timeout <= 0:
            raise DatasetError(f"--dist-timeout must be > 0 seconds, got {args.dist_timeout}")
        result = evaluate(
            args.checkpoint,
            args.data,
            best=args.best,
            device=args.device,
            precision=args.precision,
            backend=args.backend,
            batch_size=args.batch_size,
            workers=args.workers,
            image_size=args.image_size,
            data_check=args.data_check,
            skip_bad_files=args.skip_bad_files,
            dist_timeout=args.dist_timeout,
            say=lambda text: print(text, file=sys.stderr if args.json else sys.stdout, flush=True),
        )
        if result.rank == 0:
            print(json.dumps(result.to_dict()) if args.json else _report(result), flush=True)
        return 0

    return run_tool("fastres.eval", body)


if __name__ == "__main__":
    sys.exit(main())
