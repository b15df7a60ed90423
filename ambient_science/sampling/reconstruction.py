"""Reconstruct images from measurements with a prior: one call for one-step, A-DPS and DAPS.

The examples and ``ambient-science reconstruct`` all go through :func:`reconstruct`, so a method means
the same thing everywhere:

* ``"one_step"`` (A-OS): ``D(Aᴴ y, σ_n)`` through ``Ã_inf`` drawn from the test operator (the input the
  network was trained on), averaged over ``num_draws`` draws; deterministic given the draws;
* ``"dps"``: A-DPS (:func:`~ambient_science.sampling.dps.sample_adps`), ``num_samples`` posterior samples;
* ``"daps"``: DAPS (:func:`~ambient_science.sampling.daps.sample_daps`), ``num_samples`` posterior samples.

Samples give a posterior mean and a per-pixel standard deviation (:class:`PosteriorSummary`).

**Defaults are the recommended settings** (:func:`recommended_settings`): the prior's ``prior.json`` may record
them under ``"sampler"`` (the shipped MRI priors record the settings behind the README's numbers; besides the
arguments below, ``"sigma_max"``, ``"sigma_min"``, ``"precision"``, ``"start"`` (``"noise"`` or ``"data"``),
``"antithetic"`` and ``"options"``, default keyword arguments of the sampler, e.g. ``{"step_dc": "prox"}``, which
``sampler_options`` override key by key); otherwise A-DPS takes 48 steps, ``Ã_inf = "full"`` where the family has
a fully observed operator (mask families, else ``"law"``), a final CG data-consistency step for linear Gaussian
likelihoods, 4 samples; the one-step estimate averages 8 draws of ``Ã_inf``. An argument given explicitly always wins.

**Fit test and safe mode** (``safe_mode``, :mod:`ambient_science.sampling.fit`): with a linear Gaussian
likelihood of a masked operator and a mask-family prior, ``reconstruct`` first scores how well the prior
explains the measured data (``post.fit``, a :class:`~ambient_science.sampling.fit.FitReport`) and warns when
the score exceeds the prior's calibrated threshold. ``"auto"`` (default) then returns the safe reconstruction
for the images that fire: ``fallback(likelihood)`` when given (the pipelines and the CLI pass L1-wavelet), else
the measured k-space kept and the unmeasured part shrunk toward the minimum-norm (zero-filled) solution by the
held-out weight ``w``; ``"shrink"`` applies it to every image; ``"report"`` only reports; ``"off"`` skips the
test. Either way the posterior std of an image that fired is the prior's spread, which the data do not back.

**Warm start** (``start``): the samplers start at ``σ_max`` from pure noise by default. ``start="data"`` (or a
function of the likelihood) starts them from an estimate ``x₀`` plus noise, ``x₀ + σ_max ε`` (CCDF, Chung et al.
2022): when ``σ_max`` exceeds the estimate's error, that state is close in law to the true one at ``σ_max``, and
only the steps below it are run. It saves the steps above ``σ_max``, not the steps the posterior needs below it:
on the MRI example's 16 held-out knee slices with the shipped EM prior (``OMP_NUM_THREADS=1 python
benchmarks/bench_sampling.py --mri <test_rN_64.h5> --mri-prior ambient_science/pretrained/mri-knee-synthetic-r4
--mri-variants 0 52 55 56 57``), 20 steps from ``σ_max = 3`` to 0.01 from the zero-filled image match 48 steps from
80 of pure noise within noise (R = 4 / 8: +0.26 ± 0.14 / −0.13 ± 0.20 dB per slice) in 20.5 / 21.5 s against
54.2 / 57.3 s (2.6× / 2.7×; 2.95× / 2.85× with ``precision="auto"`` on a CPU with AVX-512 BF16, same PSNR), where the
card's 32 steps from 80 (four independent samples, as it was then) give +0.15 / +0.13 dB at 1.6–1.7×; 18 steps or
fewer lose 0.4–2.3 dB at R = 8 (from ``σ_max`` 1, 2, 3 or 5).

**Antithetic pairs** (``antithetic``; :mod:`ambient_science.sampling.posterior`): each pair's second run repeats
the first from the same generator state with every Gaussian draw negated. Both are posterior samples, and their mean
cancels the part of the sample that is odd in the noise, which for a sampler pulled toward the data is most of its
scatter: on the same 16 slices (``--mri-variants 0 42 59 60 61``), one pair of the card's 32 steps from σ 80 beats
four independent samples — +0.39 ± 0.10 / +0.24 ± 0.13 dB against the pre-#21 48 steps (four samples: +0.15 / +0.13),
SSIM +0.019 / +0.020 — in 17.4 / 17.8 s against 54.1 / 56.7 s (3.1× / 3.2×); two pairs +0.47 / +0.34 dB. With one
pair the std covers the odd part of the spread only (a lower bound); with two or more the variance estimate is
unbiased.

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
from collections.abc import Callable
from typing import Any, Literal

import torch

from ambient_science.linop import SubsampledOperator, repeat_batch
from ambient_science.noise import antithetic as noise_antithetic
from ambient_science.precision import check_precision
from ambient_science.sampling.daps import sample_daps
from ambient_science.sampling.dps import sample_adps
from ambient_science.sampling.fit import FitReport, apply_safe_mode, check_fit, fit_applies
from ambient_science.sampling.likelihoods import GaussianLikelihood, Likelihood
from ambient_science.sampling.posterior import PosteriorSummary, sample_posterior, summarize
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.samplers import initial_noise, one_step
from ambient_science.schedules import SIGMA_MIN, edm_sigmas

__all__ = ["LIBRARY_DEFAULTS", "METHODS", "SAFE_MODES", "recommended_settings", "reconstruct"]

Method = Literal["one_step", "dps", "daps"]
METHODS: tuple[str, ...] = ("one_step", "dps", "daps")
SAFE_MODES: tuple[str, ...] = ("auto", "shrink", "report", "off")
#: the fallback of :func:`recommended_settings` when the prior records none ("full"/"cg" where applicable)
LIBRARY_DEFAULTS: dict[str, dict[str, Any]] = {
    "one_step": {"num_draws": 8, "data_consistency": "none"},
    "dps": {"steps": 48, "num_samples": 4, "inference_operator": "full", "data_consistency": "cg", "num_draws": 1},
    "daps": {"steps": 64, "num_samples": 4, "inference_operator": "full", "data_consistency": "cg", "num_draws": 1},
}


def _has_full(prior: Prior, A: SubsampledOperator | None) -> bool:
    try:
        prior.family.fully_observed(A if A is not None else prior.family.sample(1, generator=torch.Generator()))
    except (NotImplementedError, KeyError, ValueError, TypeError, AttributeError):
        return False
    return True


def recommended_settings(
    prior: Prior, method: str, likelihood: Likelihood | None = None, test_operator: SubsampledOperator | None = None
) -> dict[str, Any]:
    """The sampler settings :func:`reconstruct` uses when not told otherwise: the prior's recorded ones
    (``prior.json`` ``"sampler"`` -> ``method``) over :data:`LIBRARY_DEFAULTS`, made applicable: ``"full"``
    becomes ``"law"`` for families without a fully observed operator, data consistency ``"none"`` for
    likelihoods without a linear Gaussian data term (and no ``step_dc`` among the recorded ``"options"``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    recorded = ((getattr(prior, "config", None) or {}).get("sampler") or {}).get(method, {})
    out = {**LIBRARY_DEFAULTS[method], **recorded}
    A = test_operator if test_operator is not None else getattr(likelihood, "A", None)
    if out.get("inference_operator") == "full" and not _has_full(prior, A):
        out["inference_operator"] = "law"
    if likelihood is not None and not isinstance(likelihood, GaussianLikelihood):
        out["data_consistency"] = "none"
        out["options"] = {k: v for k, v in out.get("options", {}).items() if k != "step_dc"}
    return out


def reconstruct(
    prior: Prior,
    likelihood: Likelihood,
    *,
    method: Method,
    generator: torch.Generator,
    num_samples: int | None = None,
    steps: int | None = None,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
    test_operator: SubsampledOperator | None = None,
    inference_operator: Literal["law", "test", "full", "measurement"] | None = None,
    num_draws: int | None = None,
    data_consistency: Literal["cg", "replace", "none"] | None = None,
    safe_mode: Literal["auto", "shrink", "report", "off"] = "auto",
    fallback: Callable[[GaussianLikelihood], torch.Tensor] | None = None,
    progress: bool = True,
    sampler_options: dict[str, Any] | None = None,
    sample_batch: int | None = 1,
    precision: Literal["float32", "bfloat16", "auto"] | None = None,
    start: Literal["noise", "data"] | Callable[[Likelihood], torch.Tensor] | None = None,
    antithetic: bool | None = None,
) -> PosteriorSummary:
    """Posterior mean and std of the images behind ``likelihood``'s measurements.

    Args:
        prior: the trained prior (network + its corruption law).
        likelihood: ``-log p(y | x)``; ``"one_step"`` needs a linear :class:`GaussianLikelihood`.
        method: ``"one_step"``, ``"dps"`` or ``"daps"``.
        generator: every random draw (``Ã_inf``, sampler noise); the same seed gives the same result.
        num_samples: ``S`` posterior samples (``"one_step"`` is one deterministic estimate). ``None`` here and
            for ``steps``, ``inference_operator``, ``num_draws``, ``data_consistency``: the recommended setting
            (:func:`recommended_settings`; module docs).
        steps: sampler steps (A-DPS) or annealing levels (DAPS).
        sigma_max: the first noise level (default: the recommended one, else 80 for A-DPS, 10 for DAPS, as their
            papers).
        sigma_min: the last nonzero noise level (default: the recommended one, else EDM's 0.002; the prior's
            ``sigma_n`` when higher: a noisy-ambient prior never trained below it; a lower value is raised to it,
            with a warning). The one-step estimate is likewise never taken below ``sigma_n``.
        test_operator: the operator of the measurements; default ``likelihood.A`` when it has one.
        inference_operator: ``Ã_inf`` from the training law (``"law"``), from the test operator (``"test"``),
            observing everything (``"full"``, mask families) or the test operator itself (``"measurement"``;
            see :mod:`ambient_science.sampling.prior`) for the samplers; the one-step estimate always uses
            ``"test"``.
        num_draws: ``K`` draws of ``Ã_inf`` averaged in the denoiser (1 for honest uncertainty maps).
        data_consistency: final data-consistency step (``"cg"`` or ``"replace"``), or ``"none"``.
        safe_mode: ``"auto"``, ``"shrink"``, ``"report"`` or ``"off"``: the fit test and the safe reconstruction
            (module docs; ``post.fit`` holds the report, ``None`` when the test does not apply or is off).
        fallback: the safe reconstruction of the images that fire, ``fallback(likelihood) -> (B, C, H, W)``
            (e.g. L1-wavelet, :func:`ambient_science.operators.mri_recon.l1_wavelet`); default: the shrink toward
            the minimum-norm solution (:func:`~ambient_science.sampling.fit.shrink_to_data`).
        progress: a tqdm bar over sampler steps.
        sampler_options: extra keyword arguments of the sampler (e.g. ``zeta``, ``langevin_steps``, ``step_dc``);
            they override the recommended ``"options"`` key by key (``{"step_dc": None}`` turns a recorded one off).
        sample_batch: posterior samples drawn together in one sampler run of batch ``sample_batch·B`` (default 1:
            one run per sample, which needs the least memory; ``None``: all ``num_samples`` at once — on a CPU
            slower, measured with ``benchmarks/bench_sampling.py --mri`` (the shipped knee prior's 16 slices: 41.9 /
            40.9 s against 36.6 / 34.8 s one sample per run at R = 4 / 8); on a GPU untested). The
            samples of a batched run are as independent as those of separate runs (own ``Ã_inf`` draws, own
            noise) but come from another random stream, so a given seed gives other samples. Applies to a linear
            Gaussian likelihood of a :class:`~ambient_science.linop.SubsampledOperator` that tiles itself
            (``A.tile``: pixel masks, Cartesian MRI, also under a clean-image prior) or that the prior's family
            rebuilds (``family.make``); otherwise one sample per run.
        precision: the network's arithmetic in the samplers (:data:`~ambient_science.precision.PRECISIONS`:
            ``"float32"``, ``"bfloat16"`` autocast, ``"auto"``: bfloat16 where the device computes it natively);
            default: the recommended one, else float32. The fit test and the one-step estimate stay float32.
        start: where the samplers start at ``sigma_max``: ``"noise"`` (``σ_max ε``, the samplers' papers; the
            default unless the prior records another), ``"data"`` (``x₀ + σ_max ε`` with ``x₀`` the minimum-norm
            least-squares fit of a linear Gaussian likelihood, CG from zero: zero-filled for single-coil Cartesian
            MRI), or a function ``start(likelihood) -> (B, C, H, W)`` giving ``x₀`` (e.g. L1-wavelet). A start
            from an estimate is the forward-diffused warm start of CCDF (Chung et al. 2022, "Come-closer-diffuse-
            faster"): with ``σ_max`` above the estimate's error the state at ``σ_max`` is near the true one, and
            the run needs the steps below ``σ_max`` only (module docs).
        antithetic: draw the samples as antithetic pairs (an even ``num_samples``): each pair's second run
            repeats the first from the same generator state with every Gaussian draw negated (its start noise,
            churn, Langevin noise), sharing the rest (``Ã_inf``); a lower-variance posterior mean at the same
            cost, and a paired std (:mod:`ambient_science.sampling.posterior`). Default: the recommended setting
            when ``num_samples`` is even (an odd count then draws independent samples), else ``False``; ``True``
            with an odd count is an error (module docs).

    Shape: ``(B, C, H, W)`` mean and std, as the prior's images.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if safe_mode not in SAFE_MODES:
        raise ValueError(f"safe_mode must be one of {SAFE_MODES}, got {safe_mode!r}")
    A = test_operator if test_operator is not None else getattr(likelihood, "A", None)
    batch = A.batch_size if A is not None else None
    if batch is None:
        raise ValueError("reconstruct needs the test operator (test_operator=...) for a likelihood without .A")
    recommended = recommended_settings(prior, method, likelihood, A)
    num_samples = recommended.get("num_samples", 1) if num_samples is None else num_samples
    steps = recommended.get("steps", 64) if steps is None else steps
    if inference_operator is None:
        inference_operator = recommended.get("inference_operator", "law")
    num_draws = recommended.get("num_draws", 1) if num_draws is None else num_draws
    dc = recommended.get("data_consistency", "none") if data_consistency is None else data_consistency
    precision = check_precision(recommended.get("precision", "float32") if precision is None else precision)
    data_consistency = None if dc == "none" else dc
    if antithetic is None:  # the recommended pairs, where the count allows them
        antithetic = bool(recommended.get("antithetic", False)) and num_samples >= 2 and num_samples % 2 == 0
    elif antithetic and method != "one_step" and (num_samples < 2 or num_samples % 2):
        raise ValueError(f"antithetic samples come in pairs: num_samples must be even and >= 2, got {num_samples}")
    fit = _fit_report(prior, likelihood, generator, safe_mode)
    device = prior.device
    C, H, W = prior.family.image_shape
    options = {**recommended.get("options", {}), **(sampler_options or {})}
    floor = float(getattr(prior, "sigma_n", 0.0) or 0.0)
    sigma_min = recommended.get("sigma_min") if sigma_min is None else sigma_min
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
        if prior.family.name == "clean":
            warnings.warn(
                "the one-step estimate calls the denoiser through the test mask, but this is a clean-image prior "
                "(family 'clean', e.g. trained by EM): its network never saw a mask, and on the aliased Aᴴ y it "
                "only denoises; use method='dps'",
                stacklevel=2,
            )
        D = prior.denoiser(
            batch, generator=generator, num_draws=num_draws, inference_operator="test", test_operator=A, device=device
        )
        options.setdefault("sigma_floor", s_min)
        with torch.no_grad():
            x = one_step(D, likelihood, data_consistency=data_consistency, **options)
        return apply_safe_mode(summarize(x[None]), likelihood, fit, safe_mode, fallback=fallback)

    if sigma_max is None:
        sigma_max = recommended.get("sigma_max", 10.0 if method == "daps" else 80.0)
    s_max = sigma_max
    sigmas = edm_sigmas(steps, sigma_min=min(s_min, s_max), sigma_max=s_max, device=device)
    x_start = _start_point(start if start is not None else recommended.get("start", "noise"), likelihood,
                           (batch, C, H, W), prior.family.image_dtype())  # fmt: skip

    def draw(g: torch.Generator, callback, copies: int = 1) -> torch.Tensor:
        """``copies`` posterior samples of the whole batch in one sampler run (batch ``copies·B``, copy-major)."""
        A_run, lik = (A, likelihood) if copies == 1 else tiler(copies)
        D = prior.denoiser(
            copies * batch,
            generator=g,
            num_draws=num_draws,
            inference_operator=inference_operator,
            test_operator=A_run if inference_operator in ("test", "full", "measurement") else None,
            device=device,
            precision=precision,
        )
        x = initial_noise((copies * batch, C, H, W), float(sigmas[0]), generator=g,
                          dtype=prior.family.image_dtype()).to(device)  # fmt: skip
        if x_start is not None:
            x = x + x_start.to(device=device, dtype=x.dtype).repeat(copies, 1, 1, 1)
        if method == "dps":
            options.setdefault("churn", 10.0)
            return sample_adps(
                D, x, sigmas, lik, generator=g, callback=callback, data_consistency=data_consistency, **options
            )
        with torch.no_grad():
            return sample_daps(
                D, x, sigmas, lik, generator=g, callback=callback, data_consistency=data_consistency, **options
            )

    # antithetic: runs come in twin pairs of the same copies, so a run batches at most half the samples
    drawn = num_samples // 2 if antithetic else num_samples
    per_run = drawn if sample_batch is None else max(1, min(int(sample_batch), drawn))
    tiler = _tiler(prior, likelihood, A) if per_run > 1 else None
    if tiler is not None:
        runs = -(-drawn // per_run)
        chunks = []
        with _progress((1 + antithetic) * runs * (len(sigmas) - 1), progress) as bar:
            for r in range(runs):
                copies = min(per_run, drawn - r * per_run)
                state = generator.get_state() if antithetic else None
                x = draw(generator, lambda info: bar.update(1), copies).detach()
                x = x.reshape(copies, batch, *x.shape[1:])
                if antithetic:  # the twin run, interleaved (samples 2k, 2k + 1 are a pair)
                    after = generator.get_state()
                    generator.set_state(state)
                    with noise_antithetic():
                        twin = draw(generator, lambda info: bar.update(1), copies).detach()
                    if not torch.equal(generator.get_state(), after):  # as sample_posterior checks its twins
                        raise RuntimeError("an antithetic twin run drew differently from its first run")
                    x = torch.stack((x, twin.reshape(x.shape)), dim=1).flatten(0, 1)
                chunks.append(x)
        post = summarize(torch.cat(chunks), antithetic=antithetic)
    else:
        post = sample_posterior(
            draw, num_samples=num_samples, generator=generator, steps_per_sample=len(sigmas) - 1, progress=progress,
            antithetic=antithetic,
        )  # fmt: skip
    return apply_safe_mode(post, likelihood, fit, safe_mode, fallback=fallback)


def _start_point(
    start: str | Callable[[Likelihood], torch.Tensor],
    likelihood: Likelihood,
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """``x₀`` of :func:`reconstruct`'s ``start`` (detached, ``shape`` and the prior's image ``dtype``), or ``None``
    for ``"noise"``."""
    if callable(start):
        with torch.no_grad():
            x0 = start(likelihood)
        what = "start(likelihood)"
    elif start == "noise":
        return None
    elif start == "data":
        if not isinstance(likelihood, GaussianLikelihood):
            raise TypeError(f'start="data" needs a linear GaussianLikelihood, got {type(likelihood).__name__}')
        x0 = likelihood.data_consistency(torch.zeros(likelihood.A.ishape, dtype=dtype, device=likelihood.y.device))
        what = 'start="data"'
    else:
        raise ValueError(f'start must be "noise", "data" or a function of the likelihood, got {start!r}')
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != tuple(shape):
        raise ValueError(f"{what} must give a tensor of the prior's image shape {tuple(shape)}, got "
                         f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")  # fmt: skip
    if x0.is_complex() and not dtype.is_complex:
        raise ValueError(f"{what} is complex ({x0.dtype}) but the prior's images are real ({dtype})")
    if not bool(torch.isfinite(torch.view_as_real(x0) if x0.is_complex() else x0).all()):
        raise ValueError(f"{what} has NaN or infinite values")
    return x0.detach().to(dtype)


def _tiler(prior: Prior, likelihood: Likelihood, A: SubsampledOperator | None):
    """``copies -> (A tiled, likelihood tiled)`` (the batch repeated ``copies`` times, copy-major) when
    :func:`reconstruct` can batch posterior samples: a linear Gaussian likelihood of a masked operator that tiles
    itself (``A.tile``) or that the prior's family rebuilds exactly from its ``params()`` (checked on a probe);
    ``None`` otherwise."""
    if not (isinstance(likelihood, GaussianLikelihood) and likelihood.A is A and isinstance(A, SubsampledOperator)):
        return None

    def rebuilt_by_family(copies: int) -> SubsampledOperator:
        return prior.family.make({k: repeat_batch(v, copies) for k, v in A.params().items()})

    probe = torch.randn(A.ishape, generator=torch.Generator().manual_seed(0)).to(likelihood.y.device)
    probe = probe.to(prior.family.image_dtype())
    make = None
    for candidate in (A.tile, rebuilt_by_family):
        try:
            once = candidate(1)
            if type(once) is type(A) and torch.allclose(once(probe), A(probe), rtol=1e-4, atol=1e-6):
                make = candidate
                break
        except (NotImplementedError, KeyError, ValueError, TypeError, RuntimeError, AttributeError):  # not rebuilt
            continue
    if make is None:
        return None

    def tile(copies: int) -> tuple[SubsampledOperator, GaussianLikelihood]:
        tiled = GaussianLikelihood.__new__(GaussianLikelihood)
        tiled.A = make(copies)
        tiled.y, tiled.sigma = repeat_batch(likelihood.y, copies), repeat_batch(likelihood.sigma, copies)
        tiled.weight = repeat_batch(likelihood.weight, copies)
        return tiled.A, tiled

    return tile


def _progress(total: int, progress: bool):
    from tqdm.auto import tqdm  # lazily: no work at import time

    return tqdm(total=total, disable=not progress, desc="posterior", unit="step")


def _fit_report(prior: Prior, likelihood: Likelihood, generator: torch.Generator, safe_mode: str) -> FitReport | None:
    """The fit test when it applies (linear Gaussian likelihood of a masked operator; a mask-family prior with a
    further corruption, or one whose fit entry names a scorer: :func:`~ambient_science.sampling.fit.fit_scorer`),
    with a warning when images fire; ``None`` otherwise or when ``safe_mode="off"``."""
    if safe_mode == "off" or not fit_applies(prior, likelihood):
        return None
    # its own stream, seeded from the caller's seed without advancing the caller's generator (the samples stay
    # those of safe_mode="off")
    report = check_fit(prior, likelihood, generator=torch.Generator(device=generator.device).manual_seed(
        generator.initial_seed() + 1))  # fmt: skip
    message = report.warning()
    if message is not None:
        warnings.warn(message, stacklevel=3)
    return report
