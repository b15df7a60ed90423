"""Classical MRI reconstructions, the baselines every learned prior is compared with.

- zero-filled: ``x = A^H y`` (single-coil: the inverse FFT of the zero-filled k-space; multi-coil: the
  SENSE coil combination ``Σ_c conj(S_c) F^H y_c``), or the RSS of the zero-filled coil images;
- CG-SENSE: ``argmin_x ||A x - y||² + λ ||x||²`` by conjugate gradient on the normal equations;
- L1-wavelet: ``argmin_x ½||A x - y||² + λ ||Ψ x||_1`` (Daubechies-4 wavelets), sigpy's
  ``mri.app.L1WaveletRecon`` per slice;
- total variation: ``argmin_x ½||A x - y||² + λ ||∇ x||_1`` (anisotropic finite differences), sigpy's
  ``mri.app.TotalVariationRecon`` (primal-dual hybrid gradient) per slice.

All take a batched :class:`~ambient_science.operators.mri.CartesianMRI` ``A`` and its k-space ``y``.

Shape: ``y (B, C, H, W)`` complex64 -> images ``(B, 1, H, W)`` complex64 (RSS: real).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor

from ambient_science.operators.mri import CartesianMRI, ifft2c

__all__ = ["cg_sense", "l1_wavelet", "total_variation", "zero_filled", "zero_filled_rss"]


_soft_thresh_ready = False
_SOFT_THRESH_LOCK = threading.Lock()


def compile_soft_thresh() -> None:
    """Compile sigpy's soft threshold, once per process and under a lock, for the arguments the L1-wavelet and TV
    solvers here pass it (a float ``λ`` per slice, a float32 ``λ`` array per pair of the grids; complex64 inputs).

    It is a numba ufunc compiled on its first call; two threads that make that first call at once (the MRI evaluation
    solves R = 4 and 8 in parallel) both compile it, and numba prints "Compilation requested for previously compiled
    argument types" on the user's screen.
    """
    global _soft_thresh_ready
    if _soft_thresh_ready:
        return
    with _SOFT_THRESH_LOCK:
        if not _soft_thresh_ready:
            import sigpy.thresh

            x = np.zeros(2, dtype=np.complex64)
            sigpy.thresh.soft_thresh(1.0, x)
            sigpy.thresh.soft_thresh(np.ones(2, dtype=np.float32), x)
            _soft_thresh_ready = True


def zero_filled(A: CartesianMRI, y: Tensor) -> Tensor:
    """``A^H y``: the zero-filled inverse FFT, coil-combined with the maps when multi-coil."""
    return A.H(y)


def zero_filled_rss(A: CartesianMRI, y: Tensor) -> Tensor:
    """Root-sum-of-squares of the zero-filled coil images (needs no coil maps). Shape: ``(B, 1, H, W)`` real."""
    coil_images = ifft2c(A.observed * y)
    return coil_images.abs().pow(2).sum(dim=1, keepdim=True).sqrt()


def cg_sense(A: CartesianMRI, y: Tensor, *, lam: float = 0.0, max_iter: int = 30, tol: float = 1e-6) -> Tensor:
    """CG-SENSE: ``(A^H A + λ I) x = A^H y`` solved per sample by conjugate gradient.

    Single-coil, this is the zero-filled image (``A^H A`` is a projection); with coils it unfolds the
    aliasing using the maps. ``lam`` (Tikhonov) stabilises high accelerations.
    """
    return A.solve_least_squares(y, lam=lam, max_iter=max_iter, tol=tol)


def l1_wavelet(
    A: CartesianMRI,
    y: Tensor,
    *,
    lam: float = 1e-3,
    max_iter: int = 100,
    wave_name: str = "db4",
) -> Tensor:
    """L1-wavelet compressed sensing, ``argmin ½||A x - y||² + λ ||Ψ x||_1``, via sigpy (CPU, per slice).

    ``lam`` is absolute: scale it with the data (e.g. data normalised so the image maximum is about 1,
    where ``1e-3``–``1e-2`` works at 4×–8×).
    """
    import sigpy.mri

    compile_soft_thresh()
    mask = torch.broadcast_to(A.observed, A.oshape).detach().cpu().numpy()  # (B, C, H, W)
    y_np = y.detach().cpu().numpy()
    if A.coil_maps is None:
        maps = np.ones((A.batch_size, 1, *A.ishape[2:]), dtype=np.complex64)
    else:
        maps = A.coil_maps.detach().cpu().numpy()
    out = []
    for b in range(A.batch_size):
        # ||A||² <= max_x Σ_c |S_c(x)|² (F unitary, M a 0/1 projection): a safe step 1/L without sigpy's power
        # iteration, whose underestimate of L makes FISTA diverge on ill-conditioned multi-coil problems
        lipschitz = float((np.abs(maps[b]) ** 2).sum(axis=0).max())
        app = sigpy.mri.app.L1WaveletRecon(
            y_np[b],
            maps[b],
            lam,
            weights=mask[b],
            wave_name=wave_name,
            max_iter=max_iter,
            alpha=1.0 / max(lipschitz, 1e-12),
            show_pbar=False,
        )
        out.append(np.asarray(app.run()))
    return torch.from_numpy(np.stack(out)[:, None].astype(np.complex64)).to(y.device)


def total_variation(A: CartesianMRI, y: Tensor, *, lam: float = 1e-3, max_iter: int = 100) -> Tensor:
    """Total-variation regularised reconstruction, ``argmin ½||A x - y||² + λ ||∇ x||_1``, via sigpy (CPU, per slice).

    ``lam`` is absolute, like :func:`l1_wavelet`'s (data normalised so the image maximum is about 1).
    """
    import sigpy.mri

    compile_soft_thresh()
    mask = torch.broadcast_to(A.observed, A.oshape).detach().cpu().numpy()
    y_np = y.detach().cpu().numpy()
    if A.coil_maps is None:
        maps = np.ones((A.batch_size, 1, *A.ishape[2:]), dtype=np.complex64)
    else:
        maps = A.coil_maps.detach().cpu().numpy()
    out = []
    for b in range(A.batch_size):
        app = sigpy.mri.app.TotalVariationRecon(
            y_np[b], maps[b], lam, weights=mask[b], max_iter=max_iter, show_pbar=False
        )
        out.append(np.asarray(app.run()))
    return torch.from_numpy(np.stack(out)[:, None].astype(np.complex64)).to(y.device)
