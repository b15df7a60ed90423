"""Operator families: the law of forward operators of one kind, apart from the operators themselves.

A family knows three things about its operators (docs/design.md §4–§5):

(a) ``sample``: draw a batch of random operators (to simulate data, and ``Ã_inf`` at inference);
(b) ``further_corrupt``: the further corruption ``Ã = B A`` of ambient training, keeping a random
    subset of what ``A`` observed and never anything ``A`` did not;
(c) ``conditioning``: image-space channels ``c(Ã)`` telling a network what ``Ã`` kept.

Every draw takes an explicit ``torch.Generator``; no family touches global RNG state. A family is
described by a JSON-serialisable ``config()`` that travels inside checkpoints; ``family_from_config``
(in :mod:`ambient_science.registry`) rebuilds it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ambient_science.linop import SubsampledOperator

__all__ = ["OperatorFamily", "bernoulli_keep", "check_subset", "registered_families", "uniform"]

_REGISTRY: dict[str, type[OperatorFamily]] = {}


def registered_families() -> dict[str, type[OperatorFamily]]:
    """A copy of the name -> class map of every family defined so far (see :mod:`ambient_science.registry`)."""
    return dict(_REGISTRY)


def uniform(shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """``U[0, 1)`` samples drawn on the generator's device (no global RNG)."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device)


def bernoulli_keep(shape: Sequence[int], p_drop: float, generator: torch.Generator) -> Tensor:
    """0/1 float tensor: each entry kept with probability ``1 - p_drop``."""
    return (uniform(shape, generator) >= p_drop).to(torch.float32)


class OperatorFamily(abc.ABC):
    """The law of one kind of forward operator.

    Attributes:
        name: registry name, stored in checkpoints.
        image_shape: ``(C, H, W)`` of one image (complex images count their complex channels).
        is_complex: whether images are complex (MRI) or real.
        conditioning_channels: number of channels returned by ``conditioning``.
    """

    name: ClassVar[str]
    image_shape: tuple[int, int, int]
    is_complex: bool
    conditioning_channels: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register every concrete family under its ``name`` (the last definition of a name wins)."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if isinstance(name, str) and name:
            _REGISTRY[name] = cls

    @abc.abstractmethod
    def sample(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str | None = None
    ) -> SubsampledOperator:
        """Draw ``batch_size`` random operators as one batched operator."""

    @abc.abstractmethod
    def further_corrupt(self, A: SubsampledOperator, *, generator: torch.Generator) -> SubsampledOperator:
        """``Ã = B A``: keep a random subset of what ``A`` observed (same class, same device as ``A``)."""

    @abc.abstractmethod
    def conditioning(self, A: SubsampledOperator) -> Tensor:
        """Channels ``c(A)``, shape ``(B, conditioning_channels, H, W)``, real, on ``A``'s device."""

    @abc.abstractmethod
    def make(self, params: dict[str, Tensor]) -> SubsampledOperator:
        """Rebuild a batched operator from (collated) ``A.params()``."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description (everything ``__init__`` needs), with ``"family": name``."""

    def observed_projection(self, A_tilde: SubsampledOperator) -> Callable[[Tensor], Tensor] | None:
        """``P``, the projection onto the image content ``Ã`` observed, for the network's preconditioning.

        ``ÃᴴÃ`` for operators with orthonormal rows (masks, Cartesian MRI; for SENSE with normalised maps
        it is ``Σ_c S_cᴴ Fᴴ M F S_c``, close to a projection). ``None`` when ``ÃᴴÃ`` is no projection
        (e.g. interferometry, a PSF convolution): the network then predicts every entry from scratch.
        """
        return A_tilde.N

    def fully_observed(self, A: SubsampledOperator) -> SubsampledOperator:
        """``A`` with everything observed (a mask of ones, the rest of ``A``'s parameters kept, e.g. coil maps):
        the ``Ã_inf`` of ``inference_operator="full"``. Families whose operators are masks (``params["mask"]``:
        pixel masks, Cartesian MRI) have it; others (interferometry: no finite set of visibilities observes
        everything) raise ``NotImplementedError``."""
        params = A.params()
        if "mask" not in params:
            raise NotImplementedError(
                f"operator family {self.name!r} has no fully observed operator (its operators have no 'mask')"
            )
        return self.make({**params, "mask": torch.ones_like(params["mask"])})

    def image_dtype(self) -> torch.dtype:
        return torch.complex64 if self.is_complex else torch.float32

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OperatorFamily:
        """Inverse of :meth:`config`."""
        kwargs = {k: v for k, v in config.items() if k != "family"}
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ValueError(f"invalid config for operator family {cls.name!r}: {err}") from err


def check_subset(A: SubsampledOperator, A_tilde: SubsampledOperator) -> None:
    """Raise if ``Ã`` observes anything ``A`` did not (used by tests and by the trainer's debug mode)."""
    m = torch.broadcast_to(A.observed, A.oshape)
    mt = torch.broadcast_to(A_tilde.observed, A_tilde.oshape)
    if bool((mt > m).any()):
        raise AssertionError("further corruption observes entries the original operator did not")
