"""Coil sensitivity maps: ESPIRiT from the calibration (ACS) region, and simulated birdcage maps.

ESPIRiT (Uecker et al., MRM 2014): the calibration matrix ``A`` holds every ``kh × kw`` k-space patch of
the fully sampled calibration region (all coils side by side). Its dominant right singular vectors span
the signal subspace, which contains ``s(x) ⊗ φ_x`` for every image point ``x`` (``φ_x`` the Fourier
phases over the kernel). Projecting onto it and back in the image domain gives, per pixel, a ``C × C``
matrix ``G(x) = (1/K) Σ_j g_j(x) g_j(x)^H`` (``g_j`` the kernels' inverse DFTs, ``K = kh kw``) whose
eigenvector of eigenvalue ≈ 1 is the sensitivity vector ``s(x)``.

:func:`espirit_maps` runs this in torch with a *rectangular* calibration region (all rows × the ACS
columns of a Cartesian column mask, so narrow ACS bands of small grids still calibrate well), on any
device; ``backend="sigpy"`` calls ``sigpy.mri.app.EspiritCalib`` on the largest centred square instead.
Maps follow the operators' convention ``y_c = F(S_c x)`` with the centred orthonormal FFT.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ambient_science.operators.fourier import ifft2c

__all__ = ["birdcage_maps", "espirit_maps"]


def birdcage_maps(
    num_coils: int, shape: Sequence[int], *, radius: float = 1.5, device: torch.device | str | None = None
) -> Tensor:
    """Simulated birdcage coil maps (sigpy ``mri.birdcage_maps``), root-sum-of-squares normalised to 1.

    Coils sit on a circle of relative radius ``radius`` around the FOV; ``Σ_c |S_c|² = 1`` everywhere.

    Shape: ``(num_coils, H, W)`` complex64.
    """
    import sigpy.mri

    H, W = (int(s) for s in shape)
    if int(num_coils) < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}")
    maps = sigpy.mri.birdcage_maps((int(num_coils), H, W), r=float(radius), dtype=np.complex64)
    return torch.from_numpy(np.ascontiguousarray(maps)).to(device)


def _calibration_region(kspace: Tensor, calib_shape: Sequence[int]) -> Tensor:
    H, W = kspace.shape[-2:]
    h, w = (min(int(c), n) for c, n in zip(calib_shape, (H, W)))
    top, left = (H - h + 1) // 2, (W - w + 1) // 2
    return kspace[:, top : top + h, left : left + w]


# cuSOLVER's batched Hermitian eigensolver fails (CUSOLVER_STATUS_INTERNAL_ERROR; an H200, torch 2.11 + CUDA 13)
# on batches of 65,536 15 x 15 matrices, while 16,384 solve; one 640 x 368 fastMRI slice has 235,520 pixels.
_EIGH_CHUNK = 16384


def _batched_eigh(G: Tensor, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` over the leading dimensions of ``G`` (..., n, n), ``chunk_size`` matrices per call
    (default: ``_EIGH_CHUNK`` on CUDA, one call elsewhere)."""
    if chunk_size is None:
        if G.device.type != "cuda":
            return torch.linalg.eigh(G)
        chunk_size = _EIGH_CHUNK
    flat = G.reshape(-1, *G.shape[-2:])
    parts = []
    for i in range(0, flat.shape[0], chunk_size):
        chunk = flat[i : i + chunk_size]
        try:
            parts.append(torch.linalg.eigh(chunk))
        except RuntimeError as err:  # a cuSOLVER failure: the same decomposition on the CPU
            warnings.warn(f"espirit_maps: CUDA eigh failed ({str(err)[:80]}...); solving on the CPU", stacklevel=3)
            parts.append(tuple(t.to(G.device) for t in torch.linalg.eigh(chunk.cpu())))
    evals = torch.cat([e for e, _ in parts]).reshape(G.shape[:-1])
    evecs = torch.cat([v for _, v in parts]).reshape(G.shape)
    return evals, evecs


