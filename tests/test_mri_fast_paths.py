"""CartesianMRI's two code paths agree: the chunked no-gradient path (workspace buffers, ``out=`` products, coil
chunks, the rows-only normal of a column mask) and the functional path autograd records; gradients flow. A column
mask's pruned FFTs (along H on the sampled columns only) agree with the dense reference."""

import numpy as np
import pytest
import torch
import torch.utils.dlpack

from ambient_science.operators import CartesianMRI, mri, workspace
from ambient_science.operators.fourier import sampled_columns
from ambient_science.operators.mri_masks import column_mask
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


@pytest.mark.parametrize("mask", ["2d", "columns", "pruned columns"])
def test_complex128_keeps_double_precision(monkeypatch, mask):
    """complex64 folds the FFTs' 1 / sqrt(H W) into its float32 mask weights; complex128 must not (a float32 factor
    1 / sqrt(H W) is not exact here), so it matches NumPy's double-precision reference to 1e-12."""
    if mask == "pruned columns":
        monkeypatch.setattr(mri, "PRUNE_NARROW_WIDTH", 0)
        monkeypatch.setattr(mri, "PRUNE_ADJOINT", 0.5)
        monkeypatch.setattr(mri, "PRUNE_FORWARD", 0.5)
    H, W = 20, 40
    A, mask_, maps = _operator(3, H, W, 4, mask == "2d")
    if mask == "pruned columns":
        mask_ = _column_masks(3, W, shared=False)
    maps = maps.to(torch.complex128)
    A = CartesianMRI(mask_, maps)
    assert (A.sampled_columns() is not None) == (mask == "pruned columns")
    x, y = _crandn(3, 1, H, W, seed=5, dtype=torch.float64), _crandn(*A.oshape, seed=6, dtype=torch.float64)
    m, s = mask_.numpy(), maps.numpy()
    with torch.no_grad():
        fwd, adj, nrm = A(x), A.H(y), A.N(x)
    np.testing.assert_allclose(fwd.numpy(), _np_forward(x.numpy(), m, s), rtol=0, atol=1e-12)
    np.testing.assert_allclose(adj.numpy(), _np_adjoint(y.numpy(), m, s), rtol=0, atol=1e-12)
    np.testing.assert_allclose(nrm.numpy(), _np_adjoint(_np_forward(x.numpy(), m, s), m, s), rtol=0, atol=1e-12)


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


def _storage(t):
    return t.untyped_storage()._cdata


def test_empty_output_recycles_only_what_nothing_refers_to():
    """A large output's memory is handed out again only once no tensor, view or NumPy array of it is left."""
    workspace.release_outputs()
    shape, cpu = (2, 2**20), torch.device("cpu")  # 16 MiB complex64
    a = empty_output(shape, torch.complex64, cpu)
    a.fill_(1)
    key = _storage(a)
    b = empty_output(shape, torch.complex64, cpu)  # a is alive: fresh memory
    assert _storage(b) != key and a.eq(1).all()
    del a
    c = empty_output(shape, torch.complex64, cpu)  # the block kept is b's, which is alive
    assert _storage(c) != _storage(b)
    kept = _storage(c)
    held = {"view": lambda t: t[1:], "numpy": lambda t: t.numpy(), "detached": lambda t: t.detach(),
            "real view": torch.view_as_real, "dlpack": torch.utils.dlpack.to_dlpack}  # fmt: skip
    for name, hold in held.items():
        ref = hold(c)
        del c
        d = empty_output(shape, torch.complex64, cpu)
        assert _storage(d) != kept, f"recycled while a {name} of it was alive"
        del ref
        c, kept = d, _storage(d)
        del d
    del c
    e = empty_output((2**20, 2), torch.complex64, cpu)  # nothing refers to it: same memory, new shape
    assert _storage(e) == kept and e.shape == (2**20, 2) and e.is_contiguous()
    f = empty_output((2**21, 2), torch.float32, cpu)  # same size in bytes, another dtype: e is alive, so fresh
    assert _storage(f) != kept and f.dtype == torch.float32
    workspace.release_outputs()
    assert not workspace._blocks
    small = empty_output((4,), torch.float32, cpu)
    assert small.shape == (4,) and not workspace._blocks  # small outputs are never kept


def test_recycling_keeps_bounded_memory_and_needs_a_reference_count(monkeypatch):
    """Blocks above MAX_RECYCLED_BYTES (together) are not kept; without torch's storage reference count nothing is."""
    workspace.release_outputs()
    cpu = torch.device("cpu")
    monkeypatch.setattr(workspace, "MAX_RECYCLED_BYTES", 20 * 2**20)
    empty_output((2, 2**20), torch.complex64, cpu)  # 16 MiB: kept
    assert sum(workspace._blocks) == 16 * 2**20
    empty_output((3, 2**20), torch.complex64, cpu)  # 24 MiB: above the cap, never kept
    assert sum(workspace._blocks) == 16 * 2**20
    empty_output((1, 2**20), torch.complex64, cpu)  # 8 MiB more: over the cap, the oldest goes
    assert sum(workspace._blocks) == 8 * 2**20
    workspace.release_outputs()
    monkeypatch.setattr(workspace, "_USE_COUNT", None)
    empty_output((2, 2**20), torch.complex64, cpu)
    empty_output((2, 2**20), torch.complex64, cpu)
    assert not workspace._blocks  # nothing kept, so nothing can be handed out twice


