"""The closure DAPS loop: tempered resampling weights, systematic resampling, per-observation resampling of the
sample-major batch, and MAP levels that bring x_0 to the data where Langevin does not."""

import dataclasses

import pytest
import torch

from ambient_science import pretrained
from ambient_science.pipelines.eht import closure_observation, held_out_observations
from ambient_science.pipelines.eht_daps import _resample, closure_daps, resample_indices, tempered_weights
from ambient_science.pipelines.eht_likelihood import ClosureLikelihood
from ambient_science.pipelines.eht_reconstruct import SamplerSettings, reconstruct_closure
from ambient_science.pipelines.eht_setup import DAPS, SHIPPED
from ambient_science.schedules import edm_sigmas


def _ess(w: torch.Tensor) -> torch.Tensor:
    return 1.0 / (w**2).sum(-1) / w.shape[-1]


def test_tempered_weights_keep_the_effective_sample_size():
    nll = torch.tensor([[0.0, 5.0, 50.0, 500.0, 5000.0, 1e5], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    w = tempered_weights(nll, 0.5)
    assert torch.allclose(w.sum(-1), torch.ones(2, dtype=torch.float64))
    assert float(_ess(w)[0]) == pytest.approx(0.5, abs=1e-3)  # tempered down to the target, not beyond
    assert torch.allclose(w[1], torch.full((6,), 1 / 6, dtype=torch.float64))  # equal fits: equal weights
    assert bool((w[0][:-1] >= w[0][1:]).all())  # a better fit never weighs less
    small = tempered_weights(torch.tensor([0.0, 0.1, 0.2]), 0.5)  # beta = 1 already meets the target
    assert torch.allclose(small, torch.softmax(-torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64), 0))
    nan = tempered_weights(torch.tensor([[0.0, float("nan"), 1.0, float("inf")], [float("nan")] * 4]), 0.3)
    assert float(nan[0, 1]) == 0.0 and float(nan[0, 3]) == 0.0 and float(nan[0].sum()) == pytest.approx(1.0)
    assert torch.allclose(nan[1], torch.full((4,), 0.25, dtype=torch.float64))  # nothing finite: equal weights
    with pytest.raises(ValueError, match="resample_ess"):
        tempered_weights(nll, 0.0)
    with pytest.raises(ValueError, match="resample_ess"):
        SamplerSettings(resample_ess=1.5)
    with pytest.raises(ValueError, match="map_iterations"):
        SamplerSettings(map_below=1.0, map_iterations=0)


def test_systematic_resampling_counts_are_floor_or_ceil():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    for _ in range(20):
        idx = resample_indices(w, g)
        counts = torch.stack([torch.bincount(r, minlength=4) for r in idx]).double()
        assert bool(((counts - 4 * w).abs() < 1.0).all())
    assert idx[1].tolist() == [2, 2, 2, 2]


class _FakeLik:
    """``loss`` = the first pixel: a known per-sample negative log-likelihood."""

    def loss(self, x):
        return x[:, 0, 0, 0].clone()


def test_resampling_stays_within_each_observation():
    S, T = 6, 3
    x0 = torch.zeros(S * T, 1, 2, 2)
    for s in range(S):
        for t in range(T):
            x0[s * T + t, 0, 0, 0] = 1000.0 * s  # sample 0 fits best, far better than the rest
            x0[s * T + t, 0, 1, 1] = t  # the observation's tag
    state = {"x0": x0.clone(), "x0_hat": x0.clone()}
    x = _resample(state, _FakeLik(), S, 0.3, 0.0, torch.Generator().manual_seed(1))
    tags = state["x0"][:, 0, 1, 1].reshape(S, T)
    assert torch.equal(tags, torch.arange(T).float().expand(S, T))  # each observation keeps its own samples
    firsts = state["x0"][:, 0, 0, 0].reshape(S, T)
    assert bool((firsts == 0).sum(0).ge(2).all())  # the best sample is copied (ESS 0.3 of 6: about 2 copies)
    assert torch.equal(x, state["x0"])  # sigma_next = 0: no re-noising


@pytest.mark.slow
def test_map_levels_bring_x0_to_the_data():
    """On a held-out observation, the same few levels with MAP x_0 steps end far nearer the data than with
    Langevin (whose step the closure χ²'s stiffest direction sets) — the reason for ``map_below``."""
    prior = pretrained.load(SHIPPED)
    case = held_out_observations(1, 32, 128.0, seed=5)[0]
    N, psize = prior.family.npix, prior.family.pixel_size
    lik = ClosureLikelihood([case.obs], [closure_observation(case.obs)], [0.75], N, psize, samples=4)
    sigmas = edm_sigmas(6, sigma_min=0.2, sigma_max=10.0)
    start = torch.full((4, 1, N, N), float(lik.scale) * 0.75 / N**2)
    chi2 = {}
    for name, map_below in (("langevin", 0.0), ("map", 1.0)):
        g = torch.Generator().manual_seed(0)
        cfg = SamplerSettings(langevin_steps=5, step_size=1.0, map_below=map_below, map_iterations=20)
        seen: list = []
        closure_daps(prior.denoiser(4, generator=g), 10.0 * torch.randn(4, 1, N, N, generator=g), sigmas, lik, cfg,
                     g, lambda info, out=seen: out.append(info["x0"]), start, 4)  # fmt: skip
        chi2[name] = float(lik.chi_squared(seen[-1])["cphase"].median())
    assert chi2["map"] < 0.5 * chi2["langevin"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:reconstruct_closure")  # 3 samples, 5 levels: few fit
def test_reconstruct_with_map_levels_and_resampling_keeps_the_contract():
    prior = pretrained.load(SHIPPED)
    case = held_out_observations(1, 32, 128.0, seed=3)[0]
    fast = dataclasses.replace(DAPS, levels=5, langevin_steps=2, polish_iterations=20, polish_mean_iterations=20,
                               fit_rounds=1, map_below=1.0, map_iterations=5, resample_at=(2.0, 0.5))  # fmt: skip
    post = reconstruct_closure(prior, [case.obs, case.obs], [0.75, 0.75], num_samples=3, settings=fast,
                               progress=False, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert post.samples.shape == (3, 2, 1, 32, 32) and torch.isfinite(post.samples).all()
    assert torch.allclose(post.samples.sum((-1, -2, -3)), torch.full((3, 2), 0.75), rtol=1e-4)
