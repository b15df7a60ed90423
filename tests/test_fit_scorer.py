"""The fit test of a prior without a further corruption (a clean-image prior, e.g. trained by EM from an ambient
one) through a scorer: an ambient prior of the same data named in its ``"fit"`` entry
(:func:`ambient_science.sampling.fit.fit_scorer`, ``ambient-science export-prior --fit-scorer``)."""

import json
import shutil

import numpy as np
import pytest
import torch

from ambient_science import pretrained
from ambient_science.cli import main
from ambient_science.datasets.measurements import save_measurements
from ambient_science.datasets.synthetic_knee import knee_phantom
from ambient_science.operators import CartesianMRIFamily, CleanFamily
from ambient_science.sampling.fit import check_fit, fit_applies, fit_scorer
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior, load_prior
from ambient_science.sampling.reconstruction import reconstruct

AMBIENT = "mri-knee-synthetic-r4-ambient"

pytestmark = pytest.mark.usefixtures("one_thread")


class _Zero(torch.nn.Module):
    """A clean-image 'network' that always answers zeros (its own fit would be poor; the scorer decides)."""

    def forward(self, x, sigma, cond=None, project=None):
        return 0.0 * x  # differentiable: A-DPS guides through it


def _knee_likelihood(n=2, seed=0):
    slices = [np.abs(knee_phantom(s, num_slices=1, grid_shape=(64, 64), pixel_size=(3 / 64,) * 2))[0] for s in range(n)]
    images = torch.as_tensor(np.stack(slices))[:, None].to(torch.complex64)
    images = 0.5 * images / images.abs().amax(dim=(1, 2, 3), keepdim=True)
    family = CartesianMRIFamily((1, 64, 64), acceleration=4, center_fraction=0.08, drop_fraction=0.2)
    A = family.sample(n, generator=torch.Generator().manual_seed(seed))
    return GaussianLikelihood(A, A(images), 0.01)


def _clean_prior(fit: dict) -> Prior:
    prior = Prior(_Zero(), CleanFamily((1, 64, 64), is_complex=True))
    prior.config = {"fit": fit}
    return prior


def test_a_clean_prior_is_scored_by_its_scorer_with_its_own_threshold():
    lik = _knee_likelihood()
    ambient = pretrained.load(AMBIENT)
    clean = _clean_prior({"scorer": str(pretrained.path(AMBIENT)), "threshold": {"4": 0.01}})
    assert fit_scorer(ambient) is ambient and fit_scorer(clean) is fit_scorer(clean)  # loaded once
    report = check_fit(clean, lik, generator=torch.Generator().manual_seed(3))
    direct = check_fit(ambient, lik, generator=torch.Generator().manual_seed(3), threshold={"4": 0.01})
    assert torch.equal(report.score, direct.score) and torch.equal(report.shrink, direct.shrink)
    assert report.threshold == 0.01 and report.fires.all()  # the clean prior's own threshold, not the scorer's
    # reconstruct runs the test for it (a clean prior without a scorer gets none) and applies the safe mode
    with pytest.warns(UserWarning, match="does not fit 2 of 2"):
        post = reconstruct(clean, lik, method="dps", steps=2, num_samples=1, generator=torch.Generator().manual_seed(0))
    assert post.fit is not None and post.fit.fires.all()
    # measurements of the prior's own family (the identity), which the knee scorer cannot score: no test
    I = clean.family.sample(2, generator=torch.Generator().manual_seed(0))
    own = GaussianLikelihood(I, I(lik.backprojection()), 0.01)
    assert not fit_applies(clean, own) and fit_applies(clean, lik)
    assert reconstruct(clean, own, method="dps", steps=2, num_samples=1, generator=torch.Generator()).fit is None
    with pytest.raises(ValueError, match="scores measurements of that family only"):
        check_fit(clean, own, generator=torch.Generator())
    bare = _clean_prior({})
    assert fit_scorer(bare) is None
    post = reconstruct(bare, lik, method="dps", steps=2, num_samples=1, generator=torch.Generator().manual_seed(0))
    assert post.fit is None
    with pytest.raises(ValueError, match="names none"):
        check_fit(bare, lik, generator=torch.Generator())


