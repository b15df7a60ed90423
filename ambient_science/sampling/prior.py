"""The prior of every sampler: a trained network called through a fixed inference operator ``Ã_inf``.

An ambient network estimates ``E[x | Ã x_σ, Ã]`` (docs/design.md §5), so at inference it is called through an
operator ``Ã_inf`` drawn from the training corruption law and held fixed for a whole trajectory
(docs/design.md §6). The resulting denoiser

    D(x_σ, σ) = (1/K) Σ_k network_denoise(net, Ã_kᴴ Ã_k x_σ, σ, family, Ã_k)

(optionally averaged over ``K`` draws) is what samplers call. With a clean-data prior (``CleanFamily``,
``A = I``) the same code gives the plain ``E[x | x_σ]``.

Four choices of ``Ã_inf`` (``inference_operator``):

* ``"law"``: ``Ã_inf = further_corrupt(A)`` with ``A ~ family.sample``: the training law of ``Ã``;
* ``"test"``: ``Ã_inf = further_corrupt(A_test)``: the further corruption of the test operator itself,
  when the test operator comes from the training law (``Ã_inf`` then observes only what ``y`` observed,
  which the one-step estimate ``D(Aᴴ y)`` needs);
* ``"full"``: ``Ã_inf`` observes everything (:meth:`OperatorFamily.fully_observed`, mask families only).
  The network never saw such an input in training (every ``Ã`` hid something): this relies on it
  extrapolating from "denoise what ``Ã`` observed" to "denoise everything". It lets the denoiser use all
  of ``x_σ`` instead of a fifth of it. For MRI at R = 4 (examples/mri_knee.py, shipped prior, held-out
  validation volumes) A-DPS gives 22.99 dB through ``"full"`` against 21.82 dB through ``"law"``.
  ``num_draws`` gives identical copies.
* ``"measurement"``: ``Ã_inf = A_test`` itself, without further corruption (the network then sees everything
  ``y`` observed, one step less corrupted than any training input; ``num_draws`` gives identical copies).

Noise floor: a network trained with the noisy-ambient loss on data of noise level ``σ_n`` never saw
``σ < σ_n`` (:attr:`Prior.sigma_n`, from the checkpoint's ``loss.sigma_n``); the samplers warn when their
schedule goes below it and :func:`~ambient_science.sampling.reconstruction.reconstruct` stops there.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from ambient_science.channels import from_network, to_network
from ambient_science.family import OperatorFamily
from ambient_science.linop import SubsampledOperator
from ambient_science.precision import PRECISIONS, autocast_dtype
from ambient_science.training.checkpoint import load_checkpoint

__all__ = ["INFERENCE_OPERATORS", "PRECISIONS", "AmbientDenoiser", "Denoiser", "InferenceOperator", "Prior",
           "autocast_dtype", "load_prior", "trained_sigma_n"]  # fmt: skip

InferenceOperator = Literal["law", "test", "full", "measurement"]
INFERENCE_OPERATORS: tuple[str, ...] = ("law", "test", "full", "measurement")
class Denoiser(Protocol):
    """``D(x_σ, σ) ≈ E[x | x_σ]``: what samplers call. ``x (B, C, H, W)``, ``sigma (B,)`` -> ``(B, C, H, W)``."""

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


def _module_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _sigma_batch(sigma: Tensor | float, batch_size: int, device: torch.device) -> Tensor:
    s = torch.as_tensor(sigma, device=device, dtype=torch.float32)
    if s.ndim == 0:
        return s.expand(batch_size)
    if s.shape != (batch_size,):
        raise ValueError(f"sigma must be a scalar or have shape ({batch_size},), got {tuple(s.shape)}")
    return s


class AmbientDenoiser:
    """``D(x_σ, σ)``: the network called through ``K`` fixed inference operators, averaged.

    Built by :meth:`Prior.denoiser`. ``A_inf`` is one batched operator of batch ``K·B`` (draw ``k`` of
    sample ``b`` at index ``k·B + b``), so the ``K`` draws go through the network in one call. ``A_inf`` is fixed
    for the denoiser's life, so its conditioning channels ``c(Ã)`` (e.g. the EHT PSF) and observed projection are
    built once, here, not at every call (the same computation as
    :func:`~ambient_science.denoiser.network_denoise`).

    Shape: ``x (B, C, H, W)`` (complex for complex families), ``sigma`` scalar or ``(B,)`` -> ``(B, C, H, W)``.
    """

    def __init__(
        self,
        network: nn.Module,
        family: OperatorFamily,
        A_inf: SubsampledOperator,
        num_draws: int,
        sigma_floor: float = 0.0,
        precision: str = "float32",
    ):
        if A_inf.batch_size % num_draws:
            raise ValueError(f"A_inf has batch {A_inf.batch_size}, not a multiple of num_draws={num_draws}")
        self.sigma_floor = float(sigma_floor)  # the lowest noise level the network trained at (Prior.sigma_n)
        self.network = network
        self.family = family
        self.A_inf = A_inf
        self.num_draws = int(num_draws)
        self.batch_size = A_inf.batch_size // self.num_draws
        self._cond = family.conditioning(A_inf)
        self._P = family.observed_projection(A_inf)
        self._autocast = autocast_dtype(precision, self.device)

    def _project(self, v: Tensor) -> Tensor:
        if self._P is None:
            return torch.zeros_like(v)
        return to_network(self._P(from_network(v, self.family.is_complex))).to(v.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(B, C, H, W)`` of the images this denoiser takes."""
        return (self.batch_size, *self.family.image_shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.family.image_dtype()

    @property
    def device(self) -> torch.device:
        for b in self.A_inf.buffers():
            return b.device
        return _module_device(self.network)

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        if tuple(x.shape) != self.shape:
            raise ValueError(f"denoiser input has shape {tuple(x.shape)}, expected {self.shape}")
        K, B = self.num_draws, self.batch_size
        s = _sigma_batch(sigma, B, x.device)
        xs = x.repeat(K, *([1] * (x.ndim - 1))) if K > 1 else x
        A = self.A_inf
        sigma_k = s.repeat(K)
        # autocast only when asked: torch.autocast refuses some device types even when disabled
        arithmetic = nullcontext() if self._autocast is None else torch.autocast(x.device.type, dtype=self._autocast)
        with arithmetic:
            out = self.network(to_network(A.H(A(xs))), sigma_k, self._cond.to(sigma_k.device), project=self._project)
        out = from_network(out, self.family.is_complex)
        return out.reshape(K, *x.shape).mean(dim=0) if K > 1 else out


class Prior:
    """A denoiser network and its operator family (the training corruption law).

    Args:
        network: ``net(x, sigma, cond) -> D`` (EDM preconditioning inside, docs/design.md §5). Put in eval mode,
            its parameters frozen (``requires_grad=False``) and its convolution weights in channels-last memory
            order (the same values; on a CPU the sampler's forward and backward passes run ~6 % faster,
            benchmarks/bench_sampling.py) unless ``freeze=False``; guidance still differentiates with respect to
            the input.
        family: the operator family the network was trained with (``CleanFamily`` for clean data).
        sigma_n: the lowest noise level the network trained at: the smallest ``σ_n`` of its training records
            when it was trained with the noisy-ambient loss (0 for the plain ambient loss, for noiseless data,
            and when unknown, e.g. a checkpoint written before it was recorded).
    """

    def __init__(self, network: nn.Module, family: OperatorFamily, *, freeze: bool = True, sigma_n: float = 0.0):
        if not sigma_n >= 0:
            raise ValueError(f"sigma_n must be >= 0, got {sigma_n}")
        self.network = network
        self.family = family
        self.sigma_n = float(sigma_n)
        #: the checkpoint's / exported prior's config (``prior.json``): its ``"sampler"`` (recommended settings,
        #: :func:`~ambient_science.sampling.reconstruction.recommended_settings`) and ``"fit"`` (calibrated fit
        #: test, :func:`~ambient_science.sampling.fit.fit_settings`) entries are read from here
        self.config: dict = {}
        #: where it was loaded from (a checkpoint or an exported prior's directory; ``None`` when built in memory):
        #: the fit test resolves a ``"fit"`` entry's ``"scorer"`` relative to it
        self.path: Path | None = None
        if freeze:
            network.eval().requires_grad_(False)
            if all(t.ndim != 5 for t in (*network.parameters(), *network.buffers())):  # 2-D convolutions only
                network.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, map_location: torch.device | str | None = None, freeze: bool = True
    ) -> Prior:
        """The prior of a training checkpoint: its EMA network and its operator family."""
        ckpt = load_checkpoint(path, map_location=map_location)
        prior = cls(ckpt.network, ckpt.family, freeze=freeze, sigma_n=trained_sigma_n(ckpt.config))
        prior.config = dict(ckpt.config)
        prior.path = Path(ckpt.path)
        return prior

    @property
    def device(self) -> torch.device:
        return _module_device(self.network)

    def draw_inference_operators(
        self,
        batch_size: int,
        *,
        generator: torch.Generator,
        num_draws: int = 1,
        inference_operator: InferenceOperator = "law",
        test_operator: SubsampledOperator | None = None,
        device: torch.device | str | None = None,
    ) -> SubsampledOperator:
        """``K`` draws of ``Ã_inf`` per sample, concatenated into one operator of batch ``K·B``.

        ``"law"``: ``Ã = further_corrupt(A)``, ``A ~ family.sample``; ``"test"``: ``Ã = further_corrupt(A_test)``;
        ``"full"``: everything observed (``fully_observed`` of ``A_test`` when given, else of a law draw, so
        that e.g. coil maps carry over); ``"measurement"``: ``Ã = A_test`` itself. Draw ``k`` of sample ``b``
        sits at index ``k·B + b``. On ``device`` (default: the network's).
        """
        if num_draws < 1:
            raise ValueError(f"num_draws must be >= 1, got {num_draws}")
        device = torch.device(device) if device is not None else self.device
        draws = []
        if inference_operator not in INFERENCE_OPERATORS:
            raise ValueError(f"inference_operator must be one of {INFERENCE_OPERATORS}, got {inference_operator!r}")
        if self.family.name == "clean":  # a clean-image prior (A = I, e.g. trained by EM): the identity, always
            inference_operator, test_operator = "law", None
        use_test = inference_operator in ("test", "measurement") or (
            inference_operator == "full" and test_operator is not None
        )
        if use_test:  # validated and moved once, not per draw
            if test_operator is None:
                raise ValueError(f"inference_operator={inference_operator!r} needs the test operator (test_operator=A)")
            if test_operator.batch_size != batch_size:
                raise ValueError(f"test operator has batch {test_operator.batch_size}, expected {batch_size}")
            if any(b.device != device for b in test_operator.buffers()):  # a copy: the caller's operator stays put
                test_operator = self.family.make({k: v.to(device) for k, v in test_operator.params().items()})
        for _ in range(num_draws):
            A = test_operator if use_test else self.family.sample(batch_size, generator=generator, device=device)
            if inference_operator == "full":
                draws.append(self.family.fully_observed(A))
            elif inference_operator == "measurement":
                draws.append(A)
            else:
                draws.append(self.family.further_corrupt(A, generator=generator))
        if num_draws == 1:
            return draws[0]
        params = [d.params() for d in draws]
        return self.family.make({k: torch.cat([p[k] for p in params]) for k in params[0]}).to(device)

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
    ) -> AmbientDenoiser:
        """``D(x_σ, σ)`` for one trajectory: fresh draws of ``Ã_inf``, then held fixed (see the module docs).

        Args:
            batch_size: ``B``, the number of images denoised at once.
            generator: draws ``Ã_inf``.
            num_draws: ``K``, the number of ``Ã_inf`` averaged (1: the plain ambient prior). The mean of
                ``E[x | Ã_k x_σ]`` over draws is a smoother denoiser than any one of them: on an analytic
                Gaussian prior (4×4, ``p = 0.2``, ``δ = 0.1``) Heun samples keep 0.89, 0.55 and 0.32 of the
                data's variance for ``K`` = 1, 4, 16, while their mean gets closer. Use ``K > 1`` for point
                estimates (one-step), ``K = 1`` for samples and uncertainty maps.
            inference_operator: ``"law"``, ``"test"``, ``"full"`` or ``"measurement"`` (the last two with
                ``test_operator``; see the module docs). ``"test"`` never reveals
                what ``y`` did not observe, so samples do not vary there (on the analytic prior with half the
                pixels observed, the posterior variance falls to 0.2× with DAPS and A-DPS): right for the
                one-step estimate, wrong for uncertainty maps.
            test_operator: the batched operator the measurements were taken with.
            device: where ``Ã_inf`` lives (default: the network's device).
            precision: the network's arithmetic (:data:`PRECISIONS`); the output is float32 / complex64 either way.
                ``"auto"``: bfloat16 autocast where the device computes it natively. On a CPU with AVX-512 BF16 (no
                AMX) the MRI card's A-DPS ran 2–10 % faster with it, its posterior mean within 0.008 of float32's
                (``benchmarks/bench_sampling.py --mri``, variants 34 and 38).
        """
        A_inf = self.draw_inference_operators(
            batch_size,
            generator=generator,
            num_draws=num_draws,
            inference_operator=inference_operator,
            test_operator=test_operator,
            device=device,
        )
        return AmbientDenoiser(self.network, self.family, A_inf, num_draws, sigma_floor=self.sigma_n,
                               precision=precision)  # fmt: skip


def trained_sigma_n(config: dict) -> float:
    """The lowest noise level a checkpoint's network trained at: the smallest ``σ_n`` of its training records
    (``loss.sigma_n.min``) under the noisy-ambient loss; 0 for the plain ambient loss or when not recorded."""
    loss = config.get("loss") or {}
    if loss.get("kind") == "ambient":
        return 0.0
    return float((loss.get("sigma_n") or {}).get("min", 0.0))


def load_prior(path: str | Path, *, map_location: torch.device | str | None = None, freeze: bool = True) -> Prior:
    """Shorthand for :meth:`Prior.from_checkpoint`."""
    return Prior.from_checkpoint(path, map_location=map_location, freeze=freeze)
