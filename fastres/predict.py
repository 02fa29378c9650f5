"""Classify images with a trained model: `python -m fastres.predict CHECKPOINT IMAGE...`.

    python -m fastres.predict runs/resnet50-20261123-101500/best.pt cat.jpg dog.png
    python -m fastres.predict runs/resnet50-20261123-101500 photos/        # every image under a folder
    python -m fastres.predict runs/resnet50-20261123-101500 --best --top 3 --json *.jpg

For each image: the top-k class names (the checkpoint's own class list) with their softmax
probabilities. Images go through the run's validation path (resize the shorter side to
size*256/224, central crop at the checkpoint's validation size, ImageNet normalisation).
An image that cannot be read gets one line on stderr and the others are still classified;
the exit status is then 1 (0 when every image was classified, 2 for a bad checkpoint or flag).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from fastres import FastresError
from fastres.data.folder import IMG_EXTENSIONS
from fastres.data.pil import load_rgb
from fastres.tools.cli import ToolParser, prog_name, run_tool
from fastres.tools.loading import Loaded, load_model, preprocess, tool_device

__all__ = ["Prediction", "expand_inputs", "main", "predict"]


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), most probable first

    def to_dict(self) -> dict:
        return {"image": self.path, "top": [{"class": c, "probability": p} for c, p in self.top]}


def expand_inputs(items: Iterable[str], on_error: Callable[[str], None]) -> list[str]:
    """Files as given; a folder becomes the image files under it, sorted. Problems go to on_error."""
    out: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
            if not found:
                on_error(f"{item}: a folder with no image files ({', '.join(IMG_EXTENSIONS)})")
            out.extend(found)
        elif not path.exists():
            on_error(f"{item}: no such file")
        else:
            out.append(item)
    return out


def predict(
    loaded: Loaded,
    paths: Iterable[str],
    top: int = 5,
    batch_size: int = 32,
    on_error: Callable[[str], None] = print,
) -> Iterator[Prediction]:
    """Predictions for the images at `paths`, in order; an image that cannot be decoded is
    reported to on_error (one line naming it) and skipped."""
    device = next(loaded.model.parameters()).device
    k = min(top, len(loaded.classes))

    def run(batch: list[tuple[str, object]]) -> Iterator[Prediction]:
        with torch.inference_mode():
            logits = loaded.model(preprocess([img for _, img in batch], loaded.image_size, device))
            probs, idx = logits.float().softmax(dim=1).topk(k, dim=1)
        for (path, _), p, i in zip(batch, probs.tolist(), idx.tolist()):
            yield Prediction(path, [(loaded.classes[c], q) for c, q in zip(i, p)])

    batch: list[tuple[str, object]] = []
    for path in paths:
        try:
            batch.append((path, load_rgb(path)))
        except FastresError as e:
            on_error(str(e))
            continue
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)


def build_parser() -> ToolParser:
    p = ToolParser("fastres.predict", description=__doc__)
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a checkpoint file, or a run folder (its newest checkpoint that verifies; with --best its best.pt)",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders (every image file under them)")
    p.add_argument("--best", action="store_true", help="with a run folder: use RUN/best.pt (the best val top-1)")
    p.add_argument(
        "--top", type=int, default=5, metavar="K", help="classes shown per image, most probable first (default: 5)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="images classified together: memory, not results (default: 32)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a GPU where torch sees one, else the CPU), cpu, cuda or cuda:N (default: auto)",
    )
    p.add_argument(
        "--json", action="store_true", help='one JSON object per image: {"image", "top": [{"class", "probability"}]}'
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = prog_name("fastres.predict")
    failed = 0

    def error(text: str) -> None:
        nonlocal failed
        failed += 1
        print(f"{prog}: error: {text}", file=sys.stderr, flush=True)

    def body() -> int:
        for flag in ("top", "batch_size"):
            if getattr(args, flag) < 1:
                raise FastresError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
        loaded = load_model(
            args.checkpoint, tool_device(args.device), best=args.best, say=lambda t: print(t, file=sys.stderr)
        )
        paths = expand_inputs(args.images, error)
        for pred in predict(loaded, paths, top=args.top, batch_size=args.batch_size, on_error=error):
            if args.json:
                print(json.dumps(pred.to_dict()), flush=True)
            else:
                lines = [pred.path] + [f"  {100 * p:6.2f}%  {name}" for name, p in pred.top]
                print("\n".join(lines), flush=True)
        return 1 if failed else 0

    return run_tool("fastres.predict", body)


if __name__ == "__main__":
    sys.exit(main())
