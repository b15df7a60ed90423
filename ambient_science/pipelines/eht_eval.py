"""Black-hole evaluation (docs/design.md §8): the classical baselines (RML, dirty image), the metrics of one image,
every method on the held-out synthetic observations (:func:`evaluate_synthetic`), imaging a UVFITS file
(:func:`image_uvfits`, e.g. the EHT 2017 M87* data), and the tables and figures of ``examples/black_hole.py``.

Figures put east on the left, as on the sky (column 0 of an image is east). ``matplotlib`` is imported by the
functions that draw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ambient_science.datasets.fits_image import SkyImage, write_fits_image
from ambient_science.datasets.uvfits import Observation, average, read_uvfits
from ambient_science.metrics.eht import RingFit, blurred_psnr, closure_chi2, nxcorr, psnr_shifted, ring_fit
from ambient_science.operators.closure import ClosureData
from ambient_science.operators.interferometry import Interferometer, density_weights
from ambient_science.operators.rml import rml_image
from ambient_science.pipelines import eht_calibration as calibration
from ambient_science.pipelines.eht import HeldOut, closure_observation, zero_baseline_flux
from ambient_science.pipelines.eht_likelihood import with_systematic
from ambient_science.pipelines.eht_reconstruct import ClosurePosterior, reconstruct_closure
from ambient_science.pipelines.eht_setup import Setup
from ambient_science.sampling.prior import Prior

__all__ = [
    "METRIC_KEYS",
    "dirty_image",
    "evaluate_synthetic",
    "fit_intervals",
    "image_metrics",
    "image_uvfits",
    "plot_synthetic",
    "plot_uvfits",
    "print_table",
    "print_uvfits_summary",
    "ring_intervals",
    "ring_modes",
    "rml_baseline",
    "sample_stats",
    "write_sample_cube",
]

METRIC_KEYS = ("psnr", "blur_psnr", "nxcorr", "chi2_cphase", "chi2_logcamp")


# -- baselines ---------------------------------------------------------------------------------------------


def dirty_image(obs: Observation, npix: int, pixel_size: float, total_flux: float) -> np.ndarray:
    """The uniformly weighted dirty image (:func:`~ambient_science.operators.interferometry.density_weights`),
    negative values clipped, scaled to ``total_flux`` [Jy/pixel], ``(N, N)``."""
    uv = torch.as_tensor(np.stack([obs.u, obs.v], -1))[None]
    A = Interferometer(uv, npix, pixel_size, method="dft")
    w = density_weights(uv, torch.ones(1, uv.shape[1]), npix, pixel_size)
    img = A.dirty_image(torch.as_tensor(obs.vis)[None], weights=w.double() ** 2)[0, 0]
    img = img.clamp_min(0.0).numpy()
    return img * (total_flux / max(float(img.sum()), 1e-30))


def rml_baseline(
    obs: Observation, npix: int, pixel_size: float, total_flux: float, *, closure: ClosureData | None = None, **kw
) -> np.ndarray:
    """Regularised maximum likelihood from closure quantities (:func:`~ambient_science.operators.rml.rml_image`)."""
    return rml_image(obs, npix, pixel_size, total_flux=total_flux, closure=closure, **kw)


# -- metrics -----------------------------------------------------------------------------------------------


def image_metrics(
    estimate: Any,
    truth: Any | None,
    obs: Observation,
    pixel_size: float,
    *,
    blur_fwhm_uas: float,
    closure: ClosureData | None = None,
) -> dict[str, float]:
    """PSNR after the best shift, blurred PSNR, nxcorr (after the best shift) and closure χ² of one image.

    Without ``truth`` only the closure χ² are returned.
    """
    est = np.asarray(estimate, dtype=np.float64).reshape(estimate.shape[-2:])
    out: dict[str, float] = {}
    if truth is not None:
        tru = np.asarray(truth, dtype=np.float64).reshape(est.shape)
        out["psnr"] = psnr_shifted(est, tru)
        out["blur_psnr"] = blurred_psnr(est, tru, psize=pixel_size, fwhm_uas=blur_fwhm_uas)
        out["nxcorr"] = nxcorr(est, tru, shift=True)
    chi2 = closure_chi2(est, obs, pixel_size, closure_data=closure)
    out["chi2_cphase"], out["chi2_logcamp"] = chi2["cphase"], chi2["logcamp"]
    return out


def sample_stats(post: ClosurePosterior) -> dict[str, float]:
    """How many posterior samples fitted the data, and their closure χ² (means over samples and observations)."""
    kept = post.kept.float()
    extra = {}
    if post.fits is not None:
        extra = {
            "fit_fraction": float(post.fits.float().mean()),
            "fit_range": list(post.fit_range),
            "speckle_pixels_mean": float(post.speckles.float().mean()),
            "speckle_pixels_removed_mean": float(post.speckles_removed.float().mean()),
            "prior_flux_jy": post.prior_flux,
        }
    return {
        **extra,
        "kept_fraction": float(kept.mean()),
        "chi2_cphase_kept": float((post.chi2_cphase * kept).sum() / kept.sum()),
        "chi2_logcamp_kept": float((torch.nan_to_num(post.chi2_logcamp) * kept).sum() / kept.sum()),
        "chi2_cphase_all": float(post.chi2_cphase.mean()),
    }


# -- the synthetic evaluation --------------------------------------------------------------------------------


def evaluate_synthetic(
    priors: Mapping[str, Prior], setup: Setup, cases: Sequence[HeldOut], seed: int
) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """Every method on every held-out observation: metrics (per image and means) and the images.

    ``priors`` maps a label (``ambient``, ``ambient_this_run``) to a prior; its rows are ``ambient_daps`` and
    ``ambient_dps`` with the label's suffix (``ambient_daps_this_run``, ...); then ``rml`` and ``dirty``.
    Every prior samples with the same draws (a generator seeded ``seed + 11``). Returns
    ``({"test": means, "blur_fwhm_uas", "samples": sample_stats per row, "per_image"}, images)``.
    """
    psize = next(iter(priors.values())).family.pixel_size
    closures = [closure_observation(c.obs) for c in cases]
    flux = [c.total_flux for c in cases]
    obs = [c.obs for c in cases]
    images: dict[str, list[np.ndarray]] = {}
    samples = {}
    for label, prior in priors.items():
        suffix = label.removeprefix("ambient")
        g = torch.Generator(device=prior.device).manual_seed(seed + 11)  # the same draws for every prior
        daps = reconstruct_closure(
            prior, obs, flux, num_samples=setup.num_samples, generator=g, settings=setup.daps, closures=closures
        )
        images[f"ambient_daps{suffix}"] = list(daps.estimate[:, 0].cpu().numpy())
        images[f"ambient_daps_std{suffix}"] = list(daps.std[:, 0].cpu().numpy())
        dps = reconstruct_closure(
            prior, obs, flux, num_samples=setup.dps_samples, generator=g, settings=setup.dps, closures=closures
        )
        images[f"ambient_dps{suffix}"] = list(dps.estimate[:, 0].cpu().numpy())
        samples[f"ambient_daps{suffix}"], samples[f"ambient_dps{suffix}"] = sample_stats(daps), sample_stats(dps)
    images["rml"] = [
        rml_baseline(
            c.obs,
            setup.npix,
            psize,
            c.total_flux,
            closure=cd,
            n_rounds=setup.rml_rounds,
            n_iter=setup.rml_iter,
            target_chi2=setup.rml_target,
            max_reweight=setup.rml_reweight,
        )
        for c, cd in tqdm(list(zip(cases, closures, strict=True)), desc="rml", unit="obs")
    ]
    images["dirty"] = [dirty_image(c.obs_calibrated, setup.npix, psize, c.total_flux) for c in cases]
    methods = [m for m in images if "_std" not in m]
    per_image = {m: [] for m in methods}
    for m in methods:
        for i, c in enumerate(cases):
            per_image[m].append(
                image_metrics(
                    images[m][i], c.truth, c.obs, psize, blur_fwhm_uas=setup.blur_fwhm_uas, closure=closures[i]
                )
            )
    means = {m: {k: float(np.nanmean([r[k] for r in per_image[m]])) for k in METRIC_KEYS} for m in methods}
    metrics = {"test": means, "blur_fwhm_uas": setup.blur_fwhm_uas, "samples": samples, "per_image": per_image}
    return metrics, images


def print_table(metrics: dict) -> None:
    """The mean metrics of :func:`evaluate_synthetic`, one row per method."""
    print(f"{'method':24s}" + "".join(f"{k:>14s}" for k in METRIC_KEYS))
    for m, row in metrics["test"].items():
        print(f"{m:24s}" + "".join(f"{row[k]:14.3f}" for k in METRIC_KEYS))


def print_uvfits_summary(metrics: dict) -> None:
    """What :func:`image_uvfits` found, in a few lines: the point estimate's ring, the samples' fit, the diameter's
    modes and the kept samples' (raw and calibrated) 68 % intervals."""
    s, iv = metrics["samples"], metrics["ring_intervals_kept_samples"]
    print(
        f"{metrics['source'] or metrics['uvfits']}: closure chi2 cphase {metrics['chi2_cphase']:.2f}, "
        f"logcamp {metrics['chi2_logcamp']:.2f}; {s['fit_fraction']:.0%} of {metrics['num_samples']} samples fit"
    )
    print(f"ring of the posterior mean: diameter {metrics['ring_diameter_uas']:.1f} µas, width "
          f"{metrics['ring_width_uas']:.1f} µas, PA {metrics['ring_pa_deg']:.0f}° ({metrics['brightest_half']} "
          "brighter)")  # fmt: skip
    for m in metrics["ring_modes_kept_samples"]:
        d, pa = m["diameter_uas"], m["pa_deg"]
        print(
            f"  mode of {m['fraction']:.0%} of the kept samples: diameter {d['median']:.1f} µas "
            f"(68 % {d['lo68']:.1f}-{d['hi68']:.1f}), PA {pa['median']:.0f}° (68 % {pa['lo68']:.0f}-{pa['hi68']:.0f})"
        )
    for q, unit in (("diameter_uas", "µas"), ("pa_deg", "°")):
        line = f"  {q.split('_')[0]}, all kept samples: 68 % {iv[q]['lo68']:.1f}-{iv[q]['hi68']:.1f} {unit}"
        cal = metrics["ring_intervals_calibrated"]
        if isinstance(cal, dict) and q in cal:
            line += f", calibrated {cal[q]['lo68']:.1f}-{cal[q]['hi68']:.1f}"
        print(line)


