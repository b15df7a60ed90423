"""Black-hole imaging with an ambient prior (docs/design.md §4–§6, §8): the data side — the coverage law,
training records from visibilities, observations and their closure quantities, the held-out test set.

The pipeline, one module per concept:

- :mod:`ambient_science.pipelines.eht` (this module): data and records;
- :mod:`ambient_science.pipelines.eht_reconstruct`: the closure-quantity likelihood and posterior sampling
  through ``Ã_inf`` (DAPS, A-DPS), :func:`~ambient_science.pipelines.eht_reconstruct.reconstruct_closure`;
- :mod:`ambient_science.pipelines.eht_setup`: the sizes of a run (``examples/black_hole.py``) and its priors
  (shipped, given, or trained here from visibilities only);
- :mod:`ambient_science.pipelines.eht_eval`: the baselines (RML, dirty image), the metrics, the synthetic
  evaluation, imaging a UVFITS file, tables and figures.

Units. Images are ``(B, 1, N, N)`` in the library convention (row 0 north, column 0 east). The prior works
in *network units* ``x_net = s · x`` with ``x`` in Jy/pixel and ``s = image_scale(N) = N²/8`` (a 1 Jy source
spread over the whole field is 1/8 per pixel; a ring of 0.5–1 Jy then has a pixel std of about 0.3–0.5,
the ``σ_data = 0.5`` of EDM). Closure quantities do not see ``s``; only the total-flux term does.

Training records (:func:`ambient_records`): the measured visibilities ``y`` [Jy] of one coverage become
``y_net = s · w ⊙ y`` with the density-compensation weights ``w`` of
:func:`~ambient_science.operators.interferometry.density_weights` stored in ``params["weight"]``, so that an
``InterferometerFamily(normalize=True)`` rebuilds the operator ``y_net = A x_net`` whose ``AᴴA`` is close to a
projection (``x̃ = Ãᴴ Ã x_σ`` at image scale, not ``K N²`` times it). Nothing but ``y`` and the coverage
enters a record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ambient_science.datasets.black_hole_families import BroadImageConfig, sample_family_images, split_config
from ambient_science.datasets.black_holes import record_observation, simulate_measurements
from ambient_science.datasets.measurements import MeasurementDataset
from ambient_science.datasets.uvfits import Observation
from ambient_science.operators.closure import ClosureData
from ambient_science.operators.eht_noise import apply_station_gains, station_gains
from ambient_science.operators.interferometry import Interferometer, InterferometerFamily, density_weights

__all__ = [
    "BROAD_ARRAYS",
    "COVERAGE_LAW",
    "TEST_GAIN_AMP",
    "TRAIN_FLUX_JY",
    "TRAIN_GAINS",
    "HeldOut",
    "ambient_records",
    "broad_training_records",
    "closure_observation",
    "coverage_family",
    "held_out_observations",
    "image_scale",
    "test_operator",
    "training_records",
    "zero_baseline_flux",
]


def image_scale(npix: int) -> float:
    """``s``: network units per Jy/pixel for an ``N × N`` image (module docstring), ``N²/8``."""
    return npix**2 / 8.0


# -- training records ----------------------------------------------------------------------------------------

# The coverage law of the synthetic training and test sets: EHT 2017 stations, a 10-s integration every 20 min
# (Earth rotation moves a baseline by less than a Fourier cell of 1/128 µas meanwhile), 4-12 h windows, 15 %
# of stations absent; the training records keep small residual station gains (5 % amplitude, 3° phase).
COVERAGE_LAW: dict[str, Any] = dict(
    array="eht2017", tadv_s=1200.0, tint_s=10.0, duration_range_hr=(4.0, 12.0), p_station_drop=0.15
)
TRAIN_GAINS: dict[str, Any] = dict(gain_amp_std=0.05, gain_phase="gaussian", gain_phase_std_rad=0.05)
TEST_GAIN_AMP = 0.1  # held-out data: 10 % amplitude gains and uniformly random station phases


def coverage_family(npix: int, fov_uas: float, *, normalize: bool, **overrides: Any) -> InterferometerFamily:
    """The :class:`~ambient_science.operators.interferometry.InterferometerFamily` of :data:`COVERAGE_LAW`
    (``normalize=True``: the density-weighted family of the training records)."""
    return InterferometerFamily(npix=npix, fov_uas=fov_uas, normalize=normalize, **{**COVERAGE_LAW, **overrides})


def training_records(n: int, npix: int, fov_uas: float, *, seed: int, min_vis: int = 10) -> MeasurementDataset:
    """``n`` SYNTHETIC training records: black-hole-like images observed by random coverages of
    :data:`COVERAGE_LAW` with thermal noise and :data:`TRAIN_GAINS`, turned into records of the normalised
    family by :func:`ambient_records`. The images are discarded: a record holds visibilities and coverage.

    Returns a :class:`~ambient_science.datasets.measurements.MeasurementDataset` (its ``.family`` normalised).
    """
    family = coverage_family(npix, fov_uas, normalize=False)
    g = torch.Generator().manual_seed(seed)
    sim = simulate_measurements(family, n, generator=g, min_vis=min_vis, **TRAIN_GAINS)
    y, params, sigma_n = ambient_records(sim.y, sim.params, npix, family.pixel_size)
    del sim  # the images are gone: only the records go on
    return MeasurementDataset(y, params, coverage_family(npix, fov_uas, normalize=True), sigma_n)


# The broad 64 × 64 prior (black-hole-eht-64): coverages of the EHT 2017 array and of the larger eht2025 array
# (half the records each), the same cadence, windows and gains as COVERAGE_LAW; every record normalised to the
# training flux (module docstring of ambient_science.datasets.black_hole_families for the images).
BROAD_ARRAYS: tuple[str, ...] = ("eht2017", "eht2025")
TRAIN_FLUX_JY = 1.0


def _remap_stations(params: dict[str, Tensor], src: InterferometerFamily, dst: InterferometerFamily) -> None:
    """Station indices ``t1``, ``t2`` of ``src``'s table -> ``dst``'s (by name), in place."""
    names = list(dst.table.names)
    missing = [s for s in src.table.names if s not in names]
    if missing:
        raise ValueError(f"broad_training_records: stations {missing} are not in the {dst.table.names} table")
    lut = torch.tensor([names.index(s) for s in src.table.names])
    obs = params["observed"] > 0
    for k in ("t1", "t2"):
        params[k] = torch.where(obs, lut[params[k].clamp(0, len(lut) - 1)], torch.zeros_like(params[k]))


def broad_training_records(
    n: int,
    npix: int = 64,
    fov_uas: float = 160.0,
    *,
    seed: int,
    split: str = "both",
    arrays: Sequence[str] = BROAD_ARRAYS,
    train_flux_jy: float = TRAIN_FLUX_JY,
    image_config: BroadImageConfig | None = None,
    min_vis: int = 10,
    chunk: int = 1024,
) -> MeasurementDataset:
    """``n`` SYNTHETIC training records of the broad generator (``split_config(split, "train")``: by default
    without the held-out ``texture`` and ``double_ring`` families), observed by random coverages of ``arrays``
    (in turn, ``n / len(arrays)`` each) with thermal noise and :data:`TRAIN_GAINS`; each record's visibilities
    and sigmas scaled by ``train_flux_jy / F`` with ``F`` its total (zero-baseline) flux, then made a record of
    the normalised family of the last (largest) array by :func:`ambient_records`. The images are discarded.
    """
    if n < len(arrays):
        raise ValueError(f"broad_training_records: need n >= {len(arrays)} (one record per array), got {n}")
    base = image_config or BroadImageConfig(npix=npix, fov_uas=fov_uas)
    cfg = split_config(split, "train", base) if split != "none" else base
    fams = [coverage_family(npix, fov_uas, normalize=False, array=a) for a in arrays]
    target = fams[-1]
    K = max(f.max_vis for f in fams)
    g = torch.Generator().manual_seed(seed)
    ys, sig_n, params = [], [], {}
    done = 0
    for j, fam in enumerate(fams):
        n_j = (n - done) // (len(fams) - j)
        for start in range(0, n_j, chunk):
            b = min(chunk, n_j - start)
            x, p = sample_family_images(b, cfg, generator=g)
            sim = simulate_measurements(fam, b, generator=g, images=x, min_vis=min_vis, **TRAIN_GAINS)
            scale = (train_flux_jy / p["flux_jy"]).reshape(-1, 1)
            prm = dict(sim.params)
            prm["sigma"] = torch.where(prm["observed"] > 0, prm["sigma"] * scale, prm["sigma"])
            if fam is not target:
                _remap_stations(prm, fam, target)
            pad = K - sim.y.shape[1]
            prm = {k: torch.nn.functional.pad(v, (0, 0, 0, pad) if v.ndim == 3 else (0, pad)) for k, v in prm.items()}
            prm["sigma"][:, K - pad :] = 1.0
            y_net, prm, sn = ambient_records(
                torch.nn.functional.pad(sim.y * scale, (0, pad)), prm, npix, target.pixel_size
            )
            ys.append(y_net)
            sig_n.append(sn)
            for k, v in prm.items():
                params.setdefault(k, []).append(v)
            print(f"  records: {done + start + b}/{n} ({fam.table.names[0]}.. {len(fam.table)} stations)", flush=True)
        done += n_j
    family = coverage_family(npix, fov_uas, normalize=True, array=arrays[-1], max_vis=K)
    return MeasurementDataset(torch.cat(ys), {k: torch.cat(v) for k, v in params.items()}, family, torch.cat(sig_n))


def ambient_records(
    y: Tensor, params: dict[str, Tensor], npix: int, pixel_size: float
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Measured visibilities -> records of the normalised family (module docstring).

    ``y_net = s w ⊙ y``, ``params["weight"] = w``; the noise of ``y_net`` has std ``s w σ``, summarised per
    record by its RMS over observed entries (``sigma_n``, the image-domain noise of a normalised operator).

    Shape: ``y (n, K)`` complex [Jy], ``params`` each ``(n, ...)`` -> ``y_net (n, K)``, params, ``sigma_n (n,)``.
    """
    s = image_scale(npix)
    obs = params["observed"].to(torch.float32)
    w = density_weights(params["uv"], obs, npix, pixel_size)
    y_net = (y * (s * w)).to(torch.complex64)
    sig = params["sigma"] * (s * w)
    sigma_n = ((sig**2 * obs).sum(1) / obs.sum(1).clamp_min(1.0)).sqrt()
    return y_net, {**params, "weight": w}, sigma_n.to(torch.float32)