def _espirit_torch(
    kspace: Tensor, calib_shape: Sequence[int], kernel_width: int, thresh: float, crop: float
) -> tuple[Tensor, Tensor]:
    C, H, W = kspace.shape
    calib = _calibration_region(kspace.to(torch.complex128), calib_shape)  # (C, h, w)
    h, w = calib.shape[1:]
    # kernel at most half the calibration region (rounded up): narrow ACS bands need enough patch shifts
    kh, kw = (max(1, min(kernel_width, (n + 1) // 2)) for n in (h, w))
    patches = calib.unfold(1, kh, 1).unfold(2, kw, 1)  # (C, nh, nw, kh, kw)
    mat = patches.permute(1, 2, 0, 3, 4).reshape(-1, C * kh * kw)  # (P, C K)
    # right singular vectors of A from the Gram matrix A^H A = V Σ² V^H (much faster than an SVD of A)
    evals, V = torch.linalg.eigh(mat.conj().T @ mat)
    sigma = evals.clamp_min(0).sqrt()
    if float(sigma.max()) == 0.0:
        raise ValueError("espirit_maps: the calibration region holds no signal (all zeros)")
    Vh = V.conj().T
    kernels = Vh[sigma > thresh * sigma.max()].reshape(-1, C, kh, kw)  # rows of V^H span the signal subspace
    # kernels on the full k-space grid -> image domain; the placement adds a per-pixel phase that cancels in g g^H
    grid = torch.zeros(kernels.shape[0], C, H, W, dtype=kernels.dtype, device=kernels.device)
    top, left = (H - kh + 1) // 2, (W - kw + 1) // 2
    grid[:, :, top : top + kh, left : left + kw] = kernels
    g = ifft2c(grid) * (H * W) ** 0.5  # (J, C, H, W): g_jc(x) = Σ_o w_j(c, o) e^{+2πi o·x}
    g = g.permute(2, 3, 1, 0)  # (H, W, C, J)
    G = (g @ g.conj().transpose(-1, -2)) / (kh * kw)  # (H, W, C, C)
    evals, evecs = _batched_eigh(G)
    max_eig = evals[..., -1]  # (H, W)
    maps = evecs[..., -1].permute(2, 0, 1)  # (C, H, W)
    ref = maps[0]
    maps = maps * (ref.conj() / ref.abs().clamp_min(1e-30))  # phase relative to the first coil
    maps = maps * (max_eig > crop)
    return maps, max_eig


def espirit_maps(
    kspace: Tensor,
    calib_shape: int | Sequence[int],
    *,
    kernel_width: int = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    backend: str = "torch",
    return_eigenvalue: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """ESPIRiT sensitivity maps from the fully sampled centre of k-space.

    Args:
        kspace: ``(C, H, W)`` or ``(B, C, H, W)`` complex k-space (centred, as ``fft2c`` returns); only
            the centred calibration region is read, so undersampled k-space with its ACS is fine.
        calib_shape: ``(h, w)`` of the fully sampled centre (e.g. ``(H, n_acs)`` for a column mask), or
            one int for a square.
        kernel_width: ESPIRiT kernel size (at most half the calibration region, rounded up).
        thresh: keep singular vectors with ``σ > thresh · σ_max``.
        crop: zero the maps where the top eigenvalue is ``≤ crop`` (outside the object's support).
        backend: ``"torch"`` (rectangular calibration, any device) or ``"sigpy"`` (``EspiritCalib`` on
            the centred ``min(h, w)`` square, CPU).
        return_eigenvalue: also return the top eigenvalue map ``(..., H, W)``.

    Shape: ``(C, H, W)`` -> ``(C, H, W)`` complex64 (batched likewise), on ``kspace``'s device.
    """
    if not isinstance(kspace, Tensor):
        kspace = torch.as_tensor(np.asarray(kspace))
    if kspace.ndim == 4:
        out = [
            espirit_maps(
                k,
                calib_shape,
                kernel_width=kernel_width,
                thresh=thresh,
                crop=crop,
                backend=backend,
                return_eigenvalue=True,
            )
            for k in kspace
        ]
        maps, eig = torch.stack([m for m, _ in out]), torch.stack([e for _, e in out])
        return (maps, eig) if return_eigenvalue else maps
    if kspace.ndim != 3 or not kspace.is_complex():
        raise ValueError(f"espirit_maps: expected complex k-space (C, H, W), got {kspace.dtype} {tuple(kspace.shape)}")
    calib = (int(calib_shape), int(calib_shape)) if isinstance(calib_shape, int) else tuple(calib_shape)
    if backend == "torch":
        maps, eig = _espirit_torch(kspace, calib, kernel_width, thresh, crop)
    elif backend == "sigpy":
        import sigpy.mri

        width = min(int(c) for c in calib)
        app = sigpy.mri.app.EspiritCalib(
            kspace.detach().cpu().numpy().astype(np.complex128),
            calib_width=width,
            thresh=thresh,
            kernel_width=min(kernel_width, max(1, (width + 1) // 2)),
            crop=crop,
            output_eigenvalue=True,
            show_pbar=False,
        )
        m, e = app.run()
        maps = torch.from_numpy(np.asarray(m))
        eig = torch.from_numpy(np.abs(np.asarray(e)).reshape(kspace.shape[-2:]))
    else:
        raise ValueError(f"espirit_maps: unknown backend {backend!r}; expected 'torch' or 'sigpy'")
    maps = maps.to(torch.complex64).to(kspace.device)
    eig = eig.to(torch.float32).to(kspace.device)
    return (maps, eig) if return_eigenvalue else maps
