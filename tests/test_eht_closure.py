"""Closure phases and log closure amplitudes: minimal sets, gain invariance, sigmas, χ², bad input."""

import itertools

import numpy as np
import pytest
import torch

from ambient_science.operators.closure import (
    ClosureData,
    chisq_amp,
    chisq_cphase,
    chisq_logcamp,
    chisq_vis,
    closure_data,
    closure_index,
    closure_phase_sigmas,
    closure_phases,
    debias_amplitudes,
    log_closure_amplitude_sigmas,
    log_closure_amplitudes,
)
from ambient_science.operators.eht_noise import apply_station_gains, station_gains
from ambient_science.operators.eht_observe import simulate_observation
from ambient_science.operators.interferometry import Interferometer, uas_to_rad
from ambient_science.operators.uvcoverage import observe_coverage

M87 = {"ra_deg": 187.7059, "dec_deg": 12.3911, "mjd": 57854}
PSIZE = uas_to_rad(5.0)


def _image(npix=24):
    yy, xx = np.mgrid[:npix, :npix]
    img = np.exp(-((xx - 10.0) ** 2 + (yy - 13.0) ** 2) / 8.0) + 0.6 * np.exp(
        -((xx - 15.0) ** 2 + (yy - 9.0) ** 2) / 5.0
    )
    return 0.6 * img / img.sum()


@pytest.fixture(scope="module")
def obs():
    cov = observe_coverage("eht2017", **M87, tstart_hr=0.0, duration_hr=12.0, tadv_s=1800.0)
    return simulate_observation(cov, _image(), PSIZE, np.random.default_rng(0))


def _full_graph(n):
    t1, t2 = map(np.array, zip(*itertools.combinations(range(n), 2)))
    return np.zeros(len(t1)), t1, t2


@pytest.mark.parametrize("n", [3, 4, 5, 8, 12])
def test_minimal_sets_have_the_right_size_and_are_independent(n):
    time, t1, t2 = _full_graph(n)
    idx = closure_index(time, t1, t2)
    assert idx.n_cphase == (n - 1) * (n - 2) // 2
    assert idx.n_logcamp == n * (n - 3) // 2
    assert all(0 in tri for tri in idx.tri_stations.tolist())  # every triangle through the reference
    # independence: the closure quantities of random phases/log-amplitudes span full rank
    rng = np.random.default_rng(n)
    jac_cp = np.stack([closure_phases(torch.as_tensor(np.exp(1j * 1e-3 * e)), idx).numpy() for e in np.eye(len(t1))])
    assert np.linalg.matrix_rank(jac_cp, tol=1e-6) == idx.n_cphase
    if idx.n_logcamp:
        jac = np.stack([log_closure_amplitudes(torch.as_tensor(np.exp(e)), idx).numpy() for e in np.eye(len(t1))])
        assert np.linalg.matrix_rank(jac) == idx.n_logcamp
    del rng


def test_reference_station_is_the_lowest_sefd_and_reversed_baselines_are_conjugated():
    time, t1, t2 = _full_graph(4)
    sefd = np.array([5000.0, 90.0, 600.0, 1400.0])
    idx = closure_index(time, t1[::-1].copy(), t2[::-1].copy(), sefd=sefd)
    assert all(1 in tri for tri in idx.tri_stations.tolist())
    vis = torch.exp(1j * torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64))
    # stored as (t1, t2): V_ab = exp(i φ_ab); then ψ_abc = φ_ab + φ_bc + φ_ca with φ_ba = -φ_ab
    phase = {(a, b): p for a, b, p in zip(t1[::-1], t2[::-1], vis.angle().tolist())}
    phase.update({(b, a): -p for (a, b), p in list(phase.items())})
    for (a, b, c), psi in zip(idx.tri_stations.tolist(), closure_phases(vis, idx).tolist()):
        assert np.angle(np.exp(1j * (phase[a, b] + phase[b, c] + phase[c, a] - psi))) == pytest.approx(0, abs=1e-12)


def test_closure_quantities_are_invariant_to_station_gains(obs):
    idx = closure_index(obs.time, obs.t1, obs.t2, sefd=obs.sefd)
    g = station_gains(len(np.unique(obs.time)), len(obs.stations), np.random.default_rng(7), amp_std=0.3)
    vis_g, sigma_g = apply_station_gains(obs.vis, obs.sigma, obs.time, obs.t1, obs.t2, g)
    assert np.abs(vis_g - obs.vis).max() > 0.01
    v, vg = torch.as_tensor(obs.vis), torch.as_tensor(vis_g)
    dpsi = closure_phases(vg, idx) - closure_phases(v, idx)
    assert torch.angle(torch.exp(1j * dpsi)).abs().max() < 1e-10
    torch.testing.assert_close(log_closure_amplitudes(vg, idx), log_closure_amplitudes(v, idx))
    torch.testing.assert_close(
        closure_phase_sigmas(vg, torch.as_tensor(sigma_g), idx),
        closure_phase_sigmas(v, torch.as_tensor(obs.sigma), idx),
    )


