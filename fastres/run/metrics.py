"""Classification metrics, kept on the device (no host sync until a caller asks for the numbers)."""

from __future__ import annotations

import torch

__all__ = ["accuracy_counts"]


def accuracy_counts(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the top-k logits, for each k (a device tensor)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return torch.stack([hit[:, :k].any(dim=1).sum() for k in ks])
