"""Training configuration: small typed dataclasses, read from TOML or JSON, with ``section.key=value`` overrides.

File format (every section and key optional; see ``configs/pixel_mask_toy.toml``)::

    [data]
    path = "data/train.h5"          # a measurement file (ambient_science.datasets.measurements)

    [family]                        # overrides of the file's operator-family config, e.g. the
    delta = 0.1                     # further-corruption law used in training and stored for inference

    [network]                       # UNetConfig / MLPConfig fields; img_channels and cond_channels
    kind = "unet"                   # come from the family
    model_channels = 32
    channel_mult = [1, 2, 2]

    [loss]                          # LossConfig: kind = "auto" | "ambient" | "noisy_ambient", p_mean, p_std
    [train]                         # TrainConfig fields

Unknown sections or keys are errors (a typo never passes silently).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ambient_science.family import OperatorFamily
from ambient_science.network import NetworkConfig, network_config_from_dict
from ambient_science.training.losses import LossConfig

__all__ = [
    "DataConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config_file",
    "resolve_network_config",
    "run_config_from_dict",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, bookkeeping and hardware settings of one training run.

    Sizes count images: ``batch_size`` is the global batch (split over ``torchrun`` ranks), the warm-up
    and the EMA half-life are in images. ``steps`` is the run's length in optimizer steps unless
    ``images > 0`` (then ``steps = ceil(images / batch_size)``). Zero switches off ``grad_clip``,
    ``ema_rampup``, ``checkpoint_every`` (only the final checkpoint) and ``sample_every``.
    ``resume``: ``""`` (start fresh), ``"auto"`` (``out_dir``'s latest checkpoint if any) or a path.
    """

    out_dir: str = "runs/train"
    steps: int = 1000
    images: int = 0
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_images: int = 10_000
    ema_halflife_images: float = 50_000.0
    ema_rampup: float = 0.05
    grad_clip: float = 1.0
    max_nonfinite: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    sample_every: int = 0
    sample_count: int = 16
    sample_steps: int = 18
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    compile: bool = False
    channels_last: bool = False
    num_workers: int = 0
    progress: bool = True
    resume: str = ""

    def __post_init__(self):
        positive = ("steps", "batch_size", "log_every", "sample_count", "sample_steps", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        nonneg = ("images", "warmup_images", "ema_rampup", "grad_clip", "max_nonfinite", "checkpoint_every")
        for name in (*nonneg, "sample_every", "num_workers", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.ema_halflife_images <= 0:
            raise ValueError("train.lr and train.ema_halflife_images must be positive")

    def total_steps(self) -> int:
        return math.ceil(self.images / self.batch_size) if self.images > 0 else self.steps


@dataclass(frozen=True)
class DataConfig:
    """Where the measurements come from: a measurement file (or a dataset passed to ``train``)."""

    path: str = ""


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; ``network`` holds UNetConfig/MLPConfig fields minus the channels
    the family fixes, ``family`` overrides of the data's family config."""

    data: DataConfig = field(default_factory=DataConfig)
    family: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        def plain(obj):
            if dataclasses.is_dataclass(obj):
                return {k: plain(v) for k, v in vars(obj).items()}
            if isinstance(obj, dict):
                return {k: plain(v) for k, v in obj.items()}
            if isinstance(obj, (tuple, list)):
                return [plain(v) for v in obj]
            return obj

        return plain(self)

    def replace(self, **sections: Any) -> RunConfig:
        return dataclasses.replace(self, **sections)


def _build(cls, section: str, values: dict[str, Any]):
    if not isinstance(values, dict):
        raise ValueError(f"[{section}] must be a table, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{section}]; known: {sorted(fields)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values)


def run_config_from_dict(config: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts (a parsed TOML/JSON file); rejects unknown keys."""
    sections = {"data", "family", "network", "loss", "train"}
    unknown = sorted(set(config) - sections)
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; known: {sorted(sections)}")
    network = dict(config.get("network", {}))
    network_config_from_dict({"img_channels": 1, **network})  # validates keys early
    return RunConfig(
        data=_build(DataConfig, "data", config.get("data", {})),
        family=dict(config.get("family", {})),
        network=network,
        loss=_build(LossConfig, "loss", config.get("loss", {})),
        train=_build(TrainConfig, "train", config.get("train", {})),
    )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a ``.toml`` or ``.json`` config file into nested dicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return json.loads(text)
    return _toml_loads(text, str(path))


def _toml_loads(text: str, where: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{where}: invalid TOML: {err}") from err


def _parse_value(text: str) -> Any:
    """A TOML value (``3``, ``1e-4``, ``true``, ``[1, 2]``, ``"s"``); anything else is a bare string."""
    try:
        return _toml_loads(f"v = {text}", "override")["v"]
    except ValueError:
        return text


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values in TOML syntax) to nested dicts; returns a copy."""
    out = json.loads(json.dumps(config))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-4)")
        section, name = key.strip().split(".", 1)
        out.setdefault(section, {})[name.strip()] = _parse_value(value.strip())
    return out


def resolve_network_config(network: dict[str, Any], family: OperatorFamily) -> NetworkConfig:
    """The full network config: the user's fields plus the channels (and, for an MLP, the size) the
    family fixes; a user value that contradicts the family is an error."""
    C, H, W = family.image_shape
    fixed: dict[str, Any] = {
        "img_channels": C * (2 if family.is_complex else 1),
        "cond_channels": family.conditioning_channels,
    }
    if network.get("kind", "unet") == "mlp":
        fixed.update(height=H, width=W)
    for key, value in fixed.items():
        if key in network and network[key] != value:
            raise ValueError(f"network.{key} = {network[key]} contradicts the operator family ({value})")
    return network_config_from_dict({**network, **fixed})
