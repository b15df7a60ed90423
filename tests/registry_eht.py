"""Interferometry operators and the EHT coverage family, for the property and family tests (tests/conftest.py)."""

from __future__ import annotations

import torch

from ambient_science.operators.interferometry import Interferometer, InterferometerFamily, uas_to_rad


def _random_interferometer(method: str = "dft") -> Interferometer:
    g = torch.Generator().manual_seed(3)
    uv = (torch.rand(2, 40, 2, generator=g, dtype=torch.float64) - 0.5) * 1.2e10
    observed = (torch.rand(2, 40, generator=g) > 0.2).float()
    observed[1, 30:] = 0  # padding
    return Interferometer(uv, 12, uas_to_rad(6.0), observed, method=method)


def _family() -> InterferometerFamily:
    return InterferometerFamily(npix=16, fov_uas=120.0, array="eht2017", bank_size=4, duration_range_hr=(2.0, 6.0))


REAL = (torch.float32, torch.float64)

OPERATORS = {
    "interferometer": (_random_interferometer, REAL),
    "interferometer_family": (lambda: _family().sample(2, generator=torch.Generator().manual_seed(0)), REAL),
    "interferometer_restricted": (
        lambda: _family().further_corrupt(
            _family().sample(2, generator=torch.Generator().manual_seed(1)), generator=torch.Generator().manual_seed(2)
        ),
        REAL,
    ),
}

FAMILIES = {
    "interferometer": _family,
    "interferometer_eht2025": lambda: InterferometerFamily(
        npix=16, fov_uas=120.0, array="eht2025", bank_size=3, delta_station=0.2, delta_baseline=0.1, delta_time=0.2
    ),
}
