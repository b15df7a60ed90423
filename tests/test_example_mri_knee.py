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
    assert metrics["train"]["acceleration"] == 4 and metrics["train"]["steps"] == 3
    assert metrics["train"]["synthetic"] is True and metrics["train"]["images_seen"] == 12
    for R in ("4", "8"):
        assert set(metrics["test"][R]) == {"zero_filled", "l1_wavelet", "ambient_one_step", "ambient_dps"}
        for row in metrics["test"][R].values():
            assert {"psnr", "ssim", "nmse"} <= set(row) and all(row[k] == row[k] for k in ("psnr", "ssim", "nmse"))
    assert (out / "reconstructions.png").stat().st_size > 10_000
    assert list((out / "train" / "checkpoints").glob("checkpoint-*"))
    # the training file holds undersampled k-space only: zero energy outside its masks
    with h5py.File(out / "data" / "train_r4_16.h5") as f:
        assert (
            f["y"].shape[0] == len(f["params"]["mask"])
            and not (f["y"][:] * (1 - f["params"]["mask"][:][:, None, None])).any()
        )
