"""``ambient-science reconstruct``: checkpoint + measurement file -> h5, PNG, metrics; and its refusals."""

import json

import h5py
import pytest
import torch

from ambient_science.cli import main
from ambient_science.cli.reconstruct import parse_indices
from ambient_science.datasets.measurements import save_measurements
from ambient_science.operators import PixelMaskFamily

TINY = [
    "--set", "network.model_channels=8", "--set", "network.channel_mult=[1, 2]", "--set", "network.attn_levels=[]",
    "--set", "network.mid_attention=false", "--set", "train.batch_size=4", "--set", "train.progress=false",
    "--set", "train.sample_every=0", "--set", "train.steps=2", "--set", "train.warmup_images=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("recon")
    family = PixelMaskFamily((1, 8, 8), p=0.4, delta=0.2)
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(10, 1, 8, 8, generator=g)
    A = family.sample(10, generator=g)
    data = save_measurements(root / "m.h5", A(x), A.params(), family, sigma_n=0.05)
    with h5py.File(root / "truth.h5", "w") as f:
        f["target"] = x[:, 0].numpy()
    assert main(["train", "--data", str(data), "--out-dir", str(root / "run"), *TINY]) == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("method", ["one_step", "daps", "dps"])
def test_reconstruct_writes_outputs(trained, method, tmp_path):
    out = tmp_path / method
    args = ["reconstruct", "--checkpoint", str(trained / "run"), "--measurements", str(trained / "m.h5"),
            "--out", str(out), "--method", method, "--num-samples", "2", "--steps", "4", "--indices", "0:3",
            "--truth", str(trained / "truth.h5"), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    with h5py.File(out / "reconstructions.h5") as f:
        assert f["mean"].shape == (3, 1, 8, 8) and f["std"].shape == (3, 1, 8, 8)
        assert list(f["index"][:]) == [0, 1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"nmse", "psnr", "ssim"} and all(v == v for v in metrics.values())
    assert (out / "reconstructions.png").stat().st_size > 0
    assert main(args) == 2  # outputs are never overwritten: one line, exit 2


@pytest.mark.slow
def test_reconstruct_warm_start(trained, tmp_path, capsys):
    out = tmp_path / "warm"
    args = ["reconstruct", "--checkpoint", str(trained / "run"), "--measurements", str(trained / "m.h5"),
            "--out", str(out), "--num-samples", "2", "--steps", "4", "--indices", "0:2", "--start", "data",
            "--antithetic", "--sigma-max", "1.5", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "one antithetic pair" in capsys.readouterr().out  # the std's caveat
    with h5py.File(out / "reconstructions.h5") as f:
        settings = json.loads(f.attrs["settings"])
        assert torch.isfinite(torch.from_numpy(f["mean"][:])).all()
    assert settings["start"] == "data" and settings["sigma_max"] == 1.5 and settings["antithetic"] is True
    assert main([*args[:6], str(tmp_path / "bad"), *args[7:-3], "--sigma-max", "-1"]) == 2
    odd = [*args[:6], str(tmp_path / "odd"), *args[7:8], "3", *args[9:]]  # antithetic pairs need an even count
    assert odd[7:9] == ["--num-samples", "3"] and main(odd) == 2


def test_indices_parsing_and_errors():
    assert parse_indices("all", 3) == [0, 1, 2]
    assert parse_indices("1:", 3) == [1, 2]
    assert parse_indices("2,0", 3) == [2, 0]
    with pytest.raises(ValueError, match="the file has 3 records"):
        parse_indices("0,5", 3)
