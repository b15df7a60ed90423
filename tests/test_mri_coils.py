"""Coil maps: birdcage normalisation, ESPIRiT recovers the true maps (torch and sigpy backends agree)."""

import numpy as np
import pytest
import torch

from ambient_science.operators import CartesianMRI, fft2c
from ambient_science.operators.coils import birdcage_maps, espirit_maps


def _object(H, W):
    yy, xx = np.mgrid[:H, :W]
    support = ((yy - H / 2) / (0.4 * H)) ** 2 + ((xx - W / 2) / (0.35 * W)) ** 2 < 1
    img = support * (1 + 0.3 * np.sin(xx / 3.0) + 0.2 * np.cos(yy / 4.0)) * np.exp(0.3j * xx / W)
    return torch.from_numpy(img.astype(np.complex64)), torch.from_numpy(support)


@pytest.fixture(scope="module")
def data():
    H = W = 32
    x, support = _object(H, W)
    S = birdcage_maps(4, (H, W))
    return x, support, S, fft2c(S * x)


def test_birdcage_maps_are_rss_normalised(data):
    _, _, S, _ = data
    assert S.shape == (4, 32, 32) and S.dtype == torch.complex64
    torch.testing.assert_close(S.abs().pow(2).sum(0), torch.ones(32, 32))


@pytest.mark.parametrize("calib", [(12, 12), (32, 6)])
def test_espirit_recovers_maps_up_to_phase(data, calib):
    x, support, S, k = data
    maps, eig = espirit_maps(k, calib, return_eigenvalue=True)
    assert maps.shape == S.shape and eig.shape == (32, 32)
    overlap = (maps.conj() * S).sum(0).abs()  # |<S_est, S_true>| = 1 iff equal up to a phase
    assert float(overlap[support].min()) > 0.99
    # the SENSE combination of fully sampled data gives back |x|
    A = CartesianMRI(torch.ones(1, 32), maps[None])
    rec = A.H(k[None])[0, 0]
    assert float((rec.abs() - x.abs())[support].norm() / x.abs()[support].norm()) < 1e-3


def test_espirit_torch_matches_sigpy_on_square_calibration(data):
    _, support, _, k = data
    a = espirit_maps(k, 10, backend="torch")
    b = espirit_maps(k, 10, backend="sigpy")
    overlap = (a.conj() * b).sum(0).abs()
    assert float(overlap[support].min()) > 0.999


def test_espirit_batched_and_errors(data):
    _, _, _, k = data
    maps = espirit_maps(torch.stack([k, 2 * k]), (32, 8))
    assert maps.shape == (2, 4, 32, 32)
    with pytest.raises(ValueError, match="complex k-space"):
        espirit_maps(k.real, 8)
    with pytest.raises(ValueError, match="backend"):
        espirit_maps(k, 8, backend="bart")


def test_batched_eigh_in_chunks_matches_one_call_and_falls_back(monkeypatch):
    """ESPIRiT's per-pixel eigenproblems are solved in chunks on CUDA (cuSOLVER fails on one batch of 65,536
    15 x 15 matrices on an H200); chunks give the one-call result, and a chunk that fails is solved again."""
    from ambient_science.operators import coils

    a = torch.randn(3, 7, 5, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    G = a @ a.conj().transpose(-1, -2)
    evals, evecs = torch.linalg.eigh(G)
    e, v = coils._batched_eigh(G, chunk_size=4)  # 21 matrices: chunks of 4, 4, ..., 1
    torch.testing.assert_close(e, evals)
    torch.testing.assert_close(v.abs(), evecs.abs())  # eigenvectors up to a phase (distinct eigenvalues)

    real_eigh, calls = torch.linalg.eigh, []

    def flaky(m):
        calls.append(m.shape[0])
        if len(calls) == 2:
            raise RuntimeError("cusolver error: CUSOLVER_STATUS_INTERNAL_ERROR")
        return real_eigh(m)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    with pytest.warns(UserWarning, match="eigh failed"):
        e2, _ = coils._batched_eigh(G, chunk_size=8)
    torch.testing.assert_close(e2, evals)
    assert calls == [8, 8, 8, 5]  # the failed chunk solved again, then the last
