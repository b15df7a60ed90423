"""CartesianMRI's two code paths agree: the chunked no-gradient path (workspace buffers, ``out=`` products, coil
chunks, the rows-only normal of a column mask) and the functional path autograd records; gradients flow."""

import numpy as np
import pytest
import torch

from ambient_science.operators import CartesianMRI, workspace
from ambient_science.operators.workspace import chunks, empty_output, needs_graph


def _crandn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g, dtype=dtype), torch.randn(*shape, generator=g, dtype=dtype))


def _np_forward(x, mask, maps):
    coil = x if maps is None else maps * x
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coil, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return (mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]) * k


def _np_adjoint(y, mask, maps):
    m = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(m * y, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return img if maps is None else (np.conj(maps) * img).sum(axis=1, keepdims=True)


def _operator(B, H, W, coils, mask_2d, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand((B, H, W) if mask_2d else (B, W), generator=g) > 0.6).float()
    maps = None if coils is None else _crandn(B, coils, H, W, seed=seed + 1)
    return CartesianMRI(mask, maps, image_shape=(1, H, W)), mask, maps


@pytest.mark.parametrize("budget", [None, 1, 3 * 8 * 12 * 8])  # default; one coil plane per chunk; 3 samples
@pytest.mark.parametrize("coils", [None, 5])
@pytest.mark.parametrize("mask_2d", [False, True])
@pytest.mark.parametrize("size", [(8, 12), (9, 7)])
def test_no_grad_path_matches_reference_and_graph_path(monkeypatch, budget, coils, mask_2d, size):
    if budget is not None:
        monkeypatch.setattr(workspace, "CHUNK_BYTES", budget)
    A, mask, maps = _operator(7, *size, coils, mask_2d)
    x = _crandn(7, 1, *size, seed=5)
    y = _crandn(*A.oshape, seed=6)
    m, s = mask.numpy(), None if maps is None else maps.numpy()
    with torch.no_grad():
        fwd, adj, nrm = A(x), A.H(y), A.N(x)
    np.testing.assert_allclose(fwd.numpy(), _np_forward(x.numpy(), m, s), atol=2e-5)
    np.testing.assert_allclose(adj.numpy(), _np_adjoint(y.numpy(), m, s), atol=2e-5)
    np.testing.assert_allclose(nrm.numpy(), _np_adjoint(_np_forward(x.numpy(), m, s), m, s), atol=2e-5)
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    torch.testing.assert_close(A(xg).detach(), fwd, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(A.H(yg).detach(), adj, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(A.N(xg).detach(), nrm, atol=2e-5, rtol=1e-5)


def test_no_grad_path_keeps_complex128():
    A, _, _ = _operator(2, 8, 8, 3, False)
    x = _crandn(2, 1, 8, 8, dtype=torch.float64)
    for out in (A(x), A.H(A(x)), A.N(x)):
        assert out.dtype == torch.complex128


@pytest.mark.slow
@pytest.mark.parametrize("mask_2d", [False, True])
def test_gradients_through_forward_adjoint_normal(mask_2d):
    A, _, _ = _operator(2, 6, 8, 2, mask_2d)
    x = _crandn(2, 1, 6, 8, seed=3, dtype=torch.float64).requires_grad_()
    y = _crandn(*A.oshape, seed=4, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: A(v), (x,))
    assert torch.autograd.gradcheck(lambda v: A.H(v), (y,))
    assert torch.autograd.gradcheck(lambda v: A.N(v), (x,))
    # the data-consistency gradient of A-DPS: grad_x ||A x - y||^2 / 2 = A^H (A x - y)
    target = A(x.detach()) + 0.1
    loss = 0.5 * (A(x) - target).abs().square().sum()
    (grad,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        torch.testing.assert_close(grad, A.H(A(x) - target))


def test_operator_inputs_are_not_modified():
    A, _, _ = _operator(3, 8, 8, 4, False)
    x, y = _crandn(3, 1, 8, 8), _crandn(*A.oshape)
    x0, y0, maps0 = x.clone(), y.clone(), A.coil_maps.clone()
    with torch.no_grad():
        A(x), A.H(y), A.N(x)
    assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(A.coil_maps, maps0)


def test_chunks_cover_every_sample_and_part_once():
    for batch, parts, part_bytes, budget in [(5, 8, 100, 250), (3, 4, 10, 10**6), (2, 7, 100, 300), (4, 1, 9, 1)]:
        seen = np.zeros((batch, parts), int)
        for s, p in chunks(batch, parts, part_bytes, budget):
            seen[s, p] += 1
            assert (s.stop - s.start == 1) or (p.stop - p.start == parts)
        assert (seen == 1).all()


def test_empty_output_and_needs_graph():
    big = empty_output((2, 3 * 2**20), torch.complex64, torch.device("cpu"))  # 48 MiB: huge-page advice
    assert big.shape == (2, 3 * 2**20) and big.dtype == torch.complex64
    assert empty_output((4,), torch.float32, torch.device("cpu")).shape == (4,)
    x = torch.ones(2, requires_grad=True)
    assert needs_graph(None, x) and not needs_graph(x.detach(), None)
    with torch.no_grad():
        assert not needs_graph(x)
