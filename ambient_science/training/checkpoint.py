"""Checkpoints: safetensors weights + JSON config, written atomically, verified on load. Never pickled code.

Layout (one directory per checkpoint, under a run's ``checkpoints/``)::

    checkpoints/
        latest                       text: the name of the newest complete checkpoint
        checkpoint-00001000/
            model.safetensors        trained weights
            ema.safetensors          EMA weights (what priors and samplers use)
            optimizer.pt             optimizer state (tensors and numbers only: ``torch.load(weights_only=True)``)
            rng.safetensors          RNG states (uint8 tensors)
            config.json              {"network", "family", "loss", "train", "data", "version"}
            state.json               step, extra training state, and the size + SHA-256 of every file above

An *exported prior* (:func:`export_prior`; what ``ambient_science.pretrained`` ships) is the inference part of
one checkpoint, in a directory of its own::

    <name>/
        weights.safetensors          EMA weights only
        prior.json                   {"format": "ambient-science-prior", "network", "family", "loss", "train",
                                      "data", "version", "step", "card", "files": {name: {bytes, sha256}}}

:func:`load_checkpoint` (hence ``Prior.from_checkpoint`` and every ``--prior PATH``) reads both layouts.

A checkpoint is first written to a temporary directory beside it, then renamed into place
(``os.replace``), then ``latest`` is switched (temp file + rename): a crash mid-write leaves the previous
checkpoint and ``latest`` untouched. ``state.json`` is written last and lists a checksum per file, so a
truncated or corrupt checkpoint is detected on load (:class:`CheckpointError`, naming the path).

    >>> # ckpt = load_checkpoint("runs/mri")      # run dir, checkpoints/ dir, or one checkpoint-<step> dir
    >>> # D = ckpt.network; family = ckpt.family  # EMA network (eval mode) and its operator family
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ambient_science.ema import EMA
from ambient_science.family import OperatorFamily
from ambient_science.network import build_network, network_config_from_dict
from ambient_science.registry import family_from_config
from ambient_science.version import __version__

__all__ = [
    "FIT_SCORER_DIR",
    "PRIOR_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "ResumeState",
    "export_prior",
    "is_exported_prior",
    "list_checkpoints",
    "load_checkpoint",
    "load_for_resume",
    "resolve_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
    "verify_exported_prior",
]

FORMAT = "ambient-science-checkpoint"
FORMAT_VERSION = 1
PRIOR_FORMAT = "ambient-science-prior"
_PRIOR_FILE = "prior.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_LATEST = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not fit the network it is loaded into."""


@dataclass
class Checkpoint:
    """A trained prior: the EMA network (eval mode, no gradients), its operator family and config."""

    network: nn.Module
    family: OperatorFamily
    config: dict[str, Any]
    step: int
    path: Path


