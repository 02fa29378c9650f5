"""fastres.distributed: multi-process training on torch.distributed (NCCL on GPUs, Gloo on CPU); imports
fastres.kernels only.

  launcher      where this process sits, as torchrun / Slurm / Open MPI / MPICH variables say
  topology      Topology: rank, node, local rank after the virtual-node split (FASTRES_VIRTUAL_NODES)
  groups        init_distributed / destroy: the default group and the intra- and inter-node groups;
                set_collective_timeout: the running job's bound on a wait for a peer
  reducer       Reducer: the bucketed gradient all-reduce over slices of fastres.kernels.flat's gradient
                buffer, flat or hierarchical, overlapped with backward
  collectives   the job's other collectives (broadcasts, sums, the weight-agreement check), one-line failures
  errors        TopologyError, DistTimeoutError, CollectiveError
  elastic       `python -m fastres.distributed.elastic`: torchrun for an elastic job, its flags checked first
  emulate       `python -m fastres.distributed.emulate`: emulated hosts (network namespaces) on one machine

    topology = discover()                       # from the launcher's environment
    groups = init_distributed(topology)         # several ranks: the default group and its subgroups
    reducer = Reducer(layout, groups)           # layout: the model's fastres.kernels.flat.FlatParams
    ...
    destroy(groups)

"""

from fastres.distributed.errors import CollectiveError, DistTimeoutError, TopologyError
from fastres.distributed.groups import (
    ProcessGroups,
    cuda_device,
    destroy,
    init_distributed,
    plan_groups,
    set_collective_timeout,
)
from fastres.distributed.reducer import ALGORITHMS, WIRE_DTYPES, Reducer
from fastres.distributed.topology import Topology, discover

__all__ = [
    "ALGORITHMS",
    "WIRE_DTYPES",
    "CollectiveError",
    "DistTimeoutError",
    "ProcessGroups",
    "Reducer",
    "Topology",
    "TopologyError",
    "cuda_device",
    "destroy",
    "discover",
    "init_distributed",
    "plan_groups",
    "set_collective_timeout",
]
