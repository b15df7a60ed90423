"""The ``gpu`` preset: fastMRI-scale multi-coil knee training and A-DPS sampling, defined once.

What it fixes (issue #20; docs/design.md §7 for the MRI data path):

* data: 320 × 320 multi-coil knee slices (15 coils, as fastMRI's knee scans; optionally compressed to
  ``virtual_coils``), R = 4 random phase-encode columns with an 8 % fully sampled centre, ESPIRiT maps from
  that centre, further corruption dropping 20 % of the observed non-centre columns;
* network: an EDM U-Net with 64 channels at 320², multipliers (1, 2, 2, 4, 4) (levels at 320, 160, 80, 40
  and 20 pixels), two residual blocks per level, self-attention at 40 × 40 and in the 20 × 20 middle block,
  dropout 0.1: **28,984,962 parameters** for a complex image plus its mask channel (28,984,386 for the clean
  EDM baseline without the mask channel). Forward cost at 320²: 337.5 GFLOP per image (``python
  benchmarks/gpu_check.py --describe``: ``torch.utils.flop_counter`` on the meta device), so a training step
  (forward + backward, about 3× the forward) is about 1.0 TFLOP per image, and the issue's 100 images/s needs about
  100 TFLOP/s of bf16. The 128-channel, (1, 1, 2, 2, 4) U-Net used before (75.2 M parameters, 786 GFLOP per image
  forward, counted the same way) would need about 240 TFLOP/s for it;
* training: global batch 32 (split over ``torchrun`` ranks), AdamW at 2e-4 after a 100k-image warm-up,
  EMA half-life 500k images, 3.2 M images (100k steps), bf16 autocast, channels-last weights,
  ``torch.compile`` off by default (``compile=True`` to switch it on);
* sampling: A-DPS with 100 steps and 8 posterior samples per slice, through ``Ã_inf`` = everything observed.

The same numbers are in ``configs/gpu_fastmri_knee_mc.toml`` (a test keeps them equal), the command-line form
of this preset; ``benchmarks/gpu_check.py`` times it.

    >>> cfg = gpu_run_config("data/knee_mc_r4.h5", "runs/knee_mc")
    >>> cfg.train.bf16, cfg.train.channels_last, cfg.network["model_channels"]
    (True, True, 64)
"""

from __future__ import annotations

import copy
from typing import Any

from ambient_science.network import UNetConfig
from ambient_science.training.config import RunConfig, run_config_from_dict

__all__ = [
    "GPU_DATA",
    "GPU_NETWORK",
    "GPU_SAMPLING",
    "GPU_TRAIN",
    "gpu_network_config",
    "gpu_run_config",
]

#: the data of the preset: fastMRI knee geometry and the R = 4 training law
GPU_DATA: dict[str, Any] = {
    "recon_size": (320, 320),
    "num_coils": 15,
    "virtual_coils": None,  # e.g. 8: SVD coil compression before ESPIRiT (synthetic_knee.compress_coils)
    "acceleration": 4.0,
    "center_fraction": 0.08,
    "drop_fraction": 0.2,
    "slices_per_volume": 35,  # a typical fastMRI knee volume (for per-volume times)
}

#: the U-Net (``[network]`` of a training config; the channels come from the operator family)
GPU_NETWORK: dict[str, Any] = {
    "kind": "unet",
    "model_channels": 64,
    "channel_mult": [1, 2, 2, 4, 4],
    "num_blocks": 2,
    "attn_levels": [3],
    "mid_attention": True,
    "dropout": 0.1,
    "sigma_data": 0.5,
}

#: ``[train]`` of the preset (global batch; ``device = "auto"`` picks CUDA when present)
GPU_TRAIN: dict[str, Any] = {
    "images": 3_200_000,
    "batch_size": 32,
    "lr": 2e-4,
    "warmup_images": 100_000,
    "ema_halflife_images": 500_000,
    "checkpoint_every": 2000,
    "sample_every": 5000,
    "device": "auto",
    "bf16": True,
    "channels_last": True,
    "compile": False,
    "num_workers": 4,
}

#: A-DPS settings of the preset (examples/mri_knee.py ``--preset gpu``)
GPU_SAMPLING: dict[str, Any] = {
    "dps_steps": 100,
    "dps_samples": 8,
    "inference_operator": "full",
    "data_consistency": "cg",
    "test_slices": 8,
}


def gpu_network_config(*, complex_image: bool = True, cond_channels: int = 1, **overrides: Any) -> UNetConfig:
    """The preset's U-Net for one complex image (2 real channels) and ``cond_channels`` mask channels."""
    fields = {k: v for k, v in {**GPU_NETWORK, **overrides}.items() if k != "kind"}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return UNetConfig(img_channels=2 if complex_image else 1, cond_channels=cond_channels, **fields)


def gpu_run_config(data_path: str, out_dir: str, **train_overrides: Any) -> RunConfig:
    """The preset as a :class:`RunConfig` for a prepared measurement file (``[train]`` keys overridable)."""
    return run_config_from_dict(
        {
            "data": {"path": str(data_path)},
            "family": {"drop_fraction": GPU_DATA["drop_fraction"]},
            "network": copy.deepcopy(GPU_NETWORK),
            "loss": {"kind": "auto"},
            "train": {**GPU_TRAIN, "out_dir": str(out_dir), **train_overrides},
        }
    )
