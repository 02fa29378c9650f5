"""fastres.plan: how long ResNet-50 takes to train on a cluster, before booking it (`python -m fastres.plan`);
a cost model from published runs, importing only fastres.model (to count ResNet-50's work).

    python -m fastres.plan --device h100 --devices 64 --global-batch 8192 --inter-node-gbps 3200

  devices    data-sheet figures of the GPUs, TPU chips and CPU sockets the planner knows
  speed      t_step(b) = b / R + t0 per device: the form, and fits through published points
  records    published runs, each with its source; role calibration or validation
  calibrate  which calibration run sets which speed (RECIPES), computed from those runs only
  allreduce  alpha-beta cost of ring, tree, flat (NCCL's choice), hierarchical, 2d-torus (a TPU pod's torus)
  cost       a step, an epoch, a run: compute, the all-reduce backward does not hide, evaluations
  scenario   a run's inputs -> Cluster and Job, with each device kind's defaults: one model for all callers
  epochs     epochs to a target top-1 from the global batch, a law per recipe family
  epoch_records  the MLPerf results those laws are fitted on, each by round and folder
  userspeed  your own speed: --device-images-per-s R[@b], --calibrate-run RUN_DIR
  limits     sizes no run can have (memory, steps per epoch, devices)
  choose     the advice: all-reduce, wire dtype and bucket size with the shortest step
  sweep      how many devices are worth booking: time to accuracy over sizes, the knee
  plot       the sweep as a PNG (matplotlib, when asked)
  cpu        a CPU cluster of the machine at hand: --measure-cpu, --calibrate-cpu
  jsonfile   reading a JSON file a flag names (one-line errors)
  validate   each published run beside the prediction (`--validate`), with published and predicted epochs
  request    what the command line asks for, checked (one-line errors)
  show       what the command line prints (text or JSON)
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
