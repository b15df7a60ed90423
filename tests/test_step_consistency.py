"""Data consistency during A-DPS sampling (issue #18) and the forward-only Gaussian Jacobian (issue #21)."""

from __future__ import annotations

import pytest
import torch
from analytic_gaussian import GaussianDenoiserNet, Shrink, gaussian_posterior, smooth_covariance

from ambient_science.operators import CleanFamily, PixelMask, PixelMaskFamily
from ambient_science.sampling.dps import sample_adps
from ambient_science.sampling.likelihoods import FunctionLikelihood, GaussianLikelihood
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.reconstruction import recommended_settings, reconstruct
from ambient_science.sampling.samplers import initial_noise, step_consistency
from ambient_science.schedules import edm_sigmas

H = W = 4
SIGMA_N = 0.1


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gaussian():
    cov = smooth_covariance(H, W, std=0.5, length=1.0, nugget=0.01)
    mean = 0.3 * torch.randn(1, H, W, generator=_g(0), dtype=torch.float64)
    return mean, cov


def _problem(gaussian, S: int, seed: int = 1):
    mean, cov = gaussian
    g = _g(seed)
    mask = (torch.rand(1, 1, H, W, generator=g) > 0.5).float()
    x_true = mean.reshape(-1) + torch.linalg.cholesky(cov) @ torch.randn(H * W, generator=g, dtype=torch.float64)
    y1 = mask.reshape(-1).double() * (x_true + SIGMA_N * torch.randn(H * W, generator=g, dtype=torch.float64))
    mean_post, cov_post = gaussian_posterior(mean.reshape(-1), cov, mask.reshape(-1), y1, SIGMA_N)
    A = PixelMask(mask.expand(S, 1, H, W).contiguous())
    y = y1.float().reshape(1, 1, H, W).expand(S, 1, H, W).contiguous()
    return GaussianLikelihood(A, y, SIGMA_N), mean_post, cov_post


def test_prox_is_the_noise_weighted_mean_on_measured_entries_and_keeps_the_rest():
    A = PixelMaskFamily((1, H, W), p=0.5).sample(2, generator=_g(1))
    y = A(torch.randn(A.ishape, generator=_g(2)))
    lik = GaussianLikelihood(A, y, SIGMA_N)
    x_hat = torch.randn(A.ishape, generator=_g(3))
    sigma = 0.3
    r2 = sigma**2 * 0.25 / (sigma**2 + 0.25)
    expected = torch.where(A.observed > 0, (y / SIGMA_N**2 + x_hat / r2) / (1 / SIGMA_N**2 + 1 / r2), x_hat)
    torch.testing.assert_close(step_consistency(x_hat, lik, "prox", sigma), expected, rtol=1e-4, atol=1e-5)
    replaced = step_consistency(x_hat, lik, "replace", sigma)
    torch.testing.assert_close(replaced, torch.where(A.observed > 0, y, x_hat))
    assert step_consistency(x_hat, lik, None, sigma) is x_hat
    with pytest.raises(ValueError, match="step_consistency"):
        step_consistency(x_hat, lik, "hard", sigma)


def test_step_and_final_consistency_share_their_checks_and_replace_branch():
    from ambient_science.sampling.samplers import apply_data_consistency

    A = PixelMaskFamily((1, H, W), p=0.5).sample(2, generator=_g(1))
    y = A(torch.randn(A.ishape, generator=_g(2)))
    lik = GaussianLikelihood(A, y, SIGMA_N)
    x_hat = torch.randn(A.ishape, generator=_g(3))
    replaced = apply_data_consistency(x_hat, lik, "replace")
    torch.testing.assert_close(step_consistency(x_hat, lik, "replace", 0.3), replaced)
    with pytest.raises(ValueError, match='step_consistency must be None, "prox" or "replace"'):
        step_consistency(x_hat, lik, "cg", 0.3)  # the final step's mode is not a per-step one
    with pytest.raises(ValueError, match='data_consistency must be None, "cg" or "replace"'):
        apply_data_consistency(x_hat, lik, "prox")
    nonlinear = FunctionLikelihood(lambda x: x.pow(2).sum(dim=(1, 2, 3)))
    with pytest.raises(TypeError, match="step consistency needs a linear Gaussian likelihood"):
        step_consistency(x_hat, nonlinear, "prox", 0.3)
    with pytest.raises(TypeError, match="data consistency needs a linear Gaussian likelihood"):
        apply_data_consistency(x_hat, nonlinear, "cg")
    assert step_consistency(x_hat, nonlinear, None, 0.3) is x_hat  # None needs no linear likelihood
    assert apply_data_consistency(x_hat, nonlinear, None) is x_hat


