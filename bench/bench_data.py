"""Decode + augment throughput on the CPU: DALI's CPU pipeline vs torch DataLoader + PIL.

    python bench/bench_data.py                      # writes bench/results/data-cpu.json
    python bench/bench_data.py --images 256 --rounds 2

Writes ImageNet-like JPEGs first (about 500x375, quality 90: the built-in dataset's drawn
shapes, upscaled, so they have edges and texture, not noise), then, in the same run:

- ceiling: one core decoding with Pillow (libjpeg-turbo), `Image.open(...).convert("RGB")`,
  no augmentation; times the number of cores, the most any CPU loader can reach;
- DALI train pipeline (fastres.data.dali.DaliLoader, CPU operators, `--threads` threads):
  decode with fused random-resized crop -> resize 224 -> flip + normalise, fp32 NCHW;
- torch DataLoader + PIL (fastres's pytorch backend: the same crop/flip/normalise), with
  `--threads` worker processes;
- the same two at the built-in preset's setting (the built-in dataset's 64-160 px JPEGs,
  48 px crops, batch 64), which decides the `builtin` preset's backend.

Each loader runs whole epochs, alternating DALI / PIL `--rounds` times (another process may
share the CPU: alternating spreads that over both); the best round of each is reported.
The result is checked first: both loaders must yield every image with the right shape.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fastres.data.builtin import CLASSES, ensure_builtin_dataset, render_image  # noqa: E402
from fastres.data.dali import DaliLoader, DaliOptions  # noqa: E402
from fastres.data.folder import scan_split  # noqa: E402
from fastres.data.pil import DeviceLoader, ImageFolderDataset, ShardedSampler, collate_uint8  # noqa: E402
from fastres.data.transforms import RandomResizedCropFlip  # noqa: E402

from machine import describe  # noqa: E402

CPU = torch.device("cpu")


def write_imagenet_like(folder: Path, n: int) -> None:
    for i in range(n):
        cls = i % len(CLASSES)
        path = folder / CLASSES[cls] / f"{i:05d}.JPEG"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        w, h = (500, 375) if i % 4 else (375, 500)  # ImageNet's common sizes, both orientations
        img = render_image(cls, 10_000 + i).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img, np.int16) + np.random.default_rng(i).integers(-6, 7, (h, w, 3))  # sensor-like grain
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def decode_rate_one_core(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as img:
            img.convert("RGB")
    return len(paths) / (time.perf_counter() - t0)


def pil_loader(samples, batch, size, scale_min, workers):
    split = type("S", (), {"samples": tuple(samples)})()
    sampler = ShardedSampler(len(samples), shuffle=True, seed=0)
    dl = torch.utils.data.DataLoader(
        ImageFolderDataset(split, RandomResizedCropFlip(size, scale=(scale_min, 1.0))),
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        collate_fn=collate_uint8,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
    return DeviceLoader(dl, CPU, torch.float32, False, len(sampler))


def epoch_rate(loader, batch, size) -> float:
    t0 = time.perf_counter()
    n = 0
    for x, y in loader:
        assert x.shape == (batch, 3, size, size) and x.dtype == torch.float32 and y.dtype == torch.int64
        n += y.numel()
    assert n == len(loader) * batch, (n, len(loader))
    return n / (time.perf_counter() - t0)


def compare(samples, batch, size, scale_min, threads, rounds) -> dict:
    dali = DaliLoader(
        samples,
        DaliOptions(
            train=True, batch_size=batch, size=size, device=CPU, threads=threads, crop_scale_min=scale_min, prefetch=2
        ),
    )
    pil = pil_loader(samples, batch, size, scale_min, threads)
    epoch_rate(dali, batch, size)  # warm-up: pipeline build, worker start, page cache
    epoch_rate(pil, batch, size)
    d, p = [], []
    for _ in range(rounds):
        d.append(epoch_rate(dali, batch, size))
        p.append(epoch_rate(pil, batch, size))
    return {
        "images_per_epoch": len(dali) * batch,
        "batch": batch,
        "crop": size,
        "threads": threads,
        "dali_img_s": max(d),
        "pil_img_s": max(p),
        "dali_rounds": d,
        "pil_rounds": p,
        "dali_over_pil": max(d) / max(p),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512, help="ImageNet-like JPEGs to write and read")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="DALI threads = PIL worker processes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "fastres-bench-data"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "data-cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # the loaders' threads/workers do the work; keep the main thread's normalise light

    folder = Path(args.data) / f"imagenet-like-{args.images}"
    write_imagenet_like(folder, args.images)
    split = scan_split(folder)
    paths = [p for p, _ in split.samples]
    with Image.open(paths[0]) as img:
        assert img.size in ((500, 375), (375, 500))
    decode_rate_one_core(paths[:32])  # warm the page cache
    one_core = max(decode_rate_one_core(paths) for _ in range(2))
    result = {
        "machine": describe(
            dali=__import__("nvidia.dali", fromlist=["__version__"]).__version__, pillow=Image.__version__
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "imagenet_like": {"images": len(paths), "size": "500x375 / 375x500", "quality": 90},
        "ceiling_pil_decode_one_core_img_s": one_core,
        "ceiling_decode_all_cores_img_s": one_core * (os.cpu_count() or 1),
    }
    result["imagenet_224"] = compare(split.samples, 64, 224, 0.08, args.threads, args.rounds)
    builtin = scan_split(ensure_builtin_dataset() / "train")
    result["builtin_48"] = compare(builtin.samples[::2], 64, 48, 0.25, args.threads, args.rounds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    r, b = result["imagenet_224"], result["builtin_48"]
    print(
        f"ceiling: PIL decode, one core {one_core:.0f} img/s (x{os.cpu_count()} cores: "
        f"{result['ceiling_decode_all_cores_img_s']:.0f})"
    )
    print(
        f"ImageNet-like 500x375 -> 224, {args.threads} threads/workers: DALI CPU {r['dali_img_s']:.0f} img/s, "
        f"PIL DataLoader {r['pil_img_s']:.0f} img/s, DALI {r['dali_over_pil']:.2f}x"
    )
    print(
        f"built-in 64-160 px -> 48: DALI CPU {b['dali_img_s']:.0f} img/s, PIL DataLoader {b['pil_img_s']:.0f} img/s, "
        f"DALI {b['dali_over_pil']:.2f}x"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
