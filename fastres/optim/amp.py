"""fp16 training's dynamic loss scaling for the fused optimizers, without a host sync.

`LossScaler` has torch.amp.GradScaler's semantics (same defaults, same scale sequence: tests
compare the two over steps with overflows), written for fastres's one flat gradient buffer:

    scaler = LossScaler(device)
    scaler.scale(loss).backward()                      # loss x scale
    found_inf = scaler.unscale_(layout.grads)          # grads /= scale and the non-finite flag, one pass
    optimizer.step(found_inf=found_inf)                # the fused step is a no-op where found_inf != 0
    scaler.update()                                    # scale x backoff on overflow, x growth after
                                                       # `growth_interval` finite steps in a row

Everything stays on the device: `unscale_` is torch's own fused check-and-unscale
(torch._amp_foreach_non_finite_check_and_unscale_, the op GradScaler uses) over the flat
buffer, and `update` is torch._amp_update_scale_ (GradScaler's), so neither reads a value
back to the host. With gradient all-reduce, unscale after the reduction: every rank then
sees the same flag and skips the same steps.
"""

from __future__ import annotations

import torch

__all__ = ["LossScaler"]


class LossScaler:
    def __init__(
        self,
        device: torch.device | str = "cpu",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ):
        if not growth_factor > 1.0:
            raise ValueError(f"growth_factor: must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"backoff_factor: must be in (0, 1), got {backoff_factor}")
        if growth_interval < 1:
            raise ValueError(f"growth_interval: must be >= 1, got {growth_interval}")
        device = torch.device(device)
        self.enabled = enabled
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self._scale = torch.full((), float(init_scale), dtype=torch.float32, device=device)
        self._growth_tracker = torch.zeros((), dtype=torch.int32, device=device)
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """loss x scale (unchanged when disabled)."""
        if not self.enabled:
            return loss
        return loss * self._scale.to(loss.dtype)

    @torch.no_grad()
    def unscale_(self, grads: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Divide the gradients by the scale in place and return the device flag (1.0 where any
        of them is Inf or NaN, else 0.0), in one pass, with no host sync."""
        self.found_inf.zero_()
        if not self.enabled:
            return self.found_inf
        tensors = [grads] if isinstance(grads, torch.Tensor) else list(grads)
        inv = self._scale.double().reciprocal().float()  # GradScaler's inverse scale
        torch._amp_foreach_non_finite_check_and_unscale_(tensors, self.found_inf, inv)
        return self.found_inf

    @torch.no_grad()
    def update(self) -> None:
        """GradScaler.update: backoff on a found-inf step, growth after growth_interval clean ones."""
        if not self.enabled:
            return
        torch._amp_update_scale_(
            self._scale,
            self._growth_tracker,
            self.found_inf,
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        )

    def get_scale(self) -> float:
        """The current scale (reads the device: a sync; for logging)."""
        return float(self._scale.item()) if self.enabled else 1.0

    def state_dict(self) -> dict:
        return {"scale": self._scale.clone(), "growth_tracker": self._growth_tracker.clone()}

    def load_state_dict(self, state: dict) -> None:
        self._scale.copy_(state["scale"])
        self._growth_tracker.copy_(state["growth_tracker"])
