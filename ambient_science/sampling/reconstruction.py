"""Reconstruct images from measurements with a prior: one call for one-step, A-DPS and DAPS.

The examples and ``ambient-science reconstruct`` all go through :func:`reconstruct`, so a method means
the same thing everywhere:

* ``"one_step"`` (A-OS): ``D(Aᴴ y, σ_n)`` through ``Ã_inf`` drawn from the test operator (the input the
  network was trained on), averaged over ``num_draws`` draws; deterministic given the draws;
* ``"dps"``: A-DPS (:func:`~ambient_science.sampling.dps.sample_adps`), ``num_samples`` posterior samples;
* ``"daps"``: DAPS (:func:`~ambient_science.sampling.daps.sample_daps`), ``num_samples`` posterior samples.

Samples give a posterior mean and a per-pixel standard deviation (:class:`PosteriorSummary`).

    >>> import torch
    >>> from ambient_science.sampling.likelihoods import GaussianLikelihood
    >>> from ambient_science.operators import CleanFamily, PixelMaskFamily
    >>> from ambient_science.sampling.prior import Prior
    >>> class Shrink(torch.nn.Module):                      # the exact denoiser of N(0, 0.25 I)
    ...     def forward(self, x, sigma, cond, project=None):
    ...         return x * 0.25 / (0.25 + sigma.reshape(-1, 1, 1, 1) ** 2)
    >>> prior = Prior(Shrink(), CleanFamily((1, 4, 4)))
    >>> A = PixelMaskFamily((1, 4, 4), p=0.5).sample(2, generator=torch.Generator().manual_seed(0))
    >>> lik = GaussianLikelihood(A, A(torch.randn(2, 1, 4, 4)), sigma=0.1)
    >>> post = reconstruct(prior, lik, method="daps", num_samples=2, steps=10, progress=False,
    ...                    generator=torch.Generator().manual_seed(0))
    >>> tuple(post.mean.shape), tuple(post.std.shape)
    ((2, 1, 4, 4), (2, 1, 4, 4))
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch

from ambient_science.linop import SubsampledOperator
from ambient_science.sampling.daps import sample_daps
from ambient_science.sampling.dps import sample_adps
from ambient_science.sampling.likelihoods import GaussianLikelihood, Likelihood
from ambient_science.sampling.posterior import PosteriorSummary, sample_posterior, summarize
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.samplers import initial_noise, one_step
from ambient_science.schedules import SIGMA_MIN, edm_sigmas

__all__ = ["METHODS", "reconstruct"]

Method = Literal["one_step", "dps", "daps"]
METHODS: tuple[str, ...] = ("one_step", "dps", "daps")


def reconstruct(
    prior: Prior,
    likelihood: Likelihood,
    *,
    method: Method,
    generator: torch.Generator,
    num_samples: int = 4,
    steps: int = 64,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
    test_operator: SubsampledOperator | None = None,
    inference_operator: Literal["law", "test", "full", "measurement"] = "law",
    num_draws: int = 1,
    data_consistency: Literal["cg", "replace"] | None = None,
    progress: bool = True,
    sampler_options: dict[str, Any] | None = None,
) -> PosteriorSummary:
    """Posterior mean and std of the images behind ``likelihood``'s measurements.

    Args:
        prior: the trained prior (network + its corruption law).
        likelihood: ``-log p(y | x)``; ``"one_step"`` needs a linear :class:`GaussianLikelihood`.
        method: ``"one_step"``, ``"dps"`` or ``"daps"``.
        generator: every random draw (``Ã_inf``, sampler noise); the same seed gives the same result.
        num_samples: ``S`` posterior samples (``"one_step"`` is one deterministic estimate).
        steps: sampler steps (A-DPS) or annealing levels (DAPS).
        sigma_max: the first noise level (default: 80 for A-DPS, 10 for DAPS, as their papers).
        sigma_min: the last nonzero noise level (default: EDM's 0.002, or the prior's ``sigma_n`` when higher:
            a noisy-ambient prior never trained below it; a lower value is raised to it, with a warning). The
            one-step estimate is likewise never taken below ``sigma_n``.
        test_operator: the operator of the measurements; default ``likelihood.A`` when it has one.
        inference_operator: ``Ã_inf`` from the training law (``"law"``), from the test operator (``"test"``),
            observing everything (``"full"``, mask families) or the test operator itself (``"measurement"``;
            see :mod:`ambient_science.sampling.prior`) for the samplers; the one-step estimate always uses
            ``"test"``.
        num_draws: ``K`` draws of ``Ã_inf`` averaged in the denoiser (1 for honest uncertainty maps).
        data_consistency: final data-consistency step (``"cg"`` or ``"replace"``), or none.
        progress: a tqdm bar over sampler steps.
        sampler_options: extra keyword arguments of the sampler (e.g. ``zeta``, ``langevin_steps``).

    Shape: ``(B, C, H, W)`` mean and std, as the prior's images.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    A = test_operator if test_operator is not None else getattr(likelihood, "A", None)
    batch = A.batch_size if A is not None else None
    if batch is None:
        raise ValueError("reconstruct needs the test operator (test_operator=...) for a likelihood without .A")
    device = prior.device
    C, H, W = prior.family.image_shape
    shape = (batch, C, H, W)
    options = dict(sampler_options or {})
    floor = float(getattr(prior, "sigma_n", 0.0) or 0.0)
    if sigma_min is not None and sigma_min < floor:
        warnings.warn(
            f"sigma_min = {sigma_min:g} is below the prior's sigma_n = {floor:.3g}, the lowest noise level its "
            f"network trained at; the schedule stops at {floor:.3g}",
            stacklevel=2,
        )
    s_min = max(SIGMA_MIN if sigma_min is None else sigma_min, floor)

    if method == "one_step":
        if not isinstance(likelihood, GaussianLikelihood):
            raise TypeError("the one-step estimate needs a linear GaussianLikelihood (it starts from Aᴴ y)")
        D = prior.denoiser(
            batch, generator=generator, num_draws=num_draws, inference_operator="test", test_operator=A, device=device
        )
        options.setdefault("sigma_floor", s_min)
        with torch.no_grad():
            x = one_step(D, likelihood, data_consistency=data_consistency, **options)
        return summarize(x[None])

    s_max = sigma_max if sigma_max is not None else (10.0 if method == "daps" else 80.0)
    sigmas = edm_sigmas(steps, sigma_min=min(s_min, s_max), sigma_max=s_max, device=device)

    def draw(g: torch.Generator, callback) -> torch.Tensor:
        D = prior.denoiser(
            batch,
            generator=g,
            num_draws=num_draws,
            inference_operator=inference_operator,
            test_operator=A if inference_operator in ("test", "full", "measurement") else None,
            device=device,
        )
        x = initial_noise(shape, float(sigmas[0]), generator=g, dtype=prior.family.image_dtype()).to(device)
        if method == "dps":
            options.setdefault("churn", 10.0)
            return sample_adps(
                D, x, sigmas, likelihood, generator=g, callback=callback, data_consistency=data_consistency, **options
            )
        with torch.no_grad():
            return sample_daps(
                D, x, sigmas, likelihood, generator=g, callback=callback, data_consistency=data_consistency, **options
            )

    return sample_posterior(
        draw, num_samples=num_samples, generator=generator, steps_per_sample=len(sigmas) - 1, progress=progress
    )
