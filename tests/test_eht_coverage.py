"""Station tables, uv-coverage by Earth rotation, thermal noise and gains."""

import numpy as np
import pytest

from ambient_science.operators.eht_arrays import ARRAY_NAMES, StationTable, load_array, read_array, write_array
from ambient_science.operators.eht_noise import (
    add_thermal_noise,
    apply_station_gains,
    station_gains,
    stokes_i_sigma,
    thermal_sigma,
)
from ambient_science.operators.eht_observe import simulate_observation
from ambient_science.operators.interferometry import uas_to_rad
from ambient_science.operators.uvcoverage import (
    SPEED_OF_LIGHT,
    baseline_uv,
    gmst_hours,
    observe_coverage,
    offline_astropy,
    sample_coverage,
    station_elevation,
)

M87 = {"ra_deg": 187.7059, "dec_deg": 12.3911, "mjd": 57854}


@pytest.mark.parametrize("name", ARRAY_NAMES)
def test_bundled_tables_load(name):
    t = load_array(name)
    assert len(t) >= 8 and {"ALMA", "LMT", "SMA", "SPT"} <= set(t.names)
    radius = np.linalg.norm(t.xyz, axis=1)
    assert np.all(np.abs(radius - 6.37e6) < 3e4)  # on the Earth's surface
    assert t.sefd[t.index("ALMA")] == t.sefd.min()


def test_m87_table_has_the_2017_m87_sefds_and_2025_is_larger():
    assert load_array("eht2017_m87").sefd_l[load_array("eht2017_m87").index("SMA")] == 6500
    assert load_array("eht2017_m87").sefd_r[load_array("eht2017_m87").index("SMA")] == 5600
    assert len(load_array("eht2025")) > len(load_array("eht2017"))


def test_table_text_round_trip_and_common_format(tmp_path):
    t = load_array("eht2025")
    t2 = read_array(write_array(t, tmp_path / "a.txt"))
    assert t2.names == t.names and np.allclose(t2.xyz, t.xyz) and np.allclose(t2.sefd_l, t.sefd_l)
    # the common format with extra columns (feed angles, D-terms) and a single-SEFD line
    (tmp_path / "b.txt").write_text(
        "#NAME X Y Z SEFDR SEFDL FR_PAR FR_EL FR_OFF DR_RE DR_IM DL_RE DL_IM\n"
        "AA 2225061.164 -5440057.37 -2481681.15 90 91 1 0 0 0 0 0 0\n"
        "XX 1 2 6371000 500\n"
    )
    t3 = read_array(tmp_path / "b.txt")
    assert t3.names == ["AA", "XX"] and t3.sefd_l.tolist() == [91, 500] and t3.sefd_r.tolist() == [90, 500]


