"""The classical MRI baselines over a grid of λ, every slice and every λ in ONE batched sigpy solve.

:func:`l1_wavelet_grid` and :func:`total_variation_grid` solve the problems of
:func:`~ambient_science.operators.mri_recon.l1_wavelet` and
:func:`~ambient_science.operators.mri_recon.total_variation` for all ``(λ, slice)`` pairs at once: the pairs are
stacked along a batch axis, the Fourier transform, wavelet and finite-difference operators act on the last two
axes only, and λ is an array that broadcasts over that axis, so the problems stay separate. Per slice and λ
this is the same algorithm with the same iterations: FISTA with the step ``1 / max_x Σ_c |S_c x|²`` (the
largest over the batch; exactly 1 single-coil) for L1-wavelet, so the single-coil estimates equal the per-slice
ones up to float rounding; for total variation, sigpy's primal-dual hybrid gradient takes its step from a power
iteration of the stacked operator (the largest eigenvalue over the batch, where each slice's own run estimates
its own), so the estimates differ from the per-slice ones by the spread of that estimate (≤ 0.005 dB PSNR on
the MRI example's test slices; L1-wavelet's agree to 10⁻⁴ dB). One solve instead of ``B · len(lams)`` spends
the time in vectorised numpy and pywt calls instead of per-call overhead: ``examples/mri_knee.py``'s 16 slices
× 7 λ of L1 and × 5 of TV at R = 4 and 8 take 29 CPU-seconds instead of 59 (one thread, a loaded machine).

Shape: ``y (B, C, H, W)`` complex64 -> ``{λ: (B, 1, H, W) complex64}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ambient_science.operators.mri import CartesianMRI
from ambient_science.operators.mri_recon import compile_soft_thresh

__all__ = ["l1_wavelet_grid", "total_variation_grid"]


def _stacked(A: CartesianMRI, y: Tensor, lams: Sequence[float]):
    """The batched sigpy problem: ``(A_s, y_s, lam, shape, N)`` with pairs ``n = l·B + b`` (λ-major), padded to an
    even count (sigpy's wavelet pads odd axes; a padded pair is a copy of the last one, dropped afterwards)."""
    import sigpy

    compile_soft_thresh()
    lams = [float(lam) for lam in lams]
    if not lams:
        raise ValueError("lams: expected at least one λ, got an empty grid")
    B = A.batch_size
    mask = torch.broadcast_to(A.observed, A.oshape).detach().cpu().numpy()  # (B, C, H, W)
    y_np = y.detach().cpu().numpy()
    if A.coil_maps is None:
        maps = np.ones((B, 1, *A.ishape[2:]), dtype=np.complex64)
    else:
        maps = A.coil_maps.detach().cpu().numpy()
    n = B * len(lams)
    pad = n % 2
    tile = [np.concatenate([a] * len(lams) + ([a[-1:]] if pad else [])) for a in (mask, y_np, maps)]
    mask_s, y_s, maps_s = tile
    lam = np.repeat(np.asarray(lams, dtype=np.float32), B)
    if pad:
        lam = np.append(lam, lam[-1])
    N, (H, W) = n + pad, A.ishape[2:]
    shape = (N, 1, H, W)
    weights = mask_s.astype(np.complex64)
    S = sigpy.linop.Multiply(shape, maps_s)
    F = sigpy.linop.FFT(S.oshape, axes=(-2, -1))
    A_s = sigpy.linop.Multiply(F.oshape, weights**0.5) * F * S
    return A_s, y_s * weights**0.5, lam, shape, maps_s, n


def _unstack(x: np.ndarray, lams: Sequence[float], B: int, n: int, device) -> dict[float, Tensor]:
    x = np.asarray(x)[:n].astype(np.complex64)
    return {float(lam): torch.from_numpy(x[i * B : (i + 1) * B].copy()).to(device) for i, lam in enumerate(lams)}


def l1_wavelet_grid(
    A: CartesianMRI, y: Tensor, lams: Sequence[float], *, max_iter: int = 100, wave_name: str = "db4"
) -> dict[float, Tensor]:
    """L1-wavelet compressed sensing ``argmin ½||A x - y||² + λ ||Ψ x||_1`` for every ``λ`` in ``lams``, one solve
    (module docs); the same FISTA iterations as :func:`~ambient_science.operators.mri_recon.l1_wavelet`."""
    import sigpy

    A_s, y_s, lam, shape, maps_s, n = _stacked(A, y, lams)
    flat = (shape[0], *shape[2:])
    Wv = sigpy.linop.Wavelet(flat, axes=(-2, -1), wave_name=wave_name) * sigpy.linop.Reshape(flat, shape)
    proxg = sigpy.prox.UnitaryTransform(sigpy.prox.L1Reg(Wv.oshape, lam.reshape(-1, 1, 1)), Wv)
    lipschitz = float((np.abs(maps_s) ** 2).sum(axis=1).max())  # the largest over the batch (module docs)
    app = sigpy.app.LinearLeastSquares(
        A_s, y_s, proxg=proxg, alpha=1.0 / max(lipschitz, 1e-12), max_iter=max_iter, show_pbar=False
    )
    return _unstack(app.run(), lams, A.batch_size, n, y.device)


def total_variation_grid(
    A: CartesianMRI, y: Tensor, lams: Sequence[float], *, max_iter: int = 100
) -> dict[float, Tensor]:
    """Total-variation reconstruction ``argmin ½||A x - y||² + λ ||∇ x||_1`` for every ``λ`` in ``lams``, one
    solve (module docs); the primal-dual iterations of :func:`~ambient_science.operators.mri_recon.total_variation`."""
    import sigpy

    A_s, y_s, lam, shape, _, n = _stacked(A, y, lams)
    G = sigpy.linop.FiniteDifference(shape, axes=(-2, -1))  # oshape (2, N, 1, H, W)
    proxg = sigpy.prox.L1Reg(G.oshape, lam.reshape(1, -1, 1, 1, 1))
    app = sigpy.app.LinearLeastSquares(A_s, y_s, proxg=proxg, G=G, max_iter=max_iter, show_pbar=False)
    return _unstack(app.run(), lams, A.batch_size, n, y.device)
