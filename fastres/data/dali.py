"""The DALI backend: JPEG decode and augmentation in NVIDIA DALI pipelines.

On a GPU the decoder runs as `device="mixed"` (nvJPEG, with the A100/H100 hardware JPEG
decoder taking `hw_decoder_load` of the images) and everything after it on the GPU; without
one the same graph runs on CPU operators only (`device_id=None`), which DALI 2.x allows.

Train: file reader (sharded by rank, reshuffled every epoch, last batch padded) -> random-resized crop
fused into the decoder (area crop_scale_min-1, aspect 3/4-4/3, 10 tries as in the PIL path)
-> resize to size x size -> coin-flip mirror + normalise (ImageNet mean/std) in
`crop_mirror_normalize`, written NHWC for channels_last or NCHW. Val: decode -> resize the
shorter side to size*256/224 -> center crop + normalise.

The reader gets an explicit list of (file, label) from `scan_split` (classes sorted by
name), so labels equal the PIL path's and files that the dataset checker found bad can be
left out.

Undecodable files (fastres/data/bad.py). DALI has no option to skip a sample: a file it
cannot decode fails the pipeline ("Critical error in pipeline ... Current pipeline object
is no longer valid"). The loader then

1. names the file: DALI 2.4's CPU decoder says "Failed to decode sample #3 : PATH" for a
   JPEG libjpeg-turbo cannot decode (a bogus Huffman table, a cut stream) and its reader
   "File mapping failed: PATH" for an empty file, so a path of the list is looked for in the
   message first. For a file no decoder recognises, DALI says only "nvImageCodec failure:
   '#4'": then the same pipeline is built again from the same state over stand-ins labelled
   by their index (the reader's order depends on the list's length and seed, not on its
   content) to learn which samples come next, and each of those is decoded alone with the
   same decoder (batch 1, synchronous execution), which finds the one DALI fails on.
   An error that names no file of the list and whose samples all decode is not a bad file:
   it keeps its traceback;
2. puts the substitute PNG (fastres.data.bad.substitute_image) at that file's index of the
   list and rebuilds the pipeline from the DALI checkpoint taken after the last batch it
   delivered (one `checkpoints()` call per batch: tens of microseconds, a few hundred bytes).
   DALI's checkpoints restore the reader's position and every random generator, "the new
   pipeline will produce exactly the same outputs as the old one would"
   (docs.nvidia.com/deeplearning/dali, advanced_topics_checkpointing), so the batches that
   follow are those of a run that had the substitute in its list from the start, which is
   what a later attempt given `known_bad` builds;
3. reports the file once through `take_new_bad()`.

A JPEG whose entropy-coded data is corrupt (headers and end marker intact) usually decodes
in DALI 2.4 on the CPU: libjpeg-turbo fails, and the fallback decoder fills what it cannot
read, with a "Corrupt JPEG data" warning on stderr. Such a file is then not bad for DALI,
though PIL refuses it. Webdataset shards cannot be rebuilt without a sample: there a decode
failure is a one-line error that says to write the shards again (their writer checks files).

Last-batch policy: train makes the same number of full batches on every rank, as the PIL
path does: floor(floor(images / processes) / batch), the incomplete last batch dropped
(--steps-rounding floor, DROP), or ceil(floor(images / processes) / batch), the last batch
filled up with the shard's last sample repeated (ceil, FILL with the reader's padding; the PIL
path fills it from the start of the epoch's permutation instead). DALI's own count per shard
can be one more where the shards differ in size: the loader hands over its count and reads the
rest of DALI's epoch before handing over the epoch's last batch, so every epoch starts at the
beginning of DALI's. Val uses PARTIAL with `pad_last_batch=True` and `reader_name`, so the
iterator strips the padding and the sum over ranks counts every val image exactly once.

Shards: the training list is padded to a multiple of the processes with its first samples
(at most processes - 1 of them, seen twice an epoch): DALI's shards move on through the list
from epoch to epoch, and shards of unequal size then overlap (some samples twice an epoch,
others not at all). Webdataset shards get one more tar holding copies of the first samples of
the first one, written once to fastres's cache folder (`Shards.padded`).

Sample order: a fresh permutation of the whole training list every epoch
(`shuffle_after_epoch`, one seed on every rank, so the ranks split one permutation), as
the PIL sampler does; it depends on the epochs read before. A resumed
run continues that order from a DALI checkpoint (`state_dict` / `load_state_dict`,
pipelines built with `enable_checkpointing=True`). Each rank's checkpoint is that of its own
shard of the epoch (rank r reads [n r / w, n (r + 1) / w) of the permutation), so the global
batches depend on the number of processes: a run resumed on another number cannot continue
the epoch's order, and fastres.run continues it from the next epoch boundary (said in one line).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from fastres import FastresError
from fastres.data.dataset import train_steps
from fastres.data.shards import Shards
from fastres.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["dali_available", "DaliLoader", "DaliOptions", "probe_pipeline", "train_pipeline", "val_pipeline"]

_IMPORT_ERROR: Exception | None = None
try:  # DALI is optional: the PIL backend works without it
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
except Exception as e:  # ImportError, or a broken install (missing CUDA libs)
    _IMPORT_ERROR = e

READER = "Reader"
VAL_CROP_RATIO = 224 / 256


def dali_available() -> bool:
    return _IMPORT_ERROR is None


def _require_dali() -> None:
    if _IMPORT_ERROR is not None:
        raise FastresError(
            f"--backend dali: nvidia.dali cannot be imported ({_IMPORT_ERROR}); install nvidia-dali-cuda130 "
            "(pip install nvidia-dali-cuda130) or use --backend pytorch"
        )


def _dali_dtype(dtype: torch.dtype):
    # DALI 2.4 has no bfloat16: bf16 is made from fp32 on the device by torch.
    return types.FLOAT16 if dtype == torch.float16 else types.FLOAT


def _decoder_kwargs(gpu: bool, hw_decoder_load: float, prealloc: tuple[int, int]) -> dict:
    # An image is turned upright by its EXIF orientation tag, as the PIL backend does (fastres.data.pil.load_rgb)
    if not gpu:
        return {"device": "cpu", "adjust_orientation": True}
    kw = {"device": "mixed", "hw_decoder_load": hw_decoder_load, "adjust_orientation": True}
    if prealloc[0] and prealloc[1]:  # largest expected image: lets nvJPEG allocate once
        kw.update(preallocate_width_hint=prealloc[0], preallocate_height_hint=prealloc[1])
    return kw


def _reader(files, labels, shard_id, num_shards, shuffle, shuffle_seed):
    """(encoded images, labels): from a file list, or from webdataset shards when `files` is Shards."""
    order = {"shuffle_after_epoch": True, "shuffle_after_epoch_seed": shuffle_seed} if shuffle else {}
    if isinstance(files, Shards):
        return fn.readers.webdataset(
            paths=files.paths,
            index_paths=files.index_paths,
            ext=["jpg", "lbl"],
            dtypes=[types.UINT8, types.INT64],
            shard_id=shard_id,
            num_shards=num_shards,
            pad_last_batch=True,
            name=READER,
            **order,
        )
    # Train: a fresh permutation of the whole list every epoch, the same on every rank (one
    # seed for all: the shards then split it), as the PIL sampler does; DALI's random_shuffle
    # only draws from a buffer of initial_fill samples along a list order fixed across epochs.
    return fn.readers.file(
        files=list(files),
        labels=list(labels),
        shard_id=shard_id,
        num_shards=num_shards,
        pad_last_batch=True,
        name=READER,
        **order,
    )


def _define_pipelines():
    @pipeline_def
    def train_pipeline(
        files,
        labels,
        shard_id,
        num_shards,
        size,
        crop_scale_min,
        out_dtype,
        layout,
        gpu,
        hw_decoder_load=0.65,
        prealloc=(0, 0),
        shuffle_seed=0,
    ):
        jpegs, lab = _reader(files, labels, shard_id, num_shards, True, shuffle_seed)
        images = fn.decoders.image_random_crop(
            jpegs,
            output_type=types.RGB,
            random_area=[crop_scale_min, 1.0],
            random_aspect_ratio=[3 / 4, 4 / 3],
            num_attempts=10,
            **_decoder_kwargs(gpu, hw_decoder_load, prealloc),
        )
        images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_LINEAR, antialias=True)
        images = fn.crop_mirror_normalize(
            images,
            dtype=out_dtype,
            output_layout=layout,
            mean=list(IMAGENET_MEAN),
            std=list(IMAGENET_STD),
            mirror=fn.random.coin_flip(probability=0.5),
        )
        return images, lab

    @pipeline_def
    def val_pipeline(
        files, labels, shard_id, num_shards, size, out_dtype, layout, gpu, hw_decoder_load=0.65, prealloc=(0, 0)
    ):
        jpegs, lab = _reader(files, labels, shard_id, num_shards, False, 0)
        images = fn.decoders.image(jpegs, output_type=types.RGB, **_decoder_kwargs(gpu, hw_decoder_load, prealloc))
        images = fn.resize(
            images, resize_shorter=round(size / VAL_CROP_RATIO), interp_type=types.INTERP_LINEAR, antialias=True
        )
        images = fn.crop_mirror_normalize(
            images,
            dtype=out_dtype,
            output_layout=layout,
            crop=(size, size),
            crop_pos_x=0.5,
            crop_pos_y=0.5,
            mean=list(IMAGENET_MEAN),
            std=list(IMAGENET_STD),
        )
        return images, lab

    @pipeline_def
    def probe_pipeline(files, crop, gpu, hw_decoder_load=0.65):
        """Decode `files` in list order with the decoder of the train (crop) or val pipeline."""
        jpegs = fn.readers.file(files=list(files), labels=[0] * len(files))[0]
        kw = _decoder_kwargs(gpu, hw_decoder_load, (0, 0))
        if crop:
            return fn.decoders.image_random_crop(jpegs, output_type=types.RGB, **kw)
        return fn.decoders.image(jpegs, output_type=types.RGB, **kw)

    return train_pipeline, val_pipeline, probe_pipeline


train_pipeline = val_pipeline = probe_pipeline = None
if _IMPORT_ERROR is None:
    train_pipeline, val_pipeline, probe_pipeline = _define_pipelines()


def _dali_message(e: BaseException) -> str:
    """The line of a DALI pipeline error that says what went wrong (after "encountered:")."""
    text = str(e)
    text = text.split("encountered:", 1)[1] if "encountered:" in text else text
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("C++ context", "Current pipeline", "Critical error")):
            return line
    return type(e).__name__


def _paths_in(error: BaseException, names: set[str]) -> list[str]:
    """The members of `names` that DALI's message names, in order of appearance."""
    found: list[str] = []
    for line in str(error).splitlines():
        candidates = [m.group(0).rstrip(".,;)") for m in re.finditer(r"[^\s'\"]+", line)]
        # a path with spaces: what follows "... : " or ": " to the end of the line
        candidates += [line.split(sep, 1)[1].strip().strip("'\"") for sep in (" : ", ": ") if sep in line]
        found += [c for c in candidates if c in names and c not in found]
    return found


