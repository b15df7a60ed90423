"""Radio-interferometric visibilities of an image, and the family of random EHT-like coverages.

Measurement model (DESIGN.md §4, ehtim's convention, checked numerically against ehtim):

    V_k = P(u_k, v_k) Σ_j I_j exp(+2πi (u_k x_j + v_k y_j)),   P(u, v) = sinc²(u ψ) sinc²(v ψ)

on an ``N × N`` grid of pixel size ``ψ`` [rad]: row 0 is north, column 0 east, and pixel ``(r, c)`` sits
at ``x_c = (N/2 - 0.5 - c) ψ``, ``y_r = (N/2 - 0.5 - r) ψ``. ``P`` is the Fourier transform of the
triangle (linear-interpolation) pulse; ``sinc(t) = sin(πt)/(πt)``.

The exponential is separable, ``exp(2πi u x_c) exp(2πi v y_r)``, so the dense transform costs two
real batched matmuls of size ``(2K × N) · (N × N)`` and never forms the ``K × N²`` matrix. NUFFT
(``torchkbnufft``, optional extra ``nufft``) is used for images larger than 128² when installed.

>>> import torch
>>> from ambient_science.operators.interferometry import Interferometer
>>> uv = torch.tensor([[[0.0, 0.0], [2e9, -1e9]]], dtype=torch.float64)
>>> A = Interferometer(uv, npix=16, pixel_size=1e-11)
>>> x = torch.zeros(1, 1, 16, 16); x[0, 0, 3, 5] = 1.0
>>> float(A(x)[0, 0].real)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ambient_science.family import OperatorFamily, uniform
from ambient_science.linop import SubsampledOperator
from ambient_science.operators.eht_arrays import ARRAY_NAMES, StationTable, resolve_array
from ambient_science.operators.eht_noise import stokes_i_sigma
from ambient_science.operators.uvcoverage import SPEED_OF_LIGHT, baseline_uv, station_elevation

__all__ = [
    "Interferometer",
    "InterferometerFamily",
    "density_weights",
    "pixel_coordinates",
    "triangle_pulse",
    "uas_to_rad",
]

UAS = math.pi / 180.0 / 3600.0 / 1e6  # one microarcsecond in radians
SIDEREAL_TO_SOLAR = 0.99726956633  # one sidereal hour in solar hours
_METHODS = ("auto", "dft", "nufft")


def uas_to_rad(uas: float) -> float:
    """Microarcseconds -> radians."""
    return float(uas) * UAS


def pixel_coordinates(npix: int, pixel_size: float, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Sky offsets of the pixel centres, ``(N/2 - 0.5 - j) ψ`` for ``j = 0 .. N-1`` [rad].

    Shape: ``(npix,)``; east (x, by column) and north (y, by row) use the same values.
    """
    return (npix / 2 - 0.5 - torch.arange(npix, dtype=dtype, device=device)) * pixel_size


def triangle_pulse(uv: Tensor, pixel_size: float) -> Tensor:
    """``P(u, v) = sinc²(u ψ) sinc²(v ψ)``, the Fourier transform of the triangle pixel pulse.

    Shape: ``uv (..., 2)`` [wavelengths] -> ``(...)`` real.
    """
    s = torch.sinc(uv * pixel_size) ** 2
    return s[..., 0] * s[..., 1]


