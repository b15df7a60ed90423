"""Noise and broadcasting helpers shared by training and sampling.

Noise convention: ``x_σ = x + σ ε`` with ``ε ~ N(0, I)``; for complex tensors the real and imaginary parts
of ``ε`` are each ``N(0, 1)``, so each real coordinate carries variance ``σ²`` (docs/design.md §3).

Antithetic draws: inside :func:`antithetic`, :func:`randn_like` and :func:`initial_noise` return ``−ε`` for the
``ε`` the same generator state would give. A sampler run repeated from the same generator state inside it is the
antithetic twin of the first run (every Gaussian draw negated, every other draw the same), which
:func:`~ambient_science.sampling.posterior.sample_posterior` uses for paired posterior samples.

    >>> g = torch.Generator().manual_seed(0)
    >>> state = g.get_state()
    >>> e = randn_like(torch.zeros(3), g)
    >>> with antithetic():
    ...     _ = g.set_state(state)
    ...     torch.equal(randn_like(torch.zeros(3), g), -e)
    True
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["antithetic", "append_dims", "initial_noise", "randn_like", "sigma_like"]

#: -1 inside :func:`antithetic` (per thread / context), else 1
_SIGN: contextvars.ContextVar[int] = contextvars.ContextVar("ambient_science_noise_sign", default=1)


@contextlib.contextmanager
def antithetic(enabled: bool = True) -> Iterator[None]:
    """Negate every :func:`randn_like` / :func:`initial_noise` draw inside the block (``enabled=False``: a no-op).

    Per thread: another thread's draws are unaffected."""
    token = _SIGN.set(-_SIGN.get() if enabled else _SIGN.get())
    try:
        yield
    finally:
        _SIGN.reset(token)


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append singleton dimensions so that ``t (B,)`` broadcasts against a ``(B, ...)`` tensor of ``ndim`` dims.

    Shape: ``(B,)`` -> ``(B, 1, ..., 1)`` with ``ndim`` dimensions.
    """
    if t.ndim > ndim:
        raise ValueError(f"cannot append dims: tensor has {t.ndim} dims, target {ndim}")
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """``ε ~ N(0, I)`` shaped like ``x`` on ``x``'s device, drawn on the generator's device.

    Complex ``x``: real and imaginary parts each ``N(0, 1)`` (the noise convention of this package). Inside
    :func:`antithetic`: ``−ε``.
    """
    if x.is_complex():
        real = torch.empty((), dtype=x.dtype).real.dtype
        e = torch.randn((2, *x.shape), generator=generator, device=generator.device, dtype=real)
        if _SIGN.get() < 0:
            e = e.neg_()
        return torch.complex(e[0], e[1]).to(x.device)
    e = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return (e.neg_() if _SIGN.get() < 0 else e).to(x.device)


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
