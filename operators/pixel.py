"""Pixel masks ``y = M ⊙ x`` and their families: Bernoulli (random inpainting), box, and clean (``M = 1``).

>>> import torch
>>> from ambient_science.operators import PixelMaskFamily
>>> family = PixelMaskFamily((1, 8, 8), p=0.6, delta=0.1)
>>> g = torch.Generator().manual_seed(0)
>>> A = family.sample(4, generator=g)
>>> A_tilde = family.further_corrupt(A, generator=g)
>>> bool((A_tilde.observed <= A.observed).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ambient_science.family import OperatorFamily, bernoulli_keep, uniform
from ambient_science.linop import SubsampledOperator, repeat_batch

__all__ = [
    "BoxMaskFamily",
    "CleanFamily",
    "PixelMask",
    "PixelMaskFamily",
    "bernoulli_mask",
    "box_mask",
]


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
    return shape  # type: ignore[return-value]


class PixelMask(SubsampledOperator):
    """``y = M ⊙ x`` with a per-sample 0/1 mask.

    Args:
        mask: ``(B, 1, H, W)`` (shared by all channels) or ``(B, C, H, W)``, values in {0, 1}.
        image_shape: ``(C, H, W)``; defaults to the mask's own ``(C, H, W)``.

    Shape: ``x (B, C, H, W)`` real or complex -> ``y (B, C, H, W)`` (zeros where hidden).
    """

    def __init__(self, mask: Tensor, image_shape: Sequence[int] | None = None):
        if not isinstance(mask, Tensor) or mask.ndim != 4:
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"PixelMask: mask must be a (B, 1 or C, H, W) tensor, got {got}")
        if mask.is_complex() or not torch.isfinite(mask).all():
            raise ValueError("PixelMask: mask must be real and finite (0 = hidden, 1 = observed)")
        C, H, W = _image_shape(image_shape) if image_shape is not None else tuple(mask.shape[1:])
        if mask.shape[2:] != (H, W) or mask.shape[1] not in (1, C):
            raise ValueError(
                f"PixelMask: mask of shape {tuple(mask.shape)} does not fit images of shape (C, H, W) = "
                f"{(C, H, W)}; expected (B, 1, {H}, {W}) or (B, {C}, {H}, {W})"
            )
        shape = (mask.shape[0], C, H, W)
        super().__init__(shape, shape)
        self.register_buffer("mask", mask.to(torch.float32))

    @property
    def observed(self) -> Tensor:
        return self.mask

    def _forward(self, x: Tensor) -> Tensor:
        return self.mask * x

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.mask * y

    def _normal(self, x: Tensor) -> Tensor:
        return self.mask * x  # M is a 0/1 projection: M^H M = M

    def restrict(self, keep: Tensor) -> PixelMask:
        return PixelMask(self.mask * keep.to(self.mask), self.ishape[1:])

    def tile(self, copies: int) -> PixelMask:
        """The batch repeated ``copies`` times, copy-major."""
        return PixelMask(repeat_batch(self.mask, copies), self.ishape[1:])

    def params(self) -> dict[str, Tensor]:
        return {"mask": self.mask}


def bernoulli_mask(batch_size: int, shape: Sequence[int], p: float, *, generator: torch.Generator) -> Tensor:
    """0/1 masks hiding each pixel independently with probability ``p``.

    Shape: ``shape = (C, H, W)`` -> ``(batch_size, C, H, W)`` float32 on the generator's device.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"hide probability p must be in [0, 1), got {p}")
    return bernoulli_keep((batch_size, *shape), p, generator)


def box_mask(batch_size: int, height: int, width: int, box: int, *, generator: torch.Generator) -> Tensor:
    """0/1 masks hiding one ``box × box`` square at a uniformly random position per sample.

    Shape: ``(batch_size, 1, height, width)`` float32.
    """
    if not 0 < box <= min(height, width):
        raise ValueError(f"box size must be in [1, {min(height, width)}], got {box}")
    top = (uniform((batch_size,), generator) * (height - box + 1)).long()
    left = (uniform((batch_size,), generator) * (width - box + 1)).long()
    rows = torch.arange(height, device=generator.device)
    cols = torch.arange(width, device=generator.device)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + box)
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + box)
    hidden = in_rows[:, :, None] & in_cols[:, None, :]
    return (~hidden).to(torch.float32)[:, None]


