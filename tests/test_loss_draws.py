"""loss.tilde_draws (issue #19): K draws of (Ã, σ, ε) per measurement per step, the loss averaged over them."""

import pytest
import torch

from ambient_science.network import UNetConfig, build_network
from ambient_science.operators import PixelMaskFamily
from ambient_science.training.config import run_config_from_dict
from ambient_science.training.losses import AmbientLoss, LossConfig, NoisyAmbientLoss, build_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup():
    family = PixelMaskFamily((1, 8, 8), p=0.3, delta=0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(UNetConfig(img_channels=1, cond_channels=1, model_channels=8, channel_mult=(1,),
                                       attn_levels=()))  # fmt: skip
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape))
    g = torch.Generator().manual_seed(1)
    A = family.sample(3, generator=g)
    y = A(torch.randn(3, 1, 8, 8, generator=g))
    return family, net, A, y


def test_one_draw_is_the_plain_loss_bit_for_bit():
    family, net, A, y = _setup()
    assert LossConfig().tilde_draws == 1 and build_loss(LossConfig(), family, 0.5).tilde_draws == 1
    plain = NoisyAmbientLoss(family)(net, y, A, sigma_n=0.01, generator=torch.Generator().manual_seed(5))
    built = build_loss(LossConfig(), family, 0.5)(net, y, A, sigma_n=0.01, generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain, built)


@pytest.mark.parametrize("cls", [AmbientLoss, NoisyAmbientLoss])
def test_k_draws_average_k_single_draw_losses(cls):
    """With K draws the loss is the mean over K copies of the batch, each with its own (Ã, σ, ε): drawn for
    the K·B stacked copies in the usual order (Ã, σ, ε)."""
    family, net, A, y = _setup()
    K, kw = 3, ({"sigma_n": 0.01} if cls is NoisyAmbientLoss else {})
    multi = cls(family, tilde_draws=K)
    got = multi(net, y, A, generator=torch.Generator().manual_seed(7), **kw)
    one = cls(family)
    y_k, A_k = torch.cat([y] * K), family.make({k: torch.cat([v] * K) for k, v in A.params().items()})
    s_min = torch.full((K * 3,), 0.01) if kw else None
    A_t, sigma, eps = one.draw(A_k, generator=torch.Generator().manual_seed(7), sigma_min=s_min)
    per = one(net, y_k, A_k, A_tilde=A_t, sigma=sigma, noise=eps, **kw)
    torch.testing.assert_close(got, per.reshape(K, 3).mean(0))
    assert got.shape == (3,)


def test_tilde_draws_is_checked():
    assert run_config_from_dict({"loss": {"tilde_draws": 4}}).loss.tilde_draws == 4
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=r"loss\.tilde_draws"):
            run_config_from_dict({"loss": {"tilde_draws": bad}})
