"""Preemption: signals end a run in a checkpoint, on every rank at the same step.

    stop = StopSignals(groups)          # installs handlers for SIGTERM, SIGINT, SIGUSR1
    ...
    verdict = stop.poll(save_due=...)   # once per step, on every rank
    if verdict.signum: checkpoint this step, exit 128 + signum
    n = stop.most(len(val_loader))      # validation: every rank polls n times, once per batch
    stop.close()                        # the previous handlers back

SIGTERM is what Slurm (at the time limit, on `scancel`) and Kubernetes send before they kill;
SIGUSR1 is what `sbatch --signal=USR1@120` sends ahead of the time limit; SIGINT is Ctrl-C.
The first signal only sets a flag. A second one exits at once (status 128 + signal).

All ranks must stop after the same step (the checkpoint is one state of one model), and a
signal may reach one rank only (`kill` of one process) or all at different moments. So each
step every rank puts its flag, and whether it wants a checkpoint (rank 0's timer), into a
small tensor that is max-reduced over a Gloo group of its own; the reduction issued after
step i is read after step i + 1, so it never stalls the step, and every rank reads the same
value at the same step. A single process reads its own flag.

Validation polls too, once per batch: a signal stops it at the next batch, and the run ends
in the checkpoint of the last finished step, marked so that the resumed run validates that
epoch again. The ranks' validation shares may differ by a batch, so every rank polls as often
as the rank with the most batches (`most`, one max-reduction per validation). The bound: a
signal is acted on at the end of the training step or validation batch in progress (one
process), or of the one after it (several: the flags travel in the reduction that overlaps
the next step or batch).

Orphans: under a launcher (torchrun, srun, mpirun) a rank asks the kernel for a signal of its
own (`PARENT_DIED`, a real-time signal) when its parent dies (`PR_SET_PDEATHSIG`), so SIGKILL
of the launcher still ends every rank in a checkpoint instead of leaving them training on. It
is not SIGTERM because the kernel may deliver it more than once (once per thread that holds
the request), and a second SIGTERM means "exit at once": repeats of `PARENT_DIED` are ignored,
and the run stops as for SIGTERM (status 143).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastres import FastresError
from fastres.distributed.collectives import checked

__all__ = ["PARENT_DIED", "SIGNALS", "Preempted", "StopSignals", "Verdict", "die_with_parent", "exit_status"]

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
PARENT_DIED = signal.SIGRTMIN + 2 if hasattr(signal, "SIGRTMIN") else None  # Linux; clear of glibc's own
_PR_SET_PDEATHSIG = 1


class Preempted(FastresError):
    """A signal stopped the run after a checkpoint; the message says where it is."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by a signal."""
    return 128 + signum


def die_with_parent(signum: int) -> bool:
    """Ask Linux for signal `signum` when the parent process dies (0: none); True when that is now in force."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if signum and os.getppid() != parent:  # the parent died before the request: act now
        os.kill(os.getpid(), signum)
    return True


@dataclass(frozen=True)
class Verdict:
    signum: int = 0  # the signal every rank stops for (the highest number seen), or 0
    save: bool = False  # rank 0 asked for a timed checkpoint at this step
    abort: bool = False  # rank 0 asked every rank to stop (its checkpoint writes keep failing)


class StopSignals:
    """`follow_parent`: stop as for SIGTERM when the parent process (the launcher) dies."""

    def __init__(self, groups=None, follow_parent: bool = False):
        self.signum = 0
        self.parent_died = False
        self._following = False
        self._previous = {}
        self._group = None
        self._pending: tuple[torch.Tensor, object] | None = None
        if groups is not None:
            # a group of its own, on the CPU: the flag never waits behind gradient traffic
            self._group = checked("new_group (stop signals)", dist.new_group, backend="gloo", timeout=groups.timeout)
        self.group = self._group  # the flags' Gloo group (None for one process), for its timeout
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with whoever has them
                break
        else:
            if follow_parent and PARENT_DIED is not None:
                self._previous[PARENT_DIED] = signal.signal(PARENT_DIED, self._handle_parent_death)
                self._following = die_with_parent(PARENT_DIED)  # after the handler: a dead parent is seen at once

    def _handle(self, signum, frame) -> None:
        if self.signum:
            os._exit(exit_status(signum))  # the second signal: at once
        self.signum = signum

    def _handle_parent_death(self, signum, frame) -> None:
        self.parent_died = True  # repeats (one per thread that asked) change nothing
        if not self.signum:
            self.signum = signal.SIGTERM

    def poll(self, save_due: bool = False, abort: bool = False) -> Verdict:
        """Once per step on every rank: what every rank agrees to do after this step."""
        if self._group is None:
            return Verdict(self.signum, save_due, abort)
        mine = torch.tensor([self.signum, int(save_due), int(abort)], dtype=torch.int64)
        agreed = Verdict()
        if self._pending is not None:
            values, work = self._pending
            checked("all_reduce of the stop flags", work.wait)
            agreed = Verdict(int(values[0]), bool(values[1]), bool(values[2]))
        self._pending = (mine, dist.all_reduce(mine, op=dist.ReduceOp.MAX, group=self._group, async_op=True))
        return agreed

    def most(self, n: int, what: str) -> int:
        """The largest `n` over the ranks (a blocking max-reduction on the flags' group; `n` for one process)."""
        if self._group is None:
            return n
        t = torch.tensor([n], dtype=torch.int64)
        checked(f"all_reduce of the number of {what}", dist.all_reduce, t, op=dist.ReduceOp.MAX, group=self._group)
        return int(t)

    def close(self) -> None:
        """Put the previous handlers back; wait for the last reduction (every rank issued it)."""
        if self._pending is not None:
            try:
                self._pending[1].wait()
            except RuntimeError:
                pass  # a peer that is gone: leaving anyway
            self._pending = None
        if self._following:  # no signal of ours once our handler is gone
            self._following = not die_with_parent(0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
