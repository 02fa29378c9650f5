"""fastres's built-in dataset: small, real JPEG files in ImageNet layout, made once.

`python -m fastres.train` with no `--data` trains on this. It is written deterministically
(the same bytes on every machine with the same Pillow) under `$FASTRES_DATA`, or
`~/.cache/fastres` when that is unset, as

    <cache>/shapes-v1/train/<class>/<class>_<index>.JPEG
    <cache>/shapes-v1/val/<class>/<class>_<index>.JPEG

so every loader that reads ImageNet reads it too (the PIL path, DALI's file reader, the
dataset checker).

Ten classes of drawn shapes. What varies within a class, so that colour or position alone
predicts nothing: image size (64-160 px a side, any aspect), shape size, position and
rotation, fill colour and background colour (independent hues; the shape is the lighter),
background style (flat, gradient, stripes, blotches), distractor lines, pixel noise and
JPEG quality. A CNN must learn outlines: chance is 10%, and the classes come in
confusable pairs (disc/ring, square/frame, circle/hexagon, plus/star).

The tree is written to a temporary folder and renamed into place, so processes that start
together (one per GPU) never read a half-written dataset.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CLASSES",
    "VERSION",
    "builtin_root",
    "builtin_sizes",
    "cache_folders",
    "default_cache_dir",
    "ensure_builtin_dataset",
    "rewrite_if_builtin",
    "render_image",
]

VERSION = "shapes-v1"
CLASSES = (
    "arrow",
    "crescent",
    "disc",
    "frame",
    "hexagon",
    "plus",
    "ring",
    "square",
    "star",
    "triangle",
)
TRAIN_PER_CLASS = 600
VAL_PER_CLASS = 100
_SUPERSAMPLE = 2  # shapes are drawn at 2x and downsampled: anti-aliased edges


def default_cache_dir() -> Path:
    env = os.environ.get("FASTRES_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fastres"


def cache_folders() -> list[Path]:
    """Where fastres writes the small files it makes once and reuses, in order of preference: its
    cache folder ($FASTRES_DATA, else ~/.cache/fastres), then the temporary folder's fastres/ (a
    read-only home)."""
    return [default_cache_dir(), Path(tempfile.gettempdir()) / "fastres"]


def _polygon(cx: float, cy: float, radii, angles) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)]


def _regular(cx, cy, r, n, rot):
    angles = [rot + 2 * math.pi * k / n for k in range(n)]
    return _polygon(cx, cy, [r] * n, angles)


def _rotated(points, cx, cy, rot):
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    name: str,
    cx: float,
    cy: float,
    r: float,
    rot: float,
    fg: tuple,
    bg_fill: tuple,
    rng: np.random.Generator,
) -> None:
    """Draw class `name` centred at (cx, cy), fitting a circle of radius r."""
    if name == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif name == "ring":
        inner = r * rng.uniform(0.45, 0.7)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=bg_fill)
    elif name == "square":
        draw.polygon(_regular(cx, cy, r, 4, rot), fill=fg)
    elif name == "frame":
        draw.polygon(_regular(cx, cy, r, 4, rot), fill=fg)
        draw.polygon(_regular(cx, cy, r * rng.uniform(0.5, 0.72), 4, rot), fill=bg_fill)
    elif name == "triangle":
        draw.polygon(_regular(cx, cy, r, 3, rot), fill=fg)
    elif name == "hexagon":
        draw.polygon(_regular(cx, cy, r, 6, rot), fill=fg)
    elif name == "star":
        inner = r * rng.uniform(0.38, 0.5)
        angles = [rot + math.pi * k / 5 for k in range(10)]
        draw.polygon(_polygon(cx, cy, [r, inner] * 5, angles), fill=fg)
    elif name == "plus":
        w = r * rng.uniform(0.28, 0.42)
        pts = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
        draw.polygon(_rotated([(cx + x, cy + y) for x, y in pts], cx, cy, rot), fill=fg)
    elif name == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
        off = r * rng.uniform(0.35, 0.6)
        ox, oy = cx + off * math.cos(rot), cy + off * math.sin(rot)
        rr = r * rng.uniform(0.8, 0.95)
        draw.ellipse((ox - rr, oy - rr, ox + rr, oy + rr), fill=bg_fill)
    elif name == "arrow":
        shaft = r * rng.uniform(0.18, 0.3)
        head = r * rng.uniform(0.55, 0.75)
        neck = r * rng.uniform(0.0, 0.35)
        pts = [(-r, -shaft), (neck, -shaft), (neck, -head), (r, 0), (neck, head), (neck, shaft), (-r, shaft)]
        draw.polygon(_rotated([(cx + x, cy + y) for x, y in pts], cx, cy, rot), fill=fg)
    else:  # pragma: no cover - CLASSES and this function change together
        raise ValueError(f"unknown shape {name!r}")


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3)


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _contrasting_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Independent fill and background colours; the fill's luma exceeds the background's by 80/255.

    Hue is free, polarity is fixed: with either polarity allowed, ResNets spend their first
    few hundred steps learning polarity-invariant edges, more than a 10-minute CPU budget.
    """
    while True:
        fg, bg = _colour(rng), _colour(rng)
        if _luma(fg) - _luma(bg) >= 80:
            return fg, bg


