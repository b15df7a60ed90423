"""Synthetic black holes: the images (:mod:`~ambient_science.datasets.black_hole_images`) and the visibility
measurement records simulated from them (:mod:`~ambient_science.datasets.black_hole_measurements`), under one
name.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, p = sample_black_hole_images(8, BlackHoleImageConfig(npix=32), generator=g)
    >>> tuple(x.shape), bool(torch.allclose(x.sum((1, 2, 3)), p["flux_jy"], rtol=1e-4))
    ((8, 1, 32, 32), True)
"""

from ambient_science.datasets.black_hole_images import (
    SHAPES,
    BlackHoleImageConfig,
    crescent_images,
    gaussian_random_field,
    image_grid,
    ring_images,
    sample_black_hole_images,
)
from ambient_science.datasets.black_hole_measurements import (
    BlackHoleVisibilityDataset,
    SimulatedMeasurements,
    record_observation,
    simulate_measurements,
)

__all__ = [
    "SHAPES",
    "BlackHoleImageConfig",
    "BlackHoleVisibilityDataset",
    "SimulatedMeasurements",
    "crescent_images",
    "gaussian_random_field",
    "image_grid",
    "record_observation",
    "ring_images",
    "sample_black_hole_images",
    "simulate_measurements",
]
