"""The one place where an image-domain estimate meets a network: ``D(x̃, σ, c) = net(to_network(x̃), σ, c)``.

Training (losses) and sampling (priors) both go through :func:`network_denoise`, so the network sees
exactly the same kind of input in both: ``x̃ = Ãᴴ Ã x_σ`` (complex images as ``[real, imag]``
channels), the noise level ``σ`` per sample, and the conditioning channels ``c(Ã)``.

Network contract (``ambient_science.network``): ``net(x, sigma, cond, project=P) -> D`` with
``x (B, C_img, H, W)`` real, ``sigma (B,)``, ``cond (B, k, H, W)`` real, ``P`` the projection onto what
``Ã`` observed acting on such real channels (:meth:`OperatorFamily.observed_projection`; zero when the
family has none), returning the denoised estimate ``(B, C_img, H, W)`` real (EDM preconditioning,
which uses ``P``, lives inside ``net``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ambient_science.channels import from_network, to_network
from ambient_science.family import OperatorFamily
from ambient_science.linop import SubsampledOperator

__all__ = ["ambient_input", "network_denoise"]


def ambient_input(A_tilde: SubsampledOperator, x_sigma_measured: Tensor) -> Tensor:
    """``x̃ = Ãᴴ ỹ`` from measurements ``ỹ = Ã x_σ`` (already restricted to what ``Ã`` observes)."""
    return A_tilde.H(x_sigma_measured)


def network_denoise(
    net: nn.Module, x_tilde: Tensor, sigma: Tensor, family: OperatorFamily, A_tilde: SubsampledOperator
) -> Tensor:
    """The network's estimate of ``E[x | Ã x_σ, Ã]`` in the image domain (complex when the family is).

    Shape: ``x_tilde (B, C, H, W)``, ``sigma (B,)`` -> ``(B, C, H, W)``, same dtype kind as ``x_tilde``.
    """
    cond = family.conditioning(A_tilde).to(sigma.device)
    P = family.observed_projection(A_tilde)

    @torch.compiler.disable  # operators run eagerly inside a compiled network (dynamo cannot trace complex views)
    def project(v: Tensor) -> Tensor:
        if P is None:
            return torch.zeros_like(v)
        return to_network(P(from_network(v, family.is_complex))).to(v.dtype)

    out = net(to_network(x_tilde), sigma, cond, project=project)
    return from_network(out, family.is_complex)
