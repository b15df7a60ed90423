"""Bring your own images: a stack of magnitude images -> the same measurement file as fastMRI data.

``ambient-science prepare images SOURCE -o OUT.h5 --acceleration R`` (and :func:`prepare_images`) read
magnitude images, simulate single-coil k-space from them exactly as the synthetic knee data are simulated
(:mod:`ambient_science.datasets.synthetic_knee`, :mod:`ambient_science.datasets.prepare`), and write

* ``OUT.h5``: the measurement file of the training volumes (undersampled k-space only, ``masks_per_slice``
  masks per slice, the family, ``sigma_n``), readable by ``ambient-science train``;
* ``OUT_heldout.h5`` and ``OUT_heldout_targets.h5``: the held-out volumes (the last ``holdout`` fraction, split
  by volume, one mask per slice) and their fully sampled references, for ``ambient-science reconstruct``.

Sources (``SOURCE`` may be several): NIfTI ``.nii``/``.nii.gz`` (needs ``nibabel``, an optional extra; one
volume per file, slices along the last spatial axis), ``.npy`` (``(H, W)``, ``(S, H, W)`` one volume, or
``(V, S, H, W)`` volumes), ``.npz`` (one volume per array, by key), or a folder of ``.png`` files (one volume,
slices in name order; sub-folders of PNGs are one volume each). Colour images are averaged to grey.

The simulation, per volume (documented numbers are the defaults):

1. grid: each slice resized to ``resolution × resolution`` (bilinear, antialiased; default: kept), the
   volume divided by its maximum magnitude;
2. phase: a smooth random phase ``π(c₀u + c₁v + ½c₂uv + 0.3c₃u² + 0.2c₄v²) + 0.3c₅z``, ``c ~ N(0, 0.5²)`` per
   volume (``u, v ∈ [−1, 1)``, ``z`` the slice position in ``[−0.85, 0.85]``), the form of the synthetic knee;
3. k-space ``fft2c`` plus complex white noise, real and imaginary parts each ``N(0, (noise_level/√2)²)``;
4. masks from :class:`~ambient_science.operators.mri.CartesianMRIFamily` (``mask_kind``, ``acceleration``,
   ``center_fraction``: 0.08 for ``R ≤ 4``, 0.04 above, fastMRI's pairs), seeded by ``(seed, volume, slice,
   mask)``; or the caller's own masks (:func:`measurements_from_kspace`);
5. normalisation by the 99th percentile of the volume's zero-filled magnitude (``params["scale"]``), and
   ``sigma_n`` the noise std in those units: as :func:`~ambient_science.datasets.prepare.prepare_fastmri`.

From arrays: :func:`measurements_from_images` (magnitude images) and :func:`measurements_from_kspace` (your
own k-space, optionally your own masks) return the records; :func:`write_records` writes them.

    >>> import numpy as np
    >>> images = np.random.default_rng(0).random((2, 3, 16, 16))  # 2 volumes of 3 slices
    >>> rec = measurements_from_images(images, acceleration=4, seed=0)
    >>> tuple(rec["y"].shape), tuple(rec["params"]["mask"].shape), rec["volume"].tolist()
    ((6, 1, 16, 16), (6, 16), [0, 0, 0, 1, 1, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ambient_science.datasets.measurements import save_measurements
from ambient_science.datasets.prepare import _save_targets
from ambient_science.operators.mri import CartesianMRIFamily, fft2c, ifft2c

__all__ = [
    "IMAGE_SUFFIXES",
    "default_center_fraction",
    "load_image_volumes",
    "measurements_from_images",
    "measurements_from_kspace",
    "prepare_images",
    "simulate_kspace",
    "write_records",
]

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".npy", ".npz", ".png")


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's pairs: 8 % fully sampled centre columns up to ``R = 4``, 4 % above."""
    return 0.08 if acceleration <= 4 else 0.04


