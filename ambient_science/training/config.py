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
    [train]                         # TrainConfig fields; method = "ambient" | "em"
    [em]                            # EMConfig fields (method = "em": expectation maximisation)

Unknown sections or keys are errors (a typo never passes silently), and so is a value of the wrong type
or out of range: every field is checked by its declared type (``true``/``false`` only for booleans, never
a string; an integer where an integer is declared, not ``3.7``) and range, with a message naming the key,
the value and what is allowed (:func:`check_fields`). ``--set section.key=value`` goes through the same checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ambient_science.family import OperatorFamily
from ambient_science.network import MLPConfig, NetworkConfig, UNetConfig, network_config_from_dict
from ambient_science.training.losses import LossConfig

__all__ = [
    "DataConfig",
    "EMConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_fields",
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
    ``resume``: ``""`` (start fresh; refused when ``out_dir`` already holds checkpoints), ``"auto"``
    (``out_dir``'s latest checkpoint if there is one, else start fresh and say so), ``"latest"`` (``out_dir``'s
    latest checkpoint, which must exist) or a checkpoint path.
    ``max_minutes``: wall-clock budget; the run stops cleanly with a checkpoint once it is spent (0: none).
    SIGTERM / SIGINT (what schedulers send before killing a job) also stop it with a checkpoint.
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
    max_minutes: float = 0.0
    method: str = "ambient"  # "ambient": the ambient / EDM loss on the measurements; "em": [em] (training.em)

    def __post_init__(self):
        check_fields(TrainConfig, "train", vars(self), _TRAIN_RANGES)

    def total_steps(self) -> int:
        return math.ceil(self.images / self.batch_size) if self.images > 0 else self.steps


# key -> (low, high, low inclusive); ``None``: unbounded on that side
_GE1, _GE0, _GT0 = (1, None, True), (0, None, True), (0, None, False)
_TRAIN_GE0 = ("images", "warmup_images", "ema_rampup", "grad_clip", "max_nonfinite", "checkpoint_every",
              "sample_every", "num_workers", "weight_decay", "max_minutes")  # fmt: skip
_TRAIN_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    **dict.fromkeys(("steps", "batch_size", "log_every", "sample_count", "sample_steps", "keep_checkpoints"), _GE1),
    **dict.fromkeys(_TRAIN_GE0, _GE0),
    **dict.fromkeys(("lr", "ema_halflife_images", "adam_eps"), _GT0),
    "adam_betas": (0, 1, True),
}
_LOSS_RANGES = {"p_std": _GT0, "tilde_draws": _GE1}  # hidden_weight (a number > 0 or "auto"): LossConfig checks it
_NETWORK_GE1 = ("img_channels", "model_channels", "num_blocks", "head_channels", "embed_features", "height", "width",
                "hidden", "depth", "channel_mult")  # fmt: skip
_NETWORK_RANGES = {
    **dict.fromkeys(_NETWORK_GE1, _GE1),
    **dict.fromkeys(("cond_channels", "attn_levels"), _GE0),
    "sigma_data": _GT0,
    "dropout": (0, 1, True),
}
_EM_RANGES = {
    **dict.fromkeys(("images_per_round", "gaussian_iters", "gaussian_cg_iters", "sampling_steps", "batch_size"), _GE1),
    "cg_iters": _GE0,
    **dict.fromkeys(("sigma_min", "sigma_max", "rho"), _GT0),
    "eta": (0, 1, True),
    "refresh_fraction": (0, 1, False),
}
_CHOICES = {
    ("loss", "kind"): ("auto", "ambient", "noisy_ambient"),
    ("train", "method"): ("ambient", "em"),
    ("em", "gaussian_basis"): ("auto", "fourier", "pixel"),
}


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a finite number"
    if tp is str:
        return "a string"
    if origin is tuple:
        args = typing.get_args(tp)
        inner = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(args[0], str(args[0]))
        return f"a list of {inner}" if args[-1] is Ellipsis else f"a list of {len(args)} {inner}"
    return str(tp)


def _check_scalar(tp, value) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return True  # a type this checker does not know (dicts, ...): the dataclass checks it


def _describe(value) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(value))
    kind = kind or ("a list" if isinstance(value, (list, tuple)) else type(value).__name__)
    return f"{value!r} ({kind})"


