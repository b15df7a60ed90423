"""The interferometer's cached DFT tables and its chunked no-gradient transform: same numbers as the
functional path, a fresh cache after ``.to()`` or an in-place change of ``uv``, shared by ``restrict``."""

import math

import pytest
import torch

from ambient_science.operators import visibilities
from ambient_science.operators.interferometry import Interferometer, InterferometerFamily, uas_to_rad


def _operator(B=5, K=40, npix=16, seed=0, weight=False):
    g = torch.Generator().manual_seed(seed)
    psize = uas_to_rad(160.0) / npix
    uv = (torch.rand(B, K, 2, generator=g, dtype=torch.float64) - 0.5) * (0.9 / psize)
    observed = (torch.rand(B, K, generator=g) > 0.2).float()
    w = torch.rand(B, K, generator=g) + 0.5 if weight else None
    return Interferometer(uv, npix, psize, observed, weight=w, method="dft")


@pytest.mark.parametrize("budget", [None, 1])  # default chunks; one sample per chunk
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_grad_path_matches_graph_path(monkeypatch, budget, dtype):
    if budget is not None:
        monkeypatch.setattr(visibilities, "_DFT_CHUNK_BYTES", budget)
    A = _operator(weight=True)
    x = torch.rand(A.ishape, dtype=dtype)
    y = A(x.clone().requires_grad_())
    with torch.no_grad():
        y_fast = A(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(y_fast, y.detach(), rtol=tol, atol=tol * float(y.detach().abs().max()))
    v = torch.complex(torch.randn(A.oshape, dtype=dtype), torch.randn(A.oshape, dtype=dtype))
    img = A.H(v.clone().requires_grad_())
    with torch.no_grad():
        img_fast = A.H(v)
    torch.testing.assert_close(img_fast, img.detach(), rtol=tol, atol=tol * float(img.detach().abs().max()))


def test_tables_are_cached_shared_by_restrict_and_renewed_on_to():
    A = _operator()
    x = torch.rand(A.ishape)
    y = A(x)
    tables = A._exponentials(torch.float32)
    assert A._exponentials(torch.float32)[0] is tables[0]  # cached
    A_tilde = A.restrict((torch.rand(A.oshape) > 0.5).float())
    assert A_tilde._exponentials(torch.float32)[0] is tables[0]  # shared
    A64 = A.to(torch.float64)  # buffers may change: a fresh cache
    assert A64._exponentials(torch.float32)[0] is not tables[0]
    torch.testing.assert_close(A64(x), y)


def test_in_place_change_of_uv_recomputes_the_tables():
    A = _operator()
    x = torch.rand(A.ishape)
    y = A(x)
    with torch.no_grad():
        A.uv.mul_(0.5)
    fresh = Interferometer(A.uv.clone(), A.npix, A.pixel_size, A.observed, method="dft")
    torch.testing.assert_close(A(x), fresh(x))
    assert not torch.allclose(A(x), y)


def test_psf_is_the_dirty_beam_centred_on_pixel_half_n():
    A = _operator(B=2, K=30, npix=12)
    beam = A.psf(dtype=torch.float64)[:, 0]
    N, psize = A.npix, A.pixel_size
    coords = (N / 2 - torch.arange(N, dtype=torch.float64)) * psize  # offset 0: pixel N/2 at the centre
    w = A.observed.double()
    for b in range(2):
        u, v = A.uv[b, :, 0], A.uv[b, :, 1]
        phase = 2 * math.pi * (v[:, None, None] * coords[None, :, None] + u[:, None, None] * coords[None, None, :])
        ref = (w[b][:, None, None] * torch.cos(phase)).sum(0) / w[b].sum()
        torch.testing.assert_close(beam[b], ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(beam[:, N // 2, N // 2], torch.ones(2, dtype=torch.float64))


def test_family_operator_and_gradient():
    fam = InterferometerFamily(npix=16, fov_uas=160.0, bank_size=2, normalize=True)
    A = fam.sample(3, generator=torch.Generator().manual_seed(1))
    x = torch.rand(A.ishape, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        y = A(torch.rand(A.ishape, dtype=torch.float64))
    # ∇_x ½||A x − y||² = Re Aᴴ(A x − y): autograd through the graph path against the no-gradient adjoint
    (grad,) = torch.autograd.grad(0.5 * (A(x) - y).abs().square().sum(), x)
    with torch.no_grad():
        torch.testing.assert_close(grad, A.H(A(x) - y))


@pytest.mark.parametrize("budget", [None, 1, 3 * 2 * 30 * 12 * 8])  # one chunk; one sample each; 3 + 1 samples
def test_one_coverage_for_the_batch_keeps_one_table_and_the_same_numbers(monkeypatch, budget):
    """Samples of one observation share their uv points: one (1, 2K, N) table, one matrix product per chunk."""
    if budget is not None:
        monkeypatch.setattr(visibilities, "_DFT_CHUNK_BYTES", budget)
    single = _operator(B=1, K=30, npix=12, weight=True)
    B = 4
    shared = Interferometer(
        single.uv.expand(B, -1, -1), 12, single.pixel_size, single.observed.expand(B, -1),
        weight=single.weight.expand(B, -1), method="dft",
    )  # fmt: skip
    assert shared._exponentials(torch.float64)[0].shape[0] == 1
    x = torch.rand(B, 1, 12, 12, dtype=torch.float64)
    v = torch.complex(torch.randn(B, 30, dtype=torch.float64), torch.randn(B, 30, dtype=torch.float64))
    y_ref = torch.cat([single(x[b : b + 1]) for b in range(B)])
    img_ref = torch.cat([single.H(v[b : b + 1]) for b in range(B)])
    torch.testing.assert_close(shared(x), y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shared.H(v), img_ref, rtol=1e-12, atol=1e-12)
    xg = x.clone().requires_grad_()
    torch.testing.assert_close(shared(xg).detach(), y_ref, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(shared(xg).abs().pow(2).sum(), xg)
    grad_ref = torch.cat(
        [torch.autograd.grad(single(xg[b : b + 1]).abs().pow(2).sum(), xg)[0][b : b + 1] for b in range(B)]
    )
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(shared.H(v.clone().requires_grad_()).detach(), img_ref, rtol=1e-12, atol=1e-12)
    # different coverages in one batch keep a table per sample
    mixed = Interferometer(torch.cat([single.uv, 0.5 * single.uv]), 12, single.pixel_size, method="dft")
    assert mixed._exponentials(torch.float64)[0].shape[0] == 2
