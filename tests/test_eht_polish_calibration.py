"""The per-sample data-consistency step (eht_polish) and the split-conformal ring intervals (eht_calibration)."""

import dataclasses
import math

import pytest
import torch

from ambient_science.metrics.eht import neighbour_max
from ambient_science.operators.interferometry import uas_to_rad
from ambient_science.operators.rml import blur
from ambient_science.pipelines import eht_calibration as cal
from ambient_science.pipelines import eht_reconstruct as rec
from ambient_science.pipelines.eht import closure_observation, held_out_observations
from ambient_science.pipelines.eht_likelihood import ClosureLikelihood
from ambient_science.pipelines.eht_polish import polish


def _likelihood(samples: int):
    case = held_out_observations(1, 16, 128.0, seed=0)[0]
    psize = 128.0 / 16 * math.pi / 180 / 3600 / 1e6
    lik = ClosureLikelihood([case.obs], [closure_observation(case.obs)], [1.0], 16, psize, samples=samples)
    return lik, torch.as_tensor(case.truth, dtype=torch.float32).view(1, 1, 16, 16) * lik.scale


def test_polish_is_per_sample_a_far_sample_does_not_hold_back_a_near_one():
    lik, truth = _likelihood(2)
    flat = torch.full_like(truth, float(truth.sum()) / 256)
    start = torch.cat([0.9 * truth + 0.1 * flat, flat])
    out = polish(lik, start, 1.0, 60)
    chi0, chi1 = lik.chi_squared(start), lik.chi_squared(out)
    assert out.shape == start.shape and bool((out > 0).all())
    assert bool((chi1["cphase"] < chi0["cphase"]).all())


def test_polish_stops_at_the_discrepancy_level():
    lik, truth = _likelihood(1)
    flat = torch.full_like(truth, float(truth.sum()) / 256)
    free = lik.chi_squared(polish(lik, flat, 100.0, 150))
    stopped = lik.chi_squared(polish(lik, flat, 100.0, 150, stop=5.0))
    assert float(stopped["cphase"]) <= 5.0 and float(stopped["logcamp"]) <= 5.0
    assert float(stopped["cphase"] + stopped["logcamp"]) > float(free["cphase"] + free["logcamp"])


def test_fit_rounds_restart_non_fitting_samples_from_a_blurred_copy(monkeypatch):
    """A sample above the fit range is re-polished from its blurred copy (flux kept); a fitting one is left alone."""
    lik, truth = _likelihood(2)
    flat = torch.full_like(truth, float(truth.sum()) / 256)
    chi = {"cphase": torch.tensor([5.0, 1.0]), "logcamp": torch.tensor([1.0, 1.0])}
    monkeypatch.setattr(lik, "chi_squared", lambda x: chi)
    starts = []

    def fake_polish(lik_, x_ref, r, iterations, cfg):
        starts.append(x_ref.clone())
        chi["cphase"] = torch.tensor([1.0, 1.0])  # fits after one round
        return x_ref + 1.0

    monkeypatch.setattr(rec, "_polish", fake_polish)
    x = torch.cat([truth, flat])
    cfg = dataclasses.replace(rec.SamplerSettings(), fit_rounds=3, fit_blur_uas=12.0)
    out = rec._fit_rounds(lik, x, cfg)
    assert len(starts) == 1  # one round: then both fit
    torch.testing.assert_close(starts[0], blur(x, uas_to_rad(12.0) / lik.A.pixel_size))
    torch.testing.assert_close(out[0], starts[0][0] + 1.0)  # the non-fitting sample: restarted
    torch.testing.assert_close(out[1], flat[0])  # the fitting one: unchanged
    torch.testing.assert_close(starts[0].sum((1, 2, 3)), x.sum((1, 2, 3)))  # the blur keeps the flux
    assert float(starts[0][0].amax()) < float(truth.amax())


