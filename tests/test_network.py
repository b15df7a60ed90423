"""EDM-preconditioned networks: the contract, the preconditioning, odd sizes, configs."""

import json

import pytest
import torch
from torch import nn

from ambient_science.network import (
    EDMDenoiser,
    MLPConfig,
    UNetConfig,
    append_dims,
    build_network,
    network_config_from_dict,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _small(**kw) -> UNetConfig:
    base = dict(img_channels=1, cond_channels=1, model_channels=8, channel_mult=(1, 2, 2), attn_levels=(2,))
    return UNetConfig(**{**base, **kw})


def _randomise(net: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("hw", [(8, 8), (13, 7), (20, 23), (1, 5)])
@pytest.mark.parametrize("img_channels", [1, 2])
def test_any_image_size_and_channel_count(hw, img_channels):
    net = build_network(_small(img_channels=img_channels))
    x = torch.randn(2, img_channels, *hw)
    out = net(x, torch.tensor([0.1, 3.0]), torch.ones(2, 1, *hw))
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_output_at_init_is_c_skip_x():
    """The output layers start at zero, so D = c_skip x: a stable start (EDM Eq. 7 with F = 0)."""
    net = build_network(_small())
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.01, 0.5, 10.0])
    c_skip = 0.25 / (sigma**2 + 0.25)
    torch.testing.assert_close(net(x, sigma, torch.ones(3, 1, 8, 8)), c_skip[:, None, None, None] * x)


class _Recorder(nn.Module):
    def forward(self, x_in, c_noise, cond):
        self.x_in, self.c_noise, self.cond = x_in, c_noise, cond
        return torch.ones_like(x_in)


@pytest.mark.parametrize("ndim", [2, 3, 5])
def test_preconditioning_any_dimension_and_conditioning_not_scaled(ndim):
    """c_in scales the image channels only; c_skip, c_out, c_noise follow EDM Table 1, in any dimension."""
    sd = 0.7
    net = EDMDenoiser(_Recorder(), MLPConfig(sigma_data=sd))
    shape = (4, 2, 3, 5, 2)[:ndim]
    x, cond = torch.randn(shape), torch.rand(shape) + 1.0
    sigma = torch.tensor([0.002, 0.3, 2.0, 80.0])
    out = net(x, sigma, cond)
    s = append_dims(sigma, ndim)
    torch.testing.assert_close(net.backbone.x_in, x / (s**2 + sd**2).sqrt())
    assert net.backbone.cond is cond
    torch.testing.assert_close(net.backbone.c_noise, sigma.log() / 4)
    torch.testing.assert_close(out, sd**2 / (s**2 + sd**2) * x + s * sd / (s**2 + sd**2).sqrt())


def test_conditioning_changes_the_output():
    net = _randomise(build_network(_small()))
    x, sigma = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    assert not torch.allclose(net(x, sigma, torch.ones(2, 1, 8, 8)), net(x, sigma, torch.zeros(2, 1, 8, 8)))


def test_channels_last_same_output():
    net = _randomise(build_network(_small(cond_channels=0)))
    x, sigma = torch.randn(2, 1, 16, 16), torch.tensor([0.2, 1.0])
    ref = net(x, sigma, x[:, :0])
    net = net.to(memory_format=torch.channels_last)
    out = net(x.contiguous(memory_format=torch.channels_last), sigma, x[:, :0])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_scalar_sigma_broadcasts_and_complex_input_refused():
    net = build_network(_small(cond_channels=0))
    x = torch.randn(3, 1, 8, 8)
    assert net(x, torch.tensor(0.5), x[:, :0]).shape == x.shape
    with pytest.raises(TypeError, match="real channels"):
        net(x.to(torch.complex64), torch.ones(3), x[:, :0])


def test_gradients_reach_every_parameter():
    net = _randomise(build_network(_small(dropout=0.1)))
    x = torch.randn(2, 1, 8, 8)
    net(x, torch.tensor([0.3, 2.0]), torch.ones(2, 1, 8, 8)).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("config", [_small(), MLPConfig(img_channels=2, cond_channels=1, height=3, width=4)])
def test_config_json_round_trip(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert network_config_from_dict(data) == config
    assert type(build_network(network_config_from_dict(data)).backbone).__name__ in ("UNet", "MLP")


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        network_config_from_dict({"kind": "unet", "channels": 4})
    with pytest.raises(ValueError, match="unknown network kind"):
        network_config_from_dict({"kind": "transformer"})
    with pytest.raises(ValueError, match="attn_levels"):
        UNetConfig(channel_mult=(1, 2), attn_levels=(2,))


def test_cpu_demo_size():
    """The CPU demo's U-Net (64×64, one mask channel) has 1–2 M parameters."""
    cfg = UNetConfig(img_channels=1, cond_channels=1, model_channels=32, channel_mult=(1, 2, 2), num_blocks=1)
    n = sum(p.numel() for p in build_network(cfg).parameters())
    assert 1e6 <= n <= 2e6, n
