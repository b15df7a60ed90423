"""DAPS: decoupled annealing posterior sampling (Zhang et al. 2025), with any denoiser and any likelihood.

At each annealing level ``σ_i`` the state is decoupled from the previous one:

1. ``x̂_0 = ODE(x_i; σ_i → 0)``: a few Euler steps of the probability-flow ODE with the denoiser;
2. ``x_0 ~ p(x_0 | x_i, y) ∝ N(x_0; x̂_0, r_i² I) · exp(−L(y | x_0))`` by Langevin dynamics in ``x_0``
   (gradients of the likelihood only, never through the network: robust for nonlinear closure quantities);
3. ``x_{i+1} = x_0 + σ_{i+1} ε``: re-noise to the next level.

Langevin steps are ``x_0 ← x_0 − η ((x_0 − x̂_0)/r² + ∇L(x_0)) + sqrt(2η) ε`` with ``η = step_size / λ_max``,
``λ_max = 1/r² + curvature(L)``, the target's stiffest curvature (power iteration for a Gaussian
likelihood; a user bound for others), so ``step_size`` ∈ (0, 1) is stable and its bias is
``O(step_size)`` on the stiffest direction.

Measured on an analytic Gaussian prior (16 pixels, half observed, ``σ_n = 0.1``, 1000 samples;
tests/test_samplers.py) with the defaults and 100 levels: posterior mean off by 0.03 posterior std (the
Monte-Carlo floor), per-pixel variance off by 5 %; 50 levels: 0.08 and 6–9 %.

    >>> import torch
    >>> from ambient_science.sampling.likelihoods import GaussianLikelihood
    >>> from ambient_science.linop import Identity
    >>> from ambient_science.sampling.samplers import initial_noise
    >>> from ambient_science.schedules import edm_sigmas
    >>> g = torch.Generator().manual_seed(0)
    >>> D = lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)   # the denoiser of N(0, I)
    >>> lik = GaussianLikelihood(Identity((3, 1, 2, 2)), torch.ones(3, 1, 2, 2), sigma=0.1)
    >>> x = initial_noise((3, 1, 2, 2), 10.0, generator=g)
    >>> x0 = sample_daps(D, x, edm_sigmas(20, sigma_max=10.0), lik, generator=g)
    >>> bool((x0 - 1).abs().max() < 0.5)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ambient_science.sampling.likelihoods import Likelihood
from ambient_science.sampling.samplers import (
    Callback,
    DataConsistency,
    append_dims,
    apply_data_consistency,
    edm_step,
    randn_like,
    warn_below_floor,
)
from ambient_science.schedules import edm_sigmas

if TYPE_CHECKING:
    from ambient_science.sampling.prior import Denoiser

__all__ = ["ode_x0", "r_daps", "r_gaussian", "sample_daps"]


def r_daps(sigma: float) -> float:
    """DAPS's std of ``p(x_0 | x_σ)``: ``r(σ) = σ`` (Zhang et al. 2025)."""
    return sigma


def r_gaussian(sigma_data: float) -> Callable[[float], float]:
    """``r(σ) = σ σ_data / sqrt(σ² + σ_data²)``: the exact std of ``p(x_0 | x_σ)`` when ``x_0 ~ N(μ, σ_data² I)``.

    It tends to ``σ`` at low noise and to the data's std at high noise, where ``r = σ`` overstates it.
    """
    if sigma_data <= 0:
        raise ValueError(f"sigma_data must be positive, got {sigma_data}")
    return lambda sigma: sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5


def ode_x0(denoiser: Denoiser, x: Tensor, sigma: float, *, num_steps: int, sigma_min: float = 0.002) -> Tensor:
    """``x̂_0``: Euler steps of the probability-flow ODE from ``σ`` to 0 on an EDM sub-schedule (ρ = 7).

    ``num_steps = 1`` is Tweedie's ``D(x; σ)``. Detached: DAPS never backpropagates through the network.

    Shape: ``x (B, C, H, W)`` -> ``(B, C, H, W)``.
    """
    floor = float(getattr(denoiser, "sigma_floor", 0.0) or 0.0)  # never below the prior's trained σ_n
    sub = edm_sigmas(num_steps, sigma_min=min(max(sigma_min, floor), sigma), sigma_max=sigma)
    x = x.detach()
    levels = [float(s) for s in sub]
    for j in range(len(levels) - 1):
        x, _ = edm_step(denoiser, x, levels[j], levels[j + 1], heun=False)
        x = x.detach()
    return x


