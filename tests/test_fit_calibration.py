"""Calibrating the fit test of your own prior: ``pipelines.fit_calibration`` and ``ambient-science calibrate-fit``."""

import json
import shutil

import pytest
import torch

from ambient_science import pretrained
from ambient_science.cli import main
from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.pipelines.fit_calibration import L1_LAMS, calibrate_fit, validation_scores, write_fit_entry
from ambient_science.pipelines.mri import prepare_volumes
from ambient_science.pipelines.mri_eval import targets_path
from ambient_science.sampling.fit import calibrate_threshold, fit_settings
from ambient_science.sampling.prior import load_prior

PRIOR = "mri-knee-synthetic-r4-ambient"


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    """16 SYNTHETIC knee validation records at R = 4 on the shipped prior's 64² grid, with targets."""
    root = tmp_path_factory.mktemp("fitcal")
    files = write_synthetic_knee_dataset(root / "raw", 2, seed=20_000, recon_size=(128, 128), num_slices=8)
    path = prepare_volumes(files, root / "val_r4_64.h5", acceleration=4, resolution=64, seed=3, targets=True)
    return path


@pytest.fixture
def prior_dir(tmp_path):
    """A copy of the shipped prior whose card holds only an R = 8 calibration (as a user's export might)."""
    dest = tmp_path / "mine"
    shutil.copytree(pretrained.path(PRIOR), dest)
    meta = json.loads((dest / "prior.json").read_text())
    meta["fit"] = {"threshold": {"8": 0.05}, "fallback_l1_lam": {"8": 0.001}}
    (dest / "prior.json").write_text(json.dumps(meta))
    return dest


def test_threshold_is_the_margin_times_the_quantile_of_the_validation_scores(validation, prior_dir):
    prior = load_prior(prior_dir)
    key, scores, _ = validation_scores(prior, validation, seed=0)
    assert key == "4" and scores.shape == (16,) and bool((scores > 0).all())
    entry = calibrate_fit(prior, [validation], margin=1.25, quantile=0.9, min_records=16)
    assert entry["threshold"] == {"4": round(1.25 * calibrate_threshold(scores, 0.9), 4)}
    assert entry["validation_scores"]["4"] == [round(float(s), 4) for s in scores]
    assert "16 records at R = 4" in entry["calibration"] and "fallback_l1_lam" not in entry
    with pytest.raises(ValueError, match="at least 17"):
        calibrate_fit(prior, [validation], min_records=17)


def test_cli_writes_the_entry_keeps_other_accelerations_and_refuses_to_overwrite(validation, prior_dir, capsys):
    argv = ["calibrate-fit", "--prior", str(prior_dir), "--measurements", str(validation), "--quantile", "0.9"]
    truth = ["--truth", str(targets_path(validation))]
    assert main([*argv, *truth]) == 0
    fit = json.loads((prior_dir / "prior.json").read_text())["fit"]
    assert set(fit["threshold"]) == {"4", "8"} and fit["threshold"]["8"] == 0.05  # R = 8 kept
    assert fit["fallback_l1_lam"]["8"] == 0.001 and fit["fallback_l1_lam"]["4"] in L1_LAMS
    assert fit_settings(load_prior(prior_dir))["threshold"] == fit["threshold"]  # what reconstruct() reads
    assert "R = 4: 16 records" in capsys.readouterr().out

    before = (prior_dir / "prior.json").read_text()
    assert main(argv) == 2  # R = 4 is calibrated now: not replaced silently
    assert "--overwrite" in capsys.readouterr().err
    assert (prior_dir / "prior.json").read_text() == before
    assert main([*argv, "--margin", "2", "--overwrite"]) == 0
    again = json.loads((prior_dir / "prior.json").read_text())["fit"]
    assert again["threshold"]["4"] > fit["threshold"]["4"] and again["fallback_l1_lam"] == fit["fallback_l1_lam"]


def test_cli_dry_run_writes_nothing_and_a_checkpoint_is_never_rewritten(validation, prior_dir, tmp_path, capsys):
    before = (prior_dir / "prior.json").read_text()
    argv = ["calibrate-fit", "--measurements", str(validation), "--quantile", "0.9"]
    assert main([*argv, "--prior", str(prior_dir), "--dry-run"]) == 0
    assert "dry run: nothing written" in capsys.readouterr().out
    assert (prior_dir / "prior.json").read_text() == before
    assert main([*argv, "--prior", str(tmp_path / "not-a-prior")]) == 2
    assert "not an exported prior" in capsys.readouterr().err
    assert main([*argv, "--prior", str(prior_dir), "--truth", "a.h5", "b.h5"]) == 2
    assert "expected one each" in capsys.readouterr().err


def test_write_refuses_a_single_threshold_without_overwrite(prior_dir):
    meta = json.loads((prior_dir / "prior.json").read_text())
    meta["fit"] = {"threshold": 0.04}
    (prior_dir / "prior.json").write_text(json.dumps(meta))
    entry = {"threshold": {"4": 0.05}, "levels": [0.5, 1.0], "repeats": 2, "fraction": 0.3, "num_draws": 4,
             "calibration": "test"}  # fmt: skip
    with pytest.raises(FileExistsError, match="every acceleration"):
        write_fit_entry(prior_dir, entry)
    assert write_fit_entry(prior_dir, entry, overwrite=True) == {"threshold": 0.04}
    assert json.loads((prior_dir / "prior.json").read_text())["fit"]["threshold"] == {"4": 0.05}


def test_a_prior_without_a_drop_fraction_family_is_refused(validation, prior_dir, monkeypatch):
    prior = load_prior(prior_dir)
    config = prior.family.config()
    config.pop("drop_fraction")
    monkeypatch.setattr(prior.family, "config", lambda: config)
    with pytest.raises(ValueError, match="further corrupts"):
        validation_scores(prior, validation)
    assert torch.is_tensor(validation_scores(load_prior(prior_dir), validation, indices=[0, 1])[1])