# -- reading ------------------------------------------------------------------------------------------
def _as_volume(array: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(array)
    if np.iscomplexobj(a):
        a = np.abs(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(f"{where}: expected images (H, W) or (S, H, W), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: images contain NaN or Inf")
    return a.astype(np.float32)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im, dtype=np.float32)
    return a[..., :3].mean(axis=-1) if a.ndim == 3 else a


def _read_nifti(path: Path) -> np.ndarray:
    try:
        import nibabel
    except ImportError as err:  # an optional extra
        raise ImportError(f"{path}: reading NIfTI needs nibabel (pip install 'ambient-science[nifti]')") from err
    data = np.asarray(nibabel.load(str(path)).get_fdata(), dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D NIfTI volume (X, Y, Z), got shape {data.shape}")
    return np.moveaxis(data, -1, 0)  # slices along the last spatial axis


def load_image_volumes(sources: str | Path | Sequence[str | Path]) -> list[tuple[str, np.ndarray]]:
    """``[(name, (S, H, W) float32 magnitudes), ...]`` from files and folders (formats in the module docs)."""
    items = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    volumes: list[tuple[str, np.ndarray]] = []
    for path in items:
        if not path.exists():
            raise FileNotFoundError(f"image source {path} does not exist")
        if path.is_dir():
            pngs = sorted(path.glob("*.png"))
            subdirs = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("*.png")))
            files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES[:4]))
            if pngs:
                volumes.append((path.name, _stack([_read_png(p) for p in pngs], path)))
            for sub in subdirs:
                volumes.append((sub.name, _stack([_read_png(p) for p in sorted(sub.glob("*.png"))], sub)))
            if files:
                volumes += load_image_volumes(files)
            if not (pngs or subdirs or files):
                raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        elif path.name.endswith((".nii", ".nii.gz")):
            volumes.append((path.name, _as_volume(_read_nifti(path), str(path))))
        elif path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            if a.ndim == 4:
                volumes += [(f"{path.name}[{i}]", _as_volume(v, f"{path}[{i}]")) for i, v in enumerate(a)]
            else:
                volumes.append((path.name, _as_volume(a, str(path))))
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                volumes += [(f"{path.name}[{k}]", _as_volume(z[k], f"{path}[{k}]")) for k in z.files]
        elif path.suffix == ".png":
            volumes.append((path.name, _as_volume(_read_png(path), str(path))))
        else:
            raise ValueError(f"{path}: unsupported image file; expected one of {', '.join(IMAGE_SUFFIXES)}")
    if not volumes:
        raise FileNotFoundError(f"no images found in {[str(p) for p in items]}")
    return volumes


def _stack(slices: list[np.ndarray], where: Path) -> np.ndarray:
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise ValueError(f"{where}: PNG slices of different sizes {sorted(shapes)}; one volume needs one size")
    return _as_volume(np.stack(slices), str(where))


# -- simulation ---------------------------------------------------------------------------------------
def _resize(volume: Tensor, resolution: int | None) -> Tensor:
    if resolution is None or tuple(volume.shape[-2:]) == (resolution, resolution):
        return volume
    return torch.nn.functional.interpolate(
        volume[:, None], size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    )[:, 0].clamp_min(0)