def density_weights(
    uv: Tensor, observed: Tensor, npix: int, pixel_size: float, *, oversample: int = 4, chunk: int = 256
) -> Tensor:
    """Row weights ``w_k = sqrt(2 / n_k) / N`` that make ``AᴴA`` close to an orthogonal projection.

    ``n_k = Σ_j m_j [Λ(u_k − u_j) + Λ(u_k + u_j)]`` counts the observed visibilities within one Fourier cell
    (``1/FOV``, ``FOV = N ψ``) of ``u_k`` or of its mirror ``−u_k`` (the same real-image information), with the
    triangle ``Λ(Δ) = max(0, 1 − |Δu| FOV) · max(0, 1 − |Δv| FOV)``, evaluated on a grid ``oversample`` times
    finer than the cells (points snapped to it). An isolated visibility (``n_k = 2`` at ``u = 0``, else 1)
    then has rows of unit norm, and a cell sampled ``n`` times counts once: the "uniform weighting" of radio
    imaging, scaled so that ``x̃ = Ãᴴ Ã x`` is at the scale of ``x`` (ambient training,
    :class:`InterferometerFamily` with ``normalize=True``).

    Shape: ``uv (B, K, 2)`` [wavelengths], ``observed (B, K)`` -> ``(B, K)`` float32, 0 where not observed.
    """
    uv = torch.as_tensor(uv)
    uv = uv[None] if uv.ndim == 2 else uv
    B, K = uv.shape[:2]
    m = torch.as_tensor(observed).to(device=uv.device, dtype=torch.float32).reshape(B, K)
    f = int(oversample)
    fov = npix * pixel_size
    half = math.ceil(float((uv.to(torch.float64).abs() * fov).amax() if uv.numel() else 0.0) * f) + f
    size = 2 * half + 1
    idx = ((uv.to(torch.float64) * (fov * f)).round().long() + half).clamp(0, size - 1)  # (B, K, 2)
    flat = idx[..., 1] * size + idx[..., 0]
    t = 1.0 - torch.arange(-f, f + 1, dtype=torch.float32, device=uv.device).abs() / f  # Λ on the fine grid
    out = torch.zeros_like(m)
    for i in range(0, B, chunk):
        mi, fi = m[i : i + chunk], flat[i : i + chunk]
        grid = torch.zeros(mi.shape[0], size * size, device=uv.device).scatter_add_(1, fi, mi)
        grid = grid.reshape(-1, 1, size, size)
        grid = grid + grid.flip(-1, -2)  # the mirror −u of every point (the grid is centred on u = 0)
        grid = torch.nn.functional.conv2d(grid, t.view(1, 1, 1, -1), padding=(0, f))
        grid = torch.nn.functional.conv2d(grid, t.view(1, 1, -1, 1), padding=(f, 0))
        n = torch.gather(grid.reshape(mi.shape[0], -1), 1, fi)
        out[i : i + chunk] = torch.where(mi > 0, (2.0 / n.clamp_min(1.0)).sqrt() / npix, 0.0)
    return out


def _full_precision(device: torch.device):
    """Autocast off: phases up to hundreds of radians need float32 at least (bf16 would be off by ~1 rad)."""
    return torch.autocast(device_type=device.type, enabled=False)


def _kbnufft():
    try:
        import torchkbnufft
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "method='nufft' needs torchkbnufft: pip install 'ambient-science[nufft]' (or use method='dft')"
        ) from err
    return torchkbnufft


def _nufft_available() -> bool:
    try:
        import torchkbnufft  # noqa: F401
    except ImportError:
        return False
    return True


