"""The data-consistency contract and the scale handling of reconstruct_closure; the speckle test; RML re-weighting."""

import dataclasses

import numpy as np
import pytest
import torch

from ambient_science import pretrained
from ambient_science.metrics.eht import isolated_pixels, remove_isolated_pixels
from ambient_science.operators.rml import rml_image
from ambient_science.pipelines.eht import held_out_observations
from ambient_science.pipelines.eht_likelihood import training_flux, with_systematic
from ambient_science.pipelines.eht_reconstruct import reconstruct_closure
from ambient_science.pipelines.eht_setup import DAPS, SHIPPED


def test_isolated_pixels_counts_and_removes_speckle():
    x = torch.full((2, 1, 8, 8), 0.1)
    x[0, 0, 3, 4] = 2.0  # isolated: 20x its neighbours
    x[1, 0, 3, 4], x[1, 0, 3, 5] = 2.0, 1.5  # a bright pair is not isolated
    assert isolated_pixels(x).reshape(-1).tolist() == [1, 0]
    y = remove_isolated_pixels(x)
    assert isolated_pixels(y).reshape(-1).tolist() == [0, 0] and float(y[0, 0, 3, 4]) == pytest.approx(0.1)
    assert torch.equal(y[1], x[1])


def test_systematic_floor_inflates_sigmas():
    obs = held_out_observations(1, 16, 128.0, seed=0)[0].obs
    assert with_systematic(obs, 0.0) is obs
    out = with_systematic(obs, 0.02)
    assert np.allclose(out.sigma**2, obs.sigma**2 + (0.02 * np.abs(obs.vis)) ** 2)
    with pytest.raises(ValueError, match="systematic"):
        with_systematic(obs, -0.1)


def test_unnormalised_prior_gets_its_mid_training_flux():
    prior = pretrained.load(SHIPPED)
    f, rng = training_flux(prior)
    assert f == pytest.approx(0.75) and rng == (0.5, 1.0)


@pytest.mark.slow
def test_reconstruct_reports_per_sample_fit_and_returns_jy_at_the_source_flux():
    prior = pretrained.load(SHIPPED)
    case = held_out_observations(1, 32, 128.0, seed=3)[0]
    fast = dataclasses.replace(DAPS, levels=4, langevin_steps=2, polish_iterations=20, polish_mean_iterations=20,
                               fit_rounds=1)  # fmt: skip
    with pytest.warns(UserWarning, match="outside the prior's training range"):
        post = reconstruct_closure(prior, [case.obs], [2.5], num_samples=2, settings=fast, progress=False,
                                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert post.fits.shape == (2, 1) and post.speckles.shape == (2, 1) and post.prior_flux == pytest.approx(0.75)
    assert torch.allclose(post.samples.sum((-1, -2, -3)), torch.full((2, 1), 2.5), rtol=1e-4)
    assert torch.isfinite(post.chi2_cphase).all()
    lo, hi = post.fit_range
    ok = (post.chi2_cphase >= lo) & (post.chi2_cphase <= hi)
    assert torch.equal(post.fits & ~ok, torch.zeros_like(post.fits))


@pytest.mark.slow
def test_rml_reweighting_reports_its_chi2():
    case = held_out_observations(1, 16, 128.0, seed=1)[0]
    info: dict = {}
    img = rml_image(case.obs, 16, 8 * 4.848e-12, total_flux=case.total_flux, n_rounds=1, n_iter=30,
                    target_chi2=(0.7, 1.3), max_reweight=2, info=info)  # fmt: skip
    assert img.shape == (16, 16) and np.isfinite(img).all()
    assert {"rounds", "weights", "chi2_cphase", "chi2_logcamp"} <= set(info) and 1 <= info["rounds"] <= 3


def test_best_shift_is_linear_never_wrap_around():
    from ambient_science.metrics.eht import best_shift, shift_image

    truth = np.zeros((16, 16))
    truth[6:9, 1:4] = 1.0  # near the east (column 0) edge
    est = np.zeros((16, 16))
    est[6:9, 11:14] = 1.0  # the same blob 10 columns west: a wrap-around search would call it -6
    dy, dx = best_shift(est, truth)
    assert (round(dy, 2), round(dx, 2)) == (0.0, -10.0)
    moved = shift_image(truth, (0.0, -3.0))  # out of the field to the east: lost, not wrapped to the west edge
    assert abs(moved[:, 10:].sum()) < 1e-9 and moved.sum() < truth.sum()
