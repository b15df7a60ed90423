"""MRI evaluation: held-out slices of a measurement file, the baselines and the ambient priors on them, and
fastMRI's metrics per volume (docs/design.md §8).

Methods, per acceleration (one :func:`evaluate` call per test file):

* ``zero_filled``: ``Aᴴ y`` (multi-coil: combined with the file's ESPIRiT maps, ``Σ_c S_cᴴ Fᴴ y_c``);
* ``zero_filled_rss`` (multi-coil files only): the root-sum-of-squares of the zero-filled coil images
  (fastMRI's multi-coil zero-filled baseline; needs no maps);
* ``cg_sense`` (multi-coil files only): ``argmin ‖A x − y‖² + λ‖x‖²`` by conjugate gradients, ``λ`` picked
  from ``cg_lams`` like L1-wavelet's (``λ = 10⁻²`` when a single value is given);
* ``l1_wavelet``: compressed sensing, ``λ`` picked on the test slices themselves (the baseline at its best,
  conservative for the prior; ``metrics["l1_wavelet"]["lam"]`` records it, ``"lam_interior"`` whether it lies
  inside the grid rather than at an end, where a wider grid could do better);
* ``total_variation`` (when ``tv_lams`` is given): sigpy's TV reconstruction, ``λ`` picked the same way;
* per prior labelled ``<prefix>[<suffix>]`` (``ambient``, ``em``, ``clean``, each with or without ``_this_run``):
  the one-step estimate ``<prefix>_one_step<suffix>`` (mean of ``one_step_draws`` draws of ``Ã_inf``; not for a
  clean-image prior of the ``clean`` family, e.g. one trained by EM: its network never saw a mask) and the A-DPS
  posterior mean ``<prefix>_dps<suffix>`` with its per-pixel std ``<prefix>_dps_std<suffix>`` (an image, no
  metric). A-DPS ends with a CG data-consistency step on single-coil files only: there ``AᴴA`` is a projection
  and the step replaces what was observed; with coils it is an ill-conditioned SENSE inversion, and the
  un-regularised step (λ = 0, from the A-DPS estimate) amplifies noise and map errors (``examples/mri_knee.py
  --coils 8``, the in-run prior, 4 held-out slices at R = 4: 8.9 dB with it, 16.6 dB without; CG-SENSE at
  λ = 0 gives 7.7 dB there), so multi-coil A-DPS relies on its guidance alone. Every prior gets the same
  random draws (one generator seeded with ``seed``). The fit test of
  :mod:`ambient_science.sampling.fit` runs with A-DPS: ``fit_fired_fraction`` and ``fit_score_max`` in its
  metrics; slices that fire get the safe reconstruction (L1-wavelet at the λ of the prior's card).

Metrics (:func:`volume_metrics`): PSNR, SSIM and NMSE of the magnitude (root-sum-of-squares over channels)
per held-out volume, averaged over volumes, rounded to 4 decimals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.prepare import load_targets
from ambient_science.linop import LinearOperator
from ambient_science.metrics.mri import evaluate_volume
from ambient_science.operators.mri_recon import cg_sense, l1_wavelet, zero_filled_rss
from ambient_science.operators.mri_recon_grid import l1_wavelet_grid, total_variation_grid
from ambient_science.sampling.fit import apply_safe_mode
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.reconstruction import reconstruct

__all__ = [
    "HeldOutBatch",
    "evaluate",
    "format_table",
    "held_out_batch",
    "l1_fallback",
    "save_figure",
    "targets_path",
    "volume_metrics",
]


def targets_path(measurements: str | Path) -> Path:
    """The reference file written beside a test measurement file: ``<stem>_targets.h5``."""
    measurements = Path(measurements)
    return measurements.with_name(measurements.stem + "_targets.h5")


@dataclass
class HeldOutBatch:
    """Held-out slices of one measurement file, ready to reconstruct.

    Shape: ``y`` like ``A(x)``; ``sigma (B, 1, 1, 1)`` noise std per slice; ``truth (B, h, w)`` magnitude;
    ``volume (B,)`` the index of each slice's volume in the file (metrics are per volume).
    """

    A: LinearOperator
    y: Tensor
    sigma: Tensor
    truth: Tensor
    volume: Tensor


def held_out_batch(path: str | Path, test_slices: int, device: torch.device | str = "cpu") -> HeldOutBatch:
    """The middle ``test_slices`` slices of each volume of the measurement file ``path`` (its targets file,
    :func:`targets_path`, gives the truth), with their operator, k-space and noise std (at least 10⁻⁴)."""
    data = MeasurementFile(path)
    targets = load_targets(targets_path(path))
    index, volume = [], []
    start = 0
    for v, n in enumerate(targets["slices_per_file"]):
        k = min(test_slices, n)
        first = start + (n - k) // 2
        index += list(range(first, first + k))
        volume += [v] * k
        start += n
    records = [data[i] for i in index]
    params = {k: torch.stack([r["params"][k] for r in records]).to(device) for k in data.param_names}
    A = data.family.make(params)
    y = torch.stack([r["y"] for r in records]).to(device)
    sigma = torch.stack([r["sigma_n"] for r in records]).clamp_min(1e-4).to(device)
    return HeldOutBatch(A, y, sigma.reshape(-1, 1, 1, 1), targets["target"][index], torch.tensor(volume))


def volume_metrics(truth: Tensor, estimate: Tensor, volume: Tensor) -> dict[str, float]:
    """fastMRI's ``{"nmse", "psnr", "ssim"}`` per volume, averaged over volumes (4 decimals).

    Shape: ``truth (B, h, w)`` magnitude; ``estimate (B, C, h, w)`` complex (its root-sum-of-squares over ``C``
    is compared) or ``(B, h, w)`` magnitude; ``volume (B,)``.
    """
    mag = estimate.abs().pow(2).sum(dim=1).sqrt().float().cpu() if estimate.ndim == 4 else estimate
    per_volume = [evaluate_volume(truth[volume == v], mag[volume == v]) for v in volume.unique()]
    return {k: round(sum(m[k] for m in per_volume) / len(per_volume), 4) for k in per_volume[0]}


def evaluate(
    priors: Mapping[str, Prior],
    test_file: str | Path,
    *,
    test_slices: int,
    l1_lams: Sequence[float] = (3e-4, 1e-3, 3e-3, 1e-2),
    tv_lams: Sequence[float] = (),
    one_step_draws: int = 8,
    dps_samples: int | None = None,
    dps_steps: int | None = None,
    dps_antithetic: bool | None = None,
    inference_operator: str = "full",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    cg_lams: Sequence[float] = (1e-2,),
    dps_defaults: Mapping[str, Any] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Tensor]]:
    """Every method (module docstring) on the held-out slices of ``test_file``: ``(metrics, images)``.

    ``metrics[method] = {"psnr", "ssim", "nmse"}``; ``images`` holds ``truth`` and every method's estimate
    (std maps included) on ``device``. A-DPS uses ``inference_operator`` as ``Ã_inf`` and a CG data-consistency
    step (:func:`~ambient_science.sampling.reconstruction.reconstruct`), ``dps_samples`` samples (default: the
    prior's recommended count and pairing, e.g. the shipped EM prior's one antithetic pair; ``dps_antithetic``
    ``False``: independent samples, e.g. to compare with points measured before the pairs); a prior whose card
    records no A-DPS settings (one trained in the run) samples with ``dps_defaults`` (``{"steps", "sigma_max",
    "options"}``, each optional; ``dps_steps`` still wins). A prior must have been trained on data with the test
    file's coil count (its family's ``num_coils``; single-coil: None), else ``ValueError``.

    Cost (issue #21): L1-wavelet and TV solve every slice at every λ of their grid in one batched solve
    (:mod:`ambient_science.operators.mri_recon_grid`); the fit test runs once per prior (with A-DPS) and its
    report also decides the one-step estimate's safe mode; the L1 fallback is computed at most once per prior.
    """
    batch = held_out_batch(test_file, test_slices, device)
    A, y, truth, volume = batch.A, batch.y, batch.truth, batch.volume
    coils = None if A.coil_maps is None else A.num_coils
    for label, prior in priors.items():
        if getattr(prior.family, "num_coils", None) != coils:
            raise ValueError(
                f"prior {label!r} was trained on {_coils(getattr(prior.family, 'num_coils', None))} data; "
                f"{test_file} is {_coils(coils)}: train a prior on data with the same coils"
            )
    lik = GaussianLikelihood(A, y, batch.sigma)
    images = {"truth": truth, "zero_filled": A.H(y)}
    solvers = [("l1_wavelet", l1_wavelet_grid, l1_lams), ("total_variation", total_variation_grid, tv_lams)]
    if A.coil_maps is not None:
        images["zero_filled_rss"] = zero_filled_rss(A, y)
        solvers.insert(0, ("cg_sense", lambda A, y, lams: {lam: cg_sense(A, y, lam=lam) for lam in lams}, cg_lams))
    best = {}
    for name, solver, lams in solvers:
        if not lams:
            continue
        estimates = solver(A, y, tuple(lams))
        best[name] = max(estimates, key=lambda lam: volume_metrics(truth, estimates[lam], volume)["psnr"])
        images[name] = estimates[best[name]]
    fits = {}
    for label, prior in priors.items():
        prefix = label.removesuffix("_this_run")
        suffix = label[len(prefix) :]
        generator = torch.Generator().manual_seed(seed)  # the same draws for every prior
        fallback = _once(l1_fallback(prior, A))
        # the fit test runs once, with A-DPS below; its report then decides the one-step estimate's safe mode
        one_step = _has_one_step(prior)
        if one_step:
            post_one = reconstruct(prior, lik, method="one_step", generator=generator, num_draws=one_step_draws,
                                   safe_mode="off")  # fmt: skip
        settings = {} if _records_dps(prior) else dict(dps_defaults or {})
        post = reconstruct(
            prior, lik, method="dps", generator=generator, num_samples=dps_samples,
            steps=dps_steps if dps_steps is not None else settings.get("steps"), sigma_max=settings.get("sigma_max"),
            sampler_options=settings.get("options"), inference_operator=inference_operator, antithetic=dps_antithetic,
            data_consistency="cg" if coils is None else "none", progress=progress, fallback=fallback,
        )  # fmt: skip
        if one_step:
            post_one = apply_safe_mode(post_one, lik, post.fit, "auto", fallback=fallback)
            images[f"{prefix}_one_step{suffix}"] = post_one.mean
        images[f"{prefix}_dps{suffix}"], images[f"{prefix}_dps_std{suffix}"] = post.mean, post.std
        if post.fit is not None:
            fits[f"{prefix}_dps{suffix}"] = post.fit
    metrics = {k: volume_metrics(truth, v, volume) for k, v in images.items() if k != "truth" and "_std" not in k}
    for name, fit in fits.items():  # the fit test (sampling.fit): the safe mode replaced the slices that fired
        metrics[name]["fit_fired_fraction"] = round(float(fit.fires.float().mean()), 4)
        metrics[name]["fit_score_max"] = round(float(fit.score.max()), 4)
    for name, lam in best.items():
        lams = sorted({"l1_wavelet": l1_lams, "total_variation": tv_lams, "cg_sense": cg_lams}[name])
        metrics[name]["lam"] = lam
        metrics[name]["lam_interior"] = len(lams) > 2 and lams[0] < lam < lams[-1]
    return metrics, images


def _has_one_step(prior: Prior) -> bool:
    """Whether the one-step estimate (the denoiser through the test mask) means anything for ``prior``: not for a
    prior of the ``clean`` family (``A = I``, e.g. trained by EM), whose network never saw a mask."""
    return prior.family.name != "clean"


def _records_dps(prior: Prior) -> bool:
    """Whether the prior's card records A-DPS settings (``prior.json`` ``"sampler"`` -> ``"dps"``)."""
    return bool(((getattr(prior, "config", None) or {}).get("sampler") or {}).get("dps"))


def _once(fallback):
    """``fallback`` computed at most once (the one-step estimate and A-DPS share the same likelihood)."""
    if fallback is None:
        return None
    cache = {}

    def run(likelihood):
        if id(likelihood) not in cache:
            cache[id(likelihood)] = fallback(likelihood)
        return cache[id(likelihood)]

    return run


def _coils(num_coils: int | None) -> str:
    return "single-coil" if num_coils is None else f"{num_coils}-coil"


def l1_fallback(prior: Prior, A: LinearOperator):
    """The safe mode's fallback for slices where the prior does not fit: L1-wavelet at the λ its card records
    (tuned on validation volumes, ``benchmarks/mri_ood.py --calibrate``), else ``None`` (the shrink)."""
    lams = {float(k): float(v) for k, v in prior.config.get("fit", {}).get("fallback_l1_lam", {}).items()}
    if not lams:
        return None
    R = float(A.acceleration().mean())
    lam = lams[min(lams, key=lambda k: abs(k - R))]
    return lambda likelihood: l1_wavelet(likelihood.A, likelihood.y, lam=lam)


def save_figure(
    path: str | Path, images_per_r: Mapping[int, Mapping[str, Tensor]], source: str = "shipped prior"
) -> None:
    """One row per acceleration (``images_per_r[R]`` from :func:`evaluate`), first slice: truth, zero-filled,
    L1-wavelet, CG-SENSE (multi-coil), the ``ambient`` prior's one-step, A-DPS mean and std (``source`` names
    that prior; without one the in-run prior takes those columns), the in-run prior's A-DPS mean, the clean
    baseline's A-DPS mean. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(images_per_r.values()))
    lead = "em" if "em_dps" in first else "ambient"  # the shipped / --prior prior's label
    main = source if f"{lead}_dps" in first else "prior of this run"
    if f"{lead}_dps" not in first:  # no shipped / --prior prior: the in-run prior fills the ambient columns
        images_per_r = {R: {k.removesuffix("_this_run"): v for k, v in im.items()} for R, im in images_per_r.items()}
    kind = "EM" if lead == "em" else "ambient"
    columns = {
        "truth": "truth",
        "zero_filled": "zero-filled",
        "l1_wavelet": "L1-wavelet",
        "cg_sense": "CG-SENSE",
        f"{lead}_one_step": f"{kind} one-step\n({main})",
        f"{lead}_dps": f"{kind} A-DPS mean\n({main})",
        f"{lead}_dps_std": f"A-DPS std\n({main})",
        "ambient_dps_this_run": "ambient A-DPS mean\n(prior of this run)",
        "clean_dps": "clean-trained A-DPS\n(shipped baseline)",
    }
    first = next(iter(images_per_r.values()))
    cols = [k for k in columns if k in first]
    titles = [columns[k] for k in cols]
    fig, axes = plt.subplots(len(images_per_r), len(cols), figsize=(2.3 * len(cols), 2.5 * len(images_per_r)))
    axes = axes.reshape(len(images_per_r), len(cols))
    for row, (R, images) in enumerate(images_per_r.items()):
        truth = images["truth"][0]
        for c, (key, title) in enumerate(zip(cols, titles)):
            img = images[key][0]
            img = img.abs().pow(2).sum(dim=0).sqrt() if img.ndim == 3 else img.abs()
            vmax = float(truth.max()) * (0.25 if key.endswith("std") else 1.0)
            axes[row, c].imshow(img.cpu().numpy(), cmap="magma" if key.endswith("std") else "gray", vmin=0, vmax=vmax)
            axes[row, c].set_xticks([])
            axes[row, c].set_yticks([])
            if row == 0:
                axes[row, c].set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(f"R = {R}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(test: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """``metrics["test"]`` as a text table: one row per method, PSNR / SSIM / NMSE per acceleration."""
    methods = list(next(iter(test.values())))
    lines = [f"{'method':28s}" + "".join(f"   R={R}: PSNR  SSIM   NMSE" for R in test)]
    for m in methods:
        row = "".join(
            f"       {test[R][m]['psnr']:6.2f} {test[R][m]['ssim']:.3f} {test[R][m]['nmse']:.4f}" for R in test
        )
        lines.append(f"{m:28s}{row}")
    return "\n".join(lines)
