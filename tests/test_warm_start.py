"""reconstruct(start=...): the samplers started from an estimate plus noise at sigma_max (CCDF's warm start)."""

import pytest
import torch
from analytic_gaussian import V, white_pixel_case

from ambient_science.operators import CartesianMRIFamily
from ambient_science.sampling import reconstruction
from ambient_science.sampling.likelihoods import FunctionLikelihood, GaussianLikelihood
from ambient_science.sampling.reconstruction import _start_point, reconstruct


def test_data_start_is_the_minimum_norm_fit():
    _, lik, A = white_pixel_case()
    real = torch.float32
    torch.testing.assert_close(_start_point("data", lik, (2, 1, 8, 8), real), A.H(lik.y))  # pixel mask: zero-filled
    g = torch.Generator().manual_seed(0)
    family = CartesianMRIFamily((1, 16, 16), acceleration=4, center_fraction=0.1)
    A = family.sample(2, generator=g)
    y = A(torch.randn(2, 1, 16, 16, dtype=torch.complex64, generator=g))
    x0 = _start_point("data", GaussianLikelihood(A, y, sigma=0.01), (2, 1, 16, 16), torch.complex64)
    torch.testing.assert_close(x0, A.H(y), atol=1e-5, rtol=1e-5)  # single-coil Cartesian: zero-filled
    assert _start_point("noise", lik, (2, 1, 8, 8), real) is None


def test_sampler_starts_at_the_estimate_plus_noise(monkeypatch):
    prior, lik, _ = white_pixel_case()
    seen = {}

    def fake_adps(D, x, sigmas, likelihood, **kwargs):
        seen.setdefault("x", []).append(x.clone())
        seen["sigma0"] = float(sigmas[0])
        return x

    monkeypatch.setattr(reconstruction, "sample_adps", fake_adps)
    x0 = torch.full((2, 1, 8, 8), 3.0)
    for start in ("noise", lambda likelihood: x0):
        seen.clear()
        reconstruct(prior, lik, method="dps", steps=4, sigma_max=0.5, num_samples=64, sample_batch=None, start=start,
                    generator=torch.Generator().manual_seed(0), progress=False, safe_mode="off")  # fmt: skip
        x = torch.cat(seen["x"])
        assert seen["sigma0"] == 0.5
        mean = 0.0 if start == "noise" else 3.0
        assert abs(float(x.mean()) - mean) < 0.02
        assert abs(float(x.std()) - 0.5) < 0.02


def test_warm_start_samples_the_gaussian_posterior():
    # N(0, V I) prior, Gaussian likelihood of a pixel mask: observed pixels have posterior mean y V / (V + s²),
    # hidden ones 0; a start from the zero-filled image at sigma_max 2 (four times the prior's std) reaches it
    prior, lik, A = white_pixel_case()
    m = A.mask.reshape(2, 1, 8, 8)
    exact = m * lik.y * V / (V + 0.1**2)
    post = reconstruct(prior, lik, method="dps", steps=24, sigma_max=2.0, num_samples=64, sample_batch=None,
                       start="data", data_consistency="none", generator=torch.Generator().manual_seed(0),
                       progress=False, safe_mode="off")  # fmt: skip
    err = (post.mean - exact).abs()
    assert float(err[m == 1].max()) < 0.05  # posterior std 0.1 there: 64 samples give 0.012 per pixel
    assert float(err[m == 0].mean()) < 0.1  # posterior std 0.5: 0.06 per pixel
    hidden_std = float(post.std[m == 0].mean())
    assert abs(hidden_std - V**0.5) < 0.1  # hidden pixels keep the prior's spread, not the start's zeros


def test_recorded_start_is_used_and_the_argument_wins(monkeypatch):
    prior, lik, _ = white_pixel_case()
    prior.config = {"sampler": {"dps": {"start": "data", "sigma_max": 1.0}}}
    calls = []
    real = reconstruction._start_point
    monkeypatch.setattr(reconstruction, "_start_point", lambda start, *a: calls.append(start) or real(start, *a))
    kw = dict(method="dps", steps=2, num_samples=1, progress=False, safe_mode="off")
    reconstruct(prior, lik, generator=torch.Generator().manual_seed(0), **kw)
    reconstruct(prior, lik, generator=torch.Generator().manual_seed(0), start="noise", **kw)
    assert calls == ["data", "noise"]


def test_bad_starts_are_refused_clearly():
    prior, lik, _ = white_pixel_case()
    kw = dict(method="dps", steps=2, num_samples=1, progress=False, safe_mode="off")
    with pytest.raises(ValueError, match="start must be"):
        reconstruct(prior, lik, generator=torch.Generator(), start="zeros", **kw)
    with pytest.raises(ValueError, match=r"the prior's image shape \(2, 1, 8, 8\), got \(1, 1, 8, 8\)"):
        reconstruct(prior, lik, generator=torch.Generator(), start=lambda likelihood: torch.zeros(1, 1, 8, 8), **kw)
    with pytest.raises(ValueError, match="complex"):
        reconstruct(prior, lik, generator=torch.Generator(), **kw,
                    start=lambda likelihood: torch.zeros(2, 1, 8, 8, dtype=torch.complex64))  # fmt: skip
    with pytest.raises(ValueError, match="NaN"):
        reconstruct(prior, lik, generator=torch.Generator(), **kw,
                    start=lambda likelihood: torch.full((2, 1, 8, 8), torch.nan))  # fmt: skip
    nonlinear = FunctionLikelihood(lambda x: (x**2).sum(dim=(1, 2, 3)))
    with pytest.raises(TypeError, match="linear GaussianLikelihood"):
        _start_point("data", nonlinear, (2, 1, 8, 8), torch.float32)
