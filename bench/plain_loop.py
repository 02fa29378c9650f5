"""The peer fastres is timed against: a pytorch/examples-style ImageNet training loop.

    python bench/plain_loop.py --data ROOT --list TRAIN_LIST --batch-size 64 --image-size 48
    python -m torch.distributed.run --standalone --nproc-per-node 2 bench/plain_loop.py ...  # DDP, Gloo

What a user writes from pytorch/examples' `imagenet/main.py` (its structure, not its code):
an ImageFolder-style dataset decoded with PIL in DataLoader workers (random-resized crop,
horizontal flip, ToTensor, Normalize, as torchvision's transforms do them; torchvision has no
CPU wheel here, so they are written out below), `torch.optim.SGD` with momentum and weight
decay, `DistributedDataParallel` and a `DistributedSampler` under torchrun, and every step
the examples' bookkeeping: `loss.item()` and top-1/top-5 of the batch for the meters. The
model is fastres's ResNet-50, whose modules and state_dict are torchvision's.

It trains one pass over the files of `--list` (`relative/path label` lines, relative to
ROOT/train) and prints one JSON line: the images per second over all processes between the
end of step `--skip` and the end of the last step (the first steps allocate and warm up).
`--channels-last` and `--bf16` are there to measure what the same two changes give a plain loop.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fastres.model import resnet50  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def random_resized_crop(img: Image.Image, size: int, scale: tuple[float, float]) -> Image.Image:
    """torchvision's RandomResizedCrop: 10 tries at a random area and log-uniform aspect ratio in
    [3/4, 4/3], else the centre crop of the clamped ratio; bilinear resize to size x size."""
    width, height = img.size
    area = width * height
    for _ in range(10):
        target = area * random.uniform(*scale)
        ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = random.randint(0, width - w), random.randint(0, height - h)
            return img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, round(width / (3 / 4))
    elif ratio > 4 / 3:
        w, h = round(height * (4 / 3)), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))


class ListDataset(torch.utils.data.Dataset):
    """ImageFolder over the files of a list: (normalised CHW float tensor, label)."""

    def __init__(self, root: Path, list_file: Path, size: int, scale_min: float):
        self.items = []
        for line in list_file.read_text().splitlines():
            if line.strip():
                rel, label = line.rsplit(maxsplit=1)
                self.items.append((root / rel, int(label)))
        self.size, self.scale = size, (scale_min, 1.0)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        with Image.open(path) as img:
            img = img.convert("RGB")
        img = random_resized_crop(img, self.size, self.scale)
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)  # ToTensor
        return (x - MEAN) / STD, label  # Normalize


def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1, 5)) -> list[float]:
    top = output.topk(max(topk), 1).indices
    hits = top.eq(target.view(-1, 1))
    return [hits[:, :k].any(1).float().mean().item() * 100 for k in topk]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--list", type=Path, required=True, help="relative/path label lines, relative to DATA/train")
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--crop-scale-min", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per process")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--skip", type=int, default=8, help="steps left out of the timing")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--bf16", action="store_true", help="torch.autocast(cpu, bfloat16)")
    args = p.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(rank)

    dataset = ListDataset(args.data / "train", args.list, args.image_size, args.crop_scale_min)
    classes = 1 + max(label for _, label in dataset.items)
    sampler = torch.utils.data.distributed.DistributedSampler(dataset) if world > 1 else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None,
                                         sampler=sampler, num_workers=args.workers, drop_last=True,
                                         persistent_workers=False)  # fmt: skip
    model = resnet50(num_classes=classes)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=0.9, weight_decay=5e-5)

    model.train()
    steps, start = 0, None
    for images, target in loader:
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            output = model(images)
            loss = criterion(output, target)
        acc1, acc5 = accuracy(output.float(), target)  # the examples' meters
        loss_value = loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps == args.skip:
            start = time.perf_counter()
    seconds = time.perf_counter() - start
    timed = steps - args.skip
    if rank == 0:
        print(json.dumps({"steps": steps, "timed_steps": timed, "seconds": seconds, "processes": world,
                          "img_per_s": timed * args.batch_size * world / seconds, "last_loss": loss_value,
                          "last_top1": acc1, "last_top5": acc5}), flush=True)  # fmt: skip
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
