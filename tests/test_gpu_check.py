"""The GPU path without a GPU: the preset is one definition, the synthetic fastMRI-layout volume has the right
layout, and ``benchmarks/gpu_check.py --device cpu --tiny`` runs every part and writes its report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ambient_science.datasets.synthetic_knee import (
    compress_coils,
    fastmri_multicoil_knee_volume,
    synthetic_knee_volume,
)
from ambient_science.network import build_network
from ambient_science.pipelines.gpu_preset import GPU_NETWORK, GPU_TRAIN, gpu_network_config, gpu_run_config
from ambient_science.training.config import load_config_file, run_config_from_dict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def _params(cfg) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_network(cfg).parameters())


def test_preset_network_size_is_the_documented_one():
    assert _params(gpu_network_config()) == 28_984_962  # complex image + mask channel (ambient)
    assert _params(gpu_network_config(cond_channels=0)) == 28_984_386  # clean EDM baseline


@pytest.mark.parametrize("name", ["gpu_fastmri_knee_mc.toml", "fastmri_knee_r4.toml"])
def test_configs_carry_the_preset(name):
    config = load_config_file(ROOT / "configs" / name)
    assert config["network"] == GPU_NETWORK
    run_config_from_dict(config)  # parses: no unknown keys
    if name.startswith("gpu_"):
        assert {k: v for k, v in config["train"].items() if k != "out_dir"} == GPU_TRAIN


def test_gpu_run_config():
    cfg = gpu_run_config("data/x.h5", "runs/x", steps=10)
    assert cfg.train.bf16 and cfg.train.channels_last and not cfg.train.compile
    assert cfg.train.out_dir == "runs/x" and cfg.network == GPU_NETWORK and cfg.data.path == "data/x.h5"


def test_fastmri_multicoil_volume_layout_and_compression():
    vol = fastmri_multicoil_knee_volume(3, recon_size=(32, 32), num_slices=2, num_coils=6)
    assert vol["kspace"].shape == (2, 6, 64, 36) and vol["target"].shape == (2, 32, 32)
    same = synthetic_knee_volume(3, recon_size=(32, 32), num_slices=2, num_coils=6)
    assert np.array_equal(vol["kspace"], same["kspace"])  # a preset of the existing generator, same draws
    small = fastmri_multicoil_knee_volume(3, recon_size=(32, 32), num_slices=2, num_coils=6, virtual_coils=3)
    assert small["kspace"].shape == (2, 3, 64, 36) and np.array_equal(small["target"], vol["target"])
    kept = np.sum(np.abs(small["kspace"]) ** 2) / np.sum(np.abs(vol["kspace"]) ** 2)
    assert 0.9 < kept <= 1.0 + 1e-5  # unitary combinations: energy never grows, most of it is kept
    full = compress_coils(vol["kspace"], 6)  # all virtual coils: a unitary change of basis
    assert np.allclose(np.sum(np.abs(full) ** 2), np.sum(np.abs(vol["kspace"]) ** 2), rtol=1e-4)
    with pytest.raises(ValueError, match="num_virtual"):
        compress_coils(vol["kspace"], 7)


def test_bf16_wrapper_and_report_branches_without_a_gpu():
    """The GPU-only code paths that run anywhere: the bf16 network wrapper (CPU autocast), the DDP plan and
    the report of a GPU result (targets met / not met)."""
    net = build_network(gpu_check._net_cfg(gpu_check.TINY, 1))
    wrapped = gpu_check._Bf16(net, torch.device("cpu"))
    x, s, c = torch.randn(2, 2, 8, 8), torch.ones(2), torch.ones(2, 1, 8, 8)
    assert wrapped(x, s, c).dtype == torch.float32
    assert gpu_check._ddp_plan(torch.device("cpu"))["backend"] == "gloo"
    parts = {
        "train_step": {"rows": [{"step": "ambient_bf16", "img_s": 120.0, "ratio": 1.2}]},
        "adps": {"rows": [{"precision": "fp32", "s_per_slice": 12.0}]},
        "ddp": {"error": "Traceback ...\nRuntimeError: boom"},
    }
    met = {t["name"]: t["met"] for t in gpu_check.targets(parts, on_gpu=True)}
    assert list(met.values()) == [True, False, True]
    assert all(t["met"] is None for t in gpu_check.targets(parts, on_gpu=False))
    meta = {"device_name": "GPU X", "on_gpu": True, "command": "c", "seconds": 1.0, "torch": "t", "tiny": False,
            "params": 1}  # fmt: skip
    text = gpu_check.markdown({"meta": meta, "parts": parts, "targets": gpu_check.targets(parts, True)})
    assert "# GPU check: GPU X" in text and "RuntimeError: boom" in text and "| **no** |" in text


@pytest.mark.slow
def test_tiny_cpu_check_runs_every_part(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny"]
    cmd += ["--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = result["parts"]
    assert list(parts) == list(gpu_check.PARTS)
    for name, part in parts.items():
        assert "error" not in part and "skipped" not in part, (name, part)
    assert result["meta"]["on_gpu"] is False and all(t["met"] is None for t in result["targets"])
    assert parts["data"]["coils"] == 4 and parts["data"]["raw_kspace_shape"] == [2, 4, 64, 36]
    assert {r["step"] for r in parts["train_step"]["rows"]} == {"ambient_fp32", "edm_fp32"}
    assert all(r["img_s"] > 0 for r in parts["train_step"]["rows"])
    assert len(parts["bf16_agreement"]["losses_fp32"]) == gpu_check.TINY.agree_steps
    assert parts["adps"]["rows"][0]["s_per_slice"] > 0
    assert parts["sense"]["rel_diff"] < 1e-6
    ddp = parts["ddp"]
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo" and ddp["agree"]
    assert ddp["grad_rel_diff_worst_tensor"] < 1e-4
    text = (tmp_path / "gpu_check.md").read_text()
    assert "Not a GPU run" in text and "## ddp" in text


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch):
    from ambient_science.training.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # an explicit index wins
    with pytest.raises(RuntimeError, match="needs CUDA device 1, but 1 are visible"):
        resolve_device("cuda", local_rank=1)
