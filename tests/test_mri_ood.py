"""Out-of-distribution tools: the second SYNTHETIC anatomy, bring-your-own images, the fit test, the safe mode."""

import numpy as np
import pytest
import torch
from torch import nn

from ambient_science.cli import main
from ambient_science.datasets.anatomy import brain_phantom, synthetic_brain_volume
from ambient_science.datasets.images import load_image_volumes, measurements_from_images, measurements_from_kspace
from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.prepare import load_targets
from ambient_science.datasets.synthetic_knee import knee_phantom
from ambient_science.operators.mri import CartesianMRIFamily, fft2c
from ambient_science.sampling.fit import calibrate_threshold, check_fit, fit_settings, shrink_to_data
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# -- the second anatomy ---------------------------------------------------------------------------------
def test_brain_phantom_seeded_labelled_smooth_and_unlike_the_knee():
    np.random.seed(1)
    state = np.random.get_state()[1].copy()
    a = synthetic_brain_volume(3, recon_size=(32, 32), num_slices=2)
    b = synthetic_brain_volume(3, recon_size=(32, 32), num_slices=2)
    np.testing.assert_array_equal(a["kspace"], b["kspace"])
    assert np.array_equal(np.random.get_state()[1], state)
    assert a["attrs"]["synthetic"] is True and "SYNTHETIC" in a["attrs"]["note"] and "SYNTHETIC" in a["header"]
    shape = dict(num_slices=6, grid_shape=(64, 64), pixel_size=(2 / 64, 2 / 64))
    v = np.abs(brain_phantom(0, **shape))
    assert v.shape == (6, 64, 64) and 0.5 < v.max() < 1.6
    adjacent = np.mean([_corr(v[i], v[i + 1]) for i in range(1, 4)])  # mid slices change smoothly with z
    assert adjacent > 0.8 and _corr(v[0], v[2]) < 0.6
    assert _corr(v[3], np.abs(brain_phantom(1, **shape))[3]) < 0.95  # another seed, another head
    knee = np.abs(knee_phantom(0, **shape))
    assert _corr(v[3], knee[3]) < 0.5
    # a head in air: background all around (the knee's leg runs through the whole FOV, top to bottom)
    assert (v[3, :4] < 0.05).mean() > 0.9 and (v[3, -4:] < 0.05).mean() > 0.9
    assert (knee[3, :4] < 0.05).mean() < 0.9
    # T2-like: the brightest tissue (CSF) is rarer than the mid-grey brain
    inside = v[3][v[3] > 0.1]
    assert np.median(inside) < 0.7 * np.percentile(inside, 99)


# -- bring your own images ------------------------------------------------------------------------------
def test_measurements_from_images_shapes_masks_noise_and_own_masks():
    images = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)
    rec = measurements_from_images(images, acceleration=4, masks_per_slice=2, seed=0, noise_level=0.02)
    assert tuple(rec["y"].shape) == (12, 1, 16, 16) and rec["volume"].tolist() == [0] * 6 + [1] * 6
    assert rec["slice"].tolist()[:6] == [0, 0, 1, 1, 2, 2]
    mask = rec["params"]["mask"]
    assert not torch.equal(mask[0], mask[1])  # two masks of one slice differ
    observed = mask[:, None, None, :]
    assert float((rec["y"].abs() * (1 - observed)).max()) == 0.0  # nothing outside the masks
    assert bool((rec["sigma_n"] > 0).all()) and torch.allclose(rec["sigma_n"][:6], rec["sigma_n"][0].expand(6))
    again = measurements_from_images(images, acceleration=4, masks_per_slice=2, seed=0, noise_level=0.02)
    assert torch.equal(again["y"], rec["y"])  # seeded
    own = torch.zeros(3, 16)
    own[:, 6:10] = 1
    k = [fft2c(torch.polar(torch.as_tensor(v), torch.zeros(3, 16, 16))) for v in images]
    rec2 = measurements_from_kspace(k, masks=[own, own], acceleration=4)
    assert torch.equal(rec2["params"]["mask"], torch.cat([own, own]))
    with pytest.raises(ValueError, match=r"masks\[0\]"):
        measurements_from_kspace(k, masks=[own[:2], own], acceleration=4)