def test_prox_without_guidance_is_guidance_through_the_gaussian_jacobian(gaussian):
    """For a partial isometry with one σ_n, the proximal step on D with ζ = 0 and the score guidance with the
    inflated ζ and the Gaussian Jacobian σ_data²/(σ² + σ_data²) move x identically (Euler, no churn)."""
    lik, _, _ = _problem(gaussian, 8)
    D = Prior(GaussianDenoiserNet(*gaussian), CleanFamily((1, H, W))).denoiser(8, generator=_g())
    x = initial_noise(D.shape, 80.0, generator=_g(4))
    sig = edm_sigmas(12)
    via_prox = sample_adps(D, x, sig, lik, zeta=0.0, jacobian=False, step_dc="prox")
    via_jacobian = sample_adps(D, x, sig, lik, jacobian="gaussian")
    torch.testing.assert_close(via_prox, via_jacobian, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="jacobian"):
        sample_adps(D, x, sig, lik, jacobian="identity")
    with pytest.raises(ValueError, match="step_dc_every"):
        sample_adps(D, x, sig, lik, step_dc="prox", step_dc_every=0)


def test_gaussian_jacobian_stays_near_the_analytic_posterior_where_the_identity_diverges(gaussian):
    # measured (1000 samples, churn 10): network Jacobian 64 steps mean error 0.09 posterior std, variance ratio 0.89;
    # "gaussian" 64 steps 0.20 / 1.15, 16 steps 0.28 / 0.89; the identity (jacobian=False) at 16 steps 25.8 / 2.5
    S = 1000
    lik, mean_post, cov_post = _problem(gaussian, S)
    D = Prior(GaussianDenoiserNet(*gaussian), CleanFamily((1, H, W))).denoiser(S, generator=_g())
    errors = {}
    for jacobian in ("gaussian", False):
        g = _g(6)
        x = initial_noise(D.shape, 80.0, generator=g)
        out = sample_adps(D, x, edm_sigmas(16), lik, generator=g, churn=10.0, jacobian=jacobian)
        flat = out.reshape(S, -1).double()
        errors[jacobian] = float((flat.mean(0) - mean_post).norm() / cov_post.diag().sum().sqrt())
        ratio = float(flat.var(0).sum() / cov_post.diag().sum())
        if jacobian == "gaussian":
            assert errors[jacobian] < 0.4 and 0.7 < ratio < 1.3, (errors[jacobian], ratio)
    assert errors[False] > 3 * errors["gaussian"]


def test_heun_and_every_kth_step_run_and_fit_the_data(gaussian):
    lik, _, _ = _problem(gaussian, 4)
    D = Prior(GaussianDenoiserNet(*gaussian), CleanFamily((1, H, W))).denoiser(4, generator=_g())
    x = initial_noise(D.shape, 80.0, generator=_g(7))
    for kw in ({"heun": True}, {"step_dc_every": 2}, {"step_dc_sigma_max": 1.0}):
        out = sample_adps(D, x, edm_sigmas(10), lik, step_dc="prox", **kw)
        assert torch.isfinite(out).all()
        observed = lik.A.observed.expand_as(out) > 0
        assert float((out - lik.y)[observed].abs().max()) < 4 * SIGMA_N


