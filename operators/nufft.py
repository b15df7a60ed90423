"""Non-Cartesian (radial) MRI through torchkbnufft (optional extra ``ambient-science[nufft]``).

``y_c(ω_k) = w_k · (1/sqrt(H W)) Σ_n S_c(n) x(n) exp(-i ω_k · (n - c))``, ``c = (H // 2, W // 2)``: the
non-uniform DFT of the coil images at k-space points ``ω_k`` (radians per pixel, in ``[-π, π)``, row
component first), computed by Kaiser-Bessel gridding (torchkbnufft, imported lazily: this module imports
without it). ``w_k`` is an optional 0/1 weight that zeroes padded points, so per-sample trajectories of
different lengths batch.

    >>> import torch
    >>> traj = radial_trajectory(num_spokes=8, num_readout=16)
    >>> traj.shape, bool(traj.abs().max() <= torch.pi)
    (torch.Size([2, 128]), True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ambient_science.linop import LinearOperator

__all__ = ["GOLDEN_ANGLE", "RadialMRI", "radial_trajectory", "ramp_density"]

GOLDEN_ANGLE = math.pi * (math.sqrt(5) - 1) / 2  # 111.246°, the golden angle of radial spokes


def _tkbn():
    try:
        with warnings.catch_warnings():  # torchkbnufft scripts functions at import; torch deprecates jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            import torchkbnufft
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the radial (non-Cartesian) MRI operator needs torchkbnufft: pip install 'ambient-science[nufft]'"
        ) from err
    return torchkbnufft


def radial_trajectory(num_spokes: int, num_readout: int, *, golden: bool = True, offset: float = 0.0) -> Tensor:
    """Radial k-space points: ``num_spokes`` lines through the centre, ``num_readout`` samples each.

    Spoke ``n`` has angle ``θ_n = (n + offset) Δθ`` (``Δθ`` the golden angle ``π (√5 - 1) / 2`` or
    ``π / num_spokes``); samples ``r_j = π (2 j / num_readout - 1)``, ``j = 0 … num_readout - 1``.

    Shape: ``(2, num_spokes · num_readout)`` float32 radians per pixel, rows (``ω_y``) first.
    """
    step = GOLDEN_ANGLE if golden else math.pi / num_spokes
    theta = (torch.arange(num_spokes, dtype=torch.float64) + offset) * step
    r = math.pi * (2 * torch.arange(num_readout, dtype=torch.float64) / num_readout - 1)
    ky = r[None, :] * torch.sin(theta)[:, None]
    kx = r[None, :] * torch.cos(theta)[:, None]
    return torch.stack([ky.reshape(-1), kx.reshape(-1)]).to(torch.float32)


def ramp_density(trajectory: Tensor) -> Tensor:
    """Ramp density compensation ``|ω| / π`` (floored at half a readout step) for gridding radial data.

    Shape: ``(..., 2, K)`` -> ``(..., K)``.
    """
    radius = trajectory.norm(dim=-2) / math.pi
    return radius.clamp_min(float(radius[radius > 0].min()) / 2 if bool((radius > 0).any()) else 1.0)


class RadialMRI(LinearOperator):
    """Non-Cartesian multi-coil MRI ``y_c = w ⊙ NUFFT(S_c x)`` (module docstring), per-sample trajectories.

    Args:
        trajectory: ``(2, K)`` shared or ``(B, 2, K)`` per sample, radians per pixel.
        image_shape: ``(1, H, W)``.
        coil_maps: ``(B, C, H, W)`` complex; ``None`` for single-coil.
        weights: ``(B, K)`` 0/1 (0 on padding); default all ones.
        batch_size: needed only when neither ``trajectory`` nor ``coil_maps`` nor ``weights`` is batched.
        oversampling: grid oversampling of the NUFFT.

    Shape: ``x (B, 1, H, W)`` complex64 -> ``y (B, C, K)`` complex64.
    """

    def __init__(
        self,
        trajectory: Tensor,
        image_shape: Sequence[int],
        *,
        coil_maps: Tensor | None = None,
        weights: Tensor | None = None,
        batch_size: int | None = None,
        oversampling: float = 2.0,
    ):
        tkbn = _tkbn()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"RadialMRI: image_shape must be (1, H, W), got {tuple(image_shape)}")
        if trajectory.ndim not in (2, 3) or trajectory.shape[-2] != 2:
            raise ValueError(f"RadialMRI: trajectory must be (2, K) or (B, 2, K), got {tuple(trajectory.shape)}")
        candidates = {
            t.shape[0] for t in (trajectory if trajectory.ndim == 3 else None, coil_maps, weights) if t is not None
        }
        if batch_size is not None:
            candidates.add(int(batch_size))
        if len(candidates) > 1:
            raise ValueError(f"RadialMRI: trajectory, coil_maps and weights disagree on the batch size {candidates}")
        B = candidates.pop() if candidates else 1
        K = trajectory.shape[-1]
        H, W = shape[1:]
        if coil_maps is not None and tuple(coil_maps.shape[2:]) != (H, W):
            raise ValueError(f"RadialMRI: coil_maps {tuple(coil_maps.shape)} do not fit images (1, {H}, {W})")
        if weights is not None and tuple(weights.shape) != (B, K):
            raise ValueError(f"RadialMRI: weights must be ({B}, {K}), got {tuple(weights.shape)}")
        C = 1 if coil_maps is None else coil_maps.shape[1]
        super().__init__((B, 1, H, W), (B, C, K))
        grid = (math.ceil(oversampling * H), math.ceil(oversampling * W))
        self.nufft = tkbn.KbNufft(im_size=(H, W), grid_size=grid)
        self.nufft_adjoint = tkbn.KbNufftAdjoint(im_size=(H, W), grid_size=grid)
        # torchkbnufft's norm="ortho" divides by sqrt(grid size); rescale to the unitary 1/sqrt(H W)
        self.scale = math.sqrt(grid[0] * grid[1] / (H * W))
        self.register_buffer("trajectory", trajectory.to(torch.float32))
        self.register_buffer("coil_maps", None if coil_maps is None else coil_maps.to(torch.complex64))
        self.register_buffer("weights", None if weights is None else weights.to(torch.float32))

    def _omega(self) -> Tensor:
        if self.trajectory.ndim == 3:
            return self.trajectory
        return self.trajectory[None].expand(self.batch_size, -1, -1)

    def _forward(self, x: Tensor) -> Tensor:
        x = x if x.is_complex() else x.to(torch.complex64)
        y = self.scale * self.nufft(x, self._omega(), smaps=self.coil_maps, norm="ortho")
        return y if self.weights is None else self.weights[:, None] * y

    def _adjoint(self, y: Tensor) -> Tensor:
        y = y if self.weights is None else self.weights[:, None] * y
        return self.scale * self.nufft_adjoint(y, self._omega(), smaps=self.coil_maps, norm="ortho")

    def gridding(self, y: Tensor) -> Tensor:
        """Density-compensated adjoint ``A^H (d ⊙ y)`` with the ramp density, rescaled to least-squares
        intensity. Shape: ``(B, C, K)`` -> ``(B, 1, H, W)``."""
        d = ramp_density(self._omega())[:, None]
        x = self._adjoint(d * y)
        # scale so that A(x) matches y in the least-squares sense
        Ax = self._forward(x)
        num = (Ax.conj() * y).sum(dim=(1, 2)).real
        den = (Ax.abs() ** 2).sum(dim=(1, 2)).clamp_min(1e-30)
        return x * (num / den)[:, None, None, None]
