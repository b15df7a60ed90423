"""examples/black_hole.py end to end in its tiny configuration, and the pieces it adds to the library."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch

from ambient_science.operators.interferometry import InterferometerFamily, density_weights
from ambient_science.pipelines.eht import held_out_observations
from ambient_science.pipelines.eht_setup import QUICK, SHIPPED_REAL, Setup, load_priors, resolve_setup

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "black_hole.py"


@pytest.mark.slow
def test_black_hole_example_quick(tmp_path, monkeypatch):
    out = tmp_path / "bh"
    monkeypatch.setattr(sys, "argv", ["black_hole.py", "--quick", "--out", str(out), "--device", "cpu"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((out / "metrics.json").read_text())
    # --quick runs at 16 px: the shipped prior (32 px) does not fit, the in-run prior's rows are there
    assert set(metrics["test"]) == {"ambient_daps_this_run", "ambient_dps_this_run", "rml", "dirty"}
    assert metrics["train"]["ambient_this_run"]["steps"] == 3 and "ambient" not in metrics["train"]
    for method, row in metrics["test"].items():
        assert set(row) >= {"psnr", "blur_psnr", "nxcorr", "chi2_cphase", "chi2_logcamp"}, method
        assert all(math.isfinite(v) for v in row.values()), (method, row)
    assert metrics["blur_fwhm_uas"] > 0
    assert (out / "black_hole.png").stat().st_size > 0
    assert (out / "train" / "checkpoints" / "latest").is_file()


def test_resolve_setup_overrides_sizes_and_the_inference_operator_of_both_samplers():
    setup = resolve_setup(quick=True, num_test=3, inference_operator="law")
    assert setup.num_test == 3 and setup.npix == QUICK.npix and setup.train_steps == QUICK.train_steps
    assert setup.daps.inference_operator == setup.dps.inference_operator == "law"
    assert resolve_setup() == Setup()
    plain = setup.to_dict()
    assert json.loads(json.dumps(plain)) == plain and plain["daps"]["method"] == "daps"


def test_load_priors_rejects_an_unknown_training_mode_and_a_run_without_prior(tmp_path):
    with pytest.raises(ValueError, match="train must be"):
        load_priors(QUICK, tmp_path, device="cpu", train="sometimes")
    with pytest.raises(ValueError, match="no prior to image with"):
        load_priors(QUICK, tmp_path, device="cpu", train="never", shipped=False)


def test_load_priors_without_training_takes_the_shipped_prior_on_its_own_grid(tmp_path):
    priors, info, setup = load_priors(QUICK, tmp_path, device="cpu", train="never", shipped_name=SHIPPED_REAL)
    assert set(priors) == {"ambient"} and (setup.npix, setup.fov_uas) == (64, 160.0)
    assert info["ambient"]["steps"] > 0


def test_held_out_observations_are_reproducible_and_carry_station_gains():
    a = held_out_observations(2, 16, 128.0, seed=5)
    b = held_out_observations(2, 16, 128.0, seed=5)
    for x, y in zip(a, b, strict=True):
        assert (x.obs.vis == y.obs.vis).all() and (x.truth == y.truth).all()
        assert len(x.obs) >= 50 and math.isclose(x.total_flux, float(x.truth.sum()))
        assert not (x.obs.vis == x.obs_calibrated.vis).all()  # the gains change the imaged data


def test_density_weights_make_the_normal_operator_a_near_projection():
    """The normalised family's AᴴA has eigenvalues of order 1 (the raw operator's are ~K N²)."""
    family = InterferometerFamily(npix=16, fov_uas=128.0, bank_size=2, normalize=True, tadv_s=1200.0)
    A = family.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(A.weight, density_weights(A.uv, A.observed, 16, family.pixel_size))
    v = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    for _ in range(30):  # power iteration: the largest eigenvalue of AᴴA
        v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        v = A.H(A(v))
    lam = v.flatten(1).norm(dim=1)
    assert bool(((lam > 0.5) & (lam < 2.0)).all()), lam
    A_tilde = family.further_corrupt(A, generator=torch.Generator().manual_seed(2))
    assert torch.equal(A_tilde.weight, A.weight)  # rows keep their weights: Ã = B A
    assert torch.allclose(family.make(A.params()).weight, A.weight)


def test_isolated_visibility_has_unit_rows():
    """One visibility far from u = 0: w = √2/N, so its real rows (cos and sin, each of norm² w² N²/2) have unit
    norm; at u = 0 (the row is real, of norm² w² N²) w = 1/N."""
    uv = torch.tensor([[[2e10, 1e10], [0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)  # 3.2, 1.6 cells from -u
    w = density_weights(uv, torch.tensor([[1.0, 1.0, 0.0]]), 16, 1e-11)
    assert math.isclose(float(w[0, 0]), math.sqrt(2) / 16, rel_tol=1e-6)
    assert math.isclose(float(w[0, 1]), 1 / 16, rel_tol=1e-6)
    assert float(w[0, 2]) == 0.0  # not observed


@pytest.mark.slow
def test_black_hole_example_images_a_uvfits_file_and_reports_ring_modes(tmp_path, monkeypatch, capsys):
    """--uvfits end to end on a synthetic ring written as UVFITS (the real M87 file is not in the repository):
    the samples' cube, the ring intervals and their modes in metrics.json, and the printed summary."""
    from ambient_science.datasets.black_holes import record_observation, simulate_measurements
    from ambient_science.datasets.uvfits import write_uvfits

    family = InterferometerFamily(npix=16, fov_uas=160.0, array="eht2017", duration_range_hr=(6.0, 8.0), bank_size=2)
    g = torch.Generator().manual_seed(3)
    sim = simulate_measurements(family, 1, generator=g)
    obs = record_observation(sim.y[0], {k: v[0] for k, v in sim.params.items()}, family)
    path = write_uvfits(obs, tmp_path / "ring.uvfits", ra_deg=187.7, dec_deg=12.39, mjd=57854)
    out = tmp_path / "bh"
    monkeypatch.setattr(sys, "argv", ["black_hole.py", "--quick", "--uvfits", str(path), "--total-flux", "1.0",
                                      "--out", str(out), "--device", "cpu"])  # fmt: skip
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((out / "ring" / "metrics.json").read_text())
    modes = metrics["ring_modes_kept_samples"]
    assert 1 <= len(modes) <= 2 and math.isclose(sum(m["fraction"] for m in modes), 1.0)
    assert all({"diameter_uas", "width_uas", "pa_deg"} <= set(m) for m in modes)
    assert (out / "ring" / "samples.fits").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "ring of the posterior mean: diameter" in printed and "mode of" in printed
