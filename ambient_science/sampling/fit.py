"""Does the prior fit these data? A per-image test of the prior on the measurements, and the safe reconstruction.

A prior that does not know the anatomy in front of it (a knee prior on a head) fills unmeasured k-space with
the wrong content, and a posterior sampler then lands *below* the zero-filled image while its data residual
looks fine (it fits what was measured, by construction). The test here scores the prior on the measured data
the way it was trained (docs/design.md §5–§6): the ambient denoising loss on the measured k-space,

    score = mean over σ ∈ levels of  (E||M (A D(Aᴴy + σ ε; Ã) − y)||² − n 2σ_n²) / (||M y||² − n 2σ_n²),

with ``D(·; Ã)`` the network called through ``Ã = further_corrupt(A)`` (its training input law: it sees the
noisy measured k-space minus the lines its further corruption holds back), ``M`` the measured entries, ``n``
their number and ``2σ_n²`` the measurement noise's ``E|n|²`` (what no prediction can explain). The error covers
the entries the network was shown (denoising) and the held-back ones (prediction). It is relative: 0 is a
perfect fit, 1 no better than zeros. ``repeats`` draws of ``ε`` and ``Ã`` are pooled per level. At the default
levels ``σ = 0.5, 1`` (data normalised as ``prepare`` does) the prior's knowledge of the anatomy dominates.

The score is compared with a threshold calibrated on in-distribution *validation* images (a high quantile of
their scores, :func:`calibrate_threshold`), stored with the prior (``prior.json`` ``"fit"``, read by
:func:`fit_settings`) and never tuned on test images. Above it, :class:`FitReport` ``fires``.

**Shrink weight.** A random ``fraction`` of the measured entries outside the always-sampled centre (measured
non-ACS lines) is held back, the one-step estimate is computed from the rest, and its prediction ``p = A x̂`` of
the held-back entries gives ``w = Re⟨p, y⟩_h / ||p||²_h`` clipped to ``[0, 1]``: the least-squares weight of
the prior's prediction on data it did not see. The safe reconstruction (:func:`shrink_to_data`) keeps the
measured k-space and scales the rest by ``w``: ``x = x_mn + w (x_dc − x_mn)``, ``x_mn`` the minimum-norm
solution (zero-filled for single-coil Cartesian MRI), ``x_dc`` the estimate after data consistency.

**A prior without a further corruption** (a clean-image prior, e.g. one trained by EM from an ambient prior,
``train.method = "em"``) cannot be scored this way: its network never saw measured k-space with holes. Its
``"fit"`` entry may name a **scorer** (``"scorer"``: a path relative to the prior's directory, written by
``ambient-science export-prior --fit-scorer``), an ambient prior of the same training data, whose network then
computes the score and the shrink weight while the threshold and settings stay the prior's own
(:func:`fit_scorer`). The test then asks whether the data look like the TRAINING DATA the two priors share; the
shrink weight is the scorer's (its one-step prediction of held-back entries), applied to the prior's estimate.

    >>> import torch
    >>> from ambient_science.sampling.likelihoods import GaussianLikelihood
    >>> from ambient_science.linop import Identity
    >>> lik = GaussianLikelihood(Identity((1, 1, 2, 2)), torch.ones(1, 1, 2, 2), sigma=0.1)
    >>> x = torch.zeros(1, 1, 2, 2)
    >>> torch.equal(shrink_to_data(x, lik, torch.tensor([0.0])), shrink_to_data(x, lik, torch.tensor([1.0])))
    True
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ambient_science.linop import SubsampledOperator
from ambient_science.noise import randn_like
from ambient_science.registry import family_from_config
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.posterior import PosteriorSummary, summarize
from ambient_science.sampling.prior import load_prior
from ambient_science.sampling.samplers import one_step

if TYPE_CHECKING:
    from ambient_science.sampling.prior import Prior

__all__ = [
    "DEFAULT_FIT",
    "FitReport",
    "apply_safe_mode",
    "calibrate_threshold",
    "check_fit",
    "fit_applies",
    "fit_scorer",
    "fit_settings",
    "shrink_to_data",
]

#: the fit test's settings when the prior records none (its threshold then is unknown: nothing fires)
DEFAULT_FIT: dict[str, Any] = {"levels": [0.5, 1.0], "repeats": 2, "fraction": 0.3, "num_draws": 4, "threshold": None}
#: each prior's loaded scorer, loaded once and dropped with the prior
_SCORERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class FitReport:
    """Per image: the fit score, whether it exceeds the threshold, and the shrink weight (module docs).

    Shape: ``score``, ``fires``, ``shrink`` are ``(B,)``.
    """

    score: Tensor
    threshold: float | None
    fires: Tensor
    shrink: Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (for ``metrics.json``)."""
        return {
            "score": [round(float(s), 4) for s in self.score],
            "threshold": self.threshold,
            "fires": [bool(f) for f in self.fires],
            "shrink": [round(float(w), 4) for w in self.shrink],
            "fired_fraction": float(self.fires.float().mean()) if self.fires.numel() else 0.0,
            "settings": self.settings,
        }

    def warning(self) -> str | None:
        """One line for the user when any image fires, else ``None``."""
        if not bool(self.fires.any()):
            return None
        n, total = int(self.fires.sum()), self.fires.numel()
        worst = float(self.score.max())
        return (
            f"the prior does not fit {n} of {total} images: its error on their measured k-space is up to "
            f"{worst:.2f} of the data's energy (threshold {self.threshold:.3f}, calibrated in distribution); the "
            "data look unlike its training data, and its reconstruction can be worse than zero-filling there "
            "(safe_mode='auto' replaces them by the safe reconstruction)"
        )


