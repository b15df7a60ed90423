"""Likelihoods ``p(y | x0)`` for posterior sampling: a negative log-likelihood per sample, differentiable in ``x0``.

Every likelihood has ``loss(x0) -> (B,)``, the negative log-likelihood up to a constant, and
``grad(x0)``, its gradient in the real sense (for complex images the real and imaginary parts are
the coordinates, so a gradient step is ``x0 - η grad``). Samplers use nothing else, so any
differentiable forward model plugs in (:class:`FunctionLikelihood`, :class:`ChiSquaredLikelihood`).
The linear Gaussian likelihood also exposes ``A``, ``y`` and the per-entry ``sigma``, for the one-step
estimate (``Aᴴ y``) and data-consistency steps.

Noise convention: complex measurements have real and imaginary parts each ``N(0, σ²)``, so for real and
complex data alike ``−log p(y | x) = Σ |A x − y|² / (2 σ²)``.

    >>> import torch
    >>> from ambient_science.linop import Identity
    >>> lik = GaussianLikelihood(Identity((1, 1, 2, 2)), torch.ones(1, 1, 2, 2), sigma=0.5)
    >>> lik.loss(torch.zeros(1, 1, 2, 2))
    tensor([8.])
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ambient_science.linop import LinearOperator, SubsampledOperator, batch_dot, conjugate_gradient
from ambient_science.noise import randn_like

if TYPE_CHECKING:
    from ambient_science.operators.closure import ClosureData

__all__ = [
    "ChiSquaredLikelihood",
    "ChiSquaredTerm",
    "FunctionLikelihood",
    "GaussianLikelihood",
    "Likelihood",
    "closure_likelihood",
]


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.empty((), dtype=dtype).real.dtype


class Likelihood(abc.ABC):
    """``L(x0) = −log p(y | x0)`` (up to a constant), one value per sample of the batch."""

    @abc.abstractmethod
    def loss(self, x0: Tensor) -> Tensor:
        """Negative log-likelihood per sample. Shape: ``x0 (B, ...)`` -> ``(B,)`` real."""

    def __call__(self, x0: Tensor) -> Tensor:
        return self.loss(x0)

    def grad(self, x0: Tensor) -> Tensor:
        """``∇_{x0} L(x0)`` (real gradient), detached; by autograd unless a subclass has a closed form.

        Shape: ``x0 (B, ...)`` -> ``(B, ...)`` like ``x0``.
        """
        with torch.enable_grad():
            x = x0.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss(x).sum(), x)
        return g

    def residual_norm(self, x0: Tensor) -> Tensor:
        """``sqrt(2 L(x0))``, the whitened residual norm ``||W^{1/2}(y − 𝒜 x0)||`` for a Gaussian (DPS's norm).

        Shape: ``(B,)``.
        """
        return (2.0 * self.loss(x0)).clamp_min(torch.finfo(torch.float32).tiny).sqrt()

    def curvature(self, x_like: Tensor, *, generator: torch.Generator) -> Tensor | None:
        """An upper estimate of the largest eigenvalue of ``∇² L`` per sample, or ``None`` when unknown.

        Langevin samplers scale their step by it. Shape: ``(B,)``.
        """
        return None


class GaussianLikelihood(Likelihood):
    """``y = A x + n`` with independent Gaussian noise of per-entry standard deviation ``sigma``.

    ``L(x) = ½ Σ_k w_k |(A x − y)_k|²`` with ``w_k = 1/σ_k²`` on observed entries and 0 elsewhere
    (unobserved entries of a ``SubsampledOperator``, padding).

    Args:
        A: batched linear forward operator.
        y: measurements of shape ``A.oshape`` (zeros where not observed).
        sigma: noise std, a float or a real tensor broadcastable to ``A.oshape``; must be positive
            wherever ``A`` observes (use a small value for noiseless data).

    Shape: ``x0 A.ishape`` -> ``loss (B,)``.
    """

    def __init__(self, A: LinearOperator, y: Tensor, sigma: float | Tensor):
        if tuple(y.shape) != tuple(A.oshape):
            raise ValueError(f"y has shape {tuple(y.shape)}, the operator's output is {A.oshape}")
        sigma_t = torch.as_tensor(sigma, device=y.device)
        if sigma_t.is_complex():
            raise ValueError("sigma must be real")
        sigma_t = torch.broadcast_to(sigma_t.to(_real_dtype(y.dtype)), A.oshape)
        observed = (
            torch.broadcast_to(A.observed.to(y.device, sigma_t.dtype), A.oshape)
            if isinstance(A, SubsampledOperator)
            else torch.ones_like(sigma_t)
        )
        if bool(((sigma_t <= 0) & (observed > 0)).any()) or not bool(torch.isfinite(sigma_t[observed > 0]).all()):
            raise ValueError("sigma must be positive and finite on every observed entry")
        self.A = A
        self.y = y
        self.sigma = sigma_t
        self.weight = torch.where(observed > 0, 1.0 / sigma_t.clamp_min(torch.finfo(sigma_t.dtype).tiny) ** 2, 0.0)

    @property
    def batch_size(self) -> int:
        return self.A.batch_size

    def residual(self, x0: Tensor) -> Tensor:
        """``A x0 − y``. Shape: ``A.ishape`` -> ``A.oshape``."""
        return self.A(x0) - self.y

    def loss(self, x0: Tensor) -> Tensor:
        r = self.residual(x0)
        w = self.weight
        return 0.5 * (w * (r.abs() ** 2 if r.is_complex() else r**2)).reshape(r.shape[0], -1).sum(dim=1)

    def grad(self, x0: Tensor) -> Tensor:
        """``Aᴴ W (A x0 − y)`` in closed form (no autograd). Shape: like ``x0``."""
        return self.A.H(self.weight * self.residual(x0.detach())).to(x0.dtype)

    def backprojection(self) -> Tensor:
        """``Aᴴ y``, the zero-filled image (input of the one-step estimate). Shape: ``A.ishape``."""
        return self.A.H(self.y)

    def noise_level(self) -> Tensor:
        """Root-mean-square noise std over observed entries, ``sqrt(m / Σ_k w_k)``. Shape: ``(B,)``."""
        w = self.weight.reshape(self.weight.shape[0], -1)
        m = (w > 0).sum(dim=1).to(w.dtype)
        return (m / w.sum(dim=1).clamp_min(torch.finfo(w.dtype).tiny)).sqrt()

    def curvature(self, x_like: Tensor, *, generator: torch.Generator, num_iter: int = 30) -> Tensor:
        """Largest eigenvalue of ``Aᴴ W A`` per sample, by power iteration (times 1.05 as a safety margin).

        Shape: ``x_like A.ishape`` (sets dtype and device) -> ``(B,)``.
        """
        v = randn_like(x_like.detach(), generator)
        lam = torch.zeros(v.shape[0], device=v.device)
        for _ in range(num_iter):
            v = v / batch_dot(v, v).real.sqrt().clamp_min(1e-30).reshape(-1, *([1] * (v.ndim - 1)))
            Nv = self.A.H(self.weight * self.A(v)).to(v.dtype)
            lam = batch_dot(v, Nv).real
            v = Nv
        return 1.05 * lam.clamp_min(0.0)

    def data_consistency(self, x_hat: Tensor, *, lam: float = 0.0, max_iter: int = 20, tol: float = 1e-6) -> Tensor:
        """Pull an estimate towards the data: ``argmin_x ½||A x − y||²_W + ½ λ ||x − x̂||²`` by CG from ``x̂``.

        Normal equations ``(Aᴴ W A + λ I) x = Aᴴ W y + λ x̂``; with ``λ = 0`` CG started at ``x̂`` stays
        in ``x̂ + range(Aᴴ A)``: observed components are fitted, hidden ones kept from ``x̂``.

        Shape: ``x_hat A.ishape`` -> ``A.ishape``.
        """
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        x_hat = x_hat.detach()
        b = (self.A.H(self.weight * self.y) + lam * x_hat).to(x_hat.dtype)

        def normal(v: Tensor) -> Tensor:
            return (self.A.H(self.weight * self.A(v)) + lam * v).to(v.dtype)

        return conjugate_gradient(normal, b, x0=x_hat, max_iter=max_iter, tol=tol)

    def replace_observed(self, x_hat: Tensor) -> Tensor:
        """Hard data consistency ``x̂ + Aᴴ(y − A x̂)``: observed components replaced by the data.

        Exact replacement when ``A`` is a partial isometry (``A Aᴴ`` a 0/1 selection: pixel masks,
        single-coil Cartesian MRI); for other operators use :meth:`data_consistency`.

        Shape: ``x_hat A.ishape`` -> ``A.ishape``.
        """
        x_hat = x_hat.detach()
        return x_hat + self.A.H(self.y - self.A(x_hat)).to(x_hat.dtype)


class FunctionLikelihood(Likelihood):
    """A likelihood given by a callable ``nll_fn(x0) -> (B,)`` (any differentiable forward model).

    Args:
        nll_fn: negative log-likelihood per sample.
        curvature: optional upper bound on the largest Hessian eigenvalue (a float or ``(B,)``), which
            Langevin samplers use to scale their step.
    """

    def __init__(self, nll_fn: Callable[[Tensor], Tensor], curvature: float | Tensor | None = None):
        self.nll_fn = nll_fn
        self._curvature = curvature

    def loss(self, x0: Tensor) -> Tensor:
        out = self.nll_fn(x0)
        if out.ndim != 1 or out.shape[0] != x0.shape[0]:
            raise ValueError(f"nll_fn must return one value per sample, shape ({x0.shape[0]},), got {tuple(out.shape)}")
        return out

    def curvature(self, x_like: Tensor, *, generator: torch.Generator) -> Tensor | None:
        if self._curvature is None:
            return None
        return torch.broadcast_to(torch.as_tensor(self._curvature, device=x_like.device), (x_like.shape[0],))


@dataclass
class ChiSquaredTerm:
    """One reduced chi-squared data term: ``chi2_fn(model) -> (B,)`` normalised by its ``count`` of data.

    ``count · χ²_red / 2`` is then the term's negative log-likelihood (for ehtim's closure phases
    ``χ² = (2/N) Σ (1 − cos Δψ)/σ²`` it is ``Σ (1 − cos Δψ)/σ²``; for log closure amplitudes
    ``χ² = (1/N) Σ (Δ/σ)²`` it is ``Σ Δ²/(2σ²)``).

    Attributes:
        chi2_fn: reduced chi-squared per sample, differentiable.
        count: number of data ``N`` behind it (a number or ``(B,)``).
        weight: relative weight of the term (1 = the plain likelihood).
        name: label for logging.
    """

    chi2_fn: Callable[[Tensor], Tensor]
    count: float | Tensor
    weight: float = 1.0
    name: str = ""


class ChiSquaredLikelihood(Likelihood):
    """A sum of weighted chi-squared terms of one forward model (e.g. closure phases + log closure amplitudes).

    ``L(x0) = Σ_t weight_t · count_t · χ²_t(𝒜(x0)) / 2`` (docs/design.md §4), with ``𝒜 = forward`` evaluated
    once per call (identity when ``None``: the terms then take ``x0``). Nonlinear in ``x0``; use it with
    DAPS (gradients of ``L`` only) or A-DPS (gradients through the network).
    """

    def __init__(self, terms: Sequence[ChiSquaredTerm], forward: Callable[[Tensor], Tensor] | None = None):
        if not terms:
            raise ValueError("ChiSquaredLikelihood needs at least one term")
        self.terms = list(terms)
        self.forward = forward

    def _model(self, x0: Tensor) -> Tensor:
        return x0 if self.forward is None else self.forward(x0)

    def chi_squared(self, x0: Tensor) -> dict[str, Tensor]:
        """Each term's reduced chi-squared, keyed by name (or index). Shape: each ``(B,)``."""
        v = self._model(x0)
        return {t.name or str(i): t.chi2_fn(v) for i, t in enumerate(self.terms)}

    def loss(self, x0: Tensor) -> Tensor:
        v = self._model(x0)
        total = None
        for t in self.terms:
            count = torch.as_tensor(t.count, device=x0.device)
            term = 0.5 * t.weight * count * t.chi2_fn(v)
            total = term if total is None else total + term
        return total


