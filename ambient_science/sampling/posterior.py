"""Several posterior samples -> a mean and a per-pixel standard deviation (uncertainty map), with a progress bar.

:func:`sample_posterior` calls a ``draw(generator, callback)`` function ``S`` times, each call returning
one batch of posterior samples (e.g. a sampler run with fresh ``Ã_inf`` draws), and reduces them on the
fly (Welford), so memory does not grow with ``S`` unless the samples are kept. A tqdm bar counts
sampler steps across all ``S`` runs (the sampler's ``callback`` advances it).

**Antithetic pairs** (``antithetic=True``, an even ``S``): sample ``2k + 1`` repeats sample ``2k``'s draw from
the same generator state with every Gaussian draw negated (:func:`ambient_science.noise.antithetic`; the other
draws, e.g. ``Ã_inf``, are shared). Each sample is still a sample of the sampler's law (``ε`` and ``−ε`` have one
law), so the mean stays unbiased, and its variance drops by the part of each sample that is odd in the noise:
Hammersley & Morton's antithetic variates. A posterior sampler run from a data-consistent state is nearly linear in
its noise, so a pair's mean is far better than two independent samples' (MRI example, benchmarks/bench_sampling.py
--mri: one pair beats four independent samples). The std then is not the sample std of correlated samples: with
pair means ``a_k = (x⁺ + x⁻)/2`` and half-differences ``d_k = (x⁺ − x⁻)/2`` (``E[a d] = 0`` by the symmetry),
``Var x = Var a + E|d|²``, estimated by the sample variance of the ``a_k`` (``P − 1`` denominators, ``P`` pairs)
plus the mean of ``|d_k|²``. With one pair the first term cannot be estimated and is left out: the std then covers
the odd part of the spread only (a lower bound; exact for a sampler linear in its noise).

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

from ambient_science.noise import antithetic as _antithetic
from ambient_science.sampling.samplers import Callback

__all__ = ["PosteriorSummary", "sample_posterior", "summarize"]

Draw = Callable[[torch.Generator, Callback], Tensor]


@dataclass
class PosteriorSummary:
    """Per-pixel posterior mean and standard deviation over ``num_samples`` samples.

    ``std`` is real (for complex images ``sqrt(E|x − mean|²)``, the real and imaginary spreads
    combined) with Bessel's correction (``S − 1``; 0 for ``S = 1``); for antithetic pairs (``antithetic``) the
    paired estimate of the module docs.

    Shape: ``mean (B, C, H, W)``, ``std (B, C, H, W)`` real, ``samples (S, B, C, H, W)`` or ``None``.
    """

    mean: Tensor
    std: Tensor
    num_samples: int
    samples: Tensor | None = None
    #: the fit test of :func:`~ambient_science.sampling.reconstruction.reconstruct` (a ``FitReport``), if run
    fit: Any = None
    #: whether the samples are antithetic pairs (samples ``2k``, ``2k + 1``; module docs)
    antithetic: bool = False


def _sq(x: Tensor) -> Tensor:
    return x.abs() ** 2 if x.is_complex() else x**2


def _check_pairs(num_samples: int) -> None:
    if num_samples < 2 or num_samples % 2:
        raise ValueError(f"antithetic samples come in pairs: need an even number of samples >= 2, got {num_samples}")


def summarize(samples: Tensor, *, antithetic: bool = False) -> PosteriorSummary:
    """Mean and per-pixel std over the first dimension of stacked samples (``antithetic``: samples ``2k`` and
    ``2k + 1`` are antithetic pairs, the std is the paired estimate of the module docs).

    Shape: ``samples (S, B, ...)`` -> ``mean, std (B, ...)``.
    """
    S = samples.shape[0]
    mean = samples.mean(dim=0)
    if antithetic:
        _check_pairs(S)
        plus, minus = samples[0::2], samples[1::2]
        half_diff, pair_mean = (plus - minus) / 2, (plus + minus) / 2
        P = S // 2
        between = _sq(pair_mean - mean).sum(dim=0) / (P - 1) if P > 1 else 0.0
        std = (between + _sq(half_diff).mean(dim=0)).sqrt()
    else:
        std = (_sq(samples - mean).sum(dim=0) / max(S - 1, 1)).sqrt()
    return PosteriorSummary(mean=mean, std=std, num_samples=S, samples=samples, antithetic=antithetic)


def sample_posterior(
    draw: Draw,
    *,
    num_samples: int,
    generator: torch.Generator,
    steps_per_sample: int | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    keep_samples: bool = True,
    antithetic: bool = False,
) -> PosteriorSummary:
    """``S`` calls of ``draw(generator, callback)``, reduced to a posterior mean and per-pixel std.

    ``mean = (1/S) Σ_s x_s``, ``std² = (1/(S−1)) Σ_s |x_s − mean|²`` (Welford's running update); with
    ``antithetic``, pairs of draws and the paired std (module docs).

    Args:
        draw: returns one batch of posterior samples ``(B, C, H, W)``; it must pass ``callback`` on to
            its sampler (called once per sampler step) and take all randomness from ``generator``.
        num_samples: ``S``.
        generator: shared by all draws (one stream: the same seed gives the same samples).
        steps_per_sample: sampler steps per draw, for the bar's total (e.g. ``len(sigmas) − 1``).
        progress: show a tqdm bar over steps.
        callback: also called at every step, with ``"sample": s`` added to the sampler's dict.
        keep_samples: keep the stacked samples in the summary (``S×`` the memory of one batch).
        antithetic: draw ``S/2`` antithetic pairs (``S`` even): each odd draw repeats the previous one from the
            generator state it started from, with every Gaussian draw negated; the generator then stands where
            the pair's first draw left it.

    Shape: ``draw -> (B, C, H, W)``; summary as :class:`PosteriorSummary`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if antithetic:
        _check_pairs(num_samples)
    from tqdm.auto import tqdm  # lazily: no work at import time

    total = num_samples * steps_per_sample if steps_per_sample else None
    kept: list[Tensor] = []
    # Welford over the reduced draws: the samples, or (antithetic) the pair means; plus Σ|d|² of the pairs
    mean: Tensor | None = None
    m2: Tensor | None = None
    odd: Tensor | None = None
    count = 0
    with tqdm(total=total, disable=not progress, desc="posterior", unit="step") as bar:
        for s in range(num_samples):
            bar.set_postfix(sample=f"{s + 1}/{num_samples}")

            def step_callback(info: dict[str, Any], s: int = s) -> None:
                bar.update(1)
                if callback is not None:
                    callback({**info, "sample": s})

            twin = antithetic and s % 2 == 1
            if antithetic and not twin:
                start = generator.get_state()
            elif twin:
                after = generator.get_state()
                generator.set_state(start)
            with _antithetic(twin):
                x = draw(generator, step_callback).detach()
            if twin and not torch.equal(generator.get_state(), after):
                raise RuntimeError(
                    "an antithetic twin drew differently from its first sample: draw() must take all its randomness "
                    "from the generator it is given, the same way each time"
                )
            if keep_samples:
                kept.append(x)
            if antithetic and not twin:
                first = x
                continue
            if twin:
                x, half_diff = (first + x) / 2, (first - x) / 2
                odd = _sq(half_diff) if odd is None else odd + _sq(half_diff)
            count += 1
            if mean is None:
                mean = x.clone()
                m2 = torch.zeros(x.shape, dtype=x.real.dtype if x.is_complex() else x.dtype, device=x.device)
            else:
                delta = x - mean
                mean = mean + delta / count
                prod = delta.conj() * (x - mean) if delta.is_complex() else delta * (x - mean)
                m2 = m2 + (prod.real if prod.is_complex() else prod)
    if antithetic:
        var = (m2 / (count - 1) if count > 1 else torch.zeros_like(m2)) + odd / count
    else:
        var = m2 / max(num_samples - 1, 1)
    std = var.clamp_min(0.0).sqrt()
    samples = torch.stack(kept) if keep_samples else None
    return PosteriorSummary(mean=mean, std=std, num_samples=num_samples, samples=samples, antithetic=antithetic)