def fit_settings(prior: Prior) -> dict[str, Any]:
    """The fit test's settings for ``prior``: ``prior.json``'s ``"fit"`` entry over :data:`DEFAULT_FIT`.

    A ``"threshold"`` may be a number or a mapping from acceleration (as a string) to a number; :func:`check_fit`
    then interpolates it at each image's acceleration (linearly in ``log R``, constant beyond the ends).
    """
    stored = (getattr(prior, "config", None) or {}).get("fit", {})
    return {**DEFAULT_FIT, **stored}


def _further_corrupts(prior: Prior) -> bool:
    return "drop_fraction" in prior.family.config()


def fit_scorer(prior: Prior) -> Prior | None:
    """The prior whose network scores the fit test of ``prior`` (module docs): ``prior`` itself when its family
    further corrupts by dropping measured entries (an ambient mask-family prior); else the scorer its ``"fit"``
    entry names (loaded once, onto ``prior``'s device); else ``None`` (the test does not apply).

    Raises a ``FileNotFoundError`` naming the path when the named scorer is missing, a ``ValueError`` when it is
    not a further-corrupting prior of ``prior``'s images."""
    if _further_corrupts(prior):
        return prior
    name = (getattr(prior, "config", None) or {}).get("fit", {}).get("scorer")
    if not name:
        return None
    cached = _SCORERS.get(prior)
    if cached is None:
        where = getattr(prior, "path", None)
        path = Path(name) if Path(name).is_absolute() or where is None else Path(where) / name
        if not path.exists():
            raise FileNotFoundError(
                f"the prior's fit test names the scorer {name!r}, but {path} does not exist; expected an ambient "
                f"prior of the same training data there (ambient-science export-prior --fit-scorer copies one in)"
            )
        cached = load_prior(path, map_location=prior.device)
        if not _further_corrupts(cached):
            raise ValueError(f"the fit scorer {path} is a {cached.family.name!r} prior without a further corruption")
        images = lambda p: (tuple(p.family.image_shape), p.family.is_complex)  # noqa: E731
        if images(cached) != images(prior):
            raise ValueError(
                f"the fit scorer {path} has images {images(cached)} (shape, complex), the prior {images(prior)}; "
                "expected the same images"
            )
        _SCORERS[prior] = cached
    if cached.device != prior.device:  # the prior was moved since
        cached.network.to(prior.device)
    return cached


def fit_applies(prior: Prior, likelihood: Any) -> bool:
    """Whether :func:`check_fit` can test ``prior`` on ``likelihood``: a :class:`GaussianLikelihood` of a masked
    operator (:class:`SubsampledOperator`), a scorer (:func:`fit_scorer`), and — when the scorer is another prior —
    an operator of the scorer's family (its family rebuilds it from its parameters: e.g. Cartesian MRI masks for a
    knee scorer, not the identity of a clean-image prior's own family)."""
    A = getattr(likelihood, "A", None)
    if not isinstance(likelihood, GaussianLikelihood) or not isinstance(A, SubsampledOperator):
        return False
    scorer = fit_scorer(prior)
    if scorer is None or scorer is prior:
        return scorer is not None
    try:
        return type(scorer.family.make(A.params())) is type(A)
    except (KeyError, ValueError, TypeError, RuntimeError, NotImplementedError):
        return False


def _holdout_operator(prior: Prior, A: SubsampledOperator, fraction: float, generator: torch.Generator):
    config = prior.family.config()
    if "drop_fraction" not in config:
        raise ValueError(
            f"the held-out test drops measured entries through the family's drop_fraction; family "
            f"{config.get('family')!r} has none"
        )
    family = family_from_config({**config, "drop_fraction": float(fraction)})
    return family.further_corrupt(A, generator=generator)


