"""Visibility measurement records of synthetic black holes, for ambient training (docs/design.md §7).

:func:`simulate_measurements`, :class:`BlackHoleVisibilityDataset`: operators ``A`` drawn from an
``InterferometerFamily`` (random EHT-like coverages, per-visibility thermal ``sigma`` from the station SEFDs),
``y = A x + n`` with ``n = σ (ε_re + i ε_im)`` on observed entries, and optionally station gains
``y_12 -> g_1 conj(g_2) y_12`` (``operators.eht_noise``), of the images of
:mod:`ambient_science.datasets.black_hole_images` (or given ones). Records hold ``y``, the operator's
``params`` (``uv``, ``observed``, ``t1``, ``t2``, ``time``, ``sigma``) and ``sigma_n``; never the image,
which is returned apart, for evaluation only. :func:`record_observation` turns one record into an
:class:`~ambient_science.datasets.uvfits.Observation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ambient_science.datasets.black_hole_images import BlackHoleImageConfig, sample_black_hole_images
from ambient_science.datasets.measurements import MeasurementDataset, save_measurements
from ambient_science.datasets.uvfits import Observation
from ambient_science.operators.eht_noise import apply_station_gains, station_gains
from ambient_science.operators.interferometry import InterferometerFamily

__all__ = [
    "BlackHoleVisibilityDataset",
    "SimulatedMeasurements",
    "record_observation",
    "simulate_measurements",
]


@dataclass
class SimulatedMeasurements:
    """Simulated visibility measurements: what ambient training may see, and (apart) the truth.

    Attributes:
        y: ``(n, K)`` complex64 visibilities [Jy], zero where not observed.
        params: the operators' parameters, each ``(n, ...)`` (``family.make(params)`` rebuilds them);
            ``params["sigma"]`` ``(n, K)`` is the per-visibility noise std [Jy] (1 on padding).
        sigma_n: ``(n,)`` float32 summary noise level: the RMS of ``sigma`` over observed entries when
            noise was added, else 0. Interferometric noise is not white, so the exact law is ``params["sigma"]``.
        truth: ``(n, 1, N, N)`` float32 images [Jy/pixel], for evaluation only (never saved with the records).
        truth_params: the image parameters of :func:`sample_black_hole_images` (empty for given images).
    """

    y: Tensor
    params: dict[str, Tensor]
    sigma_n: Tensor
    truth: Tensor
    truth_params: dict[str, Tensor]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def dataset(self, family: InterferometerFamily) -> MeasurementDataset:
        """The records as a :class:`~ambient_science.datasets.measurements.MeasurementDataset` (no images)."""
        return MeasurementDataset(self.y, self.params, family, self.sigma_n)

    def save(
        self,
        path: str | Path,
        family: InterferometerFamily,
        *,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the records (``y``, ``params``, ``sigma_n``; never ``truth``) as a measurement file."""
        return save_measurements(
            path, self.y, self.params, family, sigma_n=self.sigma_n, metadata=metadata, overwrite=overwrite
        )


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy Generator seeded by one draw of ``generator`` (for ``operators.eht_noise``'s numpy API)."""
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
    return np.random.default_rng(int(seed))


def _apply_gains(
    y: Tensor, params: dict[str, Tensor], rng: np.random.Generator, amp_std: float, phase: str, phase_std_rad: float
) -> tuple[Tensor, Tensor]:
    """Station gains per (sample, time, station) on observed entries: ``y -> g_1 conj(g_2) y``, ``σ -> |g_1 g_2| σ``."""
    y_out, sigma_out = y.clone(), params["sigma"].clone()
    obs = params["observed"] > 0
    for b in range(y.shape[0]):
        k = torch.nonzero(obs[b]).reshape(-1).cpu().numpy()
        if k.size == 0:
            continue
        time = params["time"][b].cpu().numpy()[k]
        t1, t2 = params["t1"][b].cpu().numpy()[k], params["t2"][b].cpu().numpy()[k]
        n_st = int(max(t1.max(), t2.max())) + 1
        g = station_gains(len(np.unique(time)), n_st, rng, amp_std=amp_std, phase=phase, phase_std_rad=phase_std_rad)
        vis, sig = apply_station_gains(y[b].cpu().numpy()[k], params["sigma"][b].cpu().numpy()[k], time, t1, t2, g)
        idx = torch.as_tensor(k, device=y.device)
        y_out[b, idx] = torch.as_tensor(vis, device=y.device).to(y.dtype)
        sigma_out[b, idx] = torch.as_tensor(sig, device=y.device).to(sigma_out.dtype)
    return y_out, sigma_out


def _sample_operators(family: InterferometerFamily, b: int, generator: torch.Generator, min_vis: int):
    """``family.sample(b)``, redrawing samples that observe fewer than ``min_vis`` entries (up to 100 rounds)."""
    A = family.sample(b, generator=generator)
    if min_vis <= 0:
        return A
    params = {k: v.clone() for k, v in A.params().items()}
    for attempt in range(100):
        bad = torch.nonzero(params["observed"].sum(1) < min_vis).reshape(-1)
        if bad.numel() == 0:
            return A if attempt == 0 else family.make(params)
        redraw = family.sample(bad.numel(), generator=generator).params()
        for k in params:
            params[k][bad] = redraw[k].to(params[k].device)
    raise ValueError(
        f"simulate_measurements: 100 redraws of the family's coverages still observe fewer than {min_vis} "
        "visibilities; lower min_vis or widen the family's observing windows"
    )


def simulate_measurements(
    family: InterferometerFamily,
    n: int,
    *,
    generator: torch.Generator,
    images: Tensor | None = None,
    image_config: BlackHoleImageConfig | None = None,
    thermal_noise: bool = True,
    gain_amp_std: float = 0.0,
    gain_phase: str = "none",
    gain_phase_std_rad: float = 0.0,
    min_vis: int = 1,
    batch_size: int = 256,
) -> SimulatedMeasurements:
    """Simulate ``n`` visibility measurements ``y = G(A x + n)`` of synthetic (or given) images.

    Per batch, in this order from ``generator``: operators ``A = family.sample(b)`` (a sample observing
    fewer than ``min_vis`` visibilities, e.g. a night when the source never rises, is redrawn); images
    :func:`sample_black_hole_images` (unless ``images`` ``(n, 1, N, N)`` Jy/pixel are given); thermal noise
    ``σ (ε_re + i ε_im)`` with ``σ = params["sigma"]`` (from the SEFDs); then, if ``gain_amp_std > 0`` or
    ``gain_phase != "none"``, station gains (:func:`~ambient_science.operators.eht_noise.station_gains`,
    one per time and station, numpy draws seeded from ``generator``), which also scale ``sigma``.

    ``image_config`` defaults to the family's ``npix`` and ``fov_uas``; a config that disagrees with the
    family is an error. Returns a :class:`SimulatedMeasurements` (records plus truth apart).
    """
    if n < 1:
        raise ValueError(f"simulate_measurements: n must be >= 1, got {n}")
    npix, fov = int(family.npix), float(family.fov_uas)
    cfg = image_config or BlackHoleImageConfig(npix=npix, fov_uas=fov)
    if images is None and (cfg.npix != npix or not math.isclose(cfg.fov_uas, fov)):
        raise ValueError(
            f"simulate_measurements: image_config (npix {cfg.npix}, fov {cfg.fov_uas} µas) does not match the "
            f"family (npix {npix}, fov {fov} µas)"
        )
    if images is not None:
        images = torch.as_tensor(images)
        if tuple(images.shape) != (n, 1, npix, npix) or images.is_complex():
            raise ValueError(
                f"simulate_measurements: images must be real (n, 1, npix, npix) = {(n, 1, npix, npix)}, "
                f"got {tuple(images.shape)}"
            )
    with_gains = gain_amp_std > 0 or gain_phase != "none"
    ys, sig_n, truths = [], [], []
    params: dict[str, list[Tensor]] = {}
    truth_params: dict[str, list[Tensor]] = {}
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        A = _sample_operators(family, b, generator, min_vis)
        if images is None:
            x, p = sample_black_hole_images(b, cfg, generator=generator)
            for k, v in p.items():
                truth_params.setdefault(k, []).append(v)
        else:
            x = images[start : start + b].to(device=A.observed.device, dtype=torch.float32)
        x = x.to(A.observed.device)
        y = A(x)
        prm = {k: v.detach().clone() for k, v in A.params().items()}
        obs = prm["observed"]
        if thermal_noise:
            shape, dev = tuple(y.shape), generator.device
            eps = torch.complex(
                torch.randn(shape, generator=generator, device=dev), torch.randn(shape, generator=generator, device=dev)
            ).to(y.device)
            y = y + (prm["sigma"] * obs).to(y.real.dtype) * eps
        if with_gains:
            y, prm["sigma"] = _apply_gains(y, prm, _numpy_rng(generator), gain_amp_std, gain_phase, gain_phase_std_rad)
        y = y * obs  # exactly zero where not observed
        if thermal_noise:
            sn = ((prm["sigma"] ** 2 * obs).sum(1) / obs.sum(1).clamp_min(1)).sqrt()
        else:
            sn = torch.zeros(b)
        ys.append(y.to(torch.complex64))
        sig_n.append(sn.to(torch.float32))
        truths.append(x.to(torch.float32))
        for k, v in prm.items():
            params.setdefault(k, []).append(v)
    return SimulatedMeasurements(
        y=torch.cat(ys),
        params={k: torch.cat(v) for k, v in params.items()},
        sigma_n=torch.cat(sig_n),
        truth=torch.cat(truths),
        truth_params={k: torch.cat(v) for k, v in truth_params.items()},
    )


def record_observation(
    y: Tensor,
    params: Mapping[str, Tensor],
    family: InterferometerFamily,
    *,
    ra_deg: float | None = None,
    dec_deg: float | None = None,
    mjd: int | None = None,
    source: str = "simulated",
) -> Observation:
    """One record (``y (K,)`` and its ``params``, no batch dimension) as an :class:`Observation` of its
    observed entries, e.g. to compute closure quantities or write a UVFITS file.

    Times stay hours since the start of the simulated night. The family does not record a source position
    or date, so ``ra_deg``, ``dec_deg`` and ``mjd`` are those given, else unknown (None; ``write_uvfits``
    then asks for them instead of writing zeros). Stations are the family's array.
    """
    keep = (params["observed"] > 0).cpu().numpy().reshape(-1)
    if not keep.any():
        raise ValueError("record_observation: the record observes nothing")

    def col(name: str) -> np.ndarray:
        if name not in params:
            raise KeyError(f"record_observation: params lack {name!r}; got {sorted(params)}")
        return params[name].detach().cpu().numpy().reshape(len(keep), *params[name].shape[1:])[keep]

    uv = col("uv")
    return Observation(
        time=col("time"),
        t1=col("t1"),
        t2=col("t2"),
        u=uv[:, 0],
        v=uv[:, 1],
        vis=y.detach().cpu().numpy().reshape(-1)[keep],
        sigma=col("sigma"),
        stations=list(family.table.names),
        freq_hz=family.freq_ghz * 1e9,
        bandwidth_hz=family.bw_ghz * 1e9,
        ra_deg=ra_deg,
        dec_deg=dec_deg,
        mjd=mjd,
        source=source,
        station_xyz=family.table.xyz,
        sefd=family.table.sefd,
    )


class BlackHoleVisibilityDataset(Dataset):
    """Measurement records of synthetic black holes, simulated on the fly: record ``i`` is reproducible.

    Record ``i`` is :func:`simulate_measurements` (``n = 1``) with a generator seeded from ``(seed, i)``,
    so DataLoader workers need no shared state. Records: ``{"y": (K,) complex64, "params": {...},
    "sigma_n": ()}`` (the format of :class:`~ambient_science.datasets.measurements.MeasurementDataset`);
    :meth:`truth` gives the image of record ``i`` for evaluation only. Keyword arguments go to
    :func:`simulate_measurements`.
    """

    def __init__(
        self,
        family: InterferometerFamily,
        length: int,
        *,
        seed: int = 0,
        image_config: BlackHoleImageConfig | None = None,
        thermal_noise: bool = True,
        gain_amp_std: float = 0.0,
        gain_phase: str = "none",
        gain_phase_std_rad: float = 0.0,
    ):
        if length < 1:
            raise ValueError(f"BlackHoleVisibilityDataset: length must be >= 1, got {length}")
        self.family, self.length, self.seed = family, int(length), int(seed)
        self._kwargs = dict(
            image_config=image_config,
            thermal_noise=thermal_noise,
            gain_amp_std=gain_amp_std,
            gain_phase=gain_phase,
            gain_phase_std_rad=gain_phase_std_rad,
        )

    def __len__(self) -> int:
        return self.length

    def _simulate(self, i: int) -> SimulatedMeasurements:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} records")
        i %= self.length
        state = np.random.SeedSequence([self.seed, i]).generate_state(1, dtype=np.uint64)[0]
        g = torch.Generator().manual_seed(int(state) & (2**63 - 1))
        return simulate_measurements(self.family, 1, generator=g, **self._kwargs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sim = self._simulate(i)
        return {"y": sim.y[0], "params": {k: v[0] for k, v in sim.params.items()}, "sigma_n": sim.sigma_n[0]}

    def truth(self, i: int) -> Tensor:
        """The image of record ``i``, ``(1, N, N)`` float32 Jy/pixel (evaluation only)."""
        return self._simulate(i).truth[0]
