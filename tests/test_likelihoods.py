"""Likelihoods: Gaussian (real / complex, per-entry sigma), data consistency, function and chi-squared terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ambient_science.linop import Identity
from ambient_science.operators import PixelMask, PixelMaskFamily
from ambient_science.sampling.likelihoods import (
    ChiSquaredLikelihood,
    ChiSquaredTerm,
    FunctionLikelihood,
    GaussianLikelihood,
    Likelihood,
)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(shape, dtype, g):
    if dtype.is_complex:
        return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    return torch.randn(shape, generator=g)


@pytest.fixture
def masked():
    A = PixelMaskFamily((1, 6, 5), p=0.5).sample(3, generator=_g(1))
    return A


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_gaussian_loss_and_closed_form_gradient(masked, dtype):
    g = _g(2)
    A = masked
    sigma = 0.1 + torch.rand(A.oshape, generator=g)  # per entry
    x_true = _randn(A.ishape, dtype, g)
    y = A(x_true + 0.1 * _randn(A.ishape, dtype, g))
    lik = GaussianLikelihood(A, y, sigma)
    x = _randn(A.ishape, dtype, g)
    r = A.mask * (x - y)
    expected = 0.5 * ((r.abs() ** 2) / sigma**2).reshape(3, -1).sum(1)
    assert torch.allclose(lik.loss(x), expected, rtol=1e-5)
    # closed-form gradient equals the autograd (real) gradient of the base class
    assert torch.allclose(lik.grad(x), Likelihood.grad(lik, x), atol=1e-4)
    assert torch.allclose(lik.residual_norm(x), (2 * expected).sqrt(), rtol=1e-5)


def test_unobserved_entries_do_not_count_even_with_zero_sigma(masked):
    sigma = masked.mask.clone() * 0.5  # 0 where not observed
    lik = GaussianLikelihood(masked, torch.zeros(masked.oshape), sigma)
    x = torch.ones(masked.ishape)
    assert torch.allclose(lik.loss(x), 0.5 * masked.mask.reshape(3, -1).sum(1) / 0.25)
    with pytest.raises(ValueError):
        GaussianLikelihood(masked, torch.zeros(masked.oshape), 0.0)
    with pytest.raises(ValueError):
        GaussianLikelihood(masked, torch.zeros(2, 1, 6, 5), 1.0)


def test_noise_level_curvature_and_backprojection(masked):
    sigma = torch.full(masked.oshape, 0.2)
    sigma[:, :, 0] = 0.1
    y = masked(torch.randn(masked.ishape, generator=_g(3)))
    lik = GaussianLikelihood(masked, y, sigma)
    assert torch.equal(lik.backprojection(), y)
    w = masked.mask / sigma**2
    expected_level = (masked.mask.reshape(3, -1).sum(1) / w.reshape(3, -1).sum(1)).sqrt()
    assert torch.allclose(lik.noise_level(), expected_level)
    kappa = lik.curvature(torch.zeros(masked.ishape), generator=_g(4))
    true_max = w.reshape(3, -1).amax(1)  # A^H W A is diagonal for a pixel mask
    assert bool((kappa >= true_max).all()) and bool((kappa <= 1.06 * true_max).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_data_consistency(masked, dtype):
    g = _g(5)
    y = masked(_randn(masked.ishape, dtype, g))
    lik = GaussianLikelihood(masked, y, 0.1)
    x_hat = _randn(masked.ishape, dtype, g)
    replaced = lik.replace_observed(x_hat)
    expected = masked.mask * y + (1 - masked.mask) * x_hat
    assert torch.allclose(replaced, expected, atol=1e-6)
    assert torch.allclose(lik.data_consistency(x_hat, lam=0.0), expected, atol=1e-5)
    lam = 50.0  # per pixel: (w y + λ x̂) / (w + λ), w = 100 on observed pixels
    soft = lik.data_consistency(x_hat, lam=lam)
    w = masked.mask * 100.0
    assert torch.allclose(soft, (w * y + lam * x_hat) / (w + lam), atol=1e-5)


def test_function_likelihood_uses_autograd_and_checks_shape():
    lik = FunctionLikelihood(lambda x: (x**4).reshape(x.shape[0], -1).sum(1), curvature=3.0)
    x = torch.randn(2, 1, 3, 3, generator=_g(6))
    assert torch.allclose(lik.grad(x), 4 * x**3, rtol=1e-5)
    assert lik.curvature(x, generator=_g()).tolist() == [3.0, 3.0]
    assert FunctionLikelihood(lambda x: x.sum()).curvature(x, generator=_g()) is None
    with pytest.raises(ValueError):
        FunctionLikelihood(lambda x: x.sum()).loss(x)


def test_chi_squared_likelihood_is_count_weighted_half_sum():
    forward = Identity((2, 4))
    data = torch.tensor([1.0, 2.0, 3.0, 4.0])
    chi2 = ChiSquaredTerm(lambda v: ((v - data) ** 2).mean(1), count=4, weight=2.0, name="a")
    lik = ChiSquaredLikelihood([chi2], forward=forward)
    x = torch.zeros(2, 4)
    assert torch.allclose(lik.loss(x), torch.full((2,), 0.5 * 2.0 * 4 * 7.5))
    assert set(lik.chi_squared(x)) == {"a"}
    with pytest.raises(ValueError):
        ChiSquaredLikelihood([])


def test_closure_likelihood_matches_chi2_and_is_gain_invariant():
    closure = pytest.importorskip("ambient_science.operators.closure")
    from ambient_science.sampling.likelihoods import closure_likelihood

    g = _g(7)
    stations = [(a, b) for a in range(4) for b in range(a + 1, 4)]  # 4 stations, one time: 3 cp, 2 lca
    t1 = np.array([a for a, _ in stations])
    t2 = np.array([b for _, b in stations])
    time = np.zeros(len(stations))
    M = torch.complex(torch.randn(len(stations), 9, generator=g), torch.randn(len(stations), 9, generator=g))
    x_true = torch.rand(1, 1, 3, 3, generator=g) + 0.5
    vis = (M @ x_true.reshape(-1).to(M.dtype)).numpy().astype(np.complex128)
    data = closure.closure_data(time, t1, t2, vis, 0.05 * np.abs(vis) + 0.01, debias=False)

    def forward(x):
        return x.reshape(x.shape[0], -1).to(M.dtype) @ M.T

    lik = closure_likelihood(forward, data)
    x = torch.rand(2, 1, 3, 3, generator=g) + 0.5
    v = forward(x)
    expected = 0.5 * data.index.n_cphase * data.chisq_cphase(v) + 0.5 * data.index.n_logcamp * data.chisq_logcamp(v)
    assert torch.allclose(lik.loss(x), expected.to(lik.loss(x).dtype), rtol=1e-4)
    assert float(lik.loss(x_true)) < 1e-3
    gains = torch.complex(torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g))

    def gained(x):
        return forward(x) * gains[t1] * gains[t2].conj()

    assert torch.allclose(closure_likelihood(gained, data).loss(x), lik.loss(x), rtol=1e-3)
    assert lik.grad(x).shape == x.shape


def test_likelihoods_leave_global_rng_alone(masked):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    lik = GaussianLikelihood(masked, torch.zeros(masked.oshape), 0.3)
    lik.curvature(torch.zeros(masked.ishape), generator=_g())
    lik.data_consistency(torch.ones(masked.ishape))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()


def test_pixel_mask_with_complex_images(masked):
    A = PixelMask(masked.mask, (1, 6, 5))
    y = A(torch.ones(A.ishape, dtype=torch.complex64) * (1 + 2j))
    lik = GaussianLikelihood(A, y, 1.0)
    assert torch.allclose(
        lik.loss(torch.zeros(A.ishape, dtype=torch.complex64)), 0.5 * 5 * A.mask.reshape(3, -1).sum(1)
    )
