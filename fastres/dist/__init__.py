"""fastres.dist: multi-process training on torch.distributed (NCCL on GPUs, Gloo on CPU).

  fastres.dist.topology   who is where: rank, local rank, node, from torchrun / Slurm / MPI
                          variables; the process group and its intra- and inter-node groups;
                          virtual nodes (FASTRES_VIRTUAL_NODES) to run the hierarchy on one box
  fastres.dist.reducer    the bucketed gradient all-reduce over slices of fastres.flat's
                          gradient buffer, flat or hierarchical, overlapped with backward

Layering: dist imports flat and ops, never the trainer, the data or the optimizers.
"""
