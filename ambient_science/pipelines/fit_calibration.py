"""Calibrate the fit test of a prior on YOUR validation measurements (``ambient-science calibrate-fit``).

The fit test of :mod:`ambient_science.sampling.fit` fires only above a threshold calibrated on in-distribution
validation images; a prior without one (any prior you trained yourself) reports its score and never warns. This
module sets that threshold from a measurement file of validation records (held out from training, e.g. the
``*_heldout.h5`` that ``ambient-science prepare`` writes beside the training file), the same way the shipped
priors' thresholds were set: ``margin ×`` the ``quantile`` of the validation scores, per acceleration
(:func:`~ambient_science.sampling.fit.calibrate_threshold`). With the validation targets it also picks the
L1-wavelet λ of the safe mode's fallback (Cartesian MRI): the λ of the best mean PSNR on the same records.

    >>> # prior = load_prior("priors/mine")
    >>> # prior.config["fit"] = calibrate_fit(prior, ["data/mine_r4_heldout.h5"])   # this session only
    >>> # write_fit_entry("priors/mine", prior.config["fit"])                        # into its prior.json

Never calibrate on the images you then judge the test on, nor on training records (the network has seen them:
their scores are too low, and the threshold would fire on new in-distribution data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.metrics.mri import psnr
from ambient_science.sampling.fit import DEFAULT_FIT, calibrate_threshold, check_fit, fit_scorer
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior
from ambient_science.training.checkpoint import PRIOR_FORMAT

__all__ = [
    "L1_LAMS",
    "MARGIN",
    "MIN_RECORDS",
    "QUANTILE",
    "acceleration_key",
    "calibrate_fit",
    "merge_fit_entry",
    "noise_sigma",
    "nominal_keys",
    "read_prior_card",
    "validation_scores",
    "write_fit_entry",
]

#: the shipped priors' calibration (benchmarks/mri_ood.py): 1.25 × the 0.975 quantile of the validation scores
QUANTILE, MARGIN = 0.975, 1.25
#: fewer validation records than this give a threshold near their maximum score: refused unless allowed
MIN_RECORDS = 16
#: the L1-wavelet λ tried for the safe mode's fallback (data normalised as ``prepare`` does)
L1_LAMS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def noise_sigma(batch: dict[str, Any], override: float | None = None) -> Tensor | float:
    """The Gaussian noise std of a batch of records: ``override``, else the per-entry ``sigma`` of the operator
    parameters, else each record's ``sigma_n`` (an error naming ``--sigma`` when a record has none)."""
    if override is not None:
        return float(override)
    if "sigma" in batch["params"]:
        return batch["params"]["sigma"]
    sigma_n = batch["sigma_n"]
    if bool((sigma_n <= 0).any()):
        raise ValueError(
            "the measurement file records no noise level (sigma_n = 0) for some records; pass --sigma "
            "(the noise std in the file's units, e.g. 0.01)"
        )
    return sigma_n.reshape(-1, *([1] * (batch["y"].ndim - 1)))


def acceleration_key(data: MeasurementFile, accelerations: Tensor) -> str:
    """The threshold's key for a file: its family's nominal ``acceleration`` when it records one, else the median
    of the records' own accelerations (3 significant digits)."""
    nominal = data.family_config.get("acceleration")
    value = float(nominal) if nominal is not None else float(accelerations.median())
    return f"{float(f'{value:.3g}'):g}"


def _batches(data: MeasurementFile, indices: Sequence[int], batch_size: int, sigma: float | None, device):
    """The likelihoods of ``indices`` in batches, collated as ``ambient-science reconstruct`` reads a file."""
    for batch in DataLoader(Subset(data, list(indices)), batch_size=batch_size):
        A = data.family.make({k: v.to(device) for k, v in batch["params"].items()})
        s = noise_sigma(batch, sigma)
        yield GaussianLikelihood(A, batch["y"].to(device), s.to(device) if isinstance(s, Tensor) else s)


def _check_family(prior: Prior, data: MeasurementFile, path: Path) -> None:
    scorer = fit_scorer(prior)
    if scorer is None:
        raise ValueError(
            f"the fit test needs a masked-measurement prior whose family further corrupts by dropping a fraction of "
            f"the measured entries (drop_fraction: Cartesian MRI), or a prior whose fit entry names such a scorer "
            f"(ambient-science export-prior --fit-scorer); this prior's family is {prior.family.name!r}"
        )
    family = scorer.family
    if family.name != data.family.name or tuple(family.image_shape) != tuple(data.family.image_shape):
        raise ValueError(
            f"{path}: {data.family.name} records of images {tuple(data.family.image_shape)}, but the prior's fit test "
            f"scores {family.name} of images {tuple(family.image_shape)}; expected that family and shape"
        )