def test_operator_outputs_survive_later_calls():
    """An output the caller keeps is never overwritten by a later call of the same operator (recycled memory)."""
    g = torch.Generator().manual_seed(3)
    mask = column_mask("random", 4, 256, 4.0, 0.08, generator=g)
    maps = torch.randn(4, 8, 256, 256, dtype=torch.complex64, generator=g)
    A = CartesianMRI(mask, maps)  # outputs of 16 MiB: above the size empty_output recycles
    x1, x2 = (torch.randn(4, 1, 256, 256, dtype=torch.complex64, generator=g) for _ in range(2))
    y1 = A(x1)
    first = y1.clone()
    for _ in range(3):
        y2 = A(x2)
        assert torch.equal(y1, first)
        del y2
    assert torch.equal(A(x1), first)


# -- column-pruned FFTs ------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _limits_at_any_width(monkeypatch):
    """The tests below set PRUNE_ADJOINT / PRUNE_FORWARD on small images: let those limits hold at any width."""
    monkeypatch.setattr(mri, "PRUNE_NARROW_WIDTH", 0)


def test_narrow_images_keep_the_earlier_limits(monkeypatch):
    monkeypatch.setattr(mri, "PRUNE_NARROW_WIDTH", 128)
    mask = torch.zeros(2, 64)
    mask[:, :17] = 1.0  # 27 % of the columns: the adjoint prunes (<= 28 %), the forward does not (> 15 %)
    A = CartesianMRI(mask)
    assert A._weights(adjoint=True, folded=True)[2] is not None and A._weights(adjoint=False, folded=True)[2] is None
    wide = torch.zeros(2, 128)
    wide[:, :34] = 1.0  # 27 % of 128: both prune (<= 33 % / 28 %)
    B = CartesianMRI(wide)
    assert (
        B._weights(adjoint=True, folded=True)[2] is not None and B._weights(adjoint=False, folded=True)[2] is not None
    )


