"""The training loop: data -> forward -> loss -> backward/reduce -> step -> log, validation every epoch.

`Trainer.from_config(cfg, resume).fit()` is everything `python -m fastres.train` does after parsing flags
(`resume`: the fastres.run.resume.ResumePlan of --resume, or None): fastres.run.assembly builds the run's
parts (fastres.run.parts.RunParts) and the loop's state (fastres.run.state.TrainState), and `Trainer(parts,
state)` takes them as they are handed over, stand-ins included. This file is the loop: an optimizer step is
fastres.run.step.train_step, a validation fastres.run.validation.validate, and every time figure comes
from one clock (fastres.run.timing). Losses stay device tensors and the host synchronises only on log steps
(`--log-every`).

Faults (README, "When things go wrong"): a signal ends the run in a checkpoint of the step
every rank agreed on (fastres.run.preemption), also during validation (polled once per batch:
the checkpoint says the epoch's validation is still to do, and the resumed run does it
first); checkpoints are also taken every `--checkpoint-every` steps / `--checkpoint-minutes`,
in the background; a step whose gradients hold NaN/Inf is skipped on every rank
(fastres.run.stepguard), and no checkpoint is taken while steps are being skipped, so the
last one from before survives; an undecodable sample is replaced and listed
(fastres.run.badsamples). However `fit()` ends, the run is released.
"""

from __future__ import annotations

import functools
import itertools
import signal
import time
from typing import NoReturn

import torch.distributed as dist

from fastres import FastresError
from fastres.checkpoint.state import restore_rng, rng_state
from fastres.config import TrainConfig
from fastres.distributed import CollectiveError
from fastres.distributed import collectives as coll
from fastres.model.bn import recompute_bn_statistics
from fastres.optim.factory import set_hyperparameters
from fastres.run.assembly import assemble
from fastres.run.parts import RunParts
from fastres.run.preemption import Preempted
from fastres.run.progress import Estimate, Progress
from fastres.run.runlog import Summary
from fastres.run.state import TrainState
from fastres.run.step import train_step
from fastres.run.timing import StepTimer
from fastres.run.validation import Validation, validate

__all__ = ["Summary", "Trainer", "TrainingDiverged"]


class TrainingDiverged(FastresError, FloatingPointError):
    """Too many steps in a row had NaN or Inf gradients (every rank skipped them)."""

    shared = True  # every rank meets it: rank 0 says it