def validation_scores(
    prior: Prior,
    path: str | Path,
    *,
    indices: Sequence[int] | None = None,
    batch_size: int = 8,
    sigma: float | None = None,
    seed: int = 0,
    keep_likelihoods: bool = False,
) -> tuple[str, Tensor, list[GaussianLikelihood]]:
    """The fit-test scores of the records of one validation file: ``(acceleration key, scores (N,), the
    likelihoods of the batches)`` — the last only with ``keep_likelihoods`` (they hold every record's data and
    operator; else ``[]``). ``indices`` selects records (default all)."""
    path = Path(path)
    data = MeasurementFile(path)
    _check_family(prior, data, path)
    indices = list(range(len(data))) if indices is None else list(indices)
    if not indices:
        raise ValueError(f"{path}: no records selected")
    generator = torch.Generator(device=prior.device).manual_seed(seed)
    scores, accelerations, liks = [], [], []
    for lik in _batches(data, indices, batch_size, sigma, prior.device):
        report = check_fit(prior, lik, generator=generator)
        if not bool(torch.isfinite(report.score).all()):
            raise ValueError(f"{path}: non-finite fit scores (NaN or infinite k-space or noise levels?)")
        scores.append(report.score)
        observed = torch.broadcast_to(lik.A.observed, lik.A.oshape).reshape(lik.A.batch_size, -1)
        accelerations.append((observed.shape[1] / observed.sum(dim=1).clamp_min(1)).cpu())
        if keep_likelihoods:
            liks.append(lik)
    return acceleration_key(data, torch.cat(accelerations)), torch.cat(scores), liks


def _best_l1_lam(liks: Sequence[GaussianLikelihood], truth: Tensor, lams: Sequence[float]) -> tuple[float, dict]:
    from ambient_science.operators.mri_recon import l1_wavelet

    mean_psnr = {}
    for lam in lams:
        values, i = [], 0
        for lik in liks:
            estimate = l1_wavelet(lik.A, lik.y, lam=lam).abs().pow(2).sum(dim=1).sqrt().cpu()
            for b in range(estimate.shape[0]):
                values.append(psnr(truth[i], estimate[b]))
                i += 1
        mean_psnr[lam] = sum(values) / len(values)
    return max(mean_psnr, key=mean_psnr.get), {f"{k:g}": round(v, 3) for k, v in mean_psnr.items()}


def calibrate_fit(
    prior: Prior,
    files: Sequence[str | Path],
    *,
    truths: Sequence[Tensor | None] | None = None,
    quantile: float = QUANTILE,
    margin: float = MARGIN,
    min_records: int = MIN_RECORDS,
    batch_size: int = 8,
    sigma: float | None = None,
    seed: int = 0,
    l1_lams: Sequence[float] = L1_LAMS,
) -> dict[str, Any]:
    """The ``"fit"`` entry of ``prior`` calibrated on validation ``files`` (one per acceleration): ``threshold``
    per acceleration key (``margin × quantile`` of the file's scores), the settings the scores used, the scores
    themselves, and, where ``truths`` gives a file's target magnitudes ``(N, H, W)`` (Cartesian MRI),
    ``fallback_l1_lam`` for that acceleration. Two files of the same acceleration are pooled.
    """
    if not files:
        raise ValueError("calibrate_fit needs at least one validation measurement file")
    if not 0.5 <= quantile < 1 or margin < 1:
        raise ValueError(f"need 0.5 <= quantile < 1 and margin >= 1, got {quantile} and {margin}")
    truths = list(truths) if truths is not None else [None] * len(files)
    if len(truths) != len(files):
        raise ValueError(f"{len(truths)} truth entries for {len(files)} files; expected one each (None for none)")
    if any(t is not None for t in truths) and (fit_scorer(prior) or prior).family.name != "cartesian_mri":
        raise ValueError("the L1-wavelet fallback (truth given) is for Cartesian MRI priors only")
    pooled: dict[str, list[Tensor]] = {}
    lams, curves = {}, {}
    for file, truth in zip(files, truths):
        key, scores, liks = validation_scores(
            prior, file, batch_size=batch_size, sigma=sigma, seed=seed, keep_likelihoods=truth is not None
        )
        pooled.setdefault(key, []).append(scores)
        if truth is not None:
            if truth.shape[0] != scores.shape[0]:
                raise ValueError(f"{file}: {scores.shape[0]} records but {truth.shape[0]} target images")
            lams[key], curves[key] = _best_l1_lam(liks, truth, l1_lams)
    thresholds, kept = {}, {}
    for key, parts in pooled.items():
        scores = torch.cat(parts)
        if scores.numel() < min_records:
            raise ValueError(
                f"{scores.numel()} validation records at acceleration {key}; at least {min_records} are needed for a "
                f"{quantile} quantile that is not simply their maximum (pass more records, or lower min_records)"
            )
        thresholds[key] = round(margin * calibrate_threshold(scores, quantile), 4)
        kept[key] = [round(float(s), 4) for s in scores]
    stored = (prior.config or {}).get("fit", {})
    entry = {
        **{k: stored.get(k, DEFAULT_FIT[k]) for k in ("levels", "repeats", "fraction", "num_draws")},
        "threshold": thresholds,
        "validation_scores": kept,
        "calibration": (
            f"ambient_science.pipelines.fit_calibration: {margin:g} x the {quantile:g} quantile of check_fit scores of "
            f"{', '.join(f'{len(v)} records at R = {k}' for k, v in kept.items())} from "
            f"{', '.join(Path(f).name for f in files)}"
        ),
    }
    if lams:
        entry["fallback_l1_lam"] = lams
        entry["fallback_l1_psnr"] = curves
    return entry


