"""Synthetic black-hole-like images: rings, crescents, Gaussians, with GRMHD-like turbulence.

Images follow the library convention (docs/design.md §3): ``(B, 1, npix, npix)`` float32 in Jy/pixel,
row 0 north, column 0 east, pixel ``(i, j)`` at east offset ``x_j = (N/2 - 0.5 - j)·psize`` and north
offset ``y_i = (N/2 - 0.5 - i)·psize``. Position angles are east of north: ``θ = atan2(x, y)``.

Shapes (one drawn per image, probabilities in :class:`BlackHoleImageConfig`):

- ``ring``: ``I(r, θ) ∝ exp(-(r - d/2)² / 2s²) · (1 + a cos(θ - PA))`` with ``s = width / √(8 ln 2)``,
  plus a faint uniform floor inside the ring; the brightness position angle is ``PA``, the ring diameter ``d``.
- ``crescent``: a smooth-edged disc of diameter ``d + width`` minus one of diameter ``d - width`` shifted
  towards ``PA + 180°`` by ``a · width / 2`` (thickest, brightest, at ``PA``).
- ``gaussian``: one elliptical Gaussian; ``double``: two (for variety; no ring).

Every image is multiplied by a GRMHD-like turbulent field ``exp(τ g - τ²/2)``, ``g`` a unit-variance
Gaussian random field smoothed at a correlation length of a few µas, then scaled to its total flux.
All draws take an explicit ``torch.Generator`` and are vectorised over the batch. The visibility
measurements of these images are :mod:`ambient_science.datasets.black_hole_measurements`.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, p = sample_black_hole_images(8, BlackHoleImageConfig(npix=32), generator=g)
    >>> tuple(x.shape), bool(torch.allclose(x.sum((1, 2, 3)), p["flux_jy"], rtol=1e-4))
    ((8, 1, 32, 32), True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ambient_science.datasets.fits_image import RAD_PER_UAS
from ambient_science.family import uniform

__all__ = [
    "SHAPES",
    "BlackHoleImageConfig",
    "crescent_images",
    "gaussian_random_field",
    "image_grid",
    "ring_images",
    "sample_black_hole_images",
]

SHAPES = ("ring", "crescent", "gaussian", "double")
_FWHM_TO_SIGMA = 1.0 / math.sqrt(8.0 * math.log(2.0))


@dataclass(frozen=True)
class BlackHoleImageConfig:
    """The law of synthetic images: ranges ``(lo, hi)`` are drawn uniformly per image.

    Attributes:
        npix: image side in pixels.
        fov_uas: field of view, µas (pixel size ``fov_uas / npix``).
        diameter_uas: ring diameter ``d``, µas.
        width_uas: ring FWHM thickness, µas.
        asymmetry: brightness asymmetry ``a`` in [0, 1].
        pa_deg: brightness position angle, degrees east of north.
        turbulence: ``τ``, standard deviation of the log-brightness turbulent field.
        correlation_uas: correlation length of the turbulent field, µas.
        flux_jy: total flux, Jy.
        shift_uas: maximum offset of the source centre from the image centre along each axis, µas.
        floor: fraction of the ring's flux in a uniform disc filling the ring (ring shape only).
        shape_probs: probability of each of ``SHAPES``.
        supersample: pixels are averaged over ``supersample²`` sub-pixels (anti-aliasing thin rings).
    """

    npix: int = 64
    fov_uas: float = 160.0
    diameter_uas: tuple[float, float] = (35.0, 50.0)
    width_uas: tuple[float, float] = (4.0, 14.0)
    asymmetry: tuple[float, float] = (0.0, 0.9)
    pa_deg: tuple[float, float] = (0.0, 360.0)
    turbulence: tuple[float, float] = (0.0, 0.7)
    correlation_uas: tuple[float, float] = (3.0, 10.0)
    flux_jy: tuple[float, float] = (0.5, 1.0)
    shift_uas: float = 4.0
    floor: tuple[float, float] = (0.0, 0.15)
    shape_probs: dict[str, float] = field(
        default_factory=lambda: {"ring": 0.55, "crescent": 0.3, "gaussian": 0.075, "double": 0.075}
    )
    supersample: int = 2

    def __post_init__(self) -> None:
        if self.npix < 4 or self.fov_uas <= 0:
            raise ValueError(f"BlackHoleImageConfig: need npix >= 4 and fov_uas > 0, got {self.npix}, {self.fov_uas}")
        unknown = set(self.shape_probs) - set(SHAPES)
        if unknown or not self.shape_probs or min(self.shape_probs.values()) < 0:
            raise ValueError(f"BlackHoleImageConfig: shape_probs must map some of {SHAPES} to p >= 0")
        if sum(self.shape_probs.values()) <= 0:
            raise ValueError("BlackHoleImageConfig: shape_probs sum to 0")
        for name in ("diameter_uas", "width_uas", "asymmetry", "turbulence", "correlation_uas", "flux_jy", "floor"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"BlackHoleImageConfig: {name} must be 0 <= lo <= hi, got {(lo, hi)}")
        if self.asymmetry[1] > 1:
            raise ValueError(f"BlackHoleImageConfig: asymmetry must lie in [0, 1], got {self.asymmetry}")
        if self.supersample < 1:
            raise ValueError(f"BlackHoleImageConfig: supersample must be >= 1, got {self.supersample}")

    @property
    def psize(self) -> float:
        """Pixel size, radians."""
        return self.fov_uas / self.npix * RAD_PER_UAS

    def to_dict(self) -> dict:
        return asdict(self)


def image_grid(npix: int, psize: float, *, supersample: int = 1, device=None) -> tuple[Tensor, Tensor]:
    """East and north offsets of the pixel (or sub-pixel) centres: ``x_j = (N/2 - 0.5 - j)·psize``.

    Shape: ``(npix·s, npix·s)`` each (``s = supersample``), float32, same unit as ``psize``.
    """
    n = npix * supersample
    c = (n / 2 - 0.5 - torch.arange(n, dtype=torch.float32, device=device)) * (psize / supersample)
    y, x = torch.meshgrid(c, c, indexing="ij")  # y varies along rows, x along columns
    return x, y


def _col(t: Tensor) -> Tensor:
    return t.reshape(-1, 1, 1).to(torch.float32)


def _to_flux(img: Tensor, flux: Tensor) -> Tensor:
    """Scale each ``(B, 1, n, n)`` image to total ``flux`` ``(B,)``."""
    return img * (flux.reshape(-1, 1, 1, 1) / img.sum((2, 3), keepdim=True).clamp_min(1e-30))


def _pool(img: Tensor, supersample: int) -> Tensor:
    """Average ``supersample × supersample`` sub-pixels: ``(B, n·s, n·s) -> (B, 1, n, n)``."""
    if supersample > 1:
        img = torch.nn.functional.avg_pool2d(img[:, None], supersample)[:, 0]
    return img[:, None]


def ring_images(
    npix: int,
    psize: float,
    diameter: Tensor,
    width: Tensor,
    asymmetry: Tensor,
    pa: Tensor,
    flux: Tensor,
    *,
    x0: Tensor | None = None,
    y0: Tensor | None = None,
    floor: Tensor | None = None,
    supersample: int = 2,
) -> Tensor:
    """Asymmetric Gaussian rings: ``I ∝ exp(-(r - d/2)²/2s²)(1 + a cos(θ - PA)) + floor``, sum = ``flux``.

    Args: ``diameter``, ``width`` (FWHM), ``x0``, ``y0`` (centre, east/north) in radians; ``pa`` in
    radians east of north; ``asymmetry`` in [0, 1]; ``flux`` in Jy; ``floor`` the flux fraction of a
    uniform disc of diameter ``d`` filling the ring (edge smoothed over ``s``). All ``(B,)``.

    Shape: ``(B, 1, npix, npix)`` float32, Jy/pixel.
    """
    device = diameter.device
    x, y = image_grid(npix, psize, supersample=supersample, device=device)
    zero = torch.zeros_like(diameter)
    dx = x - _col(zero if x0 is None else x0)
    dy = y - _col(zero if y0 is None else y0)
    r = torch.sqrt(dx**2 + dy**2)
    theta = torch.atan2(dx, dy)
    s = _col(width) * _FWHM_TO_SIGMA
    ring = torch.exp(-0.5 * ((r - _col(diameter) / 2) / s) ** 2) * (1 + _col(asymmetry) * torch.cos(theta - _col(pa)))
    ring = ring / ring.sum((1, 2), keepdim=True).clamp_min(1e-30)
    if floor is not None:  # a smooth-edged uniform disc filling the ring ("floor" inside the shadow)
        inside = torch.sigmoid((_col(diameter) / 2 - r) / s)
        inside = inside / inside.sum((1, 2), keepdim=True).clamp_min(1e-30)
        ring = (1 - _col(floor)) * ring + _col(floor) * inside
    img = _pool(ring, supersample)
    return _to_flux(img, flux)


def crescent_images(
    npix: int,
    psize: float,
    diameter: Tensor,
    width: Tensor,
    asymmetry: Tensor,
    pa: Tensor,
    flux: Tensor,
    *,
    x0: Tensor | None = None,
    y0: Tensor | None = None,
    supersample: int = 2,
) -> Tensor:
    """Two-disc crescents: disc of radius ``R+ = (d + w)/2`` minus a disc of radius ``R- = (d - w)/2``
    shifted by ``a (R+ - R-)`` towards ``PA + 180°``; edges smoothed (logistic, scale ``max(w/8, psize/2)``);
    sum = ``flux``.

    Units and shapes as in :func:`ring_images`; ``(B, 1, npix, npix)``.
    """
    device = diameter.device
    x, y = image_grid(npix, psize, supersample=supersample, device=device)
    zero = torch.zeros_like(diameter)
    dx = x - _col(zero if x0 is None else x0)
    dy = y - _col(zero if y0 is None else y0)
    r_out = (_col(diameter) + _col(width)) / 2
    r_in = (_col(diameter) - _col(width)).clamp_min(0.0) / 2
    shift = _col(asymmetry) * (r_out - r_in)
    sx, sy = -shift * torch.sin(_col(pa)), -shift * torch.cos(_col(pa))
    edge = (_col(width) / 8).clamp_min(psize / 2)

    def disc(ddx: Tensor, ddy: Tensor, radius: Tensor) -> Tensor:
        return torch.sigmoid((radius - torch.sqrt(ddx**2 + ddy**2)) / edge)

    img = (disc(dx, dy, r_out) - disc(dx - sx, dy - sy, r_in)).clamp_min(0.0)
    img = _pool(img, supersample)
    return _to_flux(img, flux)


def _gaussians(
    npix: int, psize: float, fwhm_major: Tensor, ratio: Tensor, angle: Tensor, x0: Tensor, y0: Tensor, supersample: int
) -> Tensor:
    """Unit-sum elliptical Gaussians (major axis at ``angle`` east of north), ``(B, n·s, n·s)``."""
    x, y = image_grid(npix, psize, supersample=supersample, device=fwhm_major.device)
    dx, dy = x - _col(x0), y - _col(y0)
    ca, sa = torch.cos(_col(angle)), torch.sin(_col(angle))
    along = dx * sa + dy * ca
    across = dx * ca - dy * sa
    s_maj = _col(fwhm_major) * _FWHM_TO_SIGMA
    s_min = s_maj * _col(ratio)
    g = torch.exp(-0.5 * ((along / s_maj) ** 2 + (across / s_min) ** 2))
    return g / g.sum((1, 2), keepdim=True).clamp_min(1e-30)


def gaussian_random_field(
    batch_size: int, npix: int, correlation_px: Tensor | float, *, generator: torch.Generator
) -> Tensor:
    """Zero-mean, unit-variance Gaussian random fields smoothed by a Gaussian kernel of std ``correlation_px``.

    ``g = F⁻¹[ exp(-2π² ℓ² |k|²) F[white noise] ]``, normalised per image to mean 0, std 1.

    Shape: ``(batch_size, npix, npix)`` float32 on the generator's device; ``correlation_px`` scalar or
    ``(batch_size,)``, in pixels.
    """
    device = generator.device
    noise = torch.randn((batch_size, npix, npix), generator=generator, device=device)
    k = torch.fft.fftfreq(npix, device=device)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    ell = torch.as_tensor(correlation_px, dtype=torch.float32, device=device).reshape(-1, 1, 1)
    g = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-2 * math.pi**2 * ell**2 * k2)).real
    g = g - g.mean((1, 2), keepdim=True)
    return g / g.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def _draw(lo_hi: tuple[float, float], n: int, generator: torch.Generator) -> Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * uniform((n,), generator)


def sample_black_hole_images(
    n: int, config: BlackHoleImageConfig | None = None, *, generator: torch.Generator
) -> tuple[Tensor, dict[str, Tensor]]:
    """Draw ``n`` synthetic images and the parameters that made them (shapes in the module docstring).

    Returns ``(images, params)``: images ``(n, 1, npix, npix)`` float32 Jy/pixel on the generator's
    device; params ``(n,)`` tensors ``shape`` (index into ``SHAPES``), ``diameter_uas``, ``width_uas``,
    ``asymmetry``, ``pa_deg`` (east of north), ``turbulence``, ``flux_jy``, ``x0_uas``, ``y0_uas``.
    For ``gaussian``/``double`` shapes ``diameter_uas`` is the major-axis FWHM or the separation.
    """
    cfg = config or BlackHoleImageConfig()
    if n < 1:
        raise ValueError(f"sample_black_hole_images: n must be >= 1, got {n}")
    g = generator
    N, psize, ss = cfg.npix, cfg.psize, cfg.supersample
    probs = torch.tensor([cfg.shape_probs.get(s, 0.0) for s in SHAPES], dtype=torch.float64)
    cdf = torch.cumsum(probs / probs.sum(), 0).to(torch.float32).to(g.device)
    shape = torch.searchsorted(cdf, uniform((n,), g)).clamp_max(len(SHAPES) - 1)
    diameter = _draw(cfg.diameter_uas, n, g)
    width = _draw(cfg.width_uas, n, g)
    asym = _draw(cfg.asymmetry, n, g)
    pa = _draw(cfg.pa_deg, n, g)
    tau = _draw(cfg.turbulence, n, g)
    corr = _draw(cfg.correlation_uas, n, g)
    flux = _draw(cfg.flux_jy, n, g)
    floor = _draw(cfg.floor, n, g)
    x0 = (2 * uniform((n,), g) - 1) * cfg.shift_uas
    y0 = (2 * uniform((n,), g) - 1) * cfg.shift_uas
    ratio = 0.4 + 0.6 * uniform((n,), g)  # gaussian axis ratios / double flux ratios
    sep_frac = 0.3 + 0.4 * uniform((n,), g)  # size of each double component relative to separation
    field_ = gaussian_random_field(n, N * ss, corr / (cfg.fov_uas / N) * ss, generator=g)

    u = RAD_PER_UAS
    rad = {"d": diameter * u, "w": width * u, "x0": x0 * u, "y0": y0 * u, "pa": torch.deg2rad(pa)}
    base = torch.zeros((n, N * ss, N * ss), device=g.device)
    for code, name in enumerate(SHAPES):
        idx = torch.nonzero(shape == code).reshape(-1)
        if idx.numel() == 0:
            continue
        sel = {k: v[idx] for k, v in rad.items()}
        one = torch.ones(idx.numel(), device=g.device)
        if name == "ring":
            img = ring_images(
                N * ss, psize / ss, sel["d"], sel["w"], asym[idx], sel["pa"], one,
                x0=sel["x0"], y0=sel["y0"], floor=floor[idx], supersample=1,
            )[:, 0]  # fmt: skip
        elif name == "crescent":
            img = crescent_images(
                N * ss, psize / ss, sel["d"], sel["w"], asym[idx], sel["pa"], one,
                x0=sel["x0"], y0=sel["y0"], supersample=1,
            )[:, 0]  # fmt: skip
        elif name == "gaussian":
            img = _gaussians(N * ss, psize / ss, sel["d"], ratio[idx], sel["pa"], sel["x0"], sel["y0"], 1)
        else:  # double: two round Gaussians separated by d along PA, flux ratio `ratio`
            half_x, half_y = sel["d"] / 2 * torch.sin(sel["pa"]), sel["d"] / 2 * torch.cos(sel["pa"])
            fw = sep_frac[idx] * sel["d"]
            a = _gaussians(N * ss, psize / ss, fw, one, sel["pa"], sel["x0"] + half_x, sel["y0"] + half_y, 1)
            b = _gaussians(N * ss, psize / ss, fw, one, sel["pa"], sel["x0"] - half_x, sel["y0"] - half_y, 1)
            img = (a + _col(ratio[idx]) * b) / (1 + _col(ratio[idx]))
        base[idx] = img
    base = base * torch.exp(_col(tau) * field_ - 0.5 * _col(tau) ** 2)
    images = _pool(base, ss)
    images = _to_flux(images, flux)
    params = {
        "shape": shape,
        "diameter_uas": diameter,
        "width_uas": width,
        "asymmetry": asym,
        "pa_deg": pa,
        "turbulence": tau,
        "flux_jy": flux,
        "x0_uas": x0,
        "y0_uas": y0,
    }
    return images.to(torch.float32), params
