"""Training losses: the ambient loss for any ``SubsampledOperator`` family, its noisy variant, and plain EDM.

Each loss is a small callable returning one value per sample; the training loop reduces.

Notation (docs/design.md §5): data ``(y, A)`` with ``y = A x (+ n)``; ``Ã = B A`` the further corruption;
``ε ~ N(0, I)`` in the image domain; ``σ`` the diffusion noise level.

Noise convention (complex images). ``σ`` is the standard deviation of every *real* component the
network sees: a complex image reaches the network as ``[real, imag]`` channels, so complex noise has
real and imaginary parts each ``N(0, σ²)`` (``E|σ ε_j|² = 2σ²``, unlike ``torch.randn(dtype=complex64)``,
whose total variance is 1). A known measurement noise ``σ_n`` of complex data follows the same
convention: real and imaginary parts of each noise entry are ``N(0, σ_n²)``. Priors and samplers must
draw their noise the same way (:func:`image_noise`).

Loss normalisation. ``‖·‖² / m`` with ``m`` the number of observed *real* components (observed entries
of ``A``, times 2 where measurements are complex), so that with ``A = I`` the loss is exactly EDM's
per-component mean (Karras et al. 2022, Eq. 2 and Table 1) for real and complex images alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ambient_science.channels import from_network, to_network
from ambient_science.denoiser import network_denoise
from ambient_science.family import OperatorFamily
from ambient_science.linop import SubsampledOperator
from ambient_science.noise import append_dims

__all__ = [
    "AUTO_HIDDEN_WEIGHT_FAMILIES",
    "AUTO_HIDDEN_WEIGHT_MAX",
    "AmbientLoss",
    "EDMLoss",
    "LossConfig",
    "NoisyAmbientLoss",
    "auto_hidden_weight",
    "build_loss",
    "edm_weight",
    "hidden_weight_operators",
    "image_noise",
    "sample_sigma",
]


@dataclass(frozen=True)
class LossConfig:
    """The loss and its noise-level law ``ln σ ~ N(p_mean, p_std²)`` (EDM, Table 1).

    ``kind``: ``"ambient"`` (ignores ``σ_n``), ``"noisy_ambient"`` (uses the data's ``σ_n``), or
    ``"auto"`` (= ``"noisy_ambient"``, which is the ambient loss exactly wherever ``σ_n = 0``).
    ``tilde_draws``: ``K`` independent draws of ``(Ã, σ, ε)`` per measurement per step, the loss averaged over
    them (issue #19; K times the network calls of a step; 1, the default, is the plain loss, draws included).
    ``hidden_weight``: a factor on the weight of the residual where ``Ã`` hid what ``A`` observed (the inpainting
    part of the loss). An entry hidden by ``Ã`` is supervised only in the few draws where ``A`` observed it (at R = 4
    with 20 % further corruption, about 1 in 20), so in expectation the inpainting part weighs ~20 times less than
    in a clean loss; a factor of ~20 restores that balance (same minimiser, a noisier gradient). ``"auto"``, the
    default, is that factor, ``1 / P(A observed j | Ã hid j)``, estimated from the training operators for a
    Cartesian MRI family (:func:`auto_hidden_weight`; the learning curves measured it there), and 1 (the plain
    loss) for the other families, where it was not measured; a number sets it (1: the plain loss).
    """

    kind: str = "auto"
    p_mean: float = -1.2
    p_std: float = 1.2
    tilde_draws: int = 1
    hidden_weight: float | str = "auto"

    def __post_init__(self):
        if self.kind not in ("auto", "ambient", "noisy_ambient"):
            raise ValueError(f"loss kind must be 'auto', 'ambient' or 'noisy_ambient', got {self.kind!r}")
        if self.p_std <= 0:
            raise ValueError(f"p_std must be positive, got {self.p_std}")
        if not isinstance(self.tilde_draws, int) or isinstance(self.tilde_draws, bool) or self.tilde_draws < 1:
            raise ValueError(f"loss.tilde_draws must be an integer >= 1, got {self.tilde_draws!r}")
        hidden = self.hidden_weight
        number = isinstance(hidden, (int, float)) and not isinstance(hidden, bool) and 0 < hidden < float("inf")
        if not number and hidden != "auto":
            raise ValueError(f"loss.hidden_weight must be a positive number or 'auto', got {self.hidden_weight!r}")

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def edm_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """EDM loss weight ``λ(σ) = (σ² + σ_d²) / (σ σ_d)²`` (Karras et al. 2022, Table 1).

    Shape: ``(B,)`` -> ``(B,)``.
    """
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_sigma(
    batch_size: int,
    *,
    p_mean: float,
    p_std: float,
    generator: torch.Generator,
    sigma_min: Tensor | None = None,
) -> Tensor:
    """Noise levels ``ln σ ~ N(p_mean, p_std²)``, optionally conditioned on ``σ > sigma_min`` per sample.

    One standard normal ``z`` per sample; where ``sigma_min > 0`` it is mapped through the truncated
    normal's inverse CDF, ``ln σ = p_mean + p_std Φ⁻¹(Φ(a) + (1 − Φ(a)) Φ(z))`` with
    ``a = (ln σ_min − p_mean) / p_std`` — the EDM law conditioned on ``σ > σ_min``. Where
    ``sigma_min = 0`` the draw is bit-for-bit the unconditioned one.

    Shape: ``sigma_min (B,)`` or None -> ``(B,)`` float32 on the generator's device.
    """
    z = torch.randn(batch_size, generator=generator, device=generator.device)
    log_sigma = p_mean + p_std * z
    if sigma_min is not None:
        s_min = sigma_min.to(device=z.device, dtype=torch.float64)
        a = (s_min.clamp_min(1e-30).log() - p_mean) / p_std
        lo = torch.special.ndtr(a)
        u = lo + (1 - lo) * torch.special.ndtr(z.double())
        u = u.clamp(max=1 - 1e-12)
        truncated = (p_mean + p_std * torch.special.ndtri(u)).clamp_min(s_min.clamp_min(1e-30).log())
        log_sigma = torch.where(s_min > 0, truncated.float(), log_sigma)
        return torch.maximum(log_sigma.exp(), s_min.float())  # no float32 round-off below σ_min
    return log_sigma.exp()


def image_noise(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    """``ε`` with every real component ``N(0, 1)``: complex ``ε`` has real and imaginary parts each ``N(0, 1)``.

    Shape: ``shape`` -> ``shape`` of ``dtype`` (float32 or complex64), on the generator's device.
    """
    if dtype.is_complex:
        parts = torch.randn((*shape, 2), generator=generator, device=generator.device)
        return torch.view_as_complex(parts)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)


def _sq_norm(r: Tensor) -> Tensor:
    """Per-sample ``‖r‖²`` (sum of ``|r_j|²``); Shape: ``(B, ...)`` -> ``(B,)`` float32."""
    r = torch.view_as_real(r) if r.is_complex() else r
    return r.to(torch.float32).square().reshape(r.shape[0], -1).sum(dim=1)


def _real_components(A: SubsampledOperator, y: Tensor) -> Tensor:
    """``m``: observed real components per sample (2 per observed complex entry), at least 1 (a sample
    whose ``A`` observes nothing has a zero residual and so contributes 0, not 0/0). Shape: ``(B,)``."""
    return (A.num_observed().to(y.device) * (2.0 if y.is_complex() else 1.0)).clamp_min(1.0)


class AmbientLoss:
    """Ambient diffusion loss for any linear ``SubsampledOperator`` family (docs/design.md §5).

    ``L = λ(σ) ‖A D_θ(x̃, c(Ã), σ) − y‖² / m`` with ``x̃ = Ãᴴ(B y + σ Ã ε)`` (Daras et al. 2023, §3, for
    masks; Aali et al. 2025 for general ``A``) and EDM's ``λ(σ)``, ``ln σ ~ N(p_mean, p_std²)``.
    Minimiser: the operators are drawn independently of ``x``, so given ``(x̃, Ã)`` the expected loss is
    ``E[(D − x)ᴴ AᴴA (D − x) | x̃, Ã] = (D − E[x|·])ᴴ E[AᴴA | Ã] (D − E[x|·]) + const``, minimised by
    ``D = E[x | Ã x_σ, Ã]`` wherever ``E[AᴴA | Ã]`` is full rank. With ``A = I`` it is exactly
    :class:`EDMLoss`.

    Draw order on ``generator`` (fixed, so a seed reproduces a step): ``Ã``, then ``σ``, then ``ε``.

    Shape: ``y`` like ``A.oshape``; returns ``(B,)`` float32.
    """

    def __init__(
        self,
        family: OperatorFamily,
        *,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        tilde_draws: int = 1,
        hidden_weight: float = 1.0,
    ):
        self.family = family
        self.sigma_data = float(sigma_data)
        self.p_mean = float(p_mean)
        self.p_std = float(p_std)
        self.tilde_draws = int(tilde_draws)
        self.hidden_weight = float(hidden_weight)

    def _repeated(self, y: Tensor, A: SubsampledOperator, *extra: Tensor) -> tuple:
        """``K = tilde_draws`` copies of the batch, stacked: sample ``b``'s copy ``k`` at ``k·B + b``."""
        K = self.tilde_draws
        params = {k: torch.cat([v] * K) for k, v in A.params().items()}
        return (torch.cat([y] * K), self.family.make(params), *(torch.cat([e] * K) for e in extra))

    def draw(
        self, A: SubsampledOperator, *, generator: torch.Generator, sigma_min: Tensor | None = None
    ) -> tuple[SubsampledOperator, Tensor, Tensor]:
        """``(Ã, σ, ε)`` for one batch, in the documented order, on ``A``'s device."""
        A_tilde = self.family.further_corrupt(A, generator=generator)
        sigma = sample_sigma(
            A.batch_size, p_mean=self.p_mean, p_std=self.p_std, generator=generator, sigma_min=sigma_min
        )
        eps = image_noise(A.ishape, self.family.image_dtype(), generator)
        device = A.observed.device
        return A_tilde, sigma.to(device), eps.to(device)

    def __call__(
        self,
        net: nn.Module,
        y: Tensor,
        A: SubsampledOperator,
        *,
        generator: torch.Generator | None = None,
        A_tilde: SubsampledOperator | None = None,
        sigma: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Per-sample loss; ``A_tilde``, ``sigma``, ``noise`` override the random draws (all three or none)."""
        if self.tilde_draws > 1 and A_tilde is None and sigma is None and noise is None:
            y_k, A_k = self._repeated(y, A)
            return self._one(net, y_k, A_k, generator, None, None, None).reshape(self.tilde_draws, -1).mean(0)
        return self._one(net, y, A, generator, A_tilde, sigma, noise)

    def _one(self, net, y, A, generator, A_tilde, sigma, noise) -> Tensor:
        A_tilde, sigma, eps = self._draws(A, generator, A_tilde, sigma, noise, sigma_min=None)
        # Ã x_σ = M̃ ⊙ G(x + σ ε) = B y + σ Ã ε, since M̃ ≤ M (docs/design.md §5)
        y_tilde = _observed(A_tilde, y) * y + _sigma_like(sigma, y) * A_tilde(eps)
        x_tilde = A_tilde.H(y_tilde)
        D = network_denoise(net, x_tilde, sigma, self.family, A_tilde)
        residual = A(_to_image_dtype(D, self.family)) - y
        return self._weighted(residual, sigma, A_tilde) / _real_components(A, y)

    def _weighted(self, residual: Tensor, sigma: Tensor, A_tilde: SubsampledOperator) -> Tensor:
        """``λ_obs ‖B r‖² + λ_hid ‖(1 − B) r‖²``: EDM's ``λ(σ) = 1/c_out²`` where ``Ã`` observed and the
        network's output scale there is ``c_out``; ``1/σ_data²`` where ``Ã`` hid entries (or everywhere when
        the family has no projection), whose output scale is ``σ_data`` (:class:`~ambient_science.network.
        EDMDenoiser`). Each part of ``F``'s target then has unit variance, as in EDM. With ``A = I`` it is
        EDM's loss. ``hidden_weight`` scales the second term (:class:`LossConfig`)."""
        B = _observed(A_tilde, residual)
        w_hid = torch.full_like(sigma, 1.0 / self.sigma_data**2)
        projects = self.family.observed_projection(A_tilde) is not None
        w_obs = edm_weight(sigma, self.sigma_data) if projects else w_hid
        return w_obs * _sq_norm(B * residual) + self.hidden_weight * w_hid * _sq_norm((1 - B) * residual)

    def _draws(self, A, generator, A_tilde, sigma, noise, sigma_min):
        given = [v is not None for v in (A_tilde, sigma, noise)]
        if all(given):
            return A_tilde, sigma.to(torch.float32), noise
        if any(given):
            raise ValueError("pass all of A_tilde, sigma and noise, or none of them")
        if generator is None:
            raise ValueError("a torch.Generator is required for the loss's random draws")
        return self.draw(A, generator=generator, sigma_min=sigma_min)


class NoisyAmbientLoss(AmbientLoss):
    """Ambient loss for measurements with known noise ``y = A x + n``, ``n ~ σ_n`` white (Daras, Dimakis &
    Daskalakis 2024, §3, "double Tweedie"; docs/design.md §5).

    Train only at ``σ > σ_n`` (σ drawn from the EDM law conditioned on ``σ > σ_n``, :func:`sample_sigma`).
    Then ``A x_σ = y + sqrt(σ² − σ_n²) A ε`` has the law of ``A (x + σ ε)`` for operators with orthonormal
    rows, and Tweedie twice gives ``E[A x_{σ_n} | x_σ] = (σ_n²/σ²) A x_σ + (1 − σ_n²/σ²) A E[x | x_σ]``:

        L = λ(σ) ‖(1 − σ_n²/σ²) A D_θ + (σ_n²/σ²) A x_σ − y‖² / m.

    With ``σ_n = 0`` this is :class:`AmbientLoss`, draws included.

    Shape: ``y`` like ``A.oshape``, ``sigma_n (B,)``; returns ``(B,)`` float32.
    """

    def __call__(
        self,
        net: nn.Module,
        y: Tensor,
        A: SubsampledOperator,
        *,
        sigma_n: Tensor | float = 0.0,
        generator: torch.Generator | None = None,
        A_tilde: SubsampledOperator | None = None,
        sigma: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        sigma_n = torch.broadcast_to(torch.as_tensor(sigma_n, dtype=torch.float32, device=y.device), (y.shape[0],))
        if self.tilde_draws > 1 and A_tilde is None and sigma is None and noise is None:
            y_k, A_k, s_k = self._repeated(y, A, sigma_n)
            per = self._one_noisy(net, y_k, A_k, s_k, generator, None, None, None)
            return per.reshape(self.tilde_draws, -1).mean(0)
        return self._one_noisy(net, y, A, sigma_n, generator, A_tilde, sigma, noise)

    def _one_noisy(self, net, y, A, sigma_n, generator, A_tilde, sigma, noise) -> Tensor:
        A_tilde, sigma, eps = self._draws(A, generator, A_tilde, sigma, noise, sigma_min=sigma_n)
        if bool((sigma < sigma_n).any()):
            raise ValueError("NoisyAmbientLoss needs sigma >= sigma_n for every sample")
        # A x_σ = y + sqrt(σ² − σ_n²) A ε; Ã x_σ = B (A x_σ)
        extra = (sigma**2 - sigma_n**2).clamp_min(0).sqrt()
        A_x_sigma = y + _sigma_like(extra, y) * A(eps)
        y_tilde = _observed(A_tilde, y) * A_x_sigma
        x_tilde = A_tilde.H(y_tilde)
        D = network_denoise(net, x_tilde, sigma, self.family, A_tilde)
        ratio = _sigma_like(sigma_n**2 / sigma**2, y)
        # double-Tweedie estimate of A x_{σ_n} = E[y | x_σ]
        y_hat = (1 - ratio) * A(_to_image_dtype(D, self.family)) + ratio * A_x_sigma
        return self._weighted(y_hat - y, sigma, A_tilde) / _real_components(A, y)


class EDMLoss:
    """The plain EDM loss on clean images, ``λ(σ) ‖D_θ(x + σ ε, σ) − x‖² / n`` (Karras et al. 2022, Eq. 2, Table 1).

    The reference the ambient loss reduces to with ``A = I`` (tests); the network gets no conditioning
    channels. Draw order: ``σ``, then ``ε`` (the ambient loss's order with no ``Ã`` draw).

    Shape: ``x (B, C, ...)`` real or complex -> ``(B,)`` float32.
    """

    def __init__(self, *, sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2):
        self.sigma_data = float(sigma_data)
        self.p_mean = float(p_mean)
        self.p_std = float(p_std)

    def __call__(
        self,
        net: nn.Module,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        sigma: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        if sigma is None or noise is None:
            if generator is None:
                raise ValueError("a torch.Generator is required for the loss's random draws")
            sigma = sample_sigma(x.shape[0], p_mean=self.p_mean, p_std=self.p_std, generator=generator)
            noise = image_noise(tuple(x.shape), x.dtype, generator)
        sigma, noise = sigma.to(x.device, torch.float32), noise.to(x.device)
        x_sigma = x + _sigma_like(sigma, x) * noise
        h = to_network(x_sigma)
        cond = h.new_zeros((h.shape[0], 0, *h.shape[2:]))
        D = from_network(net(h, sigma, cond), x.is_complex())
        n = x[0].numel() * (2 if x.is_complex() else 1)
        return edm_weight(sigma, self.sigma_data) * _sq_norm(D - x) / n


#: families whose ``hidden_weight = "auto"`` is estimated (elsewhere it is 1, the plain loss: not measured there)
AUTO_HIDDEN_WEIGHT_FAMILIES = ("cartesian_mri",)
#: the largest ``"auto"`` factor: the largest measured (R = 4, 20 % dropped: 20 and 40 learned alike; issue #19);
#: sparser data ask for more (R = 8: ~93), where each hidden entry's rare supervision would weigh that much
AUTO_HIDDEN_WEIGHT_MAX = 40.0


def auto_hidden_weight(
    family: OperatorFamily, operators: SubsampledOperator | None = None, *, draws: int = 8, records: int = 64
) -> float:
    """``loss.hidden_weight = "auto"``: ``1 / P(A observed j | Ã hid j)`` (docs/design.md §5), the factor that gives
    the inpainting part of the ambient loss its weight in a clean loss, for a Cartesian MRI family; 1 otherwise.

    ``P`` is estimated as (entries ``A`` observed and ``Ã`` hid) / (entries ``Ã`` hid), pooled over ``operators``
    (the training records' operators; default ``records`` draws of the family's own law) and ``draws`` further
    corruptions of each, from a fixed seed, so that a run and its resume get the same number. 1 where nothing ``A``
    observed is ever hidden (``drop_fraction = 0``). At most :data:`AUTO_HIDDEN_WEIGHT_MAX`; rounded to 2 decimals.

        >>> from ambient_science.operators.mri import CartesianMRIFamily
        >>> auto_hidden_weight(CartesianMRIFamily((1, 64, 64), acceleration=4, center_fraction=0.08))
        22.77
    """
    if family.name not in AUTO_HIDDEN_WEIGHT_FAMILIES:
        return 1.0
    generator = torch.Generator().manual_seed(0)
    A = family.sample(records, generator=generator) if operators is None else operators
    observed = torch.broadcast_to(A.observed, A.oshape).float().cpu()
    dropped = hidden = 0.0
    for _ in range(draws):
        A_tilde = family.further_corrupt(A, generator=torch.Generator(A.observed.device).manual_seed(
            int(torch.randint(2**31, (1,), generator=generator))))  # fmt: skip
        kept = torch.broadcast_to(A_tilde.observed, A.oshape).float().cpu()
        dropped += float((observed - kept).clamp_min(0).sum())
        hidden += float((1 - kept).sum())
    return 1.0 if dropped <= 0 or hidden <= 0 else round(min(hidden / dropped, AUTO_HIDDEN_WEIGHT_MAX), 2)


def hidden_weight_operators(family: OperatorFamily, records: list[dict[str, Any]]) -> SubsampledOperator:
    """The operators of training ``records`` for :func:`auto_hidden_weight`: their masks; any other parameter (coil
    maps) is the first record's, broadcast without a copy (the estimate reads the masks only)."""
    first = records[0]["params"]
    params = {
        k: torch.stack([r["params"][k] for r in records]) if k == "mask" else v.expand(len(records), *v.shape)
        for k, v in first.items()
    }
    return family.make(params)


def build_loss(
    config: LossConfig, family: OperatorFamily, sigma_data: float, operators: SubsampledOperator | None = None
) -> AmbientLoss:
    """The loss named by ``config.kind`` (``"auto"``, ``"noisy_ambient"`` -> :class:`NoisyAmbientLoss`), with
    ``hidden_weight = "auto"`` resolved by :func:`auto_hidden_weight` on ``operators`` (the training records')."""
    cls = AmbientLoss if config.kind == "ambient" else NoisyAmbientLoss
    hidden = config.hidden_weight
    return cls(
        family,
        sigma_data=sigma_data,
        p_mean=config.p_mean,
        p_std=config.p_std,
        tilde_draws=config.tilde_draws,
        hidden_weight=auto_hidden_weight(family, operators) if hidden == "auto" else hidden,
    )


def _sigma_like(sigma: Tensor, like: Tensor) -> Tensor:
    """``σ (B,)`` reshaped to broadcast against ``like (B, ...)`` (real, so it scales complex tensors too)."""
    return append_dims(sigma.to(like.device, torch.float32), like.ndim)


def _observed(A: SubsampledOperator, like: Tensor) -> Tensor:
    return A.observed.to(like.device)


def _to_image_dtype(D: Tensor, family: OperatorFamily) -> Tensor:
    """The network's output in float32 / complex64 (under autocast it could be lower precision)."""
    return D.to(torch.complex64 if family.is_complex else torch.float32)
