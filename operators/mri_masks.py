"""k-space sampling masks: fastMRI-style phase-encode column masks, 2-D variable-density / Poisson-disc masks,
and the further corruption of ambient training (drop observed lines, never the fully sampled centre).

Column masks act on the last (phase-encode) axis ``W`` of k-space ``(..., H, W)``, as in fastMRI: a
centre band of ``round(W * center_fraction)`` columns (the ACS, autocalibration signal) is always
sampled, the remaining columns are drawn so that on average ``W / acceleration`` columns are sampled.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> m = random_column_mask(8, 320, acceleration=4, center_fraction=0.08, generator=g)
    >>> m.shape, bool(m[:, acs_slice(320, 0.08)].all())
    (torch.Size([8, 320]), True)

Every draw takes an explicit ``torch.Generator``; masks are created on the generator's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ambient_science.family import uniform

__all__ = [
    "COLUMN_KINDS",
    "MASK_KINDS",
    "acs_box",
    "acs_columns",
    "acs_slice",
    "acs_width",
    "column_mask",
    "drop_columns",
    "drop_points",
    "equispaced_column_mask",
    "poisson_disc_mask",
    "random_column_mask",
    "variable_density_mask",
]

COLUMN_KINDS = ("random", "equispaced")
MASK_KINDS = (*COLUMN_KINDS, "poisson", "variable_density")


# -- the fully sampled centre ---------------------------------------------------------------------------
def acs_width(width: int, center_fraction: float) -> int:
    """Number of fully sampled centre columns, ``round(width * center_fraction)`` (fastMRI's rule)."""
    if not 0.0 <= center_fraction <= 1.0:
        raise ValueError(f"center_fraction must be in [0, 1], got {center_fraction}")
    return round(float(width) * float(center_fraction))


def acs_slice(width: int, center_fraction: float) -> slice:
    """The centre columns as a slice: ``n = acs_width``, starting at ``(width - n + 1) // 2``.

    The band contains the k-space centre ``width // 2`` (the DC line after ``fftshift``).
    """
    n = acs_width(width, center_fraction)
    start = (width - n + 1) // 2
    return slice(start, start + n)


def acs_columns(width: int, center_fraction: float, device: torch.device | str | None = None) -> Tensor:
    """Bool ``(width,)``: True on the fully sampled centre columns."""
    out = torch.zeros(width, dtype=torch.bool, device=device)
    out[acs_slice(width, center_fraction)] = True
    return out


def acs_box(shape: Sequence[int], center_fraction: float, device: torch.device | str | None = None) -> Tensor:
    """Bool ``(H, W)``: True on the fully sampled centre box ``acs_width(H) × acs_width(W)`` of a 2-D mask."""
    H, W = (int(s) for s in shape)
    out = torch.zeros(H, W, dtype=torch.bool, device=device)
    out[acs_slice(H, center_fraction), acs_slice(W, center_fraction)] = True
    return out


def _check_acceleration(acceleration: float) -> float:
    if not acceleration >= 1.0:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    return float(acceleration)


# -- 1-D column masks ----------------------------------------------------------------------------------
def random_column_mask(
    batch_size: int, width: int, acceleration: float, center_fraction: float, *, generator: torch.Generator
) -> Tensor:
    """fastMRI's random mask: the ACS band plus each other column independently with probability ``p``.

    ``p = (W / R - n_acs) / (W - n_acs)``, so the expected number of sampled columns is ``W / R``.

    Shape: ``(batch_size, width)`` float32 0/1 on the generator's device.
    """
    R = _check_acceleration(acceleration)
    n_acs = acs_width(width, center_fraction)
    if n_acs >= width:
        p = 0.0
    else:
        p = (width / R - n_acs) / (width - n_acs)
    if p < 0:
        raise ValueError(
            f"center_fraction {center_fraction} already samples {n_acs} of {width} columns, more than "
            f"width / acceleration = {width / R:.1f}; lower center_fraction or acceleration"
        )
    mask = uniform((batch_size, width), generator) < p
    mask |= acs_columns(width, center_fraction, generator.device)
    return mask.to(torch.float32)


def equispaced_column_mask(
    batch_size: int, width: int, acceleration: float, center_fraction: float, *, generator: torch.Generator
) -> Tensor:
    """Equispaced columns with a random offset plus the ACS band, ``W / R`` columns in all (fastMRI's
    fraction-preserving equispaced mask).

    The spacing ``s`` solves ``n_acs + (W - n_acs) / s = W / R``: ``s = R (W - n_acs) / (W - R n_acs)``
    (the equispaced lines falling inside the ACS band are not counted twice). Offsets are uniform
    integers in ``[0, round(s))``, one per sample.

    Shape: ``(batch_size, width)`` float32 0/1 on the generator's device.
    """
    R = _check_acceleration(acceleration)
    n_acs = acs_width(width, center_fraction)
    if width - R * n_acs <= 0:
        raise ValueError(
            f"center_fraction {center_fraction} already samples {n_acs} of {width} columns, at least "
            f"width / acceleration = {width / R:.1f}; lower center_fraction or acceleration"
        )
    spacing = R * (width - n_acs) / (width - R * n_acs)
    device = generator.device
    offsets = torch.floor(uniform((batch_size,), generator) * max(round(spacing), 1))  # (B,)
    k = torch.arange(math.ceil(width / spacing) + 1, device=device, dtype=torch.float64)
    pos = torch.floor(offsets.double()[:, None] + k[None] * spacing + 0.5).long()  # (B, K)
    valid = pos < width
    mask = torch.zeros(batch_size, width + 1, dtype=torch.bool, device=device)
    mask.scatter_(1, torch.where(valid, pos, width), True)
    mask = mask[:, :width] | acs_columns(width, center_fraction, device)
    return mask.to(torch.float32)


def column_mask(
    kind: str,
    batch_size: int,
    width: int,
    acceleration: float,
    center_fraction: float,
    *,
    generator: torch.Generator,
) -> Tensor:
    """Dispatch on ``kind`` in ``("random", "equispaced")``. Shape: ``(batch_size, width)``."""
    if kind == "random":
        return random_column_mask(batch_size, width, acceleration, center_fraction, generator=generator)
    if kind == "equispaced":
        return equispaced_column_mask(batch_size, width, acceleration, center_fraction, generator=generator)
    raise ValueError(f"unknown column-mask kind {kind!r}; expected one of {COLUMN_KINDS}")


# -- 2-D masks -----------------------------------------------------------------------------------------
def _seeds(batch_size: int, generator: torch.Generator) -> list[int]:
    return [int(s) for s in (uniform((batch_size,), generator) * (2**31 - 1)).long().tolist()]


def poisson_disc_mask(
    batch_size: int,
    shape: Sequence[int],
    acceleration: float,
    center_fraction: float = 0.08,
    *,
    generator: torch.Generator,
    crop_corner: bool = True,
) -> Tensor:
    """Variable-density Poisson-disc 2-D masks (sigpy's ``mri.poisson``) with the ACS box fully sampled.

    Density ``∝ 1 / (1 + s |k|)``, slope ``s`` found by sigpy so that ``H W / sum(mask) ≈ R``. Each
    sample gets its own integer seed drawn from ``generator`` (sigpy restores numpy's global state).

    Shape: ``(batch_size, H, W)`` float32 0/1 on the generator's device.
    """
    import sigpy.mri

    R = _check_acceleration(acceleration)
    H, W = (int(s) for s in shape)
    box = acs_box((H, W), center_fraction)
    calib = (acs_width(H, center_fraction), acs_width(W, center_fraction))
    masks = [
        np.abs(sigpy.mri.poisson((H, W), R, calib=calib, dtype=np.float32, crop_corner=crop_corner, seed=s)) > 0
        for s in _seeds(batch_size, generator)
    ]
    out = torch.from_numpy(np.stack(masks)) | box
    return out.to(torch.float32).to(generator.device)


def variable_density_mask(
    batch_size: int,
    shape: Sequence[int],
    acceleration: float,
    center_fraction: float = 0.08,
    *,
    generator: torch.Generator,
    power: float = 2.0,
) -> Tensor:
    """Independent (Bernoulli) 2-D variable-density masks with the ACS box fully sampled.

    Each k-space point outside the ACS box is sampled with probability ``p(k) = min(1, c (1 - r)^power)``,
    ``r = |k| / max|k|`` (elliptical radius), ``c`` found by bisection so that the expected number of
    samples is ``H W / R``.

    Shape: ``(batch_size, H, W)`` float32 0/1 on the generator's device.
    """
    R = _check_acceleration(acceleration)
    H, W = (int(s) for s in shape)
    box = acs_box((H, W), center_fraction)
    ky = (torch.arange(H, dtype=torch.float64) - H // 2) / max(H // 2, 1)
    kx = (torch.arange(W, dtype=torch.float64) - W // 2) / max(W // 2, 1)
    r = torch.sqrt(ky[:, None] ** 2 + kx[None] ** 2).clamp(max=1.0)
    base = (1.0 - r) ** power
    budget = H * W / R - float(box.sum())
    if budget < 0:
        raise ValueError(f"the ACS box ({int(box.sum())} points) exceeds H W / R = {H * W / R:.0f}")
    lo, hi = 0.0, 1.0
    while float(torch.clamp(hi * base, max=1.0)[~box].sum()) < budget and hi < 1e12:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(torch.clamp(mid * base, max=1.0)[~box].sum()) < budget:
            lo = mid
        else:
            hi = mid
    p = torch.clamp(hi * base, max=1.0).to(torch.float32).to(generator.device)
    mask = uniform((batch_size, H, W), generator) < p
    return (mask | box.to(generator.device)).to(torch.float32)


# -- further corruption ------------------------------------------------------------------------------
def _drop_exact(observed: Tensor, droppable: Tensor, drop_fraction: float, generator: torch.Generator) -> Tensor:
    """Per row of ``observed (B, N)``: zero exactly ``round(drop_fraction * n)`` of its ``n`` observed,
    droppable entries, chosen uniformly at random. Returns the kept 0/1 float mask ``(B, N)``."""
    if not 0.0 <= drop_fraction < 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
    candidates = (observed > 0) & droppable
    n_drop = torch.round(candidates.sum(dim=1).double() * drop_fraction).long()  # (B,)
    score = uniform(observed.shape, generator).to(observed.device)
    score = torch.where(candidates, score, torch.full_like(score, 2.0))
    rank = score.argsort(dim=1).argsort(dim=1)  # 0 = smallest score
    drop = rank < n_drop[:, None]
    return ((observed > 0) & ~drop).to(torch.float32)


def drop_columns(mask: Tensor, drop_fraction: float, center_fraction: float, *, generator: torch.Generator) -> Tensor:
    """Further corruption of column masks: drop ``round(drop_fraction · n)`` of the ``n`` observed
    non-ACS columns of each sample, uniformly at random; the ACS band is never dropped.

    Shape: ``mask (B, W)`` -> ``(B, W)`` float32, a subset of ``mask``.
    """
    W = mask.shape[-1]
    droppable = ~acs_columns(W, center_fraction, mask.device)
    return _drop_exact(mask, droppable[None].expand_as(mask), drop_fraction, generator)


def drop_points(mask: Tensor, drop_fraction: float, center_fraction: float, *, generator: torch.Generator) -> Tensor:
    """Further corruption of 2-D masks: drop ``round(drop_fraction · n)`` of the ``n`` observed points
    outside the ACS box of each sample.

    Shape: ``mask (B, H, W)`` -> ``(B, H, W)`` float32, a subset of ``mask``.
    """
    B, H, W = mask.shape
    droppable = ~acs_box((H, W), center_fraction, mask.device).reshape(1, -1).expand(B, -1)
    kept = _drop_exact(mask.reshape(B, -1), droppable, drop_fraction, generator)
    return kept.reshape(B, H, W)
