"""Drawing helpers shared by the synthetic phantoms (knee, brain-like): soft edges, painting, smooth steps, noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["noise_volume", "paint", "smoothstep", "soft", "with_bias_and_phase"]


def smoothstep(t: np.ndarray | float, a: float, b: float) -> np.ndarray:
    """``3s² − 2s³`` of ``s = clip((t − a) / (b − a), 0, 1)`` (float64)."""
    s = np.clip((np.asarray(t, dtype=np.float64) - a) / (b - a), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def noise_volume(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float], low: Sequence[float] | None):
    """Gaussian-filtered (band-passed if ``low`` is given) white noise, unit std. Sigmas in pixels."""
    white = rng.standard_normal(tuple(shape))
    out = ndimage.gaussian_filter(white, sigma, mode="wrap")
    if low is not None:
        out = out - ndimage.gaussian_filter(white, low, mode="wrap")
    return out / max(float(out.std()), 1e-12)


def soft(sdf: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased indicator of ``sdf < 0`` (edge width about one pixel)."""
    return 1.0 / (1.0 + np.exp(np.clip(sdf / (0.45 * px), -50, 50)))


def paint(image: np.ndarray, weight: np.ndarray, value: np.ndarray | float) -> np.ndarray:
    """``image`` with ``value`` painted in at ``weight`` (0 … 1)."""
    return image * (1 - weight) + weight * value


def with_bias_and_phase(img, bias_c, phase_c, uu, vv, u, v, z: float) -> np.ndarray:
    """A magnitude slice times a smooth receive bias (quadratic in the in-plane ``uu, vv``) and a smooth phase
    (quadratic in ``u, v``, linear in the slice position ``z``): ``(H, W)`` complex64, magnitude clipped at 0."""
    bias = 1 + bias_c[0] * uu + bias_c[1] * vv + bias_c[2] * uu * vv + bias_c[3] * uu**2 + bias_c[4] * vv**2
    phase = (
        np.pi
        * (
            phase_c[0] * u
            + phase_c[1] * v
            + 0.5 * phase_c[2] * u * v
            + 0.3 * phase_c[3] * u**2
            + 0.2 * phase_c[4] * v**2
        )
        + 0.3 * phase_c[5] * z
    )
    return (np.clip(img * bias, 0, None) * np.exp(1j * phase)).astype(np.complex64)
