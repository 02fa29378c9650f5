"""Train a ResNet on ImageNet-layout data: `python -m fastres.train`.

    # the built-in dataset (written once under ~/.cache/fastres), CPU or GPU, no flags needed
    python -m fastres.train

    # ImageNet on one GPU: ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG
    python -m fastres.train --data /data/imagenet --batch-size 256 --epochs 90

    # a shipped preset or a YAML file of your own; flags override it
    python -m fastres.train --config builtin --epochs 3
    python -m fastres.train --data /data/imagenet --config my-recipe.yaml --lr 0.2

    # continue a run that stopped (uses the run folder's latest checkpoint)
    python -m fastres.train --data /data/imagenet --resume runs/resnet50-20261123-101500

    # one machine, 8 GPUs: one process per GPU; gradients averaged bucket by bucket in backward
    torchrun --standalone --nproc-per-node 8 -m fastres.train --data /data/imagenet

    # 32 machines x 8 GPUs (Slurm; srun -N32 --ntasks-per-node 8 works the same without torchrun):
    # reduce-scatter in the node, all-reduce across nodes, all-gather in the node, bf16 on the wire
    torchrun --nnodes 32 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        -m fastres.train --data /data/imagenet --config resnet50-goyal --wire-dtype bf16

    # the hierarchical path on one CPU box: 4 processes as 2 virtual nodes of 2
    torchrun --standalone --nproc-per-node 4 -m fastres.train --virtual-nodes 2 --threads 1

`--lr` is the peak learning rate per 256 images, scaled linearly with the global batch
(Goyal et al. 2017). Run `python -m fastres.train --help` for every flag. Bad flags, data
folders or checkpoints end with a one-line error and exit status 2.
"""

from __future__ import annotations

import sys

from fastres import FastresError


def main(argv: list[str] | None = None) -> int:
    from fastres.config import parse_args
    from fastres.trainer import Trainer

    try:
        cfg = parse_args(argv)
        summary = Trainer(cfg).fit()
    except FastresError as e:
        print(f"python -m fastres.train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "python -m fastres.train: interrupted; the last completed epoch is in the run folder's checkpoint.pt",
            file=sys.stderr,
        )
        return 130
    if summary.rank != 0:
        return 0
    print(
        f"fastres: done: {summary.epochs} epochs, val top-1 {summary.top1:.2f}% top-5 {summary.top5:.2f}%, "
        f"{summary.total_seconds:.0f}s total ({summary.train_seconds:.0f}s training at "
        f"{summary.images_per_second:.0f} img/s), run folder {summary.run_dir}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