def check_fields(cls, section: str, values: dict[str, Any], ranges: dict | None = None) -> None:
    """Check ``values`` against the declared field types of dataclass ``cls`` and the ``ranges``
    (``key -> (low, high, low_inclusive)``); raise ``ValueError`` naming ``section.key``, the value and what
    is allowed. Booleans must be ``true``/``false`` (a string like ``"no"`` is refused, never read as truthy);
    integer fields refuse ``3.7`` and ``True``; number fields refuse NaN/Inf; tuple fields take lists."""
    hints = typing.get_type_hints(cls)
    ranges = ranges or {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, tp = values[f.name], hints.get(f.name, Any)
        key = f"{section}.{f.name}"
        if typing.get_origin(tp) is tuple:
            args = typing.get_args(tp)
            ok = isinstance(value, (list, tuple)) and (args[-1] is Ellipsis or len(value) == len(args))
            ok = ok and all(_check_scalar(args[0], v) for v in value)
            items = list(value) if ok else []
            if not ok:
                raise ValueError(f"{key} must be {_type_name(tp)}, got {_describe(value)}")
        else:
            if not _check_scalar(tp, value):
                raise ValueError(f"{key} must be {_type_name(tp)}, got {_describe(value)}")
            items = [value]
        choices = _CHOICES.get((section, f.name))
        if choices and value not in choices:
            raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")
        if f.name in ranges:
            low, high, inclusive = ranges[f.name]
            for v in items:
                bad = low is not None and (v < low if inclusive else v <= low)
                bad = bad or (high is not None and v > high)
                if bad:
                    lo = "" if low is None else f"{'>=' if inclusive else '>'} {low}"
                    hi = "" if high is None else f"<= {high}"
                    allowed = " and ".join(x for x in (lo, hi) if x)
                    what = "every entry" if typing.get_origin(tp) is tuple else "a value"
                    raise ValueError(f"{key} must be {_type_name(tp)} with {what} {allowed}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the measurements come from: a measurement file (or a dataset passed to ``train``)."""

    path: str = ""

    def __post_init__(self):
        check_fields(DataConfig, "data", vars(self))


@dataclass(frozen=True)
class EMConfig:
    """``[em]``: expectation maximisation (``train.method = "em"``, :mod:`ambient_science.training.em`).

    Rounds of ``images_per_round`` training images (M-steps), each after an E-step that draws one posterior
    sample per training measurement: the first from a Gaussian prior fitted by ``gaussian_iters`` Monte-Carlo
    EM iterations (``gaussian_basis``: ``"fourier"`` stationary covariance, ``"pixel"`` diagonal, ``"auto"``
    Fourier for complex images), then by MMPS with the current prior (``sampling_steps`` levels of an EDM
    schedule from ``sigma_max`` to ``sigma_min``, ``cg_iters`` conjugate-gradient iterations per level, ``eta``
    0 deterministic to 1 ancestral), ``batch_size`` measurements at a time; ``refresh_fraction`` of the samples
    redrawn per round (1: all; less: an incremental E-step, the rest kept from the previous round).
    ``init_prior``: a trained prior (checkpoint or exported prior, e.g. an ambient one) that replaces the Gaussian
    as ``q_0``: the first E-step draws its A-DPS posterior samples, and the first M-step starts from its network.
    """

    images_per_round: int = 5_000
    gaussian_iters: int = 16
    gaussian_basis: str = "auto"
    gaussian_cg_iters: int = 32
    sampling_steps: int = 16
    cg_iters: int = 1
    sigma_min: float = 0.005
    sigma_max: float = 10.0
    rho: float = 7.0
    eta: float = 1.0
    batch_size: int = 32
    refresh_fraction: float = 1.0
    init_prior: str = ""

    def __post_init__(self):
        check_fields(EMConfig, "em", vars(self), _EM_RANGES)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"em.sigma_min ({self.sigma_min}) must be below em.sigma_max ({self.sigma_max})")


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; ``network`` holds UNetConfig/MLPConfig fields minus the channels
    the family fixes, ``family`` overrides of the data's family config."""

    data: DataConfig = field(default_factory=DataConfig)
    family: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    em: EMConfig = field(default_factory=EMConfig)

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
    if cls is LossConfig:  # LossConfig (training.losses) checks its own choices, not the value types
        check_fields(LossConfig, section, values, _LOSS_RANGES)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values)


def _check_network(network: dict[str, Any]) -> None:
    """Types and ranges of the ``[network]`` values, then the network config's own checks."""
    classes = {"unet": UNetConfig, "mlp": MLPConfig}
    kind = network.get("kind", "unet")
    if kind not in classes:
        raise ValueError(f"network.kind must be one of {sorted(classes)}, got {_describe(kind)}")
    cls = classes[kind]
    check_fields(cls, "network", network, _NETWORK_RANGES)


def run_config_from_dict(config: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts (a parsed TOML/JSON file); rejects unknown keys."""
    sections = {"data", "family", "network", "loss", "train", "em"}
    unknown = sorted(set(config) - sections)
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; known: {sorted(sections)}")
    for name in sections & set(config):
        if not isinstance(config[name], dict):
            raise ValueError(f"[{name}] must be a table of key = value, got {_describe(config[name])}")
    network = dict(config.get("network", {}))
    _check_network(network)
    try:
        network_config_from_dict({"img_channels": 1, **network})  # validates keys and the network's own rules
    except TypeError as err:  # an unknown key
        raise ValueError(f"[network]: {err}") from err
    return RunConfig(
        data=_build(DataConfig, "data", config.get("data", {})),
        family=dict(config.get("family", {})),
        network=network,
        loss=_build(LossConfig, "loss", config.get("loss", {})),
        train=_build(TrainConfig, "train", config.get("train", {})),
        em=_build(EMConfig, "em", config.get("em", {})),
    )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a ``.toml`` or ``.json`` config file into nested dicts."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"config file {path} is a directory; expected a .toml or .json file")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err}); expected a .toml or .json config") from err
    if path.suffix.lower() == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON: {err}") from err
    else:
        config = _toml_loads(text, str(path))
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a table of [sections], got {type(config).__name__}")
    return config


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