def _threshold_for(threshold: Any, acceleration: Tensor) -> Tensor | None:
    if threshold is None:
        return None
    if isinstance(threshold, (int, float)):
        return torch.full_like(acceleration, float(threshold))
    # piecewise linear in log R between the calibrated accelerations, constant beyond them (a random mask's own
    # acceleration scatters around its nominal R)
    points = sorted((math.log(float(k)), float(v)) for k, v in threshold.items())
    xs = torch.tensor([p[0] for p in points], dtype=torch.float64)
    ys = torch.tensor([p[1] for p in points], dtype=torch.float64)
    r = acceleration.double().clamp_min(1e-12).log().clamp(float(xs[0]), float(xs[-1]))
    if len(points) == 1:
        return ys.expand_as(r).to(acceleration.dtype)
    i = torch.searchsorted(xs, r, right=True).clamp(1, len(points) - 1)
    t = (r - xs[i - 1]) / (xs[i] - xs[i - 1])
    return (ys[i - 1] + t * (ys[i] - ys[i - 1])).to(acceleration.dtype)


def _noise_entries(likelihood: GaussianLikelihood, mask: Tensor) -> Tensor:
    """``Σ_mask E|n|²``: the measurement noise the best prediction still misses, ``(B,)``."""
    per_entry = 2.0 if likelihood.y.is_complex() else 1.0
    m = torch.broadcast_to(mask.to(likelihood.sigma), likelihood.A.oshape)
    return (m * per_entry * likelihood.sigma**2).reshape(m.shape[0], -1).sum(dim=1)


def check_fit(
    prior: Prior,
    likelihood: GaussianLikelihood,
    *,
    generator: torch.Generator,
    levels: Sequence[float] | None = None,
    repeats: int | None = None,
    fraction: float | None = None,
    num_draws: int | None = None,
    threshold: float | dict[str, float] | None = None,
) -> FitReport:
    """The fit test of ``prior`` on ``likelihood``'s measurements (module docs): the denoising score and the
    held-out shrink weight.

    Args:
        prior: the prior to test: a mask family with a ``drop_fraction`` (Cartesian MRI, pixel masks), or a prior
            whose ``"fit"`` entry names a scorer (:func:`fit_scorer`; its network scores, the settings and
            threshold are ``prior``'s).
        likelihood: a :class:`GaussianLikelihood` with a :class:`SubsampledOperator` ``A``.
        generator: draws the noise, ``Ã_inf`` and the held-out entries.
        levels, repeats: the noise levels ``σ`` of the score and the draws pooled at each; ``fraction``,
            ``num_draws``: held-out fraction and ``Ã_inf`` draws of the shrink weight's one-step estimates;
            defaults from :func:`fit_settings`.
        threshold: the score above which an image ``fires`` (a number, or per acceleration); default the
            prior's calibrated one (``None`` when it has none: nothing fires, the score is still reported).

    Returns:
        A :class:`FitReport`. Cost: ``len(levels) · repeats + repeats`` network calls of the batch
        (``num_draws`` each for the last ``repeats``), no gradients.
    """
    settings = fit_settings(prior)
    scorer = fit_scorer(prior)
    if scorer is None:
        raise ValueError(
            f"the fit test needs a prior whose family further corrupts by dropping measured entries (drop_fraction: "
            f"Cartesian MRI) or a \"fit\" entry naming such a scorer; this prior's family is "
            f"{prior.family.name!r} and it names none"
        )
    if scorer is not prior and not fit_applies(prior, likelihood):
        raise ValueError(
            f"the fit scorer of this prior is a {scorer.family.name!r} prior; it scores measurements of that family "
            f"only, got {type(getattr(likelihood, 'A', None)).__name__}"
        )
    levels = tuple(float(s) for s in (settings["levels"] if levels is None else levels))
    fraction = float(settings["fraction"] if fraction is None else fraction)
    repeats = int(settings["repeats"] if repeats is None else repeats)
    num_draws = int(settings["num_draws"] if num_draws is None else num_draws)
    threshold = settings["threshold"] if threshold is None else threshold
    A = getattr(likelihood, "A", None)
    if not isinstance(likelihood, GaussianLikelihood) or not isinstance(A, SubsampledOperator):
        raise TypeError("check_fit needs a GaussianLikelihood of a SubsampledOperator (a masked measurement)")
    if not 0 < fraction < 1 or repeats < 1 or not levels or min(levels) <= 0:
        raise ValueError(f"need fraction in (0, 1), repeats >= 1, positive levels; got {fraction}, {repeats}, {levels}")
    B, y = A.batch_size, likelihood.y
    observed = torch.broadcast_to(A.observed, A.oshape)
    tiny = torch.finfo(torch.float32).tiny
    energy = (observed * y.abs() ** 2).reshape(B, -1).sum(dim=1) - _noise_entries(likelihood, observed)
    zero_filled = likelihood.backprojection()
    ratios = []
    with torch.no_grad():
        for sigma in levels:  # the ambient loss on the measured k-space at noise level σ
            err = torch.zeros(B, device=y.device)
            for _ in range(repeats):
                D = scorer.denoiser(B, generator=generator, inference_operator="test", test_operator=A)
                x_sigma = zero_filled + sigma * randn_like(zero_filled, generator)
                err += (observed * (A(D(x_sigma, sigma)) - y).abs() ** 2).reshape(B, -1).sum(dim=1)
            err = err / repeats - _noise_entries(likelihood, observed)
            ratios.append(err / energy.clamp_min(tiny))
        score = torch.stack(ratios).mean(dim=0).cpu()
        cross, power = torch.zeros(B, device=y.device), torch.zeros(B, device=y.device)
        for _ in range(repeats):  # the shrink weight: one-step predictions of held-back entries
            A_fit = _holdout_operator(scorer, A, fraction, generator)
            held = (observed - torch.broadcast_to(A_fit.observed, A.oshape)).clamp_min(0)
            lik_fit = GaussianLikelihood(A_fit, A_fit.observed * y, likelihood.sigma)
            D = scorer.denoiser(B, generator=generator, num_draws=num_draws, inference_operator="test",
                                test_operator=A_fit)  # fmt: skip
            p = A(one_step(D, lik_fit))
            cross += (held * (p.conj() * y).real).reshape(B, -1).sum(dim=1)
            power += (held * p.abs() ** 2).reshape(B, -1).sum(dim=1)
    shrink = (cross / power.clamp_min(tiny)).clamp(0.0, 1.0).cpu()
    acceleration = observed.reshape(B, -1).shape[1] / observed.reshape(B, -1).sum(dim=1).clamp_min(1)
    limit = _threshold_for(threshold, acceleration.detach().cpu().float())
    fires = score > limit if limit is not None else torch.zeros(B, dtype=torch.bool)
    used = {"levels": list(levels), "repeats": repeats, "fraction": fraction, "num_draws": num_draws}
    shown = None if limit is None else round(float(limit.max()), 4)
    return FitReport(score=score, threshold=shown, fires=fires, shrink=shrink, settings=used)


