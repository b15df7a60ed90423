"""Measurement sets: records, the HDF5 file, and its refusals."""

import h5py
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from ambient_science.datasets.measurements import MeasurementDataset, MeasurementFile, save_measurements
from ambient_science.operators import PixelMaskFamily


def _data(n=6):
    family = PixelMaskFamily((1, 8, 8), p=0.5)
    g = torch.Generator().manual_seed(0)
    A = family.sample(n, generator=g)
    y = A(torch.randn(n, 1, 8, 8, generator=g))
    return family, A, y


def test_round_trip_and_batching(tmp_path):
    family, A, y = _data()
    path = save_measurements(tmp_path / "m.h5", y, A.params(), family, sigma_n=0.1, metadata={"source": "test"})
    ds = MeasurementFile(path)
    assert len(ds) == 6 and ds.metadata == {"source": "test"}
    assert ds.family.config() == family.config()
    batch = next(iter(DataLoader(ds, batch_size=6)))
    torch.testing.assert_close(batch["y"], y)
    A2 = ds.family.make(batch["params"])
    torch.testing.assert_close(A2.observed, A.observed)
    torch.testing.assert_close(batch["sigma_n"], torch.full((6,), 0.1))
    mem = default_collate([MeasurementDataset(y, A.params(), family)[i] for i in range(6)])
    torch.testing.assert_close(mem["y"], y)


def test_refuses_energy_outside_the_mask(tmp_path):
    family, A, y = _data()
    with pytest.raises(ValueError, match="energy where the operator observes nothing"):
        save_measurements(tmp_path / "m.h5", y + 1.0, A.params(), family)
    assert not (tmp_path / "m.h5").exists()


def test_never_overwrites_silently(tmp_path):
    family, A, y = _data()
    path = save_measurements(tmp_path / "m.h5", y, A.params(), family)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_measurements(path, y, A.params(), family)
    save_measurements(path, y, A.params(), family, overwrite=True)


def test_nan_and_bad_files_give_clear_errors(tmp_path):
    family, A, y = _data()
    y[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        MeasurementDataset(y, A.params(), family)
    (tmp_path / "other.h5").touch()
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["kspace"] = [1.0]
    with pytest.raises(ValueError, match="not an ambient-science measurement file"):
        MeasurementFile(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MeasurementFile(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="has 6 samples, y has 5"):
        MeasurementDataset(y[:5], A.params(), family)