def nominal_keys(files: Sequence[str | Path]) -> list[str]:
    """The acceleration keys that :func:`calibrate_fit` will write for ``files``, where their families record a
    nominal acceleration (read from the files' headers, nothing scored); files without one are left out."""
    keys = []
    for f in files:
        data = MeasurementFile(f)
        if data.family_config.get("acceleration") is not None:
            keys.append(acceleration_key(data, torch.ones(1)))  # the nominal value; the tensor is not read
    return keys


def read_prior_card(prior_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(path, contents)`` of the ``prior.json`` of the exported prior in ``prior_dir`` (errors say what is
    expected: a training checkpoint's config is covered by its checksums and is never rewritten)."""
    path = Path(prior_dir) / "prior.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{prior_dir}: no prior.json; expected an exported prior (a training checkpoint's config is covered by "
            "its checksums: export it first with `ambient-science export-prior`, then calibrate the export)"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != PRIOR_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}; expected an exported prior ({PRIOR_FORMAT!r})")
    return path, meta


def merge_fit_entry(old: dict[str, Any] | None, entry: dict[str, Any], *, overwrite: bool, where: str) -> dict:
    """``old`` (a card's ``"fit"``) updated by ``entry``: thresholds and fallback λ of other accelerations kept; one
    of the same acceleration, or a single threshold for every acceleration, replaced only with ``overwrite``
    (else :class:`FileExistsError` naming ``where`` and the values)."""
    merged = dict(old or {})
    for field in ("threshold", "fallback_l1_lam"):
        new, before = entry.get(field), merged.get(field)
        if new is None:
            continue
        if before is not None and not isinstance(before, dict):  # one number for every acceleration
            if not overwrite:
                raise FileExistsError(
                    f"{where} already holds one fit {field} for every acceleration ({before}); pass overwrite=True "
                    "(--overwrite) to replace it by per-acceleration values"
                )
            before = {}
        before = dict(before or {})
        clash = sorted(set(before) & set(new))
        if clash and not overwrite:
            raise FileExistsError(
                f"{where} already holds a fit {field} for R = {', '.join(clash)} "
                f"({', '.join(f'{k}: {before[k]}' for k in clash)}); pass overwrite=True (--overwrite) to replace it"
            )
        merged[field] = {**before, **new}
    for field in ("fallback_l1_psnr", "validation_scores"):
        if field in entry:
            merged[field] = {**(merged.get(field) or {}), **entry[field]}
    for field in ("levels", "repeats", "fraction", "num_draws", "calibration"):
        if field in entry:
            merged[field] = entry[field]
    return merged


def write_fit_entry(prior_dir: str | Path, entry: dict[str, Any], *, overwrite: bool = False) -> dict[str, Any] | None:
    """Store ``entry`` as the ``"fit"`` entry of the exported prior in ``prior_dir`` (its ``prior.json``, replaced
    atomically) by :func:`merge_fit_entry`; returns the entry it replaced (``None`` if none). Only exported priors
    (``ambient-science export-prior``) are written."""
    path, meta = read_prior_card(prior_dir)
    old = meta.get("fit")
    meta["fit"] = merge_fit_entry(old, entry, overwrite=overwrite, where=str(path))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return old
