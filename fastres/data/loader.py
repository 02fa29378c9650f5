"""One entry point for every data backend: `make_loaders(cfg, device, rank, world)`.

Backends, under one contract (batches of (images, labels) on `device`, images normalised
NCHW-shaped in the configured dtype and memory format, labels int64 from classes sorted by
name, `set_epoch`, `__len__`, `num_samples`, `take_new_bad`):

- `dali`: NVIDIA DALI pipelines (fastres/data/dali.py), GPU decode on a GPU, CPU operators without.
- `pytorch`: PIL decode in torch DataLoader workers (fastres/data/pil.py).
- `synthetic`: random batches made once on the device; no decoding (benchmarks).
- `auto`: `dali` where nvidia.dali imports, else `pytorch`.

`exclude` names files to leave out (the bad files the dataset checker found, before training).

Files that cannot be decoded during training (fastres/data/bad.py). The interface with the
trainer:

    loaders = make_loaders(cfg, device, ..., known_bad=frozenset(p for p, _ in read_bad_list(RUN/bad_files.txt)))
    for images, labels in loaders.train:
        ...
        new = loaders.train.take_new_bad()   # [(path, reason)]: cheap, [] when nothing happened
        # the trainer: append_bad_list(RUN/bad_files.txt, new), log each, count them, and stop with
        # a clear message past cfg.max_bad_samples (None: max_bad_default(loaders.train_size))
    ... validation ...; loaders.val.take_new_bad()

- A file that fails to decode does not stop the run on any backend: its sample becomes the
  substitute (a uniform image of the ImageNet mean colour rounded to 8 bits, (124, 116, 104):
  within 0.01 of zero after normalisation; with the sample's own label) at the same position
  of the same batch. The order of the other samples and the batch size are unchanged.
- `known_bad`: files listed by earlier attempts (paths as the dataset lists them; matched
  after os.path.abspath too). Loaders substitute them without decoding them, in the same
  place and with the same bits as when a file is found bad now, so a resumed run sees
  exactly the batches an uninterrupted run sees (within one backend: the PIL loader fills
  the array directly, DALI decodes a PNG of that colour through its crop and resize).
- `take_new_bad()` on the train and val loader of every backend: (path, reason) for the
  files found bad since the last call on this process, each file once. Files in `known_bad`
  are never reported again. The synthetic backend decodes nothing: always [].
- PIL: the worker that meets the file returns the substitute and names the file with the
  batch; DALI: the loader names the file from DALI's error (or finds it by decoding the next
  samples one by one), rebuilds the pipeline with the substitute at its index of the file
  list, restores DALI's checkpoint of the last batch it delivered and continues. No DALI
  traceback reaches the user for a bad file. Webdataset shards cannot take a substitute: a
  bad sample in a shard is a one-line error saying to write the shards again.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from fastres.data.dataset import Dataset, batches_per_epoch, open_dataset, train_steps
from fastres.data.folder import DatasetError, FolderSplit
from fastres.data.pil import DeviceLoader, ImageFolderDataset, ShardedSampler, collate_uint8
from fastres.data.transforms import RandomResizedCropFlip, ResizeCenterCrop

__all__ = [
    "Loaders",
    "LoaderOptions",
    "ValLoaderOptions",
    "DataConfig",
    "make_loaders",
    "BACKENDS",
    "SyntheticLoader",
    "known_in",
    "resolve_backend",
    "train_steps",
    "val_loader",
    "without_files",
]


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
    train_list: str | None
    val_list: str | None


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


@dataclass(frozen=True)
class LoaderOptions:
    """What every backend builds its train and val loaders from, resolved once by make_loaders."""

    cfg: DataConfig
    dataset: Dataset
    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    rank: int = 0
    world: int = 1
    exclude: frozenset[str] = frozenset()  # paths to leave out (the checker's bad files)
    known_bad: frozenset[str] = frozenset()  # paths earlier attempts found undecodable: substituted

    @property
    def val_batch_size(self) -> int:
        return self.cfg.val_batch_size or self.cfg.batch_size

    @property
    def val_image_size(self) -> int:
        return self.cfg.val_image_size or self.cfg.image_size

    @property
    def rounding(self) -> str:
        """Steps per epoch: floor, or ceil (--steps-rounding: the epoch's last batch filled up to a whole one)."""
        return self.cfg.steps_rounding

    def train_steps(self, images: int) -> int:
        """Steps per epoch over `images` training images, or a DatasetError when there is not one global batch."""
        return batches_per_epoch(f"{self.dataset.root}/train", images, self.world, self.cfg.batch_size, self.rounding)

    def val(self) -> ValLoaderOptions:
        """What this run's validation loader is built from."""
        cfg = self.cfg
        return ValLoaderOptions(
            batch_size=self.val_batch_size, image_size=self.val_image_size, workers=cfg.workers, device=self.device,
            dtype=self.dtype, channels_last=self.channels_last, rank=self.rank, world=self.world, seed=cfg.seed,
            prefetch=cfg.prefetch, hw_decoder_load=cfg.hw_decoder_load,
            known_bad=self.known_bad,
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ValLoaderOptions:
    """What a validation loader is built from besides its images: training's (LoaderOptions.val) and
    `python -m fastres.eval`'s, so that both measure the same way."""

    batch_size: int  # per process
    image_size: int  # the central crop's side, in pixels
    workers: int  # PIL worker processes or DALI threads (capped at the CPU count)
    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    rank: int = 0
    world: int = 1
    seed: int = 0
    prefetch: int = 2  # DALI
    hw_decoder_load: float = 0.65  # DALI on a GPU
    known_bad: frozenset[str] = frozenset()  # paths earlier attempts found undecodable: substituted


def val_loader(images, backend: str, opts: ValLoaderOptions):
    """One pass over this rank's share of `images` (a FolderSplit; webdataset Shards for DALI): resize to
    size*256/224, central crop, every image once over the ranks (summing their counts counts each once)."""
    if backend == "dali":
        from fastres.data.dali import DaliLoader, DaliOptions, dali_threads

        files = isinstance(images, FolderSplit)
        options = DaliOptions(
            train=False, batch_size=opts.batch_size, size=opts.image_size, device=opts.device, dtype=opts.dtype,
            channels_last=opts.channels_last, rank=opts.rank, world=opts.world, seed=opts.seed,
            threads=dali_threads(opts.workers), prefetch=opts.prefetch, hw_decoder_load=opts.hw_decoder_load,
            known_bad=known_in(images, opts.known_bad) if files else frozenset(),
        )  # fmt: skip
        return DaliLoader(images.samples if files else images, options)
    workers = min(opts.workers, os.cpu_count() or 1)
    sampler = ShardedSampler(len(images), shuffle=False, rank=opts.rank, world=opts.world)  # rank r: r, r+w, ...
    loader = torch.utils.data.DataLoader(
        ImageFolderDataset(images, ResizeCenterCrop(opts.image_size), known_in(images, opts.known_bad)),
        batch_size=opts.batch_size,
        sampler=sampler,
        drop_last=False,
        **_worker_options(workers, opts.device),
    )
    return DeviceLoader(loader, opts.device, opts.dtype, opts.channels_last, num_samples=len(sampler))


def _worker_options(workers: int, device: torch.device) -> dict:
    """The DataLoader settings of every PIL loader: `workers` processes that outlive an epoch and leave the stop
    signals to the training process."""
    return dict(
        num_workers=workers,
        collate_fn=collate_uint8,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=ignore_stop_signals if workers else None,
    )


def without_files(split: FolderSplit, exclude: frozenset[str]) -> FolderSplit:
    """`split` without the files `exclude` names (the checker's bad files); a DatasetError when none is left."""
    if not exclude:
        return split
    kept = tuple(s for s in split.samples if s[0] not in exclude)
    if not kept:
        raise DatasetError(f"{split.root}: every image is excluded as bad")
    return FolderSplit(split.root, split.classes, kept)


def known_in(split: FolderSplit, known_bad: frozenset[str]) -> frozenset[str]:
    """The paths of `split` (as it lists them) that `known_bad` names, as given or by absolute
    path (an earlier attempt may have spelt the dataset root differently)."""
    if not known_bad:
        return frozenset()
    absolute = {os.path.abspath(p) for p in known_bad}
    return frozenset(p for p, _ in split.samples if p in known_bad or os.path.abspath(p) in absolute)


def _splits(opts: LoaderOptions) -> tuple[FolderSplit, FolderSplit]:
    train_split = without_files(opts.dataset.train, opts.exclude)
    opts.train_steps(len(train_split))
    return train_split, without_files(opts.dataset.val, opts.exclude)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM, SIGINT and SIGUSR1 to the training process.

    Slurm's scancel and Ctrl-C signal every process of the job or terminal, workers included;
    a worker that died of it would make the DataLoader raise in the training process before
    it could checkpoint. The training process stops its workers itself, and a worker exits
    on its own when the training process is gone (torch's worker watchdog)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def _pytorch_loaders(opts: LoaderOptions) -> Loaders:
    cfg, world, known_bad = opts.cfg, opts.world, opts.known_bad
    train_split, val_split = _splits(opts)
    train_tf = RandomResizedCropFlip(cfg.image_size, scale=(cfg.crop_scale_min, 1.0))
    workers = min(cfg.workers, os.cpu_count() or 1)
    # chunks of one per-process batch: the global batches do not depend on the number of processes
    train_sampler = ShardedSampler(len(train_split), shuffle=True, seed=cfg.seed, rank=opts.rank, world=world,
                                   chunk=cfg.batch_size)  # fmt: skip
    train = torch.utils.data.DataLoader(
        ImageFolderDataset(train_split, train_tf, known_in(train_split, known_bad)),
        batch_size=cfg.batch_size,
        sampler=train_sampler,
        drop_last=opts.rounding == "floor",
        prefetch_factor=4 if workers else None,
        **_worker_options(workers, opts.device),
    )
    on_device = dict(device=opts.device, dtype=opts.dtype, channels_last=opts.channels_last)
    steps = opts.train_steps(len(train_split))
    return Loaders(
        train=DeviceLoader(train, num_samples=len(train_sampler), steps=steps, **on_device),
        val=val_loader(val_split, "pytorch", opts.val()),
        classes=train_split.classes,
        root=opts.dataset.root,
        train_size=len(train_split),
        val_size=len(val_split),
    )


def _dali_loaders(opts: LoaderOptions) -> Loaders:
    from fastres.data.dali import DaliLoader, DaliOptions, dali_threads

    cfg = opts.cfg
    root = opts.dataset.root
    if opts.dataset.shards:  # webdataset shards written by `python -m fastres.data shard`
        from fastres.data.shards import Shards

        train_src, val_src = Shards(root / "train"), Shards(root / "val")
        if train_src.classes != val_src.classes:
            raise DatasetError(f"{root}: train and val shards have different classes")
        if opts.exclude:
            raise DatasetError(f"{root}: shards cannot leave files out; write them again without the bad files")
        classes, known, train_samples = train_src.classes, frozenset(), train_src
    else:
        train_src, val_src = _splits(opts)
        classes, known, train_samples = train_src.classes, known_in(train_src, opts.known_bad), train_src.samples
    opts.train_steps(len(train_src))
    options = DaliOptions(
        train=True, batch_size=cfg.batch_size, size=cfg.image_size, device=opts.device, dtype=opts.dtype,
        channels_last=opts.channels_last, rank=opts.rank, world=opts.world, seed=cfg.seed,
        threads=dali_threads(cfg.workers), prefetch=cfg.prefetch,
        hw_decoder_load=cfg.hw_decoder_load, crop_scale_min=cfg.crop_scale_min, known_bad=known,
        rounding=opts.rounding, accumulate=cfg.accumulate,
    )  # fmt: skip
    train = DaliLoader(train_samples, options)
    val = val_loader(val_src, "dali", opts.val())
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

    def take_new_bad(self) -> list[tuple[str, str]]:
        """Nothing is decoded: no file is ever found bad."""
        return []

    def __iter__(self):
        start, self._start = getattr(self, "_start", 0), 0
        for _ in range(start, self.steps):
            yield self.images, self.labels


def _synthetic_loaders(opts: LoaderOptions) -> Loaders:
    cfg, dataset, rank, world = opts.cfg, opts.dataset, opts.rank, opts.world
    # The dataset's sizes and classes, so steps per epoch and the model's head match a real run.
    if dataset.shards:
        raise DatasetError(f"--data {dataset.root} holds webdataset shards: only --backend dali reads them")
    train_split, val_split = _splits(opts)
    vb = opts.val_batch_size
    val_n = len(range(rank, len(val_split), world))
    common = dict(classes=len(train_split.classes), device=opts.device, dtype=opts.dtype)
    common["channels_last"] = opts.channels_last
    return Loaders(
        train=SyntheticLoader(
            opts.train_steps(len(train_split)),
            cfg.batch_size,
            cfg.image_size,
            seed=cfg.seed * 1_000_003 + rank,
            **common,
        ),
        val=SyntheticLoader(
            math.ceil(val_n / vb),
            vb,
            opts.val_image_size,
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
    known_bad: frozenset[str] | set[str] = frozenset(),
) -> Loaders:
    """Train and val loaders for `dataset` (by default `open_dataset(cfg.data, cfg.train_list,
    cfg.val_list)`: the built-in dataset when cfg.data is None).

    `exclude`: paths (as `scan_split` lists them) to leave out, e.g. the checker's bad files.
    `known_bad`: paths found undecodable by earlier attempts (RUN/bad_files.txt): substituted
    without being decoded, as the module docstring says."""
    if cfg.backend not in BACKENDS:
        raise DatasetError(f"unknown data backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    if dataset is None:
        dataset = open_dataset(cfg.data, cfg.train_list, cfg.val_list)
    backend = resolve_backend(cfg.backend)
    if backend != "dali" and dataset.shards:
        raise DatasetError(f"--data {dataset.root} holds webdataset shards: only --backend dali reads them")
    where = dict(dtype=dtype, channels_last=channels_last, rank=rank, world=world)
    opts = LoaderOptions(cfg, dataset, device, exclude=frozenset(exclude), known_bad=frozenset(known_bad), **where)
    return BACKENDS[backend](opts)
