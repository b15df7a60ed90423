"""benchmarks/eht_out_of_family.py: the summary's target check and calibration fractions (no sampling here)."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "eht_out_of_family.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("eht_out_of_family", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(split, track, daps, rml, d68=True):
    met = {"blur_psnr": 0.0, "nxcorr": 0.5, "chi2_cphase": 1.0, "chi2_logcamp": 1.0}
    return {"split": split, "track": track, "daps": {**met, "blur_psnr": daps}, "dps": {**met, "blur_psnr": daps - 1},
            "rml": {**met, "blur_psnr": rml}, "dirty": met,
            "calibration": {"d_in68": d68, "d_in95": True, "pa_in68": False, "pa_in95": True}}  # fmt: skip


def test_summary_target_and_calibration(bench):
    cases = [_row("texture", "m87_2017", 25.0, 23.0), _row("texture", "sparse6", 22.0, 22.5, d68=False)]
    s = bench.summarise(cases)
    assert s["best_diffusion_minus_rml_db"] == {"texture/m87_2017": 2.0, "texture/sparse6": -0.5}
    assert s["mean_gap_db"] == pytest.approx(0.75) and s["target_met"] is False
    assert s["calibration"] == {"d_in68": 0.5, "d_in95": 1.0, "pa_in68": 0.0, "pa_in95": 1.0, "cases": 2}


def test_inside_wraps_angles(bench):
    iv = {"median": 355.0, "lo68": 345.0, "hi68": 365.0}
    assert bench.inside(3.0, iv, "68", "pa_deg") and not bench.inside(20.0, iv, "68", "pa_deg")
