"""Cartesian MRI, single- and multi-coil (SENSE): ``y_c = M ⊙ F(S_c x)``, and its operator family.

``F`` is the centred orthonormal 2-D FFT (``ifftshift → fft2(norm="ortho") → fftshift`` over the last
two axes), so ``F`` is unitary and the k-space centre (DC) sits at index ``(H // 2, W // 2)``. ``M``
selects phase-encode columns (a ``(B, W)`` column mask) or k-space points (a ``(B, H, W)`` 2-D mask).
``S_c`` are coil sensitivity maps (ESPIRiT or simulated); single-coil is ``S = 1``.

    >>> import torch
    >>> from ambient_science.operators import CartesianMRIFamily
    >>> family = CartesianMRIFamily((1, 32, 32), acceleration=4, center_fraction=0.08, drop_fraction=0.2)
    >>> g = torch.Generator().manual_seed(0)
    >>> A = family.sample(2, generator=g)
    >>> x = torch.randn(2, 1, 32, 32, dtype=torch.complex64, generator=g)
    >>> A(x).shape, A.H(A(x)).shape
    (torch.Size([2, 1, 32, 32]), torch.Size([2, 1, 32, 32]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ambient_science.family import OperatorFamily
from ambient_science.linop import SubsampledOperator, repeat_batch
from ambient_science.operators.coils import birdcage_maps
from ambient_science.operators.fourier import (
    checkerboards,
    column_values,
    fft2c,
    ifft2c,
    put_columns,
    sampled_columns,
    take_columns,
)
from ambient_science.operators.mri_masks import (
    COLUMN_KINDS,
    MASK_KINDS,
    column_mask,
    drop_columns,
    drop_points,
    poisson_disc_mask,
    variable_density_mask,
)
from ambient_science.operators.workspace import chunk_budget, chunks, empty_output, needs_graph

__all__ = ["CartesianMRI", "CartesianMRIFamily", "fft2c", "ifft2c"]

#: largest fraction K / W of sampled columns for which the adjoint (forward) prunes its FFT along H to the K columns.
#: Measured break-even, 8 coils 320², one CPU thread with MKL (whose 2-D FFT does its second pass for little more
#: than the gather, zeroing and scatter pruning needs), chunks of 4 MiB, dense over pruned CPU time at batch 1 / 8:
#: adjoint K = 64: 1.17 / 1.18×, 80: 1.12 / 1.11×, 96: 1.04 / 1.06×, 112: 1.02 / 1.00×; forward K = 64: 1.15 / 1.11×,
#: 80: 1.06 / 1.05×, 96: 1.02 / 0.99×, 112: 1.01 / 0.92× (the two operators timed alternately, benchmarks/_timing).
PRUNE_ADJOINT = 0.33
PRUNE_FORWARD = 0.28
#: images narrower than this keep the earlier (adjoint, forward) limits: at 64² pruning buys nothing (pruned over
#: dense forward 0.143 / 0.112 ms at batch 4, 0.309 / 0.291 at 16; adjoint 0.146 / 0.129, 0.300 / 0.306), and
#: the 64² results of the examples stay those of the runs that made them
PRUNE_NARROW_WIDTH = 128
PRUNE_NARROW = (0.28, 0.15)


def _prune_limits(W: int) -> tuple[float, float]:
    """The largest fractions K / W of sampled columns for which the adjoint and the forward prune, at width ``W``."""
    return (PRUNE_ADJOINT, PRUNE_FORWARD) if W >= PRUNE_NARROW_WIDTH else PRUNE_NARROW


def _sign_pairs(f: Tensor) -> Tensor:
    """``(f, -f)`` along a new last axis: the factor of :func:`_conj_times` for a real ``f`` (interleaving it
    cost about as much as the multiply itself, so the operator keeps the pairs of its mask weights)."""
    return f.unsqueeze(-1) * f.new_tensor([1.0, -1.0])


def _conj_times(z: Tensor, pairs: Tensor, out: Tensor | None = None) -> Tensor:
    """``conj(z) ⊙ f`` for ``pairs = _sign_pairs(f)`` of a real ``f`` broadcastable to ``z``, in one pass (a multiply
    by a conjugate view of ``z`` would first copy it); into ``out`` when given (``out`` may be ``z``)."""
    if out is None:
        return torch.view_as_complex(torch.view_as_real(z) * pairs)
    torch.mul(torch.view_as_real(z), pairs, out=torch.view_as_real(out))
    return out


def _times_maps(z: Tensor, maps: Tensor) -> Tensor:
    """``maps ⊙ z`` for a freshly computed ``z``, in place unless the maps need a gradient (a fresh coil-sized
    buffer per multiply cost 20 % of a SENSE forward + adjoint at batch 8 on a CPU)."""
    return z * maps if maps.requires_grad else z.mul_(maps)


def _as_complex(x: Tensor) -> Tensor:
    return x if x.is_complex() else x.to(torch.complex64)


def _folds_norm(dtype: torch.dtype) -> bool:
    """Whether the even-size paths run their FFTs unnormalised, the ``1 / sqrt(H W)`` of ``norm="ortho"`` folded into
    the mask weights they multiply anyway: for complex64, where torch's separate scaling pass cost 0.2 ms of the
    1.3 ms FFT along W of 8 coils at 320² (one CPU thread). Not for complex128, whose weights (float32) would round
    the factor."""
    return dtype == torch.complex64


def _norm(folded: bool) -> str:
    return "backward" if folded else "ortho"


def _result_dtype(x: Tensor, maps: Tensor | None) -> torch.dtype:
    return x.dtype if maps is None else torch.promote_types(x.dtype, maps.dtype)


def _plane_bytes(A: CartesianMRI, dtype: torch.dtype) -> int:
    H, W = A.ishape[2:]
    return H * W * torch.empty((), dtype=dtype).element_size()


def _workspace(A: CartesianMRI, dtype: torch.dtype, device: torch.device) -> Tensor:
    """One chunk's coil images (``chunks`` of operators/workspace.py), allocated once per call."""
    s, c = next(chunks(*A.oshape[:2], _plane_bytes(A, dtype), chunk_budget(torch.device(device))))
    return torch.empty((s.stop - s.start, c.stop - c.start, *A.ishape[2:]), dtype=dtype, device=device)


