"""Black-hole imaging from closure quantities (docs/design.md §6): the closure likelihood and posterior sampling
through the ambient prior's ``Ã_inf`` (DAPS, A-DPS), in the network units of :mod:`ambient_science.pipelines.eht`.

Likelihood (:class:`ClosureLikelihood`, one or several observations, several samples of each):

    L(x) = Σ_obs [ w_cp N_cp χ²_cp(V(x)) / 2 + w_lca N_lca χ²_lca(V(x)) / 2 ] + (Σ x − F)² / (2 (f_F F)²)

with ehtim's normalised closure χ² (:mod:`ambient_science.operators.closure`), model visibilities ``V(x)`` of
the physical (unweighted) operator, and a total-flux term (closure quantities fix neither the flux nor the
position; the flux ``F`` is the zero-baseline flux, assumed known as in EHT imaging, and the position stays
free: compare images after the best shift).

Sampling (:func:`reconstruct_closure`): ``S`` samples of every observation in one batch, by DAPS (the
library's :func:`~ambient_science.sampling.daps.sample_daps`, one level at a time so that its Langevin step
follows the likelihood's curvature at the previous level's ``x_0``) or A-DPS; then per sample a
data-consistency step (the MAP of ``N(x; x̂, r²) exp(−L(x))`` from the prior's last estimate ``x̂``, over
``x = exp(z) > 0``), the total flux, the best shift onto the best-fitting sample; the samples that fit the
data (closure χ² within a factor of the best) give the mean and std map, and the mean, made
data-consistent by the same step, the point estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ambient_science.datasets.uvfits import Observation
from ambient_science.metrics.eht import best_shift, shift_image
from ambient_science.operators.closure import ClosureData
from ambient_science.operators.interferometry import Interferometer
from ambient_science.pipelines.eht import closure_observation, image_scale, test_operator
from ambient_science.sampling.daps import sample_daps
from ambient_science.sampling.dps import sample_adps
from ambient_science.sampling.likelihoods import Likelihood
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.samplers import initial_noise
from ambient_science.schedules import edm_sigmas

__all__ = ["ClosureLikelihood", "ClosurePosterior", "SamplerSettings", "reconstruct_closure"]


# -- likelihood --------------------------------------------------------------------------------------------


class ClosureLikelihood(Likelihood):
    """Closure phases + log closure amplitudes + total flux of ``T`` observations, ``S`` samples each (module
    docstring). Images in network units; sample ``s`` of observation ``t`` at batch index ``s·T + t``.

    Args:
        observations, closures: the ``T`` observations and their :class:`ClosureData`.
        total_flux: ``F`` per observation [Jy].
        npix, pixel_size: the image grid [rad].
        samples: ``S``.
        flux_frac: ``f_F``, the std of the flux term relative to ``F``.
        cphase_weight, logcamp_weight: ``w_cp``, ``w_lca``.
        device: where the operator lives.

    Shape: ``x (S·T, 1, N, N)`` -> ``loss (S·T,)``.
    """

    def __init__(
        self,
        observations: Sequence[Observation],
        closures: Sequence[ClosureData],
        total_flux: Sequence[float],
        npix: int,
        pixel_size: float,
        *,
        samples: int = 1,
        flux_frac: float = 0.01,
        cphase_weight: float = 1.0,
        logcamp_weight: float = 1.0,
        device: torch.device | str | None = None,
    ):
        if len(observations) != len(closures) or len(observations) != len(total_flux):
            raise ValueError("observations, closures and total_flux must have one entry per observation")
        self.T, self.S = len(observations), int(samples)
        self.closures = list(closures)
        self.n_vis = [len(o) for o in observations]
        K = max(self.n_vis)
        uv = torch.zeros(self.T, K, 2, dtype=torch.float64)
        for i, o in enumerate(observations):
            uv[i, : len(o), 0], uv[i, : len(o), 1] = torch.as_tensor(o.u), torch.as_tensor(o.v)
        self.A: Interferometer = Interferometer(uv.repeat(self.S, 1, 1), npix, pixel_size, method="dft").to(device)
        self.scale = image_scale(npix)
        self.flux = torch.as_tensor(list(total_flux), dtype=torch.float32, device=device).repeat(self.S)
        self.flux_frac, self.w_cp, self.w_lca = float(flux_frac), float(cphase_weight), float(logcamp_weight)

    def visibilities(self, x: Tensor) -> Tensor:
        """Model visibilities of network-unit images, ``(S·T, K)`` complex [Jy]."""
        return self.A(x / self.scale)

    def chi_squared(self, x: Tensor) -> dict[str, Tensor]:
        """Reduced ``χ²_cp`` and ``χ²_lca`` per sample (``nan`` where an observation has no closure amplitude)."""
        vis = self.visibilities(x).reshape(self.S, self.T, -1)
        cp = torch.full((self.S, self.T), math.nan, device=x.device)
        lca = torch.full((self.S, self.T), math.nan, device=x.device)
        for t, (data, k) in enumerate(zip(self.closures, self.n_vis, strict=True)):
            v = vis[:, t, :k]
            cp[:, t] = data.chisq_cphase(v).to(cp.dtype)
            if data.index.n_logcamp:
                lca[:, t] = data.chisq_logcamp(v).to(lca.dtype)
        return {"cphase": cp.reshape(-1), "logcamp": lca.reshape(-1)}

    def loss(self, x: Tensor) -> Tensor:
        chi2 = self.chi_squared(x)
        n_cp = torch.tensor([float(c.index.n_cphase) for c in self.closures], device=x.device).repeat(self.S)
        n_lca = torch.tensor([float(c.index.n_logcamp) for c in self.closures], device=x.device).repeat(self.S)
        nll = 0.5 * self.w_cp * n_cp * chi2["cphase"]
        nll = nll + 0.5 * self.w_lca * n_lca * torch.nan_to_num(chi2["logcamp"], nan=0.0)
        flux = x.sum((1, 2, 3)) / self.scale
        return nll + (flux - self.flux) ** 2 / (2 * (self.flux_frac * self.flux) ** 2)

    def curvature(self, x_like: Tensor, *, generator: torch.Generator, num_iter: int = 15) -> Tensor:
        """The largest eigenvalue (in absolute value) of ``∇²L`` at ``x_like``, times 1.2: power iteration on
        Hessian–vector products (double backward), ``num_iter`` of them. Shape: ``(B,)``."""
        x = x_like.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.loss(x).sum(), x, create_graph=True)
            v = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
            lam = torch.zeros(x.shape[0], device=x.device)
            for _ in range(num_iter):
                v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
                (hv,) = torch.autograd.grad(g, x, grad_outputs=v, retain_graph=True)
                lam = (hv * v).flatten(1).sum(1)
                v = hv.detach()
        return 1.2 * lam.abs().detach()


# -- posterior sampling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSettings:
    """How :func:`reconstruct_closure` samples.

    Attributes:
        method: ``"daps"`` (no backpropagation through the network) or ``"dps"`` (A-DPS: guidance through it).
        levels: noise levels ``edm_sigmas(levels, sigma_max)``.
        sigma_max: the largest noise level, network units.
        sigma_min: the smallest positive noise level, network units (pixel std ~0.4): the data-consistency
            step does the last fit; on the synthetic test set 0.2 did better than 0.02.
        inference_operator: ``"test"`` (``Ã_inf`` a further corruption of the observation's own coverage) or
            ``"law"`` (a random coverage of the training law).
        num_draws: ``K`` draws of ``Ã_inf`` averaged per call of the denoiser.
        langevin_steps, step_size: DAPS's Langevin steps per level and step relative to the curvature.
        zeta: A-DPS's step (``guidance="normalized"``): image-norm length per step, network units.
        churn: A-DPS's EDM stochasticity.
        power_iterations: Hessian–vector products per level for DAPS's curvature estimate.
        polish_iterations: L-BFGS iterations of a final data-consistency step per sample (0: none): the MAP
            of ``N(x; x̂, polish_r²) exp(−L(x))`` from the prior's last estimate ``x̂`` (DAPS: the last level's
            ``x̂_0``, replacing its ``x_0``, whose Langevin noise of std ``r`` in every direction the data leave
            free would stay in each sample; A-DPS: its output).
        polish_r: its ``r``, network units.
        keep_chi2, keep_factor: a sample is kept when its closure-phase χ² is at most
            ``max(keep_chi2, keep_factor · χ²_best)`` of its observation: the closure likelihood is not convex,
            and a sample stuck in a local optimum (χ² ≫ 1) is a failure of the sampler, no posterior sample.
        polish_mean_iterations: L-BFGS iterations of the same data-consistency step applied to the mean of the
            kept samples, which gives the point estimate (0: the mean itself; a mean of images that each fit the
            closure data need not fit them).
        positive: clip negative pixels of the final samples (sky brightness is non-negative).
        rescale_flux: scale every sample to the total flux at the end (exact: the closure χ² do not change).
        align: shift the samples of an observation onto its first before the mean and std (the position is free).
    """

    method: Literal["daps", "dps"] = "daps"
    levels: int = 50
    sigma_max: float = 10.0
    sigma_min: float = 0.2
    inference_operator: Literal["test", "law"] = "test"
    num_draws: int = 1
    langevin_steps: int = 20
    step_size: float = 0.5
    zeta: float = 0.3
    churn: float = 0.0
    power_iterations: int = 6
    polish_iterations: int = 0
    polish_r: float = 0.5
    keep_chi2: float = 2.0
    keep_factor: float = 2.0
    polish_mean_iterations: int = 0
    positive: bool = True
    rescale_flux: bool = True
    align: bool = True


def reconstruct_closure(
    prior: Prior,
    observations: Sequence[Observation],
    total_flux: Sequence[float],
    *,
    num_samples: int,
    generator: torch.Generator,
    settings: SamplerSettings | None = None,
    closures: Sequence[ClosureData] | None = None,
    flux_frac: float = 0.01,
    progress: bool = True,
) -> ClosurePosterior:
    """Posterior samples of ``T`` observations from their closure quantities and total flux, in one batch.

    ``S = num_samples`` samples per observation by DAPS or A-DPS through the prior (``settings``), then per
    sample: positivity, the total flux, the best shift onto the best-fitting sample; the samples that fit
    the data give the mean, the std map and the point estimate (:class:`ClosurePosterior`, Jy/pixel).
    """
    cfg = settings or SamplerSettings()
    family = prior.family
    N, psize, device = family.npix, family.pixel_size, prior.device
    closures = list(closures) if closures is not None else [closure_observation(o) for o in observations]
    S, T = int(num_samples), len(observations)
    lik = ClosureLikelihood(observations, closures, total_flux, N, psize, samples=S, flux_frac=flux_frac, device=device)
    A_test = test_operator(observations, N, psize, repeat=S).to(device) if cfg.inference_operator == "test" else None
    D = prior.denoiser(
        S * T,
        generator=generator,
        num_draws=cfg.num_draws,
        inference_operator=cfg.inference_operator,
        test_operator=A_test,
        device=device,
    )
    sigmas = edm_sigmas(cfg.levels, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)
    x = initial_noise((S * T, 1, N, N), cfg.sigma_max, generator=generator, device=device)
    with tqdm(total=cfg.levels, disable=not progress, desc=f"{cfg.method} ({S}×{T} images)", unit="level") as bar:

        def callback(info: dict[str, Any]) -> None:
            bar.update(1)

        if cfg.method == "daps":
            out, x_ref = _daps(D, x, sigmas, lik, cfg, generator, callback, _flux_image(lik, N, device))
        elif cfg.method == "dps":
            out = sample_adps(
                D,
                x,
                sigmas,
                lik,
                generator=generator,
                callback=callback,
                zeta=_normalized_zeta(cfg.zeta),
                guidance="normalized",
                churn=cfg.churn,
            )
            x_ref = out
        else:
            raise ValueError(f"method must be 'daps' or 'dps', got {cfg.method!r}")
    failed = ~(torch.isfinite(out).flatten(1).all(1) & torch.isfinite(x_ref).flatten(1).all(1))
    if bool(failed.any()):  # keep the batch finite (the polish is one objective over all samples); never kept
        flat = _flux_image(lik, N, device)
        out = torch.where(failed.view(-1, 1, 1, 1), flat, out)
        x_ref = torch.where(failed.view(-1, 1, 1, 1), flat, x_ref)
    if cfg.polish_iterations > 0:
        out = _polish(lik, x_ref.detach(), cfg.polish_r, cfg.polish_iterations, positive=cfg.positive)
    images = out.detach().reshape(S, T, 1, N, N) / lik.scale
    if cfg.positive:
        images = images.clamp_min(0.0)
    if cfg.rescale_flux:  # exact: closure quantities do not change under x -> c x
        flux = torch.as_tensor(list(total_flux), dtype=images.dtype, device=images.device).view(1, T, 1, 1, 1)
        images = images * flux / images.sum((-1, -2, -3), keepdim=True).clamp_min(1e-12)
    with torch.no_grad():
        chi2 = {k: v.reshape(S, T) for k, v in lik.chi_squared(images.reshape(S * T, 1, N, N) * lik.scale).items()}
    chi2["cphase"] = torch.where(failed.view(S, T), math.inf, torch.nan_to_num(chi2["cphase"], nan=math.inf))
    best = chi2["cphase"].argmin(0)  # (T,)
    if cfg.align and S > 1:
        images = _align(images, best)
    keep = chi2["cphase"] <= torch.maximum(cfg.keep_factor * chi2["cphase"].min(0).values, torch.tensor(cfg.keep_chi2))
    w = keep.to(images.dtype).view(S, T, 1, 1, 1)
    mean = (w * images).sum(0) / w.sum(0)
    std = ((w * (images - mean) ** 2).sum(0) / (w.sum(0) - 1).clamp_min(1)).sqrt()
    estimate = mean
    if cfg.polish_mean_iterations > 0:
        one = ClosureLikelihood(observations, closures, total_flux, N, psize, flux_frac=flux_frac, device=device)
        x = _polish(one, mean * lik.scale, cfg.polish_r, cfg.polish_mean_iterations, positive=cfg.positive)
        estimate = x / lik.scale
    return ClosurePosterior(estimate, mean, std, images, keep, chi2["cphase"], chi2["logcamp"])


@dataclass
class ClosurePosterior:
    """What :func:`reconstruct_closure` returns, in Jy/pixel.

    Attributes:
        estimate: the point estimate, ``(T, 1, N, N)``: the mean of the kept samples, made data-consistent
            when ``polish_mean_iterations > 0``.
        mean, std: mean and per-pixel std of the kept samples (std 0 where one was kept), ``(T, 1, N, N)``.
        samples: every sample, aligned, ``(S, T, 1, N, N)``.
        kept: ``(S, T)`` bool; chi2_cphase, chi2_logcamp: ``(S, T)`` reduced χ² of every sample.
    """

    estimate: Tensor
    mean: Tensor
    std: Tensor
    samples: Tensor
    kept: Tensor
    chi2_cphase: Tensor
    chi2_logcamp: Tensor


def _align(images: Tensor, reference: Tensor) -> Tensor:
    """Shift every sample onto sample ``reference[t]`` of its observation (best sub-pixel shift): closure
    quantities leave the position free, and a mean over samples at different positions would smear.

    Shape: ``images (S, T, 1, N, N)``, ``reference (T,)`` -> ``(S, T, 1, N, N)``.
    """
    out = images.clone()
    for t in range(images.shape[1]):
        ref = images[int(reference[t]), t, 0].cpu().numpy()
        for k in range(images.shape[0]):
            if k == int(reference[t]):
                continue
            img = images[k, t, 0].cpu().numpy()
            moved = shift_image(img, best_shift(img, ref))
            out[k, t, 0] = torch.as_tensor(moved, dtype=images.dtype)
    return out


def _daps(D, x: Tensor, sigmas: Tensor, lik: ClosureLikelihood, cfg: SamplerSettings, generator, callback, x0_start):
    """DAPS one level at a time, with the Langevin step scaled by the likelihood's curvature at the previous
    level's ``x_0`` (the closure χ² is far stiffer near smooth images, whose long-baseline visibilities vanish)."""
    state = {"x0": x0_start, "x0_hat": x0_start}

    def keep(info: dict[str, Any]) -> None:
        state["x0"], state["x0_hat"] = info["x0"], info["x0_hat"]
        callback(info)

    for i in range(len(sigmas) - 1):
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
        # a Langevin chain that diverged (the curvature grew within the level) restarts the level from where it was
        bad = ~torch.isfinite(x).flatten(1).all(1) | ~torch.isfinite(state["x0_hat"]).flatten(1).all(1)
        if bool(bad.any()):
            x = torch.where(bad.view(-1, 1, 1, 1), x_prev, x)
            state["x0"] = torch.where(bad.view(-1, 1, 1, 1), x0_prev, state["x0"])
            state["x0_hat"] = torch.where(bad.view(-1, 1, 1, 1), x0_prev, state["x0_hat"])
    return x, state["x0_hat"]


