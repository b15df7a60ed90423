"""Sky images as FITS files: Jy/pixel, pixel scale and source position, in the usual radio convention.

Library convention (docs/design.md §3): a real ``(npix, npix)`` image, row 0 north, column 0 east, pixel
``(i, j)`` at ``x_j = (N/2 - 0.5 - j)·psize`` (east offset) and ``y_i = (N/2 - 0.5 - i)·psize`` (north),
``psize`` in radians.

FITS convention written here: axis 1 = RA (``CDELT1 = -psize`` in degrees, RA increasing to the left /
east), axis 2 = Dec (``CDELT2 = +psize``), reference pixel ``CRPIX1 = CRPIX2 = N/2 + 0.5`` (1-based, the
array centre) at ``(CRVAL1, CRVAL2) = (RA, Dec)`` of the source. FITS stores axis 2 as the numpy row
index counted from the south (row 0 at the bottom), so::

    fits_data = library_image[::-1, :]        # flip north-south; east stays at column 0

On reading, any sign of ``CDELT1``/``CDELT2`` and either axis order is mapped back to the library
convention; degenerate extra axes (``FREQ``, ``STOKES`` of length 1, or a Stokes axis holding ``I``)
are dropped. Units: ``JY/PIXEL`` (or ``JY``) is kept; ``JY/BEAM`` is converted with the beam area
``π BMAJ BMIN / (4 ln 2)`` when ``BMAJ``/``BMIN`` are present; a missing ``BUNIT`` is taken as Jy/pixel.
The reference pixel is not resampled: a ``CRPIX`` off the array centre is ignored (it moves the image
by at most that sub-pixel amount relative to the phase centre).

    >>> import numpy as np, tempfile, os
    >>> sky = SkyImage(np.eye(4, dtype=np.float32), psize=uas_to_rad(2.0), ra_deg=187.7, dec_deg=12.4)
    >>> path = os.path.join(tempfile.mkdtemp(), "im.fits")
    >>> back = read_fits_image(write_fits_image(path, sky))
    >>> bool(np.array_equal(back.image, sky.image)), round(back.psize_uas, 6)
    (True, 2.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "RAD_PER_UAS",
    "SkyImage",
    "rad_to_uas",
    "read_fits_image",
    "uas_to_rad",
    "write_fits_image",
]

RAD_PER_UAS = math.pi / 180.0 / 3600.0 / 1e6
"""Radians per microarcsecond."""


def uas_to_rad(x: float) -> float:
    """µas -> radians."""
    return float(x) * RAD_PER_UAS


def rad_to_uas(x: float) -> float:
    """Radians -> µas."""
    return float(x) / RAD_PER_UAS


@dataclass
class SkyImage:
    """A sky image in the library convention (module docstring) with its metadata.

    Attributes:
        image: ``(npix, npix)`` float32, Jy per pixel, row 0 north, column 0 east.
        psize: pixel size, radians.
        ra_deg, dec_deg: source (image centre) position, degrees (J2000).
        freq_hz: observing frequency, Hz.
        mjd: observing day, MJD.
        source: source name.
    """

    image: np.ndarray
    psize: float
    ra_deg: float = 0.0
    dec_deg: float = 0.0
    freq_hz: float = 230e9
    mjd: int = 51544
    source: str = ""

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        if self.image.ndim != 2 or self.image.shape[0] != self.image.shape[1]:
            raise ValueError(f"SkyImage: image must be square (npix, npix), got shape {self.image.shape}")
        if not np.isfinite(self.image).all():
            raise ValueError("SkyImage: image contains NaN or Inf")
        self.psize = float(self.psize)
        if not self.psize > 0:
            raise ValueError(f"SkyImage: psize must be > 0 radians, got {self.psize}")

    @property
    def npix(self) -> int:
        return int(self.image.shape[0])

    @property
    def psize_uas(self) -> float:
        """Pixel size in µas."""
        return rad_to_uas(self.psize)

    @property
    def fov_uas(self) -> float:
        """Field of view ``npix · psize`` in µas."""
        return self.npix * self.psize_uas

    @property
    def total_flux(self) -> float:
        """Sum of the image, Jy."""
        return float(self.image.sum(dtype=np.float64))


def write_fits_image(path: str | Path, sky: SkyImage, *, overwrite: bool = False) -> Path:
    """Write ``sky`` as a 2-D FITS image (``JY/PIXEL``, ``CDELT1 < 0``, north up; mapping in the module docstring)."""
    from astropy.io import fits
    from astropy.time import Time

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    N = sky.npix
    psize_deg = math.degrees(sky.psize)
    hdu = fits.PrimaryHDU(np.ascontiguousarray(sky.image[::-1, :]))
    h = hdu.header
    cards = [
        ("OBJECT", sky.source),
        ("TELESCOP", "EHT"),
        ("BUNIT", "JY/PIXEL"),
        ("CTYPE1", "RA---SIN"),
        ("CRVAL1", sky.ra_deg),
        ("CDELT1", -psize_deg),
        ("CRPIX1", N / 2 + 0.5),
        ("CUNIT1", "deg"),
        ("CTYPE2", "DEC--SIN"),
        ("CRVAL2", sky.dec_deg),
        ("CDELT2", psize_deg),
        ("CRPIX2", N / 2 + 0.5),
        ("CUNIT2", "deg"),
        ("RADESYS", "ICRS"),
        ("EQUINOX", 2000.0),
        ("OBSRA", sky.ra_deg),
        ("OBSDEC", sky.dec_deg),
        ("FREQ", sky.freq_hz),
        ("MJD", float(sky.mjd)),
        ("DATE-OBS", Time(sky.mjd, format="mjd").strftime("%Y-%m-%d")),
    ]
    for key, value in cards:
        h[key] = value
    h["COMMENT"] = f"pixel size {sky.psize_uas:.6g} uas; row 0 of the data array is the southern edge"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    hdu.writeto(tmp, overwrite=True)
    tmp.replace(path)
    return path


def read_fits_image(path: str | Path) -> SkyImage:
    """Read a FITS sky image into the library convention (mapping and units in the module docstring).

    Raises ``FileNotFoundError``/``ValueError`` naming the file when it is missing, holds no 2-D image,
    has non-square pixels or image, several Stokes/frequency planes without ``I``, or units it cannot
    convert to Jy/pixel.
    """
    from astropy.io import fits
    from astropy.time import Time

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FITS image {path} does not exist")
    with fits.open(path, memmap=False) as hdul:
        hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim >= 2), None)
        if hdu is None:
            raise ValueError(f"{path}: no image HDU with at least 2 axes")
        h = hdu.header
        data = np.asarray(hdu.data, dtype=np.float64)
    naxis = data.ndim
    ctypes = [str(h.get(f"CTYPE{k}", "")).strip().upper() for k in range(1, naxis + 1)]
    ra_ax = next((k for k, c in enumerate(ctypes) if c.startswith("RA")), 0)
    dec_ax = next((k for k, c in enumerate(ctypes) if c.startswith("DEC")), 1)
    if ra_ax == dec_ax:
        raise ValueError(f"{path}: cannot tell the RA axis from the Dec axis (CTYPEs {ctypes})")
    # numpy axis of FITS axis k (0-based) is naxis - 1 - k; drop every other axis
    index: list[int | slice] = []
    for np_ax in range(naxis):
        k = naxis - 1 - np_ax
        if k in (ra_ax, dec_ax):
            index.append(slice(None))
        elif data.shape[np_ax] == 1:
            index.append(0)
        elif ctypes[k] == "STOKES":
            codes = np.rint(
                float(h.get(f"CRVAL{k + 1}", 1.0))
                + (np.arange(data.shape[np_ax]) + 1 - float(h.get(f"CRPIX{k + 1}", 1.0)))
                * float(h.get(f"CDELT{k + 1}", 1.0))
            )
            if 1 not in codes:
                raise ValueError(f"{path}: STOKES axis holds codes {codes.tolist()} but no I (code 1)")
            index.append(int(np.flatnonzero(codes == 1)[0]))
        else:
            raise ValueError(
                f"{path}: axis {k + 1} ({ctypes[k] or 'no CTYPE'}) has {data.shape[np_ax]} planes; "
                "expected a single image plane"
            )
    img = data[tuple(index)]
    if ra_ax > dec_ax:  # numpy order (dec, ra) is the usual one; transposed files have (ra, dec)
        img = img.T
    cdelt_ra = float(h.get(f"CDELT{ra_ax + 1}", 0.0))
    cdelt_dec = float(h.get(f"CDELT{dec_ax + 1}", 0.0))
    if cdelt_ra == 0 or cdelt_dec == 0:
        raise ValueError(f"{path}: CDELT{ra_ax + 1}/CDELT{dec_ax + 1} (pixel size, degrees) missing or zero")
    if not math.isclose(abs(cdelt_ra), abs(cdelt_dec), rel_tol=1e-6):
        raise ValueError(f"{path}: non-square pixels (|CDELT| = {abs(cdelt_ra)}, {abs(cdelt_dec)} deg)")
    if img.shape[0] != img.shape[1]:
        raise ValueError(f"{path}: image is {img.shape[1]} x {img.shape[0]} pixels; expected a square image")
    if cdelt_dec > 0:  # rows counted from the south: put north at row 0
        img = img[::-1, :]
    if cdelt_ra > 0:  # RA increasing to the right: put east at column 0
        img = img[:, ::-1]
    psize = math.radians(abs(cdelt_ra))

    bunit = str(h.get("BUNIT", "JY/PIXEL")).strip().upper().replace(" ", "")
    if bunit in ("JY/BEAM", "JY/BM"):
        if "BMAJ" not in h or "BMIN" not in h:
            raise ValueError(f"{path}: BUNIT is JY/BEAM but BMAJ/BMIN are missing; cannot convert to Jy/pixel")
        beam_area = math.pi * float(h["BMAJ"]) * float(h["BMIN"]) / (4.0 * math.log(2.0))
        img = img * (abs(cdelt_ra) * abs(cdelt_dec) / beam_area)
    elif bunit not in ("JY/PIXEL", "JY/PIX", "JY", ""):
        raise ValueError(f"{path}: BUNIT {bunit!r} not supported; expected JY/PIXEL or JY/BEAM")

    mjd = h.get("MJD")
    if mjd is None and "DATE-OBS" in h:
        try:
            mjd = Time(str(h["DATE-OBS"]).strip(), scale="utc").mjd
        except ValueError:
            mjd = None
    freq = h.get("FREQ")
    if freq is None:
        freq_ax = next((k for k, c in enumerate(ctypes) if c == "FREQ"), None)
        freq = h.get(f"CRVAL{freq_ax + 1}") if freq_ax is not None else None
    return SkyImage(
        image=np.ascontiguousarray(img, dtype=np.float32),
        psize=psize,
        ra_deg=float(h.get(f"CRVAL{ra_ax + 1}", h.get("OBSRA", 0.0))),
        dec_deg=float(h.get(f"CRVAL{dec_ax + 1}", h.get("OBSDEC", 0.0))),
        freq_hz=float(freq) if freq is not None else 230e9,
        mjd=math.floor(float(mjd)) if mjd is not None else 51544,
        source=str(h.get("OBJECT", "")).strip(),
    )
