"""Data: file formats, dataset classes and synthetic generators (installed as ``ambient_science.datasets``)."""

from ambient_science.datasets.black_holes import (
    BlackHoleImageConfig,
    BlackHoleVisibilityDataset,
    sample_black_hole_images,
    simulate_measurements,
)
from ambient_science.datasets.fastmri import (
    FastMRISlice,
    FastMRISliceDataset,
    FastMRIVolume,
    GridTransform,
    RetrospectiveUndersampling,
    write_fastmri_volume,
)
from ambient_science.datasets.fits_image import SkyImage, read_fits_image, write_fits_image
from ambient_science.datasets.synthetic_knee import synthetic_knee_volume, write_synthetic_knee_dataset
from ambient_science.datasets.uvfits import Observation, average, read_uvfits, write_uvfits

__all__: list[str] = [
    "BlackHoleImageConfig",
    "BlackHoleVisibilityDataset",
    "FastMRISlice",
    "FastMRISliceDataset",
    "FastMRIVolume",
    "GridTransform",
    "Observation",
    "RetrospectiveUndersampling",
    "SkyImage",
    "average",
    "read_fits_image",
    "read_uvfits",
    "sample_black_hole_images",
    "simulate_measurements",
    "synthetic_knee_volume",
    "write_fastmri_volume",
    "write_fits_image",
    "write_synthetic_knee_dataset",
    "write_uvfits",
]
