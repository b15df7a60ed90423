"""The family of random EHT-like coverages (:class:`InterferometerFamily`) and, re-exported from
``visibilities.py``, the visibility operator :class:`Interferometer` and its helpers.

>>> from ambient_science.operators.interferometry import InterferometerFamily
>>> family = InterferometerFamily(npix=32, fov_uas=160.0, bank_size=2)
>>> A = family.sample(2, generator=__import__("torch").Generator().manual_seed(0))
>>> A.ishape, A.oshape[0]
((2, 1, 32, 32), 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ambient_science.family import OperatorFamily, uniform
from ambient_science.operators.eht_arrays import ARRAY_NAMES, StationTable, resolve_array
from ambient_science.operators.eht_noise import stokes_i_sigma
from ambient_science.operators.uvcoverage import SPEED_OF_LIGHT, baseline_uv, station_elevation
from ambient_science.operators.visibilities import (
    METHODS,
    UAS,
    Interferometer,
    density_weights,
    pixel_coordinates,
    triangle_pulse,
    uas_to_rad,
)

__all__ = [
    "UAS",
    "Interferometer",
    "InterferometerFamily",
    "density_weights",
    "pixel_coordinates",
    "triangle_pulse",
    "uas_to_rad",
]

SIDEREAL_TO_SOLAR = 0.99726956633  # one sidereal hour in solar hours
_METHODS = METHODS


class InterferometerFamily(OperatorFamily):
    """Random EHT-like coverages of one array, and their further corruption by dropped stations, baselines
    and time blocks. Conditioning: the dirty beam (PSF) of ``Ã``, peak 1.

    Coverage bank: at construction, ``bank_size`` source declinations are drawn (uniform on the sky in
    ``dec_range_deg``, seeded by ``seed``) and for each the uv points and station elevations of every
    baseline are tabulated over a full sidereal day every ``tadv_s`` seconds (hour-angle formula,
    numpy; no astropy needed since only the hour angle matters). ``sample`` then draws per sample a
    declination from the bank, a duration (uniform in ``duration_range_hr``), the centre of the
    observing window (an hour angle drawn with probability proportional to the square of the number
    of baselines that see the source then, as a schedule would favour) and station drop-outs (each
    station absent with probability
    ``p_station_drop``, keeping at least ``min_stations``): vectorised torch indexing, about a
    millisecond per batch. Visibilities are ordered by time; a draw with more than ``max_vis`` entries
    keeps the first ``max_vis`` (the end of the night is cut). ``time`` is hours since the start.

    Further corruption ``Ã = B A`` drops each station with probability ``delta_station`` (all its
    baselines), each baseline with probability ``delta_baseline``, and each block of ``time_block_hr``
    hours with probability ``delta_time``.

    ``normalize=True`` gives every drawn operator the row weights of :func:`density_weights` (kept by the
    further corruption), so that ``x̃ = Ãᴴ Ã x_σ`` is an image at the scale of ``x`` (without them ``AᴴA``
    multiplies by ~``K N²``, far beyond what EDM preconditioning assumes); measurements are then
    ``y = w ⊙ V`` with noise ``w σ``. ``make`` computes the weights from ``params["uv"]`` when
    ``params`` lack ``"weight"`` (right for a full operator ``A``, never for a further-corrupted one).

    Args:
        npix, fov_uas: image side and field of view [µas] (pixel size ``fov_uas / npix``).
        array: a bundled array name (``eht2017``, ``eht2017_m87``, ``eht2025``), a path to a station
            table, or a table as a dict ``{"names", "xyz", "sefd_r", "sefd_l"}``.
        freq_ghz, bw_ghz, tint_s, tadv_s: observing frequency and bandwidth [GHz], integration time and
            cadence [s] (the noise ``sigma`` of each visibility comes from the SEFDs).
    """

    name = "interferometer"
    conditioning_channels = 1
    is_complex = False

    def __init__(
        self,
        npix: int = 64,
        fov_uas: float = 160.0,
        array: str | dict | StationTable = "eht2017",
        *,
        freq_ghz: float = 230.0,
        bw_ghz: float = 2.0,
        tint_s: float = 10.0,
        tadv_s: float = 600.0,
        elev_min_deg: float = 10.0,
        elev_max_deg: float = 85.0,
        dec_range_deg: Sequence[float] = (-30.0, 60.0),
        duration_range_hr: Sequence[float] = (4.0, 12.0),
        p_station_drop: float = 0.1,
        min_stations: int = 3,
        max_vis: int | None = None,
        bank_size: int = 32,
        seed: int = 0,
        delta_station: float = 0.1,
        delta_baseline: float = 0.05,
        delta_time: float = 0.1,
        time_block_hr: float = 1.0,
        normalize: bool = False,
        method: str = "auto",
    ):
        self.npix, self.fov_uas = int(npix), float(fov_uas)
        self.normalize = bool(normalize)
        self.image_shape = (1, self.npix, self.npix)
        self.pixel_size = uas_to_rad(self.fov_uas) / self.npix
        self.table = _table_from(array)
        self._array_config = array.lower() if isinstance(array, str) and array.lower() in ARRAY_NAMES else None
        self.freq_ghz, self.bw_ghz, self.tint_s, self.tadv_s = (
            float(freq_ghz),
            float(bw_ghz),
            float(tint_s),
            float(tadv_s),
        )
        self.elev_min_deg, self.elev_max_deg = float(elev_min_deg), float(elev_max_deg)
        self.dec_range_deg = tuple(float(d) for d in dec_range_deg)
        self.duration_range_hr = tuple(float(d) for d in duration_range_hr)
        self.p_station_drop, self.min_stations = float(p_station_drop), int(min_stations)
        self.bank_size, self.seed, self.method = int(bank_size), int(seed), method
        self.delta_station, self.delta_baseline = float(delta_station), float(delta_baseline)
        self.delta_time, self.time_block_hr = float(delta_time), float(time_block_hr)
        for name in ("p_station_drop", "delta_station", "delta_baseline", "delta_time"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.duration_range_hr[0] <= self.duration_range_hr[1] <= 24.0:
            raise ValueError(f"duration_range_hr must satisfy 0 < lo <= hi <= 24, got {self.duration_range_hr}")
        if not 2 <= self.min_stations <= len(self.table):
            raise ValueError(f"min_stations must be in [2, {len(self.table)}], got {self.min_stations}")
        if self.time_block_hr <= 0 or self.tadv_s <= 0 or self.bank_size < 1:
            raise ValueError("time_block_hr, tadv_s and bank_size must be positive")
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        self._build_bank()
        self.max_vis = int(max_vis) if max_vis is not None else self._most_visibilities()
        if self.max_vis < 1:
            raise ValueError(f"max_vis must be positive, got {self.max_vis}")

    def _build_bank(self) -> None:
        rng = np.random.default_rng(self.seed)
        s_lo, s_hi = np.sin(np.deg2rad(self.dec_range_deg))
        decs = np.arcsin(rng.uniform(s_lo, s_hi, self.bank_size))
        step_hr = self.tadv_s / 3600.0
        self._n_times = max(1, round(24.0 / step_hr))
        gha = 2 * np.pi * np.arange(self._n_times) / self._n_times  # one sidereal day
        i1, i2 = np.triu_indices(len(self.table), k=1)
        b = self.table.xyz[i1] - self.table.xyz[i2]
        lam = SPEED_OF_LIGHT / (self.freq_ghz * 1e9)
        uv = np.stack([baseline_uv(b[None], gha[:, None], d, lam) for d in decs])  # (D, T, n_bl, 2)
        el = np.stack([station_elevation(self.table.xyz, gha, d) for d in decs])  # (D, T, S)
        up = (el >= np.deg2rad(self.elev_min_deg)) & (el <= np.deg2rad(self.elev_max_deg))
        band = np.abs(uv).max() * self.pixel_size
        if band > 0.5:
            raise ValueError(
                f"InterferometerFamily: baselines reach |u| psize = {band:.3g} > 0.5 (outside the image's band); "
                f"use a smaller pixel (fov_uas / npix = {self.fov_uas / self.npix:.3g} µas) or a lower frequency"
            )
        t = self.table
        sigma = stokes_i_sigma(t.sefd_r[i1], t.sefd_l[i1], t.sefd_r[i2], t.sefd_l[i2], self.bw_ghz * 1e9, self.tint_s)
        self._decs = decs
        self._uv = torch.from_numpy(uv)
        self._up = torch.from_numpy(up)
        self._i1, self._i2 = torch.from_numpy(i1), torch.from_numpy(i2)
        self._sigma = torch.from_numpy(sigma).to(torch.float32)
        # window centres favour hour angles at which many baselines see the source (as a schedule would)
        n_bl_up = (up[:, :, i1] & up[:, :, i2]).sum(-1)  # (D, T)
        self._n_bl_up = n_bl_up
        w = n_bl_up.astype(np.float64) ** 2 + 1e-3
        self._centre_cdf = torch.from_numpy(np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True))
        self._step_utc_hr = step_hr * SIDEREAL_TO_SOLAR * (24.0 / step_hr / self._n_times)

    def _most_visibilities(self) -> int:
        """The most visibilities any draw can have: the longest window at its best place, all stations."""
        longest = min(math.ceil(self.duration_range_hr[1] * 3600.0 / self.tadv_s), self._n_times)
        n = self._n_bl_up  # (D, T)
        windows = sum(np.roll(n, -s, axis=1) for s in range(longest))
        return max(1, int(windows.max()))

    # -- OperatorFamily -------------------------------------------------------------------------------
    def sample(self, batch_size, *, generator, device=None) -> Interferometer:
        Bn, T, S, nb = int(batch_size), self._n_times, len(self.table), self._i1.numel()
        r = uniform((Bn, 3 + S), generator).cpu().to(torch.float64)
        d = (r[:, 0] * self.bank_size).long().clamp_max(self.bank_size - 1)
        lo, hi = self.duration_range_hr
        n_steps = torch.clamp(((lo + (hi - lo) * r[:, 2]) * 3600.0 / self.tadv_s).round().long(), 1, T)
        centre = torch.searchsorted(self._centre_cdf[d], r[:, 1:2].contiguous()).reshape(Bn).clamp_max(T - 1)
        start = (centre - n_steps // 2) % T
        u_st = r[:, 3:]
        rank = torch.argsort(torch.argsort(u_st, dim=1, descending=True), dim=1)
        keep_st = (u_st >= self.p_station_drop) | (rank < self.min_stations)  # (B, S)
        rel = (torch.arange(T)[None] - start[:, None]) % T  # (B, T) steps since the start
        in_window = rel < n_steps[:, None]
        up = self._up[d] & keep_st[:, None, :]  # (B, T, S)
        mask = in_window[:, :, None] & up[:, :, self._i1] & up[:, :, self._i2]  # (B, T, n_bl)
        order_key = rel[:, :, None] * nb + torch.arange(nb)[None, None]
        order_key = torch.where(mask, order_key, T * nb).reshape(Bn, T * nb)
        K = self.max_vis
        idx = torch.argsort(order_key, dim=1, stable=True)[:, :K]
        if idx.shape[1] < K:
            idx = torch.cat([idx, idx[:, :1].expand(Bn, K - idx.shape[1])], dim=1)
        observed = torch.gather(mask.reshape(Bn, -1), 1, idx)
        observed[:, T * nb :] = False  # (only when K > T * n_bl: duplicated padding slots)
        t_idx, bl = idx // nb, idx % nb
        uv = self._uv[d[:, None], (t_idx + start[:, None]) % T, bl]  # (B, K, 2)
        obs_f = observed.to(torch.float32)
        time = torch.gather(rel, 1, t_idx).to(torch.float64) * self._step_utc_hr
        A = Interferometer(
            uv * obs_f[..., None].double(),
            self.npix,
            self.pixel_size,
            obs_f,
            t1=self._i1[bl] * observed,
            t2=self._i2[bl] * observed,
            time=time * obs_f.double(),
            sigma=self._sigma[bl] * obs_f + (1 - obs_f),
            weight=density_weights(uv, obs_f, self.npix, self.pixel_size) if self.normalize else None,
            method=self.method,
        )
        return A.to(device if device is not None else generator.device)

    def further_corrupt(self, A: Interferometer, *, generator: torch.Generator) -> Interferometer:
        """Drop stations, baselines and time blocks (class docstring); padding stays unobserved."""
        B, S = A.batch_size, len(self.table)
        for name in ("t1", "t2", "time"):
            if name not in A.params():
                raise ValueError(f"further_corrupt needs per-visibility {name!r} metadata on the operator")
        n_blocks = math.ceil(48.0 / self.time_block_hr) + 1
        dev = A.observed.device
        keep_st = (uniform((B, S), generator) >= self.delta_station).to(dev)
        keep_bl = (uniform((B, S, S), generator) >= self.delta_baseline).to(dev)
        keep_tb = (uniform((B, n_blocks), generator) >= self.delta_time).to(dev)
        t1, t2 = A.t1.clamp(0, S - 1), A.t2.clamp(0, S - 1)
        block = (A.time / self.time_block_hr).floor().long().clamp(0, n_blocks - 1)
        batch = torch.arange(B, device=dev)[:, None]
        keep = (
            torch.gather(keep_st, 1, t1)
            & torch.gather(keep_st, 1, t2)
            & keep_bl[batch, t1, t2]
            & torch.gather(keep_tb, 1, block)
        )
        return A.restrict(keep.to(torch.float32))

    def conditioning(self, A: Interferometer) -> Tensor:
        """The dirty beam of ``A`` (natural weighting), peak 1 at pixel ``(N/2, N/2)``: ``(B, 1, N, N)``."""
        return A.psf()

    def observed_projection(self, A_tilde: Interferometer) -> None:
        """None: ``ÃᴴÃ`` is a PSF convolution, no projection; the network predicts the whole image."""
        return None

    def make(self, params: dict[str, Tensor]) -> Interferometer:
        missing = {"uv", "observed"} - set(params)
        if missing:
            raise KeyError(f"InterferometerFamily.make expects params 'uv' and 'observed' (missing {sorted(missing)})")
        meta = {k: params[k] for k in ("t1", "t2", "time", "sigma", "weight") if k in params}
        if self.normalize and "weight" not in meta:
            meta["weight"] = density_weights(params["uv"], params["observed"], self.npix, self.pixel_size)
        return Interferometer(params["uv"], self.npix, self.pixel_size, params["observed"], method=self.method, **meta)

    def config(self) -> dict[str, Any]:
        t = self.table
        array = self._array_config or {
            "names": list(t.names),
            "xyz": t.xyz.tolist(),
            "sefd_r": t.sefd_r.tolist(),
            "sefd_l": t.sefd_l.tolist(),
        }
        return {
            "family": self.name,
            "npix": self.npix,
            "fov_uas": self.fov_uas,
            "array": array,
            "freq_ghz": self.freq_ghz,
            "bw_ghz": self.bw_ghz,
            "tint_s": self.tint_s,
            "tadv_s": self.tadv_s,
            "elev_min_deg": self.elev_min_deg,
            "elev_max_deg": self.elev_max_deg,
            "dec_range_deg": list(self.dec_range_deg),
            "duration_range_hr": list(self.duration_range_hr),
            "p_station_drop": self.p_station_drop,
            "min_stations": self.min_stations,
            "max_vis": self.max_vis,
            "bank_size": self.bank_size,
            "seed": self.seed,
            "delta_station": self.delta_station,
            "delta_baseline": self.delta_baseline,
            "delta_time": self.delta_time,
            "time_block_hr": self.time_block_hr,
            "normalize": self.normalize,
            "method": self.method,
        }


def _table_from(array: str | Path | dict | StationTable) -> StationTable:
    if isinstance(array, dict):
        try:
            return StationTable(
                list(array["names"]),
                np.asarray(array["xyz"], dtype=np.float64),
                np.asarray(array["sefd_r"], dtype=np.float64),
                np.asarray(array["sefd_l"], dtype=np.float64),
            )
        except KeyError as err:
            raise ValueError(f"an array dict needs keys names, xyz, sefd_r, sefd_l (missing {err})") from None
    return resolve_array(array)