def _part(ws: Tensor, s: slice, c: slice) -> Tensor:
    return ws[: s.stop - s.start, : c.stop - c.start]


def _samples(t: Tensor, s: slice, per_sample: bool) -> Tensor:
    """``t[s]`` when ``t`` holds one entry per sample (``per_sample``), else ``t`` itself (shared by the batch)."""
    return t[s] if per_sample else t


def _coil_images(maps: Tensor | None, x: Tensor, s: slice, c: slice, ws: Tensor) -> Tensor:
    """``maps[s, c] ⊙ x[s]`` into the workspace (``x[s]`` itself single-coil)."""
    return x[s] if maps is None else torch.mul(maps[s, c], x[s], out=_part(ws, s, c))


def _accumulate(out: Tensor, conj_images: Tensor, maps: Tensor | None, s: slice, c: slice) -> None:
    """``out[s] (+)= sum_c maps[s, c] ⊙ conj_images`` (a chunk's coil sum; ``conj_images`` is consumed)."""
    if maps is None:
        out[s].copy_(conj_images)
    elif c.start == 0:
        torch.sum(conj_images.mul_(maps[s, c]), dim=1, keepdim=True, out=out[s])
    else:
        out[s].add_(conj_images.mul_(maps[s, c]).sum(dim=1, keepdim=True))