@dataclass
class ResumeState:
    """What :func:`load_for_resume` restores besides the weights and optimizer it loads in place."""

    step: int
    rng_state: dict[str, Tensor]
    extra: dict[str, Any]
    config: dict[str, Any]
    path: Path
    files: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (or directories on some OSes) do not support fsync
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _weights(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The ``checkpoint-<step>`` directories under ``directory``, oldest first (complete or not)."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    directory: str | Path,
    *,
    network: nn.Module,
    ema: EMA | nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    rng_state: dict[str, Tensor],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: int = 3,
) -> Path:
    """Write ``<directory>/checkpoint-<step>/`` atomically, point ``latest`` at it, keep the newest ``keep``.

    Args:
        directory: the checkpoints folder of a run.
        network: the trained network, unwrapped (not DDP, not compiled).
        ema: the :class:`~ambient_science.ema.EMA` (or its module).
        optimizer: saved with ``torch.save`` of its state dict (tensors and numbers only).
        step: optimizer steps taken.
        rng_state: named RNG states (``torch.Generator.get_state()`` tensors).
        config: JSON-serialisable run description (network, family, loss, train, data, version).
        extra: JSON-serialisable training state (images seen, skipped steps, ...).
        keep: how many checkpoints to keep (older ones are deleted once the new one is in place).

    Returns: the path of the new checkpoint.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{int(step):08d}"
    final = root / name
    ema_module = ema.module if isinstance(ema, EMA) else ema
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        save_file(_weights(network), tmp / "model.safetensors", metadata={"format": FORMAT, "step": str(step)})
        save_file(_weights(ema_module), tmp / "ema.safetensors", metadata={"format": FORMAT, "step": str(step)})
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng = {k: v.detach().to("cpu").contiguous() for k, v in rng_state.items()}
        save_file(rng, tmp / "rng.safetensors")
        _write_json(tmp / "config.json", config)
        files = {}
        for path in sorted(tmp.iterdir()):
            _fsync(path)
            files[path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        state = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "step": int(step),
            "extra": dict(extra or {}),
            "files": files,
        }
        _write_json(tmp / "state.json", state)  # last: its presence marks a complete checkpoint
        _fsync(tmp / "state.json")
        if final.exists():  # re-saving a step (e.g. after a resume): swap, then drop the old copy
            old = root / f".old-{name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync(root)
        _atomic_write_text(root / _LATEST, name + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep=max(1, int(keep)), current=final)
    return final


def _prune(root: Path, *, keep: int, current: Path) -> None:
    """Delete all but the newest ``keep`` checkpoints (never ``current``), and stale temporary folders."""
    for stale in root.glob(".tmp-checkpoint-*"):
        shutil.rmtree(stale, ignore_errors=True)
    existing = [p for p in list_checkpoints(root) if p != current]
    for old in existing[: max(0, len(existing) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint dir, a checkpoints dir (``latest``) or a run dir."""
    p = Path(path)
    if _NAME.match(p.name) or (p / "state.json").exists():
        if not p.is_dir():
            raise CheckpointError(f"checkpoint {p} does not exist")
        return p
    for root in (p, p / "checkpoints"):
        latest = root / _LATEST
        if latest.is_file():
            name = latest.read_text().strip()
            if not _NAME.match(name):
                raise CheckpointError(f"{latest}: corrupt 'latest' pointer {name!r}")
            target = root / name
            if not target.is_dir():
                raise CheckpointError(f"{latest} points to {target}, which does not exist")
            return target
    raise CheckpointError(
        f"no checkpoint at {p}: expected a checkpoint-<step> directory, or a run / checkpoints directory "
        "holding a 'latest' pointer"
    )