def _polish(lik: ClosureLikelihood, x_ref: Tensor, r: float, iterations: int, *, positive: bool = True) -> Tensor:
    """``argmin_x ||x − x_ref||² / (2 r²) + L(x)`` by L-BFGS from ``x_ref`` (all samples at once: the objective is a
    sum). ``positive``: over ``x = exp(z)`` (exact positivity, as in RML), from ``x_ref`` clipped at 1e-3 of its
    max, no pixel above 10 times that max. Returns the best iterate with a finite objective (the closure χ² can
    overflow where a model visibility vanishes, and the line search then fails)."""
    peak = x_ref.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    if positive:
        z = torch.log(torch.maximum(x_ref, 1e-3 * peak)).detach().requires_grad_(True)
        z_max = torch.log(10 * peak)
    else:
        z = x_ref.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([z], max_iter=iterations, history_size=20, line_search_fn="strong_wolfe")
    best = {"loss": math.inf, "z": z.detach().clone()}

    def image(v: Tensor) -> Tensor:
        return torch.exp(torch.minimum(v, z_max)) if positive else v

    def objective() -> Tensor:
        opt.zero_grad()
        loss = ((image(z) - x_ref) ** 2).sum() / (2 * r**2) + lik.loss(image(z)).sum()
        if not torch.isfinite(loss):  # reject the step: a huge value makes the line search back off
            z.grad = torch.zeros_like(z)
            return torch.tensor(1e30, dtype=loss.dtype)
        loss.backward()
        if loss.detach().item() < best["loss"]:
            best["loss"], best["z"] = loss.detach().item(), z.detach().clone()
        return loss

    with torch.enable_grad():
        try:
            opt.step(objective)
        except RuntimeError:  # a diverged line search (overflowing step size): keep the best iterate
            pass
    return image(best["z"]).detach()


def _flux_image(lik: ClosureLikelihood, npix: int, device) -> Tensor:
    """A round Gaussian of the observations' total flux (FWHM a quarter of the field), network units."""
    c = torch.arange(npix, dtype=torch.float32, device=device) - (npix - 1) / 2
    g = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * (npix / 4 / 2.355) ** 2))
    g = g / g.sum()
    return (lik.flux.view(-1, 1, 1, 1) * lik.scale) * g


def _normalized_zeta(zeta: float) -> Callable[[float], float]:
    return lambda sigma: zeta
