"""Write an :class:`~ambient_science.datasets.observation.Observation` as a UVFITS file (conventions in
:mod:`ambient_science.datasets.uvfits`, which reads it back exactly)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ambient_science.datasets.observation import JD_MJD_OFFSET, Observation

__all__ = ["write_uvfits"]


def _gmst0_deg(mjd: int) -> float:
    """Greenwich mean sidereal time at 0h UT of day ``mjd`` (IAU 1982 polynomial), degrees in [0, 360)."""
    T = (mjd + JD_MJD_OFFSET - 2451545.0) / 36525.0
    return float((100.46061837 + 36000.770053608 * T + 0.000387933 * T**2 - T**3 / 38710000.0) % 360.0)


def write_uvfits(
    obs: Observation,
    path: str | Path,
    *,
    ra_deg: float | None = None,
    dec_deg: float | None = None,
    mjd: int | None = None,
    source: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``obs`` as a single-source, single-IF UVFITS file (Stokes I as ``RR = LL``, see the module docstring).

    ``UU``/``VV`` are written in seconds (``u / freq_hz``), the time as two ``DATE`` parameters (day and
    fraction, for float32 precision), weights ``1 / (2 σ²)`` on each parallel hand. The source position and
    date come from ``ra_deg``, ``dec_deg``, ``mjd`` (and ``source``) when given, else from ``obs``; a file
    is never written with a position or date the observation does not have (``ValueError``).
    """
    from astropy.io import fits
    from astropy.time import Time

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    given = {"ra_deg": ra_deg, "dec_deg": dec_deg, "mjd": mjd, "source": source}
    fill = {k: v for k, v in given.items() if v is not None}
    obs = dataclasses.replace(obs, **fill) if fill else obs
    unknown = [k for k in ("ra_deg", "dec_deg", "mjd") if getattr(obs, k) is None]
    if unknown:
        raise ValueError(
            f"write_uvfits({path}): the observation has no {' / '.join(unknown)} (source position and date); pass "
            f"{', '.join(k + '=...' for k in unknown)} (e.g. the coordinates and day the coverage was simulated for)"
        )
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