# -- observations ------------------------------------------------------------------------------------------


def closure_observation(obs: Observation) -> ClosureData:
    """Minimal closure phases and (debiased) log closure amplitudes of an observation (ehtim's conventions)."""
    return ClosureData.from_observation(obs)


def zero_baseline_flux(obs: Observation, *, max_uvdist: float = 1e8) -> float | None:
    """Total flux [Jy] from the intra-site baselines: median amplitude of baselines shorter than ``max_uvdist``
    wavelengths (ALMA–APEX, SMA–JCMT), or ``None`` when the observation has none."""
    short = np.hypot(obs.u, obs.v) < max_uvdist
    return float(np.median(np.abs(obs.vis[short]))) if short.any() else None


def test_operator(
    observations: Sequence[Observation], npix: int, pixel_size: float, *, repeat: int = 1
) -> Interferometer:
    """The observations' coverages as one batched, density-weighted operator (batch ``repeat · T``, sample
    ``s`` of observation ``t`` at ``s·T + t``): the ``A_test`` of ``inference_operator="test"``.

    Station indices, times and sigmas travel as metadata (the family's further corruption drops stations,
    baselines and time blocks of it).
    """
    T, K = len(observations), max(len(o) for o in observations)
    uv = torch.zeros(T, K, 2, dtype=torch.float64)
    meta = {k: torch.zeros(T, K) for k in ("observed", "time", "sigma")}
    t1, t2 = torch.zeros(T, K, dtype=torch.int64), torch.zeros(T, K, dtype=torch.int64)
    meta["sigma"] += 1.0
    for i, o in enumerate(observations):
        k = len(o)
        uv[i, :k, 0], uv[i, :k, 1] = torch.as_tensor(o.u), torch.as_tensor(o.v)
        meta["observed"][i, :k] = 1.0
        meta["time"][i, :k] = torch.as_tensor(o.time - o.time.min())
        meta["sigma"][i, :k] = torch.as_tensor(o.sigma, dtype=torch.float32)
        t1[i, :k], t2[i, :k] = torch.as_tensor(o.t1), torch.as_tensor(o.t2)

    def rep(t: Tensor) -> Tensor:
        return t.repeat(repeat, *([1] * (t.ndim - 1)))

    obs_f = rep(meta["observed"])
    uv = rep(uv)
    return Interferometer(
        uv,
        npix,
        pixel_size,
        obs_f,
        t1=rep(t1),
        t2=rep(t2),
        time=rep(meta["time"]).double(),
        sigma=rep(meta["sigma"]),
        weight=density_weights(uv, obs_f, npix, pixel_size),
        method="dft",
    )