def _reason(e: BaseException, path: str) -> str:
    """Why DALI refused `path`, without the path or DALI's sample number."""
    line = re.sub(r"sample #\d+", "sample", _dali_message(e).replace(path, "")).strip(" :")
    return f"DALI: {line}" if line else "DALI cannot decode it"


@dataclass(frozen=True, kw_only=True)
class DaliOptions:
    """How a DaliLoader reads its samples: a training pass (`train`: random-resized crop, flip, a new order
    every epoch, whole batches) or a validation pass (resize, central crop, every sample once)."""

    train: bool
    batch_size: int  # per process
    size: int  # the side of the images it gives, in pixels
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    rank: int = 0
    world: int = 1
    seed: int = 0
    threads: int = 2  # DALI's CPU threads (dali_threads(--workers))
    prefetch: int = 2  # batches DALI prepares ahead
    crop_scale_min: float = 0.08  # train: the random-resized crop's smallest area
    hw_decoder_load: float = 0.65  # the share of images the GPU's hardware JPEG decoder takes
    prealloc: tuple[int, int] = (0, 0)  # the largest image expected (width, height): nvJPEG allocates once
    known_bad: frozenset[str] = frozenset()  # files earlier attempts found undecodable: substituted
    rounding: str = "floor"  # train: steps per epoch, floor or ceil (--steps-rounding)
    accumulate: int = 1  # train: an epoch is a whole number of optimizer steps of this many batches