def _circular_interval(pa_deg: np.ndarray, q: float) -> tuple[float, float, float]:
    """(centre, lo, hi) of the central ``q`` interval of angles [deg] around their circular mean."""
    c = float(np.degrees(np.angle(np.exp(1j * np.radians(pa_deg)).mean())) % 360)
    dev = (pa_deg - c + 180.0) % 360.0 - 180.0
    lo, hi = np.quantile(dev, [(1 - q) / 2, (1 + q) / 2])
    return c, c + float(lo), c + float(hi)


def ring_intervals(samples: np.ndarray, pixel_size: float, **ring_kw: Any) -> dict[str, dict[str, float]]:
    """Ring diameter, width and brightness PA of every sample ``(S, N, N)`` (:func:`ring_fit`) and their medians
    with 68 % and 95 % central intervals (PA: around the circular mean, in degrees east of north)."""
    return fit_intervals([ring_fit(s, pixel_size, **ring_kw) for s in samples])


def fit_intervals(fits: Sequence[Any]) -> dict[str, dict[str, float]]:
    """:func:`ring_intervals` of ring fits already made (objects with ``diameter_uas``, ``width_uas``, ``pa_deg``)."""
    out: dict[str, dict[str, float]] = {}
    for key in ("diameter_uas", "width_uas"):
        v = np.array([getattr(f, key) for f in fits], dtype=np.float64)
        q = np.quantile(v, [0.025, 0.16, 0.5, 0.84, 0.975])
        out[key] = {"median": q[2], "lo68": q[1], "hi68": q[3], "lo95": q[0], "hi95": q[4], "std": float(v.std())}
    pa = np.array([f.pa_deg for f in fits], dtype=np.float64)
    c, lo68, hi68 = _circular_interval(pa, 0.68)
    _, lo95, hi95 = _circular_interval(pa, 0.95)
    out["pa_deg"] = {"median": c, "lo68": lo68, "hi68": hi68, "lo95": lo95, "hi95": hi95}
    return {k: {kk: float(vv) for kk, vv in v.items()} for k, v in out.items()}