# -- held-out test set -------------------------------------------------------------------------------------


@dataclass
class HeldOut:
    """One held-out observation: the data with gains (imaged), the gain-free data (dirty image), the truth.

    Attributes:
        obs: the observation with station gains (:data:`TEST_GAIN_AMP`, random phases): what is imaged.
        obs_calibrated: the same without gains (the dirty image's optimistic reference).
        truth: ``(N, N)`` float64 image [Jy/pixel], for evaluation only.
        total_flux: the truth's total flux [Jy] (the intra-site flux, assumed known as in EHT imaging).
    """

    obs: Observation
    obs_calibrated: Observation
    truth: np.ndarray
    total_flux: float


def held_out_observations(n: int, npix: int, fov_uas: float, *, seed: int) -> list[HeldOut]:
    """``n`` held-out synthetic observations of :data:`COVERAGE_LAW` with thermal noise, 10 % amplitude gains
    and uniformly random station phases (to which closure quantities are blind).

    ``seed`` is the run's seed: images and coverages are drawn from ``seed + 1_000_003`` (disjoint from the
    training records of :func:`training_records` with the same seed), the gains from ``seed + 7``; at least
    50 visibilities per observation.
    """
    family = coverage_family(npix, fov_uas, normalize=False)
    g = torch.Generator().manual_seed(seed + 1_000_003)
    sim = simulate_measurements(family, n, generator=g, min_vis=50)
    rng = np.random.default_rng(seed + 7)
    cases = []
    for i in range(n):
        obs = record_observation(sim.y[i], {k: v[i] for k, v in sim.params.items()}, family)
        gains = station_gains(len(np.unique(obs.time)), len(obs.stations), rng, amp_std=TEST_GAIN_AMP)
        vis, sigma = apply_station_gains(obs.vis, obs.sigma, obs.time, obs.t1, obs.t2, gains)
        truth = sim.truth[i, 0].numpy().astype(np.float64)
        cases.append(HeldOut(dataclasses.replace(obs, vis=vis, sigma=sigma), obs, truth, float(truth.sum())))
    return cases
