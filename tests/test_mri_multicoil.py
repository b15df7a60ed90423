"""Multi-coil (SENSE) ambient training and evaluation on synthetic knee volumes: the ESPIRiT maps that
``prepare`` stores recover the simulated birdcage maps, the ambient loss's further corruption keeps each slice's
maps and only removes k-space columns (the network sees one coil-combined image), and the evaluation's
multi-coil rows (zero-filled RSS, CG-SENSE) and its coil-count check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from ambient_science.datasets.fastmri import image_grid
from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.prepare import load_targets, prepare_fastmri
from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.operators.coils import birdcage_maps
from ambient_science.operators.fourier import fft2c
from ambient_science.operators.mri import CartesianMRIFamily
from ambient_science.operators.mri_masks import acs_width
from ambient_science.pipelines import mri
from ambient_science.pipelines.mri_eval import evaluate, targets_path
from ambient_science.training.losses import LossConfig, build_loss

SIZE, COILS = 64, 4


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("mc_raw")
    return write_synthetic_knee_dataset(root, 1, seed=3, num_slices=2, recon_size=(SIZE, SIZE), num_coils=COILS)


def _prepare(raw, path, R):
    """The pipeline's preparation (its centre fraction for R, targets for evaluation)."""
    return mri.prepare_volumes(raw, path, acceleration=R, resolution=None, seed=1, targets=True)


@pytest.mark.parametrize("R, median, q05", [(4, 0.99, 0.95), (8, 0.98, 0.85)])
def test_espirit_maps_of_prepared_synthetic_data_recover_the_birdcage_maps(raw, tmp_path, R, median, q05):
    path = _prepare(raw, tmp_path / f"r{R}.h5", R)
    data = MeasurementFile(path)
    est = torch.stack([data[i]["params"]["coil_maps"] for i in range(len(data))])  # (S, C, h, w)
    assert est.shape == (2, COILS, SIZE, SIZE)
    # the generator's maps live on the encoded grid (2 h × 1.15 w); on the recon grid they are its centre
    H, W = 2 * SIZE, 2 * round(SIZE * 1.15 / 2)
    true = image_grid(fft2c(birdcage_maps(COILS, (H, W))), (SIZE, SIZE))
    true = true / true.abs().pow(2).sum(0, keepdim=True).sqrt()
    target = load_targets(targets_path(path))["target"]
    inside = target > 0.1 * target.amax(dim=(-2, -1), keepdim=True)  # the object, not the background
    agreement = (est.conj() * true).sum(dim=1).abs()[inside]  # |<S_est, S_true>| per pixel: 1 up to a phase
    assert float(agreement.median()) > median and float(agreement.quantile(0.05)) > q05
    assert float((est.abs().pow(2).sum(dim=1).sqrt()[inside] > 0.9).float().mean()) > 0.99  # unit norm inside


class _Recorder(nn.Module):
    """A stand-in network (``net(x, sigma, cond, project=P)``) that records what it is given."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.5))
        self.seen = []

    def forward(self, x, sigma, cond, project=None):
        self.seen.append((tuple(x.shape), tuple(cond.shape)))
        return self.weight * x


def test_sense_further_corruption_keeps_the_maps_and_reduces_the_mask(raw, tmp_path):
    path = prepare_fastmri(raw, tmp_path / "train.h5", acceleration=4, center_fraction=0.08, drop_fraction=0.5)
    data = MeasurementFile(path)
    family = data.family
    assert isinstance(family, CartesianMRIFamily) and family.num_coils == COILS
    batch = default_collate([data[i] for i in range(len(data))])
    A = family.make(batch["params"])
    assert not torch.equal(A.coil_maps[0], A.coil_maps[1])  # one ESPIRiT estimate per slice, kept per slice
    loss = build_loss(LossConfig(), family, sigma_data=0.5)
    A_tilde, sigma, eps = loss.draw(A, generator=torch.Generator().manual_seed(0))
    assert A_tilde.coil_maps.data_ptr() == A.coil_maps.data_ptr()  # the same maps, not a copy or a law draw
    assert bool((A_tilde.mask <= A.mask).all()) and bool((A_tilde.mask.sum(1) < A.mask.sum(1)).all())
    acs = acs_width(SIZE, 0.08)
    centre = slice(SIZE // 2 - acs // 2, SIZE // 2 - acs // 2 + acs)
    assert bool((A_tilde.mask[:, centre] == 1).all())  # the calibration region is never dropped
    # the loss runs through SENSE: the network sees one coil-combined image (2 real channels) and the mask
    net = _Recorder()
    value = loss(net, batch["y"], A, sigma_n=batch["sigma_n"], A_tilde=A_tilde, sigma=sigma.clamp_min(0.1), noise=eps)
    assert value.shape == (2,) and bool(torch.isfinite(value).all())
    assert net.seen == [((2, 2, SIZE, SIZE), (2, 1, SIZE, SIZE))]
    value.mean().backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad)


def test_evaluate_multicoil_rows_and_the_coil_count_check(raw, tmp_path):
    path = _prepare(raw, tmp_path / "test.h5", 4)
    metrics, images = evaluate({}, path, test_slices=1, l1_lams=(1e-3,), cg_lams=(1e-3, 1e-2, 1e-1), progress=False)
    assert set(metrics) == {"zero_filled", "zero_filled_rss", "cg_sense", "l1_wavelet"}
    assert metrics["cg_sense"]["lam"] in (1e-3, 1e-2, 1e-1) and "lam_interior" in metrics["cg_sense"]
    assert images["zero_filled"].shape == images["cg_sense"].shape == (1, 1, SIZE, SIZE)  # coil-combined
    # SENSE unfolds what zero-filling aliases: 4 coils at R = 4
    assert metrics["cg_sense"]["psnr"] > metrics["zero_filled"]["psnr"] + 1.0
    single = SimpleNamespace(family=CartesianMRIFamily((1, SIZE, SIZE)))
    with pytest.raises(ValueError, match=r"prior 'ambient' was trained on single-coil data.*4-coil"):
        evaluate({"ambient": single}, path, test_slices=1, l1_lams=(), progress=False)
