"""Noise and broadcasting helpers shared by training and sampling.

Noise convention: ``x_σ = x + σ ε`` with ``ε ~ N(0, I)``; for complex tensors the real and imaginary parts
of ``ε`` are each ``N(0, 1)``, so each real coordinate carries variance ``σ²`` (docs/design.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["append_dims", "initial_noise", "randn_like", "sigma_like"]


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append singleton dimensions so that ``t (B,)`` broadcasts against a ``(B, ...)`` tensor of ``ndim`` dims.

    Shape: ``(B,)`` -> ``(B, 1, ..., 1)`` with ``ndim`` dimensions.
    """
    if t.ndim > ndim:
        raise ValueError(f"cannot append dims: tensor has {t.ndim} dims, target {ndim}")
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """``ε ~ N(0, I)`` shaped like ``x`` on ``x``'s device, drawn on the generator's device.

    Complex ``x``: real and imaginary parts each ``N(0, 1)`` (the noise convention of this package).
    """
    if x.is_complex():
        real = torch.empty((), dtype=x.dtype).real.dtype
        e = torch.randn((2, *x.shape), generator=generator, device=generator.device, dtype=real)
        return torch.complex(e[0], e[1]).to(x.device)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def initial_noise(
    shape: Sequence[int],
    sigma: float,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The start of a sampler, ``x_T = σ_max ε`` (complex convention as :func:`randn_like`).

    Shape: ``shape`` on ``device`` (default: the generator's device).
    """
    device = torch.device(device) if device is not None else generator.device
    return sigma * randn_like(torch.empty(tuple(shape), dtype=dtype, device=device), generator)


def sigma_like(sigma: float, x: Tensor) -> Tensor:
    """The noise level as the ``(B,)`` float32 tensor on ``x``'s device that denoisers take."""
    return torch.full((x.shape[0],), float(sigma), device=x.device, dtype=torch.float32)