def test_the_card_records_sampler_options_and_sigma_max_and_arguments_win(monkeypatch):
    import ambient_science.sampling.reconstruction as rec

    family = PixelMaskFamily((1, H, W), p=0.5)
    A = family.sample(2, generator=_g(1))
    lik = GaussianLikelihood(A, A(torch.randn(A.ishape, generator=_g(2))), SIGMA_N)
    prior = Prior(Shrink(), family)
    prior.config = {"sampler": {"dps": {"steps": 5, "sigma_max": 7.0, "sigma_min": 0.05,
                                        "options": {"jacobian": "gaussian"}}}}  # fmt: skip
    assert recommended_settings(prior, "dps")["options"] == {"jacobian": "gaussian"}
    seen = []

    def spy(D, x, sigmas, likelihood, **kw):
        seen.append((float(sigmas[0]), round(float(sigmas[-2]), 6), len(sigmas) - 1, kw.get("jacobian"),
                     kw.get("churn")))  # fmt: skip
        return x

    monkeypatch.setattr(rec, "sample_adps", spy)
    reconstruct(prior, lik, method="dps", num_samples=1, generator=_g(), progress=False, safe_mode="off")
    reconstruct(prior, lik, method="dps", num_samples=1, generator=_g(), progress=False, safe_mode="off",
                sigma_max=80.0, sigma_min=0.002, steps=3, sampler_options={"jacobian": True})  # fmt: skip
    assert seen == [(7.0, 0.05, 5, "gaussian", 10.0), (80.0, 0.002, 3, True, 10.0)]


def test_the_shipped_ambient_card_records_the_faster_sampler():
    from ambient_science import pretrained

    prior = pretrained.load("mri-knee-synthetic-r4-ambient")
    dps = recommended_settings(prior, "dps")
    # benchmarks/bench_sampling.py --mri: one antithetic pair, +0.78 / +0.25 dB over 4 x 48 steps from 80 without
    # them at R = 4 / 8, 4.8-4.9x faster
    options = {"step_dc": "prox", "jacobian_sigma_min": 0.1}
    assert (dps["steps"], dps["sigma_max"], dps["options"], dps["num_samples"]) == (20, 10.0, options, 2)
    assert dps["antithetic"] is True
    nonlinear = FunctionLikelihood(lambda v: v.sum((1, 2, 3)))
    # no data-consistency step for a likelihood without a linear Gaussian data term; the Jacobian switch stays
    assert recommended_settings(prior, "dps", likelihood=nonlinear)["options"] == {"jacobian_sigma_min": 0.1}


def test_the_shipped_em_card_records_its_measured_sampler():
    from ambient_science import pretrained

    prior = pretrained.load("mri-knee-synthetic-r4")
    dps = recommended_settings(prior, "dps")
    # benchmarks/bench_sampling.py --mri --mri-prior: one antithetic pair of 32 steps from 80 with them, +0.39 / +0.24
    # dB over 4 x 48 without, 3.1-3.2x faster
    options = {"step_dc": "prox", "jacobian_sigma_min": 0.1}
    assert (dps["steps"], dps["sigma_max"], dps["options"], dps["num_samples"]) == (32, 80.0, options, 2)
    assert dps["antithetic"] is True


def test_forward_only_guidance_below_and_above_a_sigma(gaussian):
    """``jacobian_sigma_min`` / ``_max`` switch the network's Jacobian for the Gaussian one below / above a σ: at
    the extremes it is the Gaussian Jacobian everywhere or the network's everywhere, and a split differs from
    both (the Gaussian denoiser of a correlated prior has a Jacobian unlike σ_data²/(σ² + σ_data²) I)."""
    lik, _, _ = _problem(gaussian, 4)
    D = Prior(GaussianDenoiserNet(*gaussian), CleanFamily((1, H, W))).denoiser(4, generator=_g())
    x = initial_noise(D.shape, 80.0, generator=_g(5))
    sig = edm_sigmas(12)
    full = sample_adps(D, x, sig, lik)
    forward_only = sample_adps(D, x, sig, lik, jacobian="gaussian")
    torch.testing.assert_close(sample_adps(D, x, sig, lik, jacobian_sigma_min=0.0), full)
    torch.testing.assert_close(sample_adps(D, x, sig, lik, jacobian_sigma_min=1e9), forward_only)
    split = sample_adps(D, x, sig, lik, jacobian_sigma_min=0.3)
    assert not torch.allclose(split, full) and not torch.allclose(split, forward_only)
