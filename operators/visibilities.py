"""Radio-interferometric visibilities of an image: the operator :class:`Interferometer` and its helpers.

(The family of random EHT-like coverages is in ``interferometry.py``, which re-exports these names.)

Measurement model (docs/design.md §4, ehtim's convention, checked numerically against ehtim):

    V_k = P(u_k, v_k) Σ_j I_j exp(+2πi (u_k x_j + v_k y_j)),   P(u, v) = sinc²(u ψ) sinc²(v ψ)

on an ``N × N`` grid of pixel size ``ψ`` [rad]: row 0 is north, column 0 east, and pixel ``(r, c)`` sits
at ``x_c = (N/2 - 0.5 - c) ψ``, ``y_r = (N/2 - 0.5 - r) ψ``. ``P`` is the Fourier transform of the
triangle (linear-interpolation) pulse; ``sinc(t) = sin(πt)/(πt)``.

The exponential is separable, ``exp(2πi u x_c) exp(2πi v y_r)``, so the dense transform costs two
real batched matmuls of size ``(2K × N) · (N × N)`` and never forms the ``K × N²`` matrix. NUFFT
(``torchkbnufft``, optional extra ``nufft``) is used for images larger than 128² when installed.

>>> import torch
>>> from ambient_science.operators.visibilities import Interferometer
>>> uv = torch.tensor([[[0.0, 0.0], [2e9, -1e9]]], dtype=torch.float64)
>>> A = Interferometer(uv, npix=16, pixel_size=1e-11)
>>> x = torch.zeros(1, 1, 16, 16); x[0, 0, 3, 5] = 1.0
>>> float(A(x)[0, 0].real)
1.0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ambient_science.linop import SubsampledOperator
from ambient_science.operators.workspace import chunk_budget, chunks, needs_graph

__all__ = [
    "METHODS",
    "UAS",
    "Interferometer",
    "density_weights",
    "pixel_coordinates",
    "triangle_pulse",
    "uas_to_rad",
]

UAS = math.pi / 180.0 / 3600.0 / 1e6  # one microarcsecond in radians
METHODS = ("auto", "dft", "nufft")
_METHODS = METHODS
#: cached table sets per operator (float32 and float64 on one or two devices)
_MAX_TABLES = 4


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


#: bytes of one chunk's (2K, N) tables in the no-gradient DFT (a few samples of 64² at ~1000 visibilities)
_DFT_CHUNK_BYTES = 2 * 2**20


def _dft_budget(device: torch.device) -> int:
    return _DFT_CHUNK_BYTES if device.type == "cpu" else chunk_budget(device)


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
        """The same uv points with ``observed * keep``; it shares this operator's cached DFT tables."""
        child = Interferometer(
            self.uv,
            self.npix,
            self.pixel_size,
            self._observed * keep.to(self._observed),
            method=self.method,
            **{k: getattr(self, k) for k in self._meta},
        )
        child.__dict__["_tables"] = self.__dict__.setdefault("_tables", {})
        return child

    def params(self) -> dict[str, Tensor]:
        return {"uv": self.uv, "observed": self._observed, **{k: getattr(self, k) for k in self._meta}}

    # -- transforms -----------------------------------------------------------------------------------
    def _use_nufft(self) -> bool:
        if self.method == "auto":
            return self.npix > 128 and _nufft_available()
        return self.method == "nufft"

    def _exponentials(self, real_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``cat(cos, sin)`` of ``2π u x_c`` and of ``2π v y_r`` on the image grid, each ``(B, 2K, N)`` of
        ``real_dtype`` (phases computed in it: exact to ~1e-15 in float64, to ~1e-5 rad in float32); ``(1, 2K, N)``
        when every sample has the same uv points (one table for the batch; the transforms broadcast it).

        Cached per operator and ``(dtype, device)`` (a fresh cache after ``.to()``; the key also holds ``uv``'s
        storage and version, so an in-place change of ``uv`` recomputes them), shared with the operators of
        :meth:`restrict`, which have the same uv points. Not cached while autograd tracks ``uv``.
        """
        key = (real_dtype, self.uv.device, self.uv.data_ptr(), self.uv._version, self.npix, self.pixel_size)
        cache = self.__dict__.setdefault("_tables", {})
        tables = cache.get(key)
        if tables is None:
            if needs_graph(self.uv):
                return self._compute_exponentials(real_dtype)
            with torch.no_grad():
                tables = self._compute_exponentials(real_dtype)
            while len(cache) >= _MAX_TABLES:
                cache.pop(next(iter(cache)))
            cache[key] = tables
        return tables

    def _compute_exponentials(self, real_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        uv = self.uv
        if uv.shape[0] > 1 and not needs_graph(uv) and bool((uv == uv[:1]).all()):
            uv = uv[:1]  # one coverage for the whole batch (the samples of one observation): one table, (1, 2K, N)
        B, K = uv.shape[0], self.oshape[1]
        N, dev = self.npix, uv.device
        theta = (2 * math.pi * self.pixel_size) * uv  # (B, K, 2) radians per pixel step, float64
        c = (N / 2 - 0.5 - torch.arange(N, dtype=real_dtype, device=dev)).expand(B, 1, N)
        shift = torch.zeros(B, 2 * K, 1, dtype=real_dtype, device=dev)
        shift[:, K:] = -math.pi / 2  # sin(a) = cos(a - π/2): one cosine table holds both

        def table(t: Tensor) -> Tensor:  # outer product θ c_j (+ shift) in one batched matmul, then cos in place
            return torch.baddbmm(shift, torch.cat([t, t], dim=1).to(real_dtype)[..., None], c).cos_()

        return table(theta[..., 0]), table(theta[..., 1])

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .double(): the moved operator starts a cache of its own (the old one may be shared)
        out = super()._apply(fn, *args, **kwargs)
        self.__dict__["_tables"] = {}
        return out

    def _pulse(self, dtype: torch.dtype) -> Tensor:
        """``P(u, v)``, times the row weights ``w`` when the operator has them."""
        pulse = triangle_pulse(self.uv, self.pixel_size)
        if "weight" in self._meta:
            pulse = pulse * self.weight
        return pulse.to(dtype)

    def _dft(self, x: Tensor, flush: float) -> Tensor:
        """``Σ_j x_j exp(2πi (u x_j + v y_j))`` without pulse or mask. Shape: ``(B, N, N)`` -> ``(B, K)``.

        ``flush``: without a graph, pixels with ``|x| <= flush`` count as 0 (``hardshrink``, chunk by chunk; a
        caller recording a graph flushes ``x`` itself)."""
        B, K = self.oshape
        e_u, e_v = self._exponentials(x.dtype)
        if needs_graph(x, self.uv):
            t = torch.matmul(e_v, x)  # (B, 2K, N): rows summed with cos / sin of 2π v y (e_v (1 or B, 2K, N))
            t_re, t_im = t[:, :K], t[:, K:]
            cu, su = e_u[:, :K], e_u[:, K:]
            re = (t_re * cu - t_im * su).sum(-1)
            im = (t_re * su + t_im * cu).sum(-1)
            return torch.complex(re, im)
        # without a gradient: a few samples at a time, products into reused buffers (the working set of a
        # batch of 32 no longer spills the caches; per image it is no slower than a batch of 1)
        out = torch.empty(B, K, dtype=x.dtype.to_complex(), device=x.device)
        re_im = torch.view_as_real(out)
        if e_v.shape[0] < B:
            return self._dft_shared(x, e_u[0], e_v[0], out, flush)
        t = prod = None
        for s, _ in chunks(B, 1, 2 * K * self.npix * x.element_size(), _dft_budget(x.device)):
            n = s.stop - s.start
            if t is None or t.shape[0] != n:
                t = torch.empty(n, 2 * K, self.npix, dtype=x.dtype, device=x.device)
                prod = torch.empty_like(t)
            torch.bmm(e_v[s], torch.nn.functional.hardshrink(x[s], flush), out=t)
            torch.mul(t, e_u[s], out=prod)  # [t_re cu; t_im su]
            sums = prod.sum(-1)
            torch.sub(sums[:, :K], sums[:, K:], out=re_im[s, :, 0])
            torch.mul(t[:, :K], e_u[s, K:], out=prod[:, :K])  # [t_re su; t_im cu]
            torch.mul(t[:, K:], e_u[s, :K], out=prod[:, K:])
            sums = prod.sum(-1)
            torch.add(sums[:, :K], sums[:, K:], out=re_im[s, :, 1])
        return out

    def _dft_shared(self, x: Tensor, e_u: Tensor, e_v: Tensor, out: Tensor, flush: float) -> Tensor:
        """:meth:`_dft` without a gradient for one coverage shared by the batch (``(2K, N)`` tables): a few samples
        side by side in one matrix product ``e_v · [x_1 … x_n]``; the tables stay in cache for the whole batch, and
        the products go into two buffers allocated once per call (fresh ones per chunk were page-faulted anew
        whenever the allocator had handed their memory back)."""
        B, K = self.oshape
        N = self.npix
        re_im = torch.view_as_real(out)
        parts = [s for s, _ in chunks(B, 1, 2 * K * N * x.element_size(), _dft_budget(x.device))]
        size = 2 * K * N * max(s.stop - s.start for s in parts)
        t_buf = torch.empty(size, dtype=x.dtype, device=x.device)
        p_buf = torch.empty_like(t_buf)
        for s in parts:
            n = s.stop - s.start
            xs = torch.nn.functional.hardshrink(x[s], flush).transpose(0, 1).reshape(N, n * N)
            t = torch.mm(e_v, xs, out=t_buf[: 2 * K * n * N].view(2 * K, n * N)).view(2 * K, n, N)
            sums = torch.mul(t, e_u[:, None], out=p_buf[: 2 * K * n * N].view(2 * K, n, N)).sum(-1)
            torch.sub(sums[:K], sums[K:], out=re_im[s, :, 0].T)  # [t_re cu; t_im su] summed: (2K, n)
            prod = torch.mul(t[:K], e_u[K:, None], out=p_buf[: K * n * N].view(K, n, N))  # [t_re su; t_im cu]
            prod.addcmul_(t[K:], e_u[:K, None])
            torch.sum(prod, -1, out=re_im[s, :, 1].T)
        return out

    def _dft_adjoint(self, w: Tensor, real_dtype: torch.dtype) -> Tensor:
        """``Re Σ_k w_k exp(-2πi (u_k x_j + v_k y_j))``. Shape: ``(B, K)`` -> ``(B, N, N)``."""
        B, K = self.oshape
        e_u, e_v = self._exponentials(real_dtype)
        cu, su = e_u[:, :K], e_u[:, K:]
        w_re, w_im = w.real[..., None], w.imag[..., None]
        if needs_graph(w, self.uv):
            r = torch.cat([w_re * cu + w_im * su, w_im * cu - w_re * su], dim=1)  # w conj(e_u), (B, 2K, N)
            return torch.matmul(e_v.transpose(1, 2), r)  # Re(conj(e_v)^T r) = cos_v^T r_re + sin_v^T r_im
        out = torch.empty(B, self.npix, self.npix, dtype=real_dtype, device=w.device)
        if e_v.shape[0] < B:
            return self._dft_adjoint_shared(w, e_u[0], e_v[0], out)
        r = None
        for s, _ in chunks(B, 1, 2 * K * self.npix * out.element_size(), _dft_budget(w.device)):
            if r is None or r.shape[0] != s.stop - s.start:
                r = torch.empty(s.stop - s.start, 2 * K, self.npix, dtype=real_dtype, device=w.device)
            torch.mul(cu[s], w_re[s], out=r[:, :K]).addcmul_(su[s], w_im[s])
            torch.mul(cu[s], w_im[s], out=r[:, K:]).addcmul_(su[s], w_re[s], value=-1.0)
            torch.bmm(e_v[s].transpose(1, 2), r, out=out[s])
        return out

    def _dft_adjoint_shared(self, w: Tensor, e_u: Tensor, e_v: Tensor, out: Tensor) -> Tensor:
        """:meth:`_dft_adjoint` without a gradient for one coverage shared by the batch (``(2K, N)`` tables): one
        matrix product ``e_vᵀ · [r_1 … r_n]`` per chunk of samples."""
        B, K = self.oshape
        N = self.npix
        cu, su = e_u[:K, None], e_u[K:, None]  # (K, 1, N)
        parts = [s for s, _ in chunks(B, 1, 2 * K * N * out.element_size(), _dft_budget(w.device))]
        most = max(s.stop - s.start for s in parts)
        r_buf = torch.empty(2 * K * most * N, dtype=out.dtype, device=w.device)  # once per call, as in _dft_shared
        i_buf = torch.empty(N * most * N, dtype=out.dtype, device=w.device)
        for s in parts:
            n = s.stop - s.start
            a, b = w.real[s].T[..., None], w.imag[s].T[..., None]  # (K, n, 1)
            r = r_buf[: 2 * K * n * N].view(2 * K, n, N)
            torch.mul(cu, a, out=r[:K]).addcmul_(su, b)
            torch.mul(cu, b, out=r[K:]).addcmul_(su, a, value=-1.0)
            img = torch.mm(e_v.T, r.view(2 * K, n * N), out=i_buf[: N * n * N].view(N, n * N)).view(N, n, N)
            out[s].copy_(img.transpose(0, 1))
        return out

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
        # but their subnormal products made the float32 transform 5-7x slower; they are set to 0 by hardshrink (NaN
        # stays NaN), one pass, and without a graph chunk by chunk inside the DFT: abs, compare and where over the
        # whole batch took five passes and four batch-sized temporaries, 0.4 of the 3.5 ms per 256² image at batch 32
        fi = torch.finfo(x.dtype)
        flush = fi.tiny / fi.eps
        dft = not self._use_nufft()
        if needs_graph(x, self.uv):  # straight through: the gradient stays the identity, also at pixels exactly 0
            x = x + (torch.nn.functional.hardshrink(x, flush) - x).detach()
        elif not dft:
            x = torch.nn.functional.hardshrink(x, flush)
        with _full_precision(x.device):
            img = x[:, 0]
            vis = self._dft(img, flush) if dft else self._nufft_forward(img)
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
        # centred on pixel N/2 instead of the grid centre N/2 - 1/2: a phase exp(-iπ(u + v)ψ) on each visibility,
        # so that the cached tables of the image grid serve (no second table set)
        half = (-math.pi * self.pixel_size) * self.uv.sum(-1)
        phase = torch.polar(torch.ones_like(half), half).to(device=w.device, dtype=dtype.to_complex())
        with _full_precision(w.device):
            img = self._dft_adjoint(w.to(dtype.to_complex()) * phase, dtype)
        return (img / w.sum(-1).clamp_min(torch.finfo(dtype).tiny)[:, None, None])[:, None]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, npix={self.npix}, pixel_size={self.pixel_size:.4g} rad, method={self.method}"
