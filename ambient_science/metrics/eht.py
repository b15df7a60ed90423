"""Black-hole imaging metrics (docs/design.md §8): aligned and blurred PSNR, nxcorr, ring diameter and PA, closure χ².

Images are real ``(N, N)`` arrays (or tensors; ``(1, N, N)`` and ``(1, 1, N, N)`` are squeezed) in the
library convention: row 0 north, column 0 east, pixel size ``psize`` in radians. Angular results are
reported in µas, position angles in degrees east of north. Every metric returns Python floats.

- :func:`best_shift`: the sub-pixel translation maximising the LINEAR cross-correlation, never a wrap-around one:
  both images are zero-padded to ``2N × 2N``, the integer peak of their FFT cross-correlation is searched over
  shifts in ``[-N, N)`` along each axis, then refined to ``1/upsample`` pixel (default 1/20) by an upsampled DFT
  on ±1 pixel around it; :func:`shift_image` applies a shift by the Fourier shift theorem on the same padded
  grid and crops back, so flux moved out of the field is lost, never wrapped to the opposite edge. Every
  "after the best shift" metric (PSNR, blurred PSNR, nxcorr) uses this search.
- :func:`psnr_shifted`: ``PSNR = 10 log10(range² / MSE)`` after the best shift, ``range = max - min`` of truth.
- :func:`blurred_psnr`: the same after blurring both images with a circular Gaussian of FWHM ``fwhm_uas``.
- :func:`nxcorr`: ``mean((a - ā)/s_a · (b - b̄)/s_b)`` (population std), optionally after the best shift.
- :func:`ring_fit`: ring centre (minimising the spread of per-angle peak radii near the centre of
  light), diameter ``2 · mean(r_peak(θ))`` (weighted by the peak brightness), and the brightness position
  angle ``arg Σ P(θ) e^{iθ}`` of the angular profile ``P(θ)`` of the ring annulus (first angular moment),
  its amplitude ``|Σ P e^{iθ}| / Σ P`` the asymmetry (``a/2`` for brightness ``∝ 1 + a cos(θ - PA)``).
- :func:`isolated_pixels`: the count of isolated saturated pixels (speckle) per image: a pixel above ``k``
  times the largest of its eight neighbours (edge pixels: of those inside the image) and above ``rel`` of the
  image's peak; :func:`remove_isolated_pixels` replaces each by that neighbour maximum.
- :func:`closure_chi2`: normalised closure-phase and log-closure-amplitude χ² of an image against
  observed visibilities, through ``operators.closure``, over MINIMAL closure sets chosen as ehtim chooses
  them: per time, candidate triangles / quadrangles in the order of a station priority (the lowest-SEFD
  station first, ehtim's reference) are kept when linearly independent of those already kept, so with all
  ``n`` stations present there are ``(n-1)(n-2)/2`` closure phases and ``n(n-3)/2`` log closure amplitudes
  (the triangles through the reference station); the log closure amplitudes are debiased as in ehtim. The χ²
  divide by the number of closure quantities ``n``, not by degrees of freedom.

    >>> import numpy as np
    >>> a = np.zeros((32, 32)); a[10:14, 12:18] = 1.0
    >>> b = np.roll(a, (2, -3), axis=(0, 1))
    >>> [round(s, 2) for s in best_shift(b, a)]
    [-2.0, 3.0]
    >>> psnr_shifted(b, a) > 60
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ambient_science.operators.closure import ClosureData
from ambient_science.operators.interferometry import Interferometer

__all__ = [
    "RingFit",
    "best_shift",
    "blurred_psnr",
    "closure_chi2",
    "gaussian_blur",
    "isolated_pixels",
    "neighbour_max",
    "nxcorr",
    "psnr",
    "psnr_shifted",
    "remove_isolated_pixels",
    "ring_diameter",
    "ring_fit",
    "ring_position_angle",
    "shift_image",
]

_RAD_PER_UAS = math.pi / 180.0 / 3600.0 / 1e6


def neighbour_max(img: Tensor, fill: float = -math.inf) -> Tensor:
    """The largest of the eight neighbours of every pixel of ``(B, 1, N, N)``, differentiable (outside the image
    counts as ``fill``: ``-inf`` ignores it, the isolated-pixel test's choice)."""
    pad = torch.nn.functional.pad(img, (1, 1, 1, 1), value=fill)
    patches = torch.nn.functional.unfold(pad, 3).reshape(img.shape[0], 9, *img.shape[-2:])
    return torch.cat([patches[:, :4], patches[:, 5:]], 1).amax(1, keepdim=True)


def _speckle_mask(img: Tensor, k: float, rel: float) -> tuple[Tensor, Tensor]:
    nb = neighbour_max(img)
    peak = img.flatten(1).amax(1).view(-1, 1, 1, 1)
    return (img > k * nb.clamp_min(0)) & (img > rel * peak), nb


def isolated_pixels(images: Any, *, k: float = 3.0, rel: float = 0.01) -> Tensor:
    """Isolated saturated pixels per image: above ``k`` × the largest of the eight neighbours and above ``rel`` ×
    the image's peak. ``images`` ``(..., N, N)`` -> counts ``(...)`` (int64 tensor)."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images).to(torch.float64)
    lead = x.shape[:-2]
    mask, _ = _speckle_mask(x.reshape(-1, 1, *x.shape[-2:]), k, rel)
    return mask.flatten(1).sum(1).reshape(lead)


def remove_isolated_pixels(images: Tensor, *, k: float = 3.0, rel: float = 0.01) -> Tensor:
    """``images`` ``(..., N, N)`` with every isolated saturated pixel (:func:`isolated_pixels`) replaced by the
    largest of its neighbours; the same shape and dtype."""
    x = images.reshape(-1, 1, *images.shape[-2:])
    mask, nb = _speckle_mask(x, k, rel)
    return torch.where(mask, nb.to(x.dtype), x).reshape(images.shape)


def _image(x: Any, what: str = "image") -> Tensor:
    """A single real square image as a float64 ``(N, N)`` tensor (CPU)."""
    t = torch.as_tensor(np.asarray(x.detach().cpu()) if isinstance(x, Tensor) else np.asarray(x))
    if t.is_complex():
        raise ValueError(f"{what} must be real, got a complex array")
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"{what} must be one square image (N, N) (or (1, N, N), (1, 1, N, N)), got {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or Inf")
    return t


def _pair(estimate: Any, truth: Any) -> tuple[Tensor, Tensor]:
    e, t = _image(estimate, "estimate"), _image(truth, "truth")
    if e.shape != t.shape:
        raise ValueError(f"estimate {tuple(e.shape)} and truth {tuple(t.shape)} differ in shape")
    return e, t


# -- alignment -------------------------------------------------------------------------------------------------


def _cross_power(estimate: Tensor, truth: Tensor) -> Tensor:
    return torch.fft.fft2(truth) * torch.fft.fft2(estimate).conj()


def _dft_correlation(cross: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """``c(s) = Re Σ_k C(k) e^{2πi k·s/N}`` at shifts ``(dy_a, dx_b)``: an upsampled DFT, ``(len(dy), len(dx))``."""
    N = cross.shape[0]
    k = torch.fft.fftfreq(N, dtype=torch.float64) * N
    ey = torch.exp(2j * math.pi * dy[:, None] * k[None, :] / N)  # (A, N)
    ex = torch.exp(2j * math.pi * k[:, None] * dx[None, :] / N)  # (N, B)
    return (ey @ cross @ ex).real


def best_shift(estimate: Any, truth: Any, *, upsample: int = 20) -> tuple[float, float]:
    """The translation ``(dy, dx)`` in pixels that best aligns ``estimate`` to ``truth``.

    ``s* = argmax_s Σ_r truth(r) · estimate(r - s)`` over linear (zero-padded, never wrap-around) shifts
    ``|s| < N``: the integer FFT cross-correlation peak on a ``2N`` grid, refined to ``1/upsample`` pixel by
    an upsampled DFT on ±1 pixel around it.
    :func:`shift_image` (``estimate``, ``s*``) is then aligned to ``truth``. ``dy > 0`` moves the image
    towards higher row indices (south), ``dx > 0`` towards higher columns (west).
    """
    e, t = _pair(estimate, truth)
    N = 2 * e.shape[0]  # zero-padded: a linear correlation
    e = torch.nn.functional.pad(e, (0, e.shape[1], 0, e.shape[0]))
    t = torch.nn.functional.pad(t, (0, t.shape[1], 0, t.shape[0]))
    cross = _cross_power(e, t)
    cc = torch.fft.ifft2(cross).real
    iy, ix = divmod(int(torch.argmax(cc)), N)
    iy, ix = (iy + N // 2) % N - N // 2, (ix + N // 2) % N - N // 2  # to [-N/2, N/2)
    if upsample <= 1:
        return float(iy), float(ix)
    offs = torch.arange(-upsample, upsample + 1, dtype=torch.float64) / upsample
    fine = _dft_correlation(cross, iy + offs, ix + offs)
    a, b = divmod(int(torch.argmax(fine)), offs.numel())
    return float(iy + offs[a]), float(ix + offs[b])


def shift_image(image: Any, shift: tuple[float, float]) -> np.ndarray:
    """Translate an image by ``(dy, dx)`` pixels: ``F⁻¹[F[x] e^{-2πi k·s/2N}]`` on the image zero-padded to
    ``2N × 2N``, cropped back to ``N × N`` (flux moved out of the field is lost, never wrapped around).

    Shape: ``(N, N)`` -> ``(N, N)`` float64 numpy array.
    """
    x = _image(image)
    n0, n1 = x.shape
    x = torch.nn.functional.pad(x, (0, n1, 0, n0))
    ky = torch.fft.fftfreq(2 * n0, dtype=torch.float64)
    kx = torch.fft.fftfreq(2 * n1, dtype=torch.float64)
    phase = torch.exp(-2j * math.pi * (ky[:, None] * shift[0] + kx[None, :] * shift[1]))
    return torch.fft.ifft2(torch.fft.fft2(x) * phase).real[:n0, :n1].numpy()


# -- PSNR, blur, nxcorr ----------------------------------------------------------------------------------------


def psnr(estimate: Any, truth: Any, *, data_range: float | None = None) -> float:
    """``10 log10(range² / mean((estimate - truth)²))`` with ``range = max(truth) - min(truth)`` by default, dB."""
    e, t = _pair(estimate, truth)
    rng = float(t.max() - t.min()) if data_range is None else float(data_range)
    if rng <= 0:
        raise ValueError("psnr: truth is constant; pass data_range")
    mse = float(((e - t) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(rng**2 / mse)


def psnr_shifted(estimate: Any, truth: Any, *, data_range: float | None = None, upsample: int = 20) -> float:
    """PSNR (dB) of ``estimate`` after the best sub-pixel shift onto ``truth`` (:func:`best_shift`)."""
    e, t = _pair(estimate, truth)
    return psnr(shift_image(e, best_shift(e, t, upsample=upsample)), t, data_range=data_range)


def gaussian_blur(image: Any, fwhm: float, psize: float) -> np.ndarray:
    """Convolve with a unit-sum circular Gaussian of FWHM ``fwhm`` (radians; pixel size ``psize`` radians).

    ``x * G``, ``G ∝ exp(-r²/2s²)``, ``s = fwhm / √(8 ln 2)``; computed by FFT on a 2× zero-padded grid
    (no wrap-around); flux blurred beyond the field is cropped. Shape: ``(N, N)`` -> ``(N, N)`` float64 numpy array.
    """
    x = _image(image)
    if fwhm <= 0:
        return x.numpy()
    N = x.shape[0]
    M = 2 * N
    s_pix = fwhm / psize / math.sqrt(8 * math.log(2))
    k = torch.fft.fftfreq(M, dtype=torch.float64)
    transfer = torch.exp(-2 * math.pi**2 * s_pix**2 * (k[:, None] ** 2 + k[None, :] ** 2))
    pad = torch.zeros((M, M), dtype=torch.float64)
    pad[:N, :N] = x
    out = torch.fft.ifft2(torch.fft.fft2(pad) * transfer).real
    # linear convolution: spill past either edge lands in the padding (and is cropped away)
    return out[:N, :N].numpy()


def blurred_psnr(
    estimate: Any,
    truth: Any,
    *,
    psize: float,
    fwhm_uas: float = 20.0,
    shift: bool = True,
    data_range: float | None = None,
) -> float:
    """PSNR (dB) after blurring both images with a Gaussian of FWHM ``fwhm_uas`` µas (and the best shift).

    Report the FWHM with the number (e.g. "blurred PSNR at 20 µas"); ``psize`` is in radians.
    """
    e, t = _pair(estimate, truth)
    fwhm = fwhm_uas * _RAD_PER_UAS
    eb, tb = gaussian_blur(e, fwhm, psize), gaussian_blur(t, fwhm, psize)
    if shift:
        eb = shift_image(eb, best_shift(eb, tb))
    return psnr(eb, tb, data_range=data_range)


def nxcorr(estimate: Any, truth: Any, *, shift: bool = False) -> float:
    """Normalised cross-correlation ``mean((a - ā)/s_a · (b - b̄)/s_b)`` in [-1, 1] (population std).

    With ``shift=True`` the estimate is first moved by :func:`best_shift`. A constant image gives 0.
    """
    e, t = _pair(estimate, truth)
    if shift:
        e = torch.as_tensor(shift_image(e, best_shift(e, t)))
    se, st = e.std(unbiased=False), t.std(unbiased=False)
    if float(se) == 0 or float(st) == 0:
        return 0.0
    return float((((e - e.mean()) / se) * ((t - t.mean()) / st)).mean())


# -- ring features ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RingFit:
    """Ring features: diameter and width (FWHM of the mean radial profile) in µas, centre ``(x, y)`` east/north
    of the image centre in µas, brightness position angle in degrees east of north, asymmetry in [0, 1]."""

    diameter_uas: float
    width_uas: float
    center_x_uas: float
    center_y_uas: float
    pa_deg: float
    asymmetry: float


def _polar(img: Tensor, cx: Tensor, cy: Tensor, radii: Tensor, theta: Tensor) -> Tensor:
    """Bilinear samples ``I(c + r (sin θ, cos θ))`` for candidate centres (pixels, east/north of centre).

    Shape: ``cx, cy (C,)`` -> ``(C, len(theta), len(radii))``.
    """
    N = img.shape[0]
    # east offset x (pixels) -> column N/2 - 0.5 - x; north offset y -> row N/2 - 0.5 - y
    x = cx[:, None, None] + radii[None, None, :] * torch.sin(theta)[None, :, None]
    y = cy[:, None, None] + radii[None, None, :] * torch.cos(theta)[None, :, None]
    col = N / 2 - 0.5 - x
    row = N / 2 - 0.5 - y
    grid = torch.stack([2 * col / (N - 1) - 1, 2 * row / (N - 1) - 1], dim=-1)  # align_corners=True
    out = torch.nn.functional.grid_sample(
        img[None, None].expand(cx.shape[0], 1, N, N),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return out[:, 0]


def _peak_radius(profile: Tensor, radii: Tensor) -> tuple[Tensor, Tensor]:
    """Radius and value of the maximum of each profile (last axis), refined by a parabola through 3 points."""
    i = profile.argmax(dim=-1).clamp(1, profile.shape[-1] - 2)
    left = profile.gather(-1, (i - 1)[..., None])[..., 0]
    mid = profile.gather(-1, i[..., None])[..., 0]
    right = profile.gather(-1, (i + 1)[..., None])[..., 0]
    denom = left - 2 * mid + right
    off = torch.where(denom < 0, 0.5 * (left - right) / denom.clamp_max(-1e-300), torch.zeros_like(mid)).clamp(-1, 1)
    step = radii[1] - radii[0]
    return radii[i] + off * step, mid - 0.25 * (left - right) * off


def _weighted_mean_std(r: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of ``r`` over the last axis with weights ``w >= 0``."""
    w = w.clamp_min(0.0)
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-300)
    mean = (w * r).sum(-1)
    return mean, ((w * (r - mean[..., None]) ** 2).sum(-1)).sqrt()