class DaliLoader:
    """A DALI pipeline behind the interface of the PIL DeviceLoader.

    `samples`: (path, label) pairs (fn.readers.file), or a fastres.data.shards.Shards
    (fn.readers.webdataset over tar shards); `options`: how it reads them (DaliOptions).

    Iterating gives one epoch of (images, labels): images normalised, NCHW-shaped (memory
    in channels_last when asked), in `dtype`, on `device`; labels int64 of shape (batch,).
    `set_epoch`, `__len__` (steps per epoch) and `num_samples` (this rank's samples per
    epoch) mean what they mean for the PIL loader. `state_dict()` / `load_state_dict()`
    carry DALI's checkpoint, so a resumed run reads the same samples in the same order.
    A file DALI cannot decode is replaced by the substitute and reported by `take_new_bad()`;
    `known_bad` files stand as the substitute from the start (module docstring).
    """

    def __init__(self, samples: Sequence[tuple[str, int]] | Shards, options: DaliOptions):
        _require_dali()
        o = options
        if not 0 <= o.rank < o.world:
            raise ValueError(f"rank {o.rank} is not in [0, {o.world})")
        if not len(samples):
            raise FastresError("DALI loader: no samples")
        if isinstance(samples, Shards):  # webdataset shards
            self.files, self.labels = samples, None
        else:  # (path, label) pairs
            self.files = [s[0] for s in samples]
            self.labels = [int(s[1]) for s in samples]
        self.options = o
        self.train, self.batch_size, self.size = o.train, o.batch_size, o.size
        self.device, self.dtype, self.channels_last = torch.device(o.device), o.dtype, o.channels_last
        self.rank, self.world, self.seed = o.rank, o.world, o.seed
        self.threads, self.prefetch = max(1, o.threads), max(1, o.prefetch)
        self.crop_scale_min, self.hw_decoder_load, self.prealloc = o.crop_scale_min, o.hw_decoder_load, o.prealloc
        self.gpu = self.device.type == "cuda"
        train, world, batch_size = o.train, o.world, o.batch_size
        n = len(self.files)
        if train and n % world:
            # Equal shards: where they differ in size, DALI's shards (which move on through the list
            # from epoch to epoch under shuffle_after_epoch) overlap in later epochs. The list is
            # padded to a multiple of the processes with its first samples (at most world - 1).
            extra = world - n % world
            if self.labels is None:  # webdataset shards: one more tar with copies of the first samples
                self.files = self.files.padded(extra)
            else:
                self.files, self.labels = self.files + self.files[:extra], self.labels + self.labels[:extra]
        self.rounding = rounding = o.rounding
        if train:
            # Every rank runs the same number of full batches (module docstring, last-batch policy);
            # a whole number of optimizer steps of `accumulate` batches, so that no epoch stops early.
            self._len = train_steps(n, world, batch_size, rounding)
            if self._len >= o.accumulate:
                self._len -= self._len % o.accumulate
            if self._len == 0:
                raise FastresError(
                    f"DALI loader: {n} training images over {world} processes make no full batch of "
                    f"{batch_size}: lower --batch-size"
                )
            self.num_samples = self._len * batch_size
        else:
            # DALI's shards are contiguous: rank r reads [floor(n r / w), floor(n (r + 1) / w))
            self.num_samples = n * (o.rank + 1) // world - n * o.rank // world
            self._len = math.ceil(self.num_samples / batch_size)
        self.epoch = 0
        self._epochs_read = 0
        self._skip = 0  # batches of this epoch to drop (a run resumed mid-epoch)
        self._epoch_start: dict | None = None  # state at the start of the epoch being read
        self._iter = None
        self._checkpoint: str | None = None
        self._substitute: str | None = None  # fastres.data.bad.substitute_image(), written on first need
        self._reported: set[str] = set()  # files reported by take_new_bad (each once)
        self._new_bad: list[tuple[str, str]] = []
        if o.known_bad and self.labels is not None:
            # Known from an earlier attempt: the substitute stands at their indices from the
            # start, exactly where a file found bad now is put (see the module docstring).
            known = frozenset(o.known_bad)
            for i in [i for i, f in enumerate(self.files) if f in known]:
                self.files[i] = self._substitute_path()

    # -- pipeline ---------------------------------------------------------------------------
    def _build(self, checkpoint: str | None = None, files=None, labels=None, size: int | None = None):
        """The pipeline behind a DALI iterator, from `checkpoint` (else the loaded one, if any).

        `files`, `labels`, `size` replace the loader's own (the stand-in twin of _next_samples):
        none of them is part of DALI's state, so any checkpoint of this loader restores into it."""
        # Per-rank seeds: the ranks' augmentations and shuffles differ, and repeat run to run.
        seed = (self.seed * 1_000_003 + self.rank * 7919 + (0 if self.train else 1)) % (2**31 - 1)
        common = dict(
            batch_size=self.batch_size,
            num_threads=self.threads,
            seed=seed,
            device_id=torch.cuda.current_device() if self.gpu else None,
            prefetch_queue_depth=self.prefetch,
            enable_checkpointing=True,
            files=self.files if files is None else files,
            labels=self.labels if labels is None else labels,
            shard_id=self.rank,
            num_shards=self.world,
            size=self.size if size is None else size,
            out_dtype=_dali_dtype(self.dtype),
            layout="HWC" if self.channels_last else "CHW",
            gpu=self.gpu,
            hw_decoder_load=self.hw_decoder_load,
            prealloc=self.prealloc,
        )
        checkpoint = self._checkpoint if checkpoint is None else checkpoint
        if checkpoint is not None:
            common["checkpoint"] = checkpoint
        if self.train:
            shuffle_seed = (self.seed * 1_000_003 + 17) % (2**31 - 1)  # the same on every rank
            pipe = train_pipeline(crop_scale_min=self.crop_scale_min, shuffle_seed=shuffle_seed, **common)
        else:
            pipe = val_pipeline(**common)
        pipe.build()
        return DALIGenericIterator(
            [pipe],
            ["images", "labels"],
            reader_name=READER,
            auto_reset=True,
            prepare_first_batch=False,
            last_batch_policy=self._policy(),
        )

    def _policy(self):
        """Train: DROP the incomplete last batch (floor), or FILL it with the shard's last sample
        repeated (ceil, the reader pads); val: PARTIAL, padding stripped (module docstring)."""
        if not self.train:
            return LastBatchPolicy.PARTIAL
        return LastBatchPolicy.FILL if self.rounding == "ceil" else LastBatchPolicy.DROP

    def _iterator(self):
        if self._iter is None:
            self._iter = self._build()
        return self._iter

    # -- the DeviceLoader interface -----------------------------------------------------------
    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Record the epoch, and the batches of it already trained on (a run resumed mid-epoch).

        DALI's order follows from the epochs read before (see the module docstring); a resumed
        run restores it with load_state_dict, not from the number. The first `start_step`
        batches are read and dropped: DALI's reader and random state then stand where they
        stood when the checkpoint was taken, so the rest of the epoch is the same batches."""
        self.epoch, self._skip = epoch, start_step

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        last = self._iterator().checkpoints()[0]  # DALI's state after the last batch taken from the pipeline
        if self.train:
            self._epoch_start = {"dali": last, "epochs_read": self._epochs_read}
        skip, self._skip = self._skip, 0
        # Train: every rank hands over exactly len(self) batches (DALI's count per shard can exceed
        # it by one where the shards differ in size); what DALI has past that is read and dropped.
        budget = self._len if self.train else None
        taken = 0
        batches = self._read(last)
        for out in batches:
            taken += 1
            if taken <= skip:
                continue
            images, labels = self._torch(out)
            if taken == budget:
                # The epoch's last batch: DALI's epoch is run to its end before it is handed over, so
                # the next epoch starts at its beginning on every rank, and a checkpoint taken in this
                # step holds the next epoch's start (the step count says the epoch is done).
                images, labels = images.clone(), labels.clone()  # the rest reuses DALI's buffers
                for _ in batches:
                    pass
                self._end_epoch()
                yield images, labels
                return
            yield images, labels
        if budget is not None and taken < budget:  # would leave the other ranks waiting in a collective
            raise FastresError(f"DALI loader: rank {self.rank} read {taken} batches of an epoch, {budget} expected")
        self._end_epoch()

    def _read(self, last: str):
        """DALI's batches to the end of its epoch; a file it cannot decode is substituted and the
        pipeline rebuilt from `last`, the state after the batch before (module docstring)."""
        it = self._iterator()
        while True:
            try:
                out = next(it)
            except StopIteration:
                return
            except RuntimeError as e:  # DALI's "Critical error in pipeline": a bad file, or not
                it = self._recover(e, last)
                continue
            last = it.checkpoints()[0]
            yield out

    def _end_epoch(self) -> None:
        self._epochs_read += 1
        self._epoch_start = None

    def _torch(self, out) -> tuple[torch.Tensor, torch.Tensor]:
        """One DALI batch as (images, labels) on the device, in the loader's dtype and layout."""
        images, labels = out[0]["images"], out[0]["labels"]
        # The iterator reuses its output buffers: copy on the CPU (a GPU batch is consumed
        # before the next one is written into the same memory by the same stream).
        images = images.to(self.device, non_blocking=True)
        if images.device.type == "cpu":
            images = images.clone()
        if self.channels_last:
            images = images.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last
        if images.dtype != self.dtype:
            images = images.to(self.dtype)
        labels = labels.reshape(-1).to(device=self.device, dtype=torch.int64, non_blocking=True)
        return images, labels

    def take_new_bad(self) -> list[tuple[str, str]]:
        """(path, reason) of the files found undecodable since the last call, each file once."""
        new, self._new_bad = self._new_bad, []
        return new

    # -- undecodable files (module docstring) ---------------------------------------------------
    def _substitute_path(self) -> str:
        if self._substitute is None:
            from fastres.data.bad import substitute_image

            self._substitute = substitute_image()
        return self._substitute

    def _recover(self, error: RuntimeError, last: str):
        """After a pipeline failure: substitute the bad file(s) and return a new iterator that
        continues from `last`; re-raise `error` when it is not about a file of the list."""
        self._iter = None  # "Current pipeline object is no longer valid"
        if self.labels is None:  # webdataset shards: no list to put a substitute in
            message = _dali_message(error)
            if re.search(r"decod|nvImageCodec|File mapping", message, re.IGNORECASE):
                raise FastresError(
                    f"DALI cannot decode a sample of the shards in {self.files.folder} ({message}); write the "
                    "shards again with python -m fastres.data shard, which checks every file it writes"
                ) from None
            raise error
        bad = self._named_in(error)
        if not bad:
            bad = self._probe([self.files[i] for i in self._next_samples(last, self.prefetch + 1)])
        bad = [(path, why) for path, why in bad if path != self._substitute]
        if not bad:
            raise error
        for path, why in bad:
            sub = self._substitute_path()
            self.files = [sub if f == path else f for f in self.files]
            if path not in self._reported:
                self._reported.add(path)
                self._new_bad.append((path, why))
        self._iter = self._build(checkpoint=last)
        return self._iter

    def _named_in(self, error: BaseException) -> list[tuple[str, str]]:
        """The files of the list that DALI's message names, with the reason it gives."""
        names = set(self.files)
        names.discard(self._substitute)
        return [(path, _reason(error, path)) for path in _paths_in(error, names)]

    def _next_samples(self, state: str, batches: int) -> list[int]:
        """Indices into the list of the samples of the next `batches` batches from `state`."""
        n = len(self.files)
        twin = self._build(checkpoint=state, files=[self._substitute_path()] * n, labels=list(range(n)), size=8)
        out: list[int] = []
        for _ in range(batches):
            try:
                batch = next(twin)
            except StopIteration:
                break
            out += batch[0]["labels"].reshape(-1).tolist()
        return out

    def _probe(self, paths: list[str]) -> list[tuple[str, str]]:
        """The files among `paths` that this loader's decoder fails on, each decoded alone."""
        bad: list[tuple[str, str]] = []
        rest = list(dict.fromkeys(p for p in paths if p != self._substitute))
        while rest:
            pipe = probe_pipeline(
                files=rest,
                crop=self.train,
                gpu=self.gpu,
                hw_decoder_load=self.hw_decoder_load,
                batch_size=1,
                num_threads=1,
                device_id=torch.cuda.current_device() if self.gpu else None,
                prefetch_queue_depth=1,
                exec_pipelined=False,  # run k decodes sample k, and fails for it
                exec_async=False,
            )
            pipe.build()
            failed = None
            for k in range(len(rest)):
                try:
                    pipe.run()
                except RuntimeError as e:
                    named = _paths_in(e, set(rest[k:]))  # the reader reads ahead: trust a name
                    path = named[0] if named else rest[k]
                    bad.append((path, _reason(e, path)))
                    failed = k
                    break
            del pipe
            rest = [] if failed is None else [p for p in rest[failed:] if p != bad[-1][0]]
        return bad

    def close(self) -> None:
        """Drop the pipeline (its threads and buffers go with it); a later epoch builds it again."""
        self._iter = None

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """DALI's reader and random state at the start of the epoch the next step belongs to.

        Between epochs: the state now. Inside an epoch: the state its first batch started
        from (the trainer records how many batches of it were taken; set_epoch skips them)."""
        if self._epoch_start is not None:
            return dict(self._epoch_start)
        it = self._iterator()
        return {"dali": it.checkpoints()[0], "epochs_read": self._epochs_read}

    def load_state_dict(self, state: dict) -> None:
        """Rebuild the pipeline from a checkpoint taken by `state_dict`."""
        self._checkpoint = state["dali"]
        self._epochs_read = int(state.get("epochs_read", 0))
        self._iter = None


def dali_threads(workers: int) -> int:
    """DALI CPU threads per process from --workers (capped at the CPU count)."""
    return max(1, min(workers, os.cpu_count() or 1))
