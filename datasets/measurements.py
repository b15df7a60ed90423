"""Measurement sets: what ambient training reads. Measurements ``y`` and operator parameters, never a clean image.

One record per measurement: ``{"y": Tensor, "params": {name: Tensor}, "sigma_n": Tensor}`` (no batch
dimension; ``torch.utils.data.default_collate`` batches records, and ``family.make(batch["params"])``
rebuilds the batched operator). ``sigma_n`` is the known measurement-noise standard deviation (0 for
noiseless data).

On disk (HDF5, written by :func:`save_measurements`)::

    /y                  (N, ...)  complex64 or float32    measurements (zeros where not observed)
    /params/<name>      (N, ...)                           per-sample operator parameters
    /sigma_n            (N,)      float32                  known noise std
    attrs["format"]   = "ambient-science-measurements"
    attrs["version"]  = 1
    attrs["family"]   = JSON of family.config()
    attrs["metadata"] = JSON, free-form (source files, acceleration, ...)

Such a file holds by construction only what the operators observed: :func:`save_measurements` refuses
``y`` with energy where ``A`` observes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ambient_science.family import OperatorFamily
from ambient_science.registry import family_from_config

__all__ = ["MeasurementDataset", "MeasurementFile", "save_measurements"]

FORMAT = "ambient-science-measurements"
VERSION = 1


def _check_record(y: Tensor, params: Mapping[str, Tensor], where: str) -> None:
    if not torch.isfinite(torch.view_as_real(y) if y.is_complex() else y).all():
        raise ValueError(f"{where}: measurements contain NaN or Inf")
    for name, value in params.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{where}: operator parameter {name!r} contains NaN or Inf")


class MeasurementDataset(Dataset):
    """In-memory measurement set from batched tensors.

    Args:
        y: ``(N, ...)`` measurements.
        params: per-sample operator parameters, each ``(N, ...)``.
        family: the operator family that rebuilds operators from ``params``.
        sigma_n: ``(N,)`` or scalar known noise std (default 0).
    """

    def __init__(
        self,
        y: Tensor,
        params: Mapping[str, Tensor],
        family: OperatorFamily,
        sigma_n: Tensor | float = 0.0,
    ):
        n = y.shape[0]
        for name, value in params.items():
            if value.shape[0] != n:
                raise ValueError(f"params[{name!r}] has {value.shape[0]} samples, y has {n}")
        _check_record(y, params, "MeasurementDataset")
        self.y = y
        self.params = dict(params)
        self.family = family
        self.sigma_n = torch.broadcast_to(torch.as_tensor(sigma_n, dtype=torch.float32), (n,)).clone()

    def __len__(self) -> int:
        return self.y.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "y": self.y[i],
            "params": {k: v[i] for k, v in self.params.items()},
            "sigma_n": self.sigma_n[i],
        }


def save_measurements(
    path: str | Path,
    y: Tensor,
    params: Mapping[str, Tensor],
    family: OperatorFamily,
    *,
    sigma_n: Tensor | float = 0.0,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a measurement file (layout in the module docstring), atomically.

    Refuses to overwrite an existing file unless ``overwrite=True``, and refuses measurements with
    energy outside what the operators observe (such a file must hold undersampled data only).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    ds = MeasurementDataset(y, params, family, sigma_n)
    A = family.make({k: v for k, v in ds.params.items()})
    observed = torch.broadcast_to(A.observed.to(y.device), y.shape)
    leak = (y.abs() * (1 - observed)).amax()
    if float(leak) > 0:
        raise ValueError(f"{path}: measurements have energy where the operator observes nothing (max {leak:.3g})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["family"] = json.dumps(family.config())
        f.attrs["metadata"] = json.dumps(dict(metadata or {}))
        f.create_dataset("y", data=y.detach().cpu().numpy())
        grp = f.create_group("params")
        for name, value in ds.params.items():
            grp.create_dataset(name, data=value.detach().cpu().numpy())
        f.create_dataset("sigma_n", data=ds.sigma_n.numpy())
    tmp.replace(path)
    return path


class MeasurementFile(Dataset):
    """A measurement file read lazily, one record per index (safe with DataLoader workers).

    Raises a clear error naming the file when it is not a measurement file or is malformed.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        expected = "expected an ambient-science measurement file (.h5, written by `ambient-science prepare`)"
        if self.path.is_dir():
            raise IsADirectoryError(f"measurement file {self.path} is a directory; {expected}")
        if not self.path.is_file():
            raise FileNotFoundError(f"measurement file {self.path} does not exist; {expected}")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise ValueError(f"{self.path} is not a readable HDF5 file (truncated or corrupt?); {expected}") from err
        with f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"{self.path} is not an ambient-science measurement file (attrs['format'] missing)")
            missing = [k for k in ("y", "params", "sigma_n") if k not in f]
            if missing:
                raise KeyError(f"{self.path}: missing {missing}; expected datasets y, params/<name>, sigma_n")
            self._len = int(f["y"].shape[0])
            if self._len == 0:
                raise ValueError(f"{self.path}: the file holds 0 measurements")
            for name, d in f["params"].items():
                if d.shape[0] != self._len:
                    raise ValueError(f"{self.path}: params/{name} has {d.shape[0]} samples, y has {self._len}")
            if f["sigma_n"].shape != (self._len,):
                raise ValueError(f"{self.path}: sigma_n has shape {f['sigma_n'].shape}, expected ({self._len},)")
            try:
                self.family_config: dict[str, Any] = json.loads(f.attrs["family"])
                self.metadata: dict[str, Any] = json.loads(f.attrs.get("metadata", "{}"))
            except (KeyError, ValueError) as err:
                bad = "attrs['family'] or attrs['metadata']"
                raise ValueError(f"{self.path}: {bad} is not valid JSON ({err})") from err
            self.param_names = sorted(f["params"].keys())
        self._file: h5py.File | None = None
        self._sigma_n: Tensor | None = None

    @property
    def sigma_n(self) -> Tensor:
        """The noise levels of all records, ``(N,)`` float32 (read once)."""
        if self._sigma_n is None:
            self._sigma_n = torch.from_numpy(np.asarray(self._h5()["sigma_n"][:], dtype=np.float32))
        return self._sigma_n

    @property
    def family(self) -> OperatorFamily:
        return family_from_config(self.family_config)

    def __len__(self) -> int:
        return self._len

    def _h5(self) -> h5py.File:
        if self._file is None:  # opened lazily, once per process (DataLoader workers each get their own)
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self._len <= i < self._len:
            raise IndexError(f"index {i} out of range for {self._len} measurements in {self.path}")
        f = self._h5()
        y = torch.from_numpy(np.asarray(f["y"][i]))
        params = {name: torch.from_numpy(np.asarray(f["params"][name][i])) for name in self.param_names}
        _check_record(y, params, f"{self.path} record {i}")
        return {"y": y, "params": params, "sigma_n": torch.tensor(float(f["sigma_n"][i]))}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state