def closure_likelihood(
    forward: Callable[[Tensor], Tensor],
    data: ClosureData,
    *,
    cphase_weight: float = 1.0,
    logcamp_weight: float = 1.0,
) -> ChiSquaredLikelihood:
    """The closure-quantity likelihood of interferometry: closure phases plus log closure amplitudes.

    ``L(x) = w_cp N_cp χ²_cp(V(x))/2 + w_lca N_lca χ²_lca(V(x))/2`` with ehtim's normalised χ² of
    :mod:`ambient_science.operators.closure` (docs/design.md §4); invariant to station gains.

    Args:
        forward: image -> model visibilities ``V(x)``, ``(B, 1, N, N) -> (B, K)`` in the order of
            ``data.index`` (e.g. an :class:`~ambient_science.operators.interferometry.Interferometer`).
        data: the measured :class:`~ambient_science.operators.closure.ClosureData`.
        cphase_weight, logcamp_weight: term weights (0 drops a term).

    Shape: ``x (B, 1, N, N)`` -> ``loss (B,)``.
    """
    terms = []
    if cphase_weight > 0 and data.index.n_cphase > 0:
        terms.append(ChiSquaredTerm(data.chisq_cphase, data.index.n_cphase, cphase_weight, "cphase"))
    if logcamp_weight > 0 and data.index.n_logcamp > 0:
        terms.append(ChiSquaredTerm(data.chisq_logcamp, data.index.n_logcamp, logcamp_weight, "logcamp"))
    if not terms:
        raise ValueError("closure_likelihood: no closure phase or log closure amplitude term to fit")
    return ChiSquaredLikelihood(terms, forward=forward)
