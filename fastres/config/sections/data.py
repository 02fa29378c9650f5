"""The data section: where the images are and how they are read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastres import IMAGENET_TRAIN_IMAGES
from fastres.config.key import Range, Section, key
from fastres.data.dataset import CHECK_DEPTHS
from fastres.data.loader import BACKENDS

__all__ = ["DataConfig"]


@dataclass
class DataConfig(Section):
    title: ClassVar[str] = "data"

    data: str | None = key(
        None,
        "dataset root in ImageNet layout (ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG) "
        "or a folder of shards from `python -m fastres.data shard`; none: the built-in dataset",
    )
    backend: str = key(
        "auto",
        "data loader: dali (NVIDIA DALI; GPU decode on a GPU), pytorch (PIL in DataLoader "
        "workers), synthetic (one random batch, for benchmarks), auto (dali where installed, else "
        "pytorch)",
        choices=tuple(BACKENDS),
    )
    workers: int = key(
        8,
        "loader worker processes (pytorch) or DALI threads, per training process; capped at the CPU count",
        Range("[", 0, 1024, "]"),
    )
    prefetch: int = key(2, "batches DALI prepares ahead of the training step", Range("[", 1, 64, "]"))
    hw_decoder_load: float = key(
        0.65, "share of JPEGs, 0 to 1, that DALI sends to the GPU's hardware JPEG decoder", Range("[", 0, 1, "]")
    )
    data_check: str = key(
        "header",
        "before training: none, header (open, size and JPEG end marker of every file: "
        "fast), or decode (decode every pixel: slow, finds every bad file)",
        choices=CHECK_DEPTHS,
    )
    skip_bad_files: bool = key(False, "train without the files the check finds bad, instead of refusing to start")
    image_size: int = key(224, "side of the square training crop, in pixels", Range("[", 16, 2048, "]"))
    val_image_size: int | None = key(
        None, "side of the square validation crop, in pixels; none: --image-size", Range("[", 16, 2048, "]")
    )
    crop_scale_min: float = key(
        0.08, "smallest area of a random-resized crop, as a fraction (0 to 1] of the image", Range("(", 0, 1, "]")
    )
    max_bad_samples: int | None = key(
        None,
        "undecodable samples (each replaced by a neutral substitute) in the "
        "training set, or in the validation set, before the run stops; none: 0.1%% of "
        "that set",
        Range("[", 0, 10**9, "]"),
    )
    train_list: str | None = key(
        None,
        "train only on the files this list names: `relative/path label` lines, "
        "relative to ROOT/train (the format `python -m fastres.data check --lists` writes, "
        "DALI's file_list)",
    )
    val_list: str | None = key(None, "validate only on the files this list names (same format, relative to ROOT/val)")
    train_images: int | None = key(
        None,
        "training images per epoch that --print-schedule assumes (ImageNet: "
        f"{IMAGENET_TRAIN_IMAGES}); none: those of the dataset the run trains on, counted "
        "as training counts them (training itself always does)",
        Range("[", 1, 1 << 40, "]"),
    )
