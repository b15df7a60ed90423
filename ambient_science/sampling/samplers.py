"""Samplers as plain functions: unconditional EDM Euler / Heun, the one-step estimate, and shared helpers.

Every sampler takes a denoiser ``D(x_σ, σ) ≈ E[x | x_σ]`` (see :mod:`ambient_science.sampling.prior`), the start
``x`` at ``sigmas[0]``, a schedule (:mod:`ambient_science.schedules`), an explicit ``torch.Generator``
for its random draws and an optional ``callback(dict)`` called once per step. None wraps its work in
``torch.no_grad``: the caller may (recommended for the unconditional sampler and DAPS), and guidance
enables gradients locally. Posterior samplers live in :mod:`ambient_science.sampling.dps` (A-DPS)
and :mod:`ambient_science.sampling.daps` (DAPS).

Noise convention: ``x_σ = x + σ ε`` with ``ε ~ N(0, I)``; for complex images the real and imaginary
parts of ``ε`` are each ``N(0, 1)`` (so each real coordinate of a complex image carries variance ``σ²``).

    >>> import torch
    >>> from ambient_science.schedules import edm_sigmas
    >>> g = torch.Generator().manual_seed(0)
    >>> D = lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)   # the denoiser of N(0, I)
    >>> x = initial_noise((4000, 1, 1, 1), 80.0, generator=g)
    >>> round(sample_heun(D, x, edm_sigmas(18)).std().item(), 1)
    1.0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from ambient_science.noise import append_dims, initial_noise, randn_like, sigma_like

if TYPE_CHECKING:
    from ambient_science.sampling.likelihoods import GaussianLikelihood
    from ambient_science.sampling.prior import Denoiser

__all__ = [
    "Callback",
    "append_dims",
    "apply_data_consistency",
    "churn_gamma",
    "edm_step",
    "initial_noise",
    "one_step",
    "randn_like",
    "sample_euler",
    "sample_heun",
    "sigma_like",
    "step_consistency",
    "warn_below_floor",
]

Callback = Callable[[dict[str, Any]], None]
DataConsistency = Literal["cg", "replace"] | None
StepConsistency = Literal["prox", "replace"] | None


def churn_gamma(sigma: float, num_steps: int, churn: float, s_tmin: float, s_tmax: float) -> float:
    """EDM's stochasticity: ``γ_i = min(S_churn / N, √2 − 1)`` for ``σ_i ∈ [S_tmin, S_tmax]``, else 0 (Alg. 2)."""
    if churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(churn / num_steps, math.sqrt(2.0) - 1.0)


