"""Expectation maximisation from corrupted data: a second route to a prior (Rozet et al., NeurIPS 2024, "Learning
diffusion priors from observations by expectation maximization"; docs/design.md §5).

The goal is the prior ``q_θ`` that maximises the likelihood of the measurements, ``Π_i ∫ p(y_i | x) q_θ(x) dx``.
EM alternates, from a cheap initial prior ``q_0``:

* E-step: one posterior sample ``x_i ~ q_k(x | y_i, A_i)`` per training measurement;
  (``refresh_fraction < 1``: only that fraction of the samples is redrawn per round, rotating through the set,
  the others kept from the previous round: an incremental E-step, Neal & Hinton 1998, cheaper per round);
* M-step: ``q_{k+1}``: a denoiser trained on the samples ``{x_i}`` with the plain EDM loss (a clean-image prior,
  family ``clean``), warm-started from ``q_k``'s network (the same run directory, resumed), for
  ``EMConfig.images_per_round`` images.

Each M-step maximises ``E_{x ~ q_k(·|y)} log q_θ(x)``, a lower bound of the likelihood's increase (the EM
inequality), so the iterates climb the likelihood as long as the E-step samples the posterior of ``q_k``.

Initial prior: a trained prior when ``EMConfig.init_prior`` names one (e.g. an ambient prior of the same data:
its A-DPS samples are the first E-step, and the first M-step starts from its network, :func:`warm_start`); else
``q_0 = N(μ, Σ)``, fitted to the measurements by (Monte-Carlo) EM: ``Σ = Tᴴ diag(s) T`` with ``T``
the orthonormal 2-D Fourier transform (``basis = "fourier"``: a stationary covariance, for complex images) or the
identity (``"pixel"``). Gaussian E-step: exact posterior samples by perturbation (Matheron's rule),
``x = x₀ + Σ Aᴴ (A Σ Aᴴ + Σ_y)⁻¹ (y − A x₀ − n₀)`` with ``x₀ ~ N(μ, Σ)``, ``n₀ ~ N(0, Σ_y)``, the solve by
conjugate gradients; M-step: ``μ`` = mean of the samples, ``s`` = mean of ``|T(x − μ)|²``.

Diffusion E-step: moment-matching posterior sampling (MMPS, Rozet et al. §3). At noise level ``σ`` the denoiser
gives ``E[x | x_σ] = D(x_σ)`` and, by Tweedie's second-order formula, ``Cov[x | x_σ] = σ² ∂D/∂x_σ``. With the
Gaussian approximation ``p(x | x_σ) ≈ N(D, σ² J)``, the posterior denoiser is

    E[x | x_σ, y] ≈ D + σ² Jᵀ Aᴴ (σ² A Jᵀ Aᴴ + Σ_y)⁻¹ (y − A D),

the solve by ``cg_iters`` conjugate-gradient iterations, each a vector-Jacobian product through the network
(``J`` symmetric in theory; the product ``Jᵀ v`` is one backward pass). A DDIM / ancestral sampler (``eta``:
0 deterministic, 1 ancestral) steps down an EDM schedule with it; the sample is the posterior denoiser's output at
the last level. Complex images are handled as real vectors (real and imaginary parts; the adjoint of a complex
linear operator is then its real adjoint, and torch's vector-Jacobian product of a real-valued pairing is the
real adjoint of ``J``). ``Σ_y = σ_n² I`` per real component (the noise convention of
:mod:`ambient_science.training.losses`).

Cost (equal-compute comparisons with the ambient loss): each E-step records its network forward passes and
vector-Jacobian products (``em/state.json``, :func:`em_compute`); a training image costs one forward and one
backward pass.

Resume: samples of every E-step are stored (``em/samples-<round>.pt``), the M-steps are trainer runs in
``train.out_dir`` (checkpoints, ``resume = "auto"``); running :func:`train_em` again with a larger
``train.images`` continues with further rounds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ambient_science.denoiser import network_denoise
from ambient_science.family import OperatorFamily
from ambient_science.registry import family_from_config
from ambient_science.schedules import edm_sigmas
from ambient_science.training.checkpoint import list_checkpoints, load_checkpoint
from ambient_science.training.config import EMConfig, RunConfig
from ambient_science.training.data import prepare_data, step_seed
from ambient_science.training.trainer import TrainResult, train

__all__ = ["GaussianPrior", "InitialPrior", "SampleSet", "batches", "clean_family", "em_compute", "fit_gaussian",
           "gaussian_posterior", "mmps_sample", "posterior_denoise", "train_em"]  # fmt: skip


# -- helpers ---------------------------------------------------------------------------------------------
def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample real inner product ``Re Σ conj(a) b``. Shape: ``(B, ...)`` -> ``(B,)`` float."""
    prod = (a.conj() * b).real if a.is_complex() else a * b
    return prod.reshape(prod.shape[0], -1).sum(dim=1)


