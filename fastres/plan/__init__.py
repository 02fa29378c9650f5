"""fastres.plan: how long ResNet-50 takes to train on a cluster, before booking it (`python -m fastres.plan`);
a cost model from published runs, importing only fastres.model (to count ResNet-50's work).

    python -m fastres.plan --device h100 --devices 64 --global-batch 8192 --inter-node-gbps 3200

  devices    data-sheet figures of the GPUs, TPU chips and CPU sockets the planner knows
  speed      t_step(b) = b / R + t0 per device: the form, and fits through published points
  records    published runs, each with its source; role calibration or validation
  calibrate  which calibration run sets which speed (RECIPES), computed from those runs only
  allreduce  alpha-beta cost of ring, tree, flat (NCCL's choice), hierarchical, 2d-torus
  cost       a step, an epoch, a run: compute, the all-reduce backward does not hide, evaluations
  choose     the advice: all-reduce, wire dtype and bucket size with the shortest step
  cpu        a CPU cluster of the machine at hand: --measure-cpu, --calibrate-cpu
  jsonfile   reading a JSON file a flag names (one-line errors)
  validate   each published run beside the prediction (`--validate`)
  cli        the command line (`python -m fastres.plan`, `fastres-plan`)

Imports no torch (--measure-cpu imports it when run): it runs anywhere fastres is installed.
"""

from fastres.plan.calibrate import SPEEDS, default_speed
from fastres.plan.cost import Cluster, Estimate, Job, estimate
from fastres.plan.devices import DEVICES, lookup_device
from fastres.plan.gpus import GPUS, lookup_gpu
from fastres.plan.speed import Speed

__all__ = [
    "DEVICES",
    "GPUS",
    "SPEEDS",
    "Cluster",
    "Estimate",
    "Job",
    "Speed",
    "default_speed",
    "estimate",
    "lookup_device",
    "lookup_gpu",
]
