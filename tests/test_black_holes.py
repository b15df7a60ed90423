"""Synthetic black-hole images and the visibility measurement records simulated from them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ambient_science.datasets.black_holes import (
    SHAPES,
    BlackHoleImageConfig,
    BlackHoleVisibilityDataset,
    gaussian_random_field,
    record_observation,
    sample_black_hole_images,
    simulate_measurements,
)
from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.uvfits import read_uvfits, write_uvfits
from ambient_science.metrics.eht import closure_chi2, ring_fit


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def family():
    from ambient_science.operators.interferometry import InterferometerFamily

    return InterferometerFamily(npix=32, fov_uas=160.0, array="eht2017", duration_range_hr=(4.0, 8.0), bank_size=4)


# -- images -------------------------------------------------------------------------------------------------------


def test_images_shape_flux_positivity_and_determinism():
    cfg = BlackHoleImageConfig(npix=48, fov_uas=160.0)
    x, p = sample_black_hole_images(16, cfg, generator=_g(3))
    assert x.shape == (16, 1, 48, 48) and x.dtype == torch.float32
    assert bool((x >= 0).all()) and bool(torch.isfinite(x).all())
    torch.testing.assert_close(x.sum((1, 2, 3)), p["flux_jy"], rtol=1e-4, atol=0)
    assert bool(((p["flux_jy"] >= 0.5) & (p["flux_jy"] <= 1.0)).all())
    assert bool(((p["diameter_uas"] >= 35) & (p["diameter_uas"] <= 50)).all())
    x2, _ = sample_black_hole_images(16, cfg, generator=_g(3))
    torch.testing.assert_close(x, x2)
    assert not torch.equal(x, sample_black_hole_images(16, cfg, generator=_g(4))[0])


def test_images_leave_global_rng_alone():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    sample_black_hole_images(4, BlackHoleImageConfig(npix=16), generator=_g())
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_a_training_sized_batch_is_drawn_in_one_call():
    """A batch of 64 at 64 px (what a training step draws): finite, non-negative images, each of its drawn flux.
    Its speed is a benchmark matter (ground rule: no timed unit tests)."""
    images, params = sample_black_hole_images(64, BlackHoleImageConfig(npix=64), generator=_g(1))
    assert images.shape == (64, 1, 64, 64) and params["flux_jy"].shape == (64,)
    assert bool(torch.isfinite(images).all()) and bool((images >= 0).all())
    torch.testing.assert_close(images.sum(dim=(1, 2, 3)), params["flux_jy"].to(images.dtype), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_can_be_drawn_alone(shape):
    cfg = BlackHoleImageConfig(npix=32, shape_probs={shape: 1.0}, turbulence=(0.0, 0.0))
    x, p = sample_black_hole_images(4, cfg, generator=_g())
    assert bool((p["shape"] == SHAPES.index(shape)).all()) and bool(torch.isfinite(x).all())


def test_rings_have_the_drawn_diameter_and_position_angle():
    cfg = BlackHoleImageConfig(npix=64, shape_probs={"ring": 1.0}, turbulence=(0.0, 0.0), asymmetry=(0.5, 0.9))
    x, p = sample_black_hole_images(6, cfg, generator=_g(5))
    for i in range(6):
        fit = ring_fit(x[i, 0], cfg.psize)
        assert fit.diameter_uas == pytest.approx(float(p["diameter_uas"][i]), abs=1.5)
        dpa = (fit.pa_deg - float(p["pa_deg"][i]) + 180) % 360 - 180
        assert abs(dpa) < 5.0


def test_turbulence_is_smooth_unit_variance_and_multiplicative():
    g = gaussian_random_field(8, 64, torch.full((8,), 4.0), generator=_g())
    assert g.shape == (8, 64, 64)
    torch.testing.assert_close(g.std(dim=(1, 2)), torch.ones(8), rtol=1e-4, atol=0)
    # smooth: neighbouring pixels are strongly correlated at a 4-pixel correlation length
    assert float((g[:, 1:] * g[:, :-1]).mean()) > 0.9
    calm = BlackHoleImageConfig(npix=32, turbulence=(0.0, 0.0), shape_probs={"ring": 1.0})
    wild = BlackHoleImageConfig(npix=32, turbulence=(0.8, 0.8), shape_probs={"ring": 1.0})
    a, _ = sample_black_hole_images(4, calm, generator=_g(2))
    b, _ = sample_black_hole_images(4, wild, generator=_g(2))
    assert float((a - b).abs().sum()) > 0.1


def test_config_validation():
    with pytest.raises(ValueError, match="shape_probs"):
        BlackHoleImageConfig(shape_probs={"donut": 1.0})
    with pytest.raises(ValueError, match="asymmetry"):
        BlackHoleImageConfig(asymmetry=(0.0, 1.5))
    with pytest.raises(ValueError, match="n must be"):
        sample_black_hole_images(0, generator=_g())


# -- measurements -------------------------------------------------------------------------------------------------


def test_simulated_records_hold_measurements_only(family, tmp_path):
    sim = simulate_measurements(family, 6, generator=_g(1), batch_size=4)
    K = family.max_vis
    assert sim.y.shape == (6, K) and sim.y.dtype == torch.complex64
    assert set(sim.params) >= {"uv", "observed", "sigma", "t1", "t2", "time"}
    assert sim.truth.shape == (6, 1, 32, 32) and sim.sigma_n.shape == (6,)
    obs = sim.params["observed"]
    assert bool((sim.y[obs == 0] == 0).all())
    # the noise is at the level of the per-visibility sigmas
    A = family.make(sim.params)
    resid = (sim.y - A(sim.truth)) * obs
    chi2 = float((resid.abs() ** 2 / sim.params["sigma"] ** 2).sum() / (2 * obs.sum()))
    assert chi2 == pytest.approx(1.0, abs=0.15)
    assert bool((obs.sum(1) >= 1).all())  # empty coverages are redrawn
    torch.testing.assert_close(sim.sigma_n, ((sim.params["sigma"] ** 2 * obs).sum(1) / obs.sum(1)).sqrt())
    # records and files carry no image
    record = sim.dataset(family)[0]
    assert set(record) == {"y", "params", "sigma_n"}
    path = sim.save(tmp_path / "bh.h5", family, metadata={"source": "synthetic"})
    f = MeasurementFile(path)
    assert len(f) == 6 and "truth" not in f.param_names and "image" not in f.param_names
    torch.testing.assert_close(f[2]["y"], sim.y[2])


def test_noiseless_records_are_exactly_A_x(family):
    images = sample_black_hole_images(3, BlackHoleImageConfig(npix=32), generator=_g(9))[0]
    sim = simulate_measurements(family, 3, generator=_g(2), images=images, thermal_noise=False)
    torch.testing.assert_close(sim.y, family.make(sim.params)(images).to(torch.complex64))
    assert bool((sim.sigma_n == 0).all()) and sim.truth_params == {}
    with pytest.raises(ValueError, match="images must be"):
        simulate_measurements(family, 2, generator=_g(), images=images)
    with pytest.raises(ValueError, match="does not match the family"):
        simulate_measurements(family, 2, generator=_g(), image_config=BlackHoleImageConfig(npix=64))


def test_station_gains_keep_closure_chi2(family):
    kw = dict(images=None, thermal_noise=True)
    clean = simulate_measurements(family, 1, generator=_g(4), **kw)
    gained = simulate_measurements(family, 1, generator=_g(4), gain_amp_std=0.2, gain_phase="random", **kw)
    torch.testing.assert_close(clean.truth, gained.truth)
    obs = record_observation(gained.y[0], {k: v[0] for k, v in gained.params.items()}, family)
    assert not np.allclose(obs.vis, clean.y[0][clean.params["observed"][0] > 0].numpy())
    if len(set(obs.t1) | set(obs.t2)) >= 3:
        chi2 = closure_chi2(gained.truth[0, 0], obs, family.pixel_size)
        assert 0.5 < chi2["cphase"] < 2.0  # the truth fits the gain-corrupted closure phases to the noise


def test_dataset_records_are_reproducible_per_index(family):
    ds = BlackHoleVisibilityDataset(family, 5, seed=7)
    a, b = ds[3], ds[3]
    torch.testing.assert_close(a["y"], b["y"])
    assert not torch.equal(ds[2]["y"], a["y"])
    assert ds.truth(3).shape == (1, 32, 32)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert family.make(batch["params"]).oshape == (2, family.max_vis)
    with pytest.raises(IndexError):
        ds[5]


def test_record_round_trips_through_uvfits(family, tmp_path):
    sim = simulate_measurements(family, 1, generator=_g(6))
    obs = record_observation(sim.y[0], {k: v[0] for k, v in sim.params.items()}, family)
    with pytest.raises(ValueError, match="no ra_deg / dec_deg / mjd"):  # never zeros silently
        write_uvfits(obs, tmp_path / "sim.uvfits")
    back = read_uvfits(write_uvfits(obs, tmp_path / "sim.uvfits", ra_deg=187.7, dec_deg=12.39, mjd=57854))
    assert (back.ra_deg, back.dec_deg, back.mjd) == (187.7, 12.39, 57854)
    assert len(back) == len(obs) and back.stations == list(family.table.names)
    np.testing.assert_allclose(back.vis, obs.vis, atol=1e-6)
    assert math.isclose(back.freq_hz, family.freq_ghz * 1e9)


def test_black_holes_re_exports_the_image_generator_and_the_measurement_records():
    from ambient_science.datasets import black_hole_images, black_hole_measurements, black_holes

    for module in (black_hole_images, black_hole_measurements):
        for name in module.__all__:
            assert getattr(black_holes, name) is getattr(module, name), name
    assert set(black_holes.__all__) == set(black_hole_images.__all__) | set(black_hole_measurements.__all__)
