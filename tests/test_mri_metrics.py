"""fastMRI metrics agree with scikit-image (test-only dependency) and return Python floats."""

import numpy as np
import pytest
import torch

from ambient_science.metrics.mri import evaluate_volume, mse, nmse, psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def _volumes(seed, shape=(3, 20, 17)):
    rng = np.random.default_rng(seed)
    gt = rng.random(shape) * rng.uniform(0.5, 3)
    pred = gt + rng.normal(0, 0.1, shape)
    return gt, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_skimage(seed):
    gt, pred = _volumes(seed)
    maxval = gt.max()
    ref_psnr = skimage_metrics.peak_signal_noise_ratio(gt, pred, data_range=maxval)
    ref_ssim = np.mean([skimage_metrics.structural_similarity(g, p, data_range=maxval) for g, p in zip(gt, pred)])
    ref_nmse = np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2
    assert psnr(gt, pred) == pytest.approx(ref_psnr, rel=1e-9)
    assert ssim(gt, pred) == pytest.approx(ref_ssim, rel=1e-9)
    assert nmse(gt, pred) == pytest.approx(ref_nmse, rel=1e-9)
    assert mse(gt, pred) == pytest.approx(skimage_metrics.mean_squared_error(gt, pred), rel=1e-9)


def test_metrics_return_floats_accept_tensors_complex_and_crop():
    gt, pred = _volumes(3, (2, 24, 24))
    z = torch.from_numpy(pred) * torch.exp(1j * torch.ones(1))  # complex -> magnitude
    out = evaluate_volume(torch.from_numpy(gt), z, crop=(16, 16))
    assert all(type(v) is float for v in out.values())
    g16, p16 = gt[:, 4:20, 4:20], np.abs(pred[:, 4:20, 4:20])  # complex inputs count as magnitudes
    assert out["psnr"] == pytest.approx(skimage_metrics.peak_signal_noise_ratio(g16, p16, data_range=g16.max()))
    assert ssim(gt[0], gt[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(gt, pred[:1])
