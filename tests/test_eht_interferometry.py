"""The visibility operator (ehtim convention) and the EHT coverage family."""

import json

import numpy as np
import pytest
import torch

from ambient_science.family import check_subset
from ambient_science.operators.interferometry import (
    Interferometer,
    InterferometerFamily,
    pixel_coordinates,
    triangle_pulse,
    uas_to_rad,
)
from ambient_science.registry import family_from_config
from ambient_science.testing import check_adjoint


def _numpy_dft(img: np.ndarray, uv: np.ndarray, psize: float) -> np.ndarray:
    """Independent reference: V_k = sinc²(u ψ) sinc²(v ψ) Σ_rc I_rc exp(+2πi (u x_c + v y_r))."""
    n = img.shape[0]
    x = (n / 2 - 0.5 - np.arange(n)) * psize
    rows, cols = np.meshgrid(x, x, indexing="ij")  # y by row, x by column
    phase = 2 * np.pi * (uv[:, 0, None] * cols.ravel()[None] + uv[:, 1, None] * rows.ravel()[None])
    pulse = np.sinc(uv[:, 0] * psize) ** 2 * np.sinc(uv[:, 1] * psize) ** 2
    return pulse * (np.exp(1j * phase) @ img.ravel())


@pytest.mark.parametrize("npix", [7, 16, 33])
def test_visibilities_equal_an_independent_numpy_dft(npix):
    rng = np.random.default_rng(npix)
    psize = uas_to_rad(160.0 / npix)
    uv = rng.uniform(-0.45, 0.45, (2, 50, 2)) / psize
    img = rng.random((2, npix, npix))
    A = Interferometer(torch.as_tensor(uv), npix, psize)
    V = A(torch.as_tensor(img)[:, None]).numpy()
    assert V.dtype == np.complex128
    for b in range(2):
        ref = _numpy_dft(img[b], uv[b], psize)
        assert np.abs(V[b] - ref).max() <= 1e-6 * np.abs(ref).max()
    V32 = A(torch.as_tensor(img, dtype=torch.float32)[:, None])
    assert V32.dtype == torch.complex64
    np.testing.assert_allclose(V32.numpy(), V, atol=1e-5 * np.abs(V).max())


def test_point_source_conventions_north_up_east_left():
    """A pixel north-east of the centre: x > 0 for low columns, y > 0 for low rows, V = exp(+2πi(u x + v y))."""
    npix, psize = 8, 1e-11
    x = pixel_coordinates(npix, psize)
    assert x[0] > 0 and x[-1] < 0 and torch.isclose(x[0], -x[-1])
    img = torch.zeros(1, 1, npix, npix, dtype=torch.float64)
    img[0, 0, 1, 2] = 2.0
    uv = torch.tensor([[[1e9, 0.0], [0.0, 1e9]]], dtype=torch.float64)
    V = Interferometer(uv, npix, psize)(img)[0]
    P = triangle_pulse(uv[0], psize)
    expected = 2.0 * P * torch.exp(2j * np.pi * torch.stack([1e9 * x[2], 1e9 * x[1]]))
    torch.testing.assert_close(V, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adjoint_for_the_real_inner_product(dtype):
    g = torch.Generator().manual_seed(0)
    uv = (torch.rand(3, 64, 2, generator=g, dtype=torch.float64) - 0.5) * 2e10
    A = Interferometer(uv, 20, uas_to_rad(5.0), (torch.rand(3, 64, generator=g) > 0.3).float())
    assert check_adjoint(A, dtype) < (1e-5 if dtype == torch.float32 else 1e-12)
    y = torch.randn(3, 64, dtype=torch.complex128)
    assert not A.H(y).is_complex()


def test_out_of_band_uv_points_are_refused_unless_unobserved():
    psize = uas_to_rad(10.0)
    uv = torch.tensor([[[0.2 / psize, 0.0], [0.6 / psize, 0.0]]], dtype=torch.float64)
    with pytest.raises(ValueError, match="outside the image's band"):
        Interferometer(uv, 16, psize)
    A = Interferometer(uv, 16, psize, torch.tensor([[1.0, 0.0]]))  # padding may hold anything
    assert A(torch.ones(1, 1, 16, 16))[0, 1] == 0


def test_bad_inputs_give_clear_errors():
    uv = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match=r"uv must be real \(B, K, 2\)"):
        Interferometer(torch.zeros(1, 4, 3), 8, 1e-11)
    with pytest.raises(ValueError, match="observed must be"):
        Interferometer(uv, 8, 1e-11, torch.ones(2, 4))
    with pytest.raises(ValueError, match="method"):
        Interferometer(uv, 8, 1e-11, method="fft")
    with pytest.raises(TypeError, match="images are real"):
        Interferometer(uv, 8, 1e-11)(torch.ones(1, 1, 8, 8, dtype=torch.complex64))


