"""Stokes-I visibilities of one source (:class:`Observation`), Stokes I from the parallel hands
(:func:`stokes_i`), scans (:func:`scan_labels`) and coherent averaging (:func:`average`).

Field table and conventions: :mod:`ambient_science.datasets.uvfits`, which reads and writes them.

    >>> import numpy as np
    >>> obs = Observation(
    ...     time=np.array([0.0, 0.01]), t1=np.array([0, 0]), t2=np.array([1, 1]),
    ...     u=np.array([1e9, 1.01e9]), v=np.array([2e9, 2.0e9]), vis=np.array([1 + 0j, 1 + 0.2j]),
    ...     sigma=np.array([0.1, 0.1]), stations=["AA", "SM"], freq_hz=230e9)
    >>> avg = average(obs, gap_minutes=2.0)
    >>> len(avg), round(float(avg.sigma[0]), 4)
    (1, 0.0707)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["JD_MJD_OFFSET", "Observation", "average", "scan_labels", "stokes_i"]

JD_MJD_OFFSET = 2400000.5
_PER_ENTRY = ("time", "t1", "t2", "u", "v", "vis", "sigma")


@dataclass
class Observation:
    """Stokes-I visibilities of one source, one entry per (time, baseline); fields in the module docstring.

    Shape: every per-entry field ``(K,)``; ``station_xyz (S, 3)`` metres; ``sefd (S,)`` Jy.
    """

    time: np.ndarray
    t1: np.ndarray
    t2: np.ndarray
    u: np.ndarray
    v: np.ndarray
    vis: np.ndarray
    sigma: np.ndarray
    stations: list[str]
    freq_hz: float = 230e9
    ra_deg: float | None = None  # None: unknown (never a silent 0)
    dec_deg: float | None = None
    mjd: int | None = None
    source: str = ""
    bandwidth_hz: float = 2e9
    station_xyz: np.ndarray | None = None
    sefd: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=np.float64).reshape(-1)
        self.t1 = np.asarray(self.t1, dtype=np.int64).reshape(-1)
        self.t2 = np.asarray(self.t2, dtype=np.int64).reshape(-1)
        self.u = np.asarray(self.u, dtype=np.float64).reshape(-1)
        self.v = np.asarray(self.v, dtype=np.float64).reshape(-1)
        self.vis = np.asarray(self.vis, dtype=np.complex128).reshape(-1)
        self.sigma = np.asarray(self.sigma, dtype=np.float64).reshape(-1)
        self.stations = [str(s) for s in self.stations]
        self.freq_hz = float(self.freq_hz)
        self.bandwidth_hz = float(self.bandwidth_hz)
        self.ra_deg = None if self.ra_deg is None else float(self.ra_deg)
        self.dec_deg = None if self.dec_deg is None else float(self.dec_deg)
        self.mjd = None if self.mjd is None else int(self.mjd)
        self.source = str(self.source)
        if self.dec_deg is not None and not -90.0 <= self.dec_deg <= 90.0:
            raise ValueError(f"Observation: dec_deg must be in [-90, 90], got {self.dec_deg}")
        if self.ra_deg is not None and not math.isfinite(self.ra_deg):
            raise ValueError(f"Observation: ra_deg must be finite, got {self.ra_deg}")
        n = self.time.shape[0]
        bad = [f"{k} has {getattr(self, k).shape[0]}" for k in _PER_ENTRY if getattr(self, k).shape[0] != n]
        if bad:
            raise ValueError(f"Observation: per-entry fields differ in length (time has {n}; {', '.join(bad)})")
        S = len(self.stations)
        if n and (min(self.t1.min(), self.t2.min()) < 0 or max(self.t1.max(), self.t2.max()) >= S):
            raise ValueError(f"Observation: station indices must lie in [0, {S}) for stations {self.stations}")
        if bool((self.t1 == self.t2).any()):
            raise ValueError("Observation: autocorrelations (t1 == t2) are not visibilities of a baseline")
        for k in ("time", "u", "v", "sigma"):
            if not np.isfinite(getattr(self, k)).all():
                raise ValueError(f"Observation: {k} contains NaN or Inf")
        if not np.isfinite(self.vis).all():
            raise ValueError("Observation: vis contains NaN or Inf")
        if n and not (self.sigma > 0).all():
            raise ValueError("Observation: sigma must be > 0 (flagged data are dropped, not given sigma 0)")
        if not self.freq_hz > 0:
            raise ValueError(f"Observation: freq_hz must be > 0, got {self.freq_hz}")
        if self.station_xyz is not None:
            self.station_xyz = np.asarray(self.station_xyz, dtype=np.float64)
            if self.station_xyz.shape != (S, 3):
                raise ValueError(f"Observation: station_xyz must be ({S}, 3), got {self.station_xyz.shape}")
        if self.sefd is not None:
            self.sefd = np.asarray(self.sefd, dtype=np.float64)
            if self.sefd.shape != (S,):
                raise ValueError(f"Observation: sefd must be ({S},), got {self.sefd.shape}")

    def __len__(self) -> int:
        return int(self.time.shape[0])

    @property
    def baselines(self) -> list[tuple[str, str]]:
        """Distinct baselines present, as station-name pairs, sorted by station index."""
        pairs = sorted(set(zip(self.t1.tolist(), self.t2.tolist())))
        return [(self.stations[a], self.stations[b]) for a, b in pairs]

    @property
    def uv(self) -> np.ndarray:
        """``(K, 2)`` float64 ``(u, v)`` in wavelengths (as ``operators.uvcoverage.Coverage.uv``)."""
        return np.stack([self.u, self.v], axis=-1)

    @property
    def bw_hz(self) -> float:
        """Alias of ``bandwidth_hz`` (the name ``operators.uvcoverage.Coverage`` uses)."""
        return self.bandwidth_hz

    @property
    def uvdist(self) -> np.ndarray:
        """Baseline length ``√(u² + v²)`` in wavelengths, ``(K,)``."""
        return np.hypot(self.u, self.v)

    def select(self, keep: np.ndarray) -> Observation:
        """A new observation with the entries where ``keep`` (bool ``(K,)`` or integer indices) holds."""
        keep = np.asarray(keep)
        return dataclasses.replace(self, **{k: getattr(self, k)[keep] for k in _PER_ENTRY})

    def sorted(self) -> Observation:
        """Entries ordered by time, then ``t1``, then ``t2``."""
        return self.select(np.lexsort((self.t2, self.t1, self.time)))


# -- Stokes I and averaging ---------------------------------------------------------------------------------


def stokes_i(
    rr: np.ndarray, ll: np.ndarray, w_rr: np.ndarray, w_ll: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stokes I from the two parallel hands: ``I = (RR + LL) / 2``, ``σ_I = ½ √(σ_RR² + σ_LL²)``, ``σ = w^-½``.

    Where one hand is flagged (``w <= 0`` or non-finite data) the other is used alone (``I = RR``,
    ``σ_I = σ_RR``); where both are flagged the entry is invalid.

    Shape: all inputs ``(K,)`` -> ``(vis (K,) complex128, sigma (K,) float64, valid (K,) bool)``;
    ``sigma`` is ``inf`` where invalid. Units: Jy, weights Jy⁻².
    """
    rr, ll = np.asarray(rr, np.complex128), np.asarray(ll, np.complex128)
    w_rr, w_ll = np.asarray(w_rr, np.float64), np.asarray(w_ll, np.float64)
    ok_r = (w_rr > 0) & np.isfinite(rr) & np.isfinite(w_rr)
    ok_l = (w_ll > 0) & np.isfinite(ll) & np.isfinite(w_ll)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_r = np.where(ok_r, 1.0 / np.where(ok_r, w_rr, 1.0), np.inf)
        var_l = np.where(ok_l, 1.0 / np.where(ok_l, w_ll, 1.0), np.inf)
    rr0, ll0 = np.where(ok_r, rr, 0), np.where(ok_l, ll, 0)
    vis = np.where(ok_r & ok_l, 0.5 * (rr0 + ll0), np.where(ok_r, rr0, ll0))
    var = np.where(ok_r & ok_l, 0.25 * (var_r + var_l), np.where(ok_r, var_r, var_l))
    return vis, np.sqrt(var), ok_r | ok_l


