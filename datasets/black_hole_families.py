"""A broad generator of black-hole-like images, by *family*, for the 64 × 64 prior and the out-of-family benchmark.

Images follow the library convention (docs/design.md §3): ``(B, 1, npix, npix)`` float32 in Jy/pixel, row 0
north, column 0 east, position angles east of north. Every image is drawn on a ``supersample``-times finer grid
and averaged down.

Families (:data:`FAMILIES`; one drawn per image with the probabilities of :class:`BroadImageConfig`):

- ``ring``: a Gaussian-profile ring (FWHM ``width``, thin 2 µas to thick 25 µas) of diameter ``d`` with a random
  azimuthal brightness ``1 + Σ_{m=1..3} a_m cos(m(θ - φ_m))`` (clipped at 0) and a faint floor inside;
- ``crescent``: two-disc crescents (``black_hole_images.crescent_images``) with the same azimuthal modulation;
- ``disk``: a filled disc, brightness ``(1 - r²/R²)^p`` (``p`` 0–2, smooth edge), elliptical (axis ratio 0.6–1);
- ``double_ring``: two rings, the second of diameter 0.35–0.8 ``d``, offset by up to ``d/4``, flux ratio 0.2–1;
- ``ring_jet``: a ring plus extended jet-like emission: a chain of widening Gaussians from the centre along a
  random PA out to 35–75 µas, 15–50 % of the flux, sometimes a fainter counter-jet;
- ``blobs``: 1–3 elliptical Gaussians (FWHM 8–40 µas) scattered within ``d/2`` of the centre.

Modifiers, independent of the family:

- turbulent texture (probability ``texture_prob``): the image times ``exp(τ g - τ²/2)``, ``g`` a unit-variance
  Gaussian random field at a correlation length of 2–10 µas (``black_hole_images.gaussian_random_field``);
- an off-centre component (probability ``component_prob``): one Gaussian (FWHM 5–20 µas) with 5–30 % of the
  flux, anywhere within 55 µas of the centre;
- a Gaussian blur of FWHM ``blur_uas``; a centre offset up to ``shift_uas`` along each axis; the total flux.

Held-out families for the out-of-family benchmark (``benchmarks/eht_out_of_family.py``): ``texture`` (train with
``texture_prob = 0``, test with 1) and ``double_ring`` (train without the family, test only on it);
:func:`split_config` builds both sides.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, p = sample_family_images(6, BroadImageConfig(npix=32, fov_uas=80), generator=g)
    >>> tuple(x.shape), bool(torch.allclose(x.sum((1, 2, 3)), p["flux_jy"], rtol=1e-4)), bool((x >= 0).all())
    ((6, 1, 32, 32), True, True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ambient_science.datasets.black_hole_images import crescent_images, gaussian_random_field, image_grid
from ambient_science.datasets.fits_image import RAD_PER_UAS
from ambient_science.family import uniform

__all__ = ["FAMILIES", "SPLITS", "BroadImageConfig", "sample_family_images", "split_config"]

FAMILIES = ("ring", "crescent", "disk", "double_ring", "ring_jet", "blobs")
SPLITS = ("texture", "double_ring")
_FWHM_TO_SIGMA = 1.0 / math.sqrt(8.0 * math.log(2.0))


@dataclass(frozen=True)
class BroadImageConfig:
    """The law of the broad generator; ranges ``(lo, hi)`` are drawn uniformly per image.

    Attributes:
        npix, fov_uas: image side [pixels] and field of view [µas].
        diameter_uas: ring / disc diameter ``d`` [µas].
        width_uas: ring FWHM [µas] (crescents: their thickness).
        azimuthal: largest ``m = 1`` amplitude of the azimuthal brightness (``m = 2, 3``: half of it).
        blur_uas: FWHM of a final Gaussian blur [µas].
        flux_jy: total flux [Jy].
        shift_uas: maximum centre offset along each axis [µas].
        texture_prob: probability of the turbulent texture; ``turbulence``: its ``τ``; ``correlation_uas``
            its correlation length [µas].
        component_prob: probability of an extra off-centre Gaussian component.
        family_probs: probability of each of :data:`FAMILIES` (missing: 0).
        supersample: sub-pixels per pixel side.
    """

    npix: int = 64
    fov_uas: float = 160.0
    diameter_uas: tuple[float, float] = (15.0, 70.0)
    width_uas: tuple[float, float] = (2.0, 25.0)
    azimuthal: float = 0.95
    blur_uas: tuple[float, float] = (0.0, 12.0)
    flux_jy: tuple[float, float] = (0.3, 3.0)
    shift_uas: float = 8.0
    texture_prob: float = 0.35
    turbulence: tuple[float, float] = (0.3, 1.0)
    correlation_uas: tuple[float, float] = (2.0, 10.0)
    component_prob: float = 0.3
    family_probs: dict[str, float] = field(
        default_factory=lambda: dict(ring=0.3, crescent=0.2, disk=0.1, double_ring=0.1, ring_jet=0.15, blobs=0.15)
    )
    supersample: int = 2

    def __post_init__(self) -> None:
        if self.npix < 4 or self.fov_uas <= 0 or self.supersample < 1:
            raise ValueError(
                f"BroadImageConfig: need npix >= 4, fov_uas > 0, supersample >= 1; got {self.npix}, "
                f"{self.fov_uas}, {self.supersample}"
            )
        unknown = set(self.family_probs) - set(FAMILIES)
        if unknown or min(self.family_probs.values(), default=-1) < 0 or sum(self.family_probs.values()) <= 0:
            raise ValueError(f"BroadImageConfig: family_probs must map some of {FAMILIES} to p >= 0 (sum > 0), "
                             f"got {self.family_probs}")  # fmt: skip
        for name in ("diameter_uas", "width_uas", "blur_uas", "flux_jy", "turbulence", "correlation_uas"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"BroadImageConfig: {name} must be 0 <= lo <= hi, got {(lo, hi)}")
        for name in ("texture_prob", "component_prob", "azimuthal"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"BroadImageConfig: {name} must lie in [0, 1], got {getattr(self, name)}")

    @property
    def psize(self) -> float:
        """Pixel size, radians."""
        return self.fov_uas / self.npix * RAD_PER_UAS

    def to_dict(self) -> dict:
        return asdict(self)


def split_config(split: str, side: str, base: BroadImageConfig | None = None) -> BroadImageConfig:
    """One side (``"train"`` or ``"test"``) of a held-out split of :data:`SPLITS`.

    ``texture``: train ``texture_prob = 0``, test ``texture_prob = 1``. ``double_ring``: train without the
    family, test only on it (without texture, to isolate the shape). ``"train"`` of ``"both"`` (``split="both"``)
    holds both out: the law of the shipped ``black-hole-eht-64`` prior.
    """
    cfg = base or BroadImageConfig()
    if side not in ("train", "test"):
        raise ValueError(f"split_config: side must be 'train' or 'test', got {side!r}")
    if split == "both" and side == "train":
        return split_config("double_ring", "train", split_config("texture", "train", cfg))
    if split == "texture":
        return dataclasses.replace(cfg, texture_prob=0.0 if side == "train" else 1.0)
    if split == "double_ring":
        if side == "test":
            return dataclasses.replace(cfg, family_probs={"double_ring": 1.0}, texture_prob=0.0)
        return dataclasses.replace(cfg, family_probs={k: v for k, v in cfg.family_probs.items() if k != "double_ring"})
    raise ValueError(f"split_config: split must be one of {SPLITS} (or 'both' for train), got {split!r}")


def _col(t: Tensor) -> Tensor:
    return t.reshape(-1, 1, 1).to(torch.float32)


def _unit(img: Tensor) -> Tensor:
    return img / img.sum((1, 2), keepdim=True).clamp_min(1e-30)


def _polar(x: Tensor, y: Tensor, x0: Tensor, y0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    dx, dy = x - _col(x0), y - _col(y0)
    return dx, dy, torch.sqrt(dx**2 + dy**2), torch.atan2(dx, dy)


def _azimuthal(theta: Tensor, amp: Tensor, phase: Tensor) -> Tensor:
    """``max(0, 1 + Σ_m a_m cos(m(θ - φ_m)))`` with ``amp``, ``phase`` ``(B, 3)``."""
    out = torch.ones_like(theta)
    for m in range(3):
        out = out + _col(amp[:, m]) * torch.cos((m + 1) * (theta - _col(phase[:, m])))
    return out.clamp_min(0.0)


def _gauss(x: Tensor, y: Tensor, fwhm: Tensor, ratio: Tensor, angle: Tensor, x0: Tensor, y0: Tensor) -> Tensor:
    """Unit-sum elliptical Gaussians, major axis at ``angle`` east of north."""
    dx, dy = x - _col(x0), y - _col(y0)
    ca, sa = torch.cos(_col(angle)), torch.sin(_col(angle))
    s_maj = _col(fwhm) * _FWHM_TO_SIGMA
    g = torch.exp(-0.5 * (((dx * sa + dy * ca) / s_maj) ** 2 + ((dx * ca - dy * sa) / (s_maj * _col(ratio))) ** 2))
    return _unit(g)


def _ring(x, y, d, w, x0, y0, amp, phase, floor) -> Tensor:
    _, _, r, th = _polar(x, y, x0, y0)
    s = _col(w) * _FWHM_TO_SIGMA
    ring = _unit(torch.exp(-0.5 * ((r - _col(d) / 2) / s) ** 2) * _azimuthal(th, amp, phase))
    inside = _unit(torch.sigmoid((_col(d) / 2 - r) / s))
    return (1 - _col(floor)) * ring + _col(floor) * inside


def _blur(img: Tensor, fwhm_px: Tensor) -> Tensor:
    """Gaussian blur (FFT, zero-padded to avoid wrap-around) of ``(B, n, n)`` by ``fwhm_px`` ``(B,)`` pixels."""
    n = img.shape[-1]
    pad = torch.nn.functional.pad(img, (0, n, 0, n))
    k = torch.fft.fftfreq(2 * n, device=img.device)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    s = _col(fwhm_px * _FWHM_TO_SIGMA)
    out = torch.fft.ifft2(torch.fft.fft2(pad) * torch.exp(-2 * math.pi**2 * s**2 * k2)).real[:, :n, :n]
    return out.clamp_min(0.0)


def sample_family_images(
    n: int, config: BroadImageConfig | None = None, *, generator: torch.Generator
) -> tuple[Tensor, dict[str, Tensor]]:
    """Draw ``n`` images of the broad generator (module docstring) and their parameters.

    Returns ``(images, params)``: ``(n, 1, npix, npix)`` float32 Jy/pixel on the generator's device; params
    ``(n,)`` tensors ``family`` (index into :data:`FAMILIES`), ``diameter_uas``, ``width_uas``, ``pa_deg`` (the
    brightest azimuth of the ``m = 1`` mode, east of north), ``textured`` (0/1), ``flux_jy``, ``x0_uas``,
    ``y0_uas``, ``blur_uas``. ``diameter_uas`` is the (outer) ring's or disc's diameter, for ``blobs`` the
    spread of the components.
    """
    cfg = config or BroadImageConfig()
    if n < 1:
        raise ValueError(f"sample_family_images: n must be >= 1, got {n}")
    g, dev = generator, generator.device
    N, ss = cfg.npix, cfg.supersample
    psize_uas = cfg.fov_uas / N
    x, y = image_grid(N, psize_uas, supersample=ss, device=dev)  # µas

    def draw(lo_hi: tuple[float, float], *shape: int) -> Tensor:
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * uniform((n, *shape) if shape else (n,), g)

    probs = torch.tensor([cfg.family_probs.get(f, 0.0) for f in FAMILIES], dtype=torch.float64)
    cdf = torch.cumsum(probs / probs.sum(), 0).to(torch.float32).to(dev)
    fam = torch.searchsorted(cdf, uniform((n,), g)).clamp_max(len(FAMILIES) - 1)
    d = draw(cfg.diameter_uas)
    w = torch.minimum(draw(cfg.width_uas), 0.7 * d)
    amp = uniform((n, 3), g) * torch.tensor([cfg.azimuthal, cfg.azimuthal / 2, cfg.azimuthal / 2], device=dev)
    amp = amp * (uniform((n, 3), g) < torch.tensor([0.9, 0.4, 0.25], device=dev)).float()
    phase = 2 * math.pi * uniform((n, 3), g)
    x0 = (2 * uniform((n,), g) - 1) * cfg.shift_uas
    y0 = (2 * uniform((n,), g) - 1) * cfg.shift_uas
    floor = 0.15 * uniform((n,), g)
    aux = uniform((n, 8), g)  # per-family shape parameters
    u = uniform((n, 4), g)  # modifiers: texture, component, component position (2)
    tau, corr = draw(cfg.turbulence), draw(cfg.correlation_uas)
    blur, flux = draw(cfg.blur_uas), draw(cfg.flux_jy)
    field_ = gaussian_random_field(n, N * ss, corr / psize_uas * ss, generator=g)
    comp_fwhm, comp_frac = 5 + 15 * aux[:, 6], 0.05 + 0.25 * aux[:, 7]
    comp_r, comp_phi = 55 * u[:, 2].sqrt(), 2 * math.pi * u[:, 3]

    base = torch.zeros((n, N * ss, N * ss), device=dev)
    for code, name in enumerate(FAMILIES):
        i = torch.nonzero(fam == code).reshape(-1)
        if i.numel() == 0:
            continue
        a = aux[i]
        xs, ys = x, y
        if name == "ring":
            img = _ring(xs, ys, d[i], w[i], x0[i], y0[i], amp[i], phase[i], floor[i])
        elif name == "crescent":
            one = torch.ones(i.numel(), device=dev)
            cres = crescent_images(N * ss, psize_uas / ss * RAD_PER_UAS, d[i] * RAD_PER_UAS, w[i] * RAD_PER_UAS,
                                   0.3 + 0.7 * a[:, 0], phase[i, 0], one, x0=x0[i] * RAD_PER_UAS,
                                   y0=y0[i] * RAD_PER_UAS, supersample=1)[:, 0]  # fmt: skip
            _, _, _, th = _polar(xs, ys, x0[i], y0[i])
            img = _unit(cres * _azimuthal(th, amp[i] * 0.5, phase[i]))
        elif name == "disk":
            dx, dy = xs - _col(x0[i]), ys - _col(y0[i])
            ang, ratio = phase[i, 1], 0.6 + 0.4 * a[:, 0]
            ca, sa = torch.cos(_col(ang)), torch.sin(_col(ang))
            rr = torch.sqrt((dx * sa + dy * ca) ** 2 + ((dx * ca - dy * sa) / _col(ratio)) ** 2) / (_col(d[i]) / 2)
            profile = (1 - rr**2).clamp_min(0) ** _col(2 * a[:, 1]) * torch.sigmoid((1 - rr) * _col(d[i]) / 2)
            img = _unit(profile + 1e-6 * torch.exp(-(rr**2)))
        elif name == "double_ring":
            d2 = d[i] * (0.35 + 0.45 * a[:, 0])
            off, ang = d[i] / 4 * a[:, 1], 2 * math.pi * a[:, 2]
            ratio = 0.2 + 0.8 * a[:, 3]
            r1 = _ring(xs, ys, d[i], w[i].clamp_max(d[i] / 4), x0[i], y0[i], amp[i], phase[i], 0 * floor[i])
            r2 = _ring(xs, ys, d2, w[i].clamp_max(d2 / 4), x0[i] + off * torch.sin(ang), y0[i] + off * torch.cos(ang),
                       amp[i].flip(1), phase[i].flip(1), 0 * floor[i])  # fmt: skip
            img = (r1 + _col(ratio) * r2) / (1 + _col(ratio))
        elif name == "ring_jet":
            ring = _ring(xs, ys, d[i], w[i], x0[i], y0[i], amp[i], phase[i], floor[i])
            length, frac, jet_pa = 35 + 40 * a[:, 0], 0.15 + 0.35 * a[:, 1], phase[i, 2]
            counter = (a[:, 2] < 0.4).float() * 0.3
            jet = torch.zeros_like(ring)
            for k in range(1, 9):  # widening knots with fading brightness
                t = length * k / 8
                fw = 4 + t * (0.2 + 0.3 * a[:, 3])
                bright = torch.exp(-2.0 * k / 8 * (0.5 + a[:, 4]))
                for sign, weight in ((1.0, 1.0 + 0 * counter), (-1.0, counter)):
                    cx, cy = x0[i] + sign * t * torch.sin(jet_pa), y0[i] + sign * t * torch.cos(jet_pa)
                    jet = jet + _col(bright * weight) * _gauss(xs, ys, fw, 0.6 + 0 * fw, jet_pa, cx, cy)
            img = (1 - _col(frac)) * ring + _col(frac) * _unit(jet)
        else:  # blobs: 1-3 elliptical Gaussians within d/2 of the centre
            k_blobs = 1 + (a[:, 0] * 3).long().clamp_max(2)
            img = torch.zeros((i.numel(), N * ss, N * ss), device=dev)
            for k in range(3):
                on = (k < k_blobs).float()
                rad, ang = d[i] / 2 * a[:, 1 + k], phase[i, k] + k * 2.1
                fw = 8 + 32 * a[:, 4 + k % 2] * (0.5 + 0.5 * amp[i, k].clamp_max(1))
                blob = _gauss(xs, ys, fw, 0.4 + 0.6 * a[:, 3], phase[i, (k + 1) % 3],
                              x0[i] + rad * torch.sin(ang), y0[i] + rad * torch.cos(ang))  # fmt: skip
                img = img + _col(on * (1.0 - 0.3 * k)) * blob
            img = _unit(img)
        base[i] = _unit(img)
    textured = (u[:, 0] < cfg.texture_prob).float()
    t = _col(tau * textured)
    base = _unit(base * torch.exp(t * field_ - 0.5 * t**2))
    with_comp = (u[:, 1] < cfg.component_prob).float()
    comp = _gauss(x, y, comp_fwhm, torch.ones(n, device=dev), phase[:, 0], x0 + comp_r * torch.sin(comp_phi),
                  y0 + comp_r * torch.cos(comp_phi))  # fmt: skip
    frac = _col(comp_frac * with_comp)
    base = (1 - frac) * base + frac * comp
    base = _blur(base, blur / psize_uas * ss)
    images = torch.nn.functional.avg_pool2d(base[:, None], ss) if ss > 1 else base[:, None]
    images = images * (flux.reshape(-1, 1, 1, 1) / images.sum((2, 3), keepdim=True).clamp_min(1e-30))
    params = {
        "family": fam,
        "diameter_uas": d,
        "width_uas": w,
        "pa_deg": torch.rad2deg(phase[:, 0]) % 360.0,
        "textured": textured,
        "flux_jy": flux,
        "x0_uas": x0,
        "y0_uas": y0,
        "blur_uas": blur,
    }
    return images.to(torch.float32), params
