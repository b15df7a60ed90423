"""The MRI pipeline's API (ambient_science.pipelines.mri / mri_eval) on a tiny synthetic volume: sources,
measurement files, held-out batch, baselines and metrics; the run's option checks."""

from __future__ import annotations

import pytest
import torch

from ambient_science.pipelines import mri
from ambient_science.pipelines.mri_eval import evaluate, format_table, held_out_batch, targets_path, volume_metrics


@pytest.fixture(scope="module")
def test_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("mri")
    preset = mri.PRESETS["quick"]
    train, test = mri.source_volumes(out, preset, with_train=False, log=lambda msg: None)
    assert train == [] and len(test) == preset.test_volumes
    path = mri.prepare_volumes(test, out / "test_r4.h5", acceleration=4, resolution=preset.resolution, seed=1,
                               targets=True)  # fmt: skip
    return path


def test_prepare_volumes_writes_measurements_and_targets_once(test_file):
    assert test_file.is_file() and targets_path(test_file).is_file()
    mtime = test_file.stat().st_mtime_ns
    again = mri.prepare_volumes([], test_file, acceleration=4, resolution=16, seed=1, targets=True)
    assert again == test_file and test_file.stat().st_mtime_ns == mtime  # reused, not rewritten


def test_held_out_batch_and_baselines(test_file):
    batch = held_out_batch(test_file, test_slices=2)
    assert batch.truth.shape == (2, 16, 16) and batch.sigma.shape == (2, 1, 1, 1)
    assert batch.volume.tolist() == [0, 0] and batch.y.shape == batch.A(torch.zeros(2, 1, 16, 16)).shape
    metrics, images = evaluate({}, test_file, test_slices=2, l1_lams=(1e-3, 1e-2), progress=False)
    assert set(metrics) == {"zero_filled", "l1_wavelet"} and metrics["l1_wavelet"]["lam"] in (1e-3, 1e-2)
    assert set(images) == {"truth", "zero_filled", "l1_wavelet"}
    assert volume_metrics(batch.truth, batch.truth, batch.volume)["nmse"] == 0.0
    table = format_table({"4": metrics})
    assert table.splitlines()[0].startswith("method") and "zero_filled" in table


def test_source_volumes_needs_two_fastmri_files(tmp_path):
    (tmp_path / "only.h5").touch()
    with pytest.raises(FileNotFoundError, match="at least 2 fastMRI"):
        mri.source_volumes(tmp_path / "out", mri.PRESETS["gpu"], data=tmp_path)


def test_knee_run_options_are_checked():
    assert mri.shipped_prior_fits("cpu", None) and not mri.shipped_prior_fits("quick", None)
    assert not mri.shipped_prior_fits("cpu", "/data/fastmri")
    assert mri.KneeRun(rank=0).test_accelerations == (4, 8)
    with pytest.raises(ValueError, match="preset 'tiny'"):
        mri.KneeRun(preset="tiny")
    with pytest.raises(ValueError, match="no prior to evaluate"):
        mri.KneeRun(preset="quick", train_here=False)  # no shipped prior fits the quick grid
    with pytest.raises(ValueError, match="no prior to evaluate"):
        mri.KneeRun(train_here=False, use_shipped=False)
    assert mri.KneeRun(preset="quick", train_here=False, prior="some/checkpoint").prior == "some/checkpoint"
    assert mri.shipped_prior("mri-knee-synthetic-r4", "gpu", log=lambda msg: None) is None


def test_knee_run_coils_option_is_checked():
    assert not mri.shipped_prior_fits("cpu", None, coils=8) and mri.shipped_prior_fits("cpu", None, coils=None)
    assert mri.KneeRun(coils=8, rank=0).coils == 8
    with pytest.raises(ValueError, match="coils 0: expected None"):
        mri.KneeRun(coils=0)
    with pytest.raises(ValueError, match="applies to the synthetic volumes"):
        mri.KneeRun(coils=8, data="/data/fastmri")
    with pytest.raises(ValueError, match=r"no prior to evaluate.*coils=8"):
        mri.KneeRun(coils=8, train_here=False)  # the shipped priors are single-coil
    lines = []
    assert mri.shipped_prior("mri-knee-synthetic-r4", "cpu", coils=8, log=lines.append) is None
    assert "single-coil synthetic data; this run's volumes have 8 coils" in lines[0]
    with pytest.raises(ValueError, match="applies to the synthetic volumes"):
        mri.source_volumes("unused", mri.PRESETS["quick"], data="/data/fastmri", coils=4)


def test_a_clean_image_prior_gets_a_dps_row_and_no_one_step_row(test_file):
    """An EM prior (family 'clean', ``A = I``) is labelled ``em`` and is evaluated by A-DPS only: its network never
    saw a mask, so the one-step estimate through the test mask would mean nothing."""
    from ambient_science.operators import CleanFamily
    from ambient_science.sampling.prior import Prior

    class Half(torch.nn.Module):
        def forward(self, x, sigma, cond=None, project=None):
            return 0.5 * x

    prior = Prior(Half(), CleanFamily((1, 16, 16), is_complex=True))
    prior.config = {"train": {"method": "em"}, "sampler": {"dps": {"steps": 2, "num_samples": 1}}}
    assert mri.prior_label(prior) == "em"
    metrics, images = evaluate({"em": prior}, test_file, test_slices=2, l1_lams=(1e-3,), progress=False)
    assert "em_dps" in metrics and "em_dps_std" in images and "em_one_step" not in images
    assert torch.isfinite(images["em_dps"]).all()
