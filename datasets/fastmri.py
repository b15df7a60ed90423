"""fastMRI volumes: an HDF5 reader (lazy, per slice), a writer of the same layout, and the transforms that
put volumes of different sizes on one image grid and undersample them retrospectively.

File layout (one volume per file, as the fastMRI knee/brain data)::

    /kspace               (slices, H, W)          complex64   single-coil (H = readout, 2× oversampled)
                          (slices, coils, H, W)   complex64   multi-coil
    /reconstruction_esc   (slices, h, w)          float32     single-coil target (magnitude, recon size)
    /reconstruction_rss   (slices, h, w)          float32     multi-coil target (root-sum-of-squares)
    /ismrmrd_header       bytes                   ISMRMRD XML: encodedSpace / reconSpace matrix sizes,
                                                   kspace_encoding_step_1 limits (-> phase-encode padding)
    attrs: max, norm (of the target volume), acquisition (e.g. "CORPD_FBK"), patient_id

The image of a slice is ``ifft2c(kspace)``; its target is that image (coil-combined by RSS) centre-cropped
to the recon size ``(h, w)`` (320 × 320 for fastMRI knees). Crops keep the grid centre ``N // 2`` (the
image origin and the k-space DC of ``fft2c``) at ``n // 2``.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> k = torch.randn(2, 32, 20, dtype=torch.complex64)
    >>> path = write_fastmri_volume(Path(tempfile.mkdtemp()) / "v.h5", k, recon_size=(16, 16))
    >>> vol = FastMRIVolume(path)
    >>> len(vol), vol.num_coils, vol.header.recon_size[:2], tuple(vol.target(0).shape)
    (2, 1, (16, 16), (16, 16))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ambient_science.datasets.fastmri_header import FastMRIHeader, make_ismrmrd_header, parse_ismrmrd_header
from ambient_science.operators.mri import fft2c, ifft2c
from ambient_science.operators.mri_masks import (
    COLUMN_KINDS,
    column_mask,
)

__all__ = [
    "FastMRIHeader",
    "FastMRISlice",
    "FastMRISliceDataset",
    "FastMRIVolume",
    "GridTransform",
    "RetrospectiveUndersampling",
    "center_crop",
    "crop_or_pad",
    "image_grid",
    "make_ismrmrd_header",
    "parse_ismrmrd_header",
    "rss",
    "write_fastmri_volume",
]


# -- image-grid transforms ---------------------------------------------------------------------------
def _window(n_in: int, n_out: int) -> tuple[slice, slice]:
    """Source and destination slices for a centre crop / zero-pad from ``n_in`` to ``n_out`` that maps the
    centre index ``n_in // 2`` to ``n_out // 2``."""
    if n_out <= n_in:
        start = n_in // 2 - n_out // 2
        return slice(start, start + n_out), slice(0, n_out)
    start = n_out // 2 - n_in // 2
    return slice(0, n_in), slice(start, start + n_in)


def center_crop(x: Tensor, shape: Sequence[int]) -> Tensor:
    """Centre crop of the last two axes to ``shape = (h, w)`` (no padding: raises if ``x`` is smaller).

    Shape: ``(..., H, W)`` -> ``(..., h, w)``.
    """
    h, w = (int(s) for s in shape)
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"center_crop: cannot crop {(H, W)} to {(h, w)}; use crop_or_pad")
    return x[..., _window(H, h)[0], _window(W, w)[0]]


def crop_or_pad(x: Tensor, shape: Sequence[int]) -> Tensor:
    """Centre crop or zero-pad the last two axes to ``shape = (h, w)`` (the batching policy for volumes of
    different sizes: every image ends up on the same grid).

    Shape: ``(..., H, W)`` -> ``(..., h, w)``.
    """
    h, w = (int(s) for s in shape)
    H, W = x.shape[-2:]
    out = x.new_zeros((*x.shape[:-2], h, w))
    (src_r, dst_r), (src_c, dst_c) = _window(H, h), _window(W, w)
    out[..., dst_r, dst_c] = x[..., src_r, src_c]
    return out


def rss(coil_images: Tensor, dim: int = 0) -> Tensor:
    """Root-sum-of-squares coil combination ``sqrt(Σ_c |x_c|²)``."""
    return coil_images.abs().pow(2).sum(dim=dim).sqrt()