def test_sigmas_match_monte_carlo_at_high_snr():
    time, t1, t2 = _full_graph(4)
    vis = np.array([1.0, 0.8j, -0.7, 0.9 + 0.3j, 0.5, -0.6j])
    sigma = np.array([0.01, 0.02, 0.015, 0.01, 0.02, 0.01])
    idx = closure_index(time, t1, t2)
    rng = np.random.default_rng(0)
    noisy = vis + sigma * (rng.standard_normal((4000, 6)) + 1j * rng.standard_normal((4000, 6)))
    cp = closure_phases(torch.as_tensor(noisy), idx).numpy()
    lca = log_closure_amplitudes(torch.as_tensor(noisy), idx).numpy()
    v, s = torch.as_tensor(vis), torch.as_tensor(sigma)
    cp_spread = np.angle(np.exp(1j * (cp - np.angle(np.exp(1j * cp).mean(0)))))  # about the circular mean
    np.testing.assert_allclose(cp_spread.std(0), closure_phase_sigmas(v, s, idx).numpy(), rtol=0.06)
    np.testing.assert_allclose(lca.std(0), log_closure_amplitude_sigmas(v, s, idx).numpy(), rtol=0.06)


def test_chi_squared_is_about_one_for_the_true_image_and_larger_for_a_wrong_one(obs):
    data = ClosureData.from_observation(obs)
    A = Interferometer(torch.as_tensor(obs.uv)[None], 24, PSIZE)
    truth = A(torch.as_tensor(_image())[None, None])[0]
    wrong = A(torch.as_tensor(np.roll(_image(), 3, axis=0) + np.fliplr(_image()))[None, None])[0]
    for chi2 in (data.chisq_cphase, data.chisq_logcamp):
        assert 0.5 < float(chi2(truth)) < 1.6
        assert float(chi2(wrong)) > 3 * float(chi2(truth))
    vis, sig = torch.as_tensor(obs.vis), torch.as_tensor(obs.sigma)
    assert 0.7 < float(chisq_vis(truth, vis, sig)) < 1.3
    assert 0.5 < float(chisq_amp(truth, debias_amplitudes(vis.abs(), sig), sig)) < 1.6
    # batched models (..., K) -> (...)
    batch = torch.stack([truth, wrong])
    assert chisq_cphase(batch, data.cphase, data.cphase_sigma, data.index).shape == (2,)
    assert chisq_logcamp(batch, data.logcamp, data.logcamp_sigma, data.index).shape == (2,)
    mask = torch.ones(2, len(obs.vis))
    assert chisq_vis(batch, vis, sig, observed=mask).shape == (2,)


def test_chi_squared_is_differentiable_through_the_operator(obs):
    data = ClosureData.from_observation(obs)
    A = Interferometer(torch.as_tensor(obs.uv)[None], 24, PSIZE)
    x = torch.as_tensor(_image(), dtype=torch.float32)[None, None].clone().requires_grad_(True)
    vis = A(x)[0]
    loss = data.chisq_cphase(vis) + data.chisq_logcamp(vis)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_missing_baselines_and_flagged_entries():
    time, t1, t2 = _full_graph(5)
    keep = ~((t1 == 1) & (t2 == 3))  # one baseline missing: 9 baselines, cycle rank 5, amplitude rank 4
    idx = closure_index(time[keep], t1[keep], t2[keep])
    assert idx.n_cphase == 5 and idx.n_logcamp == 4
    observed = keep.astype(float)
    idx2 = closure_index(time, t1, t2, observed=observed)
    assert idx2.n_cphase == 5 and idx2.n_logcamp == 4
    assert not np.isin(np.nonzero(~keep)[0], idx2.tri_vis).any()


def test_fewer_than_three_stations_give_no_closure_phase_and_a_clear_error():
    time = np.array([0.0, 1.0, 1.0, 1.0])
    t1, t2 = np.array([0, 0, 0, 1]), np.array([1, 1, 2, 2])
    idx = closure_index(time, t1, t2)
    assert idx.n_cphase == 1 and idx.n_logcamp == 0 and np.all(idx.tri_time == 1.0)
    with pytest.raises(ValueError, match="no log closure amplitudes"):
        chisq_logcamp(torch.ones(4, dtype=torch.complex128), [], [], idx)
    with pytest.raises(ValueError, match="no closure phases"):
        closure_data(np.zeros(1), np.array([0]), np.array([1]), np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="baseline"):
        closure_index(time, t1, t2, triangles=[(0.0, 0, 1, 2)])


def test_explicit_sets_and_debiasing():
    time, t1, t2 = _full_graph(4)
    vis = np.array([1.0, 0.5, 0.02, 0.8, 0.6, 0.9], dtype=complex)
    sigma = np.full(6, 0.05)
    data = closure_data(time, t1, t2, vis, sigma, quadrangles=[(0.0, 0, 1, 2, 3)], debias=False)
    assert data.index.n_logcamp == 1
    expected = np.log(1.0) + np.log(0.9) - np.log(0.5) - np.log(0.6)  # |V01||V23| / (|V02||V13|)
    assert float(data.logcamp[0]) == pytest.approx(expected)
    deb = closure_data(time, t1, t2, vis, sigma, quadrangles=[(0.0, 0, 1, 2, 3)])
    a = np.sqrt(np.array([1.0, 0.9, 0.5, 0.6]) ** 2 - 0.05**2)
    snr2 = (0.05 / a) ** 2
    assert float(deb.logcamp[0]) == pytest.approx(np.log(a[0] * a[1] / a[2] / a[3]) + 0.5 * (snr2 @ [1, 1, -1, -1]))
    assert float(deb.logcamp_sigma[0]) == pytest.approx(np.sqrt(snr2.sum()))
    amps = debias_amplitudes(torch.tensor([0.02, 1.0]), torch.tensor([0.05, 0.05]), force_nonzero=True)
    torch.testing.assert_close(amps, torch.tensor([0.05, (1 - 0.05**2) ** 0.5]))
