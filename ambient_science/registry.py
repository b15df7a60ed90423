"""Names -> operator-family classes, for configs and checkpoints (the one place that maps strings to classes).

A family registers itself: defining a subclass of :class:`~ambient_science.family.OperatorFamily` with a
``name`` adds it here (``OperatorFamily.__init_subclass__``). The built-in families are registered when
:mod:`ambient_science.operators` is imported; the layers that load checkpoints for a user (``pipelines``,
``cli``, ``pretrained`` and the ``ambient_science`` package namespace) import it. The core never imports
``operators`` (docs/design.md §2).
"""

from __future__ import annotations

from typing import Any

from ambient_science.family import OperatorFamily, registered_families

__all__ = ["family_classes", "family_from_config"]


def family_classes() -> dict[str, type[OperatorFamily]]:
    """Every registered family class by its ``name``."""
    return dict(registered_families())


def family_from_config(config: dict[str, Any]) -> OperatorFamily:
    """Rebuild a family from its ``config()`` (as stored in a checkpoint)."""
    if not isinstance(config, dict) or "family" not in config:
        raise ValueError(f"an operator-family config must be a dict with a 'family' key, got {config!r}")
    classes = family_classes()
    name = config["family"]
    if name not in classes:
        raise ValueError(
            f"unknown operator family {name!r}; registered: {sorted(classes)}. A family is registered when the "
            "module defining it is imported (the built-in ones: `import ambient_science.operators`)"
        )
    return classes[name].from_config(config)