def test_prepare_images_cli_formats_and_heldout_split(tmp_path):
    from PIL import Image

    vol = np.abs(brain_phantom(0, num_slices=2, grid_shape=(24, 24), pixel_size=(2 / 24, 2 / 24)))
    (tmp_path / "pngs").mkdir()
    for i, s in enumerate(vol):
        Image.fromarray((255 * s / vol.max()).astype(np.uint8)).save(tmp_path / "pngs" / f"{i}.png")
    np.save(tmp_path / "two.npy", np.stack([vol, vol[::-1]]))  # (V, S, H, W): two volumes
    np.savez(tmp_path / "one.npz", a=vol)
    names = [n for n, _ in load_image_volumes([tmp_path / "pngs", tmp_path / "two.npy", tmp_path / "one.npz"])]
    assert names == ["pngs", "two.npy[0]", "two.npy[1]", "one.npz[a]"]
    out = tmp_path / "out.h5"
    args = ["prepare", "images", str(tmp_path / "pngs"), str(tmp_path / "two.npy"), str(tmp_path / "one.npz"),
            "-o", str(out), "--acceleration", "4", "--resolution", "16", "--masks-per-slice", "3"]  # fmt: skip
    assert main(args) == 0
    train, held = MeasurementFile(out), MeasurementFile(tmp_path / "out_heldout.h5")
    assert len(train) == 3 * 2 * 3 and len(held) == 2  # 3 training volumes × 2 slices × 3 masks; 1 held out
    assert train.family_config["image_shape"] == [1, 16, 16] and train.metadata["files"][-1] == "two.npy[1]"
    targets = load_targets(tmp_path / "out_heldout_targets.h5")
    assert targets["files"] == ["one.npz[a]"] and tuple(targets["target"].shape) == (2, 16, 16)


def test_load_image_volumes_errors_name_the_file(tmp_path):
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(ValueError, match=r"x\.txt.*unsupported"):
        load_image_volumes(tmp_path / "x.txt")
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"bad.npy: expected .*shape \(2, 2, 2, 2, 2\)"):
        load_image_volumes(tmp_path / "bad.npy")


def test_nifti_volume_slices_along_the_last_axis(tmp_path):
    nib = pytest.importorskip("nibabel")
    data = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    [(name, vol)] = load_image_volumes(tmp_path / "v.nii.gz")
    assert name == "v.nii.gz" and vol.shape == (3, 12, 10)
    np.testing.assert_allclose(vol[1], data[..., 1])


# -- the fit test and the safe reconstruction -------------------------------------------------------------
class _Template(nn.Module):
    """A 'prior' that knows one image: it always answers the template (2 real channels)."""

    def __init__(self, template: torch.Tensor):
        super().__init__()
        self.register_buffer("t", torch.view_as_real(template).permute(0, 3, 1, 2).contiguous())

    def forward(self, x, sigma, cond, project=None):
        return self.t.expand(x.shape[0], -1, -1, -1)


def _setup(images, family, seed=0):
    A = family.sample(images.shape[0], generator=torch.Generator().manual_seed(seed))
    y = A(images)
    return GaussianLikelihood(A, y, 1e-3)


def test_check_fit_scores_fires_and_shrinks_on_a_mismatched_image():
    g = torch.Generator().manual_seed(0)
    family = CartesianMRIFamily((1, 32, 32), acceleration=4, center_fraction=0.08, drop_fraction=0.2)
    phantom = torch.as_tensor(np.abs(brain_phantom(0, num_slices=1, grid_shape=(32, 32), pixel_size=(2 / 32,) * 2)))
    template = phantom.to(torch.complex64)[None]  # (1, 1, 32, 32)
    prior = Prior(_Template(template[0]), family)
    other = torch.as_tensor(np.abs(knee_phantom(0, num_slices=1, grid_shape=(32, 32), pixel_size=(2 / 32,) * 2)))
    images = torch.cat([template, other.to(torch.complex64)[None]]).to(torch.complex64)
    lik = _setup(images, family)
    report = check_fit(prior, lik, generator=g, threshold=0.2)
    assert report.score[0] < 0.01 and report.score[1] > 0.2
    assert report.fires.tolist() == [False, True] and report.shrink[0] > 0.99 and report.shrink[1] < 0.5
    assert "1 of 2" in report.warning() and report.as_dict()["fired_fraction"] == 0.5
    # per-acceleration thresholds: the nearest acceleration's entry
    assert check_fit(prior, lik, generator=g, threshold={"4": 100.0, "8": 0.0}).fires.tolist() == [False, False]
    assert fit_settings(prior)["threshold"] is None  # nothing calibrated for this prior: nothing fires
    assert not check_fit(prior, lik, generator=g).fires.any()
    # the safe reconstruction keeps the data and interpolates to the minimum-norm image
    x_hat = template.expand(2, -1, -1, -1)
    zf = lik.backprojection()
    safe0 = shrink_to_data(x_hat, lik, torch.zeros(2))
    assert torch.allclose(safe0, zf, atol=1e-4)
    safe1 = shrink_to_data(x_hat, lik, torch.ones(2))
    assert torch.allclose(lik.A(safe1), lik.y, atol=1e-4) and torch.allclose(safe1[0], template[0], atol=1e-4)


