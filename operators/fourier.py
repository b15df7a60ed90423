"""The centred orthonormal 2-D Fourier transform of MRI: ``F = fftshift ∘ fft2(norm="ortho") ∘ ifftshift``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["checkerboards", "column_values", "fft2c", "ifft2c", "put_columns", "sampled_columns", "take_columns"]

_DIMS = (-2, -1)


def checkerboards(H: int, W: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
    """``(c, s c)`` with ``c = (-1)^(i + j)`` and ``s = (-1)^(H/2 + W/2)``, ``(H, W)`` float32; None for odd sizes.

    For even ``N`` a shift by ``N/2`` is a modulation by ``(-1)^k`` in the other domain, so
    ``fftshift(fft2(ifftshift(x))) = s c ⊙ fft2(c ⊙ x)`` (and likewise with ``ifft2``): two sign flips
    instead of four copies of the array (``torch.roll``), which took half the time of a SENSE operator.
    """
    if H % 2 or W % 2:
        return None
    c = (1.0 - 2.0 * (torch.arange(H, device=device) % 2))[:, None] * (1.0 - 2.0 * (torch.arange(W, device=device) % 2))
    return c, (-c if (H // 2 + W // 2) % 2 else c)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two axes: ``fftshift(fft2(ifftshift(x), norm="ortho"))``.

    Shape: ``(..., H, W)`` complex -> ``(..., H, W)`` complex.
    """
    boards = checkerboards(*x.shape[-2:], x.device)
    if boards is not None:
        return torch.fft.fft2(x * boards[0], norm="ortho") * boards[1]
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(y: Tensor) -> Tensor:
    """Inverse (= adjoint) of :func:`fft2c`: ``fftshift(ifft2(ifftshift(y), norm="ortho"))``.

    Shape: ``(..., H, W)`` complex -> ``(..., H, W)`` complex.
    """
    boards = checkerboards(*y.shape[-2:], y.device)
    if boards is not None:
        return torch.fft.ifft2(y * boards[0], norm="ortho") * boards[1]
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(y, dim=_DIMS), norm="ortho"), dim=_DIMS)


# -- column-pruned transforms --------------------------------------------------------------------------------
# With a phase-encode column mask, the 2-D FFT factors as fft_H ∘ fft_W: the forward needs the FFT along W of every
# row but the FFT along H only of the K sampled columns; the adjoint, whose input is zero off those columns, the
# inverse FFT along H of K columns and the inverse FFT along W of every row: about (1 + K/W)/2 of the 2-D work.
def sampled_columns(mask: Tensor, max_fraction: float = 0.5) -> Tensor | None:
    """Column indices for :func:`take_columns`: ``(K,)`` when every row of the ``(B, W)`` 0/1 ``mask`` is the same,
    else ``(B, K)`` (per sample its sampled columns, then unsampled ones up to ``K``, the largest count); ``None``
    when ``K > max_fraction · W`` (then the 2-D FFT is cheaper; where the break-even lies depends on the FFT
    library, see operators/mri.py). Padding columns are unsampled, so a caller that
    multiplies by the mask at the taken columns writes zeros there, which they are.

        >>> sampled_columns(torch.tensor([[0.0, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]]))
        tensor([[1, 3],
                [0, 1]])
    """
    B, W = mask.shape
    K = max(1, int(mask.sum(dim=-1).max()))
    if K > max_fraction * W:
        return None
    cols = torch.sort(mask, dim=-1, descending=True, stable=True).indices[:, :K]
    return cols[0] if B == 1 or bool((mask == mask[:1]).all()) else cols


def column_values(values: Tensor, mask: Tensor, cols: Tensor) -> Tensor:
    """``(mask ⊙ values)`` at ``cols`` (of :func:`sampled_columns`), ``(1 or B, 1, H, K)`` real, for ``(H, W)``
    ``values`` (a checkerboard) and a ``(B, W)`` ``mask``."""
    if cols.ndim == 1:
        return (values[:, cols] * mask[0, cols])[None, None]
    return (values[:, cols].movedim(1, 0) * mask.gather(-1, cols)[:, None, :])[:, None]


def take_columns(z: Tensor, cols: Tensor) -> Tensor:
    """``z[..., cols]`` per sample: ``(b, C, H, W)`` -> ``(b, C, H, K)`` for ``(K,)`` or ``(b, K)`` ``cols``."""
    return torch.gather(z, -1, _column_index(cols, z.shape[:-1]))


def put_columns(v: Tensor, cols: Tensor, width: int, out: Tensor | None = None) -> Tensor:
    """The inverse of :func:`take_columns`: ``(b, C, H, K)`` values into zeros of width ``width`` at ``cols``; into
    ``out`` (which must already be zero off ``cols``) when given, else differentiably into a new tensor."""
    index = _column_index(cols, v.shape[:-1])
    if out is None:
        return v.new_zeros((*v.shape[:-1], width)).scatter(-1, index, v)
    return out.scatter_(-1, index, v)


def _column_index(cols: Tensor, lead: torch.Size) -> Tensor:
    view = cols.view(1, 1, 1, -1) if cols.ndim == 1 else cols[:, None, None, :]
    return view.expand(*lead, cols.shape[-1])
