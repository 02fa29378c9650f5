"""Emulated hosts on one machine: real multi-host runs over throttled links (needs root).

    python -m fastres.distributed.emulate --hosts 4 --ranks-per-host 2 --link-gbit 1 -- \
        python -m fastres.train --threads 1 --allreduce hierarchical

  network     EmulatedNetwork: K network namespaces on one bridge, links shaped with tc, torn down on exit
  processes   run_on_hosts: a command per rank (torchrun's variables), per host or once, bounded in time
  __main__    the command line

Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking) with no route out of the bridge.
"""

from fastres.distributed.emulate.network import EmulatedNetwork, EmulationError, Host, missing_requirements
from fastres.distributed.emulate.processes import run_on_hosts

__all__ = ["EmulatedNetwork", "EmulationError", "Host", "missing_requirements", "run_on_hosts"]
