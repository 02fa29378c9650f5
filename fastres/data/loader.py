"""One entry point for every data backend: `make_loaders(cfg, device, rank, world)`.

Backends: `pytorch` (PIL decode in DataLoader workers). The DALI and synthetic backends
plug in here beside it, under the same contract: batches of (images, labels) on `device`,
images normalised NCHW-shaped in the configured dtype and memory format, labels int64
from classes sorted by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import torch

from fastres.data.builtin import ensure_builtin_dataset
from fastres.data.folder import DatasetError, scan_imagenet
from fastres.data.pil import DeviceLoader, ImageFolderDataset, ShardedSampler, collate_uint8
from fastres.data.transforms import RandomResizedCropFlip, ResizeCenterCrop

__all__ = ["Loaders", "DataConfig", "make_loaders", "BACKENDS"]


class DataConfig(Protocol):
    """The fields of the training config that the data layer reads."""

    data: str | None
    backend: str
    batch_size: int
    val_batch_size: int | None
    image_size: int
    val_image_size: int | None
    crop_scale_min: float
    workers: int
    seed: int


@dataclass
class Loaders:
    train: Iterable
    val: Iterable
    classes: tuple[str, ...]
    root: Path
    train_size: int  # images in the training split (all ranks)
    val_size: int


def _pytorch_loaders(cfg: DataConfig, root: Path, device: torch.device, dtype: torch.dtype,
                     channels_last: bool, rank: int, world: int) -> Loaders:
    train_split, val_split = scan_imagenet(root)
    if len(train_split) < cfg.batch_size * world:
        raise DatasetError(
            f"{root}/train has {len(train_split)} images, fewer than one global batch "
            f"({cfg.batch_size} x {world} processes): lower --batch-size"
        )
    train_tf = RandomResizedCropFlip(cfg.image_size, scale=(cfg.crop_scale_min, 1.0))
    val_tf = ResizeCenterCrop(cfg.val_image_size or cfg.image_size)
    workers = min(cfg.workers, os.cpu_count() or 1)
    common = dict(
        num_workers=workers,
        collate_fn=collate_uint8,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    train_sampler = ShardedSampler(len(train_split), shuffle=True, seed=cfg.seed, rank=rank, world=world)
    val_sampler = ShardedSampler(len(val_split), shuffle=False, rank=rank, world=world)
    train = torch.utils.data.DataLoader(
        ImageFolderDataset(train_split, train_tf), batch_size=cfg.batch_size, sampler=train_sampler,
        drop_last=True, prefetch_factor=4 if workers else None, **common,
    )
    val = torch.utils.data.DataLoader(
        ImageFolderDataset(val_split, val_tf), batch_size=cfg.val_batch_size or cfg.batch_size,
        sampler=val_sampler, drop_last=False, **common,
    )
    return Loaders(
        train=DeviceLoader(train, device, dtype, channels_last, len(train_sampler)),
        val=DeviceLoader(val, device, dtype, channels_last, len(val_sampler)),
        classes=train_split.classes,
        root=root,
        train_size=len(train_split),
        val_size=len(val_split),
    )


BACKENDS = {"pytorch": _pytorch_loaders}


def make_loaders(cfg: DataConfig, device: torch.device, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, rank: int = 0, world: int = 1) -> Loaders:
    """Train and val loaders for `cfg.data`, or for the built-in dataset when it is None."""
    if cfg.backend not in BACKENDS:
        raise DatasetError(f"unknown data backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    root = Path(cfg.data).expanduser() if cfg.data else ensure_builtin_dataset()
    return BACKENDS[cfg.backend](cfg, root, device, dtype, channels_last, rank, world)