def scan_labels(time: np.ndarray, gap_minutes: float = 2.0) -> np.ndarray:
    """Scan index per entry: a new scan starts wherever the sorted times jump by more than ``gap_minutes``.

    Shape: ``time (K,)`` hours -> ``(K,)`` int64, scans numbered 0, 1, ... in time order.
    """
    time = np.asarray(time, dtype=np.float64)
    if time.size == 0:
        return np.zeros(0, dtype=np.int64)
    uniq = np.unique(time)
    starts = np.concatenate([[0], np.cumsum(np.diff(uniq) * 60.0 > gap_minutes)])
    return starts[np.searchsorted(uniq, time)].astype(np.int64)


def average(obs: Observation, *, seconds: float | None = None, gap_minutes: float = 2.0) -> Observation:
    """Coherent inverse-variance average per baseline within scans, or within fixed time bins.

    ``V̄ = Σ w_k V_k / Σ w_k``, ``σ̄ = (Σ w_k)^-½`` with ``w_k = σ_k⁻²``; time, u and v are the plain
    means over the averaged entries. With ``seconds=None`` the groups are scans (time gaps longer than
    ``gap_minutes``, see :func:`scan_labels`); otherwise bins of ``seconds`` counted from the first
    time. Coherent averaging assumes the phase is stable over a group (true after calibration).

    Shape: ``K`` entries -> ``K' <= K`` entries, sorted by time then baseline.
    """
    if len(obs) == 0:
        return obs
    if seconds is None:
        group = scan_labels(obs.time, gap_minutes)
    else:
        if not seconds > 0:
            raise ValueError(f"average: seconds must be > 0, got {seconds}")
        group = np.floor((obs.time - obs.time.min()) * 3600.0 / seconds).astype(np.int64)
    keys = np.stack([group, obs.t1, obs.t2], axis=1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    w = obs.sigma**-2.0
    wsum = np.bincount(inverse, weights=w)

    def mean(x: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=x) / counts

    vis = (np.bincount(inverse, weights=w * obs.vis.real) + 1j * np.bincount(inverse, weights=w * obs.vis.imag)) / wsum
    first = np.zeros(counts.shape[0], dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(obs))[::-1]
    out = dataclasses.replace(
        obs,
        time=mean(obs.time),
        t1=obs.t1[first],
        t2=obs.t2[first],
        u=mean(obs.u),
        v=mean(obs.v),
        vis=vis,
        sigma=wsum**-0.5,
    )
    return out.sorted()