def ring_modes(
    fits: Sequence[Any], pixel_size: float, *, min_fraction: float = 0.1, min_bic_gain: float = 10.0
) -> list[dict[str, Any]]:
    """The samples' ring fits grouped by the modes of their diameter: one group, or two when a split is strongly
    preferred; each with its ``fraction`` of the fits, ``count`` and :func:`fit_intervals`. Largest first.

    A posterior over ring images can put some samples in a second, compact mode (real M87 2017: 4 to 9 of 32
    samples near 21 µas beside the ring near 40 µas, depending on the prior); a median and a central interval over
    both then describe neither. For every split of the sorted diameters into a lower and an
    upper group, the two-component Gaussian mixture with those groups' weights, means and standard deviations
    (floored at half a pixel, ``pixel_size`` µas) is scored; the best one is compared with one Gaussian by BIC,
    and two modes are reported when it lowers the BIC by at least ``min_bic_gain`` (strong evidence) and its
    smaller group holds at least ``min_fraction`` of the fits, else one.
    """
    d = np.array([f.diameter_uas for f in fits], dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(d))
    order = ok[np.argsort(d[ok])]
    d, n = d[order], len(order)
    floor = 0.5 * pixel_size

    def loglik(groups: list[np.ndarray]) -> float:
        total = 0.0
        for gr in groups:
            sd = max(float(gr.std()), floor)
            z = (gr - gr.mean()) / sd
            total += float(np.sum(np.log(len(gr) / n) - 0.5 * z**2 - np.log(sd * np.sqrt(2 * np.pi))))
        return total

    def mode(idx: np.ndarray) -> dict[str, Any]:
        return {"fraction": len(idx) / n, "count": len(idx), **fit_intervals([fits[i] for i in idx])}

    if n == 0:
        return []
    best, split = -np.inf, None
    for k in range(1, n):  # the best split of all; then its smaller group must be a mode's worth of fits
        ll = loglik([d[:k], d[k:]])
        if ll > best:
            best, split = ll, k
    gain = (-2 * loglik([d]) + 2 * np.log(n)) - (-2 * best + 5 * np.log(n))
    if split is None or min(split, n - split) < min_fraction * n or gain < min_bic_gain:
        return [mode(order)]
    return sorted([mode(order[:split]), mode(order[split:])], key=lambda m: -m["fraction"])


