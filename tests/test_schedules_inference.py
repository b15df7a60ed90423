"""sampling.schedules_inference: an ambient prior called another way at inference (issue #19)."""

import pytest
import torch

from ambient_science.operators import PixelMaskFamily
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.reconstruction import reconstruct
from ambient_science.sampling.schedules_inference import InferencePrior, SwitchedDenoiser


class Seen(torch.nn.Module):  # returns what it was shown, Ãᴴ Ã x: zero where Ã hides a pixel
    def forward(self, x, sigma, cond, project=None):
        return x


def _prior(sigma_n=0.0):
    return Prior(Seen(), PixelMaskFamily((1, 6, 6), p=0.5), sigma_n=sigma_n)


def test_switch_uses_the_low_operator_below_the_switch_sigma_per_sample():
    wrapped = InferencePrior(_prior(), switch_sigma=0.2, low_operator="law")
    A = PixelMaskFamily((1, 6, 6), p=0.5).sample(3, generator=torch.Generator().manual_seed(0))
    D = wrapped.denoiser(3, generator=torch.Generator().manual_seed(1), inference_operator="full", test_operator=A)
    assert isinstance(D, SwitchedDenoiser)
    x = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(D(x, torch.full((3,), 1.0)), x)  # 'full' at high σ: everything seen
    low = D(x, torch.full((3,), 0.05))
    assert bool((low == 0).any()) and bool(((low == x) | (low == 0)).all())  # the law hides pixels
    mixed = D(x, torch.tensor([1.0, 0.05, 1.0]))
    torch.testing.assert_close(mixed[[0, 2]], x[[0, 2]])
    torch.testing.assert_close(mixed[1], low[1])


def test_min_draws_floor_and_no_switch():
    base = _prior(sigma_n=0.01)
    wrapped = InferencePrior(base, min_draws=4, sigma_floor=0.05)
    assert wrapped.sigma_n == 0.05 and wrapped.network is base.network and wrapped.family is base.family
    D = wrapped.denoiser(2, generator=torch.Generator().manual_seed(0), inference_operator="law")
    assert D.num_draws == 4 and D.batch_size == 2
    assert wrapped.denoiser(2, generator=torch.Generator().manual_seed(0), num_draws=8).num_draws == 8
    assert InferencePrior(base, sigma_floor=0.001).sigma_n == 0.01  # never below the trained floor


def test_reconstruct_takes_the_wrapped_prior():
    g = torch.Generator().manual_seed(0)
    A = PixelMaskFamily((1, 6, 6), p=0.5).sample(2, generator=g)
    lik = GaussianLikelihood(A, A(torch.randn(2, 1, 6, 6, generator=g)), sigma=0.1)
    wrapped = InferencePrior(_prior(), switch_sigma=0.5, low_operator="test", min_draws=2, sigma_floor=0.05)
    post = reconstruct(wrapped, lik, method="dps", generator=torch.Generator().manual_seed(1), num_samples=2,
                       steps=6, inference_operator="full", progress=False, safe_mode="off")  # fmt: skip
    assert post.mean.shape == (2, 1, 6, 6) and torch.isfinite(post.mean).all()


@pytest.mark.parametrize(
    "kwargs", [{"low_operator": "all"}, {"switch_sigma": 0.0}, {"min_draws": 0}, {"sigma_floor": -1.0}]
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        InferencePrior(_prior(), **kwargs)
