"""Cartesian MRI operator and family: numpy reference, adjoint, ACS-preserving further corruption."""

import numpy as np
import pytest
import torch

from ambient_science.family import check_subset
from ambient_science.operators import CartesianMRI, CartesianMRIFamily, fft2c, ifft2c, mri
from ambient_science.operators.mri_masks import acs_columns
from ambient_science.testing import check_adjoint, check_normal


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _crandn(*shape, seed=0):
    g = _g(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def _np_forward(x, mask, maps):
    """Independent reference: y_c = M ⊙ fftshift(fft2(ifftshift(S_c x), norm="ortho"))."""
    coil = x if maps is None else maps * x
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coil, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    m = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
    return m * k


@pytest.mark.parametrize("coils", [None, 3])
@pytest.mark.parametrize("mask_2d", [False, True])
def test_forward_matches_numpy_reference(coils, mask_2d):
    B, H, W = 2, 10, 14  # even and odd sizes are both covered below
    for h, w in [(H, W), (9, 7)]:
        g = _g(1)
        mask = (torch.rand((B, h, w) if mask_2d else (B, w), generator=g) > 0.5).float()
        maps = None if coils is None else _crandn(B, coils, h, w, seed=2)
        x = _crandn(B, 1, h, w, seed=3)
        A = CartesianMRI(mask, maps, image_shape=(1, h, w))
        y = A(x).numpy()
        ref = _np_forward(x.numpy(), mask.numpy(), None if maps is None else maps.numpy())
        assert y.shape == ref.shape == (B, coils or 1, h, w)
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5


def test_fft2c_is_unitary_and_centred():
    x = _crandn(1, 1, 8, 6)
    torch.testing.assert_close(ifft2c(fft2c(x)), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fft2c(x).norm(), x.norm(), rtol=1e-5, atol=0)
    ones = torch.ones(1, 1, 8, 6, dtype=torch.complex64)
    k = fft2c(ones)
    assert abs(k[0, 0, 4, 3] - np.sqrt(48)) < 1e-4  # DC at (H // 2, W // 2)


@pytest.mark.parametrize("coils", [None, 4])
def test_adjoint_and_normal_single_and_multi_coil(coils):
    mask = (torch.rand(3, 16, generator=_g()) > 0.6).float()
    maps = None if coils is None else _crandn(3, coils, 12, 16)
    A = CartesianMRI(mask, maps, image_shape=(1, 12, 16))
    assert check_adjoint(A, torch.complex64) < 1e-6
    assert check_normal(A, torch.complex64) < 1e-6
    assert A.oshape == (3, coils or 1, 12, 16)


@pytest.mark.parametrize("shared", [False, True])
def test_adjoint_and_normal_with_pruned_column_ffts(monkeypatch, shared):
    """A sparse column mask takes the pruned FFTs (along H on the sampled columns only); a shared mask one column
    set for the batch, different masks one per sample."""
    B, H, W = 4, 12, 16
    g = _g(2)
    mask = torch.zeros(B, W)
    for b in range(B):
        mask[b, torch.randperm(W, generator=g)[: 3 + b]] = 1.0
    if shared:
        mask = mask[:1].expand(B, W).clone()
    monkeypatch.setattr(mri, "PRUNE_ADJOINT", 0.5)
    monkeypatch.setattr(mri, "PRUNE_FORWARD", 0.5)
    monkeypatch.setattr(mri, "PRUNE_NARROW_WIDTH", 0)  # these limits at any width
    A = CartesianMRI(mask, _crandn(B, 3, H, W, seed=4))
    assert A.sampled_columns().ndim == (1 if shared else 2)
    assert check_adjoint(A, torch.complex64) < 1e-6
    assert check_normal(A, torch.complex64) < 1e-6
    x = _crandn(B, 1, H, W, seed=5)
    ref = _np_forward(x.numpy(), mask.numpy(), A.coil_maps.numpy())
    np.testing.assert_allclose(A(x).numpy(), ref, atol=2e-5)


def test_shapes_params_restrict_and_errors():
    mask = torch.tensor([[1.0, 0, 1, 1], [0, 1, 1, 0]])
    A = CartesianMRI(mask, image_shape=(1, 6, 4))
    assert A.observed.shape == (2, 1, 1, 4) and A.ishape == (2, 1, 6, 4)
    assert set(A.params()) == {"mask"}
    B = A.restrict(torch.tensor([0.0, 1, 1, 1]).reshape(1, 1, 1, 4).expand(2, 1, 1, 4))
    assert torch.equal(B.mask, mask * torch.tensor([0.0, 1, 1, 1]))
    maps = _crandn(2, 3, 6, 4)
    C = CartesianMRI(mask, maps)
    assert set(C.params()) == {"mask", "coil_maps"} and C.ishape == (2, 1, 6, 4)
    assert C.restrict(torch.ones(2, 1, 1, 4)).coil_maps is C.coil_maps
    torch.testing.assert_close(C.acceleration(), torch.tensor([4 / 3, 2.0]))
    with pytest.raises(ValueError, match="expected \\(2, C, 6, 4\\)"):
        CartesianMRI(mask, _crandn(2, 3, 6, 5))
    with pytest.raises(ValueError, match="mask must be"):
        CartesianMRI(torch.ones(4))
    with pytest.raises(ValueError, match="input has shape"):
        A(torch.zeros(2, 1, 4, 4, dtype=torch.complex64))


def test_family_further_corruption_keeps_acs_and_drops_exact_fraction():
    family = CartesianMRIFamily((1, 8, 64), acceleration=4, center_fraction=0.08, drop_fraction=0.5)
    A = family.sample(32, generator=_g())
    At = family.further_corrupt(A, generator=_g(1))
    check_subset(A, At)
    acs = acs_columns(64, 0.08)
    assert bool((At.mask[:, acs] == 1).all())
    n_obs = (A.mask[:, ~acs]).sum(dim=1)
    n_drop = n_obs - At.mask[:, ~acs].sum(dim=1)
    torch.testing.assert_close(n_drop, torch.round(n_obs * 0.5))
    c = family.conditioning(At)
    assert c.shape == (32, 1, 8, 64) and torch.equal(c[:, 0, 3], At.mask)


def test_family_multicoil_sample_and_make_from_params():
    family = CartesianMRIFamily((1, 12, 12), acceleration=2, center_fraction=0.25, num_coils=3)
    A = family.sample(2, generator=_g())
    assert A.oshape == (2, 3, 12, 12)
    rss = A.coil_maps.abs().pow(2).sum(dim=1).sqrt()
    torch.testing.assert_close(rss, torch.ones_like(rss))
    params = {k: v.clone() for k, v in A.params().items()}
    params["scale"] = torch.ones(2)  # record-level entries written by prepare are ignored
    B = family.make(params)
    x = _crandn(2, 1, 12, 12)
    torch.testing.assert_close(B(x), A(x))
    with pytest.raises(KeyError, match="coil_maps"):
        family.make({"mask": params["mask"]})
    with pytest.raises(ValueError, match="single-coil family"):
        CartesianMRIFamily((1, 12, 12)).make(params)


def test_family_validates_config():
    with pytest.raises(ValueError, match="mask_kind"):
        CartesianMRIFamily((1, 8, 8), mask_kind="spiral")
    with pytest.raises(ValueError, match="center_fraction"):
        CartesianMRIFamily((1, 8, 64), acceleration=8, center_fraction=0.5)
    with pytest.raises(ValueError, match="image_shape"):
        CartesianMRIFamily((2, 8, 8))


def test_two_dimensional_family_keeps_acs_box():
    family = CartesianMRIFamily((1, 24, 24), acceleration=4, center_fraction=0.2, mask_kind="variable_density")
    A = family.sample(4, generator=_g())
    At = family.further_corrupt(A, generator=_g(2))
    assert A.observed.shape == (4, 1, 24, 24)
    box = A.mask[:, 10:15, 10:15]  # acs_width(24, 0.2) = 5, starting at 10
    assert bool((box == 1).all()) and bool((At.mask[:, 10:15, 10:15] == 1).all())
    assert bool((At.mask <= A.mask).all()) and bool(At.mask.sum() < A.mask.sum())


def test_operator_moves_with_to_and_keeps_no_device():
    A = CartesianMRIFamily((1, 8, 8), acceleration=2, center_fraction=0.25).sample(2, generator=_g())
    A64 = A.to(torch.float64)  # buffers follow module conversions; nothing stored as a device
    assert A64.mask.dtype == torch.float64
    assert "device" not in vars(A)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_family_operator_and_espirit_on_cuda():
    from ambient_science.operators.coils import espirit_maps

    g = torch.Generator(device="cuda").manual_seed(0)
    for kind in ("random", "equispaced", "variable_density"):
        family = CartesianMRIFamily((1, 32, 32), acceleration=4, center_fraction=0.125, mask_kind=kind, num_coils=4)
        A = family.sample(2, generator=g)
        assert A.mask.is_cuda and A.coil_maps.is_cuda
        At = family.further_corrupt(A, generator=g)
        check_subset(A, At)
        assert family.conditioning(At).is_cuda
        assert check_adjoint(A, torch.complex64) < 1e-5
    y = A(torch.randn(2, 1, 32, 32, dtype=torch.complex64, device="cuda"))
    maps = espirit_maps(y[0], (32, 4))
    assert maps.is_cuda and maps.shape == (4, 32, 32)