def test_a_missing_or_unfit_scorer_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit_scorer(_clean_prior({"scorer": str(tmp_path / "nowhere")}))
    with pytest.raises(ValueError, match="without a further corruption"):
        fit_scorer(_clean_prior({"scorer": str(pretrained.path("black-hole-eht2017-32"))}))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A tiny clean-family run on complex 64² images (as an EM run's M-steps train) and a config file."""
    root = tmp_path_factory.mktemp("scorer")
    family = CleanFamily((1, 64, 64), is_complex=True)
    g = torch.Generator().manual_seed(0)
    A = family.sample(4, generator=g)
    images = torch.randn(4, 1, 64, 64, generator=g, dtype=torch.complex64)
    data = save_measurements(root / "clean.h5", A(0.3 * images), A.params(), family)
    small = ["--set", "network.model_channels=8", "--set", "network.channel_mult=[1, 2]", "--set",
             "network.attn_levels=[]", "--set", "train.batch_size=2", "--set", "train.progress=false",
             "--steps", "1", "--device", "cpu"]  # fmt: skip
    assert main(["train", "--data", str(data), "--out-dir", str(root / "run"), *small]) == 0
    config = root / "c.toml"
    config.write_text("[network]\nmodel_channels = 8\n")
    return root, root / "run", config


def test_export_copies_the_scorer_in_and_the_prior_is_scored_through_it(clean_run, capsys):
    root, run, config = clean_run
    scorer = root / "ambient"
    shutil.copytree(pretrained.path(AMBIENT), scorer)
    base = ["export-prior", str(run), "--kind", "clean", "--config", str(config), "--commit", "abc1234",
            "--out-root", str(root / "out")]  # fmt: skip
    assert main([*base, "--name", "mine", "--fit-scorer", str(scorer)]) == 0
    shutil.rmtree(scorer)  # the export is self-contained
    prior = load_prior(root / "out" / "mine")
    ambient = pretrained.load(AMBIENT)
    assert prior.config["fit"]["scorer"] == "fit_scorer"
    assert prior.config["fit"]["threshold"] == ambient.config["fit"]["threshold"]  # the scorer's calibration
    assert fit_scorer(prior).family.name == "cartesian_mri"
    assert not (root / "out" / "mine" / "fit_scorer" / "fit_scorer").exists()
    lik = _knee_likelihood()
    report = check_fit(prior, lik, generator=torch.Generator().manual_seed(1))
    direct = check_fit(ambient, lik, generator=torch.Generator().manual_seed(1))
    assert torch.equal(report.score, direct.score) and report.threshold == direct.threshold
    # refused: a scorer without a further corruption, and a prior of other images
    assert main([*base, "--name", "bad", "--fit-scorer", str(root / "out" / "mine")]) == 2
    assert "without a further corruption" in capsys.readouterr().err
    assert not (root / "out" / "bad").exists()
    meta = json.loads((root / "out" / "mine" / "prior.json").read_text())
    assert meta["card"]["corruption"] == "none" and "em" not in meta["card"]


def test_export_refuses_an_em_label_on_a_run_that_did_not_train_by_em(clean_run, capsys):
    root, run, config = clean_run
    argv = ["export-prior", str(run), "--name", "x", "--kind", "em", "--config", str(config), "--out-root",
            str(root / "em")]  # fmt: skip
    assert main(argv) == 2
    assert "not an em prior" in capsys.readouterr().err


def test_the_one_step_estimate_of_a_clean_image_prior_warns():
    lik = _knee_likelihood(n=1)
    with pytest.warns(UserWarning, match="never saw a mask"):
        reconstruct(_clean_prior({}), lik, method="one_step", generator=torch.Generator().manual_seed(0))
