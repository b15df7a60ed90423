"""fastMRI reader / writer / transforms on synthetic files written with the real schema; bad input."""

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ambient_science.datasets.fastmri import (
    FastMRISliceDataset,
    FastMRIVolume,
    GridTransform,
    RetrospectiveUndersampling,
    center_crop,
    crop_or_pad,
    image_grid,
    make_ismrmrd_header,
    parse_ismrmrd_header,
    write_fastmri_volume,
)
from ambient_science.datasets.synthetic_knee import write_synthetic_knee
from ambient_science.operators import fft2c, ifft2c
from ambient_science.operators.mri_masks import acs_slice


def _kspace(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


@pytest.mark.parametrize("coils", [None, 3])
def test_synthetic_volume_round_trip_fully_sampled_recon_equals_target(tmp_path, coils):
    path = write_synthetic_knee(tmp_path / "knee.h5", 7, recon_size=(32, 32), num_slices=3, num_coils=coils)
    vol = FastMRIVolume(path)
    assert vol.num_slices == 3 and vol.is_multicoil == (coils is not None) and vol.num_coils == (coils or 1)
    assert vol.kspace_shape[-2:] == (64, 36)  # readout 2x oversampled, phase-encode 1.15x (even)
    assert vol.recon_size == (32, 32) and vol.header.padding == (0, 36)
    assert vol.attrs["acquisition"] == "CORPD_FBK" and vol.attrs["synthetic"] is True
    assert vol.attrs["patient_id"] == "synthetic-knee-7" and "SYNTHETIC" in vol.attrs["note"]
    with h5py.File(path, "r") as f:
        key = "reconstruction_rss" if coils else "reconstruction_esc"
        stored = f[key][()]
        assert f["kspace"].dtype == np.complex64
        assert f.attrs["max"] == pytest.approx(stored.max()) and f.attrs["norm"] == pytest.approx(
            np.linalg.norm(stored)
        )
    for i in range(3):
        images = center_crop(ifft2c(vol.kspace(i)), (32, 32))
        recon = images.abs().pow(2).sum(0).sqrt()  # RSS (= magnitude for one coil)
        target = vol.target(i)
        assert float((recon - target).norm() / target.norm()) < 1e-5
        torch.testing.assert_close(target, torch.from_numpy(stored[i]))


def test_header_round_trip_and_padding():
    xml = make_ismrmrd_header((640, 372, 1), (320, 320, 1), kspace_center=180, kspace_maximum=359)
    h = parse_ismrmrd_header(xml)
    assert h.encoding_size == (640, 372, 1) and h.recon_size == (320, 320, 1)
    assert h.padding == (372 // 2 - 180, 372 // 2 - 180 + 360)
    with pytest.raises(ValueError, match="not valid XML"):
        parse_ismrmrd_header(b"<oops")


def test_crop_pad_and_grid_keep_the_centre():
    x = torch.arange(7 * 6, dtype=torch.float32).reshape(7, 6)
    assert center_crop(x, (3, 4))[1, 2] == x[3, 3]  # centre index N // 2 -> n // 2
    p = crop_or_pad(x, (9, 8))
    assert p.shape == (9, 8) and p[4, 4] == x[3, 3] and p[0].abs().sum() == 0
    k = _kspace(2, 40, 24)
    img = image_grid(k, (16, 16))
    torch.testing.assert_close(img, center_crop(ifft2c(k), (16, 16)))
    low = image_grid(k, (16, 16), resolution=8)
    assert low.shape == (2, 8, 8)
    # k-space downsampling keeps the low frequencies and the mean intensity
    torch.testing.assert_close(fft2c(low) * 2, center_crop(fft2c(img), (8, 8)), atol=1e-5, rtol=1e-4)
    const = torch.ones(1, 16, 16, dtype=torch.complex64)
    torch.testing.assert_close(image_grid(fft2c(const), (16, 16), 8), torch.ones(1, 8, 8, dtype=torch.complex64))


def test_dataset_batches_volumes_of_different_widths(tmp_path):
    write_fastmri_volume(tmp_path / "a.h5", _kspace(2, 4, 32, 20), recon_size=(16, 16))
    write_fastmri_volume(tmp_path / "b.h5", _kspace(3, 4, 32, 26, seed=1), recon_size=(16, 16))
    grid = GridTransform(resolution=8)
    under = RetrospectiveUndersampling(2, 0.25, seed=3)
    ds = FastMRISliceDataset(tmp_path, transform=lambda r: under(grid(r)))
    assert len(ds) == 5
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["kspace"].shape == (5, 4, 8, 8) and batch["mask"].shape == (5, 8)
    assert batch["target"].shape == (5, 8, 8)
    assert bool((batch["mask"][:, acs_slice(8, 0.25)] == 1).all())
    observed = batch["mask"][:, None, None, :].expand(5, 4, 8, 8)
    assert float(batch["kspace"][observed == 0].abs().max()) == 0.0
    again = next(iter(DataLoader(ds, batch_size=5)))
    torch.testing.assert_close(again["mask"], batch["mask"])  # deterministic per (seed, file, slice)


def test_undersampling_respects_header_padding(tmp_path):
    W = 24
    header = make_ismrmrd_header((32, W, 1), (16, 16, 1), kspace_center=W // 2 - 2, kspace_maximum=17)
    path = write_fastmri_volume(tmp_path / "p.h5", _kspace(1, 32, W), recon_size=(16, 16), header=header)
    rec = FastMRIVolume(path)[0]
    left, right = rec.header.padding
    assert (left, right) == (2, 20)
    out = RetrospectiveUndersampling(1.5, 0.2, seed=0)(rec)
    assert float(out["mask"][:left].sum()) == 0 and float(out["mask"][right:].sum()) == 0


# -- bad input ------------------------------------------------------------------------------------------
def test_missing_kspace_names_the_file(tmp_path):
    path = tmp_path / "nokspace.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("reconstruction_esc", data=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(KeyError, match=r"nokspace\.h5.*no 'kspace' dataset.*expected"):
        FastMRIVolume(path)


def test_wrong_dimensionality_and_dtype(tmp_path):
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=np.zeros((4, 4), np.complex64))
    with pytest.raises(ValueError, match=r"flat\.h5.*2-D.*expected \(slices, H, W\)"):
        FastMRIVolume(path)
    path = tmp_path / "real.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"real\.h5.*expected complex64"):
        FastMRIVolume(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        FastMRIVolume(tmp_path / "missing.h5")


def test_nans_are_reported_with_file_and_slice(tmp_path):
    k = _kspace(2, 8, 8).numpy()
    k[1, 3, 3] = np.nan
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
    vol = FastMRIVolume(path)
    vol.kspace(0)
    with pytest.raises(ValueError, match=r"nan\.h5 slice 1: kspace contains NaN"):
        vol.kspace(1)
    with pytest.raises(ValueError, match="NaN"):
        write_fastmri_volume(tmp_path / "w.h5", torch.from_numpy(k), recon_size=(4, 4))


def test_mask_width_mismatch_names_the_file(tmp_path):
    path = write_fastmri_volume(tmp_path / "vol.h5", _kspace(1, 16, 12), recon_size=(8, 8))
    rec = FastMRIVolume(path)[0]
    with pytest.raises(ValueError, match=r"vol\.h5 slice 0: mask of shape \(10,\).*expected a \(12,\) column mask"):
        RetrospectiveUndersampling(2, 0.2)(rec, mask=torch.ones(10))