def test_neighbour_max_excludes_the_pixel_itself():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 3.0
    nb = neighbour_max(x, fill=0.0)
    assert float(nb[0, 0, 2, 2]) == 0.0 and float(nb[0, 0, 1, 1]) == 3.0 and float(nb[0, 0, 0, 0]) == 0.0


def test_conformal_factor_and_coverage():
    iv = {"median": 40.0, "lo68": 39.0, "hi68": 42.0, "lo95": 38.0, "hi95": 44.0}
    assert cal.score(43.0, iv, "68", "diameter_uas") == pytest.approx(1.5)
    assert cal.score(38.0, iv, "68", "diameter_uas") == pytest.approx(2.0)
    wide = cal.apply(iv, 2.0, "diameter_uas")
    assert (wide["lo68"], wide["hi68"], wide["lo95"], wide["hi95"]) == (38.0, 44.0, 36.0, 48.0)
    bimodal = {"median": 39.0, "lo68": 21.0, "hi68": 40.5, "lo95": 20.3, "hi95": 42.2}  # real M87's samples
    assert cal.apply(bimodal, 2.9, "diameter_uas")["lo68"] == 0.0  # a diameter is never negative
    # n = 4 scores: the ceil(5 * 0.68) = 4th smallest
    assert cal.factors({"d": [0.5, 3.0, 1.0, 2.0]}) == {"d": 3.0}
    assert cal.factors({"d": [1.0]}) == {"d": math.inf}
    pa = {"median": 350.0, "lo68": 340.0, "hi68": 360.0, "lo95": 330.0, "hi95": 370.0}
    assert cal.score(10.0, pa, "68", "pa_deg") == pytest.approx(2.0)
    assert cal.inside(5.0, cal.apply(pa, 20.0, "pa_deg"), "95", "pa_deg")  # >= 360 degrees: every PA


def test_cross_fit_learns_on_the_other_group_only():
    def case(group, truth):
        iv = {"median": 40.0, "lo68": 39.0, "hi68": 41.0, "lo95": 38.0, "hi95": 42.0}
        pa = {"median": 0.0, "lo68": -10.0, "hi68": 10.0, "lo95": -20.0, "hi95": 20.0}
        return {"split": group, "truth": {"diameter_uas": truth, "pa_deg": 0.0},
                "raw": {"diameter_uas": iv, "pa_deg": pa}}  # fmt: skip

    rows = [case("a", 43.0)] * 3 + [case("b", 40.5)] * 3  # 3 per group: the ceil(4 * 0.68) = 3rd smallest
    out = cal.cross_fit_coverage(rows)
    assert out["raw"]["diameter_uas_in68"] == 0.5
    assert out["factors_by_held_out_group"]["a"]["diameter_uas"] == pytest.approx(0.5)  # learned on b
    assert out["calibrated_cross_fit"]["diameter_uas_in68"] == 0.5  # a stays out (factor 0.5), b is in (factor 3)


def test_card_entry_is_written_beside_untouched_weights(tmp_path):
    import json
    import shutil

    from ambient_science import pretrained
    from ambient_science.sampling.prior import load_prior

    src = pretrained.path("black-hole-eht2017-32")
    shutil.copytree(src, tmp_path / "p")
    conformal = {"factors_all": {"diameter_uas": 2.5, "pa_deg": 1.5}, "cases": 12,
                 "raw": {"diameter_uas_in68": 0.25}, "calibrated_cross_fit": {"diameter_uas_in68": 0.6}}  # fmt: skip
    entry = cal.card_entry(conformal, command="python benchmarks/eht_out_of_family.py", results="r.json")
    cal.write_card(tmp_path / "p", entry)
    card = json.loads((tmp_path / "p" / "prior.json").read_text())["card"]
    assert card["calibration"]["factors"] == {"diameter_uas": 2.5, "pa_deg": 1.5} and card["calibration"]["cases"] == 12
    prior = load_prior(tmp_path / "p")  # the weights' checksum still holds
    assert prior.config["card"]["calibration"]["factors"]["pa_deg"] == 1.5
