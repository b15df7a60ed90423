"""Shipped priors (``ambient_science.pretrained``) and ``ambient-science export-prior``.

Every shipped prior: loads by name (weights' SHA-256 checked), its config matches its weights, its card is
complete and agrees with its config, an ``ambient`` label sits on corrupted data only, and one reconstruction
step runs on a measurement of its own operator family.
"""

import json
from pathlib import Path

import pytest
import torch

from ambient_science import pretrained
from ambient_science.cli import main
from ambient_science.cli.export import corruption_law
from ambient_science.datasets.measurements import save_measurements
from ambient_science.network import build_network, network_config_from_dict
from ambient_science.operators import CleanFamily, PixelMaskFamily
from ambient_science.registry import family_from_config
from ambient_science.sampling.fit import fit_scorer
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.reconstruction import reconstruct
from ambient_science.training.checkpoint import CheckpointError, is_exported_prior, load_checkpoint
from ambient_science.training.config import _toml_loads

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"mri-knee-synthetic-r4", "mri-knee-synthetic-r4-ambient", "mri-knee-synthetic-clean",
            "black-hole-eht2017-32"}
SHIPPED = pretrained.available()

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_promised_priors_ship_and_stay_small():
    assert set(SHIPPED) >= EXPECTED, f"missing shipped priors: {sorted(EXPECTED - set(SHIPPED))}"
    size = sum(f.stat().st_size for name in SHIPPED for f in pretrained.path(name).iterdir())
    assert size < 20e6, f"shipped priors take {size / 1e6:.1f} MB (budget 20 MB)"


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError, match="available"):
        pretrained.load("no-such-prior")


@pytest.mark.parametrize("name", SHIPPED)
def test_prior_loads_and_its_config_matches_its_weights(name):
    info = pretrained.info(name)
    prior = pretrained.load(name)
    assert not prior.network.training and not any(p.requires_grad for p in prior.network.parameters())
    # the weights file holds exactly the network that prior.json describes (strict load, same count)
    net = build_network(network_config_from_dict(info["network"]))
    weights = {k: v for k, v in prior.network.state_dict().items()}
    net.load_state_dict(weights, strict=True)
    n_params = sum(p.numel() for p in prior.network.parameters())
    assert n_params == info["card"]["network"]["parameters"]
    assert prior.family.config() == family_from_config(info["family"]).config()
    assert all(torch.isfinite(p).all() for p in prior.network.parameters())


@pytest.mark.parametrize("name", SHIPPED)
def test_card_is_complete_and_agrees_with_the_committed_config(name):
    info = pretrained.info(name)
    card = info["card"]
    for key in ("kind", "corruption", "data", "network", "steps", "images_seen", "wall_seconds", "machine",
                "commit", "config_file", "config_text", "command"):  # fmt: skip
        assert card.get(key) not in (None, ""), f"{name}: card has no {key!r}"
    assert card["name"] == name and card["steps"] == info["step"]
    assert card["images_seen"] == card["steps"] * card["batch_size"] and card["wall_seconds"] > 0
    assert len(card["commit"]) >= 7
    expected = {"source": f"shipped: ambient_science.pretrained {name!r}", "steps": card["steps"],
                "images_seen": card["images_seen"], "seconds": card["wall_seconds"],
                "commit": card["commit"]}  # fmt: skip
    assert pretrained.budget(name) == expected
    committed = _toml_loads(card["config_text"], card["config_file"])
    for key, value in committed["network"].items():
        if key != "kind":
            assert info["network"][key] == value, f"{name}: network.{key} differs from the config that trained it"
    assert committed["train"]["batch_size"] == card["batch_size"]
    config_file = ROOT / card["config_file"]
    assert config_file.is_file(), f"{name}: its config {card['config_file']} is not in the repository"
    assert config_file.read_text() == card["config_text"], f"{name}: {card['config_file']} changed since training"
    assert (pretrained.ROOT / "README.md").read_text().count(f"## `{name}`") == 1, "model card missing in README"


