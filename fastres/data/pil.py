"""The PIL + torch DataLoader backend: works everywhere, needs nothing beyond Pillow.

Every random choice of a sample (crop box, flip) comes from a seed that the sampler draws
with the sample's index, so a batch depends on (seed, epoch, step) only, not on how many
worker processes there are or which of them decoded it. Nor on how many training processes
there are: the epoch's permutation is cut into consecutive chunks of one per-process batch,
and chunk c goes to rank c mod w, so optimizer step k (accumulation passes included) takes
positions [k G, (k + 1) G) of the permutation for a global batch G, whatever the split of G
into processes x batch x --accumulate. A run resumed on another number of processes sees the
global batches of a run never stopped, each sample with the same crop and flip.

A file that cannot be decoded does not stop the run: the worker that meets it returns the
substitute of fastres/data/bad.py (the mean colour, with the sample's label) in its place
and names the file in a third element of the batch, which `DeviceLoader` collects for
`take_new_bad()`. Files known bad from an earlier attempt (`known_bad`) get the same
substitute without being opened, so both give bit-identical batches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from fastres import FastresError
from fastres.data.bad import substitute_array
from fastres.data.folder import FolderSplit
from fastres.data.transforms import normalize_batch

__all__ = ["ImageFolderDataset", "ShardedSampler", "collate_uint8", "DeviceLoader", "load_rgb"]


# Pillow's modes of one channel wider than 8 bits (16-bit PNG and TIFF grayscale): convert("RGB") clips them
# at 255 (a 16-bit image turns white), so they are rounded to 8 bits first.
WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def load_rgb(path: str) -> Image.Image:
    """Decode one image file as 8-bit RGB as DALI's decoder does: turned upright by its EXIF orientation tag
    (both backends apply it: fastres.data.dali's adjust_orientation), a 16-bit channel x rounded to x / 257
    (65535 -> 255). A file that cannot be decoded is named in the error."""
    try:
        with Image.open(path) as img:
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode in WIDE_GRAY:
                wide = np.asarray(img, dtype=np.float64)
                return Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8)).convert("RGB")
            return img.convert("RGB")
    except Exception as e:  # PIL raises many types: UnidentifiedImageError, OSError, SyntaxError
        raise FastresError(f"cannot decode image {path}: {e}") from None


class ImageFolderDataset(torch.utils.data.Dataset):
    """Items are (uint8 HWC array, label, bad); indexed by (sample index, sample seed) pairs.

    `bad` is None, or (path, reason) when the file could not be decoded and the item holds
    the substitute instead (`transform.size` a side). Files in `known_bad` (paths as the split
    lists them) get the substitute without being opened, and bad None: they were reported
    by the attempt that found them."""

    def __init__(self, split: FolderSplit, transform, known_bad: frozenset[str] = frozenset()):
        self.samples = split.samples
        self.transform = transform
        self.known_bad = frozenset(known_bad)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, int, tuple[str, str] | None]:
        index, seed = key
        path, label = self.samples[index]
        if path in self.known_bad:
            return substitute_array(self.transform.size), label, None
        try:
            img = load_rgb(path)
        except FastresError as e:
            # the sample's own seed drives nothing else: skipping its transform changes no other sample
            return (
                substitute_array(self.transform.size),
                label,
                (path, str(e).removeprefix(f"cannot decode image {path}: ")),
            )
        return self.transform(img, random.Random(seed)), label, None


class ShardedSampler(torch.utils.data.Sampler):
    """Yields (index, seed) for this rank's share of one epoch.

    Train (`shuffle=True`): a fresh permutation per epoch, in chunks of `chunk` samples (the
    per-process batch): chunk c of the epoch is rank (c mod world)'s; position p of the epoch is
    sample perm[p mod size] with seed seeds[p], both drawn from (seed, epoch) only. The epoch is
    padded by wrapping around to whole rounds of `world` chunks, so that every rank gets the same
    number of samples (a rank that ran out early would stall the others' collectives). With
    chunk 1 rank r takes positions r, r + w, ... Val (`shuffle=False`): rank r takes samples
    r, r+w, ...; no padding, so summing counts across ranks counts every image exactly once.
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1, chunk: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        if chunk < 1:
            raise ValueError(f"chunk: must be >= 1, got {chunk}")
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.chunk = chunk
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch to yield, from this rank's `start`-th sample on (a run resumed mid-epoch)."""
        self.epoch, self.start = epoch, start

    def _rounds(self) -> int:
        """Rounds of `world` chunks in a padded epoch."""
        return math.ceil(self.size / (self.world * self.chunk))

    def __len__(self) -> int:
        if self.shuffle:
            return self._rounds() * self.chunk
        return len(range(self.rank, self.size, self.world))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if not self.shuffle:
            seeds = torch.randint(0, 2**62, (self.size,), generator=g)
            mine = slice(self.rank, None, self.world)
            return iter(list(zip(range(self.size)[mine], seeds[mine].tolist()))[self.start :])
        perm = torch.randperm(self.size, generator=g)
        span = self.world * self.chunk
        total = self._rounds() * span  # positions of the padded epoch
        # drawn after the permutation, for every position: seeds[p] is the same for any padded length
        seeds = torch.randint(0, 2**62, (total,), generator=g)
        chunks = torch.arange(total).view(-1, self.world, self.chunk)  # [round, rank, place in the chunk]
        positions = chunks[:, self.rank, :].reshape(-1)[self.start :]
        order = perm[positions % self.size]
        return iter(list(zip(order.tolist(), seeds[positions].tolist())))


def collate_uint8(batch: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    """(uint8 NHWC images, int64 labels, [(path, reason) of the files found bad in this batch])."""
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    return images, labels, [b[2] for b in batch if len(b) > 2 and b[2] is not None]


class DeviceLoader:
    """Wraps a DataLoader of uint8 NHWC batches: moves them to `device` and normalises there."""

    def __init__(
        self,
        loader: torch.utils.data.DataLoader,
        device: torch.device,
        dtype: torch.dtype,
        channels_last: bool,
        num_samples: int,
        steps: int | None = None,
    ):
        self.loader, self.device, self.dtype, self.channels_last = loader, device, dtype, channels_last
        self.num_samples = num_samples  # samples this rank sees per epoch (padding included)
        self.steps = len(loader) if steps is None else min(steps, len(loader))  # batches per epoch
        self._start = 0  # first batch of the epoch to yield (set_epoch)
        self._reported: set[str] = set()  # bad files reported by take_new_bad (each one once)
        self._new_bad: list[tuple[str, str]] = []

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """The epoch to read, from batch `start_step` on (a run resumed mid-epoch: the batches
        before it are not decoded; the sampler's order and per-sample seeds stay the epoch's)."""
        self.loader.sampler.set_epoch(epoch, start_step * self.loader.batch_size)
        self._start = start_step

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, batch in enumerate(self.loader, start=self._start):
            if step == self.steps:
                break  # fastres.data.loader.train_steps: every backend runs the same number of steps
            images, labels = batch[0], batch[1]
            for path, reason in batch[2] if len(batch) > 2 else ():
                if path not in self._reported:
                    self._reported.add(path)
                    self._new_bad.append((path, reason))
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield normalize_batch(images, self.dtype, self.channels_last), labels

    def take_new_bad(self) -> list[tuple[str, str]]:
        """(path, reason) of the files found undecodable in the batches yielded since the last
        call, each file once per process (a worker finds it again every epoch; it is listed once)."""
        new, self._new_bad = self._new_bad, []
        return new

    def close(self) -> None:
        """Shut the worker processes down now (persistent workers otherwise live until collected)."""
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader._iterator = None