def test_calibrate_threshold_is_a_quantile_of_validation_scores():
    assert calibrate_threshold(torch.arange(101.0), 0.95) == 95.0
    with pytest.raises(ValueError, match="at least 2"):
        calibrate_threshold(torch.tensor([1.0]))


def test_reconstruct_defaults_are_the_recommended_settings_and_the_card_overrides_them():
    from ambient_science.sampling.reconstruction import recommended_settings

    family = CartesianMRIFamily((1, 16, 16), acceleration=4)
    prior = Prior(_Template(torch.zeros(1, 16, 16, dtype=torch.complex64)), family)
    dps = recommended_settings(prior, "dps")
    assert [dps[k] for k in ("steps", "num_samples", "inference_operator", "data_consistency")] == [48, 4, "full", "cg"]
    assert recommended_settings(prior, "one_step")["num_draws"] == 8
    prior.config = {"sampler": {"dps": {"steps": 12, "inference_operator": "law"}}}
    dps = recommended_settings(prior, "dps")
    assert (dps["steps"], dps["inference_operator"], dps["num_samples"]) == (12, "law", 4)


def test_reconstruct_safe_mode_warns_and_replaces_only_the_images_that_fire():
    from ambient_science.sampling.reconstruction import reconstruct

    family = CartesianMRIFamily((1, 32, 32), acceleration=4, center_fraction=0.08, drop_fraction=0.2)
    grid = dict(num_slices=1, grid_shape=(32, 32), pixel_size=(2 / 32,) * 2)
    template = torch.as_tensor(np.abs(brain_phantom(0, **grid))).to(torch.complex64)[None]
    other = torch.as_tensor(np.abs(knee_phantom(0, **grid))).to(torch.complex64)[None]
    prior = Prior(_Template(template[0]), family)
    prior.config = {"fit": {"threshold": 0.2}}
    lik = _setup(torch.cat([template, other]), family)
    g = torch.Generator().manual_seed(0)
    off = reconstruct(prior, lik, method="one_step", generator=g, safe_mode="off")
    assert off.fit is None
    with pytest.warns(UserWarning, match="does not fit 1 of 2"):
        post = reconstruct(prior, lik, method="one_step", generator=torch.Generator().manual_seed(0))
    assert post.fit.fires.tolist() == [False, True]
    assert torch.equal(post.mean[0], off.mean[0])  # the image that fits is untouched
    zf = lik.backprojection()[1]
    assert (post.mean[1] - zf).abs().pow(2).sum() < (off.mean[1] - zf).abs().pow(2).sum()  # pulled to the data
    marker = torch.full_like(zf, 7.0)[None].expand(2, -1, -1, -1)
    with pytest.warns(UserWarning, match="does not fit"):
        fb = reconstruct(prior, lik, method="one_step", generator=torch.Generator().manual_seed(0),
                         fallback=lambda _lik: marker)  # fmt: skip
    assert torch.equal(fb.mean[1], marker[1]) and torch.equal(fb.mean[0], off.mean[0])


@pytest.mark.slow
def test_total_variation_baseline_beats_zero_filling_on_a_piecewise_constant_image():
    from ambient_science.operators.mri_recon import total_variation

    x = torch.zeros(1, 1, 32, 32, dtype=torch.complex64)
    x[..., 8:24, 10:20] = 1.0
    x[..., 12:16, 4:28] = 0.5
    family = CartesianMRIFamily((1, 32, 32), acceleration=3, center_fraction=0.1)
    A = family.sample(1, generator=torch.Generator().manual_seed(0))
    y = A(x)
    tv = total_variation(A, y, lam=1e-2, max_iter=200)
    assert tv.shape == x.shape and tv.dtype == torch.complex64
    assert (tv - x).abs().norm() < 0.9 * (A.H(y) - x).abs().norm()
