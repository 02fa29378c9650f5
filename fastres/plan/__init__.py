"""fastres.plan: how long ResNet-50 takes to train on a cluster, before booking it.

    python -m fastres.plan --gpu h100 --gpus 64 --global-batch 8192 --inter-node-gbps 400

  gpus      the GPUs' data-sheet figures (p100, p100-pcie, v100, a100, h100, h200)
  cost      the model: roofline compute per image, alpha-beta ring / tree / hierarchical all-reduce,
            overlap with backward, the data loader's rate -> step, epoch, time to train
  choose    the advice: all-reduce, wire dtype and bucket size with the shortest step
  records   published record runs (Goyal et al., Akiba et al., Mikami et al., MLPerf) to check the model
  cli       the command line (`python -m fastres.plan`, `fastres-plan`)

Imports no torch: it runs anywhere, before anything is installed but fastres.
"""

from fastres.plan.cost import Cluster, Estimate, Job, estimate
from fastres.plan.gpus import GPUS, lookup_gpu

__all__ = ["GPUS", "Cluster", "Estimate", "Job", "estimate", "lookup_gpu"]