def _other_checkpoints_hint(path: Path) -> str:
    others = [str(p) for p in list_checkpoints(path.parent) if p != path]
    return f"; other checkpoints in {path.parent}: {others[::-1]}" if others else ""


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check ``state.json`` and the size and SHA-256 of every file it lists; return the state.

    Raises :class:`CheckpointError` naming the checkpoint (and the bad file) when anything is off.
    """
    path = Path(path)
    hint = _other_checkpoints_hint(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise CheckpointError(f"incomplete checkpoint {path}: state.json missing (interrupted write?){hint}")
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint {path}: state.json is not valid JSON ({err}){hint}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("files"), dict):
        raise CheckpointError(f"{path} is not an ambient-science checkpoint (state.json format){hint}")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state['format_version']} is newer than this library's")
    _verify_files(path, state["files"], "corrupt checkpoint", hint)
    return state


def _verify_files(path: Path, files: dict[str, Any], what: str, hint: str = "") -> None:
    """Check each ``files[name] = {"bytes", "sha256"}`` under ``path``; raise naming ``what`` and the file."""
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{what} {path}: {name} is missing{hint}")
        size = f.stat().st_size
        if name.endswith(".json") and (size != meta.get("bytes") or _sha256(f) != meta.get("sha256")):
            try:
                json.loads(f.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError):
                pass  # not JSON any more: truncated or corrupt (below)
            else:
                raise CheckpointError(
                    f"{what} {path}: {name} was edited after it was written (valid JSON, but its size / SHA-256 "
                    f"differ from the record in state.json); restore the original {name}{hint}"
                )
        if size != meta.get("bytes"):
            raise CheckpointError(
                f"{what} {path}: {name} has {size} bytes, expected {meta.get('bytes')} (truncated or corrupt){hint}"
            )
        if _sha256(f) != meta.get("sha256"):
            raise CheckpointError(f"{what} {path}: {name} fails its SHA-256 check{hint}")


def _load_weights(module: nn.Module, file: Path, device: str) -> None:
    try:
        sd = load_file(file, device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {file}: {err}") from err
    try:
        module.load_state_dict(sd)
    except RuntimeError as err:
        raise CheckpointError(f"{file} does not fit the network: {err}") from err


def _device_str(map_location: str | torch.device | None) -> str:
    return str(torch.device(map_location)) if map_location is not None else "cpu"


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint {path}: config.json unreadable ({err})") from err
    for key in ("network", "family"):
        if key not in config:
            raise CheckpointError(f"{path}/config.json has no {key!r} section")
    return config


def load_checkpoint(
    path: str | Path, map_location: str | torch.device | None = None, *, weights: str = "ema"
) -> Checkpoint:
    """Load a trained prior: the network built from ``config.json`` with the EMA (or ``"model"``) weights.

    Args:
        path: a checkpoint directory, or a run / checkpoints directory (its ``latest``).
        map_location: device for the weights (default CPU).
        weights: ``"ema"`` (default) or ``"model"``.
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    if is_exported_prior(path):
        if weights != "ema":
            raise CheckpointError(f"{path} is an exported prior: it holds the EMA weights only")
        ckpt = Path(path)
        config = verify_exported_prior(ckpt)
        state, weight_file = {"step": config["step"]}, ckpt / "weights.safetensors"
    else:
        ckpt = resolve_checkpoint(path)
        state = verify_checkpoint(ckpt)
        config = _read_config(ckpt)
        weight_file = ckpt / f"{weights}.safetensors"
    with torch.random.fork_rng(devices=[]):  # init draws must not touch the caller's RNG
        network = build_network(network_config_from_dict(config["network"]))
    device = _device_str(map_location)
    network = network.to(device)
    _load_weights(network, weight_file, device)
    network.eval().requires_grad_(False)
    return Checkpoint(
        network=network,
        family=family_from_config(config["family"]),
        config=config,
        step=int(state["step"]),
        path=ckpt,
    )


def load_for_resume(
    path: str | Path,
    *,
    network: nn.Module,
    ema: EMA | nn.Module,
    optimizer: torch.optim.Optimizer,
    map_location: str | torch.device | None = None,
) -> ResumeState:
    """Load a checkpoint into an existing (unwrapped) network, EMA and optimizer, for exact resume."""
    ckpt = resolve_checkpoint(path)
    state = verify_checkpoint(ckpt)
    config = _read_config(ckpt)
    device = _device_str(map_location)
    _load_weights(network, ckpt / "model.safetensors", device)
    _load_weights(ema.module if isinstance(ema, EMA) else ema, ckpt / "ema.safetensors", device)
    try:
        opt_state = torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(opt_state)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"cannot restore the optimizer from {ckpt / 'optimizer.pt'}: {err}") from err
    try:
        rng = load_file(ckpt / "rng.safetensors")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {ckpt / 'rng.safetensors'}: {err}") from err
    return ResumeState(
        step=int(state["step"]),
        rng_state=rng,
        extra=dict(state.get("extra", {})),
        config=config,
        path=ckpt,
        files=state["files"],
    )


# ---------------------------------------------------------------------------------------------------
# exported priors (inference only)
# ---------------------------------------------------------------------------------------------------


#: where :func:`export_prior` copies a fit scorer: a subdirectory of the exported prior
FIT_SCORER_DIR = "fit_scorer"


