"""A run's parts: the training loop's collaborators, each built once (fastres.run.assembly) and released once.

    parts = RunParts(cfg, model=..., layout=..., optimizer=..., ...)   # or assemble(cfg, resume)
    parts.checkpoint(state, best=False, wait=False)    # every rank: the loaders' states gathered, rank 0 saves
    parts.say(text); parts.write("val", ...)           # rank 0: a line on stdout; a metrics.jsonl record
    parts.peer_lost(error, state)                      # the one line a rank ends with when a collective failed
    parts.close(error=False)                           # everything released, in reverse (safe twice)

A part the run has not built (one process: no process groups, no reducer; no TensorBoard) is None, and so
is every part after one whose building failed: `close` releases what there is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fastres.checkpoint import run_state
from fastres.config import TrainConfig
from fastres.distributed import CollectiveError, destroy
from fastres.distributed import collectives as coll
from fastres.run.console import describe_failure
from fastres.run.state import TrainState

__all__ = ["RunParts"]


@dataclass(eq=False)
class RunParts:
    cfg: TrainConfig
    resume: object = None  # fastres.run.resume.ResumePlan: the checkpoint this attempt continues, or None
    topology: object = None  # fastres.distributed.Topology
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: object = None  # fastres.run.execution.Precision: what the run computes in, and why
    amp: torch.dtype | None = None  # its autocast dtype (None: fp32)
    channels_last: bool = False
    groups: object = None  # fastres.distributed.ProcessGroups (None: one process)
    stop: object = None  # fastres.run.preemption.StopSignals
    lock: object = None  # fastres.run.runlock.RunLock (rank 0)
    run_dir: Path | None = None
    bad: object = None  # fastres.run.badsamples.BadSampleLedger
    data: object = None  # fastres.data.Loaders: train, val, classes, root, sizes
    model: nn.Module | None = None
    forward: object = None  # what the loop calls: the model, or its compiled form (same parameters)
    criterion: nn.Module | None = None
    layout: object = None  # the model's one fastres.kernels.flat.FlatParams, handed to the reducer and optimizer
    reducer: object = None  # fastres.distributed.Reducer (None: one process)
    optimizer: torch.optim.Optimizer | None = None
    fused: bool = False  # the optimizer skips a non-finite step on the device (no host sync)
    scaler: object = None  # fastres.optim.amp.LossScaler (fp16), else fastres.run.step.NoLossScaling
    guard: object = None  # fastres.run.stepguard.StepGuard
    schedule: object = None  # fastres.optim.schedule: lr, momentum and RMSprop share by step
    steps_per_epoch: int = 0
    global_batch: int = 0  # images per optimizer step
    saver: object = None  # fastres.checkpoint.saver.Checkpointer
    log: object = None  # fastres.run.runlog.MetricsLog (rank 0)
    tb: object = None  # fastres.run.tensorboard.TensorBoardWriter (rank 0, --tensorboard)
    sinks: object = None  # fastres.run.console.Sinks: stdout and stderr that may fail
    t_start: float = field(default_factory=time.perf_counter)
    step_now: Callable[[], int] = lambda: 0  # the loop's step, for records made outside it (a dropped console)
    _said_skipping: bool = field(default=False, init=False, repr=False)  # "no checkpoint of step N" said, once a streak

    def checkpoint(self, state: TrainState, best: bool = False, wait: bool = False) -> bool:
        """Checkpoint `state.step`: every rank's loader state gathered, rank 0 saves (in the background).

        Not while the run is skipping steps (the last step's gradients held NaN/Inf on every rank): such a
        state may hold blown-up weights and NaN BN statistics, and its file would push an older good
        checkpoint out of --keep-checkpoints. Returns whether one was taken (every rank agrees: the
        streak is read from the reduced gradients). A validation still to be done (`state.val_pending`)
        is saved as such: a resumed run does it first."""
        skipping = self.guard.streak()
        if skipping:
            if not self._said_skipping:
                self.say(f"fastres: no checkpoint of step {state.step}: its last {skipping} steps were skipped "
                         f"(NaN/Inf gradients); none is written until a step succeeds; "
                         f"{self.last_checkpoint()}")  # fmt: skip
                self._said_skipping = True
            return False
        self._said_skipping = False
        train = self.data.train
        states = coll.gather_objects(self.groups, train.state_dict() if hasattr(train, "state_dict") else None,
                                     "the data loaders' states")  # fmt: skip
        extra = dict(state.state_dict(), world=self.world)
        scaler_state = self.scaler.state_dict()
        if scaler_state:  # fp16's loss scale
            extra["loss_scaler"] = scaler_state
        kw = dict(step=state.step, steps_per_epoch=self.steps_per_epoch, config=self.cfg.to_dict(), extra=extra)
        snapshot = lambda: run_state(self.model, self.optimizer, classes=self.data.classes, loader_states=states, **kw)
        self.saver.save(snapshot, state.step, best=best, wait=wait)
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

    def peer_lost(self, error: BaseException, state: TrainState) -> CollectiveError:
        """A collective failed (a peer died or was cut off): the one line every surviving rank ends with, naming the
        peer where the error gives its address, and rank 0's `peer_lost` record (step, seconds since it)."""
        hostnames = self.groups.hostnames if self.groups is not None else []
        text = str(error) if isinstance(error, CollectiveError) else f"a collective failed: {coll.cause(error)}"
        peers = coll.peers_named(text, hostnames)
        if not peers and coll.other_hosts(hostnames, self.rank):  # a timeout names no peer: one of the others
            peers = f"no answer from {coll.other_hosts(hostnames, self.rank)}"
        waited = time.time() - state.step_done_at
        line = (f"lost a peer {waited:.1f} s after step {state.step}: {text}{f' ({peers})' if peers else ''}; exit "
                f"status {CollectiveError.exit_status}, which an elastic launcher restarts on; "
                f"{self.last_checkpoint()}")  # fmt: skip
        self.write("peer_lost", step=state.step, seconds_after_step=round(waited, 3), world_size=self.world,
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
                self.write("sink_dropped", step=self.step_now(), sink="tensorboard", reason=describe_failure(e))

    def describe(self, state: TrainState) -> list[str]:
        """The lines a run starts with: what it trains on, how, where; a resume's position and attempt."""
        data = self.data
        lines = [f"fastres: {self.cfg.arch} on {data.root} ({data.train_size} train / {data.val_size} val images, "
                 f"{len(data.classes)} classes), {self.device}, global batch {self.global_batch}, peak lr "
                 f"{self.schedule.peak:.4g}, run folder {self.run_dir}",
                 f"fastres: precision {self.precision}"]  # fmt: skip  # which one --precision auto chose, and why
        if self.reducer is not None:
            lines.append(f"fastres: {self.topology.describe()}; {self.reducer.describe()}")
        if self.resume is not None and self.resume.checkpoint is not None:
            epoch, into = divmod(state.step, self.steps_per_epoch)
            first = f"; first the validation of epoch {epoch} {state.val_pending_why}" if state.val_pending else ""
            lines.append(f"fastres: resuming at step {state.step}, epoch {epoch + 1}, {into}/{self.steps_per_epoch} "
                         f"of the epoch, from {self.resume.checkpoint} (attempt {state.attempt}){first}")  # fmt: skip
        return lines
