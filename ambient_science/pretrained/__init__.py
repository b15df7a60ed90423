"""Priors shipped with the package: trained here, with this library's trainer, from corrupted data only.

    >>> from ambient_science import pretrained
    >>> pretrained.available()                                   # doctest: +SKIP
    ['black-hole-eht-64', 'black-hole-eht2017-32', 'mri-knee-synthetic-clean', 'mri-knee-synthetic-r4', ...]
    >>> prior = pretrained.load("mri-knee-synthetic-r4")          # doctest: +SKIP
    >>> pretrained.card("mri-knee-synthetic-r4")["images_seen"]   # doctest: +SKIP

Each prior is a directory ``<name>/`` beside this file with ``weights.safetensors`` (EMA weights) and
``prior.json`` (network, operator family, loss, training config and the model card), the layout of
:func:`ambient_science.training.checkpoint.export_prior`. ``README.md`` here holds the model cards in prose: data,
corruption law, network, budget, machine, the exact commands and the commit that trained each prior.

The card's ``kind`` is ``"ambient"`` (trained from undersampled / sparse measurements; the card's
``corruption`` names the law), ``"em"`` (a clean-image prior trained by EM from such measurements, e.g. from an
ambient prior; its fit test is scored by the ambient prior copied into its ``fit_scorer/``) or ``"clean"`` (a
baseline trained on fully sampled images, ``corruption`` is ``"none"``). Exporting refuses an ``"ambient"`` or
``"em"`` label on data that were not corrupted.

Any path accepted by ``--prior`` or :func:`ambient_science.sampling.prior.load_prior` may also be such a directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import ambient_science.operators  # noqa: F401  (registers the built-in families the priors name)
from ambient_science.sampling.prior import Prior, load_prior

__all__ = ["ROOT", "available", "budget", "card", "info", "load", "path"]

ROOT = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped priors (sorted)."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "prior.json").is_file())


def path(name: str) -> Path:
    """The directory of the shipped prior ``name`` (a clear error listing the names when it is unknown)."""
    p = ROOT / name
    if not (p / "prior.json").is_file():
        names = available()
        raise KeyError(f"no shipped prior named {name!r}; available: {names if names else 'none'}")
    return p


def info(name: str) -> dict[str, Any]:
    """The full ``prior.json`` of ``name``: network, family, loss, train, data, step, card, files."""
    return json.loads((path(name) / "prior.json").read_text())


def card(name: str) -> dict[str, Any]:
    """The model card of ``name`` (a dict; ``README.md`` beside this module renders them all)."""
    return info(name)["card"]


def budget(name: str) -> dict[str, Any]:
    """Where ``name`` came from and what its training cost, in the examples' ``metrics.json`` form:
    ``{"source", "steps", "images_seen", "seconds", "commit"}``."""
    c = card(name)
    return {"source": f"shipped: ambient_science.pretrained {name!r}", "steps": c["steps"],
            "images_seen": c["images_seen"], "seconds": c["wall_seconds"], "commit": c["commit"]}  # fmt: skip


def load(name: str, *, map_location: torch.device | str | None = None) -> Prior:
    """The shipped prior ``name`` as a :class:`~ambient_science.sampling.prior.Prior` (EMA network, frozen, eval mode),
    with its weights' SHA-256 checked."""
    return load_prior(path(name), map_location=map_location)
