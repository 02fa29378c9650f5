"""No host sync in the hot loop: the fused optimizer step and the ops it calls, on a GPU.

torch's sync debug mode (torch.cuda.set_sync_debug_mode("error")) raises on every call that
synchronises the host with the device (a blocking copy, .item(), a stream sync): the step
must pass under it with lr given as a float, as a CPU tensor (which torch's optimizers
accept: fastres reads it on the host and fills the device scalar, where a copy_ from pageable
memory would block) and as a device tensor, and with a found-inf flag. The lr tensors are made
before the checked block: making a device tensor from a Python number is itself a copy from
pageable memory, which the mode reports (pytorch/pytorch issue 120996). Skips without CUDA.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from fastres.kernels import ops
from fastres.optim import FusedLARS, FusedSGD

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@contextlib.contextmanager
def no_sync_allowed():
    torch.cuda.synchronize()
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(old)


def model_params():
    torch.manual_seed(0)
    shapes = [(64, 3, 7, 7), (64,), (64,), (256, 64, 3, 3), (256,), (1000, 256), (1000,)]
    params = [torch.nn.Parameter(torch.randn(s, device="cuda") * 0.1) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


@requires_cuda
@pytest.mark.parametrize("lr_kind", ["float", "cpu tensor", "device tensor"])
@pytest.mark.parametrize("cls", [FusedLARS, FusedSGD])
def test_fused_step_never_syncs(cls, lr_kind):
    params = model_params()
    opt = cls(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    found_inf = torch.zeros((), device="cuda")
    opt.step()  # first step outside: one-time set-up (probing the GPU) may sync
    torch.cuda.synchronize()
    before = opt.layout.params.clone()
    # the lr values are made before the checked block: torch.tensor(x, device="cuda") copies from
    # pageable host memory, itself a synchronising operation that sync-debug mode reports
    make = {"float": float, "cpu tensor": torch.tensor, "device tensor": lambda x: torch.tensor(x, device="cuda")}
    lrs = [make[lr_kind](0.1 / (step + 1)) for step in range(3)]
    torch.cuda.synchronize()
    with no_sync_allowed():
        for lr in lrs:
            opt.param_groups[0]["lr"] = lr
            opt.step(found_inf=found_inf)
    torch.cuda.synchronize()
    assert not torch.equal(opt.layout.params, before)  # it stepped
    assert opt._hparams[0].item() == pytest.approx(0.1 / 3)  # the last lr reached the device


@requires_cuda
def test_ops_never_sync_with_chunk_tables():
    offsets = torch.tensor([0, 5, 4101, 4101, 70_000], dtype=torch.int64)
    chunks = ops.segment_chunks(offsets, "cuda")
    flat = torch.randn(70_000, device="cuda")
    wire = torch.empty(70_000, dtype=torch.bfloat16, device="cuda")
    ops.segment_sq_norms(flat, chunks)  # set-up outside
    with no_sync_allowed():
        ops.segment_sq_norms(flat, chunks)
        ops.pack_wire(flat, wire, 0.5)
        ops.unpack_wire(wire, flat, 2.0, chunks=chunks)
