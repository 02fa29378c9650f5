"""The training loop: data -> model -> loss -> backward/reduce -> step, validation every epoch.

`Trainer(cfg).fit()` is everything `python -m fastres.train` does after parsing flags. The
loop keeps losses as detached device tensors and synchronises only on log steps
(`log_every`), so on a GPU the host runs ahead of the device.

Several processes (torchrun, srun, mpirun: fastres.distributed.topology reads their variables) make
one data-parallel job: each reads its shard of the data, fastres.distributed.reducer averages the
gradients bucket by bucket during backward, and every rank takes the same step. Rank 0
checks the data, writes the run folder, the log and the checkpoints; batch norm statistics
stay per rank (Goyal et al. 2017) and rank 0's are broadcast before each validation, which
counts over all ranks' shards. Each epoch ends with a check that all ranks still hold the
same weights.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from fastres import FastresError
from fastres.checkpoint import CHECKPOINT_NAME, load_checkpoint, resolve_checkpoint, save_checkpoint
from fastres.config import TrainConfig
from fastres.data import make_loaders
from fastres.distributed import cuda_device, destroy, discover, init_distributed
from fastres.distributed.collectives import checked
from fastres.distributed.reducer import Reducer, bucket_layout
from fastres.model import build_model
from fastres.optim.schedule import LRSchedule, scaled_lr
from fastres.runlog import MetricsLog, make_run_dir, write_config

__all__ = ["Trainer", "TrainingDiverged", "Summary", "param_groups", "build_optimizer", "accuracy_counts"]


class TrainingDiverged(FastresError, FloatingPointError):
    """The training loss became NaN or Inf (all ranks see it: the logged loss is averaged over them)."""


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/fc weights only; BN parameters and biases (ndim <= 1) get none."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, model: nn.Module, layout=None) -> torch.optim.Optimizer:
    """--optimizer: sgd (torch's foreach SGD), lars (FusedLARS), fused-sgd (FusedSGD); lr is set per step.

    The fused ones move the parameters into one flat buffer (fastres.flat): build them after
    the model's last .to() (device, channels_last)."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "lars":
        from fastres.optim import FusedLARS

        return FusedLARS(groups, lr=0.0, momentum=cfg.momentum, eta=cfg.lars_eta, nesterov=cfg.nesterov, layout=layout)
    if cfg.optimizer == "fused-sgd":
        from fastres.optim import FusedSGD

        return FusedSGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov, layout=layout)
    return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True)


