"""The RML baseline: a synthetic ring's diameter recovered from closure quantities with unknown gains."""

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from ambient_science.operators.closure import ClosureData
from ambient_science.operators.eht_observe import simulate_observation
from ambient_science.operators.interferometry import Interferometer, uas_to_rad
from ambient_science.operators.rml import RMLWeights, gaussian_image, rml_image, rml_objective
from ambient_science.operators.uvcoverage import observe_coverage

NPIX, FOV_UAS, D_UAS = 32, 128.0, 40.0
PS_UAS = FOV_UAS / NPIX


def _crescent(shift_uas=(3.0, -2.0), width_uas=4.0, flux=0.6):
    """A Gaussian-profile ring of diameter D_UAS, brighter in the south, off-centre by ``shift_uas`` (east, north)."""
    x = (NPIX / 2 - 0.5 - np.arange(NPIX)) * PS_UAS
    east, north = np.meshgrid(x, x)  # east by column, north by row
    east, north = east - shift_uas[0], north - shift_uas[1]
    r, pa = np.hypot(east, north), np.arctan2(east, north)
    img = np.exp(-0.5 * ((r - D_UAS / 2) / width_uas) ** 2) * (1 + 0.6 * np.cos(pa - np.pi))
    return flux * img / img.sum()


def _ring_diameter_uas(img, r_min_uas=10.0):
    """Diameter of the circle (centre and radius searched) of brightest mean along it, radius >= r_min_uas."""
    n = img.shape[0]
    rr, cc = np.mgrid[:n, :n]
    r0, c0 = (img * rr).sum() / img.sum(), (img * cc).sum() / img.sum()
    radii = np.arange(r_min_uas / PS_UAS, n / 2 - 1, 0.1)
    R, TH = np.meshgrid(radii, np.linspace(0, 2 * np.pi, 64, endpoint=False))

    def best(centres):
        out = (-np.inf, 0.0, r0, c0)
        for r_, c_ in centres:
            m = map_coordinates(img, [r_ + R * np.cos(TH), c_ + R * np.sin(TH)], order=1).mean(0)
            if m.max() > out[0]:
                out = (m.max(), radii[np.argmax(m)], r_, c_)
        return out

    g = np.arange(-6, 6.01, 0.5)
    _, _, r1, c1 = best([(r0 + a, c0 + b) for a in g for b in g])
    g = np.arange(-0.5, 0.51, 0.1)
    return 2 * best([(r1 + a, c1 + b) for a in g for b in g])[1] * PS_UAS


def test_ring_diameter_estimator_on_the_truth():
    assert abs(_ring_diameter_uas(_crescent()) - D_UAS) < 1.5


@pytest.mark.slow
def test_rml_recovers_a_ring_diameter_from_closure_quantities_with_random_gains():
    truth = _crescent()
    cov = observe_coverage(
        "eht2017", ra_deg=187.7059, dec_deg=12.3911, mjd=57854, tstart_hr=0.0, duration_hr=24.0, tadv_s=900.0
    )
    obs = simulate_observation(
        cov, truth, uas_to_rad(PS_UAS), np.random.default_rng(1), gain_amp_std=0.2, gain_phase="random"
    )
    terms = []
    img = rml_image(obs, NPIX, uas_to_rad(PS_UAS), total_flux=0.6, n_iter=80, callback=lambda r, t: terms.append(t))
    assert img.shape == (NPIX, NPIX) and np.all(img > 0)
    assert abs(img.sum() - 0.6) < 0.01
    assert terms[-1]["cphase"] < 2.0 and terms[-1]["logcamp"] < 2.0
    assert abs(_ring_diameter_uas(img) - D_UAS) <= 3.0


def test_rml_objective_terms_and_errors():
    cov = observe_coverage(
        "eht2017", ra_deg=187.7, dec_deg=12.4, mjd=57854, tstart_hr=1.0, duration_hr=4.0, tadv_s=3600
    )
    obs = simulate_observation(cov, _crescent(), uas_to_rad(PS_UAS), thermal_noise=False)
    data = ClosureData.from_observation(obs)
    A = Interferometer(torch.as_tensor(obs.uv)[None], NPIX, uas_to_rad(PS_UAS))
    prior = torch.as_tensor(gaussian_image(NPIX, uas_to_rad(PS_UAS), uas_to_rad(40.0), 0.6))
    assert float(prior.sum()) == pytest.approx(0.6)
    img = torch.as_tensor(_crescent())
    total, terms = rml_objective(img, A, data, prior, 0.6, RMLWeights())
    assert float(total) >= 0
    assert set(terms) == {"cphase", "logcamp", "tv", "mem", "flux"}
    assert terms["cphase"] < 1e-8 and terms["flux"] < 1e-12  # noiseless truth fits exactly
    assert float(rml_objective(prior, A, data, prior, 0.6, RMLWeights())[1]["mem"]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="total_flux"):
        rml_image(obs, NPIX, uas_to_rad(PS_UAS), total_flux=0.0)