def edm_step(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float,
    sigma_next: float,
    *,
    heun: bool,
    denoised: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One step of the probability-flow ODE ``dx/dσ = (x − D(x; σ))/σ`` from ``σ`` to ``σ_next`` (EDM eq. 3).

    Euler, or Heun's second-order correction when ``heun`` and ``σ_next > 0`` (EDM Alg. 1). ``denoised``
    may pass a precomputed ``D(x; σ)``. Returns ``(x_next, D(x; σ))``.

    Shape: ``x (B, C, H, W)`` -> both ``(B, C, H, W)``.
    """
    if denoised is None:
        denoised = denoiser(x, sigma_like(sigma, x))
    d = (x - denoised) / sigma
    x_next = x + (sigma_next - sigma) * d
    if heun and sigma_next > 0:
        d_next = (x_next - denoiser(x_next, sigma_like(sigma_next, x))) / sigma_next
        x_next = x + (sigma_next - sigma) * 0.5 * (d + d_next)
    return x_next, denoised


def warn_below_floor(denoiser: Denoiser, levels: Sequence[float]) -> None:
    """Warn when a schedule calls the denoiser below the lowest noise level its network trained at
    (``denoiser.sigma_floor``: :attr:`~ambient_science.sampling.prior.Prior.sigma_n`; 0 or absent: no floor).
    A schedule's final 0 is where it lands, not a level the denoiser is called at."""
    floor = float(getattr(denoiser, "sigma_floor", 0.0) or 0.0)
    low = [s for s in levels if 0.0 < s < floor * (1.0 - 1e-6)]
    if low:
        warnings.warn(
            f"the schedule calls the denoiser at σ down to {min(low):.3g}, below σ_n = {floor:.3g}, the lowest noise "
            "level its network trained at (noisy-ambient loss); stop the schedule there (e.g. "
            "edm_sigmas(..., sigma_min=prior.sigma_n), as reconstruct() does)",
            stacklevel=3,
        )


def _sample_edm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    heun: bool,
    generator: torch.Generator | None,
    callback: Callback | None,
    churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> Tensor:
    levels = [float(s) for s in sigmas]
    warn_below_floor(denoiser, levels)
    n = len(levels) - 1
    if churn > 0 and generator is None:
        raise ValueError("churn > 0 draws noise: pass a generator")
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        gamma = churn_gamma(sigma, n, churn, s_tmin, s_tmax)
        sigma_hat = sigma * (1.0 + gamma)
        if gamma > 0:  # raise the noise level to σ̂ = (1 + γ) σ (EDM Alg. 2, lines 5–6)
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * randn_like(x, generator)
        x, denoised = edm_step(denoiser, x, sigma_hat, sigma_next, heun=heun)
        if callback is not None:
            callback({"i": i, "sigma": sigma, "sigma_hat": sigma_hat, "sigma_next": sigma_next,
                      "x": x, "denoised": denoised})  # fmt: skip
    return x


def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Unconditional generation by Euler steps of the probability-flow ODE, optionally stochastic.

    ``x_{i+1} = x̂_i + (σ_{i+1} − σ̂_i)(x̂_i − D(x̂_i; σ̂_i))/σ̂_i`` with ``x̂_i = x_i + sqrt(σ̂_i² − σ_i²) ε``,
    ``σ̂_i = (1 + γ_i) σ_i`` (EDM Alg. 2 without the second-order correction; ``churn = 0``: deterministic).

    Shape: ``x (B, C, H, W)`` at ``sigmas[0]`` -> ``(B, C, H, W)`` at ``sigmas[-1]`` (0: clean images).
    """
    return _sample_edm(
        denoiser, x, sigmas, heun=False, generator=generator, callback=callback,
        churn=churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
    )  # fmt: skip


def sample_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Unconditional generation by EDM's Heun sampler (Karras et al. 2022, Alg. 1; Alg. 2 when ``churn > 0``).

    Euler step as :func:`sample_euler`, then ``x_{i+1} = x̂_i + (σ_{i+1} − σ̂_i)(d_i + d'_i)/2`` with
    ``d'_i = (x_{i+1}^{Euler} − D(x_{i+1}^{Euler}; σ_{i+1}))/σ_{i+1}`` (no correction on the last step to 0).
    ``2N − 1`` network calls for ``N`` steps; EDM uses ``N = 18`` (CIFAR) to ``40`` (ImageNet).

    Shape: ``x (B, C, H, W)`` at ``sigmas[0]`` -> ``(B, C, H, W)`` at ``sigmas[-1]``.
    """
    return _sample_edm(
        denoiser, x, sigmas, heun=True, generator=generator, callback=callback,
        churn=churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
    )  # fmt: skip


def apply_data_consistency(
    x: Tensor,
    likelihood: GaussianLikelihood,
    mode: DataConsistency,
    *,
    lam: float = 0.0,
    max_iter: int = 20,
) -> Tensor:
    """A final data-consistency step on an estimate: ``None`` (none), ``"cg"`` or ``"replace"``.

    ``"cg"``: ``argmin ½||A x − y||²_W + ½ λ ||x − x̂||²`` by ``max_iter`` CG iterations from ``x̂``;
    ``"replace"``: ``x̂ + Aᴴ(y − A x̂)`` (observed entries replaced; exact for pixel masks and
    single-coil Cartesian MRI). Shape: like ``x``.
    """
    return _consistent(x, likelihood, mode, "data", lam=lam, max_iter=max_iter)


_CONSISTENCY_MODES = {"data": ("cg", "replace"), "step": ("prox", "replace")}


def _consistent(x: Tensor, likelihood, mode, kind: str, *, lam: float, max_iter: int) -> Tensor:
    """What :func:`apply_data_consistency` (``kind="data"``) and :func:`step_consistency` (``"step"``) share:
    ``None`` -> ``x``; the check that ``likelihood`` is linear Gaussian and that ``mode`` is one of ``kind``'s;
    ``"replace"`` -> the observed entries replaced; ``"cg"`` / ``"prox"`` -> ``likelihood.data_consistency(x,
    lam, max_iter)``."""
    if mode is None:
        return x
    if not hasattr(likelihood, "data_consistency"):
        raise TypeError(f"{kind} consistency needs a linear Gaussian likelihood, got {type(likelihood).__name__}")
    modes = _CONSISTENCY_MODES[kind]
    if mode not in modes:
        raise ValueError(f'{kind}_consistency must be None, "{modes[0]}" or "{modes[1]}", got {mode!r}')
    if mode == "replace":
        return likelihood.replace_observed(x)
    return likelihood.data_consistency(x, lam=lam, max_iter=max_iter)


def step_consistency(
    denoised: Tensor,
    likelihood: GaussianLikelihood,
    mode: StepConsistency,
    sigma: float,
    *,
    sigma_data: float = 0.5,
    max_iter: int = 3,
) -> Tensor:
    """Data consistency of a sampler's denoised estimate ``x̂ = D(x_σ; σ)`` during sampling (issue #18).

    ``"prox"``: ``argmin_x ||A x − y||²_W + ||x − x̂||²/r(σ)²`` with ``r(σ)² = σ² σ_data²/(σ² + σ_data²)``, the
    spread of ``x_0`` given ``x_σ`` (as :func:`~ambient_science.sampling.dps.inflated_zeta`): each measured
    entry becomes the noise-weighted mean of ``y`` and ``A x̂``, ``(y/σ_n² + A x̂/r²)/(1/σ_n² + 1/r²)``, by
    ``max_iter`` CG iterations from ``x̂`` (exact in 2 for a partial isometry with one ``σ_n``: pixel masks,
    single-coil Cartesian MRI). ``"replace"``: ``x̂ + Aᴴ(y − A x̂)``, the ``σ_n → 0`` limit (noiseless data).
    ``None``: ``x̂`` unchanged. Shape: like ``denoised``.
    """
    r2 = sigma**2 * sigma_data**2 / (sigma**2 + sigma_data**2)
    return _consistent(denoised, likelihood, mode, "step", lam=1.0 / max(r2, 1e-30), max_iter=max_iter)


def one_step(
    denoiser: Denoiser,
    likelihood: GaussianLikelihood,
    *,
    sigma: float | Tensor | None = None,
    sigma_floor: float = 0.002,
    data_consistency: DataConsistency = None,
    dc_lam: float = 0.0,
    dc_iter: int = 20,
) -> Tensor:
    """The one-step estimate (A-OS): the denoiser at a small noise level applied to the zero-filled image.

    ``x̂ = D(Aᴴ y, σ)`` with ``σ`` the measurement noise level (default: the likelihood's RMS noise std,
    at least ``sigma_floor``), then an optional data-consistency step (:func:`apply_data_consistency`).
    With an ambient prior use ``inference_operator="test"``: ``Ã_inf ⊆ A`` then sees ``Ã (x + n)``, the
    input it was trained on, while a ``"law"`` draw also reads entries ``y`` never observed.

    Shape: ``likelihood.A.ishape`` -> ``(B, C, H, W)``.
    """
    x_in = likelihood.backprojection()
    if sigma is None:
        sigma = likelihood.noise_level().to(torch.float32).clamp_min(sigma_floor)
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x_in.device)
    s = s.expand(x_in.shape[0]) if s.ndim == 0 else s
    x_hat = denoiser(x_in, s)
    return apply_data_consistency(x_hat, likelihood, data_consistency, lam=dc_lam, max_iter=dc_iter)