def simulate_kspace(
    volume: np.ndarray | Tensor,
    *,
    resolution: int | None = None,
    noise_level: float = 0.01,
    generator: np.random.Generator,
) -> tuple[Tensor, float]:
    """One volume of magnitudes ``(S, H, W)`` -> fully sampled single-coil k-space ``(S, 1, h, w)`` complex64
    and its noise std per real component (steps 1–3 of the module docs)."""
    mag = _resize(torch.as_tensor(np.asarray(volume), dtype=torch.float32), resolution)
    mag = mag / mag.amax().clamp_min(torch.finfo(torch.float32).tiny)
    S, H, W = mag.shape
    v = ((torch.arange(H) - H // 2) * (2.0 / H))[:, None]
    u = ((torch.arange(W) - W // 2) * (2.0 / W))[None, :]
    c = torch.as_tensor(generator.normal(0, 0.5, size=6), dtype=torch.float32)
    zs = torch.linspace(-0.85, 0.85, S) if S > 1 else torch.zeros(1)
    smooth = math.pi * (c[0] * u + c[1] * v + 0.5 * c[2] * u * v + 0.3 * c[3] * u**2 + 0.2 * c[4] * v**2)
    phase = smooth[None] + 0.3 * c[5] * zs[:, None, None]
    kspace = fft2c(torch.polar(mag, phase))[:, None]
    sigma = noise_level / math.sqrt(2.0)
    if noise_level > 0:
        noise = generator.standard_normal((*kspace.shape, 2)).astype(np.float32) * sigma
        kspace = kspace + torch.view_as_complex(torch.from_numpy(noise))
    return kspace.to(torch.complex64), float(sigma)


def measurements_from_kspace(
    kspace: Sequence[Tensor | np.ndarray] | Tensor | np.ndarray,
    *,
    acceleration: float = 4.0,
    center_fraction: float | None = None,
    mask_kind: str = "random",
    drop_fraction: float = 0.2,
    masks: Sequence[Tensor | np.ndarray] | None = None,
    masks_per_slice: int = 1,
    noise_std: float | Sequence[float] = 0.0,
    seed: int = 0,
    scale_percentile: float = 99.0,
) -> dict[str, Any]:
    """Fully sampled single-coil k-space volumes -> undersampled, normalised records (steps 4–5).

    Args:
        kspace: volumes ``(S, 1, H, W)`` or ``(S, H, W)`` complex (a list), or one array of volumes
            ``(V, S, H, W)``; all on one grid.
        acceleration, center_fraction, mask_kind, drop_fraction: the :class:`CartesianMRIFamily` of the records.
        masks: your own masks, one per volume, ``(S, W)`` columns or ``(S, H, W)``, 0/1 (then
            ``masks_per_slice`` is 1 and nothing is drawn).
        masks_per_slice: masks drawn per slice (records per slice), e.g. 4 for training data.
        noise_std: k-space noise std per real component (per volume or one number), in ``kspace``'s units.
        seed: seeds the masks (volume ``v``, slice ``s``, mask ``m`` -> its own generator).

    Returns:
        ``{"y": (N, 1, H, W) complex64, "params": {"mask", "scale"}, "sigma_n": (N,), "family",
        "volume": (N,) int, "slice": (N,) int, "image": (N, 1, H, W) fully sampled, normalised}``.
    """
    volumes = [torch.as_tensor(np.asarray(k)) for k in kspace]
    volumes = [k[:, None] if k.ndim == 3 else k for k in volumes]
    if not volumes or any(k.ndim != 4 or k.shape[1] != 1 or not k.is_complex() for k in volumes):
        raise ValueError(
            f"kspace: expected complex single-coil volumes (S, [1,] H, W), got {[tuple(k.shape) for k in volumes]}"
        )
    grids = {tuple(k.shape[-2:]) for k in volumes}
    if len(grids) > 1:
        raise ValueError(f"kspace: volumes on different grids {sorted(grids)}; resample them to one grid first")
    H, W = grids.pop()
    cf = default_center_fraction(acceleration) if center_fraction is None else float(center_fraction)
    family = CartesianMRIFamily((1, H, W), acceleration=acceleration, center_fraction=cf, mask_kind=mask_kind,
                                drop_fraction=drop_fraction)  # fmt: skip
    if masks is not None and len(masks) != len(volumes):
        raise ValueError(f"masks: {len(masks)} mask stacks for {len(volumes)} volumes; give one (S, W) per volume")
    if masks is not None:
        masks_per_slice = 1
    if masks_per_slice < 1:
        raise ValueError(f"masks_per_slice must be >= 1, got {masks_per_slice}")
    stds = [float(noise_std)] * len(volumes) if np.ndim(noise_std) == 0 else [float(s) for s in noise_std]
    if len(stds) != len(volumes):
        raise ValueError(f"noise_std: {len(stds)} values for {len(volumes)} volumes")
    out: dict[str, list] = {k: [] for k in ("y", "mask", "scale", "sigma", "volume", "slice", "image")}
    for v, k in enumerate(volumes):
        S = k.shape[0]
        if masks is not None:
            m = torch.as_tensor(np.asarray(masks[v]), dtype=torch.float32)
            if m.shape not in ((S, W), (S, H, W)) or not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(
                    f"masks[{v}]: expected 0/1 values of shape ({S}, {W}) or ({S}, {H}, {W}), got {tuple(m.shape)}"
                )
            mask = m
        else:
            draws = []
            for s in range(S):
                for j in range(masks_per_slice):
                    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + v * 10_007 + s * 101 + j)
                    draws.append(family.sample_masks(1, g)[0])
            mask = torch.stack(draws)
        index = torch.arange(S).repeat_interleave(masks_per_slice)
        kk = k[index]
        observed = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
        y = observed * kk
        zf = ifft2c(y).abs()
        scale = float(torch.quantile(zf.flatten()[:: max(1, zf.numel() // 2_000_000)].double(), scale_percentile / 100))
        if not scale > 0:
            raise ValueError(f"volume {v}: the undersampled data are all zero; nothing to normalise")
        n = len(index)
        out["y"].append((y / scale).to(torch.complex64))
        out["mask"].append(mask)
        out["scale"].append(torch.full((n,), scale))
        out["sigma"].append(torch.full((n,), stds[v] / scale))
        out["volume"].append(torch.full((n,), v))
        out["slice"].append(index)
        out["image"].append((ifft2c(kk) / scale).to(torch.complex64))
    cat = {k: torch.cat(v) for k, v in out.items()}
    return {
        "y": cat["y"],
        "params": {"mask": cat["mask"].to(torch.float32), "scale": cat["scale"].to(torch.float32)},
        "sigma_n": cat["sigma"].to(torch.float32),
        "family": family,
        "volume": cat["volume"],
        "slice": cat["slice"],
        "image": cat["image"],
    }


def measurements_from_images(
    images: Sequence[np.ndarray | Tensor] | np.ndarray,
    *,
    resolution: int | None = None,
    noise_level: float = 0.01,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Magnitude image volumes -> records: :func:`simulate_kspace` per volume (phase and noise drawn from
    ``seed``), then :func:`measurements_from_kspace` (its keywords pass through: ``acceleration``, ``masks``, ...).

    ``images``: a list of ``(S, H, W)`` volumes or one ``(V, S, H, W)`` array.
    """
    rng = np.random.default_rng(int(seed))
    volumes = [_as_volume(np.asarray(v), f"images[{i}]") for i, v in enumerate(images)]
    kspace, stds = zip(*(simulate_kspace(v, resolution=resolution, noise_level=noise_level, generator=rng)
                         for v in volumes))  # fmt: skip
    return measurements_from_kspace(list(kspace), noise_std=list(stds), seed=seed, **kwargs)


def write_records(
    records: dict[str, Any],
    output: str | Path,
    *,
    targets_output: str | Path | None = None,
    names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write records of :func:`measurements_from_kspace` as a measurement file (and, optionally, the fully
    sampled references in the targets format of ``prepare``, one per record)."""
    volumes = records["volume"]
    count = int(volumes.max()) + 1 if volumes.numel() else 0
    names = list(names) if names is not None else [f"volume_{v}" for v in range(count)]
    per_volume = [int((volumes == v).sum()) for v in range(count)]
    meta = {"source": "images", "files": names, "slices_per_file": per_volume, **(metadata or {})}
    out = save_measurements(output, records["y"], records["params"], records["family"], sigma_n=records["sigma_n"],
                            metadata=meta, overwrite=overwrite)  # fmt: skip
    if targets_output is not None:
        image = records["image"]
        table = [(n, c, False) for n, c in zip(names, per_volume)]
        _save_targets(targets_output, image.abs()[:, 0].to(torch.float32), image, table, out, overwrite)
    return out


def prepare_images(
    sources: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    acceleration: float = 4.0,
    center_fraction: float | None = None,
    mask_kind: str = "random",
    drop_fraction: float = 0.2,
    resolution: int | None = None,
    masks_per_slice: int = 1,
    holdout: float = 0.2,
    noise_level: float = 0.01,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Images on disk -> ``OUT.h5`` (training volumes) and ``OUT_heldout.h5`` + ``OUT_heldout_targets.h5``.

    The last ``ceil(holdout · V)`` volumes (in the order read; at least one when ``holdout > 0`` and there are
    two or more volumes) are held out, with one mask per slice; ``holdout = 0`` writes the training file only.
    All volumes must land on one grid (pass ``resolution`` for images of different sizes).

    Returns ``{"train": path, "heldout": path, "heldout_targets": path}`` (the ones written).
    """
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    output = Path(output)
    volumes = load_image_volumes(sources)
    V = len(volumes)
    n_test = 0 if holdout == 0 or V < 2 else min(V - 1, max(1, math.ceil(holdout * V)))
    rng = np.random.default_rng(int(seed))
    sims = [simulate_kspace(a, resolution=resolution, noise_level=noise_level, generator=rng) for _, a in volumes]
    grids = {tuple(k.shape[-2:]) for k, _ in sims}
    if len(grids) > 1:
        raise ValueError(f"images of different sizes {sorted(grids)}: pass resolution (e.g. --resolution 64)")
    common = {"acceleration": acceleration, "center_fraction": center_fraction, "mask_kind": mask_kind,
              "drop_fraction": drop_fraction}  # fmt: skip
    settings = {**common, "resolution": resolution, "noise_level": noise_level, "seed": seed,
                "simulation": "datasets/images.py: smooth random phase, complex white noise, per-volume 99th "
                              "percentile normalisation"}  # fmt: skip
    written: dict[str, Path] = {}
    parts = {"train": (0, V - n_test, masks_per_slice), "heldout": (V - n_test, V, 1)}
    for part, (start, stop, per_slice) in parts.items():
        if stop <= start:
            continue
        chosen = sims[start:stop]
        records = measurements_from_kspace([k for k, _ in chosen], noise_std=[s for _, s in chosen],
                                           masks_per_slice=per_slice, seed=seed + (1 if part == "heldout" else 0),
                                           **common)  # fmt: skip
        path = output if part == "train" else output.with_name(output.name.removesuffix(".h5") + "_heldout.h5")
        targets = None if part == "train" else path.with_name(path.name.removesuffix(".h5") + "_targets.h5")
        written[part] = write_records(records, path, targets_output=targets, overwrite=overwrite,
                                      names=[n for n, _ in volumes[start:stop]],
                                      metadata={**settings, "split": part, "masks_per_slice": per_slice})  # fmt: skip
        if targets is not None:
            written[f"{part}_targets"] = targets
    return written
