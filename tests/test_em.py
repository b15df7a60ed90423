"""EM training (training/em.py): config checks, MMPS exact on a Gaussian prior, the Gaussian initial prior,
and a tiny end-to-end run with resume, through `train.method = "em"`."""

import json

import pytest
import torch
from torch import nn

from ambient_science.datasets.measurements import MeasurementDataset
from ambient_science.network import build_network
from ambient_science.operators import CartesianMRIFamily, PixelMaskFamily
from ambient_science.pipelines.em_init import TrainedInitialPrior, prior_samples, warm_start
from ambient_science.pipelines.training import train
from ambient_science.sampling.prior import Prior, load_prior
from ambient_science.training.config import (
    EMConfig,
    RunConfig,
    TrainConfig,
    resolve_network_config,
    run_config_from_dict,
)
from ambient_science.training.em import (
    GaussianPrior,
    _Counter,
    clean_family,
    em_compute,
    fit_gaussian,
    gaussian_posterior,
    posterior_denoise,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_em_config_is_checked():
    cfg = run_config_from_dict({"train": {"method": "em"}, "em": {"sampling_steps": 4, "eta": 0.0}})
    assert cfg.train.method == "em" and cfg.em.sampling_steps == 4 and cfg.em == EMConfig(sampling_steps=4, eta=0.0)
    with pytest.raises(ValueError, match=r"train\.method"):
        run_config_from_dict({"train": {"method": "maximum"}})
    with pytest.raises(ValueError, match=r"em\.cg_iters"):
        EMConfig(cg_iters=1.5)
    with pytest.raises(ValueError, match=r"em\.eta"):
        EMConfig(eta=2.0)
    with pytest.raises(ValueError, match=r"em\.gaussian_basis"):
        EMConfig(gaussian_basis="wavelet")
    with pytest.raises(ValueError, match="unknown key"):
        run_config_from_dict({"em": {"rounds": 3}})
    with pytest.raises(ValueError, match="sigma_min"):
        EMConfig(sigma_min=20.0)


class _GaussianDenoiser(nn.Module):
    """The exact denoiser of x ~ N(0, c I) (every real component), in the network's calling convention."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x, sigma, cond, project=None):
        return x * (self.c / (self.c + sigma.reshape(-1, 1, 1, 1) ** 2))


@pytest.mark.parametrize("is_complex", [False, True])
def test_posterior_denoise_is_exact_for_a_gaussian_prior(is_complex):
    """With a Gaussian prior Tweedie's covariance is exact, so MMPS (enough CG iterations) is the exact
    E[x | x_σ, y]: per observed pixel (x_σ/σ² + y/σ_n²) / (1/c + 1/σ² + 1/σ_n²), elsewhere the denoiser."""
    c, sigma, sigma_n = 0.3, 0.7, 0.2
    family = PixelMaskFamily((1, 6, 6), p=0.5, delta=0.1, is_complex=is_complex)
    clean = clean_family(family)
    g = torch.Generator().manual_seed(0)
    A = family.sample(3, generator=g)
    dtype = family.image_dtype()
    x_sigma = torch.randn(3, 1, 6, 6, dtype=dtype, generator=g)
    y = A(torch.randn(3, 1, 6, 6, dtype=dtype, generator=g))
    noise_var = torch.full((3, 1, 1, 1), sigma_n**2)
    out = posterior_denoise(_GaussianDenoiser(c), clean, clean.sample(3, generator=g), A, y, x_sigma, sigma,
                            noise_var, cg_iters=30)  # fmt: skip
    m = A.mask.expand_as(x_sigma).bool()
    observed = (x_sigma / sigma**2 + A.H(y) / sigma_n**2) / (1 / c + 1 / sigma**2 + 1 / sigma_n**2)
    hidden = (x_sigma / sigma**2) / (1 / c + 1 / sigma**2)
    torch.testing.assert_close(out, torch.where(m, observed, hidden), atol=1e-5, rtol=1e-4)


def test_gaussian_posterior_moments():
    """Exact posterior samples (perturbation): per observed pixel mean s y / (s + 2σ_n²) and variance
    s 2σ_n² / (s + 2σ_n²) of complex entries (pixel basis, prior N(0, s) per complex entry)."""
    family = PixelMaskFamily((1, 4, 4), p=0.5, delta=0.1, is_complex=True)
    s, sigma_n, n = 0.8, 0.3, 20_000
    prior = GaussianPrior(torch.zeros(1, 4, 4, dtype=torch.complex64), torch.full((1, 4, 4), s), "pixel")
    A = family.make({"mask": torch.ones(n, 1, 4, 4)})
    y = torch.full((n, 1, 4, 4), 1.0 + 0.5j, dtype=torch.complex64)
    x = gaussian_posterior(prior, A, y, torch.full((n,), sigma_n), torch.Generator().manual_seed(1), cg_iters=5)
    v = 2 * sigma_n**2
    torch.testing.assert_close(x.mean(0), y[0] * s / (s + v), atol=0.02, rtol=0)
    assert abs(float(x.var(0).mean()) - s * v / (s + v)) < 0.01


def _dataset(n=48):
    family = PixelMaskFamily((1, 8, 8), p=0.3, delta=0.2, is_complex=True)
    g = torch.Generator().manual_seed(0)
    base = torch.linspace(-1, 1, 8)
    x = (0.4 * base[None, None, :, None] + 0.2 * torch.randn(n, 1, 8, 8, generator=g)).to(torch.complex64)
    A = family.sample(n, generator=g)
    return MeasurementDataset(A(x), A.params(), family, sigma_n=0.01)


def test_fit_gaussian_recovers_the_mean():
    data = _dataset()
    prior, samples = fit_gaussian(data, data.family, EMConfig(gaussian_iters=8, batch_size=16), seed=0,
                                  log=lambda s: None)  # fmt: skip
    assert samples.shape == (48, 1, 8, 8) and prior.basis == "fourier"
    truth = 0.4 * torch.linspace(-1, 1, 8)[:, None].expand(8, 8)
    assert float((prior.mean[0].real - truth).abs().mean()) < 0.1


@pytest.mark.slow
def test_train_em_end_to_end_and_resume(tmp_path):
    data = _dataset()
    em = {"images_per_round": 32, "gaussian_iters": 2, "sampling_steps": 3, "batch_size": 16}

    def config(images):
        return RunConfig(
            network={"model_channels": 8, "channel_mult": [1, 2], "attn_levels": [], "num_blocks": 1},
            train=TrainConfig(out_dir=str(tmp_path / "em"), images=images, batch_size=8, warmup_images=8,
                              checkpoint_every=2, device="cpu", progress=False, method="em"),
            em=EMConfig(**em),
        )  # fmt: skip

    first = train(config(64), data)
    assert first.images_seen == 64 and first.checkpoint is not None
    cost = em_compute(tmp_path / "em")
    assert cost["rounds"] == 2 and cost["e_step_forwards"] == 48 * 3 and cost["e_step_vjps"] == 48 * 3 * 2
    state = json.loads((tmp_path / "em" / "em" / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    again = train(config(64), data)  # nothing left: no new round, same images
    assert again.images_seen == 64 and em_compute(tmp_path / "em")["rounds"] == 2
    more = train(config(96), data)  # a third round
    assert more.images_seen == 96 and em_compute(tmp_path / "em")["rounds"] == 3
    prior = load_prior(more.checkpoint)
    assert prior.family.name == "clean" and prior.family.is_complex
    x = torch.zeros(2, 1, 8, 8, dtype=torch.complex64)
    assert prior.denoiser(2, generator=torch.Generator())(x, 1.0).shape == (2, 1, 8, 8)


def test_a_clean_prior_ignores_the_test_operator():
    """An EM prior is a clean-image prior: every inference operator is the identity, also with an MRI test
    operator (whose parameters a clean family could not rebuild)."""
    mri = CartesianMRIFamily((1, 16, 16), acceleration=4, center_fraction=0.08)
    clean = clean_family(mri)
    net = build_network(resolve_network_config({"model_channels": 8, "channel_mult": [1], "attn_levels": []}, clean))
    prior = Prior(net, clean)
    A = mri.sample(2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 1, 16, 16, dtype=torch.complex64)
    ref = prior.denoiser(2, generator=torch.Generator())(x, 0.5)
    for op in ("test", "full", "measurement"):
        D = prior.denoiser(2, generator=torch.Generator(), num_draws=2, inference_operator=op, test_operator=A)
        torch.testing.assert_close(D(x, 0.5), ref)


_SMALL = {"model_channels": 8, "channel_mult": [1, 2], "attn_levels": []}


def _ambient_prior(seed=0):
    """A small ambient prior of the pixel-mask family with random (not zero-initialised) weights."""
    family = PixelMaskFamily((1, 8, 8), p=0.3, delta=0.2, is_complex=True)
    net = build_network(resolve_network_config(_SMALL, family))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return Prior(net, family)


def test_warm_start_folds_the_constant_conditioning_into_the_input_bias():
    prior = _ambient_prior()
    clean = clean_family(prior.family)
    fresh = build_network(resolve_network_config(_SMALL, clean))
    assert warm_start(prior, fresh)
    src, dst = prior.network.state_dict(), fresh.state_dict()
    assert all(torch.equal(src[k], dst[k]) for k in dst if k not in ("backbone.input.weight", "backbone.input.bias"))
    h = torch.randn(2, dst["backbone.input.weight"].shape[1], 8, 8)
    cond = prior.family.conditioning(prior.family.fully_observed(prior.family.sample(2, generator=torch.Generator())))
    assert torch.equal(cond, torch.ones_like(cond))  # everything observed: a constant channel
    with_cond = prior.network.backbone.input(torch.cat([h, cond], dim=1))
    folded = fresh.backbone.input(h)
    torch.testing.assert_close(folded[..., 1:-1, 1:-1], with_cond[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(folded[..., 0, :], with_cond[..., 0, :])  # the zero-padded border differs
    other = build_network(resolve_network_config({"model_channels": 16, "channel_mult": [1], "attn_levels": []}, clean))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    assert not warm_start(prior, other)  # another architecture: left as it was
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_prior_samples_fit_the_measurements_and_count_the_passes():
    data = _dataset(n=6)
    prior = _ambient_prior()
    counter = _Counter()
    samples = prior_samples(prior, data, data.family, 4, torch.Generator().manual_seed(0), counter)
    assert samples.shape == (6, 1, 8, 8) and samples.dtype == torch.complex64 and torch.isfinite(samples).all()
    assert counter.forwards > 0 and 0 < counter.vjps <= counter.forwards
    noiseless = MeasurementDataset(data.y, data.params, data.family, sigma_n=0.0)  # sampled at SIGMA_MIN, no error
    assert torch.isfinite(prior_samples(prior, noiseless, data.family, 4, torch.Generator(), None)).all()
    wrong = Prior(prior.network, PixelMaskFamily((1, 16, 16), p=0.3, delta=0.2, is_complex=True))
    with pytest.raises(ValueError, match="init_prior"):
        prior_samples(wrong, data, data.family, 4, torch.Generator(), None)


@pytest.mark.slow
def test_train_em_from_an_ambient_prior(tmp_path):
    data = _dataset()
    network = {"model_channels": 8, "channel_mult": [1, 2], "attn_levels": [], "num_blocks": 1}

    def config(out, method, images, **em):
        return RunConfig(
            network=network,
            train=TrainConfig(out_dir=str(tmp_path / out), images=images, batch_size=8, warmup_images=8,
                              checkpoint_every=2, device="cpu", progress=False, method=method),
            em=EMConfig(**em),
        )  # fmt: skip

    ambient = train(config("ambient", "ambient", 32), data)
    with pytest.raises(FileNotFoundError, match="init_prior"):
        train(config("em", "em", 16, init_prior=str(tmp_path / "missing")), data)
    em = {"images_per_round": 16, "sampling_steps": 3, "batch_size": 16, "init_prior": str(ambient.checkpoint)}
    from ambient_science.training.em import train_em

    with pytest.raises(ValueError, match="init_prior"):  # the training layer cannot load a prior itself
        train_em(config("em", "em", 32, **em), data)
    result = train(config("em", "em", 32, **em), data)  # the pipeline loads it
    assert result.images_seen == 32
    rounds = json.loads((tmp_path / "em" / "em" / "state.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[0]["forwards"] > 0 and rounds[0]["vjps"] > 0
    assert rounds[1]["forwards"] == 48 * 3  # later rounds: MMPS with the EM prior
    logs = []
    initial = TrainedInitialPrior(ambient.checkpoint)
    more = train_em(config("em", "em", 48, **em), data, log=logs.append, initial_prior=initial)  # one more round
    assert more.images_seen == 48 and not any("starts from" in line for line in logs)  # resumed: no warm start
    assert initial._prior is None  # nor loaded: nothing needed it
