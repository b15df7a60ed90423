"""Names -> operator-family classes, for configs and checkpoints (the one place that maps strings to classes)."""

from __future__ import annotations

from typing import Any

from ambient_science.family import OperatorFamily

__all__ = ["family_classes", "family_from_config"]


def family_classes() -> dict[str, type[OperatorFamily]]:
    """Every registered family class by its ``name``."""
    from ambient_science import operators  # core does not import operators at module level

    return {cls.name: cls for cls in operators.FAMILIES}


def family_from_config(config: dict[str, Any]) -> OperatorFamily:
    """Rebuild a family from its ``config()`` (as stored in a checkpoint)."""
    if not isinstance(config, dict) or "family" not in config:
        raise ValueError(f"an operator-family config must be a dict with a 'family' key, got {config!r}")
    classes = family_classes()
    name = config["family"]
    if name not in classes:
        raise ValueError(f"unknown operator family {name!r}; known: {sorted(classes)}")
    return classes[name].from_config(config)
