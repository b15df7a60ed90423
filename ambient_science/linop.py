"""Batched linear operators: forward ``A(x)``, adjoint ``A.H(y)``, normal ``A.N(x)``, algebra, CG solves.

Every operator acts on a whole batch, and each sample of the batch may carry its own parameters (its
own mask, its own sampled lines, its own uv points). Parameters live in registered buffers, so
``A.to(device)`` moves them; no operator stores a device.

    >>> import torch
    >>> from ambient_science.linop import Identity
    >>> A = 2.0 * Identity((1, 1, 4, 4))
    >>> bool(torch.allclose(A.H(A(torch.ones(1, 1, 4, 4))), torch.full((1, 1, 4, 4), 4.0)))
    True
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from numbers import Number

import torch
from torch import Tensor, nn

__all__ = [
    "Adjoint",
    "Compose",
    "Identity",
    "LinearOperator",
    "Scaled",
    "SubsampledOperator",
    "batch_dot",
    "conjugate_gradient",
    "repeat_batch",
]

Shape = tuple[int, ...]


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product ``<a, b> = sum conj(a) * b`` over all but the first dimension.

    Shape: ``a, b (B, ...)`` -> ``(B,)``; real when both inputs are real.
    """
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.reshape(prod.shape[0], -1).sum(dim=1)


def _check_shape(x: Tensor, expected: Shape, what: str, op: LinearOperator) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(op).__name__}: {what} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{type(op).__name__}: {what} has shape {tuple(x.shape)}, expected {tuple(expected)}")


class LinearOperator(nn.Module, abc.ABC):
    """A batched linear map ``A: C^ishape -> C^oshape`` (or real).

    Subclasses set ``ishape`` and ``oshape`` (full shapes, batch dimension first) and implement
    ``_forward`` and ``_adjoint``. The public calls ``A(x)`` and ``A.H(y)`` check shapes and delegate.
    ``A.H`` is cached; ``A * B`` composes, ``c * A`` scales, ``A.N`` is the normal operator ``A^H A``.
    """

    def __init__(self, ishape: Sequence[int], oshape: Sequence[int]):
        super().__init__()
        self.ishape: Shape = tuple(int(s) for s in ishape)
        self.oshape: Shape = tuple(int(s) for s in oshape)

    # -- to implement -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _forward(self, x: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _adjoint(self, y: Tensor) -> Tensor: ...

    def _normal(self, x: Tensor) -> Tensor:
        """``A^H A x``; override when a cheaper form exists."""
        return self._adjoint(self._forward(x))

    # -- public calls ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        _check_shape(x, self.ishape, "input", self)
        return self._forward(x)

    def adjoint(self, y: Tensor) -> Tensor:
        _check_shape(y, self.oshape, "adjoint input", self)
        return self._adjoint(y)

    def normal(self, x: Tensor) -> Tensor:
        _check_shape(x, self.ishape, "input", self)
        return self._normal(x)

    @property
    def H(self) -> LinearOperator:
        """The adjoint operator (created once, then cached)."""
        cached = self.__dict__.get("_cached_adjoint")
        if cached is None:
            cached = Adjoint(self)
            # kept out of nn.Module's registry: the adjoint refers back to self (no cycle in .modules())
            self.__dict__["_cached_adjoint"] = cached
        return cached

    @property
    def N(self) -> Callable[[Tensor], Tensor]:
        """The normal operator ``x -> A^H A x``."""
        return self.normal

    @property
    def batch_size(self) -> int:
        return self.ishape[0]

    # -- algebra --------------------------------------------------------------------------------------
    def __mul__(self, other):
        if isinstance(other, LinearOperator):
            return Compose(self, other)
        if isinstance(other, Number) or (isinstance(other, Tensor) and other.ndim == 0):
            return Scaled(self, other)
        return NotImplemented

    def __rmul__(self, other):
        if isinstance(other, Number) or (isinstance(other, Tensor) and other.ndim == 0):
            return Scaled(self, other)
        return NotImplemented

    # -- solves ---------------------------------------------------------------------------------------
    def solve_least_squares(
        self,
        y: Tensor,
        *,
        lam: float = 0.0,
        x0: Tensor | None = None,
        max_iter: int = 50,
        tol: float = 1e-6,
    ) -> Tensor:
        """Solve ``min_x ||A x - y||^2 + lam ||x||^2`` per sample by conjugate gradient on the normal equations."""
        return conjugate_gradient(
            lambda v: self.normal(v) + lam * v, self.adjoint(y), x0=x0, max_iter=max_iter, tol=tol
        )

    def extra_repr(self) -> str:
        return f"ishape={self.ishape}, oshape={self.oshape}"


