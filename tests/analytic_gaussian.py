"""An analytic prior for sampler tests: Gaussian data and the exact ambient denoiser, no training.

For ``x ~ N(μ, Σ)`` (each network channel independent, same ``Σ`` over pixels) and the observation
``z = M (x + σ ε)`` of a pixel mask ``M``, the exact denoiser is
``E[x | z, M] = μ + Σ Mᵀ (M Σ Mᵀ + σ² I)⁻¹ (z − M μ)``; with ``M = I`` it is the plain ``E[x | x_σ]``.
:class:`GaussianDenoiserNet` obeys the network contract ``net(x, sigma, cond)`` and reads ``M`` from the
conditioning channel of ``PixelMaskFamily`` (no channel: ``CleanFamily``, ``M = I``).

:class:`Shrink` is the simplest case, the white prior ``N(0, V I)`` (``V`` = :data:`V`): ``E[x | x_σ] = x_σ V / (V +
σ²)`` whatever the mask, so a sampler with it is affine in its noise; :func:`white_pixel_case` pairs it with the
Gaussian likelihood of a pixel mask.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ambient_science.operators import PixelMaskFamily
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior

V = 0.25  # the variance of Shrink's prior N(0, V I)


class Shrink(nn.Module):
    """The exact denoiser of ``N(0, V I)``, whatever the conditioning."""

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor, project=None) -> Tensor:
        return x * V / (V + sigma.reshape(-1, 1, 1, 1) ** 2)


def white_pixel_case(sigma_n: float = 0.1) -> tuple[Prior, GaussianLikelihood, PixelMaskFamily]:
    """A :class:`Shrink` prior, and the Gaussian likelihood (noise ``sigma_n``) of a draw from it seen through a
    random 50 % pixel mask: ``(prior, likelihood, A)``, batch 2 of ``(1, 8, 8)``."""
    g = torch.Generator().manual_seed(0)
    family = PixelMaskFamily((1, 8, 8), p=0.5)
    A = family.sample(2, generator=g)
    y = A(torch.randn(2, 1, 8, 8, generator=g) * V**0.5) + sigma_n * A(torch.randn(2, 1, 8, 8, generator=g))
    return Prior(Shrink(), family), GaussianLikelihood(A, y, sigma=sigma_n), A


def smooth_covariance(
    height: int, width: int, *, std: float = 0.5, length: float = 1.0, nugget: float = 0.01
) -> Tensor:
    """Squared-exponential covariance over pixels plus a nugget. Shape: ``(H·W, H·W)`` float64."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    p = torch.stack([rows.flatten(), cols.flatten()], dim=1).to(torch.float64)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    return std**2 * torch.exp(-d2 / (2 * length**2)) + nugget * torch.eye(height * width, dtype=torch.float64)


class GaussianDenoiserNet(nn.Module):
    """Exact ``E[x | M x_σ, M]`` for ``x ~ N(mean, cov)`` per network channel.

    Args:
        mean: ``(C_net, H, W)`` mean of each network channel (``[real, imag]`` for complex images).
        cov: ``(H·W, H·W)`` pixel covariance, shared by the channels.
    """

    def __init__(self, mean: Tensor, cov: Tensor):
        super().__init__()
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("cov", cov.to(torch.float64))

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor, project=None) -> Tensor:
        """The exact posterior mean (``project``, the preconditioning's projection, is not needed)."""
        B, C, H, W = x.shape
        n = H * W
        if cond.shape[1] == 0 and bool((sigma == sigma[0]).all()):  # clean data, one σ: one shared solve
            mu = self.mean.reshape(1, C, n)
            K = self.cov + float(sigma[0]) ** 2 * torch.eye(n, dtype=torch.float64, device=x.device)
            gain = torch.linalg.solve(K, self.cov).T  # Σ (Σ + σ² I)⁻¹ (both symmetric)
            out = mu + (x.reshape(B, C, n).to(torch.float64) - mu) @ gain.T
            return out.reshape(B, C, H, W).to(x.dtype)
        m = cond[:, 0].reshape(B, n).to(torch.float64) if cond.shape[1] else x.new_ones(B, n, dtype=torch.float64)
        s2 = sigma.to(torch.float64).reshape(B, 1, 1) ** 2
        K = m[:, :, None] * self.cov * m[:, None, :] + s2 * torch.eye(n, dtype=torch.float64, device=x.device)
        mu = self.mean.reshape(1, C, n)
        r = x.reshape(B, C, n).to(torch.float64) - m[:, None, :] * mu  # (B, C, n)
        sol = torch.linalg.solve(K, r.transpose(1, 2))  # (B, n, C)
        out = mu + (self.cov[None] @ (m[:, :, None] * sol)).transpose(1, 2)
        return out.reshape(B, C, H, W).to(x.dtype)


def gaussian_posterior(mean: Tensor, cov: Tensor, mask: Tensor, y: Tensor, sigma_n: float) -> tuple[Tensor, Tensor]:
    """Posterior of ``x ~ N(mean, cov)`` given ``y = M x + n``, ``n ~ N(0, σ_n² I)`` (one channel).

    ``Σ_post = (Σ⁻¹ + M/σ_n²)⁻¹``, ``μ_post = Σ_post (Σ⁻¹ μ + M y / σ_n²)``.
    Shape: ``mean (n,)``, ``cov (n, n)``, ``mask (n,)``, ``y (n,)`` -> ``(n,)``, ``(n, n)`` float64.
    """
    P = torch.linalg.inv(cov) + torch.diag(mask.to(torch.float64)) / sigma_n**2
    cov_post = torch.linalg.inv(P)
    mean_post = cov_post @ (torch.linalg.solve(cov, mean) + mask.to(torch.float64) * y.to(torch.float64) / sigma_n**2)
    return mean_post, 0.5 * (cov_post + cov_post.T)
