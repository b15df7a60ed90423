"""Radial (non-Cartesian) MRI through torchkbnufft; skipped when the optional extra is missing."""

import math

import pytest
import torch

from ambient_science.testing import check_adjoint

pytest.importorskip("torchkbnufft")

from ambient_science.operators.nufft import RadialMRI, radial_trajectory, ramp_density


def _nudft(x, traj, maps):
    """Exact reference: y_c(ω) = (1/sqrt(HW)) Σ_n S_c(n) x(n) exp(-i ω·(n - c)), c = (H//2, W//2)."""
    H, W = x.shape[-2:]
    n0 = (torch.arange(H) - H // 2).double()
    n1 = (torch.arange(W) - W // 2).double()
    phase = traj[:, 0, :, None, None].double() * n0[:, None] + traj[:, 1, :, None, None].double() * n1
    coil = (maps * x).to(torch.complex128)
    return torch.einsum("bkhw,bchw->bck", torch.exp(-1j * phase), coil) / math.sqrt(H * W)


def test_radial_matches_exact_nudft_and_passes_adjoint():
    H, W = 12, 10
    g = torch.Generator().manual_seed(0)
    traj = torch.stack([radial_trajectory(8, 16, offset=0.5 * b) for b in range(2)])
    maps = torch.randn(2, 3, H, W, dtype=torch.complex64, generator=g)
    x = torch.randn(2, 1, H, W, dtype=torch.complex64, generator=g)
    A = RadialMRI(traj, (1, H, W), coil_maps=maps)
    y = A(x)
    ref = _nudft(x, traj, maps)
    assert float((y - ref).abs().norm() / ref.abs().norm()) < 1e-2  # Kaiser-Bessel interpolation accuracy
    assert check_adjoint(A, torch.complex64) < 1e-5


def test_radial_weights_shared_trajectory_and_gridding():
    H = W = 16
    traj = radial_trajectory(24, 32, golden=False)
    assert traj.shape == (2, 24 * 32) and float(traj.abs().max()) <= math.pi + 1e-6
    weights = torch.ones(2, traj.shape[-1])
    weights[1, -32:] = 0  # second sample: last spoke is padding
    A = RadialMRI(traj, (1, H, W), weights=weights)
    assert A.oshape == (2, 1, 24 * 32)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    x = (((yy - 8) ** 2 + (xx - 8) ** 2) < 25).to(torch.complex64)[None, None].expand(2, 1, H, W)
    y = A(x)
    assert float(y[1, :, -32:].abs().max()) == 0.0
    rec = A.gridding(y)
    assert float((rec.abs() - x.abs()).norm() / x.abs().norm()) < 0.5
    assert ramp_density(traj).shape == (24 * 32,)
