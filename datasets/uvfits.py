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

The classes and helpers live in :mod:`~ambient_science.datasets.observation` (Observation, Stokes I,
averaging) and :mod:`~ambient_science.datasets.uvfits_write` (the writer); this module reads, and
re-exports them all.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ambient_science.datasets.observation import JD_MJD_OFFSET, Observation, average, scan_labels, stokes_i
from ambient_science.datasets.uvfits_write import write_uvfits

__all__ = [
    "Observation",
    "average",
    "read_uvfits",
    "scan_labels",
    "stokes_i",
    "write_uvfits",
]

# AIPS Stokes codes
_STOKES_CODES = {1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR"}
_STOKES_CODES.update({-5: "XX", -6: "YY", -7: "XY", -8: "YX"})


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


def _open_fits(path: Path):
    """``fits.open`` with every HDU read, or a ``ValueError`` naming the file when it is truncated or corrupt."""
    import warnings

    from astropy.io import fits

    size = path.stat().st_size
    bad = f"{path}: truncated or corrupt FITS file ({size} bytes"
    if size == 0 or size % 2880:
        raise ValueError(f"{bad}, not a whole number of 2880-byte FITS blocks)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*truncated.*")  # astropy warns (not raises) on those
            hdul = fits.open(path, memmap=False)
            hdul.readall()
    except Exception as err:  # astropy raises OSError, ValueError, IndexError, ... on damaged files
        text = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{bad}; astropy: {text[:160]})") from err
    ends = [info["datLoc"] + info["datSpan"] for info in (hdul.fileinfo(i) for i in range(len(hdul)))]
    if max(ends, default=0) > size:
        hdul.close()
        raise ValueError(f"{bad}, its {len(hdul)} HDUs need {max(ends)})")
    return hdul


def read_uvfits(path: str | Path) -> Observation:
    """Read a single-source UVFITS file into a Stokes-I :class:`Observation` (conventions in the module docstring).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is missing, truncated or corrupt
    (not whole 2880-byte FITS blocks, or an HDU that runs past the end of the file), is not a random-group
    file, has no ``AIPS AN`` table, no Stokes I (neither ``I`` nor both parallel hands), no weights,
    several sources or subarrays, or baselines whose antennas are not in the antenna table.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"uvfits file {path} does not exist")
    with _open_fits(path) as hdul:
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
        ra_deg=float(ra) if ra is not None else None,  # unknown, not 0
        dec_deg=float(dec) if dec is not None else None,
        mjd=mjd,
        source=source,
        bandwidth_hz=bandwidth if bandwidth > 0 else 0.0,
        station_xyz=xyz,
        sefd=sefd,
    )
