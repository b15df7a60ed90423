"""EDM-preconditioned denoisers: ``D(x, σ, c) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ), c)``.

Written from Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models"
(EDM, NeurIPS 2022), Table 1 / Eq. (7): with ``σ_d`` the data standard deviation,

    c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / sqrt(σ² + σ_d²),  c_in = 1 / sqrt(σ² + σ_d²),  c_noise = ln(σ) / 4.

The raw network ``F`` is a U-Net (:class:`UNet`) for images, or a small MLP (:class:`MLP`) for
low-dimensional toy problems. Both take the conditioning channels ``c(Ã)`` of ambient training as
extra input channels, which ``c_in`` does not scale (they are masks / point-spread functions, not noisy
images). Complex images reach the network as ``[real, imag]`` channels (:mod:`ambient_science.channels`).

Network contract (:mod:`ambient_science.denoiser`): ``net(x, sigma, cond) -> D`` with ``x (B, C_img, ...)``
real, ``sigma (B,)``, ``cond (B, k, ...)`` real; ``D`` is float32 even under bf16 autocast.

    >>> import torch
    >>> cfg = UNetConfig(img_channels=1, cond_channels=1, model_channels=16, channel_mult=(1, 2), attn_levels=(1,))
    >>> net = build_network(cfg)
    >>> net(torch.randn(2, 1, 12, 10), torch.tensor([0.5, 2.0]), torch.ones(2, 1, 12, 10)).shape
    torch.Size([2, 1, 12, 10])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ambient_science.noise import append_dims

__all__ = [
    "MLP",
    "EDMDenoiser",
    "MLPConfig",
    "NetworkConfig",
    "UNet",
    "UNetConfig",
    "build_network",
    "network_config_from_dict",
]

SKIP_SCALE = 1.0 / math.sqrt(2.0)  # keeps the variance of residual sums ~constant


# ---------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------


def _from_dict(cls, config: dict[str, Any]):
    data = {k: v for k, v in config.items() if k != "kind"}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(names)}")
    for f in dataclasses.fields(cls):  # JSON/TOML lists -> tuples
        if f.name in data and isinstance(data[f.name], list):
            data[f.name] = tuple(data[f.name])
    return cls(**data)


@dataclass(frozen=True)
class UNetConfig:
    """A U-Net's shape. ``img_channels`` counts real channels (2 per complex channel).

    Attributes:
        img_channels: real image channels ``C_img``.
        cond_channels: conditioning channels ``k`` of ``c(Ã)`` (0 for clean data).
        model_channels: channels at full resolution.
        channel_mult: per-level channel multipliers; level ``i`` works at 1/2^i of the input size.
        num_blocks: residual blocks per level on the way down (one more on the way up).
        attn_levels: levels with self-attention after each residual block (0 = full resolution);
            levels rather than pixel sizes, since MRI images are not square (e.g. 320 × 368).
        mid_attention: self-attention in the middle block (at the lowest resolution; its cost grows
            with the square of that resolution's pixel count).
        head_channels: channels per attention head.
        dropout: dropout probability inside residual blocks.
        sigma_data: ``σ_d`` of the EDM preconditioning.
        embed_features: size of the sinusoidal noise-level features.
    """

    kind: ClassVar[str] = "unet"
    img_channels: int = 1
    cond_channels: int = 0
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_blocks: int = 2
    attn_levels: tuple[int, ...] = (2,)
    mid_attention: bool = True
    head_channels: int = 32
    dropout: float = 0.0
    sigma_data: float = 0.5
    embed_features: int = 64

    def __post_init__(self):
        if self.img_channels < 1 or self.cond_channels < 0 or self.model_channels < 1 or self.num_blocks < 1:
            raise ValueError(f"invalid UNetConfig sizes: {self}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult must be positive integers, got {self.channel_mult}")
        if any(not 0 <= lvl < len(self.channel_mult) for lvl in self.attn_levels):
            raise ValueError(f"attn_levels {self.attn_levels} outside levels 0..{len(self.channel_mult) - 1}")
        if not 0.0 <= self.dropout < 1.0 or self.sigma_data <= 0 or self.embed_features % 2:
            raise ValueError(f"invalid UNetConfig: {self}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> UNetConfig:
        return _from_dict(cls, config)


@dataclass(frozen=True)
class MLPConfig:
    """A fully connected denoiser for small images (toy problems, tests).

    Attributes:
        img_channels, cond_channels: as in :class:`UNetConfig`.
        height, width: the (fixed) image size.
        hidden: width of the hidden layers; depth: number of hidden layers.
    """

    kind: ClassVar[str] = "mlp"
    img_channels: int = 1
    cond_channels: int = 0
    height: int = 4
    width: int = 4
    hidden: int = 256
    depth: int = 3
    sigma_data: float = 0.5
    embed_features: int = 32

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **vars(self)}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> MLPConfig:
        return _from_dict(cls, config)


NetworkConfig = UNetConfig | MLPConfig
_CONFIGS: dict[str, type] = {"unet": UNetConfig, "mlp": MLPConfig}


def network_config_from_dict(config: dict[str, Any]) -> NetworkConfig:
    """Inverse of ``config.to_dict()``; ``config["kind"]`` picks the network (default ``"unet"``)."""
    kind = config.get("kind", "unet")
    if kind not in _CONFIGS:
        raise ValueError(f"unknown network kind {kind!r}; known: {sorted(_CONFIGS)}")
    return _CONFIGS[kind].from_dict(config)


# ---------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest divisor of ``channels`` not above ``min(32, channels // 4)``."""
    limit = max(1, min(32, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise`` (frequencies geometric in [1, 1000]) through a 2-layer MLP.

    Shape: ``c_noise (B,)`` -> ``(B, out_features)``, already passed through SiLU.
    """

    def __init__(self, features: int, out_features: int):
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(0.5), math.log(50.0), features // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(features, out_features), nn.SiLU(), nn.Linear(out_features, out_features), nn.SiLU()
        )

    def forward(self, c_noise: Tensor) -> Tensor:
        arg = c_noise.to(torch.float32)[:, None] * self.freqs[None]
        return self.mlp(torch.cat([arg.cos(), arg.sin()], dim=1))


class ResBlock(nn.Module):
    """Pre-activation residual block with FiLM noise conditioning: ``h = GN(h) (1 + s(e)) + b(e)``."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (self.skip(x) + h) * SKIP_SCALE


class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels, residual."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        if channels % self.heads:
            raise ValueError(f"{channels} channels do not split into {self.heads} heads")
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(B, C, H, W)
        return (x + self.proj(out)) * SKIP_SCALE


class _Level(nn.Module):
    """One residual block (optionally followed by attention); ``takes_skip`` on the way up."""

    def __init__(self, in_ch, out_ch, emb_dim, dropout, attention: bool, head_channels: int, takes_skip: bool):
        super().__init__()
        self.block = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = SelfAttention(out_ch, head_channels) if attention else None
        self.takes_skip = takes_skip

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.block(x, emb)
        return self.attn(x) if self.attn is not None else x


class _Down(nn.Module):
    takes_skip = False

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(x)


class _Up(nn.Module):
    takes_skip = False

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """The raw network ``F(x_in, c_noise, cond)`` of EDM: a U-Net with skip connections.

    Any ``H × W``: the input is zero-padded up to a multiple of ``2^(levels - 1)`` and the output is
    cropped back.

    Shape: ``x_in (B, C_img, H, W)``, ``c_noise (B,)``, ``cond (B, k, H, W)`` -> ``(B, C_img, H, W)``.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        cfg = config
        self.config = cfg
        chans = [cfg.model_channels * m for m in cfg.channel_mult]
        emb_dim = 4 * cfg.model_channels
        self.embed = NoiseEmbedding(cfg.embed_features, emb_dim)
        self.input = nn.Conv2d(cfg.img_channels + cfg.cond_channels, chans[0], 3, padding=1)

        c, skip_ch = chans[0], [chans[0]]
        self.down = nn.ModuleList()
        for i, ch in enumerate(chans):
            for _ in range(cfg.num_blocks):
                self.down.append(_Level(c, ch, emb_dim, cfg.dropout, i in cfg.attn_levels, cfg.head_channels, False))
                c = ch
                skip_ch.append(c)
            if i < len(chans) - 1:
                self.down.append(_Down(c))
                skip_ch.append(c)
        self.mid = nn.ModuleList(
            [
                _Level(c, c, emb_dim, cfg.dropout, cfg.mid_attention, cfg.head_channels, False),
                _Level(c, c, emb_dim, cfg.dropout, False, cfg.head_channels, False),
            ]
        )
        self.up = nn.ModuleList()
        for i in reversed(range(len(chans))):
            for _ in range(cfg.num_blocks + 1):
                attn = i in cfg.attn_levels
                self.up.append(_Level(c + skip_ch.pop(), chans[i], emb_dim, cfg.dropout, attn, cfg.head_channels, True))
                c = chans[i]
            if i > 0:
                self.up.append(_Up(c))
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out_conv = _zero(nn.Conv2d(c, cfg.img_channels, 3, padding=1))
        self.multiple = 2 ** (len(chans) - 1)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor) -> Tensor:
        H, W = x_in.shape[-2:]
        h = torch.cat([x_in, cond.to(x_in.dtype)], dim=1)
        pad_h, pad_w = (-H) % self.multiple, (-W) % self.multiple
        if pad_h or pad_w:
            h = F.pad(h, (0, pad_w, 0, pad_h))
        emb = self.embed(c_noise)
        h = self.input(h)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if layer.takes_skip:
                h = torch.cat([h, skips.pop()], dim=1)
            h = layer(h, emb)
        out = self.out_conv(F.silu(self.out_norm(h)))
        return out[..., :H, :W]


class MLP(nn.Module):
    """The raw network ``F`` as a fully connected net on flattened ``[x_in, cond]`` plus noise features.

    Shape: ``x_in (B, C_img, H, W)``, ``c_noise (B,)``, ``cond (B, k, H, W)`` -> ``(B, C_img, H, W)``.
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        cfg = config
        self.config = cfg
        pixels = cfg.height * cfg.width
        self.embed = NoiseEmbedding(cfg.embed_features, cfg.hidden)
        layers: list[nn.Module] = [nn.Linear((cfg.img_channels + cfg.cond_channels) * pixels + cfg.hidden, cfg.hidden)]
        for _ in range(cfg.depth - 1):
            layers += [nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden)]
        layers += [nn.SiLU(), _zero(nn.Linear(cfg.hidden, cfg.img_channels * pixels))]
        self.net = nn.Sequential(*layers)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor) -> Tensor:
        B = x_in.shape[0]
        h = torch.cat([x_in.reshape(B, -1), cond.to(x_in.dtype).reshape(B, -1), self.embed(c_noise)], dim=1)
        return self.net(h).reshape(x_in.shape)


class EDMDenoiser(nn.Module):
    """EDM preconditioning around a raw network ``F`` (Karras et al. 2022, Eq. 7 and Table 1).

    ``D(x, σ, c) = c_skip x + c_out F(c_in x, ln(σ)/4, c)``; ``c_in`` scales the image channels only,
    never the conditioning ``c``. Works for inputs of any number of dimensions (``append_dims``).

    Ambient inputs (``project`` given, the projection ``P`` onto what ``Ã`` observed): EDM's skip and
    output scaling hold only where ``Ã`` observed; what it hid is predicted from scratch at the data's
    scale, ``D = c_skip P x + c_out P F + σ_data (I − P) F``. Plain EDM would force ``D → x̃`` as
    ``σ → 0`` (``c_skip → 1``, ``c_out → 0``), i.e. zeros wherever ``Ã`` hid entries, exactly where an
    ambient denoiser must fill them in. With ``P = I`` (clean data) this is Eq. 7 unchanged.

    Shape: ``x (B, C_img, ...)``, ``sigma (B,)``, ``cond (B, k, ...)`` -> ``(B, C_img, ...)`` float32.
    """

    def __init__(self, backbone: nn.Module, config: NetworkConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.sigma_data = float(config.sigma_data)

    def preconditioning(self, sigma: Tensor, ndim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in, c_noise)``; the first three broadcast against ``ndim``-dim inputs."""
        sigma = sigma.to(torch.float32).reshape(-1)
        s = append_dims(sigma, ndim)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        c_in = 1.0 / (s**2 + sd2).sqrt()
        c_noise = sigma.log() / 4.0
        return c_skip, c_out, c_in, c_noise

    def forward(
        self, x: Tensor, sigma: Tensor, cond: Tensor, project: Callable[[Tensor], Tensor] | None = None
    ) -> Tensor:
        if x.is_complex():
            raise TypeError("the network takes real channels; use ambient_science.channels.to_network first")
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1).expand(x.shape[0])
        x = x.to(torch.float32)
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma, x.ndim)
        F_x = self.backbone(c_in * x, c_noise, cond).to(torch.float32)
        if project is None:
            return c_skip * x + c_out * F_x
        PF = project(F_x)
        return c_skip * project(x) + c_out * PF + self.sigma_data * (F_x - PF)


def build_network(config: NetworkConfig) -> EDMDenoiser:
    """The EDM-preconditioned network described by ``config`` (parameters drawn from torch's global RNG:
    wrap in ``torch.random.fork_rng`` with a seed for a reproducible, side-effect-free init)."""
    if isinstance(config, UNetConfig):
        return EDMDenoiser(UNet(config), config)
    if isinstance(config, MLPConfig):
        return EDMDenoiser(MLP(config), config)
    raise TypeError(f"unknown network config type {type(config).__name__}")
