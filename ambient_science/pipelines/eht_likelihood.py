"""The closure-quantity likelihood of black-hole imaging (docs/design.md §6), in the network units of
:mod:`ambient_science.pipelines.eht`, and the scale and noise conventions around it:

    L(x) = Σ_obs [ w_cp N_cp χ²_cp(V(x)) / 2 + w_lca N_lca χ²_lca(V(x)) / 2 ] + (Σ x − F)² / (2 (f_F F)²)

with ehtim's normalised closure χ² (:mod:`ambient_science.operators.closure`, minimal closure sets), model
visibilities ``V(x)`` of the physical (unweighted) operator, and a total-flux term. :func:`training_flux`: the
flux at which images enter a prior; :func:`with_systematic`: a fractional systematic floor on the sigmas.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.uvfits import Observation
from ambient_science.operators.closure import ClosureData
from ambient_science.operators.interferometry import Interferometer
from ambient_science.pipelines.eht import image_scale
from ambient_science.sampling.likelihoods import Likelihood
from ambient_science.sampling.prior import Prior

__all__ = ["ClosureLikelihood", "training_flux", "with_systematic"]

# the 32 px prior's records were not normalised: its images spanned 0.5-1 Jy (BlackHoleImageConfig.flux_jy)
_UNNORMALISED_FLUX_JY = (0.5, 1.0)


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
        # closure-phase and log-closure-amplitude counts per sample (S·T,): a reduced χ² times its count is the sum
        self.n_cphase = torch.tensor([float(c.index.n_cphase) for c in self.closures], device=device).repeat(self.S)
        self.n_logcamp = torch.tensor([float(c.index.n_logcamp) for c in self.closures], device=device).repeat(self.S)

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
        return self.loss_and_chi2(x)[0]

    def loss_and_chi2(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss (S·T,), reduced χ² per sample)`` from one evaluation of the model visibilities."""
        chi2 = self.chi_squared(x)
        nll = 0.5 * self.w_cp * self.n_cphase.to(x.device) * chi2["cphase"]
        nll = nll + 0.5 * self.w_lca * self.n_logcamp.to(x.device) * torch.nan_to_num(chi2["logcamp"], nan=0.0)
        flux = x.sum((1, 2, 3)) / self.scale
        return nll + (flux - self.flux) ** 2 / (2 * (self.flux_frac * self.flux) ** 2), chi2

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


def training_flux(prior: Prior) -> tuple[float, tuple[float, float] | None]:
    """``(F_prior, range)``: the total flux [Jy] at which images enter the prior, and the flux range its training
    images spanned (``None`` when its records were normalised to ``F_prior``).

    Read from the exported prior's card (``card["image"]["train_flux_jy"]``), else from the metadata of the
    training file named in its config (``train_flux_jy``, written by ``prepare black-holes --generator broad``),
    else the 32 px prior's unnormalised 0.5–1 Jy (``F_prior`` 0.75 Jy).
    """
    cfg = prior.config or {}
    image = (cfg.get("card") or {}).get("image") or {}
    if image.get("train_flux_jy"):
        return float(image["train_flux_jy"]), None
    path = (cfg.get("data") or {}).get("path")
    if path:
        try:
            meta = MeasurementFile(path).metadata
        except (OSError, ValueError):
            meta = {}
        if meta.get("train_flux_jy"):
            return float(meta["train_flux_jy"]), None
    lo, hi = _UNNORMALISED_FLUX_JY
    return (lo + hi) / 2, (lo, hi)


def with_systematic(obs: Observation, fraction: float) -> Observation:
    """``obs`` with every visibility sigma inflated by a systematic floor: ``σ² + (fraction · |V|)²``."""
    if fraction < 0:
        raise ValueError(f"systematic must be >= 0, got {fraction}")
    if fraction == 0:
        return obs
    sigma = np.sqrt(obs.sigma**2 + (fraction * np.abs(obs.vis)) ** 2)
    return dataclasses.replace(obs, sigma=sigma)