def test_dirty_image_of_a_point_source_peaks_at_its_flux_and_psf_peaks_at_one():
    g = torch.Generator().manual_seed(1)
    npix, psize = 24, uas_to_rad(5.0)
    uv = (torch.rand(1, 200, 2, generator=g, dtype=torch.float64) - 0.5) * 1.5e10
    A = Interferometer(uv, npix, psize)
    img = torch.zeros(1, 1, npix, npix, dtype=torch.float64)
    img[0, 0, 7, 15] = 0.8
    y = A(img) / triangle_pulse(A.uv, psize)  # the visibilities of a point, pulse divided out
    dirty = A.dirty_image(y)
    assert dirty.shape == (1, 1, npix, npix)
    assert torch.isclose(dirty[0, 0, 7, 15], torch.tensor(0.8, dtype=torch.float64))
    assert dirty.argmax() == 7 * npix + 15
    psf = A.psf()
    assert psf.shape == (1, 1, npix, npix) and psf.dtype == torch.float32
    assert psf[0, 0, npix // 2, npix // 2] == pytest.approx(1.0) and psf.max() <= 1.0 + 1e-6
    assert torch.all(A.restrict(torch.zeros(1, 200)).psf() == 0)  # nothing observed: zeros, no NaN


def test_restrict_and_params_round_trip():
    g = torch.Generator().manual_seed(2)
    uv = (torch.rand(2, 10, 2, generator=g, dtype=torch.float64) - 0.5) * 1e10
    t1 = torch.zeros(2, 10, dtype=torch.long)
    A = Interferometer(uv, 8, uas_to_rad(10.0), t1=t1, t2=t1 + 1, time=torch.zeros(2, 10))
    keep = (torch.rand(2, 10, generator=g) > 0.5).float()
    At = A.restrict(keep)
    assert isinstance(At, Interferometer) and torch.equal(At.observed, keep)
    assert set(At.params()) == {"uv", "observed", "t1", "t2", "time"}
    x = torch.rand(2, 1, 8, 8, generator=g)
    torch.testing.assert_close(At(x), keep * A(x))


def test_nufft_matches_the_dft():
    pytest.importorskip("torchkbnufft")
    g = torch.Generator().manual_seed(4)
    psize = uas_to_rad(1.0)
    uv = (torch.rand(2, 300, 2, generator=g, dtype=torch.float64) - 0.5) * 0.9 / psize
    x = torch.rand(2, 1, 64, 64, generator=g)
    A_dft = Interferometer(uv, 64, psize, method="dft")
    A_nufft = Interferometer(uv, 64, psize, method="nufft")
    y = A_dft(x)
    assert float((A_nufft(x) - y).abs().max() / y.abs().max()) < 5e-3
    assert check_adjoint(A_nufft) < 1e-5


# -- the family -----------------------------------------------------------------------------------------
def _family(**kw) -> InterferometerFamily:
    kw = {"npix": 32, "fov_uas": 160.0, "array": "eht2017", "bank_size": 8, **kw}
    return InterferometerFamily(**kw)


def test_family_draws_time_ordered_coverages_within_max_vis():
    family = _family()
    g = torch.Generator().manual_seed(0)
    A = family.sample(16, generator=g)
    assert A.oshape == (16, family.max_vis)
    n = A.observed.sum(1)
    assert torch.all(n > 0) and torch.all(n <= family.max_vis)
    for b in range(16):
        obs = A.observed[b] > 0
        t = A.time[b][obs]
        assert torch.all(t[1:] >= t[:-1]) and t[0] >= 0  # hours since the window opened
        assert torch.all(A.t1[b][obs] < A.t2[b][obs])
        assert torch.all(A.uv[b][~obs] == 0) and torch.all(A.sigma[b][obs] > 0)
    assert family.sample(4, generator=g).uv.dtype == torch.float64


def test_family_samples_a_training_batch_of_64_px_coverages():
    """32 coverages at 64 px from a bank of 32 (what every training step draws), repeatable from the generator.
    Its speed is a benchmark matter (ground rule: no timed unit tests)."""
    family = _family(npix=64, bank_size=32)
    A1 = family.sample(32, generator=torch.Generator().manual_seed(0))
    A2 = family.sample(32, generator=torch.Generator().manual_seed(0))
    assert A1.batch_size == 32 and torch.equal(A1.uv, A2.uv) and torch.equal(A1.observed, A2.observed)


def test_further_corruption_drops_whole_stations():
    family = _family(delta_station=0.5, delta_baseline=0.0, delta_time=0.0)
    g = torch.Generator().manual_seed(3)
    A = family.sample(8, generator=g)
    At = family.further_corrupt(A, generator=g)
    check_subset(A, At)
    for b in range(8):
        kept = (A.observed[b] > 0) & (At.observed[b] == 0)
        dropped = set(A.t1[b][kept].tolist()) | set(A.t2[b][kept].tolist())
        obs = At.observed[b] > 0
        remaining = set(At.t1[b][obs].tolist()) | set(At.t2[b][obs].tolist())
        # a lost visibility lost one of its stations entirely
        for k in torch.nonzero(kept).reshape(-1).tolist():
            assert int(A.t1[b, k]) not in remaining or int(A.t2[b, k]) not in remaining
        assert dropped or bool(torch.equal(A.observed[b], At.observed[b]))


def test_family_conditioning_is_the_psf_and_config_is_json():
    family = _family(array="eht2017_m87")
    A = family.sample(3, generator=torch.Generator().manual_seed(5))
    c = family.conditioning(A)
    assert c.shape == (3, 1, 32, 32)
    torch.testing.assert_close(c[:, 0, 16, 16], torch.ones(3))
    config = json.loads(json.dumps(family.config()))
    assert config["array"] == "eht2017_m87"
    rebuilt = family_from_config(config)
    torch.testing.assert_close(rebuilt.make(A.params())(torch.ones(3, 1, 32, 32)), A(torch.ones(3, 1, 32, 32)))


def test_family_with_a_custom_table_round_trips():
    from ambient_science.operators.eht_arrays import load_array

    table = load_array("eht2017").subset(["ALMA", "LMT", "SMA", "SMT", "PV"])
    family = InterferometerFamily(npix=16, fov_uas=120.0, array=table, bank_size=2)
    rebuilt = family_from_config(json.loads(json.dumps(family.config())))
    assert rebuilt.table.names == table.names and rebuilt.config() == family.config()


def test_family_refuses_pixels_too_large_for_the_baselines():
    with pytest.raises(ValueError, match="outside the image's band"):
        InterferometerFamily(npix=8, fov_uas=400.0, bank_size=2)
    with pytest.raises(ValueError, match="delta_station"):
        _family(delta_station=1.0)


def test_autocast_does_not_lower_the_phase_precision():
    g = torch.Generator().manual_seed(6)
    psize = uas_to_rad(2.0)
    uv = (torch.rand(2, 100, 2, generator=g, dtype=torch.float64) - 0.5) * 0.9 / psize
    A = Interferometer(uv, 64, psize)
    x = torch.rand(2, 1, 64, 64, generator=g)
    y = A(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_amp = A(x)
        x_amp = A.H(y)
    assert y_amp.dtype == torch.complex64
    torch.testing.assert_close(y_amp, y)
    torch.testing.assert_close(x_amp, A.H(y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_near_subnormal_pixels_carry_no_flux_and_keep_the_identity_gradient(dtype):
    """Pixels within eps of the subnormal range are set to 0 before the transform (their products made float32 5-7x
    slower); a NaN stays NaN; with a graph the gradient is the identity at every pixel, flushed ones included."""
    psize = uas_to_rad(10.0)
    uv = torch.as_tensor(np.random.default_rng(0).uniform(-0.45, 0.45, (1, 30, 2)) / psize)
    A = Interferometer(uv, 8, psize)
    fi = torch.finfo(dtype)
    img = torch.rand(1, 1, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(0))
    tiny = img.clone()
    tiny[0, 0, 0, :3] = torch.tensor([fi.tiny / fi.eps / 2, -fi.tiny / fi.eps / 2, fi.tiny], dtype=dtype)
    zeroed = tiny.clone()
    zeroed[0, 0, 0, :3] = 0.0
    torch.testing.assert_close(A(tiny), A(zeroed), rtol=0, atol=0)
    lone = torch.zeros_like(img)
    lone[0, 0, 4, 4] = fi.tiny / fi.eps * 4  # above the threshold: transformed as it is; an eighth of it is not
    both = Interferometer(uv.expand(2, -1, -1), 8, psize)  # one coverage for a batch: the shared-table path
    for op, speck in ((A, lone), (both, torch.cat([lone, lone]))):
        assert op(speck).abs().max() > 0 and not op(speck / 8).abs().max() > 0
        assert not op((speck / 8).requires_grad_()).abs().max() > 0  # the straight-through path too
    nan = img.clone()
    nan[0, 0, 3, 3] = float("nan")
    assert A(nan).isnan().all()
    x = tiny.clone().requires_grad_()
    w = torch.randn(A.oshape, dtype=dtype.to_complex(), generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(torch.vdot(A(x).flatten(), w.flatten()).real, x)
    torch.testing.assert_close(grad, A.H(w), rtol=1e-5, atol=1e-6 * A.H(w).abs().max().item())
    torch.testing.assert_close(A(x).detach(), A(zeroed))
