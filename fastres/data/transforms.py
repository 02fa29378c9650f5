"""The ImageNet augmentations of the PIL path, written with Pillow and NumPy (no torchvision).

Train: random-resized crop (area 8%-100%, aspect 3/4-4/3, Szegedy et al. 2015 as used by
every reference run) and horizontal flip. Val: resize the shorter side to size*256/224,
then center crop. Both return uint8 HWC arrays; normalisation happens once per batch on
the training device (`normalize_batch`), which moves 4x fewer bytes than float images.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RandomResizedCropFlip",
    "ResizeCenterCrop",
    "random_resized_crop_box",
    "normalize_batch",
]

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: random.Random
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop: area fraction in `scale`, aspect in `ratio`.

    Ten tries at a log-uniform aspect; if none fits, a center crop clamped to `ratio`
    (the same rule as torchvision's RandomResizedCrop, so augmentation strength matches).
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class RandomResizedCropFlip:
    """Random-resized crop to size x size and a coin-flip mirror, in one Pillow resample."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size, self.scale, self.ratio, self.flip = size, tuple(scale), tuple(ratio), flip

    def __call__(self, img: Image.Image, rng: random.Random) -> np.ndarray:
        box = random_resized_crop_box(img.width, img.height, self.scale, self.ratio, rng)
        out = img.resize((self.size, self.size), Image.BILINEAR, box=box)
        if self.flip and rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(out, dtype=np.uint8)


class ResizeCenterCrop:
    """Resize the shorter side to round(size / crop_ratio), then take the central size x size."""

    def __init__(self, size: int, crop_ratio: float = 224 / 256):
        self.size = size
        self.resize_to = int(round(size / crop_ratio))

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> np.ndarray:
        w, h = img.size
        scale = self.resize_to / min(w, h)
        nw, nh = max(self.size, int(round(w * scale))), max(self.size, int(round(h * scale)))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return np.asarray(img.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)


_STATS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _stats_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and 1/std tensors on `device`, made once per device (a tensor made from a Python
    list on a GPU is a pageable host copy, a sync, every batch)."""
    stats = _STATS.get(device)
    if stats is None:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
        inv_std = 1.0 / torch.tensor(IMAGENET_STD, dtype=torch.float32)
        stats = _STATS[device] = (mean.to(device), inv_std.to(device))
    return stats


def normalize_batch(
    images: torch.Tensor, dtype: torch.dtype = torch.float32, channels_last: bool = False
) -> torch.Tensor:
    """uint8 NHWC -> (x - mean) / std as `dtype`, NCHW shape, in channels_last memory if asked.

    Runs on whatever device `images` is on; on a GPU that is where it should be.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 NHWC with 3 channels, got {images.dtype} {tuple(images.shape)}")
    mean, inv_std = _stats_on(images.device)
    x = (images.float() - mean) * inv_std  # NHWC
    x = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: this *is* channels_last
    if not channels_last:
        x = x.contiguous()
    return x.to(dtype)
