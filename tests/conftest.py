"""Shared fixtures and the registries every property test runs over.

Adding an operator or a family to the project = adding one line to ``OPERATORS`` or ``FAMILIES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ambient_science.linop import Identity, LinearOperator
from ambient_science.operators import (
    BoxMaskFamily,
    CleanFamily,
    PixelMask,
    PixelMaskFamily,
)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# name -> (factory, domain dtypes the operator accepts)
OPERATORS: dict[str, tuple[Callable[[], LinearOperator], tuple[torch.dtype, ...]]] = {
    "identity": (lambda: Identity((2, 1, 6, 5)), (torch.float32, torch.complex64)),
    "pixel_mask_shared": (
        lambda: PixelMaskFamily((3, 8, 7), p=0.5).sample(2, generator=_g()),
        (torch.float32, torch.complex64),
    ),
    "pixel_mask_per_channel": (
        lambda: PixelMask((torch.rand(2, 3, 8, 8, generator=_g()) > 0.3).float()),
        (torch.float32, torch.complex64),
    ),
    "scaled_composed": (
        lambda: (
            (2.5 - 1j)
            * PixelMaskFamily((1, 8, 8), p=0.3).sample(2, generator=_g(1))
            * PixelMaskFamily((1, 8, 8), p=0.3).sample(2, generator=_g(2))
        ),
        (torch.complex64,),
    ),
}

# name -> family factory (every family: sampler, further corruption, conditioning)
FAMILIES: dict[str, Callable[[], object]] = {
    "pixel_mask": lambda: PixelMaskFamily((2, 16, 12), p=0.6, delta=0.2),
    "box_mask": lambda: BoxMaskFamily((1, 16, 16), box=6, delta=0.2),
    "clean": lambda: CleanFamily((1, 8, 8)),
}


# Each operator family adds its cases in a module tests/registry_<family>.py defining OPERATORS and FAMILIES.
for _path in sorted(Path(__file__).parent.glob("registry_*.py")):
    _module = importlib.import_module(_path.stem)
    OPERATORS.update(getattr(_module, "OPERATORS", {}))
    FAMILIES.update(getattr(_module, "FAMILIES", {}))


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (small networks are faster so, and a busy machine stays usable)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def generator() -> torch.Generator:
    return _g(1234)
