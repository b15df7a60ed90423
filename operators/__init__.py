"""Forward operators and their families (installed as ``ambient_science.operators``).

Each family module defines an operator (``SubsampledOperator``) and the family that draws it, corrupts
it further, and describes it to a network. ``FAMILIES`` lists every family class; the registry maps
their ``name`` to the class.
"""

from ambient_science.operators.pixel import (
    BoxMaskFamily,
    CleanFamily,
    PixelMask,
    PixelMaskFamily,
    bernoulli_mask,
    box_mask,
)

FAMILIES = (PixelMaskFamily, BoxMaskFamily, CleanFamily)

__all__ = [
    "FAMILIES",
    "BoxMaskFamily",
    "CleanFamily",
    "PixelMask",
    "PixelMaskFamily",
    "bernoulli_mask",
    "box_mask",
]
