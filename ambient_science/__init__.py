"""ambient-science: diffusion priors trained from corrupted measurements only, and posterior sampling with them.

The names users need, loaded on first access (PEP 562): ``import ambient_science`` imports nothing but the
version, and each name below imports its own module when first used.

    >>> from ambient_science import pretrained, reconstruct, GaussianLikelihood   # doctest: +SKIP
    >>> prior = pretrained.load("mri-knee-synthetic-r4")                           # doctest: +SKIP

- operators: ``LinearOperator``, ``SubsampledOperator``, ``OperatorFamily``, ``conjugate_gradient``;
  the subpackage ``operators`` (forward models and their families);
- sampling: ``Prior``, ``load_prior``, ``reconstruct``, ``GaussianLikelihood``;
- training: ``train`` (from a measurement file), ``RunConfig``;
- data and priors: the subpackages ``datasets`` and ``pretrained``; ``__version__``.

Checkpoints name their operator family by a string, found in a registry that a family joins when its module
is imported (:mod:`ambient_science.registry`). So the first access of a sampling, training or ``pretrained``
name also imports :mod:`ambient_science.operators`, which registers the built-in families. The parts and what
each may import: docs/design.md §2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ambient_science.version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from ambient_science import datasets, operators, pretrained
    from ambient_science.family import OperatorFamily
    from ambient_science.linop import LinearOperator, SubsampledOperator, conjugate_gradient
    from ambient_science.pipelines.training import train
    from ambient_science.sampling.likelihoods import GaussianLikelihood
    from ambient_science.sampling.prior import Prior, load_prior
    from ambient_science.sampling.reconstruction import reconstruct
    from ambient_science.training.config import RunConfig

# public name -> (module, attribute or None for the module itself, whether it needs the built-in families)
_LAZY: dict[str, tuple[str, str | None, bool]] = {
    "LinearOperator": ("ambient_science.linop", "LinearOperator", False),
    "SubsampledOperator": ("ambient_science.linop", "SubsampledOperator", False),
    "conjugate_gradient": ("ambient_science.linop", "conjugate_gradient", False),
    "OperatorFamily": ("ambient_science.family", "OperatorFamily", False),
    "Prior": ("ambient_science.sampling.prior", "Prior", True),
    "load_prior": ("ambient_science.sampling.prior", "load_prior", True),
    "reconstruct": ("ambient_science.sampling.reconstruction", "reconstruct", True),
    "GaussianLikelihood": ("ambient_science.sampling.likelihoods", "GaussianLikelihood", True),
    "RunConfig": ("ambient_science.training.config", "RunConfig", True),
    "train": ("ambient_science.pipelines.training", "train", True),
    "operators": ("ambient_science.operators", None, False),
    "datasets": ("ambient_science.datasets", None, False),
    "pretrained": ("ambient_science.pretrained", None, True),
}

__all__ = [
    "GaussianLikelihood",
    "LinearOperator",
    "OperatorFamily",
    "Prior",
    "RunConfig",
    "SubsampledOperator",
    "__version__",
    "conjugate_gradient",
    "datasets",
    "load_prior",
    "operators",
    "pretrained",
    "reconstruct",
    "train",
]  # = the names of _LAZY and __version__ (tests/test_namespace.py)


def __getattr__(name: str) -> Any:
    """Import the module of a public name on first access, and cache the name in this module."""
    try:
        module_name, attribute, needs_families = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ambient_science' has no attribute {name!r}") from None
    if needs_families:
        importlib.import_module("ambient_science.operators")  # registers the built-in operator families
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
