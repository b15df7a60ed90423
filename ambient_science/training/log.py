"""Training-run outputs besides checkpoints: JSON-lines metrics, a progress bar, and PNG sample grids.

The sample grid shows unconditional samples of the EMA network, drawn with a small deterministic EDM
Heun sampler (Karras et al. 2022, Algorithm 1, schedule Eq. 5) through one fixed inference operator
``Ã_inf`` from the training corruption law (docs/design.md §6): the network always sees ``Ã_infᴴ Ã_inf x``
and ``c(Ã_inf)``. It is a training monitor only; :mod:`ambient_science.sampling.samplers` holds the real samplers.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ambient_science.denoiser import network_denoise
from ambient_science.family import OperatorFamily
from ambient_science.training.losses import image_noise

__all__ = ["MetricsLogger", "heun_samples", "save_image_grid"]


class MetricsLogger:
    """Append one JSON object per line to ``path``; on resume, drop lines from steps after ``resume_step``."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run starts a fresh log
        self._file = open(self.path, "a")  # kept open for the run

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", math.inf))
    except (json.JSONDecodeError, AttributeError):
        return math.inf


def _karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float, device) -> Tensor:
    """``σ_i = (σ_max^(1/ρ) + i/(N−1) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ`` then 0 (EDM Eq. 5)."""
    i = torch.arange(steps, dtype=torch.float64, device=device)
    inv = sigma_max ** (1 / rho) + i / max(steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, inv.new_zeros(1)]).to(torch.float32)


def heun_samples(
    net: nn.Module,
    family: OperatorFamily,
    count: int,
    *,
    steps: int,
    generator: torch.Generator,
    device: torch.device,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
) -> Tensor:
    """Unconditional samples by EDM's deterministic Heun sampler through one fixed ``Ã_inf``.

    ``dx/dσ = (x − D(x; σ)) / σ`` (EDM Eq. 1 with σ(t) = t); ``D(x; σ) = D_θ(Ã_infᴴ Ã_inf x, c(Ã_inf), σ)``.

    Shape: -> ``(count, C, H, W)`` in the family's image dtype.
    """
    A_inf = family.further_corrupt(family.sample(count, generator=generator), generator=generator).to(device)
    sigmas = _karras_sigmas(steps, sigma_min, sigma_max, rho, device)
    x = sigmas[0] * image_noise((count, *family.image_shape), family.image_dtype(), generator).to(device)

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        return network_denoise(net, A_inf.H(A_inf(x)), sigma.expand(count), family, A_inf)

    for s, s_next in itertools.pairwise(sigmas):
        d = (x - D(x, s)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:  # Heun correction (EDM Algorithm 1, lines 7-8)
            d_next = (x_next - D(x_next, s_next)) / s_next
            x_next = x + (s_next - s) * (d + d_next) / 2
        x = x_next
    return x


def save_image_grid(images: Tensor, path: str | Path, *, columns: int | None = None) -> Path:
    """Tile images into one PNG (complex -> magnitude; 3 channels -> RGB; else channel 0), each scaled to [0, 1].

    Shape: ``images (N, C, H, W)``.
    """
    from matplotlib import image as mpimg  # no pyplot: no GUI backend involved

    x = images.detach().to("cpu")
    x = x.abs() if x.is_complex() else x.float()
    x = x if x.shape[1] == 3 else x[:, :1]
    lo = x.flatten(1).quantile(0.005, dim=1)[:, None, None, None]
    hi = x.flatten(1).quantile(0.995, dim=1)[:, None, None, None]
    x = ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    n, c, h, w = x.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
    for k in range(n):
        r, q = divmod(k, cols)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[k]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = grid.permute(1, 2, 0).numpy()
    mpimg.imsave(path, array[..., 0] if c == 1 else array, cmap="gray", vmin=0.0, vmax=1.0)
    return path