def shrink_to_data(estimate: Tensor, likelihood: GaussianLikelihood, weight: Tensor, *, max_iter: int = 30) -> Tensor:
    """The safe reconstruction: ``x_mn + w (x_dc − x_mn)`` per image (module docs).

    ``x_dc`` is ``estimate`` after CG data consistency (``λ = 0``, measured components fitted), ``x_mn`` the
    minimum-norm solution (CG from zero), ``w`` ``(B,)`` in ``[0, 1]``. Shape: like ``estimate``.
    """
    x_dc = likelihood.data_consistency(estimate, lam=0.0, max_iter=max_iter)
    x_mn = likelihood.data_consistency(torch.zeros_like(estimate), lam=0.0, max_iter=max_iter)
    w = weight.to(estimate.device, torch.float32).reshape(-1, *([1] * (estimate.ndim - 1)))
    return x_mn + w * (x_dc - x_mn)


def calibrate_threshold(scores: Tensor, quantile: float = 0.975) -> float:
    """The threshold of the held-out test: the ``quantile`` of in-distribution VALIDATION scores.

    Never calibrate on the test images the threshold is then judged on.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if s.numel() < 2:
        raise ValueError(f"calibrate_threshold needs at least 2 validation scores, got {s.numel()}")
    return round(float(torch.quantile(s, quantile)), 4)


def apply_safe_mode(
    post: PosteriorSummary,
    likelihood: GaussianLikelihood,
    fit: FitReport | None,
    mode: str = "auto",
    *,
    fallback: Callable[[GaussianLikelihood], Tensor] | None = None,
) -> PosteriorSummary:
    """The safe reconstruction of a posterior summary: ``"auto"``: the images that fire; ``"shrink"``: every
    image; ``"report"``/``"off"``: none. Chosen images get ``fallback(likelihood)`` when given, else
    :func:`shrink_to_data` of each sample with the held-out weight; the std of a chosen image is kept."""
    post.fit = fit
    if fit is None or mode in ("report", "off"):
        return post
    chosen = torch.ones_like(fit.fires) if mode == "shrink" else fit.fires
    if not bool(chosen.any()):
        return post
    samples = post.samples if post.samples is not None else post.mean[None]
    if fallback is not None:
        shrunk = fallback(likelihood).to(samples.device, samples.dtype)[None].expand_as(samples)
    else:
        weight = torch.where(chosen, fit.shrink, torch.ones_like(fit.shrink))
        shrunk = torch.stack([shrink_to_data(x, likelihood, weight) for x in samples])
    keep = chosen.to(shrunk.device).reshape(1, -1, *([1] * (shrunk.ndim - 2)))
    summary = summarize(torch.where(keep, shrunk, samples))
    summary.std = post.std
    summary.fit = fit
    return summary
