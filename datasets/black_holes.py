"""Synthetic black-hole-like images (rings, crescents, turbulence) and the visibility measurements of them.

Images follow the library convention (DESIGN.md §4): ``(B, 1, npix, npix)`` float32 in Jy/pixel,
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
All draws take an explicit ``torch.Generator`` and are vectorised over the batch.

Measurements for ambient training (:func:`simulate_measurements`, :class:`BlackHoleVisibilityDataset`):
operators ``A`` drawn from an ``InterferometerFamily`` (random EHT-like coverages, per-visibility thermal
``sigma`` from the station SEFDs), ``y = A x + n`` with ``n = σ (ε_re + i ε_im)`` on observed entries, and
optionally station gains ``y_12 -> g_1 conj(g_2) y_12`` (``operators.eht_noise``). Records hold ``y``, the
operator's ``params`` (``uv``, ``observed``, ``t1``, ``t2``, ``time``, ``sigma``) and ``sigma_n``; never
the image, which is returned apart, for evaluation only.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, p = sample_black_hole_images(8, BlackHoleImageConfig(npix=32), generator=g)
    >>> tuple(x.shape), bool(torch.allclose(x.sum((1, 2, 3)), p["flux_jy"], rtol=1e-4))
    ((8, 1, 32, 32), True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ambient_science.datasets.fits_image import RAD_PER_UAS
from ambient_science.datasets.measurements import MeasurementDataset, save_measurements
from ambient_science.datasets.uvfits import Observation
from ambient_science.family import uniform

if TYPE_CHECKING:
    from ambient_science.operators.interferometry import InterferometerFamily

__all__ = [
    "SHAPES",
    "BlackHoleImageConfig",
    "BlackHoleVisibilityDataset",
    "SimulatedMeasurements",
    "crescent_images",
    "gaussian_random_field",
    "image_grid",
    "record_observation",
    "ring_images",
    "sample_black_hole_images",
    "simulate_measurements",
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


# -- measurements ---------------------------------------------------------------------------------------------


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
    from ambient_science.operators.eht_noise import apply_station_gains, station_gains

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


def record_observation(y: Tensor, params: Mapping[str, Tensor], family: InterferometerFamily) -> Observation:
    """One record (``y (K,)`` and its ``params``, no batch dimension) as an :class:`Observation` of its
    observed entries, e.g. to compute closure quantities or write a UVFITS file.

    Times stay hours since the start of the simulated night; ``mjd``, ``ra_deg``, ``dec_deg`` keep the
    Observation defaults (the family does not record them). Stations are the family's array.
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
        source="simulated",
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