def write_sample_cube(path: Path, samples: np.ndarray, sky: SkyImage, table: Mapping[str, Sequence[float]]) -> Path:
    """Posterior samples ``(S, N, N)`` [Jy/pixel] as one FITS cube (axis 3 ``SAMPLE``; the sky axes of
    :func:`~ambient_science.datasets.fits_image.write_fits_image`) plus a binary table ``SAMPLES`` with one row per
    sample (``table``: e.g. closure χ², fit flag, ring diameter)."""
    from astropy.io import fits

    write_fits_image(path, sky, overwrite=True)
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
    primary = fits.PrimaryHDU(np.ascontiguousarray(samples[:, ::-1, :]), header=header)
    for key, value in (("CTYPE3", "SAMPLE"), ("CRPIX3", 1.0), ("CRVAL3", 1.0), ("CDELT3", 1.0)):
        primary.header[key] = value
    cols = [fits.Column(name=k, format="D", array=np.asarray(v, dtype=np.float64)) for k, v in table.items()]
    hdul = fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="SAMPLES")])
    hdul.writeto(path, overwrite=True)
    return path


# -- real data -----------------------------------------------------------------------------------------------


def image_uvfits(
    prior: Prior,
    setup: Setup,
    uvfits: Path,
    out_dir: Path,
    *,
    seed: int,
    total_flux: float | None = None,
    source: str = "",
    systematic: float = 0.0,
) -> dict:
    """Image a UVFITS file: Stokes I, scan averages, closure quantities, DAPS (``setup.daps``,
    ``setup.num_samples`` samples, a generator seeded ``seed + 13``) through the prior, at the prior's training
    flux (:func:`~ambient_science.pipelines.eht_likelihood.training_flux`).

    ``systematic``: a fractional systematic floor added to every visibility sigma (as EHT imaging does for real
    data; 0: none). ``total_flux`` [Jy] defaults to the median intra-site amplitude (:func:`zero_baseline_flux`);
    ``source``
    names the prior in the metrics. Writes ``image.fits``, ``samples.fits`` (every posterior sample, a cube, with a
    table of their χ², fit flags and ring fits), ``image.png`` and ``metrics.json`` (closure χ², ring diameter
    and width, brightness position angle of the point estimate; medians and 68 %/95 % intervals over the kept
    samples; posterior-sample statistics) into ``out_dir`` and returns the metrics.
    """
    obs = average(read_uvfits(uvfits))  # coherent scan averages
    flux = total_flux or zero_baseline_flux(obs)
    if flux is None:
        raise ValueError(f"image_uvfits: {uvfits} has no intra-site baseline to give the total flux: pass total_flux")
    closure = closure_observation(obs)
    psize = prior.family.pixel_size
    g = torch.Generator(device=prior.device).manual_seed(seed + 13)
    if systematic > 0:  # the χ² of the contract and of the metrics are then against the inflated sigmas
        obs = with_systematic(obs, systematic)
        closure = closure_observation(obs)
    post = reconstruct_closure(
        prior, [obs], [flux], num_samples=setup.num_samples, generator=g, settings=setup.daps, closures=[closure]
    )
    image, std = post.estimate[0, 0].cpu().numpy(), post.std[0, 0].cpu().numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    sky = SkyImage(
        image, psize, ra_deg=obs.ra_deg, dec_deg=obs.dec_deg, freq_hz=obs.freq_hz, mjd=obs.mjd, source=obs.source
    )
    write_fits_image(out_dir / "image.fits", sky, overwrite=True)
    ring = ring_fit(image, psize)
    chi2 = image_metrics(image, None, obs, psize, blur_fwhm_uas=setup.blur_fwhm_uas, closure=closure)
    north_uas = (setup.npix / 2 - 0.5 - np.arange(setup.npix)) * (setup.fov_uas / setup.npix)  # per row
    south_fraction = float(image[north_uas < ring.center_y_uas].sum() / image.sum())
    samples = post.samples[:, 0, 0].cpu().numpy()
    kept = post.kept[:, 0].cpu().numpy()
    rows = [ring_fit(x, psize) for x in samples]  # every sample's ring, fitted once
    kept_rows = [r for r, k in zip(rows, kept, strict=True) if k]
    intervals = fit_intervals(kept_rows)
    card_calibration = ((prior.config or {}).get("card") or {}).get("calibration")
    factors = (card_calibration or {}).get("factors") or {}
    calibrated = {q: calibration.apply(intervals[q], float(f), q) for q, f in factors.items() if q in intervals}
    modes = ring_modes(kept_rows, psize)
    write_sample_cube(out_dir / "samples.fits", samples, sky, {
        "chi2_cphase": post.chi2_cphase[:, 0].cpu().numpy(), "chi2_logcamp": post.chi2_logcamp[:, 0].cpu().numpy(),
        "fits": post.fits[:, 0].cpu().numpy().astype(float), "kept": kept.astype(float),
        "diameter_uas": [r.diameter_uas for r in rows], "width_uas": [r.width_uas for r in rows],
        "pa_deg": [r.pa_deg for r in rows]})  # fmt: skip
    metrics = {
        "uvfits": str(uvfits),
        "source": obs.source,
        "n_vis_scan_averaged": len(obs),
        "n_cphase": closure.index.n_cphase,
        "n_logcamp": closure.index.n_logcamp,
        "total_flux_jy": flux,
        "systematic_floor": systematic,
        **chi2,
        "ring_diameter_uas": ring.diameter_uas,
        "ring_width_uas": ring.width_uas,
        "ring_pa_deg": ring.pa_deg,
        "brightest_half": "south" if 90.0 < ring.pa_deg < 270.0 else "north",
        "south_flux_fraction": south_fraction,
        "num_samples": setup.num_samples,
        "inference_operator": setup.daps.inference_operator,
        "samples": sample_stats(post),
        "ring_intervals_kept_samples": intervals,
        "ring_modes_kept_samples": modes,
        "ring_intervals_calibrated": calibrated or "the prior's card has no calibration factors",
        "calibration": card_calibration,
        "samples_file": str(out_dir / "samples.fits"),
        "prior": source,
    }
    plot_uvfits(image, std, ring, setup.fov_uas, obs.source or uvfits.stem, out_dir / "image.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# -- figures -------------------------------------------------------------------------------------------------


def _show(ax, img: np.ndarray, fov_uas: float, title: str, **kw) -> None:
    h = fov_uas / 2  # column 0 is east: RA offset +h on the left (East left, as on the sky)
    ax.imshow(img, extent=(h, -h, -h, h), origin="upper", cmap=kw.pop("cmap", "afmhot"), **kw)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("Δα [µas]", fontsize=7)
    ax.set_ylabel("Δδ [µas]", fontsize=7)
    ax.tick_params(labelsize=6)


def plot_synthetic(
    images: Mapping[str, list[np.ndarray]], cases: Sequence[HeldOut], fov_uas: float, path: Path, rows: int = 4
) -> None:
    """The first ``rows`` held-out observations: truth, dirty, RML, A-DPS, DAPS, DAPS std (and DAPS with the
    prior of this run when there is another), as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "ambient_daps" not in images:  # no shipped prior: the in-run prior fills the ambient columns
        images = {k.removesuffix("_this_run"): v for k, v in images.items()}
    main = "shipped prior" if "ambient_daps_this_run" in images else "prior"
    cols = [
        ("truth", None),
        ("dirty", "dirty"),
        ("RML", "rml"),
        (f"A-DPS ({main})", "ambient_dps"),
        (f"DAPS ({main})", "ambient_daps"),
        ("DAPS posterior std", "ambient_daps_std"),
    ]
    if "ambient_daps_this_run" in images:
        cols.append(("DAPS (prior of this run)", "ambient_daps_this_run"))
    rows = min(rows, len(cases))
    fig, axes = plt.subplots(rows, len(cols), figsize=(2.1 * len(cols), 2.1 * rows), squeeze=False)
    for r in range(rows):
        vmax = float(cases[r].truth.max())
        for c, (title, key) in enumerate(cols):
            img = cases[r].truth if key is None else images[key][r]
            std = key == "ambient_daps_std"
            _show(
                axes[r, c],
                img,
                fov_uas,
                title,
                vmin=0,
                vmax=None if std else vmax,
                cmap="viridis" if std else "afmhot",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_uvfits(image: np.ndarray, std: np.ndarray, ring: RingFit, fov_uas: float, name: str, path: Path) -> None:
    """An image from a UVFITS file (with its ring diameter and position angle) and its posterior std, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    _show(
        axes[0],
        image,
        fov_uas,
        f"{name}: DAPS (d = {ring.diameter_uas:.1f} µas, PA = {ring.pa_deg:.0f}°)",
        vmin=0,
    )
    _show(axes[1], std, fov_uas, "posterior std", vmin=0, cmap="viridis")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
