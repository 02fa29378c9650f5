"""The errors of fastres.distributed, each a FastresError: the command line prints one line.

TopologyError     the launcher's environment is missing, malformed or inconsistent (names the variable)
DistTimeoutError  a rendezvous or a setup collective waited longer than the timeout
CollectiveError   a collective of a running job failed or timed out (names it and its ranks)
"""

from __future__ import annotations

from fastres import FastresError

__all__ = ["CollectiveError", "DistTimeoutError", "TopologyError"]


class TopologyError(FastresError):
    """The launcher's environment is missing, malformed or inconsistent; the message names the variable."""


class DistTimeoutError(TopologyError):
    """A rendezvous or a setup collective waited longer than the timeout for other ranks."""


class CollectiveError(FastresError, RuntimeError):
    """A collective failed or timed out; the message names it, its bucket (if any) and its ranks.

    A command ends on it with exit status 75 (EX_TEMPFAIL of sysexits.h: try again), not the 2 of bad input:
    a peer that died or was cut off is no fault of the command line, and an elastic launcher (torchrun
    restarts on any failure) or a requeue script restarts the job from its newest checkpoint."""

    exit_status = 75
