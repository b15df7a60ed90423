"""Regression tests of issue #16 beyond the bad-input table (tests/test_bad_inputs.py): each reproduces the
original report and checks the fix.

3. non-binary Cartesian masks; 6. resume semantics; 7. the k-space noise level of files that do not record it;
8. the prior's σ_n floor; 9. ``inference_operator="measurement"``; 11. the wall-clock budget and SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import signal
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ambient_science.cli import main
from ambient_science.datasets.kspace_noise import block_energies, estimate_noise_std
from ambient_science.datasets.measurements import save_measurements
from ambient_science.datasets.synthetic_knee import synthetic_knee_volume, write_synthetic_knee_dataset
from ambient_science.operators import PixelMaskFamily
from ambient_science.operators.mri import CartesianMRI
from ambient_science.pipelines.training import train
from ambient_science.sampling import reconstruction as recon_module
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior, load_prior
from ambient_science.sampling.reconstruction import reconstruct
from ambient_science.sampling.samplers import initial_noise, sample_heun
from ambient_science.schedules import edm_sigmas
from ambient_science.training.checkpoint import load_checkpoint
from ambient_science.training.config import DataConfig, LossConfig, RunConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

NET = {"kind": "mlp", "hidden": 16, "depth": 1}


def _data(path: Path, sigma_n: float = 0.05, n: int = 8) -> Path:
    family = PixelMaskFamily((1, 4, 4), p=0.4, delta=0.2)
    g = torch.Generator().manual_seed(0)
    A = family.sample(n, generator=g)
    return save_measurements(path, A(0.5 * torch.randn(n, 1, 4, 4, generator=g)), A.params(), family, sigma_n=sigma_n)


def _config(data: Path, out: Path, **train) -> RunConfig:
    defaults = dict(out_dir=str(out), steps=4, batch_size=4, progress=False, device="cpu", warmup_images=0)
    return RunConfig(data=DataConfig(path=str(data)), network=dict(NET), loss=LossConfig(kind="auto"),
                     train=TrainConfig(**{**defaults, **train}))  # fmt: skip


# -- 3 ----------------------------------------------------------------------------------------------------------


def test_non_binary_mask_is_refused_instead_of_an_inconsistent_normal_operator():
    """Reported: m[0, ::3] = 0.5 was accepted and A.N(x) differed from A.H(A(x)) by 18 %."""
    m = torch.ones(2, 16)
    m[0, ::3] = 0.5
    with pytest.raises(ValueError, match=r"mask must be binary.*0\.5"):
        CartesianMRI(m)
    m[0, ::3] = 0.0  # a 0/1 mask: the normal operator is exactly A^H A
    A = CartesianMRI(m)
    x = torch.randn(2, 1, 16, 16, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(A.N(x), A.H(A(x)))


# -- 6, 8, 11 (one small training run) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    data = _data(root / "m.h5")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = train(_config(data, root / "run"))
    torch.set_num_threads(threads)
    return root, data, result


def test_resume_auto_says_it_starts_fresh_and_bare_resume_refuses(run, tmp_path, capsys):
    _, data, _ = run
    train(_config(data, tmp_path / "a", steps=1, resume="auto"))
    assert "no checkpoint in" in capsys.readouterr().err and load_checkpoint(tmp_path / "a").step == 1
    assert main(["train", "--data", str(data), "--out-dir", str(tmp_path / "b"), "--resume", "--set",
                 "network.kind='mlp'", "--device", "cpu"]) == 2  # fmt: skip
    assert "nothing to resume" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_training_records_sigma_n_and_the_prior_floors_its_samplers_there(run, monkeypatch):
    """Reported: a noisy-loss prior could be called below σ_n, where it never trained."""
    root, _, result = run
    assert result.config["loss"]["sigma_n"] == pytest.approx({"min": 0.05, "median": 0.05, "max": 0.05})
    prior = load_prior(root / "run")
    assert prior.sigma_n == pytest.approx(0.05)
    g = torch.Generator().manual_seed(0)
    A = prior.family.sample(2, generator=g)
    lik = GaussianLikelihood(A, A(torch.randn(2, 1, 4, 4, generator=g)), sigma=0.05)
    seen: list[float] = []
    real = recon_module.edm_sigmas
    monkeypatch.setattr(recon_module, "edm_sigmas", lambda *a, **k: seen.append(k["sigma_min"]) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default schedule stops at σ_n: no warning
        reconstruct(prior, lik, method="dps", generator=g, num_samples=1, steps=5, progress=False)
    assert seen == [pytest.approx(0.05)]
    with pytest.warns(UserWarning, match="below the prior's sigma_n"):
        reconstruct(prior, lik, method="daps", generator=g, num_samples=1, steps=3, sigma_min=1e-3, progress=False,
                    sampler_options={"langevin_steps": 1})  # fmt: skip
    D = prior.denoiser(2, generator=g)
    assert D.sigma_floor == pytest.approx(0.05)
    with pytest.warns(UserWarning, match="below σ_n"):  # a sampler called directly warns
        sample_heun(D, initial_noise((2, 1, 4, 4), 1.0, generator=g), edm_sigmas(3, sigma_max=1.0))
    plain = json.loads((root / "run" / "config.json").read_text())
    plain["loss"]["kind"] = "ambient"
    from ambient_science.sampling.prior import trained_sigma_n

    assert trained_sigma_n(plain) == 0.0  # the plain ambient loss trains at every σ


def test_max_minutes_stops_with_a_checkpoint_and_resume_finishes(run, tmp_path):
    _, data, _ = run
    result = train(_config(data, tmp_path / "r", steps=50, max_minutes=1e-9))
    assert result.step == 1 and result.stopped.startswith("train.max_minutes") and result.signal == 0
    assert load_checkpoint(tmp_path / "r").step == 1
    done = train(_config(data, tmp_path / "r", steps=3, resume="latest"))
    assert done.step == 3 and done.stopped is None


def test_sigterm_stops_with_a_checkpoint_and_the_handler_is_restored(run, tmp_path):
    _, data, _ = run
    previous = signal.getsignal(signal.SIGTERM)

    def send(step, metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    from ambient_science.datasets.measurements import MeasurementFile
    from ambient_science.training import trainer

    result = trainer.train(_config(data, tmp_path / "s", steps=50), callback=send, open_data=MeasurementFile)
    assert result.step == 2 and result.stopped == "received SIGTERM" and result.signal == signal.SIGTERM
    assert load_checkpoint(tmp_path / "s").step == 2
    assert signal.getsignal(signal.SIGTERM) == previous


# -- 9 --------------------------------------------------------------------------------------------------------------


def test_measurement_inference_operator_is_the_test_operator_itself():
    class Echo(torch.nn.Module):
        def forward(self, x, sigma, cond, project=None):
            return x

    family = PixelMaskFamily((1, 4, 4), p=0.5, delta=0.3)
    prior = Prior(Echo(), family)
    g = torch.Generator().manual_seed(0)
    A = family.sample(3, generator=g)
    D = prior.denoiser(3, generator=g, inference_operator="measurement", test_operator=A)
    torch.testing.assert_close(D.A_inf.mask, A.mask)  # no further corruption
    x = torch.randn(3, 1, 4, 4, generator=g)
    torch.testing.assert_close(D(x, 0.5), A.H(A(x)))  # the network's input is A^H A x
    law = prior.denoiser(3, generator=g, inference_operator="test", test_operator=A)
    assert bool((law.A_inf.mask <= A.mask).all()) and bool((law.A_inf.mask < A.mask).any())
    with pytest.raises(ValueError, match="needs the test operator"):
        prior.denoiser(3, generator=g, inference_operator="measurement")


# -- 7 --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coils", [None, 4])
def test_kspace_noise_estimate_matches_the_known_noise(coils):
    for level in (0.001, 0.01, 0.03):
        vol = synthetic_knee_volume(1, recon_size=(64, 64), num_slices=2, num_coils=coils, noise_level=level)
        k = torch.from_numpy(vol["kspace"])
        est = estimate_noise_std([block_energies(k[i]) for i in range(k.shape[0])], block=4)
        assert est.sigma == pytest.approx(vol["attrs"]["noise_std"], rel=0.02), (coils, level)
        assert 0.1 < est.fraction < 0.3


def test_prepare_estimates_sigma_n_when_the_file_does_not_record_it(tmp_path, capsys):
    """Reported: real fastMRI files have no noise_std, so sigma_n was silently 0."""
    paths = write_synthetic_knee_dataset(tmp_path / "raw", 1, seed=5, num_slices=2, recon_size=(64, 64))
    with h5py.File(paths[0], "r+") as f:
        known = float(f.attrs["noise_std"])
        del f.attrs["noise_std"]  # as a real fastMRI file
    argv = ["prepare", "fastmri", str(tmp_path / "raw"), "-o", str(tmp_path / "m.h5"), "--resolution", "16"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    with h5py.File(tmp_path / "m.h5") as f:
        meta = json.loads(f.attrs["metadata"])
        sigma_n = f["sigma_n"][()]
    (entry,) = meta["noise"]
    assert entry["kspace_noise_std"] == pytest.approx(known, rel=0.05) and "estimated from the data" in entry["method"]
    assert np.all(sigma_n == pytest.approx(entry["sigma_n"])) and entry["sigma_n"] > 0
    assert f"sigma_n = {entry['sigma_n']:.3g}" in printed and "estimated from the data" in printed
    assert main([*argv[:3], "-o", str(tmp_path / "g.h5"), "--resolution", "16", "--sigma-n", "0.02"]) == 0
    with h5py.File(tmp_path / "g.h5") as f:
        assert np.all(f["sigma_n"][()] == pytest.approx(0.02))
        assert json.loads(f.attrs["metadata"])["noise"][0]["method"] == "given (sigma_n)"
    assert math.isfinite(entry["sigma_n"])