def image_grid(kspace: Tensor, recon_size: Sequence[int], resolution: int | Sequence[int] | None = None) -> Tensor:
    """Coil images of a slice on the training grid: ``ifft2c`` → centre crop (or pad) to ``recon_size`` →
    optional downsampling to ``resolution`` by centre-cropping k-space.

    Downsampling keeps the field of view and drops the outer k-space, i.e. it is the acquisition a
    lower-resolution scan would make (no aliasing; sinc interpolation). Intensities are preserved: the
    image is rescaled by ``sqrt(h w / (H W))`` undoing the orthonormal FFT's normalisation change.

    Shape: ``(..., H_enc, W_enc)`` complex k-space -> ``(..., h, w)`` complex images.
    """
    image = crop_or_pad(ifft2c(kspace), recon_size)
    if resolution is None:
        return image
    res = (int(resolution), int(resolution)) if isinstance(resolution, int) else tuple(int(r) for r in resolution)
    H, W = image.shape[-2:]
    if res == (H, W):
        return image
    if res[0] > H or res[1] > W:
        raise ValueError(f"image_grid: resolution {res} exceeds the recon size {(H, W)} (upsampling not supported)")
    low = ifft2c(center_crop(fft2c(image), res))
    return low * ((res[0] * res[1]) / (H * W)) ** 0.5


# -- reader --------------------------------------------------------------------------------------------
@dataclass
class FastMRISlice:
    """One slice of a fastMRI volume.

    ``kspace`` is ``(coils, H, W)`` complex64 (coils = 1 for single-coil); ``target`` ``(h, w)`` float32 or
    ``None`` (test sets); ``attrs`` the file's attributes.
    """

    kspace: Tensor
    target: Tensor | None
    fname: str
    slice_index: int
    header: FastMRIHeader
    attrs: dict[str, Any] = field(default_factory=dict)


