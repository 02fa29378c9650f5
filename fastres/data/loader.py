"""One entry point for every data backend: `make_loaders(cfg, device, rank, world)`.

Backends, under one contract (batches of (images, labels) on `device`, images normalised
NCHW-shaped in the configured dtype and memory format, labels int64 from classes sorted by
name, `set_epoch`, `__len__`, `num_samples`):

- `dali`: NVIDIA DALI pipelines (fastres/data/dali.py), GPU decode on a GPU, CPU operators without.
- `pytorch`: PIL decode in torch DataLoader workers (fastres/data/pil.py).
- `synthetic`: random batches made once on the device; no decoding (benchmarks).
- `auto`: `dali` where nvidia.dali imports, else `pytorch`.

`exclude` names files to leave out (the bad files the dataset checker found).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from fastres.data.dataset import Dataset, open_dataset, train_steps
from fastres.data.folder import DatasetError, FolderSplit
from fastres.data.pil import DeviceLoader, ImageFolderDataset, ShardedSampler, collate_uint8
from fastres.data.transforms import RandomResizedCropFlip, ResizeCenterCrop

__all__ = ["Loaders", "DataConfig", "make_loaders", "BACKENDS", "SyntheticLoader", "resolve_backend", "train_steps"]


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
    prefetch: int
    hw_decoder_load: float


@dataclass
class Loaders:
    train: Iterable
    val: Iterable
    classes: tuple[str, ...]
    root: Path
    train_size: int  # images in the training split (all ranks)
    val_size: int

    def close(self) -> None:
        """Release worker processes and pipelines (safe to call twice)."""
        for loader in (self.train, self.val):
            close = getattr(loader, "close", None)
            if close is not None:
                close()


def _without(split: FolderSplit, exclude: frozenset[str]) -> FolderSplit:
    if not exclude:
        return split
    kept = tuple(s for s in split.samples if s[0] not in exclude)
    if not kept:
        raise DatasetError(f"{split.root}: every image is excluded as bad")
    return FolderSplit(split.root, split.classes, kept)


def _splits(cfg: DataConfig, dataset: Dataset, world: int, exclude: frozenset[str]) -> tuple[FolderSplit, FolderSplit]:
    train_split, val_split = _without(dataset.train, exclude), _without(dataset.val, exclude)
    if train_steps(len(train_split), world, cfg.batch_size) == 0:
        raise DatasetError(
            f"{dataset.root}/train has {len(train_split)} images, fewer than one global batch "
            f"({cfg.batch_size} x {world} processes): lower --batch-size"
        )
    return train_split, val_split


def _pytorch_loaders(
    cfg: DataConfig,
    dataset: Dataset,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
    rank: int,
    world: int,
    exclude: frozenset[str] = frozenset(),
) -> Loaders:
    train_split, val_split = _splits(cfg, dataset, world, exclude)
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
        ImageFolderDataset(train_split, train_tf),
        batch_size=cfg.batch_size,
        sampler=train_sampler,
        drop_last=True,
        prefetch_factor=4 if workers else None,
        **common,
    )
    val = torch.utils.data.DataLoader(
        ImageFolderDataset(val_split, val_tf),
        batch_size=cfg.val_batch_size or cfg.batch_size,
        sampler=val_sampler,
        drop_last=False,
        **common,
    )
    return Loaders(
        train=DeviceLoader(
            train,
            device,
            dtype,
            channels_last,
            len(train_sampler),
            steps=train_steps(len(train_split), world, cfg.batch_size),
        ),
        val=DeviceLoader(val, device, dtype, channels_last, len(val_sampler)),
        classes=train_split.classes,
        root=dataset.root,
        train_size=len(train_split),
        val_size=len(val_split),
    )


def _dali_loaders(
    cfg: DataConfig,
    dataset: Dataset,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
    rank: int,
    world: int,
    exclude: frozenset[str] = frozenset(),
) -> Loaders:
    from fastres.data.dali import DaliLoader, dali_threads

    common = dict(
        device=device,
        dtype=dtype,
        channels_last=channels_last,
        rank=rank,
        world=world,
        seed=cfg.seed,
        threads=dali_threads(cfg.workers),
        prefetch=getattr(cfg, "prefetch", 2),
        hw_decoder_load=getattr(cfg, "hw_decoder_load", 0.65),
    )
    root = dataset.root
    if dataset.shards:  # webdataset shards written by `python -m fastres.data shard`
        from fastres.data.shards import Shards

        train_src, val_src = Shards(root / "train"), Shards(root / "val")
        if train_src.classes != val_src.classes:
            raise DatasetError(f"{root}: train and val shards have different classes")
        if exclude:
            raise DatasetError(f"{root}: shards cannot leave files out; write them again without the bad files")
        classes = train_src.classes
    else:
        train_src, val_src = _splits(cfg, dataset, world, exclude)
        classes = train_src.classes
        train_src, val_src = train_src.samples, val_src.samples
    if train_steps(len(train_src), world, cfg.batch_size) == 0:
        raise DatasetError(
            f"{root}/train has {len(train_src)} images, fewer than one global batch "
            f"({cfg.batch_size} x {world} processes): lower --batch-size"
        )
    train = DaliLoader(train_src, True, cfg.batch_size, cfg.image_size, crop_scale_min=cfg.crop_scale_min, **common)
    val = DaliLoader(
        val_src, False, cfg.val_batch_size or cfg.batch_size, cfg.val_image_size or cfg.image_size, **common
    )
    return Loaders(train=train, val=val, classes=classes, root=root, train_size=len(train_src), val_size=len(val_src))


class SyntheticLoader:
    """`steps` batches of one random batch made once on the device: no decode, no copy.

    For benchmarks of the model and the step; the shape, dtype, layout and label range are
    those of the real loaders, the pixel statistics those of normalised images (N(0, 1))."""

    def __init__(
        self,
        steps: int,
        batch_size: int,
        size: int,
        classes: int,
        device: torch.device,
        dtype: torch.dtype,
        channels_last: bool,
        seed: int,
        num_samples: int | None = None,
    ):
        g = torch.Generator().manual_seed(seed)
        images = torch.randn(batch_size, 3, size, size, generator=g)
        labels = torch.randint(0, classes, (batch_size,), generator=g, dtype=torch.int64)
        memory = torch.channels_last if channels_last else torch.contiguous_format
        self.images = images.to(device=device, dtype=dtype).contiguous(memory_format=memory)
        self.labels = labels.to(device)
        self.steps = steps
        self.num_samples = steps * batch_size if num_samples is None else num_samples

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self._start = start_step

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        start, self._start = getattr(self, "_start", 0), 0
        for _ in range(start, self.steps):
            yield self.images, self.labels


def _synthetic_loaders(
    cfg: DataConfig,
    dataset: Dataset,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
    rank: int,
    world: int,
    exclude: frozenset[str] = frozenset(),
) -> Loaders:
    # The dataset's sizes and classes, so steps per epoch and the model's head match a real run.
    if dataset.shards:
        raise DatasetError(f"--data {dataset.root} holds webdataset shards: only --backend dali reads them")
    train_split, val_split = _splits(cfg, dataset, world, exclude)
    vb = cfg.val_batch_size or cfg.batch_size
    val_n = len(range(rank, len(val_split), world))
    common = dict(classes=len(train_split.classes), device=device, dtype=dtype, channels_last=channels_last)
    return Loaders(
        train=SyntheticLoader(
            train_steps(len(train_split), world, cfg.batch_size),
            cfg.batch_size,
            cfg.image_size,
            seed=cfg.seed * 1_000_003 + rank,
            **common,
        ),
        val=SyntheticLoader(
            math.ceil(val_n / vb),
            vb,
            cfg.val_image_size or cfg.image_size,
            seed=cfg.seed * 1_000_003 + rank + 1,
            **common,
        ),
        classes=train_split.classes,
        root=dataset.root,
        train_size=len(train_split),
        val_size=len(val_split),
    )


BACKENDS = {"auto": None, "dali": _dali_loaders, "pytorch": _pytorch_loaders, "synthetic": _synthetic_loaders}


def resolve_backend(name: str) -> str:
    """`auto` -> `dali` where nvidia.dali imports, else `pytorch`; other names unchanged."""
    if name == "auto":
        from fastres.data.dali import dali_available

        return "dali" if dali_available() else "pytorch"
    return name


def make_loaders(
    cfg: DataConfig,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    rank: int = 0,
    world: int = 1,
    exclude: frozenset[str] | set[str] = frozenset(),
    dataset: Dataset | None = None,
) -> Loaders:
    """Train and val loaders for `dataset` (by default `open_dataset(cfg.data)`: the built-in
    dataset when cfg.data is None).

    `exclude`: paths (as `scan_split` lists them) to leave out, e.g. the checker's bad files."""
    if cfg.backend not in BACKENDS:
        raise DatasetError(f"unknown data backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    dataset = open_dataset(cfg.data) if dataset is None else dataset
    backend = resolve_backend(cfg.backend)
    if backend != "dali" and dataset.shards:
        raise DatasetError(f"--data {dataset.root} holds webdataset shards: only --backend dali reads them")
    return BACKENDS[backend](cfg, dataset, device, dtype, channels_last, rank, world, frozenset(exclude))
