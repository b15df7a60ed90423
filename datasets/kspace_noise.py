"""The thermal noise level of raw k-space, estimated from the data (real fastMRI files do not record it).

k-space noise is white: after the orthonormal inverse FFT every coil image carries the same noise, of std
``σ`` in each real and imaginary part, everywhere, on top of the anatomy. Where there is no anatomy (air
around the knee, the readout-oversampled margins) a block of pixels holds noise only, and its mean square
``m`` over its ``n = 2 b²`` real components is ``σ² χ²_n / n``. So (:func:`estimate_noise_std`):

1. the k-space of each slice (and coil), cropped to the acquired phase-encode columns (zero-padded columns
   carry no noise), goes to coil images; they are cut into ``b × b`` blocks (:func:`block_size`: ``b = 8``
   for images of 128 pixels or more a side, as fastMRI's 640 × 368, else 4 or 2) and each block's mean
   square ``m`` is kept (:func:`block_energies`);
2. starting from the 5 % quantile of ``m``, iterate ``σ² ← mean(m | m < σ² c / n) / (F_{n+2}(c) / F_n(c))``
   with ``c`` the 99 % point of ``χ²_n`` (``F_k`` its CDF): the mean of the noise-like blocks, corrected for
   the truncation (``E[χ²_n | χ²_n < c] = n F_{n+2}(c) / F_n(c)``). Blocks with anatomy lie above the
   threshold and drop out.

On the SYNTHETIC knee volumes of :mod:`ambient_science.datasets.synthetic_knee` (whose ``noise_std`` is
known; ~20 % of their blocks are background) the estimate is within 2 % of the truth for recon sizes 64
and 128 (encoded grids 128 × 74 and 256 × 148) from ``noise_level = 0.001`` to ``0.03``, single- and
multi-coil (tests/test_reliability.py); on 64 × 36 grids (recon 32) it is 8 % high: too few blocks lie
wholly in the background. It assumes some background in the field of view: when fewer than 1 % of the
blocks look like noise, :func:`estimate_noise_std` refuses; when the image has no background at all it
over-estimates (``fraction`` says how many blocks were used). Validated on synthetic data only: a
scanner's readout filter that shapes the noise spectrum of real raw data is not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from scipy.stats import chi2
from torch import Tensor

from ambient_science.operators.fourier import ifft2c

__all__ = ["NoiseEstimate", "block_energies", "block_size", "estimate_noise_std"]

METHOD = (
    "estimated from the data: mean square of the noise-like {b}x{b} pixel blocks of the coil images of the "
    "acquired k-space (iterated chi-square truncation at its 99 % point), datasets/kspace_noise.py"
)


def block_size(height: int, width: int) -> int:
    """The block side for coil images of ``height × width`` pixels: 8 from 128 pixels a side, 4 from 32, else 2."""
    side = min(height, width)
    return 8 if side >= 128 else 4 if side >= 32 else 2


@dataclass(frozen=True)
class NoiseEstimate:
    """``sigma``: noise std of each real and imaginary part of the k-space (file units); ``fraction``: of the
    blocks judged noise-like; ``blocks``: how many blocks were examined; ``method``: a one-line description."""

    sigma: float
    fraction: float
    blocks: int
    method: str


def block_energies(kspace: Tensor, columns: tuple[int, int] | None = None, block: int | None = None) -> Tensor:
    """Mean square over the ``2 b²`` real components of each ``b × b`` block of the coil images of ``kspace``.

    Shape: ``kspace (..., H, W)`` complex -> ``(num_blocks,)`` float64. ``columns = (left, right)`` keeps the
    acquired phase-encode columns only; ``block`` defaults to :func:`block_size` of what is kept.
    """
    if columns is not None:
        kspace = kspace[..., columns[0] : columns[1]]
    block = block or block_size(*kspace.shape[-2:])
    x = ifft2c(kspace.to(torch.complex64))
    H, W = x.shape[-2:]
    h, w = H // block, W // block
    if h == 0 or w == 0:
        return torch.zeros(0, dtype=torch.float64)
    r = torch.view_as_real(x[..., : h * block, : w * block]).to(torch.float64)  # (..., H', W', 2)
    r = r.reshape(*r.shape[:-3], h, block, w, block, 2).movedim(-4, -3)  # (..., h, w, b, b, 2)
    return r.square().flatten(-3).mean(-1).reshape(-1)


def estimate_noise_std(
    energies: Tensor | Iterable[Tensor], block: int, *, tail: float = 0.99, where: str = "k-space"
) -> NoiseEstimate:
    """The noise std from the energies of ``block × block`` blocks (:func:`block_energies`; one tensor or
    several, e.g. one per slice).

    Raises ``ValueError`` naming ``where`` when there are no blocks, the data are all zero, or fewer than
    1 % of the blocks look like noise (no background to measure it on).
    """
    m = energies if isinstance(energies, Tensor) else torch.cat([e.reshape(-1) for e in energies])
    m = m[torch.isfinite(m)]
    if m.numel() == 0:
        raise ValueError(f"{where}: no {block}x{block} pixel blocks to estimate the noise level from")
    n = 2 * block * block
    c = float(chi2.ppf(tail, n))
    correction = float(chi2.cdf(c, n + 2) / chi2.cdf(c, n))
    s2 = float(torch.quantile(m[:: max(1, m.numel() // 1_000_000)], 0.05)) / (float(chi2.ppf(0.05, n)) / n)
    if not s2 > 0:
        raise ValueError(f"{where}: the k-space is zero in most of the image; its noise level cannot be estimated")
    selected = m
    for _ in range(100):
        selected = m[m < s2 * c / n]
        if selected.numel() == 0:
            break
        new = float(selected.mean()) / correction
        if abs(new - s2) <= 1e-10 * s2:
            s2 = new
            break
        s2 = new
    fraction = selected.numel() / m.numel()
    if fraction < 0.01:
        raise ValueError(
            f"{where}: only {100 * fraction:.2g} % of the image blocks look like noise (no background in the field "
            "of view?); the noise level cannot be estimated: pass --sigma-n"
        )
    return NoiseEstimate(math.sqrt(s2), fraction, int(m.numel()), METHOD.format(b=block))
