"""MRI cases for the shared operator / family property tests (collected by tests/conftest.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from ambient_science.linop import LinearOperator
from ambient_science.operators.mri import CartesianMRI, CartesianMRIFamily


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _maps(B: int, C: int, H: int, W: int, seed: int) -> torch.Tensor:
    g = _g(seed)
    return torch.complex(torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g))


OPERATORS: dict[str, tuple[Callable[[], LinearOperator], tuple[torch.dtype, ...]]] = {
    "mri_single_coil_columns": (
        lambda: CartesianMRIFamily((1, 12, 10), acceleration=2, center_fraction=0.2).sample(3, generator=_g()),
        (torch.complex64,),
    ),
    "mri_multi_coil_columns": (
        lambda: CartesianMRI((torch.rand(2, 10, generator=_g(1)) > 0.5).float(), _maps(2, 3, 8, 10, 2)),
        (torch.complex64,),
    ),
    "mri_multi_coil_2d_mask": (
        lambda: CartesianMRI((torch.rand(2, 8, 6, generator=_g(3)) > 0.6).float(), _maps(2, 4, 8, 6, 4)),
        (torch.complex64,),
    ),
    "mri_single_coil_2d_mask_nonsquare": (
        lambda: CartesianMRI((torch.rand(2, 9, 6, generator=_g(5)) > 0.4).float()),
        (torch.complex64,),
    ),
}

FAMILIES: dict[str, Callable[[], object]] = {
    "cartesian_mri_random": lambda: CartesianMRIFamily((1, 16, 20), acceleration=4, center_fraction=0.1),
    "cartesian_mri_equispaced_drop": lambda: CartesianMRIFamily(
        (1, 12, 32), acceleration=4, center_fraction=0.08, mask_kind="equispaced", drop_fraction=0.3
    ),
    "cartesian_mri_variable_density": lambda: CartesianMRIFamily(
        (1, 16, 16), acceleration=3, center_fraction=0.125, mask_kind="variable_density"
    ),
    "cartesian_mri_multicoil": lambda: CartesianMRIFamily(
        (1, 12, 16), acceleration=2, center_fraction=0.25, num_coils=3, drop_fraction=0.4
    ),
}

if importlib.util.find_spec("torchkbnufft") is not None:  # the optional radial operator, when installed

    def _radial() -> LinearOperator:
        from ambient_science.operators.nufft import RadialMRI, radial_trajectory

        traj = torch.stack([radial_trajectory(6, 12, offset=float(b)) for b in range(2)])
        return RadialMRI(traj, (1, 10, 10), coil_maps=_maps(2, 2, 10, 10, 6))

    OPERATORS["mri_radial_nufft"] = (_radial, (torch.complex64,))
