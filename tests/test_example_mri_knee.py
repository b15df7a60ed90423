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
    stages = metrics["stages"]  # wall and CPU seconds per stage (issue #21: where the example's time goes)
    assert {"volumes", "prepare", "train", "figure"} <= set(stages)
    assert any(k.startswith("evaluate R=") for k in stages)  # per R, or "evaluate R=4+8" side by side
    assert all(v["wall_s"] >= 0 and v["cpu_s"] >= 0 for v in stages.values())
    # --prior takes the shipped prior's place (rows without the suffix); --no-training skips the in-run prior
    again = tmp_path / "again"
    prior = out / "train"
    cmd = [*cmd[:-3], "--out", str(again), "--no-progress", "--no-training", "--prior", str(prior)]
    subprocess.run(cmd, check=True, timeout=300)
    metrics = json.loads((again / "metrics.json").read_text())
    assert set(metrics["test"]["4"]) == {"zero_filled", "l1_wavelet", "ambient_one_step", "ambient_dps"}
    assert metrics["train"]["ambient"]["source"] == str(prior) and "ambient_this_run" not in metrics["train"]
    assert list((out / "train" / "checkpoints").glob("checkpoint-*"))
    # a second run of the same command reuses the finished training (it never writes over it, never fails on it)
    ckpts = sorted(p.name for p in (out / "train" / "checkpoints").glob("checkpoint-*"))
    first = [sys.executable, str(ROOT / "examples" / "mri_knee.py"), "--quick", "--out", str(out), "--no-progress"]
    done = subprocess.run(first, check=True, timeout=300, capture_output=True, text=True)
    assert "already holds this example's training run" in done.stdout + done.stderr
    assert sorted(p.name for p in (out / "train" / "checkpoints").glob("checkpoint-*")) == ckpts
    # the training file holds undersampled k-space only: zero energy outside its masks
    with h5py.File(out / "data" / "train_r4_16.h5") as f:
        assert (
            f["y"].shape[0] == len(f["params"]["mask"])
            and not (f["y"][:] * (1 - f["params"]["mask"][:][:, None, None])).any()
        )


@pytest.mark.slow
def test_quick_multicoil_run_trains_through_sense_and_adds_the_sense_baselines(tmp_path):
    out = tmp_path / "mc"
    cmd = [sys.executable, str(ROOT / "examples" / "mri_knee.py"), "--quick", "--coils", "4", "--out", str(out),
           "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, check=True, timeout=300, capture_output=True, text=True)
    assert "single-coil synthetic data; this run's volumes have 4 coils" in done.stdout  # shipped prior skipped
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["coils"] == 4 and "ambient" not in metrics["train"]
    expected = {"zero_filled", "zero_filled_rss", "cg_sense", "l1_wavelet", "ambient_one_step_this_run",
                "ambient_dps_this_run"}  # fmt: skip
    for R in ("4", "8"):
        assert set(metrics["test"][R]) == expected
        assert all(row["psnr"] == row["psnr"] and row["psnr"] > 0 for row in metrics["test"][R].values())
    assert (out / "reconstructions.png").stat().st_size > 10_000
    with h5py.File(out / "data" / "train_r4_16_4coils.h5") as f:  # SENSE data: k-space per coil, maps per slice
        assert f["y"].shape[1] == 4 and f["params"]["coil_maps"].shape[1:] == (4, 16, 16)
        assert not (f["y"][:] * (1 - f["params"]["mask"][:][:, None, None])).any()
    assert list((out / "data" / "synthetic").glob("*-4coils"))
