"""Regularised maximum-likelihood (RML) imaging from closure quantities: the classical EHT baseline.

Minimises over images ``I = exp(z)`` (positivity by construction), in the spirit of Chael et al. (2018):

    J(I) = α_cp χ²_cp(I) + α_lca χ²_lca(I) + β_tv TV(I)/F + β_mem KL(I ‖ P)/F + β_flux (Σ I / F - 1)²

with ``χ²`` the closure-phase and log-closure-amplitude terms of :mod:`~ambient_science.operators.closure`
(ehtim's normalisations), ``TV(I) = Σ sqrt(|∇I|² + ε²)`` the smoothed isotropic total variation,
``KL(I ‖ P) = Σ (I log(I/P) - I + P)`` the (maximum-entropy) relative entropy to a Gaussian prior image
``P`` of total flux ``F``, and the total-flux term. Closure quantities carry no absolute position or
flux: the prior and the flux term fix them. Optimiser: L-BFGS (strong Wolfe line search), in rounds;
between rounds the image is blurred to the nominal resolution and imaging restarts from it (the usual
way to escape the poor local minima of closure-only imaging).

Re-weighting (``target_chi2``, as EHT imaging scripts raise the data weights round by round): after the
scheduled rounds, while a closure χ² lies above the target range the data weights are multiplied by 4 (a
χ² below it divides them by 2), the image blurred and re-imaged, up to ``max_reweight`` more rounds; the
image returned is the last one whose χ² both lie in the range, else the one closest to it. The χ² of the
returned image are in :func:`rml_image`'s ``callback`` and in ``info`` when one is passed.

>>> # obs: anything with time, t1, t2, u, v, vis, sigma
>>> # image = rml_image(obs, npix=64, pixel_size=uas_to_rad(2.5), total_flux=0.6)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ambient_science.operators.closure import ClosureData
from ambient_science.operators.interferometry import Interferometer

__all__ = ["RMLWeights", "blur", "gaussian_image", "rml_image", "rml_objective"]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class RMLWeights:
    """Weights of the RML objective (module docstring)."""

    cphase: float = 20.0
    logcamp: float = 20.0
    tv: float = 1.0
    mem: float = 1.0
    flux: float = 1e3


def gaussian_image(npix: int, pixel_size: float, fwhm: float, total_flux: float) -> np.ndarray:
    """A circular Gaussian of FWHM ``fwhm`` [rad] and total flux [Jy] at the image centre (ehtim's grid).

    Shape: ``(npix, npix)`` float64 [Jy/pixel].
    """
    x = (npix / 2 - 0.5 - np.arange(npix)) * pixel_size
    s = fwhm * FWHM_TO_SIGMA
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * s**2))
    return total_flux * g / g.sum()


def blur(img: Tensor, fwhm_px: float) -> Tensor:
    """Separable Gaussian blur of FWHM ``fwhm_px`` pixels (a normalised kernel; the border pixels are replicated
    outward, so no flux leaves the field, and flux at the border is counted again). Shape: ``(..., N, N)`` ->
    ``(..., N, N)``."""
    s = fwhm_px * FWHM_TO_SIGMA
    r = max(1, math.ceil(3 * s))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=img.dtype, device=img.device) / s) ** 2)
    k = k / k.sum()
    x = img.reshape(-1, 1, *img.shape[-2:])
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x.reshape(img.shape)


def _lbfgs(objective: Callable[[Tensor], Tensor], z0: Tensor, n_iter: int) -> Tensor:
    """Minimise ``objective(z)`` from ``z0`` by L-BFGS (strong Wolfe line search); returns the detached minimiser."""
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([z], max_iter=n_iter, history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def step():
        opt.zero_grad()
        loss = objective(z)
        loss.backward()
        return loss

    opt.step(step)
    return z.detach()


def rml_objective(
    img: Tensor, A: Interferometer, closure: ClosureData, prior: Tensor, total_flux: float, weights: RMLWeights
) -> tuple[Tensor, dict[str, float]]:
    """The RML objective ``J(I)`` (module docstring) and its terms.

    Shape: ``img, prior (N, N)`` positive [Jy/pixel] -> scalar.
    """
    vis = A(img[None, None])[0]
    terms = {
        "cphase": closure.chisq_cphase(vis) if weights.cphase else img.new_zeros(()),
        "logcamp": closure.chisq_logcamp(vis) if weights.logcamp and closure.index.n_logcamp else img.new_zeros(()),
    }
    F = total_flux
    eps = 1e-3 * F / img.numel()
    dx = torch.nn.functional.pad(img[:, 1:] - img[:, :-1], (0, 1))
    dy = torch.nn.functional.pad(img[1:] - img[:-1], (0, 0, 0, 1))
    terms["tv"] = torch.sqrt(dx**2 + dy**2 + eps**2).sum() / F
    terms["mem"] = (img * torch.log(img / prior) - img + prior).sum() / F
    terms["flux"] = (img.sum() / F - 1.0) ** 2
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}


def rml_image(
    obs: Any,
    npix: int,
    pixel_size: float,
    *,
    total_flux: float,
    prior_fwhm: float | None = None,
    weights: RMLWeights | None = None,
    closure: ClosureData | None = None,
    n_rounds: int = 3,
    n_iter: int = 300,
    blur_fwhm: float | None = None,
    init: np.ndarray | None = None,
    device: torch.device | str | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    target_chi2: tuple[float, float] | None = None,
    max_reweight: int = 6,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Image an observation from its closure phases and log closure amplitudes by RML.

    Args:
        obs: anything with ``time, t1, t2, u, v, vis, sigma`` (a coverage observed with
            :func:`~ambient_science.operators.eht_noise.simulate_observation`, a uvfits observation).
        npix, pixel_size: the image grid [rad per pixel].
        total_flux: ``F`` [Jy] (closure quantities do not constrain it).
        prior_fwhm: FWHM of the Gaussian prior and initial image [rad]; default a third of the field.
        weights: :class:`RMLWeights`.
        closure: precomputed :class:`ClosureData` of ``obs`` (default: built with ehtim's debiasing).
        n_rounds, n_iter: imaging rounds and L-BFGS iterations per round.
        blur_fwhm: blur between rounds [rad]; default the nominal resolution ``1 / (2 max |uv|)``.
        init: ``(npix, npix)`` initial image [Jy/pixel]; default the prior.
        callback: called as ``callback(round, terms)`` after each round.
        target_chi2: the closure-χ² range to reach by re-weighting (module docstring); ``None``: no re-weighting.
        max_reweight: re-weighting rounds at most.
        info: filled with ``rounds``, ``weights`` (the final data weights) and the χ² of the returned image.

    Returns the image ``(npix, npix)`` float64 [Jy/pixel], row 0 north, column 0 east.
    """
    weights = weights or RMLWeights()
    if closure is None:
        closure = ClosureData.from_observation(obs)
    uv = np.stack([np.asarray(obs.u, np.float64), np.asarray(obs.v, np.float64)], axis=-1)
    if uv.shape[0] != closure.index.n_vis:
        raise ValueError(f"closure data index {closure.index.n_vis} visibilities, the observation has {uv.shape[0]}")
    if total_flux <= 0:
        raise ValueError(f"total_flux must be positive, got {total_flux}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    A = Interferometer(torch.as_tensor(uv)[None], npix, pixel_size, method="dft").to(dev)
    prior_fwhm = prior_fwhm if prior_fwhm is not None else npix * pixel_size / 3
    prior = torch.as_tensor(gaussian_image(npix, pixel_size, prior_fwhm, total_flux), device=dev)
    prior = prior.clamp_min(1e-12 * total_flux)
    if blur_fwhm is None:
        blur_fwhm = 1.0 / (2.0 * float(np.hypot(uv[:, 0], uv[:, 1]).max()))
    img = (
        prior.clone()
        if init is None
        else torch.as_tensor(np.asarray(init, np.float64), device=dev).clamp_min(1e-12 * total_flux)
    )

    def objective(z: Tensor) -> Tensor:
        return rml_objective(torch.exp(z), A, closure, prior, total_flux, weights)[0]

    def miss(terms: dict[str, float]) -> float:  # distance of the closure χ² from the target range (0: inside)
        lo, hi = target_chi2 or (0.0, math.inf)
        chi = [terms["cphase"]] + ([terms["logcamp"]] if closure.index.n_logcamp else [])
        return sum(max(0.0, c - hi) + max(0.0, lo - c) for c in chi)

    best: tuple[float, Tensor, dict[str, float]] | None = None
    total_rounds = n_rounds + (max_reweight if target_chi2 is not None else 0)
    for rnd in range(total_rounds):
        if rnd > 0:
            img = blur(img, blur_fwhm / pixel_size).clamp_min(1e-12 * total_flux)
        img = torch.exp(_lbfgs(objective, torch.log(img), n_iter))
        _, terms = rml_objective(img, A, closure, prior, total_flux, weights)
        if callback is not None:
            callback(rnd, terms)
        if rnd < n_rounds - 1:
            continue
        d = miss(terms)
        if best is None or d <= best[0]:
            best = (d, img.detach().clone(), terms)
        if target_chi2 is None or d == 0:
            break
        high = terms["cphase"] > target_chi2[1] or (closure.index.n_logcamp and terms["logcamp"] > target_chi2[1])
        f = 4.0 if high else 0.5
        weights = dataclasses.replace(weights, cphase=weights.cphase * f, logcamp=weights.logcamp * f)
    assert best is not None
    if info is not None:
        info.update(rounds=rnd + 1, weights=dataclasses.asdict(weights), chi2_cphase=best[2]["cphase"],
                    chi2_logcamp=best[2]["logcamp"])  # fmt: skip
    return best[1].detach().cpu().numpy()
