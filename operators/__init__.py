"""Forward operators and their families (installed as ``ambient_science.operators``).

Each family module defines an operator (``SubsampledOperator``) and the family that draws it, corrupts
it further, and describes it to a network. ``FAMILIES`` lists every family class; the registry maps
their ``name`` to the class.
"""

from ambient_science.operators.closure import ClosureData, ClosureIndex, closure_data, closure_index
from ambient_science.operators.eht_arrays import StationTable, load_array, read_array
from ambient_science.operators.eht_observe import simulate_observation
from ambient_science.operators.interferometry import Interferometer, InterferometerFamily, uas_to_rad
from ambient_science.operators.mri import CartesianMRI, CartesianMRIFamily, fft2c, ifft2c
from ambient_science.operators.pixel import (
    BoxMaskFamily,
    CleanFamily,
    PixelMask,
    PixelMaskFamily,
    bernoulli_mask,
    box_mask,
)
from ambient_science.operators.rml import RMLWeights, rml_image
from ambient_science.operators.uvcoverage import Coverage, observe_coverage, sample_coverage

FAMILIES = (PixelMaskFamily, BoxMaskFamily, CleanFamily, CartesianMRIFamily, InterferometerFamily)

__all__ = [
    "FAMILIES",
    "BoxMaskFamily",
    "CartesianMRI",
    "CartesianMRIFamily",
    "CleanFamily",
    "ClosureData",
    "ClosureIndex",
    "Coverage",
    "Interferometer",
    "InterferometerFamily",
    "PixelMask",
    "PixelMaskFamily",
    "RMLWeights",
    "StationTable",
    "bernoulli_mask",
    "box_mask",
    "closure_data",
    "closure_index",
    "fft2c",
    "ifft2c",
    "load_array",
    "observe_coverage",
    "read_array",
    "rml_image",
    "sample_coverage",
    "simulate_observation",
    "uas_to_rad",
]
