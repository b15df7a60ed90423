"""``ambient-science train``: config file + overrides, --dry-run, training and --resume."""

import json
from pathlib import Path

import pytest
import torch

from ambient_science.cli import main
from ambient_science.datasets.measurements import save_measurements
from ambient_science.operators import PixelMaskFamily
from ambient_science.training.checkpoint import load_checkpoint
from ambient_science.training.config import apply_overrides, load_config_file, run_config_from_dict

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--set", "network.model_channels=8", "--set", "network.channel_mult=[1, 2]", "--set", "network.attn_levels=[1]",
    "--set", "train.batch_size=4", "--set", "train.progress=false", "--set", "train.sample_every=0",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data_file(tmp_path) -> Path:
    family = PixelMaskFamily((1, 8, 8), p=0.4, delta=0.3)
    g = torch.Generator().manual_seed(0)
    A = family.sample(12, generator=g)
    return save_measurements(tmp_path / "toy.h5", A(0.5 * torch.randn(12, 1, 8, 8, generator=g)), A.params(), family)


def test_example_configs_parse():
    for path in sorted((ROOT / "configs").rglob("*.toml")):
        run_config_from_dict(load_config_file(path))


def test_dry_run_prints_the_resolved_config(data_file, capsys):
    config = str(ROOT / "configs" / "pixel_mask_toy.toml")
    assert main(["train", config, "--data", str(data_file), "--set", "train.lr=1e-3", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"]["lr"] == 1e-3 and out["data"]["path"] == str(data_file)
    assert out["resolved"]["family"]["delta"] == 0.1  # [family] override of the file's delta = 0.3
    assert out["resolved"]["network"]["cond_channels"] == 1 and out["resolved"]["network"]["img_channels"] == 1


def test_bad_config_is_a_clear_error(capsys):
    assert main(["train", "--set", "train.lrr=1", "--dry-run"]) == 2
    assert "unknown key(s) ['lrr'] in [train]" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"section\.key=value"):
        apply_overrides({}, ["lr=1"])


def test_train_then_resume(data_file, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--data", str(data_file), "--out-dir", str(out), "--device", "cpu", *SMALL]
    assert main([*common, "--steps", "2"]) == 0
    assert load_checkpoint(out).step == 2
    assert main([*common, "--steps", "4", "--resume"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.step == 4 and ckpt.config["train"]["steps"] == 4
    assert ckpt.config["family"]["delta"] == 0.3  # the file's corruption law travels into the checkpoint


def test_training_errors_are_reported_without_a_traceback(data_file, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "--data", str(data_file), "--out-dir", str(out), "--device", "cpu", *SMALL]
    assert main([*common, "--steps", "1"]) == 0
    assert main([*common, "--steps", "2"]) == 2  # would overwrite the first run's checkpoints
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main([*common, "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
