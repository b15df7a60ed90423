"""Ways of calling an ambient prior at inference that the samplers do not choose themselves (issue #19):
a noise level below which a second inference operator takes over, at least ``K`` draws of ``Ã_inf`` averaged,
and a higher floor of the noise schedule.

:class:`InferencePrior` wraps a :class:`~ambient_science.sampling.prior.Prior` and is one itself, so every
sampler and :func:`~ambient_science.sampling.reconstruction.reconstruct` take it unchanged:

* ``switch_sigma`` / ``low_operator``: the denoiser goes through the sampler's ``inference_operator`` (e.g.
  ``"full"``) at ``σ ≥ switch_sigma`` and through ``low_operator`` (e.g. ``"law"``, the training law) below it,
  where a network that never saw a fully observed input extrapolates worst;
* ``min_draws``: the denoiser averages at least this many draws of ``Ã_inf`` (a smoother denoiser; with
  ``"full"`` or ``"measurement"`` the draws are identical, so it only costs);
* ``sigma_floor``: the prior's ``sigma_n`` raised to it, so ``reconstruct`` stops the schedule there and its last
  step (to σ = 0) returns the denoiser's estimate at ``sigma_floor`` instead of going on to EDM's 0.002.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ambient_science.linop import SubsampledOperator
from ambient_science.sampling.prior import INFERENCE_OPERATORS, AmbientDenoiser, InferenceOperator, Prior

__all__ = ["InferencePrior", "SwitchedDenoiser"]


class SwitchedDenoiser:
    """``D_high(x, σ)`` where ``σ ≥ switch_sigma``, ``D_low(x, σ)`` below (per sample).

    Shape: as :class:`~ambient_science.sampling.prior.AmbientDenoiser`: ``x (B, C, H, W)``, ``sigma`` scalar or
    ``(B,)`` -> ``(B, C, H, W)``."""

    def __init__(self, high: AmbientDenoiser, low: AmbientDenoiser, switch_sigma: float):
        if not switch_sigma > 0:
            raise ValueError(f"switch_sigma must be positive, got {switch_sigma}")
        if high.shape != low.shape:
            raise ValueError(f"the two denoisers take different shapes: {high.shape} and {low.shape}")
        self.high, self.low, self.switch_sigma = high, low, float(switch_sigma)
        self.sigma_floor = max(high.sigma_floor, low.sigma_floor)
        self.shape, self.dtype, self.batch_size = high.shape, high.dtype, high.batch_size

    @property
    def device(self) -> torch.device:
        return self.high.device

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        s = s.expand(x.shape[0]) if s.ndim == 0 else s
        high = s >= self.switch_sigma
        if bool(high.all()):
            return self.high(x, sigma)
        if not bool(high.any()):
            return self.low(x, sigma)
        mask = high.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(mask, self.high(x, sigma), self.low(x, sigma))


class InferencePrior(Prior):
    """``prior`` called another way at inference (module docs); the same network, family and config.

    Args:
        prior: the trained prior.
        switch_sigma: below this noise level the denoiser uses ``low_operator`` (``None``: never).
        low_operator: ``"law"``, ``"test"``, ``"full"`` or ``"measurement"``.
        min_draws: at least this many ``Ã_inf`` draws averaged in every denoiser (the sampler's own ``num_draws``
            when larger).
        sigma_floor: the lowest noise level samplers go to (``reconstruct`` stops its schedule there); never
            below the prior's own ``sigma_n``.
    """

    def __init__(
        self,
        prior: Prior,
        *,
        switch_sigma: float | None = None,
        low_operator: InferenceOperator = "law",
        min_draws: int = 1,
        sigma_floor: float = 0.0,
    ):
        if low_operator not in INFERENCE_OPERATORS:
            raise ValueError(f"low_operator must be one of {INFERENCE_OPERATORS}, got {low_operator!r}")
        if switch_sigma is not None and not switch_sigma > 0:
            raise ValueError(f"switch_sigma must be positive or None, got {switch_sigma}")
        if isinstance(min_draws, bool) or not isinstance(min_draws, int) or min_draws < 1:
            raise ValueError(f"min_draws must be an integer >= 1, got {min_draws!r}")
        if not sigma_floor >= 0:
            raise ValueError(f"sigma_floor must be >= 0, got {sigma_floor}")
        super().__init__(prior.network, prior.family, freeze=False, sigma_n=max(prior.sigma_n, float(sigma_floor)))
        self.base = prior
        self.config = dict(prior.config)
        self.switch_sigma, self.low_operator, self.min_draws = switch_sigma, low_operator, int(min_draws)

    def denoiser(
        self,
        batch_size: int,
        *,
        generator: torch.Generator,
        num_draws: int = 1,
        inference_operator: InferenceOperator = "law",
        test_operator: SubsampledOperator | None = None,
        device: torch.device | str | None = None,
        precision: str = "float32",
    ) -> AmbientDenoiser | SwitchedDenoiser:
        """As :meth:`Prior.denoiser`, with at least ``min_draws`` draws, switched below ``switch_sigma``."""
        K = max(int(num_draws), self.min_draws)
        kwargs = {"generator": generator, "num_draws": K, "device": device, "precision": precision}
        high = super().denoiser(batch_size, inference_operator=inference_operator, test_operator=test_operator,
                                **kwargs)  # fmt: skip
        if self.switch_sigma is None:
            return high
        low = super().denoiser(batch_size, inference_operator=self.low_operator, test_operator=test_operator,
                               **kwargs)  # fmt: skip
        return SwitchedDenoiser(high, low, self.switch_sigma)
