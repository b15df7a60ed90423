"""EM's initial prior from a trained one (``em.init_prior``; docs/design.md §5): the first E-step's A-DPS samples
and the first M-step's warm start. It lives here, above both layers it joins: the training layer's EM
(:mod:`ambient_science.training.em`) calls it through :class:`~ambient_science.training.em.InitialPrior`, and it
samples with :mod:`ambient_science.sampling`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ambient_science.family import OperatorFamily
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior, load_prior
from ambient_science.sampling.reconstruction import reconstruct
from ambient_science.schedules import SIGMA_MIN
from ambient_science.training.em import batches

__all__ = ["TrainedInitialPrior", "prior_samples", "warm_start"]


class TrainedInitialPrior:
    """The prior at ``path`` (a checkpoint or an exported prior) as EM's ``q_0``; loaded when first needed (a
    resumed run may need neither its samples nor its weights)."""

    def __init__(self, path: str | Path):
        if not Path(path).exists():
            raise FileNotFoundError(f"em.init_prior: no prior at {path} (a checkpoint or an exported prior)")
        self.path = str(path)
        self._prior: Prior | None = None

    @property
    def prior(self) -> Prior:
        if self._prior is None:
            self._prior = load_prior(self.path, map_location="cpu")
        return self._prior

    def samples(self, dataset: Dataset, family: OperatorFamily, batch_size: int, generator: torch.Generator,
                counter=None) -> Tensor:  # fmt: skip
        return prior_samples(self.prior, dataset, family, batch_size, generator, counter)

    def warm_start(self, network: nn.Module) -> bool:
        return warm_start(self.prior, network)


def prior_samples(prior: Prior, dataset: Dataset, family: OperatorFamily, batch_size: int, generator: torch.Generator,
                  counter=None) -> Tensor:  # fmt: skip
    """The first E-step from a trained prior (``em.init_prior``): one A-DPS posterior sample per training
    measurement (:func:`~ambient_science.sampling.reconstruction.reconstruct` with the prior's recommended
    settings, its safe mode off: a sample, never a fallback; noiseless records at σ = ``SIGMA_MIN``), ``batch_size``
    measurements at a time. ``counter``
    (``.forwards``, ``.vjps``) counts the images through the network's forward pass and through a differentiated
    one (guidance through the network). Shape: ``(N, C, H, W)``."""
    if tuple(prior.family.image_shape) != tuple(family.image_shape) or prior.family.is_complex != family.is_complex:
        raise ValueError(
            f"em.init_prior: the prior's images are {tuple(prior.family.image_shape)} "
            f"({'complex' if prior.family.is_complex else 'real'}), the training data's "
            f"{tuple(family.image_shape)} ({'complex' if family.is_complex else 'real'}): "
            "use a prior of the same images"
        )

    def count(module, args, output):
        if counter is not None:
            counter.forwards += args[0].shape[0]
            counter.vjps += args[0].shape[0] if (torch.is_grad_enabled() and args[0].requires_grad) else 0

    handle = prior.network.register_forward_hook(count)
    try:
        samples = torch.empty((len(dataset), *family.image_shape), dtype=family.image_dtype())
        for start, y, params, sigma_n in batches(dataset, batch_size):
            # (B,) per measurement; noiseless records (σ_n = 0) are sampled at EDM's lowest noise level
            sigma = sigma_n.clamp_min(SIGMA_MIN).reshape((-1,) + (1,) * (y.ndim - 1)).to(y.real.dtype)
            likelihood = GaussianLikelihood(family.make(params), y, sigma)
            post = reconstruct(prior, likelihood, method="dps", generator=generator, num_samples=1,
                               safe_mode="off", progress=False)  # fmt: skip
            samples[start : start + y.shape[0]] = post.mean.to(samples.dtype)
    finally:
        handle.remove()
    return samples


def warm_start(prior: Prior, network: nn.Module) -> bool:
    """Copy ``prior``'s network weights into ``network`` (a clean-family network, no conditioning input):
    the same architecture, except that the prior's input convolution may also read its conditioning channels
    ``c(Ã)``. Called with everything observed those channels are constant (a mask of ones), so their part of the
    convolution is folded into the layer's bias (exact away from the image border, whose zero padding the
    fine-tuning absorbs). Returns False, leaving ``network`` as it is, when the two do not match."""
    src, dst = prior.network.state_dict(), network.state_dict()
    if set(src) != set(dst):
        return False
    A_full = prior.family.fully_observed(prior.family.sample(1, generator=torch.Generator().manual_seed(0)))
    cond = prior.family.conditioning(A_full).flatten(2)[0].float()  # (k, H·W)
    state = {}
    for key, t in dst.items():
        s = src[key]
        if s.shape == t.shape:
            state.setdefault(key, s.detach().clone())
            continue
        k = s.shape[1] - t.shape[1] if s.ndim == 4 and t.ndim == 4 else -1
        bias = key.removesuffix("weight") + "bias"
        folds = key.endswith("weight") and k == cond.shape[0] > 0 and s.shape[0] == t.shape[0]
        if not (folds and s.shape[2:] == t.shape[2:] and bias in src):
            return False
        if (cond.amax(dim=1) - cond.amin(dim=1)).abs().max() > 1e-6:  # not constant: nothing to fold into a bias
            return False
        state[key] = s[:, : t.shape[1]].detach().clone()
        state[bias] = src[bias].detach() + (s[:, t.shape[1] :].float().sum(dim=(2, 3)) @ cond[:, 0]).to(src[bias].dtype)
    network.load_state_dict(state)
    return True