def ring_fit(
    image: Any,
    psize: float,
    *,
    radius_range_uas: tuple[float, float] = (10.0, 40.0),
    n_angles: int = 72,
    search_uas: float = 10.0,
) -> RingFit:
    """Fit ring features to an image (definitions in the module docstring).

    The centre is searched on a grid within ``search_uas`` of the centre of light (coarse, then fine) for
    the smallest relative spread of the per-angle peak radii ``r_peak(θ)`` within ``radius_range_uas``;
    diameter ``d = 2 Σ_θ w_θ r_peak(θ) / Σ_θ w_θ`` with ``w_θ`` the peak brightness (dim sectors count
    less; spread weighted alike); width: FWHM of the angle-averaged radial profile; PA and asymmetry from
    ``P(θ) = ∫ I(r, θ) r dr`` over ``|r - d/2| <= max(width, 2 px)``.
    ``psize`` in radians. Meaningful for ring-like images only.
    """
    img = _image(image).clamp_min(0.0)
    N = img.shape[0]
    total = float(img.sum())
    if total <= 0:
        raise ValueError("ring_fit: image has no positive flux")
    ps_uas = psize / _RAD_PER_UAS
    c = N / 2 - 0.5 - torch.arange(N, dtype=torch.float64)
    x0 = float((img.sum(0) * c).sum() / total)  # centre of light, pixels east
    y0 = float((img.sum(1) * c).sum() / total)  # pixels north
    r_lo, r_hi = (r / ps_uas for r in radius_range_uas)
    radii = torch.linspace(r_lo, r_hi, max(16, int(4 * (r_hi - r_lo))), dtype=torch.float64)
    theta = torch.arange(n_angles, dtype=torch.float64) * (2 * math.pi / n_angles)

    def spread(cx: Tensor, cy: Tensor) -> Tensor:
        mean, std = _weighted_mean_std(*_peak_radius(_polar(img, cx, cy, radii, theta), radii))
        return std / mean.clamp_min(1e-12)

    span = search_uas / ps_uas
    best = (x0, y0)
    for width, steps in ((span, 11), (2 * span / 10, 9)):
        g = torch.linspace(-width, width, steps, dtype=torch.float64)
        gy, gx = torch.meshgrid(g + best[1], g + best[0], indexing="ij")
        s = spread(gx.reshape(-1), gy.reshape(-1))
        k = int(torch.argmin(s))
        best = (float(gx.reshape(-1)[k]), float(gy.reshape(-1)[k]))
    cx, cy = torch.tensor([best[0]], dtype=torch.float64), torch.tensor([best[1]], dtype=torch.float64)
    polar = _polar(img, cx, cy, radii, theta)[0]  # (A, R)
    r_ring = float(_weighted_mean_std(*_peak_radius(polar, radii))[0])
    mean_profile = polar.mean(0)
    half = float(mean_profile.max()) / 2
    above = radii[mean_profile >= half]
    width_px = float(above.max() - above.min()) if above.numel() > 1 else float(radii[1] - radii[0])
    band = max(width_px, 2.0)
    fine_r = torch.linspace(max(r_ring - band, 0.0), r_ring + band, 32, dtype=torch.float64)
    P = (_polar(img, cx, cy, fine_r, theta)[0] * fine_r[None, :]).sum(-1)  # ∫ I r dr per angle
    moment = (P * torch.exp(1j * theta)).sum() / P.sum().clamp_min(1e-300)
    return RingFit(
        diameter_uas=2 * r_ring * ps_uas,
        width_uas=width_px * ps_uas,
        center_x_uas=best[0] * ps_uas,
        center_y_uas=best[1] * ps_uas,
        pa_deg=math.degrees(math.atan2(float(moment.imag), float(moment.real))) % 360.0,
        asymmetry=float(moment.abs()),
    )


