"""fastres.data.transforms.normalize_batch makes its mean and 1/std tensors once per device.

Built from Python lists at every batch they would be a pageable host-to-device copy, and a
host sync, per batch on the GPU path. The formula itself is tested in tests/test_data.py.
"""

from __future__ import annotations

import pytest
import torch

from fastres.data import transforms


def _count_tensor_calls(monkeypatch) -> list:
    calls = []
    real = torch.tensor

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "tensor", counting)
    return calls


def test_statistics_are_made_once_per_device(monkeypatch):
    images = torch.randint(0, 256, (2, 5, 5, 3), dtype=torch.uint8)
    first = transforms.normalize_batch(images)
    calls = _count_tensor_calls(monkeypatch)
    for _ in range(3):
        again = transforms.normalize_batch(images)
    assert calls == [], f"{len(calls)} tensors made from Python values in 3 batches"
    assert torch.equal(first, again)
    mean = torch.tensor(transforms.IMAGENET_MEAN)
    std = torch.tensor(transforms.IMAGENET_STD)
    torch.testing.assert_close(again, ((images.float() - mean) / std).permute(0, 3, 1, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_batches_do_not_sync():
    images = torch.randint(0, 256, (2, 5, 5, 3), dtype=torch.uint8, device="cuda")
    transforms.normalize_batch(images)  # the first batch on a device makes its tensors
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = transforms.normalize_batch(images, torch.bfloat16, channels_last=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.is_cuda and out.dtype == torch.bfloat16