def _background(w: int, h: int, bg: np.ndarray, rng: np.random.Generator) -> Image.Image:
    style = rng.integers(0, 4)
    base = np.empty((h, w, 3), np.float32)
    base[:] = bg
    if style == 1:  # linear gradient towards a shifted colour
        other = np.clip(bg + rng.normal(0, 40, 3), 0, 255)
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        t = t[None, :, None] if t.size == w else t[:, None, None]
        base = base * (1 - t) + other * t
    elif style == 2:  # soft stripes
        period = rng.uniform(6, 20)
        ang = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
        base += wave[..., None] * rng.uniform(5, 15)
    elif style == 3:  # low-frequency blotches
        small = rng.normal(0, 15, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
        blot = (
            np.asarray(
                Image.fromarray(np.clip(small + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                np.float32,
            )
            - 128
        )
        base += blot
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def render_image(cls: int, seed: int) -> Image.Image:
    """The image of class index `cls` made from `seed`: a pure function of its arguments."""
    rng = np.random.default_rng([seed, cls])
    w, h = (int(v) for v in rng.integers(64, 161, size=2))
    fg, bg = _contrasting_pair(rng)
    s = _SUPERSAMPLE
    img = _background(w * s, h * s, bg, rng)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(0, 3)):  # distractor lines in the background
        c = tuple(int(v) for v in np.clip(bg + rng.normal(0, 50, 3), 0, 255))
        x0, y0, x1, y1 = rng.uniform(0, 1, 4) * [w * s, h * s, w * s, h * s]
        draw.line((x0, y0, x1, y1), fill=c, width=int(rng.integers(1, 3) * s))
    r = rng.uniform(0.3, 0.46) * min(w, h) * s
    cx, cy = rng.uniform(r, w * s - r), rng.uniform(r, h * s - r)
    # Colour of the "holes" (ring, frame, crescent): the local background, never the fill.
    hole = tuple(int(v) for v in img.getpixel((int(cx), int(cy))))
    _draw_shape(draw, CLASSES[cls], cx, cy, r, rng.uniform(0, 2 * math.pi), tuple(int(v) for v in fg), hole, rng)
    img = img.resize((w, h), Image.LANCZOS)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(2, 6), (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _write_class(args) -> int:
    root, split, cls, count, seed_base = args
    folder = Path(root) / split / CLASSES[cls]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        seed = seed_base + i
        img = render_image(cls, seed)
        quality = 70 + (seed * 7919 + cls) % 26  # 70-95, deterministic
        img.save(folder / f"{CLASSES[cls]}_{i:05d}.JPEG", format="JPEG", quality=quality)
    return count


def _write_tree(root: Path, train_per_class: int, val_per_class: int, workers: int) -> None:
    jobs = []
    for cls in range(len(CLASSES)):
        # Disjoint seed ranges per split: no val image is a copy of a train image.
        jobs.append((str(root), "train", cls, train_per_class, 0))
        jobs.append((str(root), "val", cls, val_per_class, 1_000_000))
    if workers <= 1:
        for j in jobs:
            _write_class(j)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_class, jobs))


def builtin_root(
    cache_dir: str | os.PathLike | None = None,
    train_per_class: int = TRAIN_PER_CLASS,
    val_per_class: int = VAL_PER_CLASS,
) -> Path:
    """Where the built-in dataset of these sizes lives (written or not): <cache>/shapes-v1, or
    <cache>/shapes-v1-<train>-<val> for other sizes, so a small test copy never passes for the real one."""
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    sizes = (train_per_class, val_per_class)
    return base / (VERSION if sizes == (TRAIN_PER_CLASS, VAL_PER_CLASS) else f"{VERSION}-{sizes[0]}-{sizes[1]}")


def builtin_sizes(root: str | os.PathLike) -> tuple[int, int] | None:
    """(train, val) images per class when `root` names a built-in dataset folder (written or not), else None."""
    name = Path(root).name
    if name == VERSION:
        return TRAIN_PER_CLASS, VAL_PER_CLASS
    parts = name.removeprefix(VERSION + "-").split("-")
    if name.startswith(VERSION + "-") and len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def rewrite_if_builtin(data: str | os.PathLike, say=None) -> None:
    """Write the built-in dataset at `data` when that path names one (builtin_root) and is not there:
    a run records its built-in dataset's path, and a later resume or eval finds it even after its
    cache was cleared or $FASTRES_DATA changed. A folder that exists is never touched."""
    sizes = builtin_sizes(data)
    if sizes is not None and not os.path.exists(data):
        ensure_builtin_dataset(Path(data).parent, *sizes, say=say)


def ensure_builtin_dataset(
    cache_dir: str | os.PathLike | None = None,
    train_per_class: int = TRAIN_PER_CLASS,
    val_per_class: int = VAL_PER_CLASS,
    workers: int | None = None,
    say=None,
) -> Path:
    """Return the root of the built-in dataset, writing it first if it is not there yet.

    The default sizes give 6,000 train and 1,000 val images (about 25 MB) at builtin_root().
    `say`: told where the dataset is written, before it is (a few seconds)."""
    root = builtin_root(cache_dir, train_per_class, val_per_class)
    base, name = root.parent, root.name
    if (root / ".complete").exists():
        return root
    if say is not None:
        images = len(CLASSES) * (train_per_class + val_per_class)
        say(f"fastres: writing the built-in dataset ({images:,} JPEGs, once) to {root}")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
    try:
        _write_tree(tmp, train_per_class, val_per_class, workers or min(4, os.cpu_count() or 1))
        (tmp / ".complete").write_text(f"{VERSION} {train_per_class} {val_per_class}\n")
        try:
            os.rename(tmp, root)
        except OSError:
            # Another process finished first (or a stale, incomplete tree is in the way).
            if not (root / ".complete").exists():
                shutil.rmtree(root, ignore_errors=True)
                os.rename(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
