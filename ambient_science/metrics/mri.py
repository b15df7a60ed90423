"""MRI image-quality metrics with fastMRI's definitions, on magnitude volumes; every metric returns a float.

For a volume ``gt, pred`` of shape ``(slices, H, W)`` (magnitude images; complex inputs are turned into
magnitudes, optionally centre-cropped first, e.g. to 320 × 320):

- ``nmse = ||gt - pred||² / ||gt||²`` over the whole volume;
- ``psnr = 10 log10(max(gt)² / mean((gt - pred)²))``, data range = the volume's maximum;
- ``ssim``: per slice, 7 × 7 uniform window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances
  (``N / (N - 1)``), data range = the volume's maximum, averaged over the valid window positions, then
  over slices.

    >>> import torch
    >>> gt = torch.rand(2, 16, 16)
    >>> psnr(gt, gt + 0.01) > 30, round(ssim(gt, gt), 6)
    (True, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["evaluate_volume", "mse", "nmse", "psnr", "ssim"]

ArrayLike = Tensor | np.ndarray


def _volume(x: ArrayLike, crop: Sequence[int] | None) -> Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, Tensor) else x.detach()
    if t.is_complex():
        t = t.abs()
    t = t.to(torch.float64).cpu()
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected a (slices, H, W) or (H, W) volume, got shape {tuple(t.shape)}")
    if crop is not None:
        h, w = (int(s) for s in crop)
        H, W = t.shape[-2:]
        if h > H or w > W:
            raise ValueError(f"cannot centre-crop {(H, W)} to {(h, w)}")
        top, left = H // 2 - h // 2, W // 2 - w // 2
        t = t[..., top : top + h, left : left + w]
    return t


def _pair(gt: ArrayLike, pred: ArrayLike, crop: Sequence[int] | None) -> tuple[Tensor, Tensor]:
    g, p = _volume(gt, crop), _volume(pred, crop)
    if g.shape != p.shape:
        raise ValueError(f"ground truth {tuple(g.shape)} and prediction {tuple(p.shape)} differ in shape")
    return g, p


def mse(gt: ArrayLike, pred: ArrayLike, *, crop: Sequence[int] | None = None) -> float:
    """Mean squared error over the volume."""
    g, p = _pair(gt, pred, crop)
    return float(((g - p) ** 2).mean())


def nmse(gt: ArrayLike, pred: ArrayLike, *, crop: Sequence[int] | None = None) -> float:
    """Normalised MSE ``||gt - pred||² / ||gt||²`` over the volume."""
    g, p = _pair(gt, pred, crop)
    return float(((g - p) ** 2).sum() / (g**2).sum())


def psnr(gt: ArrayLike, pred: ArrayLike, *, maxval: float | None = None, crop: Sequence[int] | None = None) -> float:
    """PSNR in dB, ``10 log10(maxval² / MSE)`` with ``maxval`` = the volume's maximum by default."""
    g, p = _pair(gt, pred, crop)
    m = float(g.max()) if maxval is None else float(maxval)
    err = float(((g - p) ** 2).mean())
    return float("inf") if err == 0 else float(10 * np.log10(m * m / err))


def ssim(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    maxval: float | None = None,
    crop: Sequence[int] | None = None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity over slices (7 × 7 uniform window, data range = volume maximum).

    Per slice: ``S = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``, ``C1 = (K1 L)²``,
    ``C2 = (K2 L)²``, local moments from the uniform window with sample (``N/(N-1)``) covariances,
    averaged over every window that lies fully inside the slice.
    """
    g, p = _pair(gt, pred, crop)
    if min(g.shape[-2:]) < win_size:
        raise ValueError(f"images of size {tuple(g.shape[-2:])} are smaller than the {win_size}×{win_size} window")
    L = float(g.max()) if maxval is None else float(maxval)
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    x, y = g[:, None], p[:, None]  # (S, 1, H, W)

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, win_size, stride=1)  # valid windows only

    n = win_size * win_size
    cov_norm = n / (n - 1)
    mx, my = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - mx * mx)
    vy = cov_norm * (mean(y * y) - my * my)
    vxy = cov_norm * (mean(x * y) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean(dim=(1, 2, 3)).mean())


def evaluate_volume(gt: ArrayLike, pred: ArrayLike, *, crop: Sequence[int] | None = None) -> dict[str, float]:
    """``{"nmse", "psnr", "ssim"}`` of one volume (fastMRI's evaluation)."""
    return {"nmse": nmse(gt, pred, crop=crop), "psnr": psnr(gt, pred, crop=crop), "ssim": ssim(gt, pred, crop=crop)}
