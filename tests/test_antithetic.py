"""Antithetic posterior samples: the twin run negates every Gaussian draw; pairs, their mean and their std."""

import threading

import pytest
import torch
from analytic_gaussian import white_pixel_case

from ambient_science.noise import antithetic, initial_noise, randn_like
from ambient_science.sampling.posterior import sample_posterior, summarize
from ambient_science.sampling.reconstruction import reconstruct


def test_antithetic_negates_the_draws_of_the_same_state():
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    real, cplx = randn_like(torch.zeros(5), g), initial_noise((2, 3), 2.0, generator=g, dtype=torch.complex64)
    g.set_state(state)
    with antithetic():
        torch.testing.assert_close(randn_like(torch.zeros(5), g), -real)
        torch.testing.assert_close(initial_noise((2, 3), 2.0, generator=g, dtype=torch.complex64), -cplx)
        with antithetic(False):  # a no-op: still negated
            torch.testing.assert_close(
                randn_like(torch.zeros(4), torch.Generator().manual_seed(1)),
                -torch.randn(4, generator=torch.Generator().manual_seed(1)),
            )
        with antithetic():  # nested twice: the sign flips back
            torch.testing.assert_close(
                randn_like(torch.zeros(4), torch.Generator().manual_seed(1)),
                torch.randn(4, generator=torch.Generator().manual_seed(1)),
            )
    torch.testing.assert_close(  # restored on exit
        randn_like(torch.zeros(4), torch.Generator().manual_seed(1)),
        torch.randn(4, generator=torch.Generator().manual_seed(1)),
    )


def test_antithetic_is_per_thread():
    seen = {}

    def other():
        seen["x"] = randn_like(torch.zeros(3), torch.Generator().manual_seed(0))

    with antithetic():
        t = threading.Thread(target=other)
        t.start()
        t.join()
    torch.testing.assert_close(seen["x"], torch.randn(3, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("method", ["dps", "daps"])
def test_a_pair_of_an_affine_sampler_is_exact(method):
    # both samplers are affine in their noise with a Gaussian prior and likelihood: a pair's mean is the noise-free
    # run, the same for any seed, while the mean of two independent samples is not
    prior, lik, _ = white_pixel_case()
    kwargs = dict(method=method, steps=12, num_samples=2, data_consistency="none", progress=False, safe_mode="off")

    def mean(seed, pairs):
        g = torch.Generator().manual_seed(seed)
        return reconstruct(prior, lik, generator=g, antithetic=pairs, **kwargs).mean

    torch.testing.assert_close(mean(0, True), mean(1, True), atol=2e-5, rtol=0)
    assert float((mean(0, False) - mean(1, False)).abs().max()) > 0.1


def test_pairs_in_one_batch_are_interleaved():
    prior, lik, _ = white_pixel_case()
    post = reconstruct(prior, lik, method="dps", steps=12, num_samples=4, sample_batch=None, antithetic=True,
                       data_consistency="none", progress=False, safe_mode="off",
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    s = post.samples
    assert s.shape == (4, 2, 1, 8, 8) and post.antithetic
    torch.testing.assert_close((s[0] + s[1]) / 2, (s[2] + s[3]) / 2, atol=2e-5, rtol=0)  # both the noise-free run
    assert float((s[0] - s[2]).abs().max()) > 0.1  # the two pairs drew different noise


def test_paired_std_matches_independent_samples():
    # the sampler's own spread (A-DPS at 24 steps: below the exact posterior's; tests/test_samplers.py), estimated
    # from 64 pairs and from 128 independent samples of the same sampler
    prior, lik, A = white_pixel_case()
    m = A.mask.reshape(2, 1, 8, 8).bool()
    kwargs = dict(method="dps", steps=24, num_samples=128, sample_batch=None, data_consistency="none", progress=False,
                  safe_mode="off")  # fmt: skip
    pairs = reconstruct(prior, lik, antithetic=True, generator=torch.Generator().manual_seed(0), **kwargs)
    indep = reconstruct(prior, lik, antithetic=False, generator=torch.Generator().manual_seed(1), **kwargs)
    for where in (m, ~m):
        ratio = float(pairs.std[where].pow(2).mean() / indep.std[where].pow(2).mean())
        assert abs(ratio - 1) < 0.1, ratio
    # an affine sampler: the pair means do not scatter, all the spread is in the half-differences
    pair_means = (pairs.samples[0::2] + pairs.samples[1::2]) / 2
    assert float(pair_means.std(dim=0)[~m].pow(2).mean()) < 1e-6 < float(indep.std[~m].pow(2).mean())


def test_streaming_and_stacked_summaries_agree():
    g = torch.Generator().manual_seed(0)

    def draw(gen, callback):
        return 1.0 + torch.randn(3, generator=gen) ** 3 + randn_like(torch.zeros(3), gen)

    post = sample_posterior(draw, num_samples=6, generator=g, progress=False, antithetic=True)
    again = summarize(post.samples, antithetic=True)
    torch.testing.assert_close(post.mean, again.mean)
    torch.testing.assert_close(post.std, again.std)
    s = post.samples  # the even part (torch.randn, not negated) is shared within a pair, the odd part flips
    torch.testing.assert_close(s[0] + s[1], 2 + 2 * (s[0] - 1 - (s[0] - s[1]) / 2))
    one = summarize(s[:2], antithetic=True)  # one pair: the odd part's spread only
    torch.testing.assert_close(one.std, ((s[0] - s[1]) / 2).abs())


def test_refusals():
    prior, lik, _ = white_pixel_case()
    with pytest.raises(ValueError, match="even"):
        reconstruct(prior, lik, method="dps", steps=4, num_samples=3, antithetic=True, progress=False,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    with pytest.raises(ValueError, match="even"):
        summarize(torch.zeros(3, 1, 2), antithetic=True)
    calls = []

    def uneven(gen, callback):  # draws more in its second call: the twin cannot repeat it
        calls.append(1)
        return torch.randn(2 * len(calls), generator=gen)[:2]

    with pytest.raises(RuntimeError, match="twin"):
        sample_posterior(uneven, num_samples=2, generator=torch.Generator().manual_seed(0), progress=False,
                         antithetic=True)  # fmt: skip


def test_recorded_setting_is_used_and_the_argument_wins():
    prior, lik, _ = white_pixel_case()
    prior.config = {"sampler": {"dps": {"antithetic": True, "num_samples": 2, "steps": 6}}}
    kwargs = dict(method="dps", progress=False, safe_mode="off", data_consistency="none")
    assert reconstruct(prior, lik, generator=torch.Generator().manual_seed(0), **kwargs).antithetic
    g = torch.Generator().manual_seed(0)
    assert not reconstruct(prior, lik, generator=g, antithetic=False, **kwargs).antithetic
    assert not reconstruct(prior, lik, generator=g, num_samples=3, **kwargs).antithetic  # odd: independent samples
