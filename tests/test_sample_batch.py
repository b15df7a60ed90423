"""reconstruct(sample_batch=...): posterior samples drawn in one batched sampler run (issue #21)."""

import pytest
import torch
from analytic_gaussian import Shrink

from ambient_science.linop import Identity
from ambient_science.operators import CleanFamily, PixelMaskFamily
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.reconstruction import _tiler, reconstruct


def _case(family):
    g = torch.Generator().manual_seed(0)
    A = PixelMaskFamily((1, 6, 6), p=0.5).sample(3, generator=g)
    lik = GaussianLikelihood(A, A(torch.randn(3, 1, 6, 6, generator=g)), sigma=0.1)
    return Prior(Shrink(), family), lik, A


def test_tiled_likelihood_repeats_the_batch():
    prior, lik, A = _case(PixelMaskFamily((1, 6, 6), p=0.5))
    tile = _tiler(prior, lik, A)
    assert tile is not None
    A2, lik2 = tile(2)
    x = torch.randn(6, 1, 6, 6)
    torch.testing.assert_close(lik2.loss(x), torch.cat([lik.loss(x[:3]), lik.loss(x[3:])]))
    torch.testing.assert_close(lik2.grad(x), torch.cat([lik.grad(x[:3]), lik.grad(x[3:])]))
    torch.testing.assert_close(A2(x), torch.cat([A(x[:3]), A(x[3:])]))


def test_batched_samples_match_per_sample_runs_in_distribution():
    prior, lik, _ = _case(PixelMaskFamily((1, 6, 6), p=0.5))
    posts = {}
    for sb in (1, None, 3):
        posts[sb] = reconstruct(prior, lik, method="daps", num_samples=8, steps=10, progress=False, safe_mode="off",
                                generator=torch.Generator().manual_seed(1), sample_batch=sb)  # fmt: skip
        assert posts[sb].samples.shape == (8, 3, 1, 6, 6)
        assert torch.isfinite(posts[sb].std).all()
    # the Gaussian posterior: observed pixels near the data, hidden ones spread like the prior
    for sb in (None, 3):
        assert (posts[sb].mean - posts[1].mean).abs().mean() < 0.15
        assert abs(float(posts[sb].std.mean()) - float(posts[1].std.mean())) < 0.1
    assert not torch.equal(posts[None].samples, posts[1].samples)  # another random stream


def test_untileable_likelihood_draws_one_sample_per_run():
    prior = Prior(Shrink(), CleanFamily((1, 6, 6)))
    A = Identity((3, 1, 6, 6))  # no SubsampledOperator: the family cannot rebuild it
    lik = GaussianLikelihood(A, torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0)), sigma=0.1)
    assert _tiler(prior, lik, A) is None
    a = reconstruct(prior, lik, method="dps", num_samples=2, steps=4, progress=False,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    b = reconstruct(prior, lik, method="dps", num_samples=2, steps=4, progress=False, sample_batch=1,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(a.samples, b.samples)


def test_adps_without_jacobian_equals_adps_for_an_identity_jacobian():
    from ambient_science.sampling.dps import sample_adps
    from ambient_science.schedules import edm_sigmas

    A = PixelMaskFamily((1, 6, 6), p=0.5).sample(2, generator=torch.Generator().manual_seed(0))
    lik = GaussianLikelihood(A, A(torch.ones(2, 1, 6, 6)), sigma=0.1)

    def D(x, sigma):  # ∂D/∂x = I / 2: a constant Jacobian, so the guidance differs only by that factor
        return x / 2

    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    for guidance, zeta in (("score", 1.0), ("normalized", 0.05)):
        full = sample_adps(D, x, edm_sigmas(5), lik, zeta=2 * zeta, guidance=guidance)
        fast = sample_adps(D, x, edm_sigmas(5), lik, zeta=zeta, guidance=guidance, jacobian=False)
        torch.testing.assert_close(full, fast)


def test_precision_reaches_the_samplers_network_and_is_checked():
    seen = []

    class Probe(Shrink):  # records whether its call runs under autocast
        def forward(self, x, sigma, cond, project=None):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().forward(x, sigma, cond, project)

    _, lik, _ = _case(PixelMaskFamily((1, 6, 6), p=0.5))
    prior = Prior(Probe(), CleanFamily((1, 6, 6)))
    for precision, expected in (("float32", False), ("bfloat16", True)):
        seen.clear()
        post = reconstruct(prior, lik, method="dps", num_samples=1, steps=3, progress=False, precision=precision,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert seen and set(seen) == {expected} and post.mean.dtype == torch.float32
    prior.config = {"sampler": {"dps": {"precision": "bfloat16"}}}  # a card may record it
    seen.clear()
    reconstruct(prior, lik, method="dps", num_samples=1, steps=3, progress=False, generator=torch.Generator())
    assert set(seen) == {True}
    with pytest.raises(ValueError, match="precision"):
        reconstruct(prior, lik, method="dps", steps=3, progress=False, precision="half", generator=torch.Generator())


def test_operators_tile_copy_major():
    from ambient_science.operators import CartesianMRIFamily

    g = torch.Generator().manual_seed(0)
    for A, dtype in ((PixelMaskFamily((1, 6, 6), p=0.5).sample(3, generator=g), torch.float32),
                     (CartesianMRIFamily((1, 8, 8), acceleration=4, center_fraction=0.1).sample(3, generator=g),
                      torch.complex64),
                     (CartesianMRIFamily((1, 8, 8), acceleration=4, center_fraction=0.1, num_coils=2).sample(
                         3, generator=g), torch.complex64)):  # fmt: skip
        T = A.tile(2)
        assert type(T) is type(A) and T.batch_size == 6
        x = torch.randn(6, 1, *A.ishape[2:], generator=g).to(dtype)
        torch.testing.assert_close(T(x), torch.cat([A(x[:3]), A(x[3:])]))
        y = T(x)
        torch.testing.assert_close(T.H(y), torch.cat([A.H(y[:3]), A.H(y[3:])]))
        with pytest.raises(ValueError, match="copies must be >= 1"):
            A.tile(0)


def test_clean_prior_batches_the_samples_of_an_operator_that_tiles_itself():
    # an EM (clean-family) prior cannot rebuild a Cartesian operator from params; the operator tiles itself
    from ambient_science.operators import CartesianMRIFamily

    g = torch.Generator().manual_seed(0)
    A = CartesianMRIFamily((1, 8, 8), acceleration=4, center_fraction=0.1).sample(2, generator=g)
    lik = GaussianLikelihood(A, A(torch.randn(2, 1, 8, 8, dtype=torch.complex64, generator=g)), sigma=0.1)
    prior = Prior(Shrink(), CleanFamily((1, 8, 8), is_complex=True))
    tile = _tiler(prior, lik, A)
    assert tile is not None
    A3, lik3 = tile(3)
    assert A3.batch_size == 6
    x = torch.randn(6, 1, 8, 8, dtype=torch.complex64, generator=g)
    torch.testing.assert_close(lik3.loss(x), torch.cat([lik.loss(x[:2]), lik.loss(x[2:4]), lik.loss(x[4:])]))
    post = reconstruct(prior, lik, method="dps", num_samples=3, steps=4, progress=False, safe_mode="off",
                       sample_batch=None, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert post.samples.shape == (3, 2, 1, 8, 8) and torch.isfinite(post.std).all()
