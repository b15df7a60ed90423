"""examples/mri_knee.py end to end in its tiny configuration (--quick): data, prepare, train, reconstruct."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_run_writes_metrics_figure_and_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "examples" / "mri_knee.py"), "--quick", "--out", str(out), "--no-progress"]
    subprocess.run(cmd, check=True, timeout=300)
    metrics = json.loads((out / "metrics.json").read_text())
    train = metrics["train"]
    assert train["acceleration"] == 4 and train["synthetic"] is True
    assert train["ambient_this_run"]["steps"] == 3 and train["ambient_this_run"]["images_seen"] == 12
    assert "ambient" not in train  # the shipped prior fits the cpu preset's grid only: skipped for --quick
    expected = {"zero_filled", "l1_wavelet", "ambient_one_step_this_run", "ambient_dps_this_run"}
    for R in ("4", "8"):
        assert set(metrics["test"][R]) == expected
        for row in metrics["test"][R].values():
            assert {"psnr", "ssim", "nmse"} <= set(row) and all(row[k] == row[k] for k in ("psnr", "ssim", "nmse"))
    assert (out / "reconstructions.png").stat().st_size > 10_000
    # --prior takes the shipped prior's place (rows without the suffix); --no-training skips the in-run prior
    again = tmp_path / "again"
    prior = out / "train"
    cmd = [*cmd[:-3], "--out", str(again), "--no-progress", "--no-training", "--prior", str(prior)]
    subprocess.run(cmd, check=True, timeout=300)
    metrics = json.loads((again / "metrics.json").read_text())
    assert set(metrics["test"]["4"]) == {"zero_filled", "l1_wavelet", "ambient_one_step", "ambient_dps"}
    assert metrics["train"]["ambient"]["source"] == str(prior) and "ambient_this_run" not in metrics["train"]
    assert list((out / "train" / "checkpoints").glob("checkpoint-*"))
    # the training file holds undersampled k-space only: zero energy outside its masks
    with h5py.File(out / "data" / "train_r4_16.h5") as f:
        assert (
            f["y"].shape[0] == len(f["params"]["mask"])
            and not (f["y"][:] * (1 - f["params"]["mask"][:][:, None, None])).any()
        )
