"""Noise schedules: decreasing noise levels ``σ_0 > σ_1 > … > σ_{N-1} > σ_N = 0``, built apart from samplers.

A schedule is a plain 1-D tensor of noise levels (standard deviations of the noise added to a clean
image, ``x_σ = x + σ ε``); samplers take it as an argument and step from ``σ_i`` to ``σ_{i+1}``.

    >>> sigmas = edm_sigmas(4, sigma_min=0.002, sigma_max=80.0)
    >>> sigmas.shape
    torch.Size([5])
    >>> float(sigmas[0]), float(sigmas[-1])
    (80.0, 0.0)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SIGMA_MAX", "SIGMA_MIN", "append_zero", "edm_sigmas", "geometric_sigmas"]

SIGMA_MIN = 0.002  # EDM (Karras et al. 2022), Table 1
SIGMA_MAX = 80.0


def _check(num_steps: int, sigma_min: float, sigma_max: float) -> None:
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 < sigma_min <= sigma_max or not math.isfinite(sigma_max):
        raise ValueError(f"need 0 < sigma_min <= sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def append_zero(sigmas: Tensor) -> Tensor:
    """``[σ_0, …, σ_{N-1}] -> [σ_0, …, σ_{N-1}, 0]``; the last step of a sampler then lands on the clean image."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def edm_sigmas(
    num_steps: int,
    *,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = 7.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The EDM schedule: ``num_steps`` levels spaced uniformly in ``σ^{1/ρ}``, then a final 0.

    ``σ_i = (σ_max^{1/ρ} + i/(N-1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`` for ``i < N``, ``σ_N = 0``
    (Karras et al. 2022, eq. 5; ρ = 7 spends more steps at low noise, where detail is decided).

    Shape: ``(num_steps + 1,)``, decreasing, ``sigmas[0] = sigma_max``, ``sigmas[-1] = 0``.
    """
    _check(num_steps, sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    if num_steps == 1:
        return append_zero(torch.tensor([sigma_max], dtype=dtype, device=device))
    ramp = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, sigma_min  # exact end points despite rounding
    return append_zero(sigmas).to(device=device, dtype=dtype)


def geometric_sigmas(
    num_steps: int,
    *,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Levels uniform in ``log σ`` (the variance-exploding schedule of Song et al. 2021), then a final 0.

    ``σ_i = σ_max (σ_min / σ_max)^{i/(N-1)}`` for ``i < N``, ``σ_N = 0``; the limit ``ρ → ∞`` of :func:`edm_sigmas`.

    Shape: ``(num_steps + 1,)``.
    """
    _check(num_steps, sigma_min, sigma_max)
    if num_steps == 1:
        return append_zero(torch.tensor([sigma_max], dtype=dtype, device=device))
    ramp = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64)
    sigmas = torch.exp(math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max)))
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return append_zero(sigmas).to(device=device, dtype=dtype)