def test_table_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown array 'nope'"):
        load_array("nope")
    with pytest.raises(FileNotFoundError):
        read_array(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("AA 1 2\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1"):
        read_array(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="unique"):
        StationTable(["A", "A"], np.ones((2, 3)), np.ones(2), np.ones(2))


def test_uv_tracks_are_ellipses_and_w_free_geometry():
    """For an east-west baseline, u² + (v / sin δ)² = |b|² / λ² (TMS §4.2)."""
    lam = SPEED_OF_LIGHT / 230e9
    b = np.array([3.0e6, 4.0e6, 0.0])
    dec = np.deg2rad(30.0)
    h = np.linspace(0, 2 * np.pi, 50)
    uv = baseline_uv(b, h, dec, lam)
    np.testing.assert_allclose(uv[:, 0] ** 2 + (uv[:, 1] / np.sin(dec)) ** 2, (5e6 / lam) ** 2, rtol=1e-12)
    # a polar baseline is seen as a fixed v offset: v = b_z cos δ / λ
    uvz = baseline_uv(np.array([0.0, 0.0, 1e6]), h, dec, lam)
    np.testing.assert_allclose(uvz[:, 1], 1e6 * np.cos(dec) / lam)


def test_elevation_at_the_pole_is_the_declination():
    el = station_elevation(np.array([[0.0, 0.0, 6.36e6], [0.0, 0.0, -6.36e6]]), np.linspace(0, 6, 7), np.deg2rad(-29.0))
    np.testing.assert_allclose(el[:, 0], np.deg2rad(-29.0), atol=1e-12)
    np.testing.assert_allclose(el[:, 1], np.deg2rad(29.0), atol=1e-12)


def test_gmst_is_computed_offline():
    from astropy.utils import iers

    before = (iers.conf.auto_download, iers.conf.auto_max_age)
    g = gmst_hours(51544, np.array([12.0]))  # J2000.0: GMST = 18.697374558 h
    assert abs(g[0] - 18.697374558) < 1e-4
    with offline_astropy():
        assert iers.conf.auto_download is False
    assert (iers.conf.auto_download, iers.conf.auto_max_age) == before  # restored, never set globally


def test_observed_coverage_of_m87():
    cov = observe_coverage("eht2017", **M87, tstart_hr=0.0, duration_hr=24.0, tadv_s=600.0)
    assert len(cov) > 500
    assert np.all(cov.t1 < cov.t2) and np.all(np.diff(cov.time) >= 0)
    assert {cov.stations[s] for s in np.unique(np.r_[cov.t1, cov.t2])} == set(cov.stations) - {
        "SPT"
    }  # M87 too far north
    radius = np.hypot(cov.u, cov.v)
    assert radius.max() < 1.0e10 and radius.max() > 6e9  # EHT at 1.3 mm: up to about 8 Gλ
    assert cov.vis is None and cov.uv.shape == (len(cov), 2)
    # sigma from the radiometer equation, per the Stokes I combination of RR and LL
    k = int(np.nonzero((cov.t1 == 0) & (cov.t2 == 3))[0][0])  # PV-LMT
    assert cov.sigma[k] == pytest.approx(np.sqrt(1400 * 600 / (2 * 2e9 * 10.0)) / 0.88 / np.sqrt(2))
    # a source no two stations see between the elevation limits (SPT: too high; ALMA, APEX: too low)
    kw = {"ra_deg": 0.0, "dec_deg": -89.0, "mjd": 57854, "tstart_hr": 0, "duration_hr": 1, "elev_min_deg": 40.0}
    assert len(observe_coverage("eht2017", **kw)) == 0


def test_sample_coverage_is_reproducible_and_drops_stations():
    a = sample_coverage("eht2025", np.random.default_rng(5), p_station_drop=0.5, min_stations=4)
    b = sample_coverage("eht2025", np.random.default_rng(5), p_station_drop=0.5, min_stations=4)
    np.testing.assert_array_equal(a.u, b.u)
    assert a.dec_deg == b.dec_deg and a.mjd == b.mjd
    used = set(np.unique(np.r_[a.t1, a.t2]).tolist())
    assert len(used) < len(a.stations)


def test_thermal_noise_formula_and_statistics():
    assert thermal_sigma(100.0, 400.0, 1e9, 2.0) == pytest.approx(np.sqrt(4e4 / 4e9) / 0.88)
    assert stokes_i_sigma(100.0, 100.0, 400.0, 400.0, 1e9, 2.0) == pytest.approx(
        thermal_sigma(100, 400, 1e9, 2) / 2**0.5
    )
    rng = np.random.default_rng(0)
    n = add_thermal_noise(np.zeros(20000), np.full(20000, 0.3), rng)
    assert abs(n.real.std() - 0.3) < 0.01 and abs(n.imag.std() - 0.3) < 0.01
    with pytest.raises(ValueError, match="positive"):
        thermal_sigma(1.0, 1.0, 0.0, 1.0)


def test_station_gains_and_simulated_observation():
    rng = np.random.default_rng(1)
    g = station_gains(5, 4, rng, amp_std=0.1, phase="random")
    assert g.shape == (5, 4) and np.all(np.abs(g) > 0.1)
    vis, sig = apply_station_gains(np.ones(2), np.ones(2), np.array([0.0, 1.0]), np.array([0, 1]), np.array([1, 3]), g)
    np.testing.assert_allclose(vis, [g[0, 0] * np.conj(g[0, 1]), g[1, 1] * np.conj(g[1, 3])])
    np.testing.assert_allclose(sig, np.abs(vis))
    cov = observe_coverage("eht2017", **M87, tstart_hr=2.0, duration_hr=3.0, tadv_s=1800.0)
    img = np.zeros((16, 16))
    img[8, 8] = 1.5
    obs = simulate_observation(cov, img, uas_to_rad(8.0), thermal_noise=False)
    assert obs.vis.dtype == np.complex128 and len(obs.vis) == len(cov)
    np.testing.assert_allclose(np.abs(obs.vis)[np.hypot(cov.u, cov.v) < 1e7], 1.5, rtol=1e-4)  # short baselines
    with pytest.raises(ValueError, match="needs rng"):
        simulate_observation(cov, img, uas_to_rad(8.0))