def ring_diameter(image: Any, psize: float, **kwargs: Any) -> float:
    """Ring diameter in µas (:func:`ring_fit`); ``psize`` in radians."""
    return ring_fit(image, psize, **kwargs).diameter_uas


def ring_position_angle(image: Any, psize: float, **kwargs: Any) -> float:
    """Brightness position angle of the ring, degrees east of north in [0, 360) (:func:`ring_fit`)."""
    return ring_fit(image, psize, **kwargs).pa_deg


# -- closure chi-squared ---------------------------------------------------------------------------------------


def closure_chi2(image: Any, obs: Any, psize: float, *, closure_data: Any | None = None) -> dict[str, float]:
    """Normalised closure-phase and log-closure-amplitude χ² of ``image`` against observed visibilities.

    ``obs``: anything with ``time, t1, t2, u, v, vis, sigma`` (a ``datasets.uvfits.Observation``, or an
    ``operators.uvcoverage.Coverage`` with ``vis``). The closure quantities of ``obs`` (minimal sets per
    time, sigmas propagated from ``sigma``; ``operators.closure.ClosureData``, pass ``closure_data`` to
    reuse one) are compared with those of the image's visibilities ``A x`` (``operators.interferometry``):
    ``χ²_cp = (2/n) Σ (1 - cos Δψ)/σ_ψ²``, ``χ²_lca = Σ (ΔL/σ_L)² / n`` (ehtim's normalisations). About 1 for
    an image that fits to the noise. ``psize`` in radians.

    Returns ``{"cphase": χ²_cp, "logcamp": χ²_lca}``; ``logcamp`` is ``nan`` when no time has 4 stations.
    Raises ``ValueError`` when no time has 3 stations (no closure phase).
    """
    img = _image(image)
    data = ClosureData.from_observation(obs) if closure_data is None else closure_data
    uv = torch.as_tensor(np.stack([np.asarray(obs.u, np.float64), np.asarray(obs.v, np.float64)], -1))
    model = Interferometer(uv[None], img.shape[0], psize, method="dft")(img[None, None])[0]
    cphase = float(data.chisq_cphase(model))
    logcamp = float(data.chisq_logcamp(model)) if data.index.n_logcamp > 0 else math.nan
    return {"cphase": cphase, "logcamp": logcamp}
