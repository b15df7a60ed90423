"""Complex images <-> real channels, at the network boundary only (docs/design.md §3).

Inside operators, complex images stay native ``torch.complex64``; a network sees each complex channel
as two real channels ``[real, imag]``.

    >>> import torch
    >>> z = torch.randn(2, 1, 4, 4, dtype=torch.complex64)
    >>> bool(torch.equal(channels_to_complex(complex_to_channels(z)), z))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["channels_to_complex", "complex_to_channels", "from_network", "to_network"]


def complex_to_channels(z: Tensor) -> Tensor:
    """``(B, C, ...)`` complex -> ``(B, 2C, ...)`` real, channel ``2c`` real part and ``2c+1`` imaginary."""
    if not z.is_complex():
        raise TypeError(f"expected a complex tensor, got {z.dtype}")
    x = torch.view_as_real(z)  # (B, C, ..., 2)
    x = x.movedim(-1, 2)  # (B, C, 2, ...)
    return x.reshape(z.shape[0], 2 * z.shape[1], *z.shape[2:])


def channels_to_complex(x: Tensor) -> Tensor:
    """``(B, 2C, ...)`` real -> ``(B, C, ...)`` complex; inverse of :func:`complex_to_channels`."""
    if x.is_complex():
        raise TypeError("expected a real tensor of interleaved [real, imag] channels, got a complex one")
    if x.shape[1] % 2:
        raise ValueError(f"expected an even number of channels, got {x.shape[1]}")
    x = x.reshape(x.shape[0], x.shape[1] // 2, 2, *x.shape[2:]).movedim(2, -1)
    return torch.view_as_complex(x.float().contiguous())


def to_network(x: Tensor) -> Tensor:
    """Real images pass through; complex images become ``[real, imag]`` channels."""
    return complex_to_channels(x) if x.is_complex() else x


def from_network(x: Tensor, is_complex: bool) -> Tensor:
    """Inverse of :func:`to_network` for an image domain that is complex or not."""
    return channels_to_complex(x) if is_complex else x
