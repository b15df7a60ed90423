"""UVFITS visibilities (random groups + ``AIPS AN`` antenna table) as an :class:`Observation` of Stokes I.

An :class:`Observation` holds one complex Stokes-I visibility per entry (numpy arrays of equal length):

=============  ============  ======================================================================
field          dtype         meaning
=============  ============  ======================================================================
``time``       float64       hours UTC since 0h of day ``mjd``
``t1, t2``     int64         station indices into ``stations`` (``t1 < t2`` after reading)
``u, v``       float64       baseline coordinates in wavelengths at ``freq_hz``
``vis``        complex128    Stokes I visibility, Jy
``sigma``      float64       its thermal standard deviation (real and imaginary parts each), Jy
=============  ============  ======================================================================

plus ``stations`` (names), ``freq_hz``, ``bandwidth_hz``, ``ra_deg``, ``dec_deg``, ``mjd``, ``source``,
and when the antenna table has them ``station_xyz`` (ITRF metres) and ``sefd`` (Jy).

Reading (:func:`read_uvfits`) follows the AIPS random-group conventions:

- ``UU``, ``VV`` parameters are in seconds (after ``PSCAL``/``PZERO``); wavelengths = seconds × ``freq_hz``.
- time: the sum of the ``DATE`` (and ``_DATE``) parameters is a Julian date.
- ``BASELINE = 256 a1 + a2 + (subarray - 1) / 100`` with 1-based antenna numbers (``NOSTA``); the
  ``a1 > 255`` form ``2048 a1 + a2 + 65536`` is decoded too. Only one subarray is supported.
- the complex axis holds ``(re, im, weight)``, weight ``w = 1 / σ²``; ``w <= 0`` (or non-finite data)
  means flagged.
- IFs and channels are averaged with inverse-variance weights into one visibility per record at the
  mean frequency ``freq_hz``.
- Stokes I: from a stored ``I`` when there is one; else ``I = (RR + LL) / 2``, ``σ = ½ √(σ_RR² + σ_LL²)``
  (or ``XX``/``YY`` alike); where one hand is flagged the other is used alone (``I = RR``, ``σ = σ_RR``).
  Records with no usable hand are dropped. A file without both parallel hands (or ``I``) is rejected.
- a record stored with ``a1 > a2`` is flipped (``t1 < t2``, ``u, v -> -u, -v``, ``vis -> conj(vis)``).

:func:`write_uvfits` writes Stokes I as ``RR = LL = I`` with ``σ_RR = σ_LL = √2 σ`` (so reading returns
``I`` and ``σ`` exactly) and ``RL``, ``LR`` flagged, plus ``AIPS AN`` and ``AIPS FQ`` tables.
:func:`average` coherently averages within scans or fixed time bins.

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
from pathlib import Path

import numpy as np

__all__ = [
    "Observation",
    "average",
    "read_uvfits",
    "scan_labels",
    "stokes_i",
    "write_uvfits",
]

JD_MJD_OFFSET = 2400000.5
_PER_ENTRY = ("time", "t1", "t2", "u", "v", "vis", "sigma")
# AIPS Stokes codes
_STOKES_CODES = {1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR"}
_STOKES_CODES.update({-5: "XX", -6: "YY", -7: "XY", -8: "YX"})


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
    ra_deg: float = 0.0
    dec_deg: float = 0.0
    mjd: int = 51544
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
        self.ra_deg = float(self.ra_deg)
        self.dec_deg = float(self.dec_deg)
        self.mjd = int(self.mjd)
        self.source = str(self.source)
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


# -- reading --------------------------------------------------------------------------------------------------


def _axis_values(header, n: int, axis: int) -> np.ndarray:
    crval = float(header.get(f"CRVAL{axis}", 0.0))
    cdelt = float(header.get(f"CDELT{axis}", 1.0))
    crpix = float(header.get(f"CRPIX{axis}", 1.0))
    return crval + (np.arange(n) + 1.0 - crpix) * cdelt


def _decode_baseline(bl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``BASELINE`` -> (a1, a2, subarray), antenna numbers 1-based."""
    bl = np.asarray(bl, dtype=np.float64)
    whole = np.floor(bl + 1e-6)
    subarray = np.rint((bl - whole) * 100.0).astype(np.int64) + 1
    whole = whole.astype(np.int64)
    big = whole > 65536
    a1 = np.where(big, (whole - 65536) // 2048, whole // 256)
    a2 = np.where(big, (whole - 65536) % 2048, whole % 256)
    return a1, a2, subarray


def read_uvfits(path: str | Path) -> Observation:
    """Read a single-source UVFITS file into a Stokes-I :class:`Observation` (conventions in the module docstring).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is missing, is not a random-group
    file, has no ``AIPS AN`` table, no Stokes I (neither ``I`` nor both parallel hands), no weights,
    several sources or subarrays, or baselines whose antennas are not in the antenna table.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"uvfits file {path} does not exist")
    with fits.open(path, memmap=False) as hdul:
        primary = hdul[0]
        header = primary.header
        if not header.get("GROUPS", False) or not isinstance(primary, fits.GroupsHDU):
            raise ValueError(f"{path}: not a random-group UVFITS file (primary HDU has no GROUPS = T)")
        an = [h for h in hdul[1:] if str(h.header.get("EXTNAME", "")).strip().upper() == "AIPS AN"]
        if not an:
            raise ValueError(f"{path}: no 'AIPS AN' antenna table; a UVFITS file needs one to name its stations")
        fq = [h for h in hdul[1:] if str(h.header.get("EXTNAME", "")).strip().upper() == "AIPS FQ"]
        an_table = an[0].data
        fq_table = fq[0].data if fq else None
        groups = primary.data
        parnames = [p.upper().strip() for p in groups.parnames]
        data = np.asarray(groups.data, dtype=np.float64)

        def par(name: str) -> np.ndarray:
            idx = [i for i, p in enumerate(parnames) if p == name or p.startswith(name + "-")]
            if not idx:
                raise ValueError(f"{path}: random-group parameter {name!r} missing; found {parnames}")
            return np.asarray(groups.par(idx[0]), dtype=np.float64)

        uu, vv = par("UU"), par("VV")
        date_idx = [i for i, p in enumerate(parnames) if p in ("DATE", "_DATE")]
        if not date_idx:
            raise ValueError(f"{path}: random-group parameter 'DATE' missing; found {parnames}")
        jd = sum(np.asarray(groups.par(i), dtype=np.float64) for i in date_idx)
        bl = par("BASELINE")
        if any(p in ("SOURCE", "SOURCE ID") for p in parnames):
            src_ids = np.unique(par("SOURCE"))
            if src_ids.size > 1:
                raise ValueError(f"{path}: {src_ids.size} sources in one file; split it into single-source files")

        # locate the data axes by CTYPE: numpy axis k >= 1 holds FITS axis NAXIS + 1 - k
        naxis = int(header["NAXIS"])
        axes = {}
        for fits_axis in range(2, naxis + 1):
            ctype = str(header.get(f"CTYPE{fits_axis}", "")).strip().upper()
            nax = naxis + 1 - fits_axis
            if ctype:
                axes[ctype] = (fits_axis, nax)
            elif data.shape[nax] != 1:
                raise ValueError(f"{path}: data axis {fits_axis} of length {data.shape[nax]} has no CTYPE")
        for need in ("COMPLEX", "STOKES", "FREQ"):
            if need not in axes:
                raise ValueError(f"{path}: data has no {need} axis (CTYPEn); found {sorted(axes)}")
        for ctype, (_, nax) in axes.items():
            if ctype not in ("COMPLEX", "STOKES", "FREQ", "IF") and data.shape[nax] != 1:
                raise ValueError(f"{path}: axis {ctype} has length {data.shape[nax]}; expected 1")
        if data.shape[axes["COMPLEX"][1]] < 3:
            raise ValueError(f"{path}: COMPLEX axis has no weights (length < 3); sigmas cannot be derived")
        if_nax = axes["IF"][1] if "IF" in axes else None
        order = [0, if_nax, axes["FREQ"][1], axes["STOKES"][1], axes["COMPLEX"][1]]
        rest = [k for k in range(1, data.ndim) if k not in order]
        if if_nax is None:
            data = data[..., None].transpose([0, data.ndim, *order[2:], *rest])
        else:
            data = data.transpose(order + rest)
        data = data.reshape(data.shape[:5])  # (G, IF, CHAN, STOKES, COMPLEX)
        n_if, n_chan, n_stokes = data.shape[1:4]

        stokes = [_STOKES_CODES.get(round(c), f"code {c:g}") for c in _axis_values(header, n_stokes, axes["STOKES"][0])]
        chan_freq = _axis_values(header, n_chan, axes["FREQ"][0])
        if_offsets = np.zeros(n_if)
        bandwidth = abs(float(header.get(f"CDELT{axes['FREQ'][0]}", 0.0))) * n_chan * n_if
        if fq_table is not None and "IF FREQ" in fq_table.columns.names:
            if_offsets = np.asarray(fq_table["IF FREQ"][0], dtype=np.float64).reshape(-1)[:n_if]
            if "TOTAL BANDWIDTH" in fq_table.columns.names:
                bandwidth = float(np.sum(np.abs(np.asarray(fq_table["TOTAL BANDWIDTH"][0], dtype=np.float64))))
            if if_offsets.size != n_if:
                if_offsets = np.zeros(n_if)
        freq_hz = float(np.mean(chan_freq[None, :] + if_offsets[:, None]))

        # station table
        names = [str(s).strip() for s in an_table["ANNAME"]]
        nosta = np.asarray(an_table["NOSTA"], dtype=np.int64) if "NOSTA" in an_table.columns.names else None
        if nosta is None:
            nosta = np.arange(1, len(names) + 1)
        xyz = np.asarray(an_table["STABXYZ"], dtype=np.float64) if "STABXYZ" in an_table.columns.names else None
        sefd = np.asarray(an_table["SEFD"], dtype=np.float64) if "SEFD" in an_table.columns.names else None
        if sefd is not None and not (sefd > 0).all():
            sefd = None
        ra = header.get("OBSRA")
        dec = header.get("OBSDEC")
        if "RA" in axes:
            ra = header.get(f"CRVAL{axes['RA'][0]}", ra)
        if "DEC" in axes:
            dec = header.get(f"CRVAL{axes['DEC'][0]}", dec)
        source = str(header.get("OBJECT", "")).strip()

    # -- decode baselines and times
    a1, a2, subarray = _decode_baseline(bl)
    if np.unique(subarray).size > 1:
        raise ValueError(f"{path}: {np.unique(subarray).size} subarrays; only single-subarray files are supported")
    index_of = {int(n): i for i, n in enumerate(nosta)}
    unknown = sorted({int(a) for a in np.concatenate([a1, a2])} - set(index_of))
    if unknown:
        raise ValueError(f"{path}: baselines use antenna numbers {unknown} that are not in the AIPS AN table")
    t1 = np.array([index_of[int(a)] for a in a1], dtype=np.int64)
    t2 = np.array([index_of[int(a)] for a in a2], dtype=np.int64)
    if not (jd > 1e6).all():
        raise ValueError(f"{path}: DATE parameters do not look like Julian dates (min {jd.min():.6g})")
    mjd = math.floor(float(jd.min()) - JD_MJD_OFFSET)
    time = (jd - JD_MJD_OFFSET - mjd) * 24.0
    u, v = uu * freq_hz, vv * freq_hz

    # -- average IFs and channels per hand (inverse-variance), then Stokes I
    re, im, w = data[..., 0], data[..., 1], data[..., 2]
    ok = (w > 0) & np.isfinite(re) & np.isfinite(im) & np.isfinite(w)
    w = np.where(ok, w, 0.0)
    wsum = w.sum(axis=(1, 2))  # (G, STOKES)
    with np.errstate(invalid="ignore", divide="ignore"):
        hand = (np.where(ok, re, 0.0) * w).sum(axis=(1, 2)) + 1j * (np.where(ok, im, 0.0) * w).sum(axis=(1, 2))
        hand = np.where(wsum > 0, hand / np.where(wsum > 0, wsum, 1.0), 0.0)
    if "I" in stokes:
        k = stokes.index("I")
        vis, valid = hand[:, k], wsum[:, k] > 0
        sigma = np.where(valid, 1.0 / np.sqrt(np.where(valid, wsum[:, k], 1.0)), np.inf)
    else:
        pair = ("RR", "LL") if "RR" in stokes and "LL" in stokes else ("XX", "YY")
        if pair[0] not in stokes or pair[1] not in stokes:
            raise ValueError(
                f"{path}: cannot form Stokes I from polarisations {stokes}; expected I, or both RR and LL "
                "(or XX and YY)"
            )
        kr, kl = stokes.index(pair[0]), stokes.index(pair[1])
        vis, sigma, valid = stokes_i(hand[:, kr], hand[:, kl], wsum[:, kr], wsum[:, kl])

    # -- canonical orientation t1 < t2, drop flagged records and autocorrelations
    flip = t1 > t2
    t1, t2 = np.where(flip, t2, t1), np.where(flip, t1, t2)
    u, v = np.where(flip, -u, u), np.where(flip, -v, v)
    vis = np.where(flip, vis.conj(), vis)
    keep = valid & (t1 != t2)
    return Observation(
        time=time[keep],
        t1=t1[keep],
        t2=t2[keep],
        u=u[keep],
        v=v[keep],
        vis=vis[keep],
        sigma=sigma[keep],
        stations=names,
        freq_hz=freq_hz,
        ra_deg=float(ra) if ra is not None else 0.0,
        dec_deg=float(dec) if dec is not None else 0.0,
        mjd=mjd,
        source=source,
        bandwidth_hz=bandwidth if bandwidth > 0 else 0.0,
        station_xyz=xyz,
        sefd=sefd,
    )


# -- writing --------------------------------------------------------------------------------------------------


def _gmst0_deg(mjd: int) -> float:
    """Greenwich mean sidereal time at 0h UT of day ``mjd`` (IAU 1982 polynomial), degrees in [0, 360)."""
    T = (mjd + JD_MJD_OFFSET - 2451545.0) / 36525.0
    return float((100.46061837 + 36000.770053608 * T + 0.000387933 * T**2 - T**3 / 38710000.0) % 360.0)


def write_uvfits(obs: Observation, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``obs`` as a single-source, single-IF UVFITS file (Stokes I as ``RR = LL``, see the module docstring).

    ``UU``/``VV`` are written in seconds (``u / freq_hz``), the time as two ``DATE`` parameters (day and
    fraction, for float32 precision), weights ``1 / (2 σ²)`` on each parallel hand.
    """
    from astropy.io import fits
    from astropy.time import Time

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    S = len(obs.stations)
    if S > 255:
        raise ValueError(f"write_uvfits: {S} stations; the 256 a1 + a2 baseline code allows at most 255")
    K = len(obs)
    data = np.zeros((K, 1, 1, 1, 1, 4, 3), dtype=np.float32)
    w = (0.5 / obs.sigma**2).astype(np.float32)
    for k in (0, 1):  # RR, LL; RL and LR stay flagged (weight 0)
        data[:, 0, 0, 0, 0, k, 0] = obs.vis.real
        data[:, 0, 0, 0, 0, k, 1] = obs.vis.imag
        data[:, 0, 0, 0, 0, k, 2] = w
    day0 = obs.mjd + JD_MJD_OFFSET
    pars = {
        "UU---SIN": obs.u / obs.freq_hz,
        "VV---SIN": obs.v / obs.freq_hz,
        "WW---SIN": np.zeros(K),
        "BASELINE": 256.0 * (obs.t1 + 1) + (obs.t2 + 1),
        "DATE": np.full(K, day0),
        "_DATE": obs.time / 24.0,
    }
    names = list(pars)
    names[names.index("_DATE")] = "DATE"
    gd = fits.GroupData(
        data, parnames=names, pardata=[np.asarray(p, dtype=np.float32) for p in pars.values()], bitpix=-32
    )
    hdu = fits.GroupsHDU(gd)
    h = hdu.header
    for i in range(1, len(names) + 1):
        h[f"PSCAL{i}"] = 1.0
        h[f"PZERO{i}"] = 0.0
    date_obs = Time(obs.mjd, format="mjd").strftime("%Y-%m-%d")
    cards = [
        ("OBJECT", obs.source),
        ("TELESCOP", "EHT"),
        ("INSTRUME", "EHT"),
        ("OBSRA", obs.ra_deg),
        ("OBSDEC", obs.dec_deg),
        ("MJD", float(obs.mjd)),
        ("DATE-OBS", date_obs),
        ("BSCALE", 1.0),
        ("BZERO", 0.0),
        ("BUNIT", "JY"),
        ("EQUINOX", "J2000"),
    ]
    for key, value in cards:
        h[key] = value
    axes = [
        ("COMPLEX", 1.0, 1.0, 1.0),
        ("STOKES", -1.0, -1.0, 1.0),
        ("FREQ", obs.freq_hz, obs.bandwidth_hz, 1.0),
        ("IF", 1.0, 1.0, 1.0),
        ("RA", obs.ra_deg, 1.0, 1.0),
        ("DEC", obs.dec_deg, 1.0, 1.0),
    ]
    for i, (ctype, crval, cdelt, crpix) in enumerate(axes, start=2):
        h[f"CTYPE{i}"] = ctype
        h[f"CRVAL{i}"] = crval
        h[f"CDELT{i}"] = cdelt
        h[f"CRPIX{i}"] = crpix
        h[f"CROTA{i}"] = 0.0

    xyz = obs.station_xyz if obs.station_xyz is not None else np.zeros((S, 3))
    cols = [
        fits.Column(name="ANNAME", format="8A", array=np.array(obs.stations)),
        fits.Column(name="STABXYZ", format="3D", unit="METERS", array=xyz),
        fits.Column(name="ORBPARM", format="0D", array=np.zeros((S, 0))),
        fits.Column(name="NOSTA", format="1J", array=np.arange(1, S + 1)),
        fits.Column(name="MNTSTA", format="1J", array=np.zeros(S)),
        fits.Column(name="STAXOF", format="1E", unit="METERS", array=np.zeros(S)),
        fits.Column(name="POLTYA", format="1A", array=np.array(["R"] * S)),
        fits.Column(name="POLAA", format="1E", unit="DEGREES", array=np.zeros(S)),
        fits.Column(name="POLCALA", format="3E", array=np.zeros((S, 3))),
        fits.Column(name="POLTYB", format="1A", array=np.array(["L"] * S)),
        fits.Column(name="POLAB", format="1E", unit="DEGREES", array=np.full(S, 90.0)),
        fits.Column(name="POLCALB", format="3E", array=np.zeros((S, 3))),
    ]
    if obs.sefd is not None:
        cols.append(fits.Column(name="SEFD", format="1D", array=obs.sefd))
    an = fits.BinTableHDU.from_columns(cols, name="AIPS AN")
    an_cards = [
        ("EXTVER", 1),
        ("ARRAYX", 0.0),
        ("ARRAYY", 0.0),
        ("ARRAYZ", 0.0),
        ("FREQ", obs.freq_hz),
        ("RDATE", date_obs),
        ("GSTIA0", _gmst0_deg(obs.mjd)),
        ("DEGPDY", 360.9856),
        ("UT1UTC", 0.0),
        ("DATUTC", 0.0),
        ("TIMESYS", "UTC"),
        ("ARRNAM", "EHT"),
        ("XYZHAND", "RIGHT"),
        ("NUMORB", 0),
        ("NO_IF", 1),
        ("NOPCAL", 0),
        ("POLTYPE", "VLBI"),
        ("FREQID", 1),
    ]
    for key, value in an_cards:
        an.header[key] = value
    fq = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="FRQSEL", format="1J", array=np.array([1])),
            fits.Column(name="IF FREQ", format="1D", unit="HZ", array=np.array([0.0])),
            fits.Column(name="CH WIDTH", format="1E", unit="HZ", array=np.array([obs.bandwidth_hz])),
            fits.Column(name="TOTAL BANDWIDTH", format="1E", unit="HZ", array=np.array([obs.bandwidth_hz])),
            fits.Column(name="SIDEBAND", format="1J", array=np.array([1])),
        ],
        name="AIPS FQ",
    )
    fq.header["NO_IF"] = 1
    fq.header["EXTVER"] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fits.HDUList([hdu, an, fq]).writeto(tmp, overwrite=True)
    tmp.replace(path)
    return path