@pytest.mark.parametrize("name", SHIPPED)
def test_ambient_label_means_corrupted_training_data(name):
    info = pretrained.info(name)
    card = info["card"]
    law = corruption_law(card["data"]["family"], info["family"])
    assert card["corruption"] == law
    if card["kind"] == "ambient":
        assert law != "none", f"{name} is labelled ambient but its training data were not corrupted"
        assert info["family"]["family"] != "clean"
        assert info["family"].get("drop_fraction", 1.0) > 0, f"{name}: ambient training needs further corruption"
    elif card["kind"] == "em":  # a clean-image prior trained by EM from the corrupted measurements
        assert law != "none" and info["train"]["method"] == "em" and info["family"]["family"] == "clean"
        assert card["em"]["rounds"] >= 1 and card["em"]["e_step_forwards"] > 0
        scorer = fit_scorer(pretrained.load(name))  # its fit test: the ambient prior of the same data
        assert scorer is not None and scorer.config["card"]["data"]["file"] == card["data"]["file"]
    else:
        assert card["kind"] == "clean" and law == "none"


@pytest.mark.parametrize("name", SHIPPED)
def test_one_reconstruction_step_runs(name):
    prior = pretrained.load(name)
    g = torch.Generator().manual_seed(0)
    A = prior.family.sample(1, generator=g)
    x = 0.3 * torch.rand(A.ishape, generator=g)
    if x.is_complex():
        x = x.real.to(x.dtype)
    y = A(x)
    lik = GaussianLikelihood(A, y, torch.full((1,), 0.05))
    post = reconstruct(prior, lik, method="dps", num_samples=1, steps=2, generator=g, progress=False)
    assert post.mean.shape == x.shape and torch.isfinite(post.mean).all()


# -- export ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs: one on masked data (ambient) and one on clean data (``A = I``)."""
    root = tmp_path_factory.mktemp("export")
    small = ["--set", "network.model_channels=8", "--set", "network.channel_mult=[1, 2]", "--set",
             "network.attn_levels=[]", "--set", "train.batch_size=4", "--set", "train.progress=false",
             "--steps", "2", "--device", "cpu"]  # fmt: skip
    out = {}
    for name, family in (("masked", PixelMaskFamily((1, 8, 8), p=0.4, delta=0.2)), ("clean", CleanFamily((1, 8, 8)))):
        g = torch.Generator().manual_seed(0)
        A = family.sample(8, generator=g)
        data = save_measurements(root / f"{name}.h5", A(0.5 * torch.randn(8, 1, 8, 8, generator=g)), A.params(), family)
        assert main(["train", "--data", str(data), "--out-dir", str(root / name), *small]) == 0
        out[name] = root / name
    config = root / "c.toml"
    config.write_text("[network]\nmodel_channels = 8\n")
    return root, out, config


def test_export_writes_a_loadable_prior_and_its_card(runs, capsys):
    root, run, config = runs
    dest = root / "shipped"
    argv = ["export-prior", str(run["masked"]), "--name", "toy", "--kind", "ambient", "--config", str(config),
            "--commit", "abc1234", "--out-root", str(dest)]  # fmt: skip
    assert main(argv) == 0
    assert is_exported_prior(dest / "toy") and (dest / "README.md").read_text().count("## `toy` (ambient)") == 1
    a, b = load_checkpoint(dest / "toy"), load_checkpoint(run["masked"])
    assert all(torch.equal(u, v) for u, v in zip(a.network.state_dict().values(), b.network.state_dict().values()))
    card = json.loads((dest / "toy" / "prior.json").read_text())["card"]
    assert card["images_seen"] == 8 and card["commit"] == "abc1234" and card["corruption"] != "none"
    assert main(argv) == 2  # never replaced silently (a user error: one line, exit 2)
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    with pytest.raises(CheckpointError, match="EMA weights only"):
        load_checkpoint(dest / "toy", weights="model")


def test_export_refuses_wrong_labels_and_corrupt_weights(runs, capsys):
    root, run, config = runs
    base = ["--config", str(config), "--commit", "abc1234", "--out-root", str(root / "bad")]
    assert main(["export-prior", str(run["clean"]), "--name", "x", "--kind", "ambient", *base]) == 2
    assert "not an ambient prior" in capsys.readouterr().err
    assert main(["export-prior", str(run["masked"]), "--name", "x", "--kind", "clean", *base]) == 2
    assert "label the prior 'ambient'" in capsys.readouterr().err
    assert not (root / "bad" / "x").exists()
    assert main(["export-prior", str(run["clean"]), "--name", "c", "--kind", "clean", *base]) == 0
    weights = root / "bad" / "c" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(root / "bad" / "c")