class FastMRIVolume:
    """One fastMRI file, opened lazily; slices read on demand.

    Raises a clear error naming the file when it is missing, not HDF5, lacks ``kspace``, has the wrong
    dimensionality or dtype, no slices, or when a slice read holds NaN / Inf.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"fastMRI file {self.path} does not exist")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise ValueError(
                f"{self.path} is not a readable HDF5 file (truncated or corrupt?); expected a fastMRI .h5 volume"
            ) from err
        with f:
            if "kspace" not in f:
                raise KeyError(
                    f"{self.path}: no 'kspace' dataset; expected a fastMRI volume with kspace "
                    f"(slices, H, W) or (slices, coils, H, W) complex64 (found {sorted(f.keys())})"
                )
            ks = f["kspace"]
            if ks.ndim not in (3, 4):
                raise ValueError(
                    f"{self.path}: kspace has shape {ks.shape} ({ks.ndim}-D); expected (slices, H, W) "
                    "single-coil or (slices, coils, H, W) multi-coil"
                )
            if ks.dtype.kind != "c":
                raise ValueError(f"{self.path}: kspace has dtype {ks.dtype}; expected complex64")
            if 0 in ks.shape:
                raise ValueError(
                    f"{self.path}: kspace has shape {ks.shape}: no slices (or an empty axis); expected at least one "
                    "slice of (H, W) or (coils, H, W) k-space"
                )
            self.kspace_shape: tuple[int, ...] = tuple(ks.shape)
            self.target_key = next((k for k in ("reconstruction_esc", "reconstruction_rss") if k in f), None)
            if self.target_key is not None and f[self.target_key].shape[0] != ks.shape[0]:
                raise ValueError(
                    f"{self.path}: {self.target_key} has {f[self.target_key].shape[0]} slices, kspace has {ks.shape[0]}"
                )
            self.attrs: dict[str, Any] = {k: _plain(v) for k, v in f.attrs.items()}
            H, W = ks.shape[-2:]
            if "ismrmrd_header" in f:
                raw = f["ismrmrd_header"][()]
                self.header = parse_ismrmrd_header(raw, source=str(self.path))
            else:  # no header: recon size from the target, else the whole grid
                rec = f[self.target_key].shape[1:] if self.target_key else (H, W)
                self.header = FastMRIHeader(encoding_size=(H, W, 1), recon_size=(*rec, 1))
        self._file: h5py.File | None = None

    @property
    def num_slices(self) -> int:
        return self.kspace_shape[0]

    @property
    def is_multicoil(self) -> bool:
        return len(self.kspace_shape) == 4

    @property
    def num_coils(self) -> int:
        return self.kspace_shape[1] if self.is_multicoil else 1

    @property
    def recon_size(self) -> tuple[int, int]:
        return self.header.recon_size[0], self.header.recon_size[1]

    @property
    def acquired_columns(self) -> tuple[int, int]:
        """Phase-encode columns ``[left, right)`` holding acquired k-space (the header's ``padding`` when the
        k-space is on the encoded grid; all columns otherwise)."""
        W = self.kspace_shape[-1]
        if W != self.header.encoding_size[1]:
            return 0, W
        left, right = self.header.padding
        left, right = max(0, left), min(W, right)
        return (left, right) if right > left else (0, W)

    def __len__(self) -> int:
        return self.num_slices

    def _h5(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def _index(self, i: int) -> int:
        if not -self.num_slices <= i < self.num_slices:
            raise IndexError(f"slice {i} out of range for {self.num_slices} slices in {self.path}")
        return i % self.num_slices

    def kspace(self, i: int) -> Tensor:
        """k-space of slice ``i``. Shape: ``(coils, H, W)`` complex64 (coils = 1 for single-coil)."""
        i = self._index(i)
        k = torch.from_numpy(np.asarray(self._h5()["kspace"][i]).astype(np.complex64))
        if not torch.isfinite(torch.view_as_real(k)).all():
            raise ValueError(f"{self.path} slice {i}: kspace contains NaN or Inf")
        return k if self.is_multicoil else k[None]

    def target(self, i: int) -> Tensor | None:
        """Stored target of slice ``i`` (``reconstruction_esc`` or ``_rss``), ``(h, w)`` float32, or None."""
        if self.target_key is None:
            return None
        i = self._index(i)
        t = torch.from_numpy(np.asarray(self._h5()[self.target_key][i]).astype(np.float32))
        if not torch.isfinite(t).all():
            raise ValueError(f"{self.path} slice {i}: {self.target_key} contains NaN or Inf")
        return t

    def __getitem__(self, i: int) -> FastMRISlice:
        i = self._index(i)
        return FastMRISlice(self.kspace(i), self.target(i), self.path.name, i, self.header, dict(self.attrs))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _h5_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for p in map(Path, items):
        out.extend(sorted(p.glob("*.h5")) if p.is_dir() else [p])
    if not out:
        raise FileNotFoundError(f"no fastMRI .h5 files found in {', '.join(str(p) for p in items)}")
    return out


class FastMRISliceDataset(Dataset):
    """All slices of one or more fastMRI files (a directory, a file, or a list), read lazily.

    Args:
        paths: a directory (every ``*.h5`` in it), one file, or a list of files / directories.
        transform: applied to each :class:`FastMRISlice` (e.g. :class:`GridTransform` then
            :class:`RetrospectiveUndersampling`); records are returned as the transform makes them.
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        transform: Callable[[FastMRISlice], Any] | None = None,
    ):
        self.volumes = [FastMRIVolume(p) for p in _h5_paths(paths)]
        self.transform = transform
        self.index = [(v, s) for v in range(len(self.volumes)) for s in range(self.volumes[v].num_slices)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        v, s = self.index[i]
        record = self.volumes[v][s]
        return record if self.transform is None else self.transform(record)


# -- record transforms -------------------------------------------------------------------------------
class GridTransform:
    """Put a slice on the training grid: coil images cropped/padded to the recon size (from the header,
    or ``recon_size``), optionally downsampled to ``resolution``, re-FFT'd to k-space on that grid.

    Returns a :class:`FastMRISlice` with grid k-space ``(coils, h, w)`` and the target recomputed on the
    grid (magnitude / RSS of the grid images), so slices of different widths batch together.
    """

    def __init__(self, recon_size: Sequence[int] | None = None, resolution: int | Sequence[int] | None = None):
        self.recon_size = None if recon_size is None else tuple(int(s) for s in recon_size)
        self.resolution = resolution

    def __call__(self, record: FastMRISlice) -> FastMRISlice:
        size = self.recon_size or record.header.recon_size[:2]
        images = image_grid(record.kspace, size, self.resolution)
        return FastMRISlice(fft2c(images), rss(images), record.fname, record.slice_index, record.header, record.attrs)


def _name_seed(fname: str, slice_index: int, seed: int) -> int:
    """A stable (process-independent) integer from a file name, slice and seed."""
    h = 1469598103934665603
    for byte in f"{seed}/{fname}/{slice_index}".encode():
        h = ((h ^ byte) * 1099511628211) % (1 << 63)
    return h


class RetrospectiveUndersampling:
    """Undersample a slice's k-space with a fastMRI-style column mask.

    The mask of a slice is a deterministic function of ``(seed, file name, slice)`` (or of
    ``(seed, file name)`` with ``per_volume=True``, fastMRI's validation convention), so every epoch and
    every DataLoader worker draws the same one. Columns outside the header's acquired ``padding`` are
    never marked sampled when the k-space is on the encoded grid.

    Returns a dict ``{"kspace": M ⊙ k (C, H, W), "mask": (W,) float32, "target", "fname", "slice_index"}``
    (``target`` omitted when ``None``), which ``torch.utils.data.default_collate`` batches.
    """

    def __init__(
        self,
        acceleration: float,
        center_fraction: float,
        mask_kind: str = "random",
        *,
        seed: int = 0,
        per_volume: bool = False,
    ):
        if mask_kind not in COLUMN_KINDS:
            raise ValueError(f"mask_kind must be one of {COLUMN_KINDS}, got {mask_kind!r}")
        self.acceleration, self.center_fraction, self.mask_kind = acceleration, center_fraction, mask_kind
        self.seed, self.per_volume = int(seed), per_volume

    def mask_for(self, record: FastMRISlice) -> Tensor:
        """The ``(W,)`` column mask of a record."""
        W = record.kspace.shape[-1]
        g = torch.Generator().manual_seed(
            _name_seed(record.fname, -1 if self.per_volume else record.slice_index, self.seed)
        )
        mask = column_mask(self.mask_kind, 1, W, self.acceleration, self.center_fraction, generator=g)[0]
        if W == record.header.encoding_size[1]:
            left, right = record.header.padding
            mask[:left] = 0
            mask[right:] = 0
        return mask

    def __call__(self, record: FastMRISlice, mask: Tensor | None = None) -> dict[str, Any]:
        W = record.kspace.shape[-1]
        mask = self.mask_for(record) if mask is None else mask
        if mask.shape != (W,):
            raise ValueError(
                f"{record.fname} slice {record.slice_index}: mask of shape {tuple(mask.shape)} does not match "
                f"k-space of shape {tuple(record.kspace.shape)}; expected a ({W},) column mask"
            )
        out = {
            "kspace": record.kspace * mask.to(record.kspace.device),
            "mask": mask.to(torch.float32),
            "fname": record.fname,
            "slice_index": record.slice_index,
        }
        if record.target is not None:
            out["target"] = record.target
        return out


# -- writer --------------------------------------------------------------------------------------------
def write_fastmri_volume(
    path: str | Path,
    kspace: Tensor | np.ndarray,
    *,
    recon_size: Sequence[int],
    target: Tensor | np.ndarray | None = None,
    header: str | None = None,
    acquisition: str = "CORPD_FBK",
    patient_id: str = "",
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one volume in the fastMRI layout (module docstring), atomically.

    Args:
        kspace: ``(slices, H, W)`` single-coil or ``(slices, coils, H, W)`` multi-coil, complex.
        recon_size: ``(h, w)`` of the target (320 × 320 for fastMRI knees).
        target: ``(slices, h, w)``; default: the magnitude (single-coil, stored as ``reconstruction_esc``)
            or RSS (multi-coil, ``reconstruction_rss``) of ``ifft2c(kspace)`` cropped to ``recon_size``.
        header: ISMRMRD XML; default :func:`make_ismrmrd_header` for this grid.
        attrs: extra file attributes (e.g. ``{"synthetic": True}``).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    k = torch.as_tensor(np.asarray(kspace) if not isinstance(kspace, Tensor) else kspace).to(torch.complex64)
    if k.ndim not in (3, 4):
        raise ValueError(f"{path}: kspace must be (slices, H, W) or (slices, coils, H, W), got {tuple(k.shape)}")
    if not torch.isfinite(torch.view_as_real(k)).all():
        raise ValueError(f"{path}: kspace contains NaN or Inf")
    multicoil = k.ndim == 4
    h, w = (int(s) for s in recon_size)
    if target is None:
        images = crop_or_pad(ifft2c(k), (h, w))
        target = rss(images, dim=1) if multicoil else images.abs()
    t = np.asarray(target.detach().cpu() if isinstance(target, Tensor) else target, dtype=np.float32)
    if t.shape != (k.shape[0], h, w):
        raise ValueError(f"{path}: target has shape {t.shape}, expected {(k.shape[0], h, w)}")
    if header is None:
        header = make_ismrmrd_header((k.shape[-2], k.shape[-1], 1), (h, w, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("kspace", data=k.cpu().numpy())
        f.create_dataset("reconstruction_rss" if multicoil else "reconstruction_esc", data=t)
        f.create_dataset("ismrmrd_header", data=np.bytes_(header.encode("utf-8")))
        f.attrs["max"] = float(t.max())
        f.attrs["norm"] = float(np.linalg.norm(t))
        f.attrs["acquisition"] = acquisition
        f.attrs["patient_id"] = patient_id
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    tmp.replace(path)
    return path