def sample_daps(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    likelihood: Likelihood,
    *,
    generator: torch.Generator,
    callback: Callback | None = None,
    ode_steps: int = 1,
    langevin_steps: int = 30,
    step_size: float = 0.1,
    r: Callable[[float], float] = r_daps,
    curvature: Tensor | float | None = None,
    data_consistency: DataConsistency = None,
    dc_lam: float = 0.0,
    dc_iter: int = 20,
) -> Tensor:
    """Posterior sampling by DAPS: per annealing level, ``x̂_0`` by ODE, Langevin on ``x_0``, re-noise.

    ``x_0 ~ N(x_0; x̂_0(x_i), r(σ_i)² I) exp(−L(y | x_0))`` by ``langevin_steps`` steps of size
    ``η_i = step_size / (1/r_i² + κ)``, then ``x_{i+1} = x_0 + σ_{i+1} ε`` (Zhang et al. 2025, Alg. 1).

    Args:
        denoiser: ``D(x_σ, σ)`` (never differentiated: the caller may wrap the call in ``torch.no_grad``).
        x: the start at ``sigmas[0]``.
        sigmas: annealing levels, decreasing, ending at 0 (e.g. ``edm_sigmas(100, sigma_max=10)``; on the
            analytic prior 100 levels halve the mean error of 50).
        likelihood: any :class:`~ambient_science.sampling.likelihoods.Likelihood`; only ``loss``/``grad`` are used.
        generator: draws the Langevin and re-noising noise.
        callback: called per level with ``i, sigma, sigma_next, x, x0_hat, x0, loss``.
        ode_steps: Euler steps for ``x̂_0``. 1 (default) is Tweedie's ``D(x; σ)``; DAPS uses 5, which sharpens
            ``x̂_0`` for imperfect networks but, on the analytic Gaussian prior, inflates the posterior
            variance 1.55× (the ODE's spread and ``r²`` are counted twice), while 1 is calibrated.
        langevin_steps: Langevin steps per level (DAPS uses ~100; on the analytic prior more steps per
            level inflate the variance when ``r`` overstates ``Cov[x_0 | x_σ]``: 30 → 1.0×, 100 → 1.1×).
        step_size: Langevin step relative to the target's stiffest curvature, in (0, 1); its stationary
            variance is inflated by ``1/(1 − step_size/2)`` along the stiffest direction.
        r: ``σ -> r(σ)``, the std of the Gaussian model of ``p(x_0 | x_σ)`` (:func:`r_daps`, :func:`r_gaussian`).
        curvature: ``κ``, an upper bound on ``∇² L``'s largest eigenvalue, scalar or ``(B,)``; default:
            ``likelihood.curvature`` (power iteration for Gaussian likelihoods), else 0.
        data_consistency, dc_lam, dc_iter: optional final step (Gaussian likelihoods only).

    Shape: ``x (B, C, H, W)`` -> ``(B, C, H, W)``.
    """
    if not 0 < step_size < 2:
        raise ValueError(f"step_size must be in (0, 2) (stable Langevin), got {step_size}")
    levels = [float(s) for s in sigmas]
    warn_below_floor(denoiser, levels)
    x = x.detach()
    if curvature is None:
        curvature = likelihood.curvature(x, generator=generator)
    kappa = torch.as_tensor(0.0 if curvature is None else curvature, device=x.device, dtype=torch.float32)
    kappa = kappa.expand(x.shape[0]) if kappa.ndim == 0 else kappa
    x0 = x
    for i in range(len(levels) - 1):
        sigma, sigma_next = levels[i], levels[i + 1]
        x0_hat = ode_x0(denoiser, x, sigma, num_steps=ode_steps)
        r_i = float(r(sigma))
        eta = append_dims(step_size / (1.0 / r_i**2 + kappa), x.ndim)
        noise_scale = (2.0 * eta).sqrt()
        x0 = x0_hat
        for _ in range(langevin_steps):
            drift = (x0 - x0_hat) / r_i**2 + likelihood.grad(x0)
            x0 = x0 - eta * drift + noise_scale * randn_like(x0, generator)
        x = x0 + sigma_next * randn_like(x0, generator) if sigma_next > 0 else x0
        if callback is not None:
            callback({"i": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "x0_hat": x0_hat, "x0": x0,
                      "loss": likelihood.loss(x0).detach()})  # fmt: skip
    if data_consistency is not None:
        x = apply_data_consistency(x, likelihood, data_consistency, lam=dc_lam, max_iter=dc_iter)
    return x
