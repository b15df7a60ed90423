"""Simulated VLBI observations of an image: ``V = A I`` through a coverage, thermal noise, then station gains."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ambient_science.operators.eht_noise import add_thermal_noise, apply_station_gains, station_gains
from ambient_science.operators.interferometry import Interferometer
from ambient_science.operators.uvcoverage import Coverage

__all__ = ["simulate_observation"]


def simulate_observation(
    coverage: Coverage,
    image: np.ndarray,
    pixel_size: float,
    rng: np.random.Generator | None = None,
    *,
    thermal_noise: bool = True,
    gain_amp_std: float = 0.0,
    gain_phase: str = "none",
    gain_phase_std_rad: float = 0.0,
) -> Coverage:
    """Observe an image through a coverage: ``V = A I`` (ehtim convention), plus noise, then gains.

    Args:
        coverage: where and when (its ``sigma`` is the thermal noise).
        image: ``(npix, npix)`` brightness per pixel [Jy/pixel], row 0 north, column 0 east.
        pixel_size: [rad].
        rng: needed when ``thermal_noise`` or gains are on.
        gain_amp_std, gain_phase, gain_phase_std_rad: station gains per time (:func:`station_gains`);
            with the defaults no gain error is applied.

    Returns a copy of ``coverage`` with ``vis`` (complex128, Jy) and ``sigma`` filled in.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be square (npix, npix), got shape {image.shape}")
    needs_rng = thermal_noise or gain_amp_std > 0 or gain_phase != "none"
    if needs_rng and rng is None:
        raise ValueError("simulate_observation needs rng (a numpy Generator) for noise or gain errors")
    A = Interferometer(torch.as_tensor(coverage.uv)[None], image.shape[0], pixel_size)
    vis = A(torch.as_tensor(image)[None, None])[0].numpy().astype(np.complex128)
    sigma = np.asarray(coverage.sigma, dtype=np.float64)
    if thermal_noise:
        vis = add_thermal_noise(vis, sigma, rng)
    if gain_amp_std > 0 or gain_phase != "none":
        n_times = len(np.unique(coverage.time))
        g = station_gains(
            n_times,
            len(coverage.stations),
            rng,
            amp_std=gain_amp_std,
            phase=gain_phase,
            phase_std_rad=gain_phase_std_rad,
        )
        vis, sigma = apply_station_gains(vis, sigma, coverage.time, coverage.t1, coverage.t2, g)
    return dataclasses.replace(coverage, vis=vis, sigma=sigma)
