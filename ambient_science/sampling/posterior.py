"""Several posterior samples -> a mean and a per-pixel standard deviation (uncertainty map), with a progress bar.

:func:`sample_posterior` calls a ``draw(generator, callback)`` function ``S`` times, each call returning
one batch of posterior samples (e.g. a sampler run with fresh ``Ã_inf`` draws), and reduces them on the
fly (Welford), so memory does not grow with ``S`` unless the samples are kept. A tqdm bar counts
sampler steps across all ``S`` runs (the sampler's ``callback`` advances it).

    >>> import torch
    >>> from ambient_science.linop import Identity
    >>> from ambient_science.sampling.likelihoods import GaussianLikelihood
    >>> from ambient_science.sampling.samplers import initial_noise
    >>> from ambient_science.sampling.daps import sample_daps
    >>> from ambient_science.schedules import edm_sigmas
    >>> D = lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)   # the denoiser of N(0, I)
    >>> lik = GaussianLikelihood(Identity((1, 1, 4, 4)), torch.zeros(1, 1, 4, 4), sigma=1.0)
    >>> sigmas = edm_sigmas(10, sigma_max=10.0)
    >>> def draw(g, callback):
    ...     x = initial_noise((1, 1, 4, 4), 10.0, generator=g)
    ...     return sample_daps(D, x, sigmas, lik, generator=g, callback=callback, langevin_steps=5)
    >>> post = sample_posterior(draw, num_samples=3, generator=torch.Generator().manual_seed(0),
    ...                         steps_per_sample=10, progress=False)
    >>> post.mean.shape, post.std.shape, post.samples.shape
    (torch.Size([1, 1, 4, 4]), torch.Size([1, 1, 4, 4]), torch.Size([3, 1, 1, 4, 4]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ambient_science.sampling.samplers import Callback

__all__ = ["PosteriorSummary", "sample_posterior", "summarize"]

Draw = Callable[[torch.Generator, Callback], Tensor]


@dataclass
class PosteriorSummary:
    """Per-pixel posterior mean and standard deviation over ``num_samples`` samples.

    ``std`` is real (for complex images ``sqrt(E|x − mean|²)``, the real and imaginary spreads
    combined) with Bessel's correction (``S − 1``; 0 for ``S = 1``).

    Shape: ``mean (B, C, H, W)``, ``std (B, C, H, W)`` real, ``samples (S, B, C, H, W)`` or ``None``.
    """

    mean: Tensor
    std: Tensor
    num_samples: int
    samples: Tensor | None = None
    #: the fit test of :func:`~ambient_science.sampling.reconstruction.reconstruct` (a ``FitReport``), if run
    fit: Any = None


def summarize(samples: Tensor) -> PosteriorSummary:
    """Mean and per-pixel std over the first dimension of stacked samples.

    Shape: ``samples (S, B, ...)`` -> ``mean, std (B, ...)``.
    """
    S = samples.shape[0]
    mean = samples.mean(dim=0)
    dev = samples - mean
    sq = dev.abs() ** 2 if dev.is_complex() else dev**2
    std = (sq.sum(dim=0) / max(S - 1, 1)).sqrt()
    return PosteriorSummary(mean=mean, std=std, num_samples=S, samples=samples)


def sample_posterior(
    draw: Draw,
    *,
    num_samples: int,
    generator: torch.Generator,
    steps_per_sample: int | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    keep_samples: bool = True,
) -> PosteriorSummary:
    """``S`` calls of ``draw(generator, callback)``, reduced to a posterior mean and per-pixel std.

    ``mean = (1/S) Σ_s x_s``, ``std² = (1/(S−1)) Σ_s |x_s − mean|²`` (Welford's running update).

    Args:
        draw: returns one batch of posterior samples ``(B, C, H, W)``; it must pass ``callback`` on to
            its sampler (called once per sampler step) and take all randomness from ``generator``.
        num_samples: ``S``.
        generator: shared by all draws (one stream: the same seed gives the same samples).
        steps_per_sample: sampler steps per draw, for the bar's total (e.g. ``len(sigmas) − 1``).
        progress: show a tqdm bar over steps.
        callback: also called at every step, with ``"sample": s`` added to the sampler's dict.
        keep_samples: keep the stacked samples in the summary (``S×`` the memory of one batch).

    Shape: ``draw -> (B, C, H, W)``; summary as :class:`PosteriorSummary`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    from tqdm.auto import tqdm  # lazily: no work at import time

    total = num_samples * steps_per_sample if steps_per_sample else None
    kept: list[Tensor] = []
    mean: Tensor | None = None
    m2: Tensor | None = None
    with tqdm(total=total, disable=not progress, desc="posterior", unit="step") as bar:
        for s in range(num_samples):
            bar.set_postfix(sample=f"{s + 1}/{num_samples}")

            def step_callback(info: dict[str, Any], s: int = s) -> None:
                bar.update(1)
                if callback is not None:
                    callback({**info, "sample": s})

            x = draw(generator, step_callback).detach()
            if keep_samples:
                kept.append(x)
            if mean is None:
                mean = x.clone()
                m2 = torch.zeros(x.shape, dtype=x.real.dtype if x.is_complex() else x.dtype, device=x.device)
            else:
                delta = x - mean
                mean = mean + delta / (s + 1)
                prod = delta.conj() * (x - mean) if delta.is_complex() else delta * (x - mean)
                m2 = m2 + (prod.real if prod.is_complex() else prod)
    std = (m2 / max(num_samples - 1, 1)).clamp_min(0.0).sqrt()
    samples = torch.stack(kept) if keep_samples else None
    return PosteriorSummary(mean=mean, std=std, num_samples=num_samples, samples=samples)
