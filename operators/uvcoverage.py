"""uv-coverage of a VLBI array observing a source: Earth rotation, elevation limits, random coverages.

Geometry (Thompson, Moran & Swenson, *Interferometry and Synthesis in Radio Astronomy*, eq. 4.1): for a
baseline ``b = r_1 - r_2`` in ITRF metres, Greenwich hour angle ``H = GMST - RA`` and declination ``δ``,

    u = ( sin H b_x + cos H b_y) / λ
    v = (-sin δ cos H b_x + sin δ sin H b_y + cos δ b_z) / λ

A station sees the source at elevation ``asin(r̂ · ŝ)`` with ``ŝ = (cos δ cos H, -cos δ sin H, sin δ)``
(geocentric). GMST comes from astropy's sidereal time, computed offline (:func:`offline_astropy`: no
IERS download; the tables bundled with astropy are used, with degraded accuracy accepted outside them).

Units: times in hours UTC, angles in degrees at this boundary (radians inside), ``u, v`` in wavelengths,
frequencies in Hz, SEFDs and ``sigma`` in Jy.

>>> from ambient_science.operators.uvcoverage import observe_coverage
>>> cov = observe_coverage("eht2017", ra_deg=187.7, dec_deg=12.39, mjd=57854, tstart_hr=0.0, duration_hr=6.0)
>>> cov.u.shape == cov.v.shape == cov.time.shape
True
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ambient_science.operators.eht_arrays import StationTable, resolve_array
from ambient_science.operators.eht_noise import stokes_i_sigma

__all__ = [
    "Coverage",
    "baseline_uv",
    "gmst_hours",
    "observe_coverage",
    "offline_astropy",
    "sample_coverage",
    "station_elevation",
]

SPEED_OF_LIGHT = 299_792_458.0  # m/s


@dataclass
class Coverage:
    """Where and when an array measured a source: one entry per visibility; with ``vis`` once observed.

    Field names are those of the project's observations (``datasets.uvfits.Observation``), so any
    function that takes an observation takes a coverage too.

    Attributes:
        time: ``(M,)`` hours UTC since 0h of day ``mjd`` (may exceed 24 for a night past midnight).
        t1, t2: ``(M,)`` int station indices into ``stations`` (``t1 < t2``; baseline ``r[t1] - r[t2]``).
        u, v: ``(M,)`` baseline coordinates [wavelengths].
        stations: station names.
        sefd: ``(S,)`` geometric-mean SEFD ``sqrt(SEFD_R SEFD_L)`` per station [Jy].
        sigma: ``(M,)`` thermal noise std per real/imaginary part of a Stokes I visibility [Jy].
        freq_hz, bw_hz, tint_s: observing frequency and bandwidth [Hz], integration time [s].
        ra_deg, dec_deg: source position [deg]; mjd: the day (integer MJD); source: its name.
        vis: ``(M,)`` complex128 visibilities [Jy], ``None`` for a coverage not yet observed.
    """

    time: np.ndarray
    t1: np.ndarray
    t2: np.ndarray
    u: np.ndarray
    v: np.ndarray
    stations: list[str]
    sefd: np.ndarray
    sigma: np.ndarray
    freq_hz: float
    ra_deg: float
    dec_deg: float
    mjd: int
    source: str = ""
    bw_hz: float = 2e9
    tint_s: float = 10.0
    vis: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.time.shape[0])

    @property
    def bandwidth_hz(self) -> float:
        """Alias of ``bw_hz`` (the name ``datasets.uvfits.Observation`` uses)."""
        return self.bw_hz

    @property
    def uv(self) -> np.ndarray:
        """``(M, 2)`` float64 ``(u, v)`` [wavelengths]."""
        return np.stack([self.u, self.v], axis=-1)

    def select(self, keep: np.ndarray) -> Coverage:
        """The coverage restricted to the entries where the boolean ``keep`` (``(M,)``) holds."""
        keep = np.asarray(keep, dtype=bool)
        per_vis = {"time", "t1", "t2", "u", "v", "sigma"} | ({"vis"} if self.vis is not None else set())
        return dataclasses.replace(self, **{k: getattr(self, k)[keep] for k in per_vis})

    def without_stations(self, names: list[str]) -> Coverage:
        """The coverage with every baseline to the named stations removed (station indices unchanged)."""
        drop = [self.stations.index(n) for n in names]
        return self.select(~(np.isin(self.t1, drop) | np.isin(self.t2, drop)))


@contextlib.contextmanager
def offline_astropy() -> Iterator[None]:
    """Within this context astropy downloads nothing: bundled IERS tables, degraded accuracy allowed."""
    from astropy.utils import iers

    with contextlib.ExitStack() as stack:
        stack.enter_context(iers.conf.set_temp("auto_download", False))
        stack.enter_context(iers.conf.set_temp("auto_max_age", None))
        if hasattr(iers.conf, "iers_degraded_accuracy"):
            stack.enter_context(iers.conf.set_temp("iers_degraded_accuracy", "ignore"))
        yield


def gmst_hours(mjd: float, time_hr: np.ndarray) -> np.ndarray:
    """Greenwich mean sidereal time [hours] at UTC ``time_hr`` hours after 0h of day ``mjd`` (astropy, offline).

    Shape: ``time_hr (M,)`` -> ``(M,)``.
    """
    import warnings

    from astropy.time import Time
    from astropy.utils.exceptions import AstropyWarning

    time_hr = np.asarray(time_hr, dtype=np.float64)
    if time_hr.size == 0:
        return time_hr.copy()
    with offline_astropy(), warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        t = Time(float(mjd) + time_hr / 24.0, format="mjd", scale="utc")
        return np.asarray(t.sidereal_time("mean", "greenwich").hour, dtype=np.float64)


def baseline_uv(b_xyz: np.ndarray, gha_rad: np.ndarray, dec_rad: float, wavelength_m: float) -> np.ndarray:
    """``(u, v)`` of baselines by the hour-angle formula (module docstring) [wavelengths].

    Shape: ``b_xyz (..., 3)`` metres and ``gha_rad`` broadcastable to ``(...)`` -> ``(..., 2)``.
    """
    b = np.asarray(b_xyz, dtype=np.float64)
    sh, ch = np.sin(gha_rad), np.cos(gha_rad)
    sd, cd = np.sin(dec_rad), np.cos(dec_rad)
    u = sh * b[..., 0] + ch * b[..., 1]
    v = -sd * ch * b[..., 0] + sd * sh * b[..., 1] + cd * b[..., 2]
    return np.stack([u, v], axis=-1) / wavelength_m


def station_elevation(xyz: np.ndarray, gha_rad: np.ndarray, dec_rad: float) -> np.ndarray:
    """Geocentric elevation [rad] of the source seen from stations at ``xyz`` (ITRF, metres).

    Shape: ``xyz (S, 3)``, ``gha_rad (T,)`` -> ``(T, S)``.
    """
    r = np.asarray(xyz, dtype=np.float64)
    r = r / np.linalg.norm(r, axis=-1, keepdims=True)
    h = np.asarray(gha_rad, dtype=np.float64)[:, None]
    s_dot = np.cos(dec_rad) * (np.cos(h) * r[None, :, 0] - np.sin(h) * r[None, :, 1]) + np.sin(dec_rad) * r[None, :, 2]
    return np.arcsin(np.clip(s_dot, -1.0, 1.0))


def observe_coverage(
    array: str | Path | StationTable,
    *,
    ra_deg: float,
    dec_deg: float,
    mjd: int,
    tstart_hr: float,
    duration_hr: float,
    tint_s: float = 10.0,
    tadv_s: float = 600.0,
    freq_hz: float = 230e9,
    bw_hz: float = 2e9,
    elev_min_deg: float = 10.0,
    elev_max_deg: float = 85.0,
    source: str = "",
) -> Coverage:
    """The coverage of one observation: a visibility every ``tadv_s`` seconds on every baseline whose two
    stations both see the source between the elevation limits.

    Times are ``tstart_hr + k tadv_s / 3600`` for ``0 <= k tadv_s / 3600 < duration_hr``. Entries are
    ordered by time, then ``(t1, t2)`` in table order with ``t1 < t2``. The thermal noise ``sigma`` comes
    from the SEFDs, ``bw_hz`` and ``tint_s`` (:func:`~ambient_science.operators.eht_noise.stokes_i_sigma`).
    A coverage in which no two stations see the source at once is returned empty (length 0).
    """
    table = resolve_array(array)
    if duration_hr <= 0 or tadv_s <= 0 or tint_s <= 0 or freq_hz <= 0 or bw_hz <= 0:
        raise ValueError("duration_hr, tadv_s, tint_s, freq_hz and bw_hz must be positive")
    if not -90.0 <= dec_deg <= 90.0:
        raise ValueError(f"dec_deg must be in [-90, 90], got {dec_deg}")
    step = tadv_s / 3600.0
    times = tstart_hr + step * np.arange(int(np.ceil(duration_hr / step - 1e-9)))
    gha = np.deg2rad(15.0 * gmst_hours(mjd, times) - ra_deg)
    return _coverage_from_gha(
        table,
        times,
        gha,
        dec_deg,
        freq_hz,
        bw_hz,
        tint_s,
        elev_min_deg,
        elev_max_deg,
        ra_deg=ra_deg,
        mjd=int(mjd),
        source=source,
    )


def _coverage_from_gha(table, times, gha, dec_deg, freq_hz, bw_hz, tint_s, elev_min_deg, elev_max_deg, **meta):
    dec = np.deg2rad(dec_deg)
    el = station_elevation(table.xyz, gha, dec)  # (T, S)
    up = (el >= np.deg2rad(elev_min_deg)) & (el <= np.deg2rad(elev_max_deg))
    i1, i2 = np.triu_indices(len(table), k=1)
    ok = up[:, i1] & up[:, i2]  # (T, n_bl)
    ti, bi = np.nonzero(ok)
    b1, b2 = i1[bi], i2[bi]
    uv = baseline_uv(table.xyz[b1] - table.xyz[b2], gha[ti], dec, SPEED_OF_LIGHT / freq_hz)
    sigma = stokes_i_sigma(table.sefd_r[b1], table.sefd_l[b1], table.sefd_r[b2], table.sefd_l[b2], bw_hz, tint_s)
    return Coverage(
        time=np.asarray(times, dtype=np.float64)[ti],
        t1=b1.astype(np.int64),
        t2=b2.astype(np.int64),
        u=uv[:, 0],
        v=uv[:, 1],
        stations=list(table.names),
        sefd=table.sefd,
        sigma=sigma,
        freq_hz=float(freq_hz),
        dec_deg=float(dec_deg),
        bw_hz=float(bw_hz),
        tint_s=float(tint_s),
        **meta,
    )


def sample_coverage(
    array: str | Path | StationTable,
    rng: np.random.Generator,
    *,
    dec_range_deg: tuple[float, float] = (-30.0, 60.0),
    ra_range_deg: tuple[float, float] = (0.0, 360.0),
    mjd_range: tuple[int, int] = (57000, 61000),
    duration_range_hr: tuple[float, float] = (4.0, 12.0),
    p_station_drop: float = 0.1,
    min_stations: int = 3,
    tint_s: float = 10.0,
    tadv_s: float = 600.0,
    freq_hz: float = 230e9,
    bw_hz: float = 2e9,
    elev_min_deg: float = 10.0,
    elev_max_deg: float = 85.0,
) -> Coverage:
    """A random coverage for training data: random day, source position, start, duration and drop-outs.

    Draws (all from ``rng``): declination uniform in ``dec_range_deg`` (in sin δ: uniform on the sky),
    right ascension uniform, a day uniform in ``mjd_range``, a start time uniform in [0, 24) h, a
    duration uniform in ``duration_range_hr``; each station then misses the whole night with probability
    ``p_station_drop``, keeping at least ``min_stations`` (a random choice among them if fewer survive).
    Costs one astropy sidereal-time call (a few ms); for a training loop, precompute a bank of coverages
    (as :class:`~ambient_science.operators.interferometry.InterferometerFamily` does).
    """
    table = resolve_array(array)
    if not 0.0 <= p_station_drop < 1.0:
        raise ValueError(f"p_station_drop must be in [0, 1), got {p_station_drop}")
    if not 2 <= min_stations <= len(table):
        raise ValueError(f"min_stations must be in [2, {len(table)}], got {min_stations}")
    s_lo, s_hi = np.sin(np.deg2rad(dec_range_deg))
    dec = float(np.rad2deg(np.arcsin(rng.uniform(s_lo, s_hi))))
    ra = float(rng.uniform(*ra_range_deg))
    mjd = int(rng.integers(mjd_range[0], mjd_range[1] + 1))
    tstart = float(rng.uniform(0.0, 24.0))
    duration = float(rng.uniform(*duration_range_hr))
    keep = rng.random(len(table)) >= p_station_drop
    if keep.sum() < min_stations:
        keep[rng.choice(len(table), size=min_stations, replace=False)] = True
    cov = observe_coverage(
        table,
        ra_deg=ra,
        dec_deg=dec,
        mjd=mjd,
        tstart_hr=tstart,
        duration_hr=duration,
        tint_s=tint_s,
        tadv_s=tadv_s,
        freq_hz=freq_hz,
        bw_hz=bw_hz,
        elev_min_deg=elev_min_deg,
        elev_max_deg=elev_max_deg,
    )
    return cov.without_stations([n for n, k in zip(table.names, keep) if not k])
