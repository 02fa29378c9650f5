"""A run's parts, assembled once and released once: the Trainer's collaborators.

`Run(cfg, plan)` builds, in this order, each part handed to the next: topology -> process
groups -> stop signals -> run folder (locked by rank 0) -> dataset (listed once, checked by
rank 0) -> loaders -> model -> its one flat layout (fastres.kernels.flat) -> reducer and optimizer on
that layout -> schedule -> step guard -> checkpoints -> metrics log; then restores a
checkpoint when `plan` (fastres.run.resume) holds one. `close()` releases whatever
was built, in reverse, also when building failed half-way.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch
import torch.distributed as dist
from torch import nn

from fastres import FastresError
from fastres.checkpoint import restore_run, run_state
from fastres.checkpoint.saver import Checkpointer
from fastres.checkpoint.state import saved_world_size
from fastres.config import TrainConfig
from fastres.data import check_dataset, make_loaders, max_bad_default, open_dataset
from fastres.data.builtin import builtin_root, rewrite_if_builtin
from fastres.data.dataset import optimizer_steps
from fastres.data.folder import describe_skipped
from fastres.data.loader import resolve_backend
from fastres.distributed import CollectiveError, Reducer, destroy, discover, init_distributed, set_collective_timeout
from fastres.distributed import collectives as coll
from fastres.distributed.reducer import bucket_layout
from fastres.model import build_model
from fastres.model.bn import convert_bn_groups, convert_ghost_bn
from fastres.optim import OPTIMIZERS, build_optimizer
from fastres.optim.amp import LossScaler
from fastres.optim.schedule import run_schedule
from fastres.run.attempts import attempt_loss, earlier_attempt
from fastres.run.badsamples import BadSampleLedger
from fastres.run.console import active_sinks, describe_failure
from fastres.run.execution import pick_device, resolve_precision, seed_all, use_channels_last
from fastres.run.preemption import StopSignals
from fastres.run.resume import processes
from fastres.run.runlock import RunLock
from fastres.run.runlog import MetricsLog, make_run_dir, write_config
from fastres.run.stepguard import StepGuard

__all__ = ["Run"]


class Run:
    def __init__(self, cfg: TrainConfig, plan=None):
        self.cfg, self.plan, self.t_start = cfg, plan, time.perf_counter()
        self.groups = self.data = self.reducer = self.log = self.lock = self.stop = self.saver = self.tb = None
        self.sinks = None
        try:
            self._set_up(cfg)
        except BaseException:
            self.close(error=True)
            raise

    def _set_up(self, cfg: TrainConfig) -> None:
        self.topology = discover(virtual_nodes=cfg.virtual_nodes)
        self.rank, self.world = self.topology.rank, self.topology.world_size
        self.device = pick_device(cfg.device, self.topology)
        self.precision = resolve_precision(cfg.precision, self.device)  # auto: bf16 where it is fast (why says)
        self.amp = self.precision.dtype
        if self.precision.emulated:
            self.say(f"fastres: warning: precision {self.precision}")
        self.channels_last = use_channels_last(cfg.channels_last, self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_all(cfg.seed)
        if cfg.data is None:  # the built-in dataset: its path goes into config.yaml and every checkpoint
            cfg.data = str(builtin_root().resolve())
        if self.topology.distributed:
            self.groups = init_distributed(self.topology, device=self.device, timeout=cfg.dist_timeout)
            if self.topology.physical_local_rank == 0:
                rewrite_if_builtin(cfg.data, self.say)  # one writer per machine; the others wait at the barrier
            coll.checked("barrier after writing the built-in dataset", dist.barrier, group=self.groups.world)
        # under a launcher: one killed with SIGKILL leaves no rank training on
        self.stop = StopSignals(self.groups, follow_parent=self.topology.launcher != "none")
        dataset = open_dataset(cfg.data, cfg.train_list, cfg.val_list, self.say)  # listed once: check, loaders
        skipped = describe_skipped((dataset.train, dataset.val))
        if skipped:  # a FIFO, a link to nothing, a directory named *.JPEG in a class folder: named, not read
            self.say(skipped)
        check = functools.partial(check_dataset, dataset, cfg.data_check, cfg.skip_bad_files, cfg.progress)
        exclude = coll.rank0_first(self.groups, check)
        self.run_dir = coll.rank0_first(self.groups, self._open_run_dir)  # only once the input is known good
        if self.groups is not None:  # the setup's long waits are over: a peer lost from now on is noticed sooner
            set_collective_timeout(self.groups, cfg.collective_timeout, self.stop.group)
        say, limit, sets = self.say, cfg.max_bad_samples, {"train": dataset.train, "val": dataset.val}
        limits = {k: max_bad_default(len(v or ())) if limit is None else limit for k, v in sets.items()}
        val_files = frozenset(p for p, _ in dataset.val.samples) if dataset.val else frozenset()
        split_of = lambda path: "val" if path in val_files else "train"
        self.bad = BadSampleLedger(self.run_dir, limits, split_of, self.groups, self.rank == 0, self.write, say)
        self.data = make_loaders(cfg, self.device, torch.float32, self.channels_last, self.rank, self.world,
                                 exclude=exclude, dataset=dataset, known_bad=frozenset(self.bad.known))  # fmt: skip
        if self.world % cfg.bn_group:
            raise FastresError(f"--bn-group {cfg.bn_group} must divide the {self.world} processes")
        model = build_model(cfg.arch, len(self.data.classes), zero_init_last_gamma=cfg.zero_init_last_gamma)
        self.model = convert_bn_groups(model.to(self.device), cfg.bn_group, self.world, self.rank)
        self.model = convert_ghost_bn(self.model, cfg.bn_virtual_batch)  # --bn-virtual-batch: ghost BN
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # what the loop calls: the model, or its compiled form (same parameters, same state_dict)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        # the model's one flat layout, handed to the reducer and the optimizer
        self.layout = bucket_layout(self.model, self.groups, algorithm=cfg.allreduce, bucket_cap_mb=cfg.bucket_cap_mb)
        if self.groups is not None:
            caps = dict(algorithm=cfg.allreduce, bucket_cap_mb=cfg.bucket_cap_mb)
            self.reducer = Reducer(self.layout, self.groups, wire_dtype=cfg.wire_dtype, **caps)
            coll.broadcast_tensors(self.groups, [self.layout.params, *self.model.buffers()], "parameters and buffers")
        self.optimizer = build_optimizer(cfg, self.model, self.layout)
        self.fused = OPTIMIZERS[cfg.optimizer].skips_on_device  # step(found_inf=): skips a NaN/Inf step on the device
        self.steps_per_epoch = optimizer_steps(len(self.data.train), cfg.accumulate)
        self.global_batch = cfg.batch_size * self.world * cfg.accumulate  # images per optimizer step
        self.scaler = LossScaler(self.device) if self.amp == torch.float16 else None
        self.schedule = run_schedule(cfg, self.steps_per_epoch, self.global_batch)
        self.guard = StepGuard(self.device, cfg.max_skipped_steps)
        self.saver = Checkpointer(self.run_dir, keep=cfg.keep_checkpoints, every_steps=cfg.checkpoint_every,
                                  every_minutes=cfg.checkpoint_minutes, writer=self.rank == 0, say=say)  # fmt: skip
        self.step, self.best, self.last_val, self.attempt = 0, (float("-inf"), 0), None, 1
        self.step_done_at = time.time()  # wall-clock time the last optimizer step (or the setup) ended
        self.val_pending: int | None = None  # an epoch (1-based) whose validation is still to be done
        self.val_pending_why = "that a stop interrupted"  # why, for the resume banner
        self._said_skipping = False
        self.log = MetricsLog(self.run_dir / "metrics.jsonl") if self.rank == 0 else None
        self.sinks = active_sinks()
        if self.sinks is not None:  # a console that fails from now on is a record of the run (fastres.run.console)
            self.sinks.attach(lambda **fields: self.write("sink_dropped", step=self.step, **fields))
        if self.plan is not None and self.plan.state is not None:
            self._resume(self.plan)
        elif self.plan is not None and self.rank == 0:  # --resume auto, nothing to resume
            self._start_again()
        if self.rank == 0:  # on a resume too: a config.yaml cut short by a crash is whole again
            self._write_config()
        if cfg.tensorboard and self.rank == 0:
            from fastres.run.tensorboard import TensorBoardWriter

            self.tb = TensorBoardWriter(self.run_dir)

    def _open_run_dir(self):
        cfg, plan = self.cfg, self.plan
        run_dir = plan.run_dir if plan else make_run_dir(cfg.out, cfg.name, cfg.arch)
        if plan and plan.state is None:  # --resume auto with nothing to resume: start OUT/NAME
            run_dir = make_run_dir(cfg.out, cfg.name, cfg.arch, exact=True)
        self.lock = RunLock(run_dir)  # rank 0 holds it while the run lives
        if self.lock.previous_holder:
            self.say(f"fastres: took over the lock of {run_dir} from a job that is gone ({self.lock.previous_holder})")
        return run_dir

    def _write_config(self) -> None:
        data, reducer, t = self.data, self.reducer, self.topology
        facts = dict(dataset=str(data.root), classes=len(data.classes), train_images=data.train_size)
        facts.update(val_images=data.val_size, backend=resolve_backend(self.cfg.backend), device=str(self.device))
        amp = "fp32 (no autocast)" if self.amp is None else str(self.amp).removeprefix("torch.")
        facts.update(amp=amp, precision_chosen=str(self.precision), channels_last=self.channels_last)
        facts.update(global_batch=self.global_batch)
        facts.update(peak_lr=self.schedule.peak, ranks=self.world, launcher=t.launcher, topology=t.describe())
        facts.update(allreduce=reducer.describe() if reducer else None)
        if self.plan is not None and self.plan.state is not None:
            facts.update(attempt=self.attempt, resumed_from=str(self.plan.checkpoint), resumed_at_step=self.step)
        write_config(self.run_dir, self.cfg.to_dict(), facts)

    def _resume(self, plan) -> None:
        state, where = plan.state, str(plan.checkpoint)
        if list(state["classes"]) != list(self.data.classes):
            saved, now = state["classes"], self.data.classes
            raise FastresError(f"--resume {where}: the run was trained on classes {saved[:3]}... ({len(saved)}), "
                               f"--data has {list(now[:3])}... ({len(now)}): not the same dataset")  # fmt: skip
        where_kw = dict(steps_per_epoch=self.steps_per_epoch, rank=self.rank, world=self.world, where=where)
        self.step = restore_run(state, self.model, self.optimizer, self.data.train, **where_kw)
        extra = state.get("extra", {})
        self.best, self.last_val = tuple(extra.get("best", self.best)), extra.get("val")
        self.attempt = int(extra.get("attempt", 1)) + 1
        self.val_pending = extra.get("val_pending")
        if self.scaler is not None and "loss_scaler" in extra:
            self.scaler.load_state_dict(extra["loss_scaler"])
        saved_world = saved_world_size(state)
        if saved_world != self.world and hasattr(self.data.train, "load_state_dict"):
            self._dali_epoch_boundary(where, saved_world)
        changed = {k: list(v) for k, v in plan.changes.items()}
        saved_data = state.get("config", {}).get("data")
        if saved_data != self.cfg.data:  # a run from before fastres recorded its built-in dataset's path
            changed.setdefault("data", [saved_data, self.cfg.data])
        lost = {}
        if self.rank == 0:  # what the attempt before lost: read from the run folder before this one writes to it
            saved_at = extra.get("time") or plan.checkpoint.stat().st_mtime
            loss = attempt_loss(self.run_dir, int(state["step"]), saved_at, self.world, self.attempt)
            self.say(loss.line())
            lost = loss.record()
        self.write("resume", attempt=self.attempt, checkpoint=where, checkpoint_step=int(state["step"]), step=self.step,
                   world_size=self.world, saved_world_size=saved_world, changed=changed, **lost)  # fmt: skip

    def _start_again(self) -> None:
        """--resume auto in a run folder where an attempt ran but left no checkpoint (it died before its first):
        the run starts again from step 0, and says so with what was lost, as a resume does."""
        earlier = earlier_attempt(self.run_dir)
        if earlier is None:
            return  # a new run
        self.attempt = earlier[0] + 1
        loss = attempt_loss(self.run_dir, 0, earlier[1], self.world, self.attempt)
        self.say(loss.line(checkpoint=False))
        self.write("resume", attempt=self.attempt, checkpoint=None, checkpoint_step=0, step=0, world_size=self.world,
                   saved_world_size=None, changed={}, **loss.record())  # fmt: skip

    def _dali_epoch_boundary(self, where: str, saved_world: int) -> None:
        """A loader whose order is its readers' (DALI) cannot continue another process count's epoch: the run
        continues from the next epoch boundary, validating the interrupted epoch first."""
        spe, step = self.steps_per_epoch, self.step
        if step % spe == 0:
            self.say(f"fastres: {where}: saved by {processes(saved_world)}, resumed by {self.world}: DALI's readers "
                     f"split each epoch by process: epoch {step // spe + 1} on reads a new order")  # fmt: skip
            return
        self.step = (step // spe + 1) * spe
        self.val_pending = step // spe + 1
        self.val_pending_why = f"whose last {self.step - step} steps are skipped"
        self.say(f"fastres: {where}: saved by {processes(saved_world)} at step {step}, resumed by {self.world}: "
                 f"DALI's readers split each epoch by process, so the run continues from the next epoch boundary "
                 f"(step {self.step}: the last {self.step - step} steps of epoch {self.val_pending} are skipped, "
                 "its validation is done first)")  # fmt: skip

    def checkpoint(self, best: bool = False, wait: bool = False, val_pending: int | None = None) -> bool:
        """Checkpoint the current step: every rank's loader state gathered, rank 0 saves (in the background).

        Not while the run is skipping steps (the last step's gradients held NaN/Inf on every rank): such a
        state may hold blown-up weights and NaN BN statistics, and its file would push an older good
        checkpoint out of --keep-checkpoints. Returns whether one was taken (every rank agrees: the
        streak is read from the reduced gradients). val_pending: the epoch (1-based) whose validation
        the checkpoint does not include yet (a resumed run does it first)."""
        skipping = self.guard.streak()
        if skipping:
            if not self._said_skipping:
                self.say(f"fastres: no checkpoint of step {self.step}: its last {skipping} steps were skipped (NaN/Inf "
                         f"gradients); none is written until a step succeeds; {self.last_checkpoint()}")  # fmt: skip
                self._said_skipping = True
            return False
        self._said_skipping = False
        train = self.data.train
        states = coll.gather_objects(self.groups, train.state_dict() if hasattr(train, "state_dict") else None,
                                     "the data loaders' states")  # fmt: skip
        extra = dict(best=list(self.best), val=self.last_val, attempt=self.attempt, world=self.world,
                     time=self.step_done_at)  # fmt: skip
        if val_pending is not None:
            extra["val_pending"] = val_pending
        if self.scaler is not None:
            extra["loss_scaler"] = self.scaler.state_dict()
        kw = dict(step=self.step, steps_per_epoch=self.steps_per_epoch, config=self.cfg.to_dict(), extra=extra)
        snapshot = lambda: run_state(self.model, self.optimizer, classes=self.data.classes, loader_states=states, **kw)
        self.saver.save(snapshot, self.step, best=best, wait=wait)
        return True

    def close(self, error: bool = False) -> None:
        """Release everything (safe to call twice). error: leave the process groups without the closing
        barrier (the other ranks may be gone)."""
        if self.sinks is not None:
            self.sinks.detach()
            self.sinks = None
        for part in ("saver", "log", "tb"):
            if getattr(self, part) is not None:
                (getattr(self, part).finish if part == "saver" else getattr(self, part).close)()
                setattr(self, part, None)
        if self.reducer is not None:
            self.reducer.remove()
            self.reducer = None
        if self.data is not None:
            self.data.close()
        if self.stop is not None:
            self.stop.close()
            self.stop = None
        if self.groups is not None:
            destroy(self.groups, barrier=not error)
            self.groups = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def peer_lost(self, error: BaseException) -> CollectiveError:
        """A collective failed (a peer died or was cut off): the one line every surviving rank ends with, naming the
        peer where the error gives its address, and rank 0's `peer_lost` record (step, seconds since it)."""
        hostnames = self.groups.hostnames if self.groups is not None else []
        text = str(error) if isinstance(error, CollectiveError) else f"a collective failed: {coll.cause(error)}"
        peers = coll.peers_named(text, hostnames)
        if not peers and coll.other_hosts(hostnames, self.rank):  # a timeout names no peer: one of the others
            peers = f"no answer from {coll.other_hosts(hostnames, self.rank)}"
        waited = time.time() - self.step_done_at
        line = (f"lost a peer {waited:.1f} s after step {self.step}: {text}{f' ({peers})' if peers else ''}; exit "
                f"status {CollectiveError.exit_status}, which an elastic launcher restarts on; "
                f"{self.last_checkpoint()}")  # fmt: skip
        self.write("peer_lost", step=self.step, seconds_after_step=round(waited, 3), world_size=self.world,
                   peers=peers or None, error=text[:1000])  # fmt: skip
        return CollectiveError(line)

    def last_checkpoint(self) -> str:
        if self.saver is not None:
            self.saver.finish()  # a write in flight counts once it is on disk
        newest = self.saver.newest() if self.saver else None
        return f"the last checkpoint is {newest}" if newest else "no checkpoint was written yet"

    def say(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def write(self, kind: str, **fields) -> None:
        if self.log is not None:  # rank 0
            self.log.write(kind, **fields)
        if self.tb is not None:
            try:
                self.tb.write(kind, **fields)
            except OSError as e:  # a sink that fails is dropped; the run and metrics.jsonl go on
                tb, self.tb = self.tb, None
                with contextlib.suppress(Exception):
                    tb.close()
                self.say(f"fastres: the TensorBoard events failed ({describe_failure(e)}): no more written; "
                         "training goes on, its records are in metrics.jsonl")  # fmt: skip
                self.write("sink_dropped", step=self.step, sink="tensorboard", reason=describe_failure(e))
