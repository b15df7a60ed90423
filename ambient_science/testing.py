"""Property checks every linear operator must pass, shipped with the library (docs/design.md §4).

Use them on your own operators:

    >>> import torch
    >>> from ambient_science.linop import Identity
    >>> check_adjoint(Identity((2, 1, 8, 8))) < 1e-6
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from ambient_science.linop import LinearOperator, batch_dot

__all__ = ["check_adjoint", "check_linearity", "check_normal", "random_like_domain", "random_like_range"]


def _randn(shape, dtype: torch.dtype, generator: torch.Generator, device) -> Tensor:
    if dtype.is_complex:
        real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
        re = torch.randn(shape, generator=generator, dtype=real_dtype, device=generator.device)
        im = torch.randn(shape, generator=generator, dtype=real_dtype, device=generator.device)
        return torch.complex(re, im).to(device)
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def _device(A: LinearOperator) -> torch.device:
    for b in A.buffers():
        return b.device
    return torch.device("cpu")


def random_like_domain(A: LinearOperator, dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    """A standard normal input of ``A``'s input shape."""
    return _randn(A.ishape, dtype, generator, _device(A))


def random_like_range(A: LinearOperator, dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    """A standard normal tensor of ``A``'s output shape, with the dtype ``A`` produces from ``dtype``."""
    probe = A(torch.zeros(A.ishape, dtype=dtype, device=_device(A)))
    return _randn(A.oshape, probe.dtype, generator, _device(A))


def check_adjoint(A: LinearOperator, dtype: torch.dtype = torch.float32, seed: int = 0) -> float:
    """Dot-product test: relative error ``|<A x, y> - <x, A^H y>| / (||A x|| ||y||)``.

    For a real domain and a complex range (e.g. visibilities of a real image) the adjoint is taken
    with respect to the real inner product, ``Re<A x, y> = <x, A^H y>``. Inner products are
    accumulated in float64 so the error reflects the operator, not the sum.
    """
    g = torch.Generator().manual_seed(seed)
    x = random_like_domain(A, dtype, g)
    y = random_like_range(A, dtype, g)
    Ax, AHy = A(x), A.H(y)
    if Ax.shape != A.oshape or AHy.shape != A.ishape:
        raise AssertionError(f"shape mismatch: A x {tuple(Ax.shape)}, A^H y {tuple(AHy.shape)}")
    lhs = batch_dot(Ax.to(_wide(Ax.dtype)), y.to(_wide(y.dtype))).sum()
    rhs = batch_dot(x.to(_wide(x.dtype)), AHy.to(_wide(AHy.dtype))).sum()
    if not x.is_complex():
        if AHy.is_complex():
            raise AssertionError("A^H maps into a complex space but A's domain is real")
        lhs = lhs.real
    scale = (Ax.abs().double().norm() * y.abs().double().norm()).clamp_min(1e-30)
    return float((lhs - rhs).abs() / scale)


def check_linearity(A: LinearOperator, dtype: torch.dtype = torch.float32, seed: int = 0) -> float:
    """Relative error of ``A(a x + b z) = a A x + b A z`` for random scalars."""
    g = torch.Generator().manual_seed(seed)
    x, z = random_like_domain(A, dtype, g), random_like_domain(A, dtype, g)
    a, b = 0.7, -1.3
    lhs, rhs = A(a * x + b * z), a * A(x) + b * A(z)
    return float((lhs - rhs).abs().double().norm() / rhs.abs().double().norm().clamp_min(1e-30))


def check_normal(A: LinearOperator, dtype: torch.dtype = torch.float32, seed: int = 0) -> float:
    """Relative error between ``A.N(x)`` and ``A.H(A(x))``."""
    g = torch.Generator().manual_seed(seed)
    x = random_like_domain(A, dtype, g)
    lhs, rhs = A.N(x), A.H(A(x))
    return float((lhs - rhs).abs().double().norm() / rhs.abs().double().norm().clamp_min(1e-30))


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64