class _PixelFamilyBase(OperatorFamily):
    conditioning_channels = 1

    def __init__(self, image_shape: Sequence[int], delta: float, is_complex: bool):
        if not 0.0 <= delta < 1.0:
            raise ValueError(f"further-corruption probability delta must be in [0, 1), got {delta}")
        self.image_shape = _image_shape(image_shape)
        self.delta = float(delta)
        self.is_complex = bool(is_complex)

    def further_corrupt(self, A: PixelMask, *, generator: torch.Generator) -> PixelMask:
        """Hide each still-observed pixel with probability ``delta`` (the mask stays shared over channels)."""
        keep = bernoulli_keep(A.mask.shape, self.delta, generator).to(A.mask.device)
        return A.restrict(keep)

    def conditioning(self, A: PixelMask) -> Tensor:
        """The mask image, one channel (the mean over channels for per-channel masks)."""
        return A.mask.mean(dim=1, keepdim=True)

    def make(self, params: dict[str, Tensor]) -> PixelMask:
        if "mask" not in params:
            raise KeyError(f"{type(self).__name__}.make expects params with key 'mask', got {sorted(params)}")
        return PixelMask(params["mask"], self.image_shape)

    def _mask_shape(self) -> tuple[int, int, int]:
        return (1, *self.image_shape[1:])


class PixelMaskFamily(_PixelFamilyBase):
    """Random inpainting (Daras et al. 2023): each pixel hidden with probability ``p``; further
    corruption hides each observed pixel with probability ``delta``. One mask per image, shared by its
    channels; conditioning is the mask image."""

    name = "pixel_mask"

    def __init__(self, image_shape: Sequence[int], p: float, delta: float = 0.1, is_complex: bool = False):
        super().__init__(image_shape, delta, is_complex)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"hide probability p must be in [0, 1), got {p}")
        self.p = float(p)

    def sample(self, batch_size, *, generator, device=None) -> PixelMask:
        mask = bernoulli_mask(batch_size, self._mask_shape(), self.p, generator=generator)
        return PixelMask(mask, self.image_shape).to(device or mask.device)

    def config(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "image_shape": list(self.image_shape),
            "p": self.p,
            "delta": self.delta,
            "is_complex": self.is_complex,
        }


class BoxMaskFamily(_PixelFamilyBase):
    """One hidden ``box × box`` square per image; further corruption hides observed pixels w.p. ``delta``."""

    name = "box_mask"

    def __init__(self, image_shape: Sequence[int], box: int, delta: float = 0.1, is_complex: bool = False):
        super().__init__(image_shape, delta, is_complex)
        self.box = int(box)
        box_mask(1, *self.image_shape[1:], self.box, generator=torch.Generator())  # validates box

    def sample(self, batch_size, *, generator, device=None) -> PixelMask:
        mask = box_mask(batch_size, *self.image_shape[1:], self.box, generator=generator)
        return PixelMask(mask, self.image_shape).to(device or mask.device)

    def config(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "image_shape": list(self.image_shape),
            "box": self.box,
            "delta": self.delta,
            "is_complex": self.is_complex,
        }


class CleanFamily(_PixelFamilyBase):
    """Clean data, ``A = I`` (a mask of ones) and no further corruption.

    The ambient loss with this family is exactly the EDM loss: the clean baseline is the same code.
    It has no conditioning channels.
    """

    name = "clean"
    conditioning_channels = 0

    def __init__(self, image_shape: Sequence[int], is_complex: bool = False):
        super().__init__(image_shape, 0.0, is_complex)

    def sample(self, batch_size, *, generator, device=None) -> PixelMask:
        mask = torch.ones((batch_size, *self._mask_shape()), device=generator.device)
        return PixelMask(mask, self.image_shape).to(device or mask.device)

    def further_corrupt(self, A: PixelMask, *, generator: torch.Generator) -> PixelMask:
        return A

    def conditioning(self, A: PixelMask) -> Tensor:
        return A.mask[:, :0]

    def config(self) -> dict[str, Any]:
        return {"family": self.name, "image_shape": list(self.image_shape), "is_complex": self.is_complex}