def accuracy_counts(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the top-k logits, for each k (a device tensor)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return torch.stack([hit[:, :k].any(dim=1).sum() for k in ks])


@dataclass
class Summary:
    epochs: int
    top1: float
    top5: float
    train_seconds: float
    total_seconds: float
    images_per_second: float
    run_dir: Path
    rank: int = 0


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.t_start = time.perf_counter()
        self.topology = discover(virtual_nodes=cfg.virtual_nodes)
        self.rank, self.world = self.topology.rank, self.topology.world_size
        self.device = self._device()
        cuda = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if cfg.precision == "bf16" or (cfg.precision == "auto" and cuda) else None
        self.channels_last = cuda if cfg.channels_last is None else cfg.channels_last
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._seed(cfg.seed)
        self.groups = None
        if self.topology.distributed:
            self.groups = init_distributed(self.topology, device=self.device, timeout=cfg.dist_timeout)

        if self.groups is not None and not cfg.data:  # one writer of the built-in dataset per machine
            from fastres.data.builtin import ensure_builtin_dataset

            if self.topology.physical_local_rank == 0:
                ensure_builtin_dataset()
            checked("barrier after writing the built-in dataset", dist.barrier, group=self.groups.world)
        exclude = self._rank0_first(self._check_data)
        self.data = make_loaders(
            cfg, self.device, torch.float32, self.channels_last, self.rank, self.world, exclude=exclude
        )
        self.model = build_model(cfg.arch, len(self.data.classes)).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.reducer = None
        if self.groups is not None:  # before the optimizer: the fused ones reuse its bucket-padded layout
            layout = bucket_layout(self.model, self.groups, algorithm=cfg.allreduce, bucket_cap_mb=cfg.bucket_cap_mb)
            self.reducer = Reducer(
                layout, self.groups, algorithm=cfg.allreduce, bucket_cap_mb=cfg.bucket_cap_mb, wire_dtype=cfg.wire_dtype
            )
            self._broadcast_state(parameters=True)
        self.optimizer = build_optimizer(cfg, self.model, self.reducer.layout if self.reducer else None)
        self.steps_per_epoch = len(self.data.train)
        self.global_batch = cfg.batch_size * self.world
        self.schedule = LRSchedule(
            peak=scaled_lr(cfg.lr, self.global_batch),
            total_steps=cfg.epochs * self.steps_per_epoch,
            warmup_steps=round(cfg.warmup_epochs * self.steps_per_epoch),
            kind=cfg.schedule,
        )
        self.start_epoch, self.step = 0, 0
        if cfg.resume:
            self.run_dir = self._resume(resolve_checkpoint(cfg.resume))
        else:
            self.run_dir = self._rank0_first(self._new_run_dir)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl") if self.rank == 0 else None

    # -- set-up helpers -------------------------------------------------------------------
    def _device(self) -> torch.device:
        want = self.cfg.device
        if want == "cuda" and not torch.cuda.is_available():
            raise FastresError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and self.topology.distributed:  # one GPU per rank of this machine
            return cuda_device(self.topology)
        return torch.device(want)

    def _rank0_first(self, fn):
        """fn() on rank 0, its result (or its FastresError, re-raised) on every rank."""
        if self.groups is None:
            return fn()
        box: list = [None]
        failure = None
        if self.rank == 0:
            try:
                box[0] = ("ok", fn())
            except Exception as e:  # noqa: BLE001 - the others must hear of it, or they wait for the timeout
                failure = e
                box[0] = ("error", type(e) if isinstance(e, FastresError) else FastresError, f"rank 0: {e}")
        checked(
            f"broadcast of rank 0's {fn.__name__.strip('_')} result",
            dist.broadcast_object_list,
            box,
            src=0,
            group=self.groups.world,
        )
        if failure is not None:
            raise failure
        if box[0][0] == "error":
            raise box[0][1](box[0][2])
        return box[0][1]

    def _new_run_dir(self) -> Path:
        cfg = self.cfg
        run_dir = make_run_dir(cfg.out, cfg.name, cfg.arch)
        write_config(
            run_dir,
            cfg.to_dict(),
            {
                "dataset": str(self.data.root),
                "classes": len(self.data.classes),
                "train_images": self.data.train_size,
                "val_images": self.data.val_size,
                "device": str(self.device),
                "amp": str(self.amp_dtype),
                "channels_last": self.channels_last,
                "global_batch": self.global_batch,
                "peak_lr": self.schedule.peak,
                "ranks": self.world,
                "topology": self.topology.describe(),
                "allreduce": self.reducer.describe() if self.reducer else None,
            },
        )
        return run_dir

    def _broadcast_state(self, parameters: bool) -> None:
        """Rank 0's parameters (one broadcast of the flat buffer) and/or buffers (BN statistics) to all."""
        with torch.no_grad():
            if parameters:
                checked(
                    "broadcast of rank 0's parameters",
                    dist.broadcast,
                    self.reducer.layout.params,
                    src=0,
                    group=self.groups.world,
                )
            for b in self.model.buffers():
                checked("broadcast of rank 0's buffers", dist.broadcast, b, src=0, group=self.groups.world)

    def _check_weights_agree(self, epoch: int) -> None:
        """All ranks must hold the same weights (a desynchronised rank would train on silently)."""
        w = self.reducer.layout.params.double()  # one fp64 copy of the flat buffer, for both sums
        mine = torch.stack([w.sum(), w.norm()])
        every = [torch.empty_like(mine) for _ in range(self.world)]
        checked("all_gather of weight checksums", dist.all_gather, every, mine, group=self.groups.world)
        bad = [r for r, t in enumerate(every) if not torch.equal(t, every[0])]
        if bad:
            raise FastresError(
                f"after epoch {epoch}: the weights of ranks {bad} differ from rank 0's "
                f"(checksums {[t.tolist() for t in every[:4]]}...); the ranks no longer train one model"
            )

    def _check_data(self) -> frozenset[str]:
        """--data-check: find undecodable files before training (DALI would stop mid-epoch on one). Rank 0 runs it.

        Refuses with the list, or with --skip-bad-files returns them for the loaders to leave out."""
        cfg = self.cfg
        if cfg.data_check == "none":
            return frozenset()
        from fastres.data import DatasetError
        from fastres.data.builtin import ensure_builtin_dataset
        from fastres.data.check import check_tree

        root = Path(cfg.data).expanduser() if cfg.data else ensure_builtin_dataset()
        if cfg.data and (not (root / "train").is_dir() or (root / "train" / "manifest.json").is_file()):
            return frozenset()  # the loaders name the layout problem; shards were checked when written
        # a bar only on a terminal: in a log (or before a one-line error) it would be noise
        bar = cfg.progress and sys.stderr.isatty()  # rank 0 runs it
        _, report = check_tree(root, decode=cfg.data_check == "decode", progress=bar)
        if not report.bad:
            return frozenset()
        if not cfg.skip_bad_files:
            raise DatasetError(
                f"{report.summary()}; train without them with --skip-bad-files, "
                f"or list them with python -m fastres.data check {root}"
            )
        print(
            f"fastres: skipping {len(report.bad)} bad files (--skip-bad-files): "
            + "; ".join(f"{p} ({w})" for p, w in report.bad[:5])
            + (" ..." if len(report.bad) > 5 else ""),
            flush=True,
        )
        return report.bad_paths

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _resume(self, path: Path) -> Path:
        state = load_checkpoint(path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise FastresError(
                f"--resume {path}: checkpoint does not fit this model/optimizer ({str(e).splitlines()[0]})"
            ) from None
        if state["step"] != state["epoch"] * self.steps_per_epoch:
            raise FastresError(
                f"--resume {path}: checkpoint has {state['step']} steps over {state['epoch']} epochs, but this config "
                f"makes {self.steps_per_epoch} steps per epoch (batch size or dataset changed)"
            )
        self.start_epoch, self.step = state["epoch"], state["step"]
        torch.set_rng_state(state["torch_rng"])
        per_rank = state.get("data_per_rank") or [state.get("data")]
        if per_rank[0] is not None and hasattr(self.data.train, "load_state_dict"):
            if len(per_rank) == self.world:
                self.data.train.load_state_dict(per_rank[self.rank])
            elif self.rank == 0:  # another shard layout: the epoch resumes, not the exact sample order
                print(
                    f"fastres: --resume {path}: saved by {len(per_rank)} ranks, resumed by {self.world}: "
                    "the data order restarts at the epoch boundary",
                    flush=True,
                )
        return path.parent

    def _checkpoint(self, epoch: int) -> None:
        # DALI's reader/random state, so a resumed run reads the same samples in the same order;
        # each rank reads its own shard, so each rank's state is kept
        data = self.data.train.state_dict() if hasattr(self.data.train, "state_dict") else None
        per_rank = [data]
        if self.groups is not None:
            per_rank = [None] * self.world
            checked(
                "all_gather of the data loaders' states",
                dist.all_gather_object,
                per_rank,
                data,
                group=self.groups.world,
            )
        if self.rank != 0:
            return
        save_checkpoint(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": epoch,
                "step": self.step,
                "config": self.cfg.to_dict(),
                "classes": self.data.classes,
                "torch_rng": torch.get_rng_state(),
                "data": per_rank[0],
                "data_per_rank": per_rank,
            },
            self.run_dir / CHECKPOINT_NAME,
        )

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- the loop -------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        """One pass over this rank's share of the training set; returns seconds spent."""
        self.model.train()
        self.data.train.set_epoch(epoch)
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            unit="step",
            disable=not self.cfg.progress or self.rank != 0,
            dynamic_ncols=True,
            leave=False,
        )
        loss_sum = torch.zeros((), device=self.device)
        t0 = t_log = time.perf_counter()
        seen_log = 0
        for i, (images, labels) in enumerate(self.data.train):
            lr = self.schedule(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self._autocast():
                loss = self.criterion(self.model(images), labels)
            if self.reducer is not None:
                self.reducer.zero_grad()  # in place: .grad stay views of the buckets
                loss.backward()  # buckets are sent as they fill
                self.reducer.wait()  # the mean gradient over all ranks
            else:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            self.step += 1
            seen_log += 1
            bar.update(1)
            if (i + 1) % self.cfg.log_every == 0 or i + 1 == self.steps_per_epoch:
                mean_loss = self._mean_over_ranks(loss_sum / seen_log)  # syncs the device: only on log steps
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"training loss is {mean_loss} at step {self.step} (epoch {epoch + 1}); "
                        f"try a lower --lr or a longer --warmup-epochs; the last checkpoint is "
                        f"{self.run_dir / CHECKPOINT_NAME}"
                    )
                now = time.perf_counter()
                ips = seen_log * self.global_batch / (now - t_log)
                bar.set_postfix(loss=f"{mean_loss:.3f}", img_s=f"{ips:.0f}", lr=f"{lr:.3g}")
                self._write("train", epoch=epoch + 1, step=self.step, loss=mean_loss, lr=lr, img_per_s=ips)
                loss_sum.zero_()
                seen_log, t_log = 0, now
        bar.close()
        return time.perf_counter() - t0

    @torch.inference_mode()
    def validate(self) -> tuple[float, float, int]:
        """(top-1 %, top-5 %, images) over the validation split."""
        self.model.eval()
        counts = torch.zeros(2, dtype=torch.int64, device=self.device)
        n = 0
        for images, labels in self.data.val:
            with self._autocast():
                logits = self.model(images)
            counts += accuracy_counts(logits.float(), labels)
            n += labels.numel()
        if self.groups is not None:  # each rank saw its exact share of the val set
            totals = torch.cat([counts, torch.tensor([n], device=self.device)])
            checked("all_reduce of validation counts", dist.all_reduce, totals, group=self.groups.world)
            counts, n = totals[:2], int(totals[2])
        top1, top5 = (100.0 * counts / max(n, 1)).tolist()
        return top1, top5, n

    def fit(self) -> Summary:
        cfg = self.cfg
        train_seconds, images = 0.0, 0
        top1 = top5 = float("nan")
        if self.rank == 0:
            print(
                f"fastres: {cfg.arch} on {self.data.root} ({self.data.train_size} train / {self.data.val_size} val "
                f"images, {len(self.data.classes)} classes), {self.device}, global batch {self.global_batch}, "
                f"peak lr {self.schedule.peak:.4g}, run folder {self.run_dir}",
                flush=True,
            )
        if self.rank == 0 and self.reducer is not None:
            print(f"fastres: {self.topology.describe()}; {self.reducer.describe()}", flush=True)
        for epoch in range(self.start_epoch, cfg.epochs):
            seconds = self.train_epoch(epoch)
            train_seconds += seconds
            images += self.steps_per_epoch * self.global_batch
            if self.groups is not None:
                self._check_weights_agree(epoch + 1)
                self._broadcast_state(parameters=False)  # validate and save rank 0's BN statistics
            top1, top5, n = self.validate()
            self._write(
                "val",
                epoch=epoch + 1,
                step=self.step,
                top1=top1,
                top5=top5,
                images=n,
                epoch_seconds=seconds,
                img_per_s=self.steps_per_epoch * self.global_batch / seconds,
            )
            self._checkpoint(epoch + 1)
            if self.rank == 0:
                print(
                    f"epoch {epoch + 1}/{cfg.epochs}: val top-1 {top1:.2f}% top-5 {top5:.2f}% "
                    f"({n} images), train {seconds:.1f}s",
                    flush=True,
                )
        total = time.perf_counter() - self.t_start
        summary = Summary(
            cfg.epochs, top1, top5, train_seconds, total, images / max(train_seconds, 1e-9), self.run_dir, self.rank
        )
        self._write(
            "summary",
            epochs=cfg.epochs,
            top1=top1,
            top5=top5,
            train_seconds=train_seconds,
            total_seconds=total,
            img_per_s=summary.images_per_second,
        )
        self.close()
        return summary

    def close(self) -> None:
        """Close the log and leave the process group (safe to call twice)."""
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.reducer is not None:
            self.reducer.remove()
        if self.groups is not None:
            destroy(self.groups)
            self.groups = None

    def _write(self, kind: str, **fields) -> None:
        if self.log is not None:  # rank 0
            self.log.write(kind, **fields)

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        if self.groups is not None:
            value = value.detach().clone()
            checked("all_reduce of the logged loss", dist.all_reduce, value, group=self.groups.world)
            value /= self.world
        return value.item()