def _column_masks(B, W, shared, seed=0):
    """Sparse random column masks (about W / 4 columns, different counts per sample unless ``shared``)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, W)
    for b in range(1 if shared else B):
        mask[b, torch.randperm(W, generator=g)[: W // 4 + b % 3]] = 1.0
    return mask[:1].expand(B, W).clone() if shared else mask


@pytest.mark.parametrize("prune_forward", [False, True])
@pytest.mark.parametrize("budget", [None, 1, 3 * 8 * 12 * 8])
@pytest.mark.parametrize("coils", [None, 5])
@pytest.mark.parametrize("shared", [False, True])
def test_pruned_paths_match_reference_and_dense_path(monkeypatch, prune_forward, budget, coils, shared):
    monkeypatch.setattr(mri, "PRUNE_ADJOINT", 0.5)
    monkeypatch.setattr(mri, "PRUNE_FORWARD", 0.5 if prune_forward else 0.0)
    if budget is not None:
        monkeypatch.setattr(workspace, "CHUNK_BYTES", budget)
    B, H, W = 6, 8, 16
    mask = _column_masks(B, W, shared)
    maps = None if coils is None else _crandn(B, coils, H, W, seed=1)
    A = CartesianMRI(mask, maps, image_shape=(1, H, W))
    cols = A.sampled_columns()
    assert cols is not None and cols.ndim == (1 if shared else 2)
    x, y = _crandn(B, 1, H, W, seed=5), _crandn(*A.oshape, seed=6)
    m, s = mask.numpy(), None if maps is None else maps.numpy()
    with torch.no_grad():
        fwd, adj, nrm = A(x), A.H(y), A.N(x)
    np.testing.assert_allclose(fwd.numpy(), _np_forward(x.numpy(), m, s), atol=2e-5)
    np.testing.assert_allclose(adj.numpy(), _np_adjoint(y.numpy(), m, s), atol=2e-5)
    np.testing.assert_allclose(nrm.numpy(), _np_adjoint(_np_forward(x.numpy(), m, s), m, s), atol=2e-5)
    torch.testing.assert_close(A.H(fwd), nrm, atol=2e-5, rtol=1e-5)  # the pruned adjoint agrees with A.N
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    torch.testing.assert_close(A(xg).detach(), fwd, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(A.H(yg).detach(), adj, atol=2e-5, rtol=1e-5)


@pytest.mark.slow
def test_pruned_paths_are_adjoint_and_differentiable(monkeypatch):
    monkeypatch.setattr(mri, "PRUNE_ADJOINT", 0.5)
    monkeypatch.setattr(mri, "PRUNE_FORWARD", 0.5)
    B, H, W = 3, 6, 8
    mask = torch.tensor([[1.0, 0, 0, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 1, 0]])
    maps = _crandn(B, 2, H, W, seed=1, dtype=torch.float64)
    A = CartesianMRI(mask, maps)
    assert A.sampled_columns().shape == (B, 3)
    x = _crandn(B, 1, H, W, seed=3, dtype=torch.float64).requires_grad_()
    y = _crandn(*A.oshape, seed=4, dtype=torch.float64).requires_grad_()
    with torch.no_grad():  # <A x, y> = <x, A^H y>, chunked and graph paths
        lhs, rhs = torch.vdot(A(x).flatten(), y.flatten()), torch.vdot(x.flatten(), A.H(y).flatten())
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(torch.vdot(A(x).flatten(), y.flatten()), lhs.to(torch.complex128))
    assert torch.autograd.gradcheck(lambda v: A(v), (x,))
    assert torch.autograd.gradcheck(lambda v: A.H(v), (y,))
    target = A(x.detach()) + 0.1
    (grad,) = torch.autograd.grad(0.5 * (A(x) - target).abs().square().sum(), x)
    with torch.no_grad():
        torch.testing.assert_close(grad, A.H(A(x) - target))


def test_sampled_columns_fall_back_to_the_dense_path(monkeypatch):
    monkeypatch.setattr(mri, "PRUNE_ADJOINT", 0.5)
    g = torch.Generator().manual_seed(0)
    dense = (torch.rand(2, 16, generator=g) > 0.2).float()  # more than half the columns
    assert CartesianMRI(dense, image_shape=(1, 8, 16)).sampled_columns() is None
    assert CartesianMRI((torch.rand(2, 9, 16, generator=g) > 0.7).float()).sampled_columns() is None  # 2-D mask
    assert CartesianMRI(_column_masks(2, 7, False), image_shape=(1, 8, 7)).sampled_columns() is None  # odd W
    assert CartesianMRI(_column_masks(2, 8, False), image_shape=(1, 9, 8)).sampled_columns() is None  # odd H
    empty = CartesianMRI(torch.zeros(2, 8), image_shape=(1, 6, 8))  # nothing sampled: one zero-weight column
    assert empty.sampled_columns().shape == (1,)
    with torch.no_grad():
        assert not empty.H(_crandn(2, 1, 6, 8)).abs().any()
    sparse = _column_masks(2, 16, False)  # 4 and 5 of 16 columns: pruned up to the thresholds
    monkeypatch.setattr(mri, "PRUNE_ADJOINT", 0.25)
    assert CartesianMRI(sparse, image_shape=(1, 8, 16)).sampled_columns() is None
    monkeypatch.setattr(mri, "PRUNE_FORWARD", 0.32)
    assert CartesianMRI(sparse, image_shape=(1, 8, 16)).sampled_columns().shape == (2, 5)


def test_sampled_columns_pad_with_unsampled_columns():
    mask = torch.tensor([[0.0, 1, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    cols = sampled_columns(mask, max_fraction=1.0)
    assert cols.shape == (3, 3)
    for row, c in zip(mask, cols):
        n = int(row.sum())
        assert sorted(c[:n].tolist()) == row.nonzero().flatten().tolist() and not row[c[n:]].any()
    assert sampled_columns(mask[:1].expand(4, 6), max_fraction=1.0).tolist() == [1, 3, 4]
    assert sampled_columns(mask, max_fraction=0.4) is None


def test_mask_weights_follow_a_changed_mask(monkeypatch):
    monkeypatch.setattr(mri, "PRUNE_ADJOINT", 0.5)
    A = CartesianMRI(_column_masks(2, 16, False), _crandn(2, 3, 8, 16, seed=1))
    x = _crandn(2, 1, 8, 16, seed=2)
    with torch.no_grad():
        A(x), A.H(A(x))  # weights and columns computed and kept
        A.mask[:, :2] = 1.0  # in place: the kept weights must not be reused
        m, s = A.mask.numpy(), A.coil_maps.numpy()
        np.testing.assert_allclose(A(x).numpy(), _np_forward(x.numpy(), m, s), atol=2e-5)
        y = A(x)
        np.testing.assert_allclose(A.H(y).numpy(), _np_adjoint(y.numpy(), m, s), atol=2e-5)
        A.mask = _column_masks(2, 16, True, seed=3)  # a new mask tensor (as after .to(device))
        np.testing.assert_allclose(A.H(y).numpy(), _np_adjoint(y.numpy(), A.mask.numpy(), s), atol=2e-5)