class Adjoint(LinearOperator):
    """``A^H``; its own adjoint is ``A``."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.oshape, op.ishape)
        self.op = op
        self.__dict__["_cached_adjoint"] = op

    def _forward(self, x: Tensor) -> Tensor:
        return self.op._adjoint(x)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.op._forward(y)


class Compose(LinearOperator):
    """``(A * B)(x) = A(B(x))``."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator):
        if inner.oshape != outer.ishape:
            raise ValueError(
                f"cannot compose {type(outer).__name__} (input {outer.ishape}) after "
                f"{type(inner).__name__} (output {inner.oshape})"
            )
        super().__init__(inner.ishape, outer.oshape)
        self.outer = outer
        self.inner = inner

    def _forward(self, x: Tensor) -> Tensor:
        return self.outer._forward(self.inner._forward(x))

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.inner._adjoint(self.outer._adjoint(y))


class Scaled(LinearOperator):
    """``(c A)(x) = c A(x)``; the adjoint scales by ``conj(c)``."""

    def __init__(self, op: LinearOperator, scale: complex | float | Tensor):
        super().__init__(op.ishape, op.oshape)
        self.op = op
        self.register_buffer("scale", torch.as_tensor(scale), persistent=False)

    def _forward(self, x: Tensor) -> Tensor:
        return self.scale * self.op._forward(x)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.scale.conj() * self.op._adjoint(y)


class Identity(LinearOperator):
    """``I x = x``: the operator of clean data (the plain EDM loss is the ambient loss with ``A = I``)."""

    def __init__(self, shape: Sequence[int]):
        super().__init__(shape, shape)

    def _forward(self, x: Tensor) -> Tensor:
        return x

    def _adjoint(self, y: Tensor) -> Tensor:
        return y


class SubsampledOperator(LinearOperator):
    """An operator of the form ``y = M ⊙ G(x)``: a full transform ``G`` followed by a 0/1 selection ``M``.

    Every family of ambient training is of this form (pixel masks: ``G = I``; Cartesian MRI:
    ``G = F S``; interferometry: ``G`` = the visibility DFT, ``M`` also zeroes padding). The further
    corruption ``Ã = B A`` of ambient training is then ``restrict(keep)``: the same ``G`` with the
    selection ``M ⊙ keep``, which never observes anything ``A`` did not.

    Subclasses expose ``observed`` (real 0/1, broadcastable to ``oshape``) and implement ``restrict``
    and ``params``.
    """

    @property
    @abc.abstractmethod
    def observed(self) -> Tensor:
        """0/1 selection ``M`` in measurement space, broadcastable to ``oshape``."""

    @abc.abstractmethod
    def restrict(self, keep: Tensor) -> SubsampledOperator:
        """A new operator of the same kind observing ``observed * keep`` (``keep`` shaped like ``observed``)."""

    @abc.abstractmethod
    def params(self) -> dict[str, Tensor]:
        """Per-sample tensors (batch first) from which the operator's family rebuilds it (``family.make``)."""

    def tile(self, copies: int) -> SubsampledOperator:
        """The batch repeated ``copies`` times (copy-major: sample ``b`` of copy ``k`` at ``k·B + b``), for drawing
        several posterior samples in one run; ``NotImplementedError`` where the operator does not provide it
        (then a family's ``make`` may rebuild it from ``params()``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement tile()")

    def num_observed(self) -> Tensor:
        """Number of observed measurement entries per sample, ``(B,)`` float."""
        m = torch.broadcast_to(self.observed, self.oshape)
        return m.reshape(m.shape[0], -1).sum(dim=1).to(torch.float32)


def repeat_batch(t: Tensor, copies: int) -> Tensor:
    """``t`` repeated ``copies`` times along its first (batch) axis, copy-major (the tiling of
    :meth:`SubsampledOperator.tile`)."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    return t.repeat(copies, *([1] * (t.ndim - 1)))


def conjugate_gradient(
    normal: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    x0: Tensor | None = None,
    max_iter: int = 50,
    tol: float = 1e-6,
) -> Tensor:
    """Solve ``N x = b`` per sample for a Hermitian positive (semi-)definite ``N`` by conjugate gradient.

    Each sample of the batch runs its own CG recursion (its own step sizes); a sample stops changing
    once its residual norm falls below ``tol * ||b||``.

    Shape: ``b (B, ...)`` -> ``x (B, ...)``.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - normal(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = batch_dot(r, r).real
    b_norm2 = batch_dot(b, b).real.clamp_min(torch.finfo(rs.dtype).tiny)
    view = (-1,) + (1,) * (b.ndim - 1)
    for _ in range(max_iter):
        active = rs > (tol**2) * b_norm2
        if not bool(active.any()):
            break
        Np = normal(p)
        denom = batch_dot(p, Np).real
        alpha = torch.where(active & (denom > 0), rs / denom.clamp_min(torch.finfo(rs.dtype).tiny), 0.0)
        x = x + alpha.reshape(view).to(x.dtype) * p
        r = r - alpha.reshape(view).to(r.dtype) * Np
        rs_new = batch_dot(r, r).real
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), 0.0)
        p = r + beta.reshape(view).to(p.dtype) * p
        rs = rs_new
    return x