def _cg(apply: Callable[[Tensor], Tensor], b: Tensor, iters: int) -> Tensor:
    """``iters`` conjugate-gradient iterations for ``apply(u) = b`` (symmetric positive definite in the real
    inner product), per sample, from ``u = 0``."""
    u = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rs = _dot(r, r)
    view = (-1,) + (1,) * (b.ndim - 1)
    for _ in range(iters):
        Ap = apply(p)
        alpha = rs / _dot(p, Ap).clamp_min(1e-30)
        u = u + alpha.reshape(view) * p
        r = r - alpha.reshape(view) * Ap
        rs_new = _dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)).reshape(view) * p
        rs = rs_new
    return u


def _noise(shape, dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    """Every real component ``N(0, 1)`` (complex: real and imaginary parts each)."""
    if dtype.is_complex:
        return torch.view_as_complex(torch.randn((*shape, 2), generator=generator))
    return torch.randn(shape, generator=generator, dtype=dtype)


def batches(dataset: Dataset, size: int, index: list[int] | None = None):  # also pipelines.em_init
    """``(position in index, y, params, sigma_n)`` of ``size`` records at a time (``index``: default all)."""
    index = list(range(len(dataset))) if index is None else index
    for start in range(0, len(index), size):
        records = [dataset[i] for i in index[start : start + size]]
        params = {k: torch.stack([r["params"][k] for r in records]) for k in records[0]["params"]}
        y = torch.stack([r["y"] for r in records])
        sigma_n = torch.stack([torch.as_tensor(r["sigma_n"], dtype=torch.float32) for r in records])
        yield start, y, params, sigma_n


# -- the Gaussian initial prior ----------------------------------------------------------------------------
class GaussianPrior:
    """``N(μ, Tᴴ diag(s) T)`` on images ``(C, H, W)``; ``T`` the orthonormal 2-D FFT (``"fourier"``) or the
    identity (``"pixel"``). ``s`` is the variance of every complex entry (``E|T(x − μ)|²``), or of every real
    entry for real images."""

    def __init__(self, mean: Tensor, var: Tensor, basis: str):
        if basis not in ("fourier", "pixel"):
            raise ValueError(f"basis must be 'fourier' or 'pixel', got {basis!r}")
        if basis == "fourier" and not mean.is_complex():
            raise ValueError("basis 'fourier' needs complex images (a real image's spectrum is Hermitian)")
        self.mean, self.var, self.basis = mean, var.clamp_min(1e-12), basis

    def _T(self, x: Tensor) -> Tensor:
        return torch.fft.fft2(x, norm="ortho") if self.basis == "fourier" else x

    def _Tinv(self, k: Tensor) -> Tensor:
        return torch.fft.ifft2(k, norm="ortho") if self.basis == "fourier" else k

    def cov(self, x: Tensor) -> Tensor:
        """``Σ x``."""
        return self._Tinv(self.var * self._T(x))

    def sample(self, batch_size: int, generator: torch.Generator) -> Tensor:
        z = _noise((batch_size, *self.mean.shape), self.mean.dtype, generator)
        if z.is_complex():
            z = z / math.sqrt(2.0)  # E|z|² = 1 per complex entry
        return self.mean + self._Tinv(self.var.sqrt() * z)


def gaussian_posterior(prior: GaussianPrior, A, y: Tensor, sigma_n: Tensor, generator: torch.Generator,
                       cg_iters: int) -> Tensor:  # fmt: skip
    """One exact posterior sample per measurement under ``prior`` (perturbation; CG for the solve)."""
    B = y.shape[0]
    view = (-1,) + (1,) * (y.ndim - 1)
    noise_var = sigma_n.reshape(view).square()
    x0 = prior.sample(B, generator)
    n0 = sigma_n.reshape(view) * _noise(tuple(y.shape), y.dtype, generator)
    # the complex covariance of the noise is 2σ_n² (real, imaginary parts σ_n² each): as a real-linear system
    # Σ in the real representation is half the complex covariance, so both sides take the same factor
    scale = 2.0 if y.is_complex() else 1.0
    u = _cg(lambda v: A(prior.cov(A.H(v))) + scale * noise_var * v, y - A(x0) - n0, cg_iters)
    return x0 + prior.cov(A.H(u))


def fit_gaussian(dataset: Dataset, family: OperatorFamily, em: EMConfig, *, seed: int,
                 log: Callable[[str], None] = print) -> tuple[GaussianPrior, Tensor]:  # fmt: skip
    """``q_0`` fitted by Monte-Carlo EM (``em.gaussian_iters`` rounds), and its posterior samples of every
    measurement (the first E-step). Shape: samples ``(N, C, H, W)``."""
    basis = em.gaussian_basis if em.gaussian_basis != "auto" else ("fourier" if family.is_complex else "pixel")
    dtype = family.image_dtype()
    total, count = None, 0
    for _, y, params, _ in batches(dataset, em.batch_size):  # start: μ = 0, s = mean energy of Aᴴy / fill
        A = family.make(params)
        x = A.H(y)
        fill = A.num_observed().float().mean() / float(x[0].numel())
        e = (x.abs().square() if x.is_complex() else x.square()).mean() / fill.clamp_min(1e-6)
        total = e if total is None else total + e
        count += 1
    prior = GaussianPrior(torch.zeros(family.image_shape, dtype=dtype),
                          torch.full(family.image_shape, float(total / count)), basis)  # fmt: skip
    samples = torch.zeros((len(dataset), *family.image_shape), dtype=dtype)
    for it in range(em.gaussian_iters):
        g = torch.Generator().manual_seed(step_seed(seed, 0, it, "em-gauss"))
        for start, y, params, sigma_n in batches(dataset, em.batch_size):
            A = family.make(params)
            samples[start : start + y.shape[0]] = gaussian_posterior(prior, A, y, sigma_n, g, em.gaussian_cg_iters)
        mean = samples.mean(dim=0)
        T = prior._T(samples - mean)
        var = T.abs().square().mean(dim=0) if T.is_complex() else T.square().mean(dim=0)
        prior = GaussianPrior(mean, var, basis)
        log(f"em: gaussian prior iteration {it + 1}/{em.gaussian_iters}: mean |μ| {float(mean.abs().mean()):.4g}, "
            f"total variance {float(var.sum()):.4g}")  # fmt: skip
    return prior, samples


# -- the diffusion E-step (MMPS) ---------------------------------------------------------------------------
class _Counter:
    def __init__(self):
        self.forwards = 0  # images through the network's forward pass
        self.vjps = 0  # images through a vector-Jacobian product (one backward pass)


def posterior_denoise(net: nn.Module, clean: OperatorFamily, A_clean, A, y: Tensor, x: Tensor, sigma: float,
                      noise_var: Tensor, cg_iters: int) -> Tensor:  # fmt: skip
    """MMPS's ``E[x | x_σ, y] ≈ D + σ² Jᵀ Aᴴ (σ² A Jᵀ Aᴴ + Σ_y)⁻¹ (y − A D)`` at one level ``σ`` (no graph kept).

    ``noise_var``: ``σ_n²`` per real component, broadcastable to ``y``. Shape: ``x (B, C, H, W)`` -> same."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        D = network_denoise(net, xg, torch.full((x.shape[0],), sigma), clean, A_clean)

        def jt(v: Tensor) -> Tensor:  # Jᵀ v, one backward pass
            (g,) = torch.autograd.grad(D, xg, grad_outputs=v, retain_graph=True)
            return g

        r = (y - A(D)).detach()
        u = _cg(lambda v: sigma**2 * A(jt(A.H(v))) + noise_var * v, r, cg_iters)
        return (D + sigma**2 * jt(A.H(u))).detach()


def mmps_sample(net: nn.Module, clean: OperatorFamily, A, y: Tensor, sigma_n: Tensor, em: EMConfig,
                generator: torch.Generator, counter: _Counter | None = None) -> Tensor:  # fmt: skip
    """One MMPS posterior sample per measurement with the clean-image denoiser ``net`` (module docstring).

    Shape: ``y`` like ``A``'s output, ``sigma_n (B,)`` -> ``(B, C, H, W)``."""
    B = y.shape[0]
    view = (-1,) + (1,) * (y.ndim - 1)
    noise_var = sigma_n.reshape(view).square().to(torch.float32)
    A_clean = clean.sample(B, generator=generator)
    sigmas = edm_sigmas(em.sampling_steps, sigma_min=em.sigma_min, sigma_max=em.sigma_max, rho=em.rho)
    dtype = clean.image_dtype()
    x = float(sigmas[0]) * _noise((B, *clean.image_shape), dtype, generator)
    x_hat = x
    for i in range(em.sampling_steps):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        x_hat = posterior_denoise(net, clean, A_clean, A, y, x, s, noise_var, em.cg_iters)
        if counter is not None:
            counter.forwards += B
            counter.vjps += B * (em.cg_iters + 1)
        if s_next == 0.0:
            break
        # DDIM / ancestral step from σ to σ_next around the posterior denoiser
        up = em.eta * s_next * math.sqrt(max(0.0, 1.0 - (s_next / s) ** 2))
        down = math.sqrt(max(0.0, s_next**2 - up**2))
        x = x_hat + down * (x - x_hat) / s + up * _noise(tuple(x.shape), dtype, generator)
    return x_hat


# -- a trained prior as the initial one ----------------------------------------------------------------------
class InitialPrior(Protocol):
    """A trained prior as EM's ``q_0`` (``em.init_prior``): its posterior samples are the first E-step, its
    weights the first M-step's start. The pipelines layer implements it with the sampling layer
    (:class:`ambient_science.pipelines.em_init.TrainedInitialPrior`); the training layer only calls it."""

    def samples(self, dataset: Dataset, family: OperatorFamily, batch_size: int, generator: torch.Generator,
                counter: _Counter) -> Tensor: ...  # fmt: skip

    def warm_start(self, network: nn.Module) -> bool: ...


# -- the loop ----------------------------------------------------------------------------------------------
class SampleSet(Dataset):
    """Posterior samples as a training set of the ``clean`` family (``A = I``, no noise): the M-step's data."""

    def __init__(self, samples: Tensor, clean: OperatorFamily):
        self.samples, self.family = samples, clean
        self.mask = clean.sample(1, generator=torch.Generator()).params()
        self.sigma_n = [0.0] * len(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"y": self.samples[i], "params": {k: v[0] for k, v in self.mask.items()}, "sigma_n": torch.tensor(0.0)}


def clean_family(family: OperatorFamily) -> OperatorFamily:
    """The ``clean`` family (``A = I``) of ``family``'s images: what the EM prior is trained and sampled with."""
    return family_from_config({"family": "clean", "image_shape": list(family.image_shape),
                               "is_complex": family.is_complex})  # fmt: skip


def em_compute(out_dir: str | Path) -> dict[str, Any]:
    """The E-steps' cost so far (``em/state.json``): rounds, network forwards, VJPs, seconds."""
    path = Path(out_dir) / "em" / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {"rounds": []}
    rounds = state["rounds"]
    return {
        "rounds": len(rounds),
        "e_step_forwards": sum(r["forwards"] for r in rounds),
        "e_step_vjps": sum(r["vjps"] for r in rounds),
        "e_step_seconds": round(sum(r["seconds"] for r in rounds), 1),
    }


def train_em(
    config: RunConfig,
    dataset: Dataset | None = None,
    *,
    family: OperatorFamily | None = None,
    open_data: Callable[[str], Dataset] | None = None,
    log: Callable[[str], None] = print,
    initial_prior: InitialPrior | None = None,
) -> TrainResult:
    """EM training (module docstring) into ``config.train.out_dir``: rounds of ``config.em.images_per_round``
    images until ``config.train.images`` (or ``steps × batch_size``) images; resumes where it stopped.
    ``initial_prior``: the prior ``config.em.init_prior`` names, loaded (:func:`ambient_science.pipelines.training.
    train` loads it)."""
    em, cfg = config.em, config.train
    if em.init_prior and initial_prior is None:
        raise ValueError(
            f"em.init_prior = {em.init_prior!r} needs the prior loaded: train through "
            "ambient_science.pipelines.training.train (or `ambient-science train`), or pass initial_prior="
        )
    dataset, family = prepare_data(config, dataset, family, open_data=open_data)

    clean = clean_family(family)
    out = Path(cfg.out_dir)
    em_dir = out / "em"
    em_dir.mkdir(parents=True, exist_ok=True)
    state_path = em_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"rounds": []}
    total_images = cfg.total_steps() * cfg.batch_size
    n_rounds = max(1, math.ceil(total_images / em.images_per_round))
    result = None
    for k in range(n_rounds):
        samples_path = em_dir / f"samples-{k:03d}.pt"
        if not samples_path.exists():
            t0 = time.perf_counter()
            counter = _Counter()
            if k == 0 and em.init_prior:
                g = torch.Generator().manual_seed(step_seed(cfg.seed, 0, 0, "em-init-prior"))
                samples = initial_prior.samples(dataset, family, em.batch_size, g, counter)
            elif k == 0:
                _, samples = fit_gaussian(dataset, family, em, seed=cfg.seed, log=log)
            else:
                net = load_checkpoint(out / "checkpoints", map_location="cpu").network.eval().requires_grad_(False)
                samples = torch.load(em_dir / f"samples-{k - 1:03d}.pt")
                n = len(dataset)
                count = min(n, math.ceil(em.refresh_fraction * n))
                index = [((k - 1) * count + j) % n for j in range(count)]  # rotating through the set
                g = torch.Generator().manual_seed(step_seed(cfg.seed, 0, k, "em-mmps"))
                for start, y, params, sigma_n in batches(dataset, em.batch_size, index):
                    A = family.make(params)
                    new = mmps_sample(net, clean, A, y, sigma_n, em, g, counter)
                    samples[index[start : start + y.shape[0]]] = new
            torch.save(samples, samples_path)
            state["rounds"].append({"round": k, "forwards": counter.forwards, "vjps": counter.vjps,
                                    "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
            state_path.write_text(json.dumps(state, indent=1))
            log(f"em: E-step {k} done ({state['rounds'][-1]})")
        samples = torch.load(samples_path)
        images = min(total_images, (k + 1) * em.images_per_round)
        round_cfg = config.replace(family={}, train=replace(cfg, images=images, steps=1, resume="auto"))
        initialize = None
        if k == 0 and em.init_prior and not list_checkpoints(out / "checkpoints"):  # not when resuming

            def initialize(network: nn.Module) -> None:
                started = initial_prior.warm_start(network)
                log(f"em: first M-step {'starts from' if started else 'starts afresh: no weights match'} "
                    f"{em.init_prior}")  # fmt: skip

        result = train(round_cfg, SampleSet(samples, clean), family=clean, initialize=initialize)
        if result.stopped:
            return result
    assert result is not None
    return result
