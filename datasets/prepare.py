"""``prepare``: raw fastMRI volumes -> a measurement file that holds only undersampled k-space.

For each slice (docs/design.md §7):

1. grid: coil images ``ifft2c(kspace)`` centre-cropped to the recon size (320 × 320 for fastMRI knees),
   optionally downsampled to ``resolution`` by keeping the centre of their k-space (the lower-resolution
   acquisition of the same field of view), re-FFT'd: k-space ``k`` ``(C, h, w)`` on the training grid;
2. undersample: ``y = M ⊙ k`` with a mask drawn from :class:`CartesianMRIFamily` (seeded by
   ``(seed, volume, slice)``; one mask per volume with ``mask_per="volume"``);
3. normalise: divide the volume by ``scale`` = the ``scale_percentile`` percentile of its zero-filled
   magnitude (RSS over coils), computed from the undersampled data only; ``params["scale"]`` keeps it, so a
   reconstruction times ``scale`` is back in the file's units;
4. multi-coil: ESPIRiT maps from the fully sampled centre of ``y`` (computed once, here);
5. write with :func:`save_measurements` (family config, ``y``, ``params = {mask, [coil_maps], scale}``),
   which refuses any energy outside the masks: the file provably holds no fully sampled scan.

Noise: ``sigma_n`` (the noise std of each real and imaginary part of the normalised k-space) comes from
``--sigma-n`` when given, else from the file's ``attrs["noise_std"]`` (the synthetic generator writes it),
else it is estimated from the raw k-space itself (:mod:`ambient_science.datasets.kspace_noise`: real fastMRI
files do not record it). Either way it is carried through the grid and the normalisation, and the file's
metadata ``noise`` lists, per input file, the raw k-space noise std, how it was obtained and the ``sigma_n``.

Optionally, a *separate* reference file (``targets_output``) keeps the fully sampled grid images, for
evaluation only.

Command line::

    ambient-science prepare synthetic-knee data/knee --volumes 8 --recon-size 128
    ambient-science prepare fastmri data/knee -o data/knee_r4.h5 --acceleration 4 --center-fraction 0.08 \\
        --resolution 64 --targets data/knee_r4_targets.h5
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from ambient_science.datasets.fastmri import FastMRIVolume, _h5_paths, _name_seed, image_grid
from ambient_science.datasets.kspace_noise import block_energies, block_size, estimate_noise_std
from ambient_science.datasets.measurements import save_measurements
from ambient_science.operators.coils import espirit_maps
from ambient_science.operators.mri import CartesianMRIFamily, fft2c, ifft2c
from ambient_science.operators.mri_masks import acs_width

__all__ = ["TARGETS_FORMAT", "load_targets", "prepare_fastmri"]

TARGETS_FORMAT = "ambient-science-mri-targets"


def _volume_grid(vol: FastMRIVolume, recon_size, resolution, energies: list[Tensor] | None = None) -> Tensor:
    """Grid k-space of every slice of a volume, ``(S, C, h, w)`` complex64; with ``energies``, each raw slice's
    noise block energies are appended to it (:func:`~ambient_science.datasets.kspace_noise.block_energies`)."""
    size = recon_size or vol.recon_size
    grids = []
    for i in range(vol.num_slices):
        k = vol.kspace(i)
        if energies is not None:
            energies.append(block_energies(k, vol.acquired_columns, _noise_block(vol)))
        grids.append(fft2c(image_grid(k, size, resolution)))
    return torch.stack(grids)


def _noise_block(vol: FastMRIVolume) -> int:
    left, right = vol.acquired_columns
    return block_size(vol.kspace_shape[-2], right - left)


def _raw_noise(vol: FastMRIVolume, sigma_n: float | str, energies: list[Tensor]) -> tuple[float | None, str]:
    """The raw k-space noise std of a volume and where it comes from (None with an explicit ``sigma_n``)."""
    if sigma_n != "auto":
        return None, "given (sigma_n)"
    if "noise_std" in vol.attrs:
        value = float(vol.attrs["noise_std"])
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{vol.path}: attrs['noise_std'] = {value!r}; expected a finite number >= 0")
        return value, "the file's attrs['noise_std']"
    est = estimate_noise_std(energies, _noise_block(vol), where=str(vol.path))
    return est.sigma, f"{est.method}; {100 * est.fraction:.0f} % of {est.blocks} blocks noise-like"


def prepare_fastmri(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    mask_kind: str = "random",
    resolution: int | None = None,
    recon_size: Sequence[int] | None = None,
    drop_fraction: float = 0.2,
    mask_per: str = "slice",
    seed: int = 0,
    scale_percentile: float = 99.0,
    espirit_crop: float = 0.5,
    espirit_kernel_width: int = 6,
    sigma_n: float | str = "auto",
    targets_output: str | Path | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
) -> Path:
    """Convert fastMRI volumes into an undersampled measurement file (steps in the module docstring).

    Args:
        inputs: a directory of ``*.h5``, a file, or a list of them.
        output: the measurement file to write.
        acceleration, center_fraction, mask_kind, drop_fraction: the :class:`CartesianMRIFamily` of the
            file (``drop_fraction`` is its further corruption at training time).
        resolution: training grid side (e.g. 64 for CPU demos); ``None`` keeps the recon size.
        recon_size: ``(h, w)`` crop; default the recon size in each file's header.
        mask_per: ``"slice"`` (a new mask per slice) or ``"volume"`` (fastMRI's validation convention).
        seed: seeds the masks.
        scale_percentile: percentile of the zero-filled magnitude that becomes 1 after normalisation.
        espirit_crop, espirit_kernel_width: ESPIRiT settings (multi-coil). The crop is lower than sigpy's 0.95:
            the narrow ACS bands of small grids lower the top eigenvalue inside the object (to ~0.83 with 3-5
            columns), and 0.95 would then cut holes into the maps.
        sigma_n: known noise std (of each real and imaginary part) of the normalised k-space; ``"auto"``:
            from the files' ``attrs["noise_std"]`` (written by the synthetic generator), else estimated from
            the raw k-space (module docstring), carried through the grid and the normalisation.
        targets_output: optional separate file with the fully sampled grid images (evaluation only).
        device: where ESPIRiT runs (e.g. ``"cuda"`` for 320 × 320 multi-coil data); results come back to CPU.

    Returns:
        The path of the measurement file.
    """
    if mask_per not in ("slice", "volume"):
        raise ValueError(f"mask_per must be 'slice' or 'volume', got {mask_per!r}")
    for out in (output, targets_output):  # before any work
        if out is not None and Path(out).exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    paths = _h5_paths(inputs)
    volumes = [FastMRIVolume(p) for p in paths]
    multicoil = {v.is_multicoil for v in volumes}
    if len(multicoil) > 1:
        raise ValueError(f"inputs mix single- and multi-coil volumes: {[str(v.path) for v in volumes]}")
    is_multicoil = multicoil.pop()
    num_coils = max(v.num_coils for v in volumes) if is_multicoil else None

    if not (sigma_n == "auto" or (isinstance(sigma_n, (int, float)) and math.isfinite(sigma_n) and sigma_n >= 0)):
        raise ValueError(f"sigma_n must be a finite number >= 0 or 'auto', got {sigma_n!r}")
    ys, masks, maps, scales, sigmas, refs, targets, names, noise = [], [], [], [], [], [], [], [], []
    family = None
    for vol in volumes:
        energies: list[Tensor] = []
        k = _volume_grid(vol, recon_size, resolution, energies if sigma_n == "auto" else None)  # (S, C, h, w)
        S, C, h, w = k.shape
        if family is None:
            family = CartesianMRIFamily(
                (1, h, w),
                acceleration=acceleration,
                center_fraction=center_fraction,
                mask_kind=mask_kind,
                drop_fraction=drop_fraction,
                num_coils=num_coils,
            )
        elif family.image_shape[1:] != (h, w):
            raise ValueError(
                f"{vol.path}: grid {(h, w)} differs from earlier volumes {family.image_shape[1:]}; pass recon_size "
                "(and resolution) so every volume lands on the same grid"
            )
        g = torch.Generator()
        mask_list = []
        for s in range(S):
            g.manual_seed(_name_seed(vol.path.name, -1 if mask_per == "volume" else s, seed))
            mask_list.append(family.sample_masks(1, g)[0])
        mask = torch.stack(mask_list)  # (S, w) or (S, h, w)
        observed = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
        y = observed * k
        zf = ifft2c(y).abs().pow(2).sum(dim=1).sqrt()  # RSS of the zero-filled coil images
        scale = float(torch.quantile(zf.flatten()[:: max(1, zf.numel() // 2_000_000)].double(), scale_percentile / 100))
        if not scale > 0:
            raise ValueError(f"{vol.path}: the undersampled data are all zero; nothing to normalise")
        y = y / scale
        if is_multicoil:
            if mask.ndim == 2:
                calib = (h, acs_width(w, center_fraction))
            else:
                calib = (acs_width(h, center_fraction), acs_width(w, center_fraction))
            mps = espirit_maps(y.to(device), calib, kernel_width=espirit_kernel_width, crop=espirit_crop).cpu()
            if C < num_coils:  # pad with silent coils so volumes of different coil counts batch
                pad = (S, num_coils - C, h, w)
                y = torch.cat([y, y.new_zeros(pad)], dim=1)
                mps = torch.cat([mps, mps.new_zeros(pad)], dim=1)
            maps.append(mps)
        ys.append(y.to(torch.complex64))
        masks.append(mask)
        scales.append(torch.full((S,), scale, dtype=torch.float32))
        noise_std, how = _raw_noise(vol, sigma_n, energies)
        if noise_std is not None:  # white k-space noise stays white through the grid; the k-space crop rescales it
            crop_h, crop_w = recon_size or vol.recon_size
            sigma = noise_std * ((h * w) / (crop_h * crop_w)) ** 0.5 / scale
        else:
            sigma = float(sigma_n)
        sigmas.append(torch.full((S,), sigma, dtype=torch.float32))
        noise.append({"file": vol.path.name, "kspace_noise_std": noise_std, "method": how, "sigma_n": sigma})
        names.append((vol.path.name, S, bool(vol.attrs.get("synthetic", False))))
        if targets_output is not None:
            images = ifft2c(k) / scale  # (S, C, h, w) fully sampled grid images
            targets.append(images.abs().pow(2).sum(dim=1).sqrt().to(torch.float32))
            if is_multicoil:
                refs.append((maps[-1][:, :C].conj() * images).sum(dim=1, keepdim=True).to(torch.complex64))
            else:
                refs.append(images.to(torch.complex64))
        vol.close()

    params = {"mask": torch.cat(masks), "scale": torch.cat(scales)}
    if is_multicoil:
        params["coil_maps"] = torch.cat(maps)
    metadata: dict[str, Any] = {
        "source": "fastmri",
        "files": [n for n, _, _ in names],
        "slices_per_file": [s for _, s, _ in names],
        "synthetic": all(syn for _, _, syn in names),
        "acceleration": acceleration,
        "center_fraction": center_fraction,
        "mask_kind": mask_kind,
        "mask_per": mask_per,
        "seed": seed,
        "resolution": resolution,
        "recon_size": list(recon_size) if recon_size is not None else None,
        "normalisation": f"per volume: divided by the {scale_percentile} percentile of the zero-filled RSS "
        "magnitude; params['scale'] maps reconstructions back",
        "coil_maps": "ESPIRiT from the ACS of the undersampled grid k-space" if is_multicoil else None,
        "sigma_n": "noise std per real component of the normalised k-space; per file in 'noise'",
        "noise": noise,
    }
    y_all = torch.cat(ys)
    out = save_measurements(
        output, y_all, params, family, sigma_n=torch.cat(sigmas), metadata=metadata, overwrite=overwrite
    )
    if targets_output is not None:
        _save_targets(targets_output, torch.cat(targets), torch.cat(refs), names, out, overwrite)
    return out


def _save_targets(path, target: Tensor, image: Tensor, names, measurements: Path, overwrite: bool) -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = TARGETS_FORMAT
        f.attrs["note"] = "FULLY SAMPLED reference images for evaluation only; never train on them"
        f.attrs["measurements"] = measurements.name
        f.attrs["files"] = json.dumps([n for n, _, _ in names])
        f.attrs["slices_per_file"] = json.dumps([s for _, s, _ in names])
        f.create_dataset("target", data=target.numpy())
        f.create_dataset("image", data=image.numpy())
    tmp.replace(path)


def load_targets(path: str | Path) -> dict[str, Any]:
    """Read a reference file written by ``prepare_fastmri(..., targets_output=...)``.

    Returns ``{"target": (N, h, w) float32 magnitude/RSS, "image": (N, 1, h, w) complex64 (coil-combined
    with the ESPIRiT maps when multi-coil), "files": [...], "slices_per_file": [...]}``, in the
    normalised units of the measurement file.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != TARGETS_FORMAT:
            raise ValueError(
                f"{path} is not an ambient-science MRI targets file (attrs['format'] != {TARGETS_FORMAT!r})"
            )
        return {
            "target": torch.from_numpy(np.asarray(f["target"])),
            "image": torch.from_numpy(np.asarray(f["image"])),
            "files": json.loads(f.attrs["files"]),
            "slices_per_file": json.loads(f.attrs["slices_per_file"]),
        }