def is_exported_prior(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by :func:`export_prior`."""
    return (Path(path) / _PRIOR_FILE).is_file()


def verify_exported_prior(path: str | Path) -> dict[str, Any]:
    """Read ``prior.json`` of an exported prior and check the size and SHA-256 of its weights; return it."""
    path = Path(path)
    try:
        meta = json.loads((path / _PRIOR_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}/{_PRIOR_FILE} unreadable ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != PRIOR_FORMAT:
        raise CheckpointError(f"{path} is not an exported ambient-science prior ({_PRIOR_FILE} format)")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: prior format {meta['format_version']} is newer than this library's")
    for key in ("network", "family", "files", "step"):
        if key not in meta:
            raise CheckpointError(f"{path}/{_PRIOR_FILE} has no {key!r} entry")
    _verify_files(path, meta["files"], "corrupt exported prior")
    return meta


def _check_fit_scorer(path: str | Path, config: dict[str, Any]) -> dict[str, Any]:
    """``prior.json`` of the fit scorer at ``path`` for a prior of ``config`` (:func:`export_prior`), checked: an
    exported prior, of a family that further corrupts (``drop_fraction``), of the same images."""
    if not is_exported_prior(path):
        raise CheckpointError(f"fit scorer {path}: not an exported prior (export the ambient run first)")
    meta = verify_exported_prior(path)
    family = meta["family"]
    if "drop_fraction" not in family:
        raise ValueError(f"fit scorer {path}: a {family.get('family')!r} prior without a further corruption "
                         "(drop_fraction); expected an ambient prior of the same data")  # fmt: skip
    ours, theirs = config["family"].get("image_shape"), family.get("image_shape")
    if theirs != ours:
        raise ValueError(f"fit scorer {path}: images {theirs}, the prior's {ours}; expected the same images")
    if "scorer" in meta.get("fit", {}):
        raise ValueError(f"fit scorer {path} itself names a scorer; expected a prior that scores on its own")
    return meta


def export_prior(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    card: dict[str, Any],
    overwrite: bool = False,
    fit_scorer: str | Path | None = None,
) -> Path:
    """Write the EMA weights and config of ``checkpoint`` (any layout :func:`resolve_checkpoint` takes) to
    ``out_dir`` as an exported prior with the model ``card`` (free-form JSON: data, corruption law, budget,
    command, commit, ...). Refuses to replace an existing ``out_dir`` unless ``overwrite``; written beside
    it first and renamed into place.

    ``fit_scorer``: an exported prior with a further corruption (an ambient mask-family prior of the same training
    data) that scores the fit test of this one (a clean-family prior, e.g. trained by EM from it; see
    :func:`ambient_science.sampling.fit.fit_scorer`): copied into ``out_dir/fit_scorer/``, and its ``"fit"`` entry
    (calibrated threshold, fallback λ) becomes this prior's, with ``"scorer": "fit_scorer"``."""
    ckpt = resolve_checkpoint(checkpoint)
    state = verify_checkpoint(ckpt)
    config = _read_config(ckpt)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    scorer_meta = _check_fit_scorer(fit_scorer, config) if fit_scorer is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a shipped prior is read by everyone
    try:
        shutil.copyfile(ckpt / "ema.safetensors", tmp / "weights.safetensors")
        meta = {
            "format": PRIOR_FORMAT,
            "format_version": FORMAT_VERSION,
            **{k: config[k] for k in ("network", "family", "loss", "train", "data", "version") if k in config},
            "step": int(state["step"]),
            "card": card,
            "files": {"weights.safetensors": {"bytes": (tmp / "weights.safetensors").stat().st_size,
                                              "sha256": _sha256(tmp / "weights.safetensors")}},
        }  # fmt: skip
        if scorer_meta is not None:
            (tmp / FIT_SCORER_DIR).mkdir(mode=0o755)
            for name in (_PRIOR_FILE, *scorer_meta["files"]):
                shutil.copyfile(Path(fit_scorer) / name, tmp / FIT_SCORER_DIR / name)
            meta["fit"] = {**scorer_meta.get("fit", {}), "scorer": FIT_SCORER_DIR}
        _write_json(tmp / _PRIOR_FILE, meta)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
