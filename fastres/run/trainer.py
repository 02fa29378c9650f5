"""The training loop: data -> forward -> loss -> backward/reduce -> step -> log, validation every epoch.

`Trainer(cfg, plan).fit()` is everything `python -m fastres.train` does after parsing flags
(`plan`: the resume fastres.run.resume chose, or None). Its collaborators (loaders,
model, flat layout, reducer, optimizer, schedule, checkpoints, log) are assembled by
fastres.run.Run and handed over; this file is the loop. Losses stay device tensors and the
host synchronises only on log steps (`--log-every`).

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

import contextlib
import dataclasses
import functools
import signal
import time
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from fastres import FastresError
from fastres.checkpoint.state import restore_rng, rng_state
from fastres.config import TrainConfig
from fastres.distributed import CollectiveError
from fastres.distributed import collectives as coll
from fastres.model.bn import recompute_bn_statistics
from fastres.optim.factory import set_hyperparameters
from fastres.run.execution import autocast
from fastres.run.metrics import accuracy_counts
from fastres.run.parts import Run
from fastres.run.preemption import Preempted
from fastres.run.progress import Progress, format_eta
from fastres.run.runlog import Summary

__all__ = ["ESTIMATE_AFTER", "ESTIMATE_MIN_SECONDS", "Summary", "Trainer", "TrainingDiverged"]

ESTIMATE_AFTER = 10.0  # seconds of training (after WARM_STEPS) after which rank 0 says how long the run will take
ESTIMATE_MIN_SECONDS = 60.0  # ... unless the rest takes less than this: nothing worth planning around
WARM_STEPS = 2  # the first steps of an epoch (workers starting, first allocations) are not timed for the estimate


class TrainingDiverged(FastresError, FloatingPointError):
    """Too many steps in a row had NaN or Inf gradients (every rank skipped them)."""

    shared = True  # every rank meets it: rank 0 says it


class Trainer:
    def __init__(self, cfg: TrainConfig, plan=None):
        self.run = Run(cfg, plan)
        self.cfg = cfg = self.run.cfg
        self.progress = Progress(cfg.progress and self.run.rank == 0, cfg.progress_seconds)
        self._clock: list | None = [None, 0] if self.run.rank == 0 else None  # the estimate's: (start, steps timed)

    def train_epoch(self, epoch: int, start: int = 0) -> float:
        """This rank's share of one epoch, from optimizer step `start` on; returns the seconds spent."""
        run, acc = self.run, self.cfg.accumulate
        run.model.train()
        run.data.train.set_epoch(epoch, start * acc)
        self.progress.start_epoch(epoch, self.cfg.epochs, run.steps_per_epoch, start)
        t0 = t_log = time.perf_counter()
        seen, loss_sum = 0, None
        if self._clock is not None:
            self._clock = [None, -WARM_STEPS]  # time this epoch's steps after its first WARM_STEPS
        for i, (images, labels) in enumerate(run.data.train, start=start * acc):
            if i == run.steps_per_epoch * acc:
                break  # batches that make no whole optimizer step
            last_pass = i % acc == acc - 1
            if i % acc == 0:
                lr = self._set_hyperparameters()
                run.layout.zero_grad()  # in place: .grad stay views of the flat buffer
            with self._sync_unless(last_pass), autocast(run.device, run.amp):
                loss = run.criterion(run.forward(images), labels)
                scaled = loss / acc if acc > 1 else loss
                (run.scaler.scale(scaled) if run.scaler else scaled).backward()  # buckets leave as they fill
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            if not last_pass:
                continue
            if run.reducer is not None:
                run.reducer.wait()  # the mean gradient over all ranks
            # a NaN/Inf on any rank reached every rank's sum: all skip the same steps
            bad = run.scaler.unscale_(run.layout.grads) != 0 if run.scaler else run.guard.check(run.layout.grads)
            if run.fused:
                run.optimizer.step(found_inf=bad)  # a no-op on the device when bad: no host sync
            elif not bad.item():  # torch's SGD cannot skip on the device (a sync on GPUs)
                run.optimizer.step()
            if run.scaler is not None:
                run.scaler.update()
            run.guard.add(loss_sum / acc, bad)
            run.step, seen, loss_sum, j = run.step + 1, seen + 1, None, i // acc
            run.step_done_at = time.time()
            if self.cfg.bn_eval == "batch" and j + 1 == run.steps_per_epoch:
                self.last_batch = images.clone()  # the BN statistics of validation (--bn-eval batch)
            logged = (j + 1) % self.cfg.log_every == 0 or j + 1 == run.steps_per_epoch
            if logged:
                loss_now, ips = self._log_train(epoch, lr, seen * run.global_batch / (time.perf_counter() - t_log))
                seen, t_log = 0, time.perf_counter()
            self.progress.update(loss_now if logged else None, ips if logged else None, lr)
            if self._clock is not None:
                self._tick(epoch, j + 1)
            self._after_step(last_of_epoch=j + 1 == run.steps_per_epoch)
        self.progress.end_epoch()
        return time.perf_counter() - t0

    def _tick(self, epoch: int, step: int) -> None:
        """One step done on rank 0: once ESTIMATE_AFTER seconds of steady steps are timed, say the estimate."""
        clock, now = self._clock, time.perf_counter()
        clock[1] += 1
        if clock[1] == 0:
            clock[0] = now  # the warm-up steps are over: start timing
        elif clock[1] >= 2 and now - clock[0] >= ESTIMATE_AFTER:
            self._clock = None  # once per attempt
            self._say_estimate(epoch, step, (now - clock[0]) / clock[1])

    def _say_estimate(self, epoch: int, step: int, per_step: float) -> None:
        """How long the rest of the run will take here (steps timed after the warm-up), and how to shorten it."""
        run, cfg = self.run, self.cfg
        left = (run.steps_per_epoch - step) + (cfg.epochs - epoch - 1) * run.steps_per_epoch
        rate, epochs = run.global_batch / per_step, cfg.epochs - epoch
        if left * per_step < ESTIMATE_MIN_SECONDS:
            return
        left_text = f"the {epochs} epochs left take" if epochs > 1 else "the epoch left takes"
        run.say(f"fastres: estimate: {left_text} about "
                f"{format_eta(left * per_step)} "
                f"of training here ({rate:.0f} img/s in {run.precision.name}; validation adds a little after each "
                f"epoch). Shorter: fewer "
                f"--epochs or a smaller --image-size (both cost accuracy), or --smoke for a check "
                f"in seconds")  # fmt: skip

    def _set_hyperparameters(self) -> float:
        """This step's lr, momentum and the optimizer's own values from the schedule, into every param group."""
        return set_hyperparameters(self.run.optimizer, self.run.schedule, self.run.step)

    def _sync_unless(self, last_pass: bool):
        """Gradient accumulation: the passes before the last one of a step only accumulate."""
        if last_pass or self.run.reducer is None:
            return contextlib.nullcontext()
        return self.run.reducer.no_sync()

    def _log_train(self, epoch: int, lr: float, ips: float) -> tuple[float | None, float]:
        """A log step (syncs the device): the window's mean loss, skipped steps, bad samples."""
        run = self.run
        stats = run.guard.take(functools.partial(coll.mean_over_ranks, run.groups))
        run.bad.drain("train", run.data.train)
        momentum = run.optimizer.param_groups[0].get("momentum")
        run.write("train", epoch=epoch + 1, step=run.step, loss=stats.loss, lr=lr, momentum=momentum,
                  img_per_s=ips, skipped_steps=stats.skipped)  # fmt: skip
        if run.guard.too_many(stats):
            raise TrainingDiverged(f"{stats.in_a_row} steps in a row had NaN/Inf gradients (step {run.step}, epoch "
                                   f"{epoch + 1}); try a lower --lr or a longer --warmup-epochs; "
                                   f"{run.last_checkpoint()}")  # fmt: skip
        return stats.loss, ips

    def _after_step(self, last_of_epoch: bool) -> None:
        """Every rank, every step: stop for a signal, or checkpoint when due (all ranks agree on both)."""
        run = self.run
        verdict = run.stop.poll(save_due=run.saver.timer_due(), abort=run.saver.failing)
        if verdict.abort:
            raise FastresError(f"{run.saver.max_failures} checkpoint writes in a row failed (see above); stopping "
                               f"so that no more work goes unsaved; {run.last_checkpoint()}")  # fmt: skip
        if verdict.signum:
            self._stop(verdict.signum)
        if (verdict.save or run.saver.step_due(run.step)) and not last_of_epoch:
            run.checkpoint()

    def _stop(self, signum: int, *, best: bool = False, validating: Interrupted | None = None) -> NoReturn:
        """Checkpoint the last finished step and raise Preempted (every rank, at the same step).

        validating: the validation the signal stopped; the checkpoint says it is to be done again."""
        run = self.run
        pending = validating.epoch if validating else None
        saved = run.checkpoint(best=best, wait=True, val_pending=pending)
        name = signal.Signals(signum).name  # the signal every rank agreed on (one of preemption.SIGNALS)
        if run.stop.parent_died:
            name = "the death of the launcher (parent process)"
        how = f"--resume auto --name {self.cfg.name}" if self.cfg.name else f"--resume {run.run_dir}"
        during = ""
        if validating:
            during = (f", in the validation of epoch {validating.epoch} (batch {validating.batch} of "
                      f"{validating.batches}; done again when resumed)")  # fmt: skip
        newest = run.saver.newest()
        where = f"checkpoint {newest}" if saved else f"step {run.step} not saved; {run.last_checkpoint()}"
        record = dict(signal=name, step=run.step, during="validation" if validating else "training")
        if validating:
            record.update(epoch=validating.epoch, val_batches_done=validating.batch, val_batches=validating.batches)
        run.write("stop", **record, checkpoint=str(newest) if newest else None)
        raise Preempted(f"stopped by {name} after step {run.step}{during}; {where}; continue with the same command "
                        f"and {how}", signum)  # fmt: skip

    @torch.inference_mode()
    def validate(self) -> tuple[float, float, int, int] | Interrupted:
        """(top-1 %, top-5 %, images, signal) over the validation split, every image counted once over the
        ranks; signal: one that came during the last batch (0: none); an Interrupted when a stop signal came
        earlier (every rank stops at the same batch).

        The stop flags are polled once per batch, on every rank as often (the rank with the most batches
        decides how often), so a signal ends validation within a batch (two on several processes)."""
        run = self.run
        run.model.eval()
        totals = torch.zeros(3, dtype=torch.int64, device=run.device)  # top-1 hits, top-5 hits, images
        batches = len(run.data.val)
        polls = run.stop.most(batches, "validation batches")
        done = 0
        for images, labels in run.data.val:
            verdict = run.stop.poll()
            if verdict.signum:
                return Interrupted(verdict.signum, done, polls)
            with autocast(run.device, run.amp):
                logits = run.forward(images)
            totals[:2] += accuracy_counts(logits.float(), labels)
            totals[2] += labels.numel()
            done += 1
        for _ in range(polls - done):  # as many polls as the other ranks
            verdict = run.stop.poll()
            if verdict.signum:
                return Interrupted(verdict.signum, done, polls)
        last = run.stop.poll().signum  # a signal during the last batch: the epoch ends, then the run
        run.bad.drain("val", run.data.val)
        top1, top5, n = coll.sum_over_ranks(run.groups, totals, "validation counts").tolist()
        return 100.0 * top1 / max(n, 1), 100.0 * top5 / max(n, 1), n, last

    def _end_epoch(self, epoch: int, seconds: float | None, steps: int) -> tuple[float, float, bool]:
        """Validate epoch `epoch` (0-based) after its `steps` steps in `seconds` (None: a validation done
        again on resume), log it, checkpoint it; (top-1, top-5, whether the target is reached)."""
        cfg, run = self.cfg, self.run
        rng = rng_state()
        result = self.validate()
        if isinstance(result, Interrupted):
            restore_rng(rng)  # the checkpoint is the state before this validation: a resumed run redoes it
            self._stop(result.signum, validating=dataclasses.replace(result, epoch=epoch + 1))
        top1, top5, n, signum = result
        run.last_val = dict(epoch=epoch + 1, top1=top1, top5=top5)
        better = top1 > run.best[0]
        run.best = (top1, epoch + 1) if better else run.best
        ips = steps * run.global_batch / seconds if seconds else None
        run.write("val", **run.last_val, step=run.step, images=n, epoch_seconds=seconds, img_per_s=ips)
        run.val_pending = None
        train = f", train {seconds:.1f}s" if seconds is not None else " (validation done again after the resume)"
        line = f"epoch {epoch + 1}/{cfg.epochs}: val top-1 {top1:.2f}% top-5 {top5:.2f}% ({n} images){train}"
        if signum:
            run.say(line)
            self._stop(signum, best=better)
        run.checkpoint(best=better, wait=epoch + 1 == cfg.epochs)
        run.say(line)
        reached = cfg.target_top1 is not None and top1 >= cfg.target_top1
        if reached:
            run.say(f"fastres: reached the target top-1 {cfg.target_top1}% after epoch {epoch + 1}; stopping")
            run.write("target", epoch=epoch + 1, top1=top1, target=cfg.target_top1)
        return top1, top5, reached

    def fit(self) -> Summary:
        """Train from the start (or the resumed step) to the last epoch; release the run however it ends."""
        try:
            summary = self._fit()
        except BaseException as e:
            # a peer died or was cut off: fastres's collectives say so; torch's own calls (SyncBN's) raise DistError
            lost = self.run.peer_lost(e) if isinstance(e, (CollectiveError, dist.DistError)) else None
            self.run.close(error=True)
            if lost is not None:
                raise lost from e
            raise
        self.run.close()
        return summary

    def _fit(self) -> Summary:
        cfg, run, train_seconds, images = self.cfg, self.run, 0.0, 0
        run.say(f"fastres: {cfg.arch} on {run.data.root} ({run.data.train_size} train / {run.data.val_size} val "
                f"images, {len(run.data.classes)} classes), {run.device}, global batch {run.global_batch}, "
                f"peak lr {run.schedule.peak:.4g}, run folder {run.run_dir}")  # fmt: skip
        run.say(f"fastres: precision {run.precision}")  # which one --precision auto chose, and why
        if run.reducer is not None:
            run.say(f"fastres: {run.topology.describe()}; {run.reducer.describe()}")
        if run.plan is not None and run.plan.checkpoint is not None:
            epoch, into = divmod(run.step, run.steps_per_epoch)
            first = f"; first the validation of epoch {epoch} {run.val_pending_why}" if run.val_pending else ""
            run.say(f"fastres: resuming at step {run.step}, epoch {epoch + 1}, {into}/{run.steps_per_epoch} of the "
                    f"epoch, from {run.plan.checkpoint} (attempt {run.attempt}){first}")  # fmt: skip
        top1 = top5 = float("nan")
        done = run.step // run.steps_per_epoch  # epochs finished before this attempt
        reached = False
        if run.val_pending:  # the attempt before stopped in this validation (or skipped to it): done again
            top1, top5, reached = self._end_epoch(done - 1, None, 0)
        for epoch in range(done, cfg.epochs if not reached else done):
            done = epoch + 1
            start = run.step - epoch * run.steps_per_epoch
            seconds = self.train_epoch(epoch, start)
            train_seconds += seconds
            images += (run.steps_per_epoch - start) * run.global_batch
            coll.check_weights_agree(run.groups, run.layout.params, f"after epoch {epoch + 1}")
            if cfg.bn_eval == "batch":  # no moving averages: the last batch's statistics, pooled over ranks
                recompute_bn_statistics(run.model, [self.last_batch], run.groups.world if run.groups else None)
            coll.broadcast_tensors(run.groups, list(run.model.buffers()), "BN statistics")  # validate/save rank 0's
            top1, top5, reached = self._end_epoch(epoch, seconds, run.steps_per_epoch - start)
            if reached:
                break  # the epoch's checkpoint is written
        total = time.perf_counter() - run.t_start
        ips = images / max(train_seconds, 1e-9)
        record = dict(epochs=done, top1=top1, top5=top5, train_seconds=train_seconds, total_seconds=total)
        run.write("summary", **record, img_per_s=ips, best_top1=run.best[0], best_epoch=run.best[1])
        return Summary(done, top1, top5, train_seconds, total, ips, run.run_dir, run.rank)


@dataclass(frozen=True)
class Interrupted:
    """A validation a stop signal ended before its last batch: `batch` of `batches` done (the most any rank has)."""

    signum: int
    batch: int
    batches: int
    epoch: int = 0  # 1-based, set by the caller
