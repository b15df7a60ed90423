"""Classical baselines: zero-filled, CG-SENSE, L1-wavelet on a small multi-coil problem."""

import numpy as np
import torch

from ambient_science.operators import CartesianMRI
from ambient_science.operators.coils import birdcage_maps
from ambient_science.operators.mri_masks import equispaced_column_mask
from ambient_science.operators.mri_recon import cg_sense, l1_wavelet, zero_filled, zero_filled_rss


def _phantom(H, W):
    yy, xx = np.mgrid[:H, :W]
    img = (((yy - H / 2) / (0.4 * H)) ** 2 + ((xx - W / 2) / (0.3 * W)) ** 2 < 1) * 1.0
    img += 0.5 * ((((yy - H / 2) / (0.15 * H)) ** 2 + ((xx - W / 2 - 3) / (0.1 * W)) ** 2) < 1)
    return torch.from_numpy(img.astype(np.complex64))[None, None]


def _err(x, ref):
    return float((x.abs() - ref.abs()).norm() / ref.abs().norm())


def test_zero_filled_cg_sense_and_l1_wavelet():
    H = W = 32
    x = _phantom(H, W)
    maps = birdcage_maps(8, (H, W))[None]
    mask = equispaced_column_mask(1, W, 2, 0.125, generator=torch.Generator().manual_seed(0))
    A = CartesianMRI(mask, maps)
    y = A(x)
    zf = zero_filled(A, y)
    assert zf.shape == (1, 1, H, W) and zero_filled_rss(A, y).shape == (1, 1, H, W)
    cg = cg_sense(A, y, max_iter=100, tol=1e-8)
    assert _err(cg, x) < 1e-2 < _err(zf, x)  # SENSE unfolds the 2x aliasing exactly (noiseless)
    l1 = l1_wavelet(A, y, lam=1e-4, max_iter=60)
    assert l1.shape == (1, 1, H, W) and l1.dtype == torch.complex64
    assert _err(l1, x) < _err(zf, x)


def test_single_coil_cg_sense_is_zero_filled():
    x = _phantom(16, 16)
    mask = equispaced_column_mask(1, 16, 2, 0.25, generator=torch.Generator().manual_seed(0))
    A = CartesianMRI(mask)
    y = A(x)
    torch.testing.assert_close(cg_sense(A, y), zero_filled(A, y), atol=1e-5, rtol=1e-4)
