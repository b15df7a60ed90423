"""Thermal noise and station-gain corruptions of VLBI visibilities (simulated observations: `eht_observe`).

Radiometer equation for one correlation product (Thompson, Moran & Swenson §6.2, with the 2-bit
quantisation efficiency 0.88), per real and imaginary part:

    σ_12 = sqrt(SEFD_1 SEFD_2 / (2 Δν t_int)) / 0.88                                  [Jy]

A Stokes I visibility ``(RR + LL) / 2`` then has ``σ_I = sqrt(σ_RR² + σ_LL²) / 2`` (ehtim's convention).
Station gains multiply visibilities as ``V_12 -> g_1 conj(g_2) V_12``; closure phases and closure
amplitudes are invariant to them.

Every random draw takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "QUANTISATION_EFFICIENCY",
    "add_thermal_noise",
    "apply_station_gains",
    "station_gains",
    "stokes_i_sigma",
    "thermal_sigma",
]

QUANTISATION_EFFICIENCY = 0.88


def thermal_sigma(sefd1, sefd2, bw_hz: float, tint_s: float) -> np.ndarray:
    """Thermal noise of one correlation product, ``sqrt(SEFD1 SEFD2 / (2 bw t_int)) / 0.88`` [Jy].

    Shape: ``sefd1, sefd2`` broadcastable arrays [Jy] -> their broadcast shape.
    """
    if bw_hz <= 0 or tint_s <= 0:
        raise ValueError(f"bandwidth and integration time must be positive, got {bw_hz} Hz, {tint_s} s")
    return np.sqrt(np.asarray(sefd1, float) * np.asarray(sefd2, float) / (2.0 * bw_hz * tint_s)) / (
        QUANTISATION_EFFICIENCY
    )


def stokes_i_sigma(sefd_r1, sefd_l1, sefd_r2, sefd_l2, bw_hz: float, tint_s: float) -> np.ndarray:
    """Thermal noise of a Stokes I visibility, ``sqrt(σ_RR² + σ_LL²) / 2`` [Jy] (module docstring)."""
    s_rr = thermal_sigma(sefd_r1, sefd_r2, bw_hz, tint_s)
    s_ll = thermal_sigma(sefd_l1, sefd_l2, bw_hz, tint_s)
    return 0.5 * np.sqrt(s_rr**2 + s_ll**2)


def add_thermal_noise(vis: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``V + σ (n_re + i n_im)`` with independent standard normal ``n``.

    Shape: ``vis (M,)`` complex, ``sigma (M,)`` [Jy] -> ``(M,)`` complex128.
    """
    vis = np.asarray(vis, dtype=np.complex128)
    noise = rng.standard_normal(vis.shape) + 1j * rng.standard_normal(vis.shape)
    return vis + np.asarray(sigma, dtype=np.float64) * noise


def station_gains(
    n_times: int,
    n_stations: int,
    rng: np.random.Generator,
    *,
    amp_std: float = 0.1,
    phase: str = "random",
    phase_std_rad: float = 0.0,
) -> np.ndarray:
    """Complex station gains ``g = (1 + a) exp(i φ)``, one per (time, station).

    ``a ~ N(0, amp_std²)`` (clipped at -0.9, so ``|g| >= 0.1``); ``φ`` uniform on ``[-π, π)`` for
    ``phase="random"`` (uncalibrated VLBI phases), ``N(0, phase_std_rad²)`` for ``phase="gaussian"``, 0
    for ``phase="none"``.

    Shape: -> ``(n_times, n_stations)`` complex128.
    """
    if amp_std < 0 or phase_std_rad < 0:
        raise ValueError("gain standard deviations must be non-negative")
    shape = (n_times, n_stations)
    amp = 1.0 + np.clip(amp_std * rng.standard_normal(shape), -0.9, None)
    if phase == "random":
        phi = rng.uniform(-np.pi, np.pi, shape)
    elif phase == "gaussian":
        phi = phase_std_rad * rng.standard_normal(shape)
    elif phase == "none":
        phi = np.zeros(shape)
    else:
        raise ValueError(f"phase must be 'random', 'gaussian' or 'none', got {phase!r}")
    return amp * np.exp(1j * phi)


def apply_station_gains(
    vis: np.ndarray, sigma: np.ndarray, time: np.ndarray, t1: np.ndarray, t2: np.ndarray, gains: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``V_12 -> g_1 conj(g_2) V_12`` and ``σ_12 -> |g_1 g_2| σ_12`` (the signal-to-noise is kept).

    ``gains[i, s]`` applies at the ``i``-th distinct value of ``time`` (sorted) to station ``s``.

    Shape: ``vis, sigma, time, t1, t2 (M,)``, ``gains (n_distinct_times, S)`` -> ``(M,), (M,)``.
    """
    _, ti = np.unique(np.asarray(time), return_inverse=True)
    if gains.shape[0] <= ti.max(initial=-1) or gains.shape[1] <= max(np.max(t1, initial=-1), np.max(t2, initial=-1)):
        raise ValueError(f"gains of shape {gains.shape} do not cover the times and stations of the data")
    g1, g2 = gains[ti, t1], gains[ti, t2]
    return g1 * np.conj(g2) * np.asarray(vis), np.abs(g1 * g2) * np.asarray(sigma)
