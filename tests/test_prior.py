"""The prior: a network called through fixed inference operators ``Ã_inf`` (docs/design.md §6), end to end.

The network is the exact ambient denoiser of Gaussian data (tests/analytic_gaussian.py), so every
output of the prior path can be checked against an independent closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from analytic_gaussian import GaussianDenoiserNet, smooth_covariance
from torch import nn

from ambient_science.family import check_subset
from ambient_science.operators import CleanFamily, PixelMask, PixelMaskFamily
from ambient_science.sampling.prior import AmbientDenoiser, Prior

H = W = 4
N = H * W


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gaussian():
    cov = smooth_covariance(H, W)
    mean = 0.3 * torch.randn(1, H, W, generator=_g(10), dtype=torch.float64)
    return mean, cov


def _selected_posterior_mean(mean, cov, mask, x_sigma, sigma):
    """``E[x | x_σ on the kept pixels]`` by explicit index selection (independent of the masked-matrix trick)."""
    mu, keep = mean.reshape(-1), mask.reshape(-1).bool()
    x = x_sigma.reshape(-1).to(torch.float64)
    if not keep.any():
        return mu
    S_ko = cov[:, keep]
    K = cov[keep][:, keep] + sigma**2 * torch.eye(int(keep.sum()), dtype=torch.float64)
    return mu + S_ko @ torch.linalg.solve(K, x[keep] - mu[keep])


def test_ambient_denoiser_is_the_exact_conditional_mean_through_a_inf(gaussian):
    mean, cov = gaussian
    prior = Prior(GaussianDenoiserNet(mean, cov), PixelMaskFamily((1, H, W), p=0.4, delta=0.2))
    D = prior.denoiser(3, generator=_g(1))
    assert isinstance(D, AmbientDenoiser) and D.shape == (3, 1, H, W) and D.num_draws == 1
    x = torch.randn(3, 1, H, W, generator=_g(2))
    sigma = torch.tensor([0.05, 0.5, 3.0])
    out = D(x, sigma)
    for b in range(3):
        expected = _selected_posterior_mean(mean, cov, D.A_inf.mask[b], x[b], float(sigma[b]))
        assert torch.allclose(out[b].reshape(-1).double(), expected, atol=1e-5)
    # scalar sigma broadcasts; a wrong shape is refused
    assert torch.allclose(D(x, 0.5), D(x, torch.full((3,), 0.5)))
    with pytest.raises(ValueError):
        D(x, torch.ones(2))
    with pytest.raises(ValueError):
        D(torch.zeros(2, 1, H, W), 0.5)


def test_clean_prior_is_the_plain_gaussian_denoiser(gaussian):
    mean, cov = gaussian
    D = Prior(GaussianDenoiserNet(mean, cov), CleanFamily((1, H, W))).denoiser(2, generator=_g())
    x = torch.randn(2, 1, H, W, generator=_g(3))
    out = D(x, 0.7).reshape(2, -1).double()
    mu = mean.reshape(-1)
    expected = (
        mu + (cov @ torch.linalg.solve(cov + 0.49 * torch.eye(N, dtype=torch.float64), (x.reshape(2, -1) - mu).T)).T
    )
    assert torch.allclose(out, expected, atol=1e-5)


def test_mean_over_k_draws(gaussian):
    mean, cov = gaussian
    net = GaussianDenoiserNet(mean, cov)
    family = PixelMaskFamily((1, H, W), p=0.3, delta=0.3)
    prior = Prior(net, family)
    D = prior.denoiser(2, generator=_g(4), num_draws=3)
    assert D.A_inf.batch_size == 6 and D.batch_size == 2
    x = torch.randn(2, 1, H, W, generator=_g(5))
    singles = [AmbientDenoiser(net, family, PixelMask(D.A_inf.mask[2 * k : 2 * k + 2]), 1)(x, 0.3) for k in range(3)]
    assert torch.allclose(D(x, 0.3), torch.stack(singles).mean(0), atol=1e-6)
    assert not torch.allclose(singles[0], singles[1])  # the draws differ


def test_inference_operator_test_is_a_further_corruption_of_the_test_operator(gaussian):
    mean, cov = gaussian
    family = PixelMaskFamily((1, H, W), p=0.5, delta=0.3)
    prior = Prior(GaussianDenoiserNet(mean, cov), family)
    A_test = family.sample(4, generator=_g(6))
    A_inf = prior.draw_inference_operators(
        4, generator=_g(7), num_draws=2, inference_operator="test", test_operator=A_test
    )
    for k in range(2):
        check_subset(A_test, PixelMask(A_inf.mask[4 * k : 4 * k + 4]))
    with pytest.raises(ValueError, match="test_operator"):
        prior.denoiser(4, generator=_g(), inference_operator="test")
    with pytest.raises(ValueError):
        prior.denoiser(3, generator=_g(), inference_operator="test", test_operator=A_test)
    with pytest.raises(ValueError):
        prior.denoiser(4, generator=_g(), inference_operator="nearest")
    with pytest.raises(ValueError):
        prior.denoiser(4, generator=_g(), num_draws=0)


def test_full_inference_operator_observes_everything(gaussian):
    """``"full"``: a mask of ones (the denoiser is then the plain E[x | x_σ]); families without masks refuse."""
    mean, cov = gaussian
    family = PixelMaskFamily((1, H, W), p=0.5, delta=0.3)
    prior = Prior(GaussianDenoiserNet(mean, cov), family)
    A_test = family.sample(3, generator=_g(6))
    for test in (None, A_test):
        A_inf = prior.draw_inference_operators(3, generator=_g(7), inference_operator="full", test_operator=test)
        assert A_inf.mask.shape == A_test.mask.shape and bool((A_inf.mask == 1).all())
    x, sigma = torch.randn(3, 1, H, W, generator=_g(8)), torch.tensor(0.7)
    D = prior.denoiser(3, generator=_g(9), inference_operator="full")
    expected = torch.stack([_selected_posterior_mean(mean, cov, torch.ones(H, W), x[i], 0.7) for i in range(3)])
    assert torch.allclose(D(x, sigma).reshape(3, -1).double(), expected, atol=1e-4)

    from ambient_science.operators.interferometry import InterferometerFamily

    eht = InterferometerFamily(npix=16, fov_uas=128.0, bank_size=1)
    with pytest.raises(NotImplementedError, match="fully observed"):
        eht.fully_observed(eht.sample(1, generator=_g()))


def test_law_draws_follow_the_training_corruption_law():
    family = PixelMaskFamily((1, 16, 16), p=0.4, delta=0.25)
    net = GaussianDenoiserNet(torch.zeros(1, 16, 16), torch.eye(256))
    A_inf = Prior(net, family).draw_inference_operators(64, generator=_g(8))
    kept = float(A_inf.mask.mean())
    assert abs(kept - 0.6 * 0.75) < 0.02  # P(kept) = (1 − p)(1 − δ)


def test_same_seed_same_draws_and_global_rng_untouched(gaussian):
    mean, cov = gaussian
    prior = Prior(GaussianDenoiserNet(mean, cov), PixelMaskFamily((1, H, W), p=0.5))
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = prior.denoiser(5, generator=_g(9), num_draws=2).A_inf.mask
    b = prior.denoiser(5, generator=_g(9), num_draws=2).A_inf.mask
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()


def test_complex_images_go_through_real_channels(gaussian):
    mean, cov = gaussian
    mean2 = torch.cat([mean, -mean])  # network channels [real, imag]
    family = PixelMaskFamily((1, H, W), p=0.3, delta=0.2, is_complex=True)
    D = Prior(GaussianDenoiserNet(mean2, cov), family).denoiser(2, generator=_g(11))
    assert D.dtype == torch.complex64
    z = torch.complex(torch.randn(2, 1, H, W, generator=_g(12)), torch.randn(2, 1, H, W, generator=_g(13)))
    out = D(z, 0.4)
    assert out.dtype == torch.complex64
    for b in range(2):
        re = _selected_posterior_mean(mean, cov, D.A_inf.mask[b], z[b].real, 0.4)
        im = _selected_posterior_mean(-mean, cov, D.A_inf.mask[b], z[b].imag, 0.4)
        assert torch.allclose(out[b].real.reshape(-1).double(), re, atol=1e-5)
        assert torch.allclose(out[b].imag.reshape(-1).double(), im, atol=1e-5)


def test_network_is_frozen_but_input_gradients_flow():
    net = nn.Conv2d(2, 1, 3, padding=1)  # x and the mask channel -> D

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = net

        def forward(self, x, sigma, cond, project=None):
            return self.conv(torch.cat([x, cond], 1))

    prior = Prior(Net().train(), PixelMaskFamily((1, H, W), p=0.3))
    assert not prior.network.training
    assert all(not p.requires_grad for p in prior.network.parameters())
    D = prior.denoiser(2, generator=_g())
    x = torch.randn(2, 1, H, W, generator=_g(14), requires_grad=True)
    D(x, 1.0).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert net.weight.grad is None
    assert net.weight.is_contiguous(memory_format=torch.channels_last)  # the faster order on a CPU; same values
    other = nn.Conv2d(2, 1, 3, padding=1)
    Prior(other, PixelMaskFamily((1, H, W), p=0.3), freeze=False)  # a network still training is left as it is
    assert other.weight.is_contiguous() and other.weight.requires_grad
    volumetric = nn.Conv3d(1, 1, 3)  # channels-last is a 4-D order: a 3-D convolution keeps its own
    Prior(volumetric, PixelMaskFamily((1, H, W), p=0.3))
    assert volumetric.weight.is_contiguous() and not volumetric.weight.requires_grad


def test_prior_from_checkpoint(tmp_path):
    ckpt_mod = pytest.importorskip("ambient_science.training.checkpoint")
    network_mod = pytest.importorskip("ambient_science.network")
    from ambient_science.sampling.prior import load_prior

    family = PixelMaskFamily((1, H, W), p=0.3)
    config = network_mod.MLPConfig(img_channels=1, cond_channels=1, height=H, width=W, hidden=16, depth=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = network_mod.build_network(config)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    path = ckpt_mod.save_checkpoint(
        tmp_path, network=net, ema=net, optimizer=opt, step=3, rng_state={},
        config={"network": config.to_dict(), "family": family.config()},
    )  # fmt: skip
    prior = load_prior(path)
    assert isinstance(prior.family, PixelMaskFamily) and prior.family.p == 0.3
    x = torch.randn(2, 1, H, W, generator=_g(15))
    D = prior.denoiser(2, generator=_g())
    mask = D.A_inf.mask
    expected = net.eval()(mask * x, torch.full((2,), 0.5), mask)  # x̃ = Ãᴴ Ã x = Ã ⊙ x for a pixel mask
    assert torch.allclose(D(x, 0.5), expected, atol=1e-6)


def test_precision_runs_the_network_under_bfloat16_autocast_and_returns_float32():
    from ambient_science.network import build_network
    from ambient_science.sampling.prior import PRECISIONS, autocast_dtype
    from ambient_science.training.config import resolve_network_config

    assert autocast_dtype("float32", "cpu") is None and autocast_dtype("bfloat16", "cpu") is torch.bfloat16
    assert autocast_dtype("auto", "cpu") in (None, torch.bfloat16) and autocast_dtype("bfloat16", "meta") is None
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype("half", "cpu")
    assert PRECISIONS == ("float32", "bfloat16", "auto")
    family = PixelMaskFamily((1, 8, 8), p=0.5, delta=0.2, is_complex=True)
    config = resolve_network_config({"model_channels": 8, "channel_mult": [1, 2], "attn_levels": []}, family)
    net = build_network(config)
    with torch.no_grad():
        for p in net.parameters():  # not the zero-initialised output layer: the network's part must show
            p.add_(0.1 * torch.randn(p.shape, generator=_g(1)))
    prior = Prior(net, family)
    x = torch.randn(2, 1, 8, 8, generator=_g(2), dtype=torch.complex64)
    full = prior.denoiser(2, generator=_g(3))(x, 0.5)
    half = prior.denoiser(2, generator=_g(3), precision="bfloat16")(x, 0.5)
    assert half.dtype == torch.complex64 and not torch.equal(half, full)  # the autocast took effect
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05)
    xg = x.clone().requires_grad_(True)  # guidance differentiates through it
    (g,) = torch.autograd.grad(prior.denoiser(2, generator=_g(3), precision="bfloat16")(xg, 0.5).abs().sum(), xg)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_a_float32_denoiser_enters_no_autocast(monkeypatch):
    """torch.autocast refuses some device types even when disabled: float32 must not touch it."""
    family = PixelMaskFamily((1, 4, 4), p=0.5)

    class Identity(nn.Module):
        def forward(self, x, sigma, cond, project=None):
            return x

    def refuse(*args, **kwargs):
        raise RuntimeError("autocast entered")

    D = Prior(Identity(), family).denoiser(1, generator=_g(0))
    monkeypatch.setattr(torch, "autocast", refuse)
    assert D(torch.ones(1, 1, 4, 4), 0.5).shape == (1, 1, 4, 4)
