"""Losses: the ambient loss (any SubsampledOperator family), its noisy variant, and EDM as the case A = I."""

import math

import pytest
import torch
from torch import nn

from ambient_science.denoiser import network_denoise
from ambient_science.network import MLPConfig, UNetConfig, build_network
from ambient_science.operators import CleanFamily, PixelMaskFamily
from ambient_science.training.losses import (
    AmbientLoss,
    EDMLoss,
    LossConfig,
    NoisyAmbientLoss,
    build_loss,
    edm_weight,
    image_noise,
    sample_sigma,
)
from conftest import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")


def _perturbed(net: nn.Module, seed: int = 0) -> nn.Module:
    """A network whose zero-initialised output layers are switched on (so D depends on every input)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


def _unet(img_channels: int, cond_channels: int) -> nn.Module:
    cfg = UNetConfig(
        img_channels=img_channels, cond_channels=cond_channels, model_channels=8, channel_mult=(1, 2), attn_levels=(1,)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _perturbed(build_network(cfg))


@pytest.mark.parametrize("is_complex", [False, True])
def test_ambient_loss_with_identity_operator_is_the_edm_loss(is_complex):
    """A = I (CleanFamily): w(σ)‖A D − y‖²/m with x̃ = x + σε is exactly EDM's w(σ)‖D(x + σε) − x‖²/n."""
    family = CleanFamily((1, 8, 8), is_complex=is_complex)
    net = _unet(2 if is_complex else 1, 0)
    g = torch.Generator().manual_seed(1)
    x = image_noise((6, 1, 8, 8), family.image_dtype(), g)
    A = family.sample(6, generator=g)
    ambient = AmbientLoss(family, sigma_data=0.5)(net, A(x), A, generator=torch.Generator().manual_seed(7))
    edm = EDMLoss(sigma_data=0.5)(net, x, generator=torch.Generator().manual_seed(7))
    assert ambient.shape == (6,) and ambient.dtype == torch.float32
    torch.testing.assert_close(ambient, edm, rtol=0, atol=0)
    noisy = NoisyAmbientLoss(family, sigma_data=0.5)(net, A(x), A, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(noisy, edm, rtol=1e-6, atol=1e-6)  # σ_n = 0: same draws, same loss


def test_loss_matches_hand_written_formula():
    """L = (w(σ) ‖B(A D − y)‖² + ‖(1 − B)(A D − y)‖²/σ_d²) / m with x̃ = Ãᴴ(B y + σ Ã ε),
    D = c_skip P x̃ + c_out P F + σ_d (I − P) F (P = B for masks), m = observed entries."""
    family = PixelMaskFamily((2, 8, 8), p=0.5, delta=0.3)
    net = _unet(2, 1)
    g = torch.Generator().manual_seed(3)
    A = family.sample(4, generator=g)
    y = A(torch.randn(A.ishape, generator=g))
    A_tilde = family.further_corrupt(A, generator=g)
    sigma = torch.tensor([0.01, 0.3, 1.0, 20.0])
    eps = torch.randn(A.ishape, generator=g)
    got = AmbientLoss(family)(net, y, A, A_tilde=A_tilde, sigma=sigma, noise=eps)
    x_tilde = A_tilde.mask * (y + sigma[:, None, None, None] * eps)
    D = net(x_tilde, sigma, A_tilde.mask, project=lambda v: A_tilde.mask * v)
    F = net.backbone(net.preconditioning(sigma, 4)[2] * x_tilde, sigma.log() / 4, A_tilde.mask)
    c_skip, c_out = net.preconditioning(sigma, 4)[:2]
    B = A_tilde.mask
    torch.testing.assert_close(D, c_skip * x_tilde + c_out * B * F + 0.5 * (1 - B) * F)
    m = A.mask.expand(A.oshape).sum(dim=(1, 2, 3))
    r = A.mask * D - y
    want = (
        edm_weight(sigma, 0.5) * (B * r).square().sum(dim=(1, 2, 3)) + ((1 - B) * r).square().sum(dim=(1, 2, 3)) / 0.25
    ) / m
    torch.testing.assert_close(got, want)
    # hidden_weight scales the second term only (and reaches the loss through build_loss)
    heavy = build_loss(LossConfig(kind="ambient", hidden_weight=3.0), family, 0.5)
    got3 = heavy(net, y, A, A_tilde=A_tilde, sigma=sigma, noise=eps)
    hidden = ((1 - B) * r).square().sum(dim=(1, 2, 3)) / 0.25 / m
    torch.testing.assert_close(got3, want + 2.0 * hidden)
    assert bool((hidden > 0).all())


class _Spy(nn.Module):
    """Records the network's inputs; returns zeros."""

    def forward(self, x, sigma, cond, project=None):
        self.x, self.sigma, self.cond = x, sigma, cond
        return torch.zeros_like(x)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_network_sees_only_what_a_tilde_keeps(name):
    """For every registered family: the input is computable from B y alone (y outside Ã is never seen)."""
    family = FAMILIES[name]()
    g = torch.Generator().manual_seed(0)
    A = family.sample(3, generator=g)
    x = image_noise(A.ishape, family.image_dtype(), g)
    y = A(x)
    A_tilde = family.further_corrupt(A, generator=g)
    sigma, eps = torch.full((3,), 0.5), image_noise(A.ishape, family.image_dtype(), g)
    spy = _Spy()
    loss = AmbientLoss(family)
    loss(spy, y, A, A_tilde=A_tilde, sigma=sigma, noise=eps)
    first = spy.x.clone()
    hidden = 1 - torch.broadcast_to(A_tilde.observed, A.oshape)  # entries A observed but Ã did not
    loss(
        spy,
        y + 5.0 * hidden * A(image_noise(A.ishape, family.image_dtype(), g)),
        A,
        A_tilde=A_tilde,
        sigma=sigma,
        noise=eps,
    )
    torch.testing.assert_close(spy.x, first)
    assert spy.cond.shape == (3, family.conditioning_channels, *family.image_shape[1:])


def test_draws_are_reproducible_and_global_rng_untouched():
    family = PixelMaskFamily((1, 8, 8), p=0.5)
    net = _unet(1, 1)
    A = family.sample(4, generator=torch.Generator().manual_seed(0))
    y = A(torch.randn(A.ishape))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = AmbientLoss(family)(net, y, A, generator=torch.Generator().manual_seed(1))
    b = AmbientLoss(family)(net, y, A, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="all of A_tilde, sigma and noise"):
        AmbientLoss(family)(net, y, A, sigma=torch.ones(4))


def test_an_operator_observing_nothing_contributes_zero_not_nan():
    family = PixelMaskFamily((1, 4, 4), p=0.5)
    net = _unet(1, 1)
    A = family.make({"mask": torch.zeros(2, 1, 4, 4)})
    loss = AmbientLoss(family)(net, torch.zeros(2, 1, 4, 4), A, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loss, torch.zeros(2))


def test_complex_noise_has_unit_variance_per_real_component():
    eps = image_noise((2000, 1, 8, 8), torch.complex64, torch.Generator().manual_seed(0))
    assert abs(eps.real.var().item() - 1) < 0.01 and abs(eps.imag.var().item() - 1) < 0.01


def test_sigma_law_and_its_truncation():
    g = torch.Generator().manual_seed(0)
    s = sample_sigma(200_000, p_mean=-1.2, p_std=1.2, generator=g)
    assert abs(s.log().mean().item() + 1.2) < 0.01 and abs(s.log().std().item() - 1.2) < 0.01
    s_min = torch.full((200_000,), 0.5)
    t = sample_sigma(200_000, p_mean=-1.2, p_std=1.2, generator=g, sigma_min=s_min)
    assert bool((t >= 0.5).all())
    # the conditional law: compare quantiles with rejection sampling from the untruncated draws
    kept = s[s > 0.5]
    for q in (0.1, 0.5, 0.9):
        assert abs(t.quantile(q).log().item() - kept.quantile(q).log().item()) < 0.03
    # where sigma_min = 0 the draw is the unconditioned one, bit for bit
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(
        sample_sigma(8, p_mean=-1.2, p_std=1.2, generator=g1, sigma_min=torch.zeros(8)),
        sample_sigma(8, p_mean=-1.2, p_std=1.2, generator=g2),
        rtol=0,
        atol=0,
    )


class _Scalar(nn.Module):
    """``D = a x``: one parameter, so the loss is a parabola in ``a``."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x, sigma, cond, project=None):
        return self.a * x


def _argmin_a(loss_fn, y, A, **kw) -> float:
    vals = [
        loss_fn(_Scalar(a), y, A, generator=torch.Generator().manual_seed(11), **kw).mean().item() for a in (0, 1, 2)
    ]
    curvature, slope = vals[0] - 2 * vals[1] + vals[2], vals[2] - vals[0]
    return 1 - slope / (2 * curvature)


def test_double_tweedie_target_recovers_the_clean_posterior_mean():
    """x ~ N(0, s²), y = x + σ_n n: the noisy loss's minimiser over D = a x_σ is E[x | x_σ] = s²/(s² + σ²),
    while the plain ambient loss (ignoring σ_n) would denoise towards y, a = (s² + σ_n²)/(s² + σ_n² + σ²)."""
    s, sigma_n, sigma, n = 0.5, 0.3, 0.6, 200_000
    family = CleanFamily((1, 1, 1))
    g = torch.Generator().manual_seed(0)
    x = s * torch.randn(n, 1, 1, 1, generator=g)
    y = x + sigma_n * torch.randn(n, 1, 1, 1, generator=g)
    A = family.sample(n, generator=g)
    sig = torch.full((n,), sigma)
    noisy = NoisyAmbientLoss(family)

    def noisy_at_sigma(net, y, A, *, generator):
        return noisy(net, y, A, sigma_n=sigma_n, A_tilde=A, sigma=sig, noise=torch.randn(A.ishape, generator=generator))

    a_noisy = _argmin_a(noisy_at_sigma, y, A)
    assert abs(a_noisy - s**2 / (s**2 + sigma**2)) < 0.01
    plain = AmbientLoss(family)

    def plain_sigma(net, y, A, *, generator):
        return plain(net, y, A, A_tilde=A, sigma=sig, noise=torch.randn(A.ishape, generator=generator))

    a_plain = _argmin_a(plain_sigma, y, A)
    assert abs(a_plain - (s**2 + sigma_n**2) / (s**2 + sigma_n**2 + sigma**2)) < 0.01


def test_noisy_loss_trains_only_above_sigma_n():
    family = PixelMaskFamily((1, 8, 8), p=0.3)
    spy = _Spy()
    A = family.sample(64, generator=torch.Generator().manual_seed(0))
    sigma_n = torch.linspace(0.0, 2.0, 64)
    NoisyAmbientLoss(family)(spy, A(torch.randn(A.ishape)), A, sigma_n=sigma_n, generator=torch.Generator())
    assert bool((spy.sigma >= sigma_n).all())


def test_build_loss_kinds():
    family = CleanFamily((1, 4, 4))
    assert type(build_loss(LossConfig(kind="ambient"), family, 0.5)) is AmbientLoss
    assert type(build_loss(LossConfig(), family, 0.5)) is NoisyAmbientLoss
    with pytest.raises(ValueError, match="loss kind"):
        LossConfig(kind="edm2")


# ------------------------------------------------------------------------------------------------
# Gaussian toy: the ambient loss's minimiser is E[x | Ã x_σ, Ã]
# ------------------------------------------------------------------------------------------------


def _gaussian(H: int, W: int, g: torch.Generator):
    d = H * W
    ij = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"), -1).reshape(d, 2).float()
    cov = 0.25 * torch.exp(-torch.cdist(ij, ij) / 2.0) + 1e-3 * torch.eye(d)
    mean = 0.3 * torch.randn(d, generator=g)
    return mean, cov


def _posterior_mean(z: torch.Tensor, keep: torch.Tensor, sigma: float, mean, cov) -> torch.Tensor:
    """E[x | z_S = x_S + σ ε_S] = μ + Σ_{:,S} (Σ_SS + σ² I)⁻¹ (z_S − μ_S), S = pixels Ã keeps."""
    d = mean.numel()
    out = []
    for zi, S in zip(z.reshape(-1, d), keep.reshape(-1, d).bool()):
        K = cov[S][:, S] + sigma**2 * torch.eye(int(S.sum()))
        out.append(mean + cov[:, S] @ torch.linalg.solve(K, zi[S] - mean[S]))
    return torch.stack(out).reshape(z.shape)


@pytest.mark.slow
def test_gaussian_toy_learns_the_conditional_expectation():
    """x ~ N(μ, Σ) on 2×4 pixels, Bernoulli masks (p = 0.3, δ = 0.2); an MLP trained with AmbientLoss on
    (y, A) only approaches the analytic E[x | Ã x_σ, Ã].

    Measured (this seed, 500 steps of 512, ~5 s on one core): mean squared distance to the analytic
    posterior mean, relative to that of the trivial estimator (the prior mean μ): 0.070 / 0.064 / 0.072 /
    0.133 at σ = 0.05 / 0.2 / 0.5 / 1. The same network trained with clean targets x (supervised, same
    budget) reaches 0.078 / 0.074 / 0.096 / 0.144: what remains is fitting error, not a bias of the loss.
    """
    H, W = 2, 4
    g = torch.Generator().manual_seed(0)
    mean, cov = _gaussian(H, W, g)
    chol = torch.linalg.cholesky(cov)

    def draw_x(n: int, gen: torch.Generator) -> torch.Tensor:
        return (mean + torch.randn(n, H * W, generator=gen) @ chol.T).reshape(n, 1, H, W)

    family = PixelMaskFamily((1, H, W), p=0.3, delta=0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(MLPConfig(img_channels=1, cond_channels=1, height=H, width=W, hidden=256, depth=2))
    loss_fn = AmbientLoss(family, sigma_data=0.5)
    steps, lr = 500, 5e-3
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for step in range(steps):
        A = family.sample(512, generator=g)
        y = A(draw_x(512, g))  # the loss sees measurements and operators only
        loss = loss_fn(net, y, A, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = lr * (1 - step / steps) + 1e-5

    ratios = {}
    ge = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for sigma in (0.05, 0.2, 0.5, 1.0):
            n = 1000
            x = draw_x(n, ge)
            A_tilde = family.further_corrupt(family.sample(n, generator=ge), generator=ge)
            z = A_tilde(x + sigma * torch.randn(x.shape, generator=ge))
            D = network_denoise(net, A_tilde.H(z), torch.full((n,), sigma), family, A_tilde)
            target = _posterior_mean(z, A_tilde.mask, sigma, mean, cov)
            trivial = mean.reshape(1, 1, H, W).expand_as(target)
            ratios[sigma] = ((D - target).square().mean() / (trivial - target).square().mean()).item()
    print("error ratio (network vs analytic) / (prior mean vs analytic):", ratios)
    assert all(math.isfinite(r) for r in ratios.values())
    assert max(ratios.values()) < 0.3, ratios
    assert sum(ratios.values()) / len(ratios) < 0.2, ratios


@pytest.mark.slow
def test_compiled_network_runs_on_a_complex_family_with_autograd():
    """``torch.compile`` of an ambient network on a complex family (the ``--compile`` training path) used to stop
    in dynamo on the operator's complex views inside the network's ``project`` hook; the hook now runs eagerly.
    The compiled forward equals the eager one; its gradients are checked by the trainer
    (``compiled_gradient_error``), not assumed."""
    from ambient_science.operators.mri import CartesianMRIFamily

    family = CartesianMRIFamily((1, 16, 16), acceleration=2, center_fraction=0.25)
    g = torch.Generator().manual_seed(0)
    A_tilde = family.further_corrupt(family.sample(2, generator=g), generator=g)
    x = A_tilde.H(A_tilde(torch.randn(2, 1, 16, 16, dtype=torch.complex64, generator=g)))
    net = _perturbed(_unet(2, family.conditioning_channels)).eval().to(memory_format=torch.channels_last)  # as --gpu
    sigma = torch.tensor([0.3, 1.0])
    eager = network_denoise(net, x, sigma, family, A_tilde)
    compiled = network_denoise(torch.compile(net), x, sigma, family, A_tilde)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    compiled.abs().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# -- loss.hidden_weight = "auto" (issue #19) -------------------------------------------------------------------------
def test_auto_hidden_weight_is_one_over_the_chance_that_a_dropped_column_was_observed():
    from ambient_science.operators.mri import CartesianMRIFamily
    from ambient_science.training.losses import AUTO_HIDDEN_WEIGHT_MAX, auto_hidden_weight

    family = CartesianMRIFamily((1, 64, 64), acceleration=4, center_fraction=0.08, drop_fraction=0.2)
    g = torch.Generator().manual_seed(3)
    A = family.sample(256, generator=g)
    # the closed form of docs/design.md §5 from the operators' own sampling rate p of the non-centre columns
    acs = torch.zeros(64, dtype=torch.bool)
    acs[32 - 3 : 32 + 3] = True  # 8 % of 64 -> the 5-6 centre columns, never dropped
    p = float(A.mask[:, ~acs].mean())
    closed = (1 - p * (1 - 0.2)) / (p * 0.2)
    h = auto_hidden_weight(family, A)
    assert abs(h - closed) / closed < 0.08 and 15 < h < 30
    assert auto_hidden_weight(family) == auto_hidden_weight(family)  # fixed seed: a resume gets the same number
    sparse = CartesianMRIFamily((1, 64, 64), acceleration=8, center_fraction=0.08, drop_fraction=0.2)
    assert auto_hidden_weight(sparse) == AUTO_HIDDEN_WEIGHT_MAX
    assert auto_hidden_weight(CartesianMRIFamily((1, 64, 64), acceleration=1, drop_fraction=0.2)) == 1.0
    assert auto_hidden_weight(CartesianMRIFamily((1, 64, 64), acceleration=4, drop_fraction=0.0)) == 1.0
    assert auto_hidden_weight(PixelMaskFamily((1, 8, 8), p=0.5, delta=0.2)) == 1.0  # not measured there: plain
    loss = build_loss(LossConfig(), family, 0.5, operators=A)
    assert loss.hidden_weight == h and build_loss(LossConfig(hidden_weight=3.0), family, 0.5).hidden_weight == 3.0
    for bad in ("yes", 0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="positive number or 'auto'"):
            LossConfig(hidden_weight=bad)


def test_training_records_the_resolved_hidden_weight(tmp_path, capsys):
    from ambient_science.datasets.measurements import save_measurements
    from ambient_science.operators.mri import CartesianMRIFamily
    from ambient_science.pipelines.training import train
    from ambient_science.training.checkpoint import load_checkpoint
    from ambient_science.training.config import DataConfig, RunConfig, TrainConfig
    from ambient_science.training.losses import auto_hidden_weight

    family = CartesianMRIFamily((1, 16, 16), acceleration=4, center_fraction=0.125, drop_fraction=0.2)
    g = torch.Generator().manual_seed(0)
    A = family.sample(8, generator=g)
    x = torch.complex(torch.randn(8, 1, 16, 16, generator=g), torch.randn(8, 1, 16, 16, generator=g))
    data = save_measurements(tmp_path / "d.h5", A(0.3 * x), A.params(), family, sigma_n=0.0)
    config = RunConfig(
        data=DataConfig(path=str(data)), family={"drop_fraction": 0.2},
        network={"kind": "mlp", "hidden": 8, "depth": 1},
        loss=LossConfig(), train=TrainConfig(out_dir=str(tmp_path / "run"), steps=1, batch_size=4, progress=False,
                                             device="cpu", warmup_images=0),
    )  # fmt: skip
    result = train(config)
    recorded = load_checkpoint(result.checkpoint).config["loss"]["hidden_weight"]
    assert recorded == auto_hidden_weight(family, A) and recorded > 1
    assert "loss.hidden_weight = 'auto'" in capsys.readouterr().err


def test_hidden_weight_operators_read_the_masks_and_broadcast_the_coil_maps():
    from ambient_science.operators.mri import CartesianMRIFamily
    from ambient_science.training.losses import auto_hidden_weight, hidden_weight_operators

    single = CartesianMRIFamily((1, 32, 32), acceleration=4, center_fraction=0.08, drop_fraction=0.2)
    multi = CartesianMRIFamily((1, 32, 32), acceleration=4, center_fraction=0.08, drop_fraction=0.2, num_coils=4)
    A = multi.sample(16, generator=torch.Generator().manual_seed(0))
    records = [{"params": {k: v[i] for k, v in A.params().items()}} for i in range(16)]
    ops = hidden_weight_operators(multi, records)
    assert torch.equal(ops.mask, A.mask) and ops.coil_maps.stride(0) == 0  # a view of the first record's maps
    assert auto_hidden_weight(multi, ops) == auto_hidden_weight(single, single.make({"mask": A.mask}))