class CartesianMRI(SubsampledOperator):
    """``y_c = M ⊙ F(S_c x)``: Cartesian k-space of (coil-weighted) complex images, per-sample masks.

    Args:
        mask: ``(B, W)`` phase-encode column mask or ``(B, H, W)`` 2-D mask, values in {0, 1}.
        coil_maps: ``(B, C, H, W)`` complex sensitivities ``S``; ``None`` for single-coil (``C = 1``).
        image_shape: ``(1, H, W)``; needed only for a single-coil column mask of non-square images
            (defaults to ``H`` from the coil maps or the 2-D mask, else ``H = W``).

    Shape: ``x (B, 1, H, W)`` complex64 -> ``y (B, C, H, W)`` complex64, zero on unsampled k-space.
    ``observed`` is ``(B, 1, 1, W)`` for column masks and ``(B, 1, H, W)`` for 2-D masks.
    """

    def __init__(self, mask: Tensor, coil_maps: Tensor | None = None, image_shape: Sequence[int] | None = None):
        if not isinstance(mask, Tensor) or mask.ndim not in (2, 3):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"CartesianMRI: mask must be (B, W) columns or (B, H, W) 2-D, got {got}")
        if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():  # one check (and one sync) for both
            values = mask.unique()[:6].tolist() if not mask.is_complex() else "complex"
            raise ValueError(
                f"CartesianMRI: mask must be binary, 0 = not sampled and 1 = sampled (got values {values}); "
                "A^H A is a projection only for a 0/1 mask, and ambient training, further corruption and data "
                "consistency all treat the mask as a selection. Put sampling weights in the likelihood instead"
            )
        B, W = mask.shape[0], mask.shape[-1]
        H = mask.shape[1] if mask.ndim == 3 else None
        if coil_maps is not None:
            if not isinstance(coil_maps, Tensor) or coil_maps.ndim != 4:
                got = tuple(coil_maps.shape) if isinstance(coil_maps, Tensor) else type(coil_maps).__name__
                raise ValueError(f"CartesianMRI: coil_maps must be (B, C, H, W), got {got}")
            H = coil_maps.shape[2] if H is None else H
            if coil_maps.shape[0] != B or coil_maps.shape[2:] != (H, W):
                raise ValueError(
                    f"CartesianMRI: coil_maps of shape {tuple(coil_maps.shape)} do not fit mask of shape "
                    f"{tuple(mask.shape)}; expected ({B}, C, {H}, {W})"
                )
        if image_shape is not None:
            shape = tuple(int(s) for s in image_shape)
            if len(shape) == 2:
                shape = (1, *shape)
            if len(shape) != 3 or shape[0] != 1 or shape[2] != W or (H is not None and shape[1] != H):
                raise ValueError(
                    f"CartesianMRI: image_shape {tuple(image_shape)} does not fit mask {tuple(mask.shape)}"
                    + ("" if coil_maps is None else f" and coil maps {tuple(coil_maps.shape)}")
                    + f"; expected (1, {'H' if H is None else H}, {W})"
                )
            H = shape[1]
        H = W if H is None else H
        C = 1 if coil_maps is None else coil_maps.shape[1]
        super().__init__((B, 1, H, W), (B, C, H, W))
        self.register_buffer("mask", mask.to(torch.float32))
        self.register_buffer("coil_maps", None if coil_maps is None else _as_complex(coil_maps))
        self._cache: dict[str, Any] = {}

    # -- structure -------------------------------------------------------------------------------------
    @property
    def is_column_mask(self) -> bool:
        return self.mask.ndim == 2

    @property
    def num_coils(self) -> int:
        return self.oshape[1]

    @property
    def observed(self) -> Tensor:
        """``(B, 1, 1, W)`` for column masks, ``(B, 1, H, W)`` for 2-D masks."""
        if self.is_column_mask:
            return self.mask[:, None, None, :]
        return self.mask[:, None]

    def acceleration(self) -> Tensor:
        """Per-sample acceleration ``(H W) / (number of sampled k-space points)``, ``(B,)``."""
        H, W = self.ishape[2:]
        m = torch.broadcast_to(self.observed, (self.batch_size, 1, H, W))
        return (H * W) / m.reshape(self.batch_size, -1).sum(dim=1).clamp_min(1)

    def sampled_columns(self) -> Tensor | None:
        """The columns the pruned FFTs transform along H (``fourier.sampled_columns`` of the mask): ``(K,)`` for a
        mask shared by the batch, else ``(B, K)``; ``None`` for a 2-D mask, odd sizes, a non-CPU device (measured on
        a CPU only) or more columns than ``PRUNE_ADJOINT`` and ``PRUNE_FORWARD`` allow (``PRUNE_NARROW`` below
        ``PRUNE_NARROW_WIDTH`` columns). Computed once per mask (one
        device sync)."""
        H, W = self.ishape[2:]
        if not self.is_column_mask or H % 2 or W % 2 or self.mask.device.type != "cpu":
            return None
        return self._derived("columns", lambda: sampled_columns(self.mask, max(_prune_limits(W))))

    def _derived(self, name: str, make: Callable[[], Any]) -> Any:
        """``make()``, kept until the mask changes (checkerboards, mask weights, column indices; none of them big)."""
        if self.mask.requires_grad:  # a graph through the mask must not be reused
            return make()
        cache = self._cache
        if cache.get("mask") is not self.mask or cache.get("version") != self.mask._version:
            cache.clear()
            cache.update(mask=self.mask, version=self.mask._version)
        if name not in cache:
            cache[name] = make()
        return cache[name]

    def _weights(self, adjoint: bool, folded: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """For even sizes, the mask and checkerboards of the maps below, with the columns when pruned: forward
        ``(c, M s c, columns)``, adjoint ``(_sign_pairs(M c), _sign_pairs(s c), columns)``; a pruned weight holds
        only the columns, ``(1 or B, 1, H, K)``. ``folded``: the FFTs' ``1 / sqrt(H W)`` is in ``M s c`` (forward)
        and ``M c`` (adjoint), and the FFTs run unnormalised (:func:`_folds_norm`)."""

        def make():
            board, signed = checkerboards(*self.ishape[2:], self.mask.device)
            cols, (H, W) = self.sampled_columns(), self.ishape[2:]
            adj_limit, fwd_limit = _prune_limits(W)
            fwd_cols = cols if cols is not None and cols.shape[-1] <= fwd_limit * W else None
            adj_cols = cols if cols is not None and cols.shape[-1] <= adj_limit * W else None
            fwd = self.observed * signed if fwd_cols is None else column_values(signed, self.mask, fwd_cols)
            adj = self.observed * board if adj_cols is None else column_values(board, self.mask, adj_cols)
            if folded:
                fwd, adj = fwd * (H * W) ** -0.5, adj * (H * W) ** -0.5
            return (board, fwd, fwd_cols), (_sign_pairs(adj), _sign_pairs(signed), adj_cols)

        return self._derived(f"weights{int(folded)}", make)[adjoint]

    # -- maps -----------------------------------------------------------------------------------------
    # With even H, W the centring shifts of F are sign flips c (see checkerboards), folded into the mask and
    # the single-coil image: F z = s c ⊙ fft2(c ⊙ z), F^H w = s c ⊙ ifft2(c ⊙ w) = s c ⊙ conj(fft2(c ⊙ conj(w))).
    # The conjugate form lets the coil sum use S itself (sum_c conj(S_c) z_c = conj(sum_c S_c conj(z_c))).
    # Without a gradient to record, the maps go through the batch in chunks of at most CHUNK_BYTES
    # (operators/workspace.py): no coil-sized temporary of the whole batch, outputs written in place.
    # A column mask with few enough columns (PRUNE_ADJOINT, PRUNE_FORWARD) prunes the FFTs (fourier.sampled_columns):
    # fft2 = fft_H ∘ fft_W, and the FFT along H is needed only on the K sampled columns (forward: after the FFT along
    # W of every row; adjoint: before it, its input being zero elsewhere); mask and checkerboard act on K columns.
    # The mask weights (and their sign pairs) are computed once per mask (_derived), not once per call. For complex64
    # they also carry the FFTs' 1 / sqrt(H W) (1 / N of A.N's two transforms of N points), and the FFTs run
    # unnormalised (_folds_norm): torch scales in a separate pass over the output, 10 % of a SENSE forward + adjoint
    # (8 coils, 320², one CPU thread; 13 % of A.N).
    def _forward(self, x: Tensor) -> Tensor:
        x = _as_complex(x)
        if self.ishape[2] % 2 or self.ishape[3] % 2:
            coil_images = x if self.coil_maps is None else self.coil_maps * x
            return self.observed * fft2c(coil_images)
        folded = _folds_norm(_result_dtype(x, self.coil_maps))
        board, weights, cols = self._weights(adjoint=False, folded=folded)
        norm = _norm(folded)
        if not needs_graph(x, self.coil_maps, self.mask):
            return self._forward_chunked(x * board, weights, cols, norm)
        x = x * board
        coil_images = x if self.coil_maps is None else self.coil_maps * x
        if cols is None:
            return torch.fft.fft2(coil_images, norm=norm).mul_(weights)  # in place: a fresh FFT
        rows = torch.fft.fft(coil_images, dim=-1, norm=norm)
        kspace = torch.fft.fft(take_columns(rows, cols), dim=-2, norm=norm)
        return put_columns(kspace.mul_(weights), cols, self.ishape[3])

    def _adjoint(self, y: Tensor) -> Tensor:
        y = _as_complex(y)
        if self.ishape[2] % 2 or self.ishape[3] % 2:
            coil_images = ifft2c(self.observed * y)
            if self.coil_maps is None:
                return coil_images
            return (self.coil_maps.conj() * coil_images).sum(dim=1, keepdim=True)
        folded = _folds_norm(_result_dtype(y, self.coil_maps))
        pairs, final, cols = self._weights(adjoint=True, folded=folded)
        norm = _norm(folded)
        if not needs_graph(y, self.coil_maps, self.mask):
            return self._adjoint_chunked(y, pairs, final, cols, norm)
        if cols is None:
            conj_images = torch.fft.fft2(_conj_times(y, pairs), norm=norm)  # conj(ifft2(c M y))
        else:
            columns = torch.fft.fft(_conj_times(take_columns(y, cols), pairs), dim=-2, norm=norm)
            conj_images = torch.fft.fft(put_columns(columns, cols, self.ishape[3]), dim=-1, norm=norm)
        if self.coil_maps is not None:
            conj_images = _times_maps(conj_images, self.coil_maps).sum(dim=1, keepdim=True)
        return _conj_times(conj_images, final)

    def _normal(self, x: Tensor) -> Tensor:
        # F^H D F is a circular convolution for a diagonal D = M^2 in k-space, so the centring shifts cancel:
        # F^H D F = ifft2 ⊙ ifftshift(D) ⊙ fft2 for any H, W; a column mask needs only FFTs along the rows
        # (F_H^H F_H = I). In the conjugate form of _adjoint: A^H A x = conj(sum_c S_c fft(D' ⊙ conj(fft(S_c x)))).
        x = _as_complex(x)
        dims = (-1,) if self.is_column_mask else (-2, -1)
        maps = self.coil_maps
        folded = _folds_norm(_result_dtype(x, maps))
        norm = _norm(folded)

        def make():  # D' = ifftshift(M^2), over the number of points transformed when the norm is folded
            points = self.ishape[3] if self.is_column_mask else self.ishape[2] * self.ishape[3]
            shifted = torch.fft.ifftshift(self.observed**2, dim=dims)
            return _sign_pairs(shifted / points if folded else shifted)

        pairs = self._derived(f"normal{int(folded)}", make)
        if needs_graph(x, maps, self.mask):
            coil_images = x if maps is None else maps * x
            conj_images = torch.fft.fftn(
                _conj_times(torch.fft.fftn(coil_images, dim=dims, norm=norm), pairs), dim=dims, norm=norm
            )
            if maps is not None:
                conj_images = _times_maps(conj_images, maps).sum(dim=1, keepdim=True)
            return torch.conj_physical(conj_images)
        out = empty_output(self.ishape, _result_dtype(x, maps), x.device)
        ws = _workspace(self, out.dtype, x.device)
        for s, c in chunks(*self.oshape[:2], _plane_bytes(self, out.dtype), chunk_budget(out.device)):
            coil_images = _coil_images(maps, x, s, c, ws)
            kspace = torch.fft.fftn(coil_images, dim=dims, norm=norm)
            conj_images = torch.fft.fftn(_conj_times(kspace, pairs[s], out=kspace), dim=dims, norm=norm)
            _accumulate(out, conj_images, maps, s, c)
        torch.view_as_real(out)[..., 1].neg_()
        return out

    def _forward_chunked(self, x: Tensor, weights: Tensor, cols: Tensor | None, norm: str) -> Tensor:
        """``x`` already times the input board; ``weights`` per sample, or shared when the columns are; the FFTs'
        ``norm`` (:func:`_norm`)."""
        maps = self.coil_maps
        dtype = _result_dtype(x, maps)
        parts = list(chunks(*self.oshape[:2], _plane_bytes(self, dtype), chunk_budget(x.device)))
        ws = _workspace(self, dtype, x.device)
        if cols is None and len(parts) == 1:  # one chunk: the fresh FFT is the output
            return torch.fft.fft2(_coil_images(maps, x, *parts[0], ws), norm=norm).mul_(weights)
        y = empty_output(self.oshape, dtype, x.device)
        per_sample = weights.shape[0] > 1
        for s, c in parts:
            coil_images = _coil_images(maps, x, s, c, ws)
            if cols is None:  # the weights multiply the FFT into the output (an FFT's out= is a copy in ATen)
                kspace = torch.fft.fft2(coil_images, norm=norm)
                torch.mul(kspace, _samples(weights, s, per_sample), out=y[s, c])
                continue
            cols_s = _samples(cols, s, cols.ndim == 2)
            rows = torch.fft.fft(coil_images, dim=-1, norm=norm)
            kspace = torch.fft.fft(take_columns(rows, cols_s), dim=-2, norm=norm)
            put_columns(kspace.mul_(_samples(weights, s, per_sample)), cols_s, y.shape[-1], out=y[s, c].zero_())
        return y

    def _adjoint_chunked(self, y: Tensor, pairs: Tensor, final: Tensor, cols: Tensor | None, norm: str) -> Tensor:
        maps = self.coil_maps
        out = empty_output(self.ishape, _result_dtype(y, maps), y.device)
        per_sample = pairs.shape[0] > 1
        ws = _workspace(self, out.dtype, y.device)
        for s, c in chunks(*self.oshape[:2], _plane_bytes(self, out.dtype), chunk_budget(out.device)):
            pairs_s = _samples(pairs, s, per_sample)
            if cols is None:
                conj_images = torch.fft.fft2(_conj_times(y[s, c], pairs_s, out=_part(ws, s, c)), norm=norm)
            else:
                cols_s = _samples(cols, s, cols.ndim == 2)
                taken = take_columns(y[s, c], cols_s)
                columns = torch.fft.fft(_conj_times(taken, pairs_s, out=taken), dim=-2, norm=norm)
                columns = put_columns(columns, cols_s, out.shape[-1], out=_part(ws, s, c).zero_())
                conj_images = torch.fft.fft(columns, dim=-1, norm=norm)
            _accumulate(out, conj_images, maps, s, c)
        return _conj_times(out, final, out=out)

    # -- ambient training ------------------------------------------------------------------------------
    def restrict(self, keep: Tensor) -> CartesianMRI:
        """Observe ``observed * keep``; ``keep`` is shaped like ``observed`` (a 2-D ``keep`` on a column mask
        gives a 2-D mask). Shares the coil maps."""
        kept = self.observed * keep.to(self.mask)
        if kept.ndim != 4 or kept.shape[1] != 1:
            raise ValueError(
                f"CartesianMRI.restrict: keep of shape {tuple(keep.shape)} does not broadcast like observed "
                f"{tuple(self.observed.shape)}"
            )
        mask = kept[:, 0, 0, :] if kept.shape[2] == 1 else kept[:, 0]
        return CartesianMRI(mask, self.coil_maps, self.ishape[1:])

    def tile(self, copies: int) -> CartesianMRI:
        """The batch repeated ``copies`` times, copy-major (mask and coil maps repeated)."""
        maps = None if self.coil_maps is None else repeat_batch(self.coil_maps, copies)
        return CartesianMRI(repeat_batch(self.mask, copies), maps, self.ishape[1:])

    def params(self) -> dict[str, Tensor]:
        """``{"mask": (B, W) or (B, H, W)}`` plus ``"coil_maps": (B, C, H, W)`` when multi-coil."""
        out = {"mask": self.mask}
        if self.coil_maps is not None:
            out["coil_maps"] = self.coil_maps
        return out


class CartesianMRIFamily(OperatorFamily):
    """The law of Cartesian MRI operators: fastMRI-style masks, optional simulated coils, and the
    further corruption of ambient training (drop observed lines, never the ACS).

    Args:
        image_shape: ``(1, H, W)``; one complex channel.
        acceleration: nominal acceleration ``R`` (``W / R`` columns, or ``H W / R`` points, on average).
        center_fraction: fraction of fully sampled centre columns (the ACS band); for 2-D masks the ACS
            box is ``round(H·cf) × round(W·cf)``. The ACS is never dropped by further corruption.
        mask_kind: ``"random"`` or ``"equispaced"`` columns (fastMRI), or ``"poisson"`` (sigpy Poisson
            disc) or ``"variable_density"`` 2-D masks.
        drop_fraction: further corruption: drop this fraction of each sample's observed non-ACS columns
            (or points).
        num_coils: ``None`` for single-coil; ``C`` for multi-coil. ``sample`` then uses sigpy birdcage
            maps (RSS-normalised); ``make(params)`` uses ``params["coil_maps"]`` (e.g. ESPIRiT).
        coil_radius: relative birdcage radius of the simulated coils.

    Conditioning: the sampled-column mask broadcast to an image (the 2-D mask itself), 1 channel.
    """

    name = "cartesian_mri"
    is_complex = True
    conditioning_channels = 1
    #: record-level entries of ``params`` that are not operator parameters (ignored by ``make``)
    aux_params = ("scale",)

    def __init__(
        self,
        image_shape: Sequence[int],
        acceleration: float = 4.0,
        center_fraction: float = 0.08,
        mask_kind: str = "random",
        drop_fraction: float = 0.2,
        num_coils: int | None = None,
        coil_radius: float = 1.5,
    ):
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or shape[0] != 1 or min(shape) < 1:
            raise ValueError(f"image_shape must be (1, H, W) (one complex channel), got {tuple(image_shape)}")
        if mask_kind not in MASK_KINDS:
            raise ValueError(f"unknown mask_kind {mask_kind!r}; expected one of {MASK_KINDS}")
        if not 0.0 <= drop_fraction < 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
        if num_coils is not None and int(num_coils) < 1:
            raise ValueError(f"num_coils must be None (single-coil) or >= 1, got {num_coils}")
        self.image_shape = shape  # type: ignore[assignment]
        self.acceleration = float(acceleration)
        self.center_fraction = float(center_fraction)
        self.mask_kind = mask_kind
        self.drop_fraction = float(drop_fraction)
        self.num_coils = None if num_coils is None else int(num_coils)
        self.coil_radius = float(coil_radius)
        if self.is_column_mask:  # validate acceleration / center_fraction now (cheap for columns)
            self.sample_masks(1, torch.Generator())
        elif self.acceleration < 1:
            raise ValueError(f"acceleration must be >= 1, got {acceleration}")
        self._maps: Tensor | None = None

    @property
    def is_column_mask(self) -> bool:
        return self.mask_kind in COLUMN_KINDS

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Masks only (no operator): ``(B, W)`` columns or ``(B, H, W)`` 2-D, float32, on the generator's device."""
        _, H, W = self.image_shape
        R, cf = self.acceleration, self.center_fraction
        if self.mask_kind in COLUMN_KINDS:
            return column_mask(self.mask_kind, batch_size, W, R, cf, generator=generator)
        if self.mask_kind == "poisson":
            return poisson_disc_mask(batch_size, (H, W), R, cf, generator=generator)
        return variable_density_mask(batch_size, (H, W), R, cf, generator=generator)

    def simulated_coil_maps(self) -> Tensor:
        """The birdcage maps used by ``sample`` (computed once per family), ``(C, H, W)`` complex64."""
        if self.num_coils is None:
            raise ValueError("simulated_coil_maps: this family is single-coil (num_coils=None)")
        if self._maps is None:
            self._maps = birdcage_maps(self.num_coils, self.image_shape[1:], radius=self.coil_radius)
        return self._maps

    def sample(self, batch_size, *, generator, device=None) -> CartesianMRI:
        mask = self.sample_masks(batch_size, generator)
        maps = None
        if self.num_coils is not None:
            maps = self.simulated_coil_maps().to(mask.device)[None].expand(batch_size, -1, -1, -1)
        return CartesianMRI(mask, maps, self.image_shape).to(device or mask.device)

    def further_corrupt(self, A: CartesianMRI, *, generator: torch.Generator) -> CartesianMRI:
        """Drop ``drop_fraction`` of each sample's observed non-ACS columns (points); the ACS stays."""
        if A.is_column_mask:
            kept = drop_columns(A.mask, self.drop_fraction, self.center_fraction, generator=generator)
        else:
            kept = drop_points(A.mask, self.drop_fraction, self.center_fraction, generator=generator)
        return CartesianMRI(kept, A.coil_maps, A.ishape[1:])

    def conditioning(self, A: CartesianMRI) -> Tensor:
        """The sampled-column mask broadcast to ``(B, 1, H, W)`` (a 2-D mask as it is), real float32."""
        return torch.broadcast_to(A.observed, A.ishape).contiguous()

    def make(self, params: dict[str, Tensor]) -> CartesianMRI:
        """Rebuild from ``{"mask", "coil_maps"?}`` (``"scale"`` and other ``aux_params`` are ignored)."""
        unknown = set(params) - {"mask", "coil_maps", *self.aux_params}
        if "mask" not in params or unknown:
            raise KeyError(
                f"CartesianMRIFamily.make expects params 'mask' (+ 'coil_maps' when multi-coil), got {sorted(params)}"
            )
        maps = params.get("coil_maps")
        if self.num_coils is None and maps is not None:
            raise ValueError("CartesianMRIFamily.make: single-coil family (num_coils=None) got params['coil_maps']")
        if self.num_coils is not None:
            if maps is None:
                raise KeyError(f"CartesianMRIFamily.make: multi-coil family ({self.num_coils} coils) needs 'coil_maps'")
            if maps.ndim != 4 or maps.shape[1] != self.num_coils:
                raise ValueError(
                    f"CartesianMRIFamily.make: coil_maps of shape {tuple(maps.shape)}, expected "
                    f"(B, {self.num_coils}, {self.image_shape[1]}, {self.image_shape[2]})"
                )
        return CartesianMRI(params["mask"], maps, self.image_shape)

    def config(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "image_shape": list(self.image_shape),
            "acceleration": self.acceleration,
            "center_fraction": self.center_fraction,
            "mask_kind": self.mask_kind,
            "drop_fraction": self.drop_fraction,
            "num_coils": self.num_coils,
            "coil_radius": self.coil_radius,
        }
