"""Exponential moving average of network weights, with a half-life counted in training images.

After a step of ``b`` images, ``θ_ema ← β θ_ema + (1 − β) θ`` with ``β = 0.5^(b / h)``, so the weight of
an image's update halves every ``h`` images (Karras et al. 2022, App. F: "EMA half-life"). An optional
ramp-up uses ``h_t = min(h, r · images_seen)`` so early, poor weights are forgotten quickly.

    >>> import torch
    >>> net = torch.nn.Linear(2, 2)
    >>> ema = EMA(net, half_life_images=100)
    >>> round(ema.beta(images_seen=1000, batch_images=100), 3)
    0.5
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """An EMA copy of a network (``.module``, eval mode, no gradients) and its update rule.

    Args:
        network: the trained network (unwrapped: not DDP, not compiled).
        half_life_images: ``h``, in images.
        rampup: ``r`` of the ramp-up ``h_t = min(h, r · images_seen)``; ``None`` for none.
    """

    def __init__(self, network: nn.Module, half_life_images: float, rampup: float | None = None):
        if half_life_images <= 0:
            raise ValueError(f"EMA half-life must be positive, got {half_life_images}")
        self.half_life_images = float(half_life_images)
        self.rampup = rampup
        self.module = copy.deepcopy(network).eval().requires_grad_(False)

    def beta(self, images_seen: int, batch_images: int) -> float:
        """``β = 0.5^(b / h_t)`` after ``images_seen`` images, for a step of ``b`` (this step included)."""
        h = self.half_life_images
        if self.rampup is not None:
            h = min(h, self.rampup * images_seen)
        return 0.5 ** (batch_images / max(h, 1e-8))

    @torch.no_grad()
    def update(self, network: nn.Module, images_seen: int, batch_images: int) -> None:
        """``θ_ema ← β θ_ema + (1 − β) θ``; buffers are copied."""
        beta = self.beta(images_seen, batch_images)
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in network.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("EMA and network have different parameter lists")
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
        for b_ema, b in zip(self.module.buffers(), network.buffers()):
            b_ema.copy_(b)