class Trainer:
    def __init__(self, parts: RunParts, state: TrainState | None = None):
        self.parts, self.cfg = parts, parts.cfg
        self.state = TrainState() if state is None else state
        parts.step_now = lambda: self.state.step
        self.timer = StepTimer()
        self.progress = Progress(self.cfg.progress and parts.rank == 0, self.cfg.progress_seconds, self.timer)
        self.estimate = Estimate(parts.rank == 0, self.cfg.epochs, parts.steps_per_epoch, parts.global_batch,
                                 parts.precision.name)  # fmt: skip

    @classmethod
    def from_config(cls, cfg: TrainConfig, resume=None) -> Trainer:
        """The run `cfg` describes, its parts built (and `resume`'s checkpoint restored)."""
        return cls(*assemble(cfg, resume))

    def train_epoch(self, epoch: int, start: int = 0) -> float:
        """This rank's share of one epoch, from optimizer step `start` on; returns the seconds spent."""
        p, state, acc = self.parts, self.state, self.cfg.accumulate
        p.model.train()
        p.data.train.set_epoch(epoch, start * acc)
        self.progress.start_epoch(epoch, self.cfg.epochs, p.steps_per_epoch, start)
        self.timer.start_epoch()
        batches = iter(p.data.train)
        for j in range(start, p.steps_per_epoch):
            lr = self._set_hyperparameters()
            images = train_step(p, itertools.islice(batches, acc), acc)
            if images is None:
                break  # the loader ran out before a whole step
            state.step, state.step_done_at = state.step + 1, time.time()
            self.timer.step()
            last_of_epoch = j + 1 == p.steps_per_epoch
            if self.cfg.bn_eval == "batch" and last_of_epoch:
                state.last_batch = images.clone()  # the BN statistics of validation (--bn-eval batch)
            loss = ips = None
            if (j + 1) % self.cfg.log_every == 0 or last_of_epoch:
                steps, seconds = self.timer.window()
                loss, ips = self._log_train(epoch, lr, steps * p.global_batch / seconds)
                self.timer.new_window()
            self.progress.update(loss, ips, lr)
            estimate = self.estimate.line(self.timer, epoch, j + 1)
            if estimate:
                p.say(estimate)
            self._after_step(last_of_epoch)
        self.progress.end_epoch()
        return self.timer.epoch_seconds()

    def _set_hyperparameters(self) -> float:
        """This step's lr, momentum and the optimizer's own per-step values, into every param group."""
        return set_hyperparameters(self.parts.optimizer, self.parts.schedule, self.state.step)

    def _log_train(self, epoch: int, lr: float, ips: float) -> tuple[float | None, float]:
        """A log step (syncs the device): the window's mean loss, skipped steps, bad samples."""
        p, step = self.parts, self.state.step
        stats = p.guard.take(functools.partial(coll.mean_over_ranks, p.groups))
        p.bad.drain("train", p.data.train)
        momentum = p.optimizer.param_groups[0].get("momentum")
        p.write("train", epoch=epoch + 1, step=step, loss=stats.loss, lr=lr, momentum=momentum, img_per_s=ips,
                skipped_steps=stats.skipped)  # fmt: skip
        if p.guard.too_many(stats):
            raise TrainingDiverged(f"{stats.in_a_row} steps in a row had NaN/Inf gradients (step {step}, epoch "
                                   f"{epoch + 1}); try a lower --lr or a longer --warmup-epochs; "
                                   f"{p.last_checkpoint()}")  # fmt: skip
        return stats.loss, ips

    def _after_step(self, last_of_epoch: bool) -> None:
        """Every rank, every step: stop for a signal, or checkpoint when due (all ranks agree on both)."""
        p = self.parts
        verdict = p.stop.poll(save_due=p.saver.timer_due(), abort=p.saver.failing)
        if verdict.abort:
            raise FastresError(f"{p.saver.max_failures} checkpoint writes in a row failed (see above); stopping "
                               f"so that no more work goes unsaved; {p.last_checkpoint()}")  # fmt: skip
        if verdict.signum:
            self._stop(verdict.signum)
        if (verdict.save or p.saver.step_due(self.state.step)) and not last_of_epoch:
            p.checkpoint(self.state)

    def _stop(self, signum: int, *, best: bool = False, validation: Validation | None = None) -> NoReturn:
        """Checkpoint the last finished step and raise Preempted (every rank, at the same step).

        validation: the one the signal stopped (of epoch `state.val_pending`, which the checkpoint says is
        to be done again)."""
        p, state = self.parts, self.state
        saved = p.checkpoint(state, best=best, wait=True)
        name = signal.Signals(signum).name  # the signal every rank agreed on (one of preemption.SIGNALS)
        if p.stop.parent_died:
            name = "the death of the launcher (parent process)"
        how = f"--resume auto --name {self.cfg.name}" if self.cfg.name else f"--resume {p.run_dir}"
        during, record = "", dict(signal=name, step=state.step, during="validation" if validation else "training")
        if validation:
            (done, batches), epoch = validation.stopped, state.val_pending
            during = f", in the validation of epoch {epoch} (batch {done} of {batches}; done again when resumed)"
            record.update(epoch=epoch, val_batches_done=done, val_batches=batches)
        newest = p.saver.newest()
        where = f"checkpoint {newest}" if saved else f"step {state.step} not saved; {p.last_checkpoint()}"
        p.write("stop", **record, checkpoint=str(newest) if newest else None)
        raise Preempted(f"stopped by {name} after step {state.step}{during}; {where}; continue with the same "
                        f"command and {how}", signum)  # fmt: skip

    def _end_epoch(self, epoch: int, seconds: float | None, steps: int) -> tuple[float, float, bool]:
        """Validate epoch `epoch` (0-based) after its `steps` steps in `seconds` (None: a validation done
        again on resume), log it, checkpoint it; (top-1, top-5, whether the target is reached)."""
        cfg, p, state = self.cfg, self.parts, self.state
        rng = rng_state()
        p.model.eval()
        result = validate(p.forward, p.data.val, p.device, p.amp, p.groups, p.stop)
        if result.stopped:
            restore_rng(rng)  # the checkpoint is the state before this validation: a resumed run redoes it
            state.val_pending = epoch + 1
            self._stop(result.signum, validation=result)
        p.bad.drain("val", p.data.val)
        top1, top5, n = result.top1, result.top5, result.images
        state.last_val = dict(epoch=epoch + 1, top1=top1, top5=top5)
        better = top1 > state.best[0]
        state.best = (top1, epoch + 1) if better else state.best
        ips = steps * p.global_batch / seconds if seconds else None
        p.write("val", **state.last_val, step=state.step, images=n, epoch_seconds=seconds, img_per_s=ips)
        state.val_pending = None
        train = f", train {seconds:.1f}s" if seconds is not None else " (validation done again after the resume)"
        line = f"epoch {epoch + 1}/{cfg.epochs}: val top-1 {top1:.2f}% top-5 {top5:.2f}% ({n} images){train}"
        if result.signum:
            p.say(line)
            self._stop(result.signum, best=better)
        p.checkpoint(state, best=better, wait=epoch + 1 == cfg.epochs)
        p.say(line)
        reached = cfg.target_top1 is not None and top1 >= cfg.target_top1
        if reached:
            p.say(f"fastres: reached the target top-1 {cfg.target_top1}% after epoch {epoch + 1}; stopping")
            p.write("target", epoch=epoch + 1, top1=top1, target=cfg.target_top1)
        return top1, top5, reached

    def fit(self) -> Summary:
        """Train from the start (or the resumed step) to the last epoch; release the run however it ends."""
        try:
            summary = self._fit()
        except BaseException as e:
            # a peer died or was cut off: fastres's collectives say so; torch's own calls (SyncBN's) raise DistError
            lost = self.parts.peer_lost(e, self.state) if isinstance(e, (CollectiveError, dist.DistError)) else None
            self.parts.close(error=True)
            if lost is not None:
                raise lost from e
            raise
        self.parts.close()
        return summary

    def _fit(self) -> Summary:
        cfg, p, state, train_seconds, images = self.cfg, self.parts, self.state, 0.0, 0
        for line in p.describe(state):
            p.say(line)
        top1 = top5 = float("nan")
        done = state.epochs_done(p.steps_per_epoch)  # epochs finished before this attempt
        reached = False
        if state.val_pending:  # the attempt before stopped in this validation (or skipped to it): done again
            top1, top5, reached = self._end_epoch(done - 1, None, 0)
        for epoch in range(done, cfg.epochs if not reached else done):
            done = epoch + 1
            start = state.step - epoch * p.steps_per_epoch
            seconds = self.train_epoch(epoch, start)
            train_seconds += seconds
            images += (p.steps_per_epoch - start) * p.global_batch
            coll.check_weights_agree(p.groups, p.layout.params, f"after epoch {epoch + 1}")
            if cfg.bn_eval == "batch":  # no moving averages: the last batch's statistics, pooled over ranks
                recompute_bn_statistics(p.model, [state.last_batch], p.groups.world if p.groups else None)
            coll.broadcast_tensors(p.groups, list(p.model.buffers()), "BN statistics")  # validate/save rank 0's
            top1, top5, reached = self._end_epoch(epoch, seconds, p.steps_per_epoch - start)
            if reached:
                break  # the epoch's checkpoint is written
        total = time.perf_counter() - p.t_start
        ips = images / max(train_seconds, 1e-9)
        record = dict(epochs=done, top1=top1, top5=top5, train_seconds=train_seconds, total_seconds=total)
        p.write("summary", **record, img_per_s=ips, best_top1=state.best[0], best_epoch=state.best[1])
        return Summary(done, top1, top5, train_seconds, total, ips, p.run_dir, p.rank)
