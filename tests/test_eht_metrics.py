"""Black-hole image metrics: alignment, PSNR, blur, nxcorr, ring diameter and position angle."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ambient_science.datasets.black_holes import crescent_images, ring_images
from ambient_science.datasets.fits_image import RAD_PER_UAS
from ambient_science.metrics.eht import (
    best_shift,
    blurred_psnr,
    closure_chi2,
    gaussian_blur,
    nxcorr,
    psnr,
    psnr_shifted,
    ring_diameter,
    ring_fit,
    ring_position_angle,
    shift_image,
)

_DATA = Path(os.environ.get("AMBIENT_EHT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "eht"))
M87 = _DATA / "observations" / "M87_2017-04-11_hops_lo.uvfits"
N = 64
PSIZE = 2.5 * RAD_PER_UAS  # 160 µas field of view


def _ring(d=42.0, pa=200.0, a=0.6, width=8.0, x0=0.0, y0=0.0, kind=ring_images) -> np.ndarray:
    t = lambda v: torch.tensor([float(v)], dtype=torch.float64)  # noqa: E731
    u = RAD_PER_UAS
    img = kind(N, PSIZE, t(d * u), t(width * u), t(a), t(math.radians(pa)), t(1.0), x0=t(x0 * u), y0=t(y0 * u))
    return img[0, 0].numpy()


def test_best_shift_recovers_sub_pixel_translations():
    truth = _ring()
    for shift in [(1.3, -2.7), (-0.45, 0.8), (3.0, 0.0)]:
        moved = shift_image(truth, shift)
        dy, dx = best_shift(moved, truth)
        assert (dy, dx) == pytest.approx((-shift[0], -shift[1]), abs=0.06)
        assert psnr_shifted(moved, truth) > psnr(moved, truth) + 20
    # shift convention: +dy moves towards higher rows (south)
    point = np.zeros((16, 16))
    point[5, 5] = 1.0
    assert np.unravel_index(np.argmax(shift_image(point, (2.0, 0.0))), (16, 16)) == (7, 5)


def test_psnr_definition_and_errors():
    truth = _ring()
    est = truth + 0.01 * truth.max()
    assert psnr(est, truth) == pytest.approx(40.0, abs=1e-6)  # uniform error of 1% of the range
    assert psnr(truth, truth) == math.inf
    assert psnr(est, truth, data_range=2 * (truth.max() - truth.min())) == pytest.approx(40.0 + 20 * math.log10(2))
    with pytest.raises(ValueError, match="shape"):
        psnr(truth[:10, :10], truth)
    with pytest.raises(ValueError, match="square"):
        psnr(np.zeros((4, 5)), np.zeros((4, 5)))
    assert psnr(torch.as_tensor(est)[None, None], truth) == pytest.approx(40.0, abs=1e-6)  # (1, 1, N, N) ok


def test_gaussian_blur_has_the_stated_fwhm():
    point = np.zeros((N, N))
    point[N // 2, N // 2] = 1.0
    fwhm_uas = 20.0
    blurred = gaussian_blur(point, fwhm_uas * RAD_PER_UAS, PSIZE)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-9)
    rows = np.arange(N) - N // 2
    var_px = (blurred.sum(1) * rows**2).sum()
    sigma_uas = math.sqrt(var_px) * PSIZE / RAD_PER_UAS
    assert sigma_uas * math.sqrt(8 * math.log(2)) == pytest.approx(fwhm_uas, rel=1e-3)


def test_blurred_psnr_forgives_fine_scale_errors():
    truth = _ring()
    rng = np.random.default_rng(0)
    est = truth + 0.05 * truth.max() * rng.standard_normal(truth.shape)
    assert blurred_psnr(est, truth, psize=PSIZE, fwhm_uas=20.0) > psnr(est, truth) + 10
    assert blurred_psnr(est, truth, psize=PSIZE, fwhm_uas=0.0, shift=False) == pytest.approx(psnr(est, truth))


def test_nxcorr_properties():
    truth = _ring()
    other = _ring(d=36.0, pa=20.0)
    assert nxcorr(truth, truth) == pytest.approx(1.0)
    assert nxcorr(3.0 * truth + 1.0, truth) == pytest.approx(1.0)
    assert nxcorr(-truth, truth) == pytest.approx(-1.0)
    assert -1.0 <= nxcorr(other, truth) < 0.9
    assert nxcorr(np.ones((N, N)), truth) == 0.0
    moved = shift_image(truth, (2.5, 1.5))
    assert nxcorr(moved, truth, shift=True) > nxcorr(moved, truth)
    assert nxcorr(moved, truth, shift=True) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kind", [ring_images, crescent_images])
@pytest.mark.parametrize(
    ("d", "pa", "x0", "y0"), [(42.0, 200.0, 0.0, 0.0), (36.0, 90.0, 3.0, -2.0), (48.0, 330.0, -4, 4)]
)
def test_ring_fit_recovers_diameter_pa_and_centre(kind, d, pa, x0, y0):
    img = _ring(d=d, pa=pa, a=0.6, x0=x0, y0=y0, kind=kind)
    fit = ring_fit(img, PSIZE)
    assert fit.diameter_uas == pytest.approx(d, abs=1.0)
    assert ((fit.pa_deg - pa + 180) % 360 - 180) == pytest.approx(0.0, abs=3.0)
    # a crescent's ring centre lies between its outer disc's and its hole's (offset a·width/2 = 2.4 µas)
    tol = 1.0 if kind is ring_images else 3.5
    assert (fit.center_x_uas, fit.center_y_uas) == pytest.approx((x0, y0), abs=tol)
    assert 0.1 < fit.asymmetry < 0.5
    assert ring_diameter(img, PSIZE) == fit.diameter_uas and ring_position_angle(img, PSIZE) == fit.pa_deg


def test_ring_pa_is_east_of_north():
    """Bright on the east (left, column 0 side) means PA 90°; bright on the north (row 0) means PA 0°."""
    yy, xx = np.mgrid[:N, :N]
    r = np.hypot(yy - (N / 2 - 0.5), xx - (N / 2 - 0.5))
    ring = np.exp(-0.5 * ((r - 8) / 1.5) ** 2)
    east = ring * (1 + 0.5 * (xx < N / 2 - 0.5))
    north = ring * (1 + 0.5 * (yy < N / 2 - 0.5))
    assert ring_position_angle(east, PSIZE) == pytest.approx(90.0, abs=2.0)
    assert (ring_position_angle(north, PSIZE) + 180) % 360 - 180 == pytest.approx(0.0, abs=2.0)
    assert ring_diameter(ring, PSIZE) == pytest.approx(16 * 2.5, abs=0.5)


def test_ring_fit_rejects_empty_images():
    with pytest.raises(ValueError, match="positive flux"):
        ring_fit(np.zeros((N, N)), PSIZE)


# -- closure chi-squared -------------------------------------------------------------------------------------------


def _coverage_observation(image: np.ndarray, seed: int = 0, **gains):
    from ambient_science.operators.eht_observe import simulate_observation
    from ambient_science.operators.uvcoverage import observe_coverage

    cov = observe_coverage("eht2017", ra_deg=187.7, dec_deg=12.39, mjd=57854, tstart_hr=0.0, duration_hr=10.0)
    return simulate_observation(cov, image, PSIZE, np.random.default_rng(seed), **gains)


def test_closure_chi2_is_about_one_for_the_truth_and_ignores_gains():
    truth = _ring(d=42.0, pa=200.0, a=0.6) * 0.6
    obs = _coverage_observation(truth, gain_amp_std=0.3, gain_phase="random")
    fit = closure_chi2(truth, obs, PSIZE)
    assert set(fit) == {"cphase", "logcamp"}
    assert 0.6 < fit["cphase"] < 1.6 and 0.6 < fit["logcamp"] < 1.6
    flipped = _ring(d=42.0, pa=20.0, a=0.6) * 0.6
    assert closure_chi2(flipped, obs, PSIZE)["cphase"] > 5 * fit["cphase"]


@pytest.mark.skipif(not M87.is_file(), reason=f"EHT reference data not found at {M87}")
def test_closure_chi2_on_real_m87_data_prefers_a_south_bright_ring():
    """Sign conventions end to end on real data: the published M87* ring is brighter in the south."""
    from ambient_science.datasets.uvfits import average, read_uvfits

    obs = average(read_uvfits(M87))
    south = closure_chi2(_ring(d=42.0, pa=180.0, a=0.6) * 0.6, obs, PSIZE)
    north = closure_chi2(_ring(d=42.0, pa=0.0, a=0.6) * 0.6, obs, PSIZE)
    assert south["cphase"] < north["cphase"] / 10


def test_ring_modes_split_a_compact_mode_only_when_it_is_there():
    from types import SimpleNamespace

    from ambient_science.pipelines.eht_eval import ring_modes

    rng = np.random.default_rng(0)

    def fits(diameters, pa=None):
        pa = rng.normal(180.0, 10.0, len(diameters)) if pa is None else pa
        return [SimpleNamespace(diameter_uas=d, width_uas=10.0, pa_deg=a) for d, a in zip(diameters, pa)]

    ring = rng.normal(40.0, 1.5, 24)
    one = ring_modes(fits(rng.normal(40.0, 2.0, 32)), 2.5)
    assert len(one) == 1 and one[0]["fraction"] == 1.0 and 38 < one[0]["diameter_uas"]["median"] < 42
    assert one[0]["diameter_uas"]["lo68"] < one[0]["diameter_uas"]["median"] < one[0]["diameter_uas"]["hi68"]
    # a flat spread is one mode too: halving it gains nothing a Gaussian mixture would pay for
    assert len(ring_modes(fits(np.linspace(30.0, 50.0, 32)), 2.5)) == 1
    # a compact mode whose PAs are noise: the ring's own PA interval stays narrow
    compact_pa = rng.uniform(0.0, 360.0, 8)
    two = ring_modes(fits(np.r_[ring, rng.normal(21.0, 1.0, 8)], np.r_[rng.normal(180.0, 10.0, 24), compact_pa]), 2.5)
    assert [m["count"] for m in two] == [24, 8]  # largest first
    assert abs(two[0]["diameter_uas"]["median"] - 40) < 1.5 and abs(two[1]["diameter_uas"]["median"] - 21) < 1.5
    assert two[0]["diameter_uas"]["lo68"] > 30  # not stretched down to the compact mode
    assert two[0]["pa_deg"]["hi68"] - two[0]["pa_deg"]["lo68"] < 40
    # a handful of outliers (below min_fraction) is no mode of its own
    assert len(ring_modes(fits(np.r_[ring, [20.0, 21.0]]), 2.5)) == 1
    assert ring_modes([], 2.5) == []
