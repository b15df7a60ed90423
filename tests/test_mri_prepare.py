"""prepare: fastMRI volumes -> a measurement file holding only undersampled k-space (function and CLI)."""

import h5py
import numpy as np
import pytest
import torch

from ambient_science.cli import main
from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.prepare import load_targets, prepare_fastmri
from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.family import check_subset
from ambient_science.operators.mri_masks import acs_slice


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    write_synthetic_knee_dataset(root / "single", 2, seed=10, num_slices=2, recon_size=(32, 32))
    write_synthetic_knee_dataset(root / "multi", 1, seed=20, num_slices=2, recon_size=(32, 32), num_coils=4)
    return root


def _assert_no_energy_outside_masks(path):
    with h5py.File(path, "r") as f:
        y, mask = f["y"][()], f["params/mask"][()]
    m = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
    m = np.broadcast_to(m, y.shape)
    assert np.abs(y[m == 0]).max() == 0.0
    assert (m == 0).mean() >= 0.4  # truly undersampled


def test_prepare_single_coil(raw, tmp_path):
    out = prepare_fastmri(
        raw / "single",
        tmp_path / "r4.h5",
        acceleration=4,
        center_fraction=0.125,
        resolution=16,
        targets_output=tmp_path / "targets.h5",
    )
    _assert_no_energy_outside_masks(out)
    mf = MeasurementFile(out)
    assert len(mf) == 4 and mf.family.config()["image_shape"] == [1, 16, 16]
    assert mf.metadata["files"] == ["synthetic_knee_00010.h5", "synthetic_knee_00011.h5"] and mf.metadata["synthetic"]
    rec = mf[0]
    assert rec["y"].shape == (1, 16, 16) and set(rec["params"]) == {"mask", "scale"}
    assert bool((rec["params"]["mask"][acs_slice(16, 0.125)] == 1).all())
    batch = torch.utils.data.default_collate([mf[i] for i in range(4)])
    A = mf.family.make(batch["params"])
    torch.testing.assert_close(batch["y"], torch.broadcast_to(A.observed, A.oshape) * batch["y"])
    check_subset(A, mf.family.further_corrupt(A, generator=torch.Generator().manual_seed(0)))
    # normalised from the undersampled data: the zero-filled magnitude's 99th percentile is 1 per volume
    zf = A.H(batch["y"]).abs()
    assert float(torch.quantile(zf[:2].flatten(), 0.99)) == pytest.approx(1.0, rel=1e-3)
    ref = load_targets(tmp_path / "targets.h5")
    assert ref["target"].shape == (4, 16, 16) and ref["image"].shape == (4, 1, 16, 16)
    # consistency: the stored measurements are exactly the masked k-space of the reference image
    torch.testing.assert_close(A(ref["image"]), batch["y"], atol=1e-5, rtol=1e-4)


def test_prepare_multi_coil_espirit_and_per_volume_masks(raw, tmp_path):
    out = prepare_fastmri(raw / "multi", tmp_path / "mc.h5", acceleration=2, center_fraction=0.25, mask_per="volume")
    _assert_no_energy_outside_masks(out)
    mf = MeasurementFile(out)
    assert mf.family.num_coils == 4
    recs = [mf[i] for i in range(2)]
    assert recs[0]["params"]["coil_maps"].shape == (4, 32, 32)
    torch.testing.assert_close(recs[0]["params"]["mask"], recs[1]["params"]["mask"])  # one mask per volume
    rss = recs[0]["params"]["coil_maps"].abs().pow(2).sum(0).sqrt()
    assert float((rss > 0.99).float().mean()) > 0.9  # ESPIRiT maps cover the field of view


def test_cli_prepare_synthetic_and_fastmri(tmp_path, capsys):
    assert (
        main(
            [
                "prepare",
                "synthetic-knee",
                str(tmp_path / "raw"),
                "--volumes",
                "1",
                "--slices",
                "2",
                "--recon-size",
                "32",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "prepare",
                "fastmri",
                str(tmp_path / "raw"),
                "-o",
                str(tmp_path / "m.h5"),
                "--resolution",
                "16",
                "--acceleration",
                "4",
                "--center-fraction",
                "0.125",
                "--mask",
                "equispaced",
            ]
        )
        == 0
    )
    assert "wrote 2 undersampled slices" in capsys.readouterr().out
    mf = MeasurementFile(tmp_path / "m.h5")
    assert mf.family.config()["mask_kind"] == "equispaced" and mf.family.acceleration == 4
    assert main(["prepare", "fastmri", "x", "-o", "y.h5", "--dry-run"]) == 0
    assert '"acceleration": 4.0' in capsys.readouterr().out


def test_prepare_refuses_mixed_grids(tmp_path):
    from ambient_science.datasets.fastmri import write_fastmri_volume

    g = torch.Generator().manual_seed(0)
    k = torch.complex(torch.randn(1, 32, 20, generator=g), torch.randn(1, 32, 20, generator=g))
    write_fastmri_volume(tmp_path / "in" / "a.h5", k, recon_size=(16, 16))
    write_fastmri_volume(tmp_path / "in" / "b.h5", k, recon_size=(12, 12))
    with pytest.raises(ValueError, match=r"b\.h5: grid \(12, 12\) differs"):
        prepare_fastmri(tmp_path / "in", tmp_path / "out.h5", center_fraction=0.125)
    out = prepare_fastmri(tmp_path / "in", tmp_path / "out.h5", center_fraction=0.125, recon_size=(12, 12))
    assert len(MeasurementFile(out)) == 2


def test_sigma_n_auto_matches_the_noise_actually_in_the_data(tmp_path):
    from ambient_science.datasets.synthetic_knee import write_synthetic_knee

    kw = dict(num_slices=2, recon_size=(32, 32))
    write_synthetic_knee(tmp_path / "clean" / "v.h5", 5, noise_level=0.0, **kw)
    write_synthetic_knee(tmp_path / "noisy" / "v.h5", 5, noise_level=0.05, **kw)
    files = [
        MeasurementFile(prepare_fastmri(tmp_path / name, tmp_path / f"{name}.h5", center_fraction=0.125, resolution=16))
        for name in ("clean", "noisy")
    ]
    clean, noisy = ([f[i] for i in range(2)] for f in files)
    assert float(clean[0]["sigma_n"]) == 0.0
    for c, n in zip(clean, noisy):
        noise = n["y"] * n["params"]["scale"] - c["y"] * c["params"]["scale"]  # file units
        observed = torch.broadcast_to(n["params"]["mask"], noise.shape) > 0
        empirical = torch.view_as_real(noise[observed]).std()
        assert float(empirical) == pytest.approx(float(n["sigma_n"] * n["params"]["scale"]), rel=0.15)