class Interferometer(SubsampledOperator):
    """Visibilities of real images at per-sample uv points: ``y = w ⊙ M ⊙ P · F_uv x`` (module docstring).

    Args:
        uv: ``(B, K, 2)`` (or ``(K, 2)`` for ``B = 1``) baseline coordinates ``(u, v)`` [wavelengths];
            padding entries may hold anything finite.
        npix: image side ``N``.
        pixel_size: ``ψ`` [rad] (:func:`uas_to_rad` converts from µas).
        observed: ``(B, K)`` 0/1, 0 on padding and dropped entries (default all ones).
        t1, t2: ``(B, K)`` station indices per visibility (metadata for closures and further corruption).
        time: ``(B, K)`` hours since the start of the observation (metadata).
        sigma: ``(B, K)`` thermal noise per visibility [Jy] (metadata; weights of dirty images).
        weight: ``(B, K)`` row weights ``w`` (default 1): ``y = w ⊙ M ⊙ P · F_uv x``, e.g.
            :func:`density_weights`. They stay with the operator through :meth:`restrict`.
        method: ``"dft"`` (separable dense transform, exact), ``"nufft"`` (torchkbnufft), or ``"auto"``:
            NUFFT for ``N > 128`` when torchkbnufft is installed, else the DFT.

    Raises ``ValueError`` when an observed uv point lies outside the image's band ``|u| ψ <= 1/2``,
    ``|v| ψ <= 1/2`` (it would alias: use smaller pixels or drop the point).

    Shape: ``x (B, 1, N, N)`` real [Jy/pixel] -> ``y (B, K)`` complex [Jy] (complex64 for float32
    images, complex128 for float64). The adjoint maps back to real images, ``A^H y = Re(...)``: it is
    the adjoint for the real inner product ``Re<A x, y> = <x, A^H y>``.
    """

    def __init__(
        self,
        uv: Tensor,
        npix: int,
        pixel_size: float,
        observed: Tensor | None = None,
        *,
        t1: Tensor | None = None,
        t2: Tensor | None = None,
        time: Tensor | None = None,
        sigma: Tensor | None = None,
        weight: Tensor | None = None,
        method: str = "auto",
    ):
        uv = torch.as_tensor(uv)
        if uv.ndim == 2:
            uv = uv[None]
        if uv.ndim != 3 or uv.shape[-1] != 2 or uv.is_complex():
            raise ValueError(f"Interferometer: uv must be real (B, K, 2), got shape {tuple(uv.shape)}")
        B, K, _ = uv.shape
        npix, pixel_size = int(npix), float(pixel_size)
        if npix < 2 or not pixel_size > 0:
            raise ValueError(f"Interferometer: need npix >= 2 and pixel_size > 0, got {npix}, {pixel_size}")
        if method not in _METHODS:
            raise ValueError(f"Interferometer: method must be one of {_METHODS}, got {method!r}")
        if observed is None:
            observed = torch.ones(B, K, device=uv.device)
        observed = torch.as_tensor(observed).to(torch.float32)
        if observed.shape != (B, K):
            raise ValueError(f"Interferometer: observed must be (B, K) = {(B, K)}, got {tuple(observed.shape)}")
        uv = uv.to(torch.float64)
        if not torch.isfinite(uv).all():
            raise ValueError("Interferometer: uv contains NaN or Inf")
        band = (uv.abs() * pixel_size).amax(dim=-1) * (observed > 0)
        if bool((band > 0.5).any()):
            worst = float(band.max())
            raise ValueError(
                f"Interferometer: an observed uv point lies outside the image's band (|u| psize = {worst:.3g} > 0.5,"
                f" i.e. |u| > {0.5 / pixel_size:.4g} wavelengths); use a smaller pixel_size or drop the point"
            )
        super().__init__((B, 1, npix, npix), (B, K))
        self.npix, self.pixel_size, self.method = npix, pixel_size, method
        self.register_buffer("uv", uv)
        self.register_buffer("_observed", observed.to(uv.device))
        self._meta: list[str] = []
        for name, value, dtype in (
            ("t1", t1, torch.int64),
            ("t2", t2, torch.int64),
            ("time", time, torch.float64),
            ("sigma", sigma, torch.float32),
            ("weight", weight, torch.float32),
        ):
            if value is None:
                continue
            value = torch.as_tensor(value).to(device=uv.device, dtype=dtype)
            if value.shape != (B, K):
                raise ValueError(f"Interferometer: {name} must be (B, K) = {(B, K)}, got {tuple(value.shape)}")
            self.register_buffer(name, value)
            self._meta.append(name)

    # -- SubsampledOperator ---------------------------------------------------------------------------
    @property
    def observed(self) -> Tensor:
        return self._observed

    def restrict(self, keep: Tensor) -> Interferometer:
        return Interferometer(
            self.uv,
            self.npix,
            self.pixel_size,
            self._observed * keep.to(self._observed),
            method=self.method,
            **{k: getattr(self, k) for k in self._meta},
        )

    def params(self) -> dict[str, Tensor]:
        return {"uv": self.uv, "observed": self._observed, **{k: getattr(self, k) for k in self._meta}}

    # -- transforms -----------------------------------------------------------------------------------
    def _use_nufft(self) -> bool:
        if self.method == "auto":
            return self.npix > 128 and _nufft_available()
        return self.method == "nufft"

    def _exponentials(self, real_dtype: torch.dtype, offset: float = 0.5) -> tuple[Tensor, Tensor]:
        """``cat(cos, sin)`` of ``2π u x_c`` and of ``2π v y_r``, each ``(B, 2K, N)`` of ``real_dtype``.

        ``offset = 0.5`` gives the image grid; ``offset = 0`` a grid centred on pixel ``(N/2, N/2)``. Phases
        are computed in ``real_dtype``: exact to ~1e-15 in float64, to ~1e-5 rad in float32.
        """
        B, K = self.oshape
        N, dev = self.npix, self.uv.device
        theta = (2 * math.pi * self.pixel_size) * self.uv  # (B, K, 2) radians per pixel step, float64
        c = (N / 2 - offset - torch.arange(N, dtype=real_dtype, device=dev)).expand(B, 1, N)
        shift = torch.zeros(B, 2 * K, 1, dtype=real_dtype, device=dev)
        shift[:, K:] = -math.pi / 2  # sin(a) = cos(a - π/2): one cosine table holds both

        def table(t: Tensor) -> Tensor:  # outer product θ c_j (+ shift) in one batched matmul, then cos in place
            return torch.baddbmm(shift, torch.cat([t, t], dim=1).to(real_dtype)[..., None], c).cos_()

        return table(theta[..., 0]), table(theta[..., 1])

    def _pulse(self, dtype: torch.dtype) -> Tensor:
        """``P(u, v)``, times the row weights ``w`` when the operator has them."""
        pulse = triangle_pulse(self.uv, self.pixel_size)
        if "weight" in self._meta:
            pulse = pulse * self.weight
        return pulse.to(dtype)

    def _dft(self, x: Tensor) -> Tensor:
        """``Σ_j x_j exp(2πi (u x_j + v y_j))`` without pulse or mask. Shape: ``(B, N, N)`` -> ``(B, K)``."""
        K = self.oshape[1]
        e_u, e_v = self._exponentials(x.dtype)
        t = torch.bmm(e_v, x)  # (B, 2K, N): rows summed with cos / sin of 2π v y
        t_re, t_im = t[:, :K], t[:, K:]
        cu, su = e_u[:, :K], e_u[:, K:]
        re = (t_re * cu - t_im * su).sum(-1)
        im = (t_re * su + t_im * cu).sum(-1)
        return torch.complex(re, im)

    def _dft_adjoint(self, w: Tensor, real_dtype: torch.dtype, offset: float = 0.5) -> Tensor:
        """``Re Σ_k w_k exp(-2πi (u_k x_j + v_k y_j))``. Shape: ``(B, K)`` -> ``(B, N, N)``."""
        K = self.oshape[1]
        e_u, e_v = self._exponentials(real_dtype, offset)
        cu, su = e_u[:, :K], e_u[:, K:]
        w_re, w_im = w.real[..., None], w.imag[..., None]
        r = torch.cat([w_re * cu + w_im * su, w_im * cu - w_re * su], dim=1)  # w conj(e_u), (B, 2K, N)
        return torch.bmm(e_v.transpose(1, 2), r)  # Re(conj(e_v)^T r) = cos_v^T r_re + sin_v^T r_im

    def _nufft_phase(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """k-space trajectory of torchkbnufft (``(B, 2, K)``, rows then columns) and the half-pixel phase."""
        w = 2 * math.pi * self.uv * self.pixel_size  # (B, K, 2) radians per pixel
        omega = torch.stack([w[..., 1], w[..., 0]], dim=1).to(dtype)
        shift = torch.polar(torch.ones_like(w[..., 0]), -0.5 * (w[..., 0] + w[..., 1]))
        return omega, shift

    def _nufft_forward(self, x: Tensor) -> Tensor:
        tkbn = _kbnufft()
        omega, shift = self._nufft_phase(x.dtype)
        op = tkbn.KbNufft(im_size=(self.npix, self.npix), dtype=x.dtype, device=x.device)
        cplx = torch.complex(x, torch.zeros_like(x))[:, None]
        y = op(cplx, omega)[:, 0]
        return y * shift.to(y.dtype)

    def _nufft_adjoint(self, w: Tensor) -> Tensor:
        tkbn = _kbnufft()
        real = w.real.dtype
        omega, shift = self._nufft_phase(real)
        op = tkbn.KbNufftAdjoint(im_size=(self.npix, self.npix), dtype=real, device=w.device)
        return op((w * shift.conj().to(w.dtype))[:, None], omega)[:, 0].real

    def _forward(self, x: Tensor) -> Tensor:
        if x.is_complex():
            raise TypeError("Interferometer: images are real (Stokes I brightness); got a complex tensor")
        x = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
        # pixels within eps of the subnormal range (the far tail of a Gaussian in float32: < 1e-31) carry no flux,
        # but their subnormal products made the float32 transform 5-7x slower; they are set to 0
        fi = torch.finfo(x.dtype)
        # (straight through: the gradient stays the identity, also at pixels that are exactly 0)
        x = x + (torch.where(x.abs() < fi.tiny / fi.eps, 0.0, x) - x).detach()
        with _full_precision(x.device):
            img = x[:, 0]
            vis = self._nufft_forward(img) if self._use_nufft() else self._dft(img)
            return vis * (self._pulse(x.dtype) * self._observed.to(x.dtype))

    def _adjoint(self, y: Tensor) -> Tensor:
        if y.dtype not in (torch.complex64, torch.complex128):
            y = y.to(torch.complex64)
        real = y.real.dtype
        with _full_precision(y.device):
            w = y * (self._pulse(real) * self._observed.to(real))
            img = self._nufft_adjoint(w) if self._use_nufft() else self._dft_adjoint(w, real)
        return img[:, None]

    # -- images of the coverage -----------------------------------------------------------------------
    def _weights(self, weights: Tensor | None, dtype: torch.dtype) -> Tensor:
        w = self._observed.to(dtype)
        if "weight" in self._meta:  # the weighting of AᴴA: w² (y already carries one w)
            w = w * self.weight.to(dtype) ** 2
        if weights is not None:
            w = w * torch.as_tensor(weights, device=w.device).to(dtype)
        return w

    def dirty_image(self, y: Tensor, weights: Tensor | None = None) -> Tensor:
        """``I_D(x_j) = Σ_k w_k Re(y_k exp(-2πi (u_k x_j + v_k y_j))) / Σ_k w_k`` on the image grid (no pulse).

        A point source of flux ``F`` at a pixel centre gives ``F`` at that pixel. Default weights:
        natural (1 on observed entries); pass ``1/sigma²`` for noise weighting. With row weights ``w``
        the visibilities are ``y / w`` and every weight is multiplied by ``w²`` (AᴴA's weighting).

        Shape: ``y (B, K)`` complex, ``weights (B, K)`` -> ``(B, 1, N, N)`` real [Jy/beam].
        """
        real = torch.float64 if y.dtype == torch.complex128 else torch.float32
        w = self._weights(weights, real)
        if "weight" in self._meta:
            row = self.weight.to(device=y.device, dtype=real)
            y = y / torch.where(row > 0, row, 1.0)
        with _full_precision(w.device):
            img = self._dft_adjoint(y.to(w.dtype.to_complex()) * w, real)
        return (img / w.sum(-1).clamp_min(torch.finfo(real).tiny)[:, None, None])[:, None]

    def psf(self, weights: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Dirty beam ``B(x_j) = Σ_k w_k cos(2π (u_k x_j + v_k y_j)) / Σ_k w_k``, centred on pixel ``(N/2, N/2)``.

        With row weights the ``w_k`` include their squares: the beam is AᴴA's point response (without the pulse).

        Peak exactly 1 at pixel ``(N/2, N/2)``; all zeros for a sample with nothing observed.

        Shape: -> ``(B, 1, N, N)`` real.
        """
        w = self._weights(weights, dtype)
        with _full_precision(w.device):
            img = self._dft_adjoint(w.to(dtype.to_complex()), dtype, 0.0)
        return (img / w.sum(-1).clamp_min(torch.finfo(dtype).tiny)[:, None, None])[:, None]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, npix={self.npix}, pixel_size={self.pixel_size:.4g} rad, method={self.method}"


# ---------------------------------------------------------------------------------------------------
class InterferometerFamily(OperatorFamily):
    """Random EHT-like coverages of one array, and their further corruption by dropped stations, baselines
    and time blocks. Conditioning: the dirty beam (PSF) of ``Ã``, peak 1.

    Coverage bank: at construction, ``bank_size`` source declinations are drawn (uniform on the sky in
    ``dec_range_deg``, seeded by ``seed``) and for each the uv points and station elevations of every
    baseline are tabulated over a full sidereal day every ``tadv_s`` seconds (hour-angle formula,
    numpy; no astropy needed since only the hour angle matters). ``sample`` then draws per sample a
    declination from the bank, a duration (uniform in ``duration_range_hr``), the centre of the
    observing window (an hour angle drawn with probability proportional to the square of the number
    of baselines that see the source then, as a schedule would favour) and station drop-outs (each
    station absent with probability
    ``p_station_drop``, keeping at least ``min_stations``): vectorised torch indexing, about a
    millisecond per batch. Visibilities are ordered by time; a draw with more than ``max_vis`` entries
    keeps the first ``max_vis`` (the end of the night is cut). ``time`` is hours since the start.

    Further corruption ``Ã = B A`` drops each station with probability ``delta_station`` (all its
    baselines), each baseline with probability ``delta_baseline``, and each block of ``time_block_hr``
    hours with probability ``delta_time``.

    ``normalize=True`` gives every drawn operator the row weights of :func:`density_weights` (kept by the
    further corruption), so that ``x̃ = Ãᴴ Ã x_σ`` is an image at the scale of ``x`` (without them ``AᴴA``
    multiplies by ~``K N²``, far beyond what EDM preconditioning assumes); measurements are then
    ``y = w ⊙ V`` with noise ``w σ``. ``make`` computes the weights from ``params["uv"]`` when
    ``params`` lack ``"weight"`` (right for a full operator ``A``, never for a further-corrupted one).

    Args:
        npix, fov_uas: image side and field of view [µas] (pixel size ``fov_uas / npix``).
        array: a bundled array name (``eht2017``, ``eht2017_m87``, ``eht2025``), a path to a station
            table, or a table as a dict ``{"names", "xyz", "sefd_r", "sefd_l"}``.
        freq_ghz, bw_ghz, tint_s, tadv_s: observing frequency and bandwidth [GHz], integration time and
            cadence [s] (the noise ``sigma`` of each visibility comes from the SEFDs).
    """

    name = "interferometer"
    conditioning_channels = 1
    is_complex = False

    def __init__(
        self,
        npix: int = 64,
        fov_uas: float = 160.0,
        array: str | dict | StationTable = "eht2017",
        *,
        freq_ghz: float = 230.0,
        bw_ghz: float = 2.0,
        tint_s: float = 10.0,
        tadv_s: float = 600.0,
        elev_min_deg: float = 10.0,
        elev_max_deg: float = 85.0,
        dec_range_deg: Sequence[float] = (-30.0, 60.0),
        duration_range_hr: Sequence[float] = (4.0, 12.0),
        p_station_drop: float = 0.1,
        min_stations: int = 3,
        max_vis: int | None = None,
        bank_size: int = 32,
        seed: int = 0,
        delta_station: float = 0.1,
        delta_baseline: float = 0.05,
        delta_time: float = 0.1,
        time_block_hr: float = 1.0,
        normalize: bool = False,
        method: str = "auto",
    ):
        self.npix, self.fov_uas = int(npix), float(fov_uas)
        self.normalize = bool(normalize)
        self.image_shape = (1, self.npix, self.npix)
        self.pixel_size = uas_to_rad(self.fov_uas) / self.npix
        self.table = _table_from(array)
        self._array_config = array.lower() if isinstance(array, str) and array.lower() in ARRAY_NAMES else None
        self.freq_ghz, self.bw_ghz, self.tint_s, self.tadv_s = (
            float(freq_ghz),
            float(bw_ghz),
            float(tint_s),
            float(tadv_s),
        )
        self.elev_min_deg, self.elev_max_deg = float(elev_min_deg), float(elev_max_deg)
        self.dec_range_deg = tuple(float(d) for d in dec_range_deg)
        self.duration_range_hr = tuple(float(d) for d in duration_range_hr)
        self.p_station_drop, self.min_stations = float(p_station_drop), int(min_stations)
        self.bank_size, self.seed, self.method = int(bank_size), int(seed), method
        self.delta_station, self.delta_baseline = float(delta_station), float(delta_baseline)
        self.delta_time, self.time_block_hr = float(delta_time), float(time_block_hr)
        for name in ("p_station_drop", "delta_station", "delta_baseline", "delta_time"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.duration_range_hr[0] <= self.duration_range_hr[1] <= 24.0:
            raise ValueError(f"duration_range_hr must satisfy 0 < lo <= hi <= 24, got {self.duration_range_hr}")
        if not 2 <= self.min_stations <= len(self.table):
            raise ValueError(f"min_stations must be in [2, {len(self.table)}], got {self.min_stations}")
        if self.time_block_hr <= 0 or self.tadv_s <= 0 or self.bank_size < 1:
            raise ValueError("time_block_hr, tadv_s and bank_size must be positive")
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        self._build_bank()
        self.max_vis = int(max_vis) if max_vis is not None else self._most_visibilities()
        if self.max_vis < 1:
            raise ValueError(f"max_vis must be positive, got {self.max_vis}")

    def _build_bank(self) -> None:
        rng = np.random.default_rng(self.seed)
        s_lo, s_hi = np.sin(np.deg2rad(self.dec_range_deg))
        decs = np.arcsin(rng.uniform(s_lo, s_hi, self.bank_size))
        step_hr = self.tadv_s / 3600.0
        self._n_times = max(1, round(24.0 / step_hr))
        gha = 2 * np.pi * np.arange(self._n_times) / self._n_times  # one sidereal day
        i1, i2 = np.triu_indices(len(self.table), k=1)
        b = self.table.xyz[i1] - self.table.xyz[i2]
        lam = SPEED_OF_LIGHT / (self.freq_ghz * 1e9)
        uv = np.stack([baseline_uv(b[None], gha[:, None], d, lam) for d in decs])  # (D, T, n_bl, 2)
        el = np.stack([station_elevation(self.table.xyz, gha, d) for d in decs])  # (D, T, S)
        up = (el >= np.deg2rad(self.elev_min_deg)) & (el <= np.deg2rad(self.elev_max_deg))
        band = np.abs(uv).max() * self.pixel_size
        if band > 0.5:
            raise ValueError(
                f"InterferometerFamily: baselines reach |u| psize = {band:.3g} > 0.5 (outside the image's band); "
                f"use a smaller pixel (fov_uas / npix = {self.fov_uas / self.npix:.3g} µas) or a lower frequency"
            )
        t = self.table
        sigma = stokes_i_sigma(t.sefd_r[i1], t.sefd_l[i1], t.sefd_r[i2], t.sefd_l[i2], self.bw_ghz * 1e9, self.tint_s)
        self._decs = decs
        self._uv = torch.from_numpy(uv)
        self._up = torch.from_numpy(up)
        self._i1, self._i2 = torch.from_numpy(i1), torch.from_numpy(i2)
        self._sigma = torch.from_numpy(sigma).to(torch.float32)
        # window centres favour hour angles at which many baselines see the source (as a schedule would)
        n_bl_up = (up[:, :, i1] & up[:, :, i2]).sum(-1)  # (D, T)
        self._n_bl_up = n_bl_up
        w = n_bl_up.astype(np.float64) ** 2 + 1e-3
        self._centre_cdf = torch.from_numpy(np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True))
        self._step_utc_hr = step_hr * SIDEREAL_TO_SOLAR * (24.0 / step_hr / self._n_times)

    def _most_visibilities(self) -> int:
        """The most visibilities any draw can have: the longest window at its best place, all stations."""
        longest = min(math.ceil(self.duration_range_hr[1] * 3600.0 / self.tadv_s), self._n_times)
        n = self._n_bl_up  # (D, T)
        windows = sum(np.roll(n, -s, axis=1) for s in range(longest))
        return max(1, int(windows.max()))

    # -- OperatorFamily -------------------------------------------------------------------------------
    def sample(self, batch_size, *, generator, device=None) -> Interferometer:
        Bn, T, S, nb = int(batch_size), self._n_times, len(self.table), self._i1.numel()
        r = uniform((Bn, 3 + S), generator).cpu().to(torch.float64)
        d = (r[:, 0] * self.bank_size).long().clamp_max(self.bank_size - 1)
        lo, hi = self.duration_range_hr
        n_steps = torch.clamp(((lo + (hi - lo) * r[:, 2]) * 3600.0 / self.tadv_s).round().long(), 1, T)
        centre = torch.searchsorted(self._centre_cdf[d], r[:, 1:2].contiguous()).reshape(Bn).clamp_max(T - 1)
        start = (centre - n_steps // 2) % T
        u_st = r[:, 3:]
        rank = torch.argsort(torch.argsort(u_st, dim=1, descending=True), dim=1)
        keep_st = (u_st >= self.p_station_drop) | (rank < self.min_stations)  # (B, S)
        rel = (torch.arange(T)[None] - start[:, None]) % T  # (B, T) steps since the start
        in_window = rel < n_steps[:, None]
        up = self._up[d] & keep_st[:, None, :]  # (B, T, S)
        mask = in_window[:, :, None] & up[:, :, self._i1] & up[:, :, self._i2]  # (B, T, n_bl)
        order_key = rel[:, :, None] * nb + torch.arange(nb)[None, None]
        order_key = torch.where(mask, order_key, T * nb).reshape(Bn, T * nb)
        K = self.max_vis
        idx = torch.argsort(order_key, dim=1, stable=True)[:, :K]
        if idx.shape[1] < K:
            idx = torch.cat([idx, idx[:, :1].expand(Bn, K - idx.shape[1])], dim=1)
        observed = torch.gather(mask.reshape(Bn, -1), 1, idx)
        observed[:, T * nb :] = False  # (only when K > T * n_bl: duplicated padding slots)
        t_idx, bl = idx // nb, idx % nb
        uv = self._uv[d[:, None], (t_idx + start[:, None]) % T, bl]  # (B, K, 2)
        obs_f = observed.to(torch.float32)
        time = torch.gather(rel, 1, t_idx).to(torch.float64) * self._step_utc_hr
        A = Interferometer(
            uv * obs_f[..., None].double(),
            self.npix,
            self.pixel_size,
            obs_f,
            t1=self._i1[bl] * observed,
            t2=self._i2[bl] * observed,
            time=time * obs_f.double(),
            sigma=self._sigma[bl] * obs_f + (1 - obs_f),
            weight=density_weights(uv, obs_f, self.npix, self.pixel_size) if self.normalize else None,
            method=self.method,
        )
        return A.to(device if device is not None else generator.device)

    def further_corrupt(self, A: Interferometer, *, generator: torch.Generator) -> Interferometer:
        """Drop stations, baselines and time blocks (class docstring); padding stays unobserved."""
        B, S = A.batch_size, len(self.table)
        for name in ("t1", "t2", "time"):
            if name not in A.params():
                raise ValueError(f"further_corrupt needs per-visibility {name!r} metadata on the operator")
        n_blocks = math.ceil(48.0 / self.time_block_hr) + 1
        dev = A.observed.device
        keep_st = (uniform((B, S), generator) >= self.delta_station).to(dev)
        keep_bl = (uniform((B, S, S), generator) >= self.delta_baseline).to(dev)
        keep_tb = (uniform((B, n_blocks), generator) >= self.delta_time).to(dev)
        t1, t2 = A.t1.clamp(0, S - 1), A.t2.clamp(0, S - 1)
        block = (A.time / self.time_block_hr).floor().long().clamp(0, n_blocks - 1)
        batch = torch.arange(B, device=dev)[:, None]
        keep = (
            torch.gather(keep_st, 1, t1)
            & torch.gather(keep_st, 1, t2)
            & keep_bl[batch, t1, t2]
            & torch.gather(keep_tb, 1, block)
        )
        return A.restrict(keep.to(torch.float32))

    def conditioning(self, A: Interferometer) -> Tensor:
        """The dirty beam of ``A`` (natural weighting), peak 1 at pixel ``(N/2, N/2)``: ``(B, 1, N, N)``."""
        return A.psf()

    def observed_projection(self, A_tilde: Interferometer) -> None:
        """None: ``ÃᴴÃ`` is a PSF convolution, no projection; the network predicts the whole image."""
        return None

    def make(self, params: dict[str, Tensor]) -> Interferometer:
        missing = {"uv", "observed"} - set(params)
        if missing:
            raise KeyError(f"InterferometerFamily.make expects params 'uv' and 'observed' (missing {sorted(missing)})")
        meta = {k: params[k] for k in ("t1", "t2", "time", "sigma", "weight") if k in params}
        if self.normalize and "weight" not in meta:
            meta["weight"] = density_weights(params["uv"], params["observed"], self.npix, self.pixel_size)
        return Interferometer(params["uv"], self.npix, self.pixel_size, params["observed"], method=self.method, **meta)

    def config(self) -> dict[str, Any]:
        t = self.table
        array = self._array_config or {
            "names": list(t.names),
            "xyz": t.xyz.tolist(),
            "sefd_r": t.sefd_r.tolist(),
            "sefd_l": t.sefd_l.tolist(),
        }
        return {
            "family": self.name,
            "npix": self.npix,
            "fov_uas": self.fov_uas,
            "array": array,
            "freq_ghz": self.freq_ghz,
            "bw_ghz": self.bw_ghz,
            "tint_s": self.tint_s,
            "tadv_s": self.tadv_s,
            "elev_min_deg": self.elev_min_deg,
            "elev_max_deg": self.elev_max_deg,
            "dec_range_deg": list(self.dec_range_deg),
            "duration_range_hr": list(self.duration_range_hr),
            "p_station_drop": self.p_station_drop,
            "min_stations": self.min_stations,
            "max_vis": self.max_vis,
            "bank_size": self.bank_size,
            "seed": self.seed,
            "delta_station": self.delta_station,
            "delta_baseline": self.delta_baseline,
            "delta_time": self.delta_time,
            "time_block_hr": self.time_block_hr,
            "normalize": self.normalize,
            "method": self.method,
        }


def _table_from(array: str | Path | dict | StationTable) -> StationTable:
    if isinstance(array, dict):
        try:
            return StationTable(
                list(array["names"]),
                np.asarray(array["xyz"], dtype=np.float64),
                np.asarray(array["sefd_r"], dtype=np.float64),
                np.asarray(array["sefd_l"], dtype=np.float64),
            )
        except KeyError as err:
            raise ValueError(f"an array dict needs keys names, xyz, sefd_r, sefd_l (missing {err})") from None
    return resolve_array(array)
