"""The training loop: data -> forward -> loss -> backward/reduce -> step -> log, validation every epoch.

`Trainer(cfg).fit()` is everything `python -m fastres.train` does after parsing flags. Set-up
hands each collaborator to the next: topology -> process groups -> dataset (listed once,
checked by rank 0) -> loaders -> model -> its one flat layout (fastres.flat) -> reducer and
optimizer, both on that layout -> schedule -> run folder. The loop keeps losses as detached
device tensors and synchronises only on log steps (`log_every`), so on a GPU the host runs
ahead of the device.

Several processes (torchrun, srun, mpirun: fastres.distributed reads their variables) make
one data-parallel job: each reads its shard, the reducer averages the gradients bucket by
bucket during backward, and every rank takes the same step. Rank 0 writes the run folder,
the log and the checkpoints; batch-norm statistics stay per rank (Goyal et al. 2017) and
rank 0's are broadcast before each validation, which counts every image once over all ranks.
Each epoch ends with a check that all ranks still hold the same weights. Whatever happens,
`fit()` releases the loaders, the process groups and the log before it returns or raises.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from fastres import FastresError
from fastres.checkpoint import CHECKPOINT_NAME, resolve_checkpoint, restore_run, run_state, save_checkpoint
from fastres.config import TrainConfig
from fastres.data import check_dataset, make_loaders, open_dataset
from fastres.data.builtin import ensure_builtin_dataset
from fastres.distributed import Reducer, destroy, discover, init_distributed
from fastres.distributed import collectives as coll
from fastres.distributed.reducer import bucket_layout
from fastres.execution import amp_dtype, autocast, pick_device, seed_all, use_channels_last
from fastres.metrics import accuracy_counts
from fastres.model import build_model
from fastres.optim import build_optimizer
from fastres.optim.schedule import run_schedule
from fastres.runlog import MetricsLog, Summary, make_run_dir, write_config

__all__ = ["Summary", "Trainer", "TrainingDiverged"]


class TrainingDiverged(FastresError, FloatingPointError):
    """The training loss became NaN or Inf (all ranks see it: the logged loss is averaged over them)."""


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg, self.t_start = cfg, time.perf_counter()
        self.groups = self.data = self.reducer = self.log = None
        try:
            self._set_up(cfg)
        except BaseException:
            self.close(error=True)
            raise

    def _set_up(self, cfg: TrainConfig) -> None:
        self.topology = discover(virtual_nodes=cfg.virtual_nodes)
        self.rank, self.world = self.topology.rank, self.topology.world_size
        self.device = pick_device(cfg.device, self.topology)
        self.amp = amp_dtype(cfg.precision, self.device)
        self.channels_last = use_channels_last(cfg.channels_last, self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_all(cfg.seed)
        if self.topology.distributed:
            self.groups = init_distributed(self.topology, device=self.device, timeout=cfg.dist_timeout)
            if not cfg.data and self.topology.physical_local_rank == 0:
                ensure_builtin_dataset()  # one writer per machine; the others wait at the barrier
            coll.checked("barrier after writing the built-in dataset", dist.barrier, group=self.groups.world)
        dataset = open_dataset(cfg.data)  # listed once; the check and the loaders share the listing
        check = functools.partial(check_dataset, dataset, cfg.data_check, cfg.skip_bad_files, cfg.progress)
        exclude = coll.rank0_first(self.groups, check)
        self.data = make_loaders(
            cfg, self.device, torch.float32, self.channels_last, self.rank, self.world, exclude=exclude, dataset=dataset
        )
        self.model = build_model(cfg.arch, len(self.data.classes)).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        # the model's one flat layout, handed to the reducer and the optimizer
        self.layout = bucket_layout(self.model, self.groups, algorithm=cfg.allreduce, bucket_cap_mb=cfg.bucket_cap_mb)
        if self.groups is not None:
            caps = dict(algorithm=cfg.allreduce, bucket_cap_mb=cfg.bucket_cap_mb)
            self.reducer = Reducer(self.layout, self.groups, wire_dtype=cfg.wire_dtype, **caps)
            coll.broadcast_tensors(self.groups, [self.layout.params, *self.model.buffers()], "parameters and buffers")
        self.optimizer = build_optimizer(cfg, self.model, self.layout)
        self.steps_per_epoch = len(self.data.train)
        self.global_batch = cfg.batch_size * self.world
        self.schedule = run_schedule(cfg, self.steps_per_epoch, self.global_batch)
        self.start_epoch, self.step = 0, 0
        if cfg.resume:
            path = resolve_checkpoint(cfg.resume)
            where = dict(steps_per_epoch=self.steps_per_epoch, rank=self.rank, world=self.world)
            self.start_epoch, self.step = restore_run(path, self.model, self.optimizer, self.data.train, **where)
            self.run_dir = path.parent
        else:
            self.run_dir = coll.rank0_first(self.groups, self._new_run_dir)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl") if self.rank == 0 else None

    def _new_run_dir(self) -> Path:
        cfg, run_dir = self.cfg, make_run_dir(self.cfg.out, self.cfg.name, self.cfg.arch)
        data, reducer = self.data, self.reducer
        facts = dict(dataset=str(data.root), classes=len(data.classes), train_images=data.train_size)
        facts.update(val_images=data.val_size, device=str(self.device), amp=str(self.amp))
        facts.update(channels_last=self.channels_last, global_batch=self.global_batch, peak_lr=self.schedule.peak)
        facts.update(ranks=self.world, topology=self.topology.describe())
        facts.update(allreduce=reducer.describe() if reducer else None)
        write_config(run_dir, cfg.to_dict(), facts)
        return run_dir

    def _checkpoint(self, epoch: int) -> None:
        train = self.data.train
        mine = train.state_dict() if hasattr(train, "state_dict") else None
        states = coll.gather_objects(self.groups, mine, "the data loaders' states")
        if self.rank == 0:
            where = dict(epoch=epoch, step=self.step, config=self.cfg.to_dict(), classes=self.data.classes)
            save_checkpoint(
                run_state(self.model, self.optimizer, loader_states=states, **where), self.run_dir / CHECKPOINT_NAME
            )

    # -- the loop -------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        """One pass over this rank's share of the training set; returns seconds spent."""
        self.model.train()
        self.data.train.set_epoch(epoch)
        quiet, desc = not self.cfg.progress or self.rank != 0, f"epoch {epoch + 1}/{self.cfg.epochs}"
        bar = tqdm(total=self.steps_per_epoch, desc=desc, unit="step", disable=quiet, dynamic_ncols=True, leave=False)
        loss_sum = torch.zeros((), device=self.device)
        t0 = t_log = time.perf_counter()
        seen = 0
        for i, (images, labels) in enumerate(self.data.train):
            lr = self.schedule(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with autocast(self.device, self.amp):
                loss = self.criterion(self.model(images), labels)
            self.layout.zero_grad()  # in place: .grad stay views of the flat buffer
            loss.backward()  # with several ranks, buckets are sent as they fill
            if self.reducer is not None:
                self.reducer.wait()  # the mean gradient over all ranks
            self.optimizer.step()
            loss_sum += loss.detach()
            self.step, seen = self.step + 1, seen + 1
            bar.update(1)
            if (i + 1) % self.cfg.log_every == 0 or i + 1 == self.steps_per_epoch:
                mean_loss = coll.mean_over_ranks(self.groups, loss_sum / seen)  # syncs the device: log steps only
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"training loss is {mean_loss} at step {self.step} (epoch {epoch + 1}); "
                        f"try a lower --lr or a longer --warmup-epochs; {self._last_checkpoint()}"
                    )
                now = time.perf_counter()
                ips = seen * self.global_batch / (now - t_log)
                bar.set_postfix(loss=f"{mean_loss:.3f}", img_s=f"{ips:.0f}", lr=f"{lr:.3g}")
                self._write("train", epoch=epoch + 1, step=self.step, loss=mean_loss, lr=lr, img_per_s=ips)
                loss_sum.zero_()
                seen, t_log = 0, now
        bar.close()
        return time.perf_counter() - t0

    @torch.inference_mode()
    def validate(self) -> tuple[float, float, int]:
        """(top-1 %, top-5 %, images) over the validation split, every image counted once over the ranks."""
        self.model.eval()
        totals = torch.zeros(3, dtype=torch.int64, device=self.device)  # top-1 hits, top-5 hits, images
        for images, labels in self.data.val:
            with autocast(self.device, self.amp):
                logits = self.model(images)
            totals[:2] += accuracy_counts(logits.float(), labels)
            totals[2] += labels.numel()
        top1, top5, n = coll.sum_over_ranks(self.groups, totals, "validation counts").tolist()
        return 100.0 * top1 / max(n, 1), 100.0 * top5 / max(n, 1), n

    def fit(self) -> Summary:
        """Train from the start (or resumed) epoch to the last; release everything however it ends."""
        try:
            summary = self._fit()
        except BaseException:
            self.close(error=True)
            raise
        self.close()
        return summary

    def _fit(self) -> Summary:
        cfg, train_seconds, images = self.cfg, 0.0, 0
        top1 = top5 = float("nan")
        self._say(
            f"fastres: {cfg.arch} on {self.data.root} ({self.data.train_size} train / {self.data.val_size} val "
            f"images, {len(self.data.classes)} classes), {self.device}, global batch {self.global_batch}, "
            f"peak lr {self.schedule.peak:.4g}, run folder {self.run_dir}"
        )
        if self.reducer is not None:
            self._say(f"fastres: {self.topology.describe()}; {self.reducer.describe()}")
        for epoch in range(self.start_epoch, cfg.epochs):
            seconds = self.train_epoch(epoch)
            train_seconds += seconds
            images += self.steps_per_epoch * self.global_batch
            coll.check_weights_agree(self.groups, self.layout.params, f"after epoch {epoch + 1}")
            coll.broadcast_tensors(self.groups, list(self.model.buffers()), "BN statistics")  # validate/save rank 0's
            top1, top5, n = self.validate()
            ips = self.steps_per_epoch * self.global_batch / seconds
            record = dict(epoch=epoch + 1, step=self.step, top1=top1, top5=top5, images=n)
            self._write("val", **record, epoch_seconds=seconds, img_per_s=ips)
            self._checkpoint(epoch + 1)
            self._say(
                f"epoch {epoch + 1}/{cfg.epochs}: val top-1 {top1:.2f}% top-5 {top5:.2f}% ({n} images), "
                f"train {seconds:.1f}s"
            )
        total = time.perf_counter() - self.t_start
        ips = images / max(train_seconds, 1e-9)
        record = dict(epochs=cfg.epochs, top1=top1, top5=top5, train_seconds=train_seconds, total_seconds=total)
        self._write("summary", **record, img_per_s=ips)
        return Summary(cfg.epochs, top1, top5, train_seconds, total, ips, self.run_dir, self.rank)

    def close(self, error: bool = False) -> None:
        """Release the log, the reducer's hooks, the loaders and the process groups (safe to call twice).

        error: leave the process groups without the closing barrier (the other ranks may be gone)."""
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.reducer is not None:
            self.reducer.remove()
            self.reducer = None
        if self.data is not None:
            self.data.close()
        if self.groups is not None:
            destroy(self.groups, barrier=not error)
            self.groups = None

    def _last_checkpoint(self) -> str:
        path = self.run_dir / CHECKPOINT_NAME
        return f"the last checkpoint is {path}" if path.is_file() else "no checkpoint was written yet"

    def _say(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def _write(self, kind: str, **fields) -> None:
        if self.log is not None:  # rank 0
            self.log.write(kind, **fields)
