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


def test_card_command_reproduces_the_sampler_settings(bench):
    """The command stored in the prior's card names the --daps / --fit-blur-uas a results file was made with."""
    import dataclasses
    import json

    base = {"prior": "p", "first_image": 2, "images": 1, "seeds": 3, "num_samples": 32}
    cmd = "python benchmarks/eht_out_of_family.py --prior p --first-image 2 --images 1 --seeds 3 --num-samples 32"
    assert bench._command(base) == cmd  # an older results file: no settings recorded
    example = dataclasses.replace(bench.Setup().daps, inference_operator="test")
    daps = json.loads(json.dumps(dataclasses.asdict(example)))
    assert bench._command({**base, "daps": daps}) == cmd  # the example's own settings: nothing to add
    changed = {**daps, "map_below": 0.0, "resample_at": [0.5], "fit_blur_uas": 12.0}
    assert bench._command({**base, "daps": changed}) == (
        cmd + ' --fit-blur-uas 12 --daps \'{"map_below": 0.0, "resample_at": [0.5]}\''
    )


def test_write_card_pools_the_cases_of_several_results_files(bench, tmp_path):
    """--write-card A B: the calibration is learned on the cases of both runs (same prior and DAPS settings), the
    card names both commands; runs of different settings are refused."""
    import json

    def case(split, image, truth):
        raw = {"median": 40.0, "lo68": 39.0, "hi68": 41.0, "lo95": 38.0, "hi95": 42.0}
        pa = {"median": 180.0, "lo68": 170.0, "hi68": 190.0, "lo95": 160.0, "hi95": 200.0}
        cal = {"n_samples": 32, "truth": {"diameter_uas": truth, "pa_deg": 185.0},
               "raw": {"diameter_uas": raw, "pa_deg": pa}, "d_in68": True, "d_in95": True, "pa_in68": True,
               "pa_in95": True}  # fmt: skip
        return {**_row(split, "m87_2017", 25.0, 23.0), "image": image, "calibration": cal}

    base = {"prior": "p", "images": 1, "seeds": 1, "num_samples": 32, "daps": {"map_below": 1.0}}
    paths = []
    for image in (1, 2):
        cases = [case(s, image, 40.0 + k) for s in ("texture", "double_ring") for k in (0.5, 2.0, 4.0)]
        res = {**base, "first_image": image, "cases": cases, "summary": bench.summarise(cases)}
        paths.append(tmp_path / f"r{image}.json")
        paths[-1].write_text(json.dumps(res))
    pooled = bench.pooled_results(paths)
    assert pooled["summary"]["conformal"]["cases"] == 12
    assert "--first-image 1" in pooled["command"] and "--first-image 2" in pooled["command"]
    other = json.loads(paths[1].read_text())
    other["daps"] = {"map_below": 0.0}
    paths[1].write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="another prior or DAPS setting"):
        bench.pooled_results(paths)
