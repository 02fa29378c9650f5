"""BatchNorm across processes: BN groups (`--bn-group`) and statistics for evaluation (`--bn-eval`).

- `bn_rank_groups(world, size)`: the ranks whose BN statistics are computed together: blocks
  of `size` consecutive ranks (ranks of one node first, so the statistics stay inside a node
  where `size` divides the ranks per node).
- `convert_bn_groups(model, size, world, rank)`: replaces every nn.BatchNorm2d by a
  `GroupBatchNorm2d` computing its training statistics over the images of its group (one
  all-reduce of 2C + 1 floats per layer forward, and one in backward through
  torch.distributed.nn's differentiable all_reduce). It works on Gloo (CPU) as on NCCL:
  torch's SyncBatchNorm runs on GPUs only. Parameters and buffers are kept (the same
  nn.Parameter objects), so convert before building the flat layout and the optimizer.
- `convert_ghost_bn(model, n)` (`--bn-virtual-batch N`): ghost BN, every nn.BatchNorm2d becomes a
  `GhostBatchNorm2d` whose training statistics are those of consecutive groups of N images of
  the process's batch (Goyal et al. 2017, sec. 5.1: BN over the n = 32 images of each worker,
  whatever one process holds; the last group is smaller when N does not divide the batch). Each
  group is normalised with its own mean and (biased) variance, as a worker with that group
  alone would; the moving averages take one update per forward, from the mean over the groups
  of each group's mean and unbiased variance. A batch of at most N images is plain BN.
- `recompute_bn_statistics(model, batches, group)`: BN without moving averages (Akiba et
  al. 2017): each BN layer's mean and variance for evaluation are those of the given training
  batches, pooled over the processes of `group` (E[x] and E[x^2] summed over batches and
  ranks, var = E[x^2] - E[x]^2), written into running_mean / running_var. Call it before each
  validation, with the same number of batches on every rank.

Knows nothing of data or of the trainer; every rank must call `convert_bn_groups` (it makes
process groups collectively).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "GhostBatchNorm2d",
    "GroupBatchNorm2d",
    "bn_rank_groups",
    "convert_bn_groups",
    "convert_ghost_bn",
    "recompute_bn_statistics",
]


def bn_rank_groups(world: int, size: int) -> list[list[int]]:
    """Blocks of `size` consecutive ranks; `size` must divide `world`."""
    if size < 1 or world < 1 or world % size:
        raise ValueError(f"bn_group: {size} must be >= 1 and divide the {world} processes")
    return [list(range(start, start + size)) for start in range(0, world, size)]


class GroupBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics cover every image of a process group."""

    def __init__(self, num_features: int, group=None, **kw):
        super().__init__(num_features, **kw)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.group is None:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        C = x.shape[1]
        xf = x.float()
        count = torch.full((1,), xf.numel() / C, dtype=torch.float32, device=x.device)
        local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        total = all_reduce(local, group=self.group)  # differentiable: its backward all-reduces the gradient
        n = total[2 * C]
        mean = total[:C] / n
        var = (total[C : 2 * C] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(m * mean.detach().to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.detach().to(self.running_var.dtype))
                self.num_batches_tracked.add_(1)
        shape = (1, C, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_bn_groups(model: nn.Module, size: int, world: int, rank: int) -> nn.Module:
    """Every nn.BatchNorm2d of `model` computes its statistics over its BN group of `size`
    ranks (see module doc); size 1 returns `model` unchanged. Collective: call on every rank."""
    if size == 1:
        return model
    groups = bn_rank_groups(world, size)
    mine = None
    for ranks in groups:  # every rank creates every group, in the same order (torch.distributed's rule)
        pg = dist.new_group(ranks)
        if rank in ranks:
            mine = pg
    return _replace_bn(model, lambda module: GroupBatchNorm2d(module.num_features, group=mine, **_bn_kw(module)))


class GhostBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics are those of consecutive groups of `virtual_batch` images."""

    def __init__(self, num_features: int, virtual_batch: int, **kw):
        super().__init__(num_features, **kw)
        if virtual_batch < 1:
            raise ValueError(f"virtual_batch: must be >= 1, got {virtual_batch}")
        self.virtual_batch = virtual_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.virtual_batch
        if not self.training or x.shape[0] <= n:
            return super().forward(x)
        full = x.shape[0] // n * n
        parts = [x[:full].unflatten(0, (full // n, n))]  # (groups, n, C, H, W): a view, channels_last too
        if full < x.shape[0]:
            parts.append(x[full:].unsqueeze(0))  # the smaller last group
        outs, means, variances = [], [], []
        for part in parts:
            xf = part.float()
            mean = xf.mean((1, 3, 4), keepdim=True)
            var = xf.var((1, 3, 4), unbiased=False, keepdim=True)
            y = (xf - mean) * torch.rsqrt(var + self.eps)
            if self.affine:
                y = y * self.weight.view(1, 1, -1, 1, 1) + self.bias.view(1, 1, -1, 1, 1)
            outs.append(y.to(x.dtype).flatten(0, 1))
            count = part.numel() / (part.shape[0] * part.shape[2])  # values per channel in one group
            means.append(mean.flatten(1).detach())
            variances.append(var.flatten(1).detach() * (count / max(count - 1, 1)))
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                mean = torch.cat(means).mean(0).to(self.running_mean.dtype)
                var = torch.cat(variances).mean(0).to(self.running_var.dtype)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var)
                self.num_batches_tracked.add_(1)
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            y = y.contiguous(memory_format=torch.channels_last)
        return y


def convert_ghost_bn(model: nn.Module, virtual_batch: int | None) -> nn.Module:
    """Every nn.BatchNorm2d of `model` becomes a GhostBatchNorm2d over groups of `virtual_batch`
    images (same Parameters and buffers: convert before building the flat layout); None: unchanged."""
    if virtual_batch is None:
        return model
    return _replace_bn(model, lambda module: GhostBatchNorm2d(module.num_features, virtual_batch, **_bn_kw(module)))


def _bn_kw(module: nn.BatchNorm2d) -> dict:
    return dict(eps=module.eps, momentum=module.momentum, affine=module.affine,
                track_running_stats=module.track_running_stats)  # fmt: skip


def _replace_bn(module: nn.Module, make) -> nn.Module:
    """Replace every plain nn.BatchNorm2d under `module` by make(it), keeping its Parameters and buffers."""
    if type(module) is nn.BatchNorm2d:
        new = make(module)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias  # the same Parameters
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _replace_bn(child, make))
    return module


@torch.no_grad()
def recompute_bn_statistics(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    group=None,
    all_reduce: Callable[[torch.Tensor], None] | None = None,
) -> int:
    """Set every BN layer's running_mean / running_var to the statistics of `batches` (inputs
    of the model), pooled over the ranks of `group` (default: the world, when torch.distributed
    is initialised). `all_reduce(t)` (a SUM in place) replaces torch.distributed's. Returns the
    number of batches seen here. The model's train/eval mode is restored."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    sums: dict[nn.Module, torch.Tensor] = {}

    def hook(module, inputs):
        x = inputs[0].detach().to(torch.float64)
        dims = [d for d in range(x.dim()) if d != 1]
        n = x.numel() / x.shape[1]
        s = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_full((1,), n)])
        sums[module] = s if module not in sums else sums[module] + s

    was_training = model.training
    handles = [m.register_forward_pre_hook(hook) for m in bns]
    seen = 0
    try:
        model.train()
        for x in batches:
            model(x)
            seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if all_reduce is None and dist.is_available() and dist.is_initialized():

        def all_reduce(t: torch.Tensor) -> None:
            dist.all_reduce(t, group=group)

    for m in bns:
        C = m.num_features
        s = sums.get(m)
        if s is None:
            s = torch.zeros(2 * C + 1, dtype=torch.float64, device=m.running_mean.device)
        if all_reduce is not None:
            s = s.to(m.running_mean.device)
            all_reduce(s)
        n = s[2 * C]
        if n <= 0:
            continue
        mean = s[:C] / n
        var = (s[C : 2 * C] / n - mean * mean).clamp_min(0)
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.to(m.running_var.dtype))
    return seen
