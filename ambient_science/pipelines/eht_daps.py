"""DAPS for closure quantities (docs/design.md §6): the level loop of
:func:`~ambient_science.pipelines.eht_reconstruct.reconstruct_closure`, with two changes for the non-convex
closure χ² that the library's generic :func:`~ambient_science.sampling.daps.sample_daps` does not make.

1. **MAP levels** (``SamplerSettings.map_below``). At a level ``σ_i ≤ map_below`` the ``x_0`` step is not
   Langevin but the MAP of the same target, ``argmax N(x_0; x̂_0, r_i²) exp(−L(x_0))`` with ``r_i = σ_i``, by
   ``map_iterations`` L-BFGS iterations per sample (the data-consistency step of
   :mod:`~ambient_science.pipelines.eht_polish`, stopped at χ² = ``fit_stop``); then ``x_{i+1} = x_0 + σ_{i+1} ε``
   as in DAPS. Why: Langevin's step is set by the likelihood's stiffest curvature, which for closure quantities is
   orders of magnitude above that of most data directions, so ten steps leave ``x_0`` near ``x̂_0``: measured on
   out-of-family cases, the reduced closure-phase χ² of DAPS's ``x_0`` was still 50–6,500 (median per case) at
   σ = 0.5, and the final data-consistency step alone had to find the fit. The noise added after each MAP keeps
   the samples apart (the posterior spread comes from the prior and the re-noising, as in DiffPIR-style samplers).
2. **Resampling** (``resample_at``, ``resample_ess``). After the levels nearest the given σ, the ``S`` samples
   of each observation are resampled (systematic resampling) with weights ``exp(−β (L_s − min L))`` of their
   ``x_0``'s closure negative log-likelihood, ``β ∈ (0, 1]`` the largest that keeps the effective sample size at
   least ``resample_ess · S`` (adaptive tempering of sequential Monte Carlo); a copy continues from its ``x_0``
   re-noised with fresh noise, so copies part again at once. Samples stuck in a poor local optimum of the closure
   χ² are replaced by copies of samples in better ones; ``β < 1`` (tempering) keeps it from collapsing onto the
   single best sample.

The example's default (:data:`~ambient_science.pipelines.eht_setup.DAPS`) takes MAP levels below σ = 1 and no
resampling (``benchmarks/eht_out_of_family.py --daps JSON`` tries others): out of family they fit more samples and
sharpen the images, but narrow the samples' spread, so the raw ring-diameter intervals miss the truth more often
and the reported ones are conformally calibrated (docs/design.md §6).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ambient_science.noise import randn_like
from ambient_science.pipelines.eht_likelihood import ClosureLikelihood
from ambient_science.pipelines.eht_polish import polish
from ambient_science.sampling.daps import ode_x0, sample_daps

if TYPE_CHECKING:
    from ambient_science.pipelines.eht_reconstruct import SamplerSettings

__all__ = ["closure_daps", "polish_samples", "resample_indices", "tempered_weights"]


def polish_samples(lik: ClosureLikelihood, x_ref: Tensor, r: float, iterations: int, cfg: SamplerSettings) -> Tensor:
    """The data-consistency step of every sample with ``cfg``'s settings (:func:`~ambient_science.pipelines.
    eht_polish.polish`: per-sample L-BFGS over ``x = exp(z)``, stopped by the discrepancy principle at
    ``cfg.fit_stop``, isolated bright pixels penalised with ``cfg.speckle_k``): the MAP levels here and the final
    fits of :func:`~ambient_science.pipelines.eht_reconstruct.reconstruct_closure`."""
    return polish(lik, x_ref, r, iterations, positive=cfg.positive, stop=cfg.fit_stop, speckle_k=cfg.speckle_k)


def tempered_weights(nll: Tensor, ess: float) -> Tensor:
    """Normalised weights ``exp(−β (nll − min nll))`` over the last dimension, ``β ∈ (0, 1]`` the largest with an
    effective sample size ``1 / Σ w²`` of at least ``ess · n`` (bisection; ``β = 1`` when that already holds).

    Shape: ``nll (..., n)`` -> ``(..., n)``, float64.
    """
    if not 0.0 < ess <= 1.0:
        raise ValueError(f"resample_ess must be in (0, 1], got {ess}")
    nll = nll.double()
    bad = ~torch.isfinite(nll) & torch.isfinite(nll).any(-1, keepdim=True)  # a NaN or infinite fit never weighs
    e = torch.where(bad, math.inf, nll)
    e = torch.nan_to_num(e - e.amin(-1, keepdim=True), nan=0.0, posinf=0.0)  # all non-finite: equal weights
    n = e.shape[-1]

    def weights(beta: Tensor) -> Tensor:
        return torch.softmax((-beta.unsqueeze(-1) * e).masked_fill(bad, -math.inf), dim=-1)

    def ess_of(beta: Tensor) -> Tensor:
        return 1.0 / (weights(beta) ** 2).sum(-1) / n

    lo = torch.zeros(e.shape[:-1], dtype=torch.float64, device=e.device)
    hi = torch.ones_like(lo)
    ok = ess_of(hi) >= ess
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        good = ess_of(mid) >= ess
        lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
    return weights(torch.where(ok, torch.ones_like(lo), lo))


def resample_indices(weights: Tensor, generator: torch.Generator) -> Tensor:
    """Systematic resampling: ``n`` ancestor indices per row of ``weights (..., n)`` (one uniform draw per row);
    each index appears ``floor(n w)`` or ``ceil(n w)`` times."""
    n = weights.shape[-1]
    u = torch.rand((*weights.shape[:-1], 1), generator=generator, device=generator.device, dtype=torch.float64)
    positions = (u.to(weights.device) + torch.arange(n, dtype=torch.float64, device=weights.device)) / n
    cdf = torch.cumsum(weights, -1)
    cdf = cdf / cdf[..., -1:]
    return torch.searchsorted(cdf, positions.contiguous()).clamp_max(n - 1)


def _resample(state: dict[str, Tensor], lik: ClosureLikelihood, samples: int, ess: float, sigma_next: float,
              generator: torch.Generator) -> Tensor:  # fmt: skip
    """Resample the ``(S·T)`` samples (sample-major: index ``s·T + t``) per observation by their ``x_0``'s
    closure likelihood; the state's ``x0``/``x0_hat`` are replaced by the ancestors', the new ``x`` is returned."""
    with torch.no_grad():
        nll = lik.loss(state["x0"])
    T = nll.numel() // samples
    w = tempered_weights(nll.reshape(samples, T).T, ess)  # (T, S)
    ancestors = resample_indices(w, generator)  # (T, S)
    index = (ancestors.T * T + torch.arange(T, device=ancestors.device)).reshape(-1).to(state["x0"].device)
    state["x0"], state["x0_hat"] = state["x0"][index], state["x0_hat"][index]
    return state["x0"] + sigma_next * randn_like(state["x0"], generator)


def closure_daps(
    D: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigmas: Tensor,
    lik: ClosureLikelihood,
    cfg: SamplerSettings,
    generator: torch.Generator,
    callback: Callable[[dict[str, Any]], None],
    x0_start: Tensor,
    samples: int,
) -> tuple[Tensor, Tensor]:
    """DAPS one level at a time (module docstring): Langevin levels with the step scaled by the likelihood's
    curvature at the previous level's ``x_0`` (the closure χ² is far stiffer near smooth images, whose
    long-baseline visibilities vanish), MAP levels at ``σ ≤ cfg.map_below``, resampling after the levels nearest
    ``cfg.resample_at``. ``samples``: ``S``, the samples per observation (the batch is ``S·T``, sample-major).

    Returns the last ``x`` and the last level's ``x̂_0``, ``(S·T, 1, N, N)`` each.
    """
    state = {"x0": x0_start, "x0_hat": x0_start}

    def keep(info: dict[str, Any]) -> None:
        state["x0"], state["x0_hat"] = info["x0"], info["x0_hat"]
        callback(info)

    levels = [float(s) for s in sigmas]
    after = _nearest_levels(levels, cfg.resample_at)
    kappa, stale = None, True
    for i in range(len(levels) - 1):
        sigma, sigma_next = levels[i], levels[i + 1]
        if sigma <= cfg.map_below:
            with torch.no_grad():
                x0_hat = ode_x0(D, x, sigma, num_steps=1)
            x0 = polish_samples(lik, x0_hat, sigma, cfg.map_iterations, cfg).detach()
            x = x0 + sigma_next * randn_like(x0, generator) if sigma_next > 0 else x0
            keep({"i": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "x0_hat": x0_hat, "x0": x0})
        else:
            if stale or i % max(1, cfg.curvature_every) == 0:
                kappa = lik.curvature(state["x0"], generator=generator, num_iter=cfg.power_iterations)
            x_prev, x0_prev = x, state["x0"]
            with torch.no_grad():
                x = sample_daps(
                    D,
                    x,
                    sigmas[i : i + 2],
                    lik,
                    generator=generator,
                    callback=keep,
                    langevin_steps=cfg.langevin_steps,
                    step_size=cfg.step_size,
                    curvature=kappa,
                )
            # a Langevin chain that diverged (the curvature grew within the level) restarts the level from where
            # it was
            bad = ~torch.isfinite(x).flatten(1).all(1) | ~torch.isfinite(state["x0_hat"]).flatten(1).all(1)
            stale = bool(bad.any())
            if stale:
                x = torch.where(bad.view(-1, 1, 1, 1), x_prev, x)
                state["x0"] = torch.where(bad.view(-1, 1, 1, 1), x0_prev, state["x0"])
                state["x0_hat"] = torch.where(bad.view(-1, 1, 1, 1), x0_prev, state["x0_hat"])
        if i in after and sigma_next > 0 and samples > 1:
            x = _resample(state, lik, samples, cfg.resample_ess, sigma_next, generator)
            stale = True
    return x, state["x0_hat"]


def _nearest_levels(levels: Sequence[float], targets: Sequence[float]) -> set[int]:
    """Indices ``i`` of the levels whose next σ (``levels[i + 1]``) is nearest each target σ."""
    nxt = torch.tensor(levels[1:])
    return {int(torch.argmin((nxt - float(s)).abs())) for s in targets}
