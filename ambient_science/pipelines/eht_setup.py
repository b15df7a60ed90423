"""The setup of a black-hole run (``examples/black_hole.py``): its sizes (:class:`Setup`, :data:`QUICK`), the
samplers' settings (:data:`DAPS`, :data:`DPS`), and its priors (:func:`load_priors`): the shipped one, a given
checkpoint, or one trained here from visibilities only (:func:`train_prior`, docs/design.md §5, §7).

Choices, with reasons:

* Images: 32 × 32 pixels over 128 µas (4 µas pixels), a small U-Net (16 channels, 0.3 M parameters), 800
  steps of 32 images (~0.45 s each on two idle CPU cores): what fits the 15-minute budget with the
  evaluation. 600, 900, 1200 and 1500 steps gave a blurred PSNR of 31.9, 32.1, 32.8 and 32.6 dB on the
  held-out set (seed 0). The EHT's resolution is ~20 µas; metrics are also given after a 20 µas blur
  (``blur_fwhm_uas``).
* Data: 4096 records, a 10-s integration every 20 minutes (Earth rotation moves a baseline by less than a
  Fourier cell of 1/128 µas meanwhile), 15 % of stations absent, 4–12 h windows, declinations −30°…60°
  (:data:`~ambient_science.pipelines.eht.COVERAGE_LAW`).
* Operator normalisation: the plain visibility operator's ``AᴴA`` is ``K N²`` times too large for the
  network's input; ``InterferometerFamily(normalize=True)`` weights every visibility by the uniform-
  weighting density compensation, so that ``x̃ = Ãᴴ Ã x_σ`` is an image at the scale of ``x``.
* Noise: after weighting, the per-visibility noise is ``s w σ`` in network units; its RMS per record is the
  ``sigma_n`` of the noisy ambient loss ("double Tweedie": training only at ``σ > σ_n``). It is small
  (~0.02 against a pixel std of ~0.4) and not white, so this is an approximation; the plain ambient loss
  (which ignores it) would do about as well. Residual station gains of the training records (5 %
  amplitude, 3° phase) are left as extra noise; the held-out data get 10 % amplitude gains and random
  station phases, to which closure quantities are blind.
* Likelihood: closure phases + log closure amplitudes + the total flux (the intra-site flux, known as in
  EHT imaging). Closure quantities do not fix the position: PSNR and nxcorr are taken after the best
  sub-pixel shift.
* DAPS (the main method; no backpropagation through the network): 30 levels from σ = 10 to 0.2, 10 Langevin steps
  per level at the closure likelihood's curvature (re-estimated every level: the χ² is far stiffer near smooth
  images) down to σ = 1, then MAP levels (30 L-BFGS iterations on the same ``x_0`` target, then re-noised: the
  Langevin steps alone left ``x_0`` far from the data, :mod:`.eht_daps`), ``Ã_inf`` a further corruption of the
  observation's own coverage (``test``; the training law, ``law``, did about as well). Each sample ends with a
  data-consistency step (L-BFGS on ``||x − x̂_0||²/2r² + L(x)``, ``x > 0``); samples stuck in a local optimum of
  the non-convex closure χ² (above twice the best) are dropped; the point estimate is the mean of the others made
  data-consistent the same way, and their spread the std map. A-DPS (guidance through the network) the same way.
* Dirty image: uniform weighting of the gain-free visibilities (an optimistic reference), clipped at 0 and
  scaled to the total flux.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ambient_science import pretrained
from ambient_science.pipelines.eht import training_records
from ambient_science.pipelines.eht_reconstruct import SamplerSettings
from ambient_science.pipelines.training import train
from ambient_science.sampling.prior import Prior, load_prior
from ambient_science.training.config import RunConfig, TrainConfig
from ambient_science.training.distributed import resolve_device
from ambient_science.training.losses import LossConfig

__all__ = ["DAPS", "DPS", "QUICK", "SHIPPED", "SHIPPED_REAL", "Setup", "load_priors", "resolve_setup", "train_prior"]

SHIPPED = "black-hole-eht2017-32"  # ambient_science.pretrained: trained from visibilities only, on this grid
# the broad 64 x 64 / 160 µas prior (benchmarks/eht_out_of_family.py): the default for real data (--uvfits), where
# no prior is trained in the run; the synthetic evaluation keeps SHIPPED, whose grid the in-run prior shares
SHIPPED_REAL = "black-hole-eht-64"

# samplers: DAPS's Langevin step at the likelihood's curvature (step_size 1); each sample then a data-consistency
# step; the mean of the samples that fit the data, made data-consistent, is the point estimate
DAPS = SamplerSettings(
    method="daps",
    levels=30,
    langevin_steps=10,
    step_size=1.0,
    map_below=1.0,
    map_iterations=30,
    polish_iterations=200,
    polish_mean_iterations=200,
    fit_rounds=4,
)
DPS = SamplerSettings(method="dps", levels=30, zeta=0.1, polish_iterations=200, polish_mean_iterations=200)


@dataclass(frozen=True)
class Setup:
    """Sizes of one run (the defaults fit 15 minutes on two CPU cores; :data:`QUICK` shrinks everything)."""

    npix: int = 32
    fov_uas: float = 128.0
    train_images: int = 4096
    train_steps: int = 800
    batch_size: int = 32
    model_channels: int = 16
    num_test: int = 8
    num_samples: int = 8
    dps_samples: int = 4
    daps: SamplerSettings = field(default_factory=lambda: DAPS)
    dps: SamplerSettings = field(default_factory=lambda: DPS)
    rml_rounds: int = 3
    rml_iter: int = 200
    rml_target: tuple[float, float] | None = (0.7, 1.3)
    rml_reweight: int = 6
    blur_fwhm_uas: float = 20.0

    def to_dict(self) -> dict:
        """Plain JSON values (the ``setup`` entry of ``metrics.json``)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


# a tiny configuration for tests: 16² images, a few steps; numbers meaningless
QUICK = Setup(
    npix=16,
    train_images=64,
    train_steps=3,
    batch_size=8,
    model_channels=8,
    num_test=2,
    num_samples=2,
    dps_samples=1,
    daps=dataclasses.replace(DAPS, levels=4, langevin_steps=3, polish_iterations=10, polish_mean_iterations=10),
    dps=dataclasses.replace(DPS, levels=4, polish_iterations=10, polish_mean_iterations=10),
    rml_rounds=1,
    rml_iter=20,
    rml_reweight=1,
)


def resolve_setup(
    *,
    quick: bool = False,
    train_steps: int | None = None,
    train_images: int | None = None,
    num_test: int | None = None,
    num_samples: int | None = None,
    inference_operator: Literal["test", "law"] = "test",
) -> Setup:
    """:class:`Setup` (or :data:`QUICK`) with the given sizes (``None``: the default) and the law of ``Ã_inf``
    for both samplers."""
    setup = QUICK if quick else Setup()
    overrides = {
        "train_steps": train_steps,
        "train_images": train_images,
        "num_test": num_test,
        "num_samples": num_samples,
    }
    setup = dataclasses.replace(setup, **{k: v for k, v in overrides.items() if v is not None})
    daps = dataclasses.replace(setup.daps, inference_operator=inference_operator)
    dps = dataclasses.replace(setup.dps, inference_operator=inference_operator)
    return dataclasses.replace(setup, daps=daps, dps=dps)


def train_prior(
    setup: Setup, out_dir: Path, *, seed: int, device: str = "auto", resume: bool = False
) -> tuple[Path, dict]:
    """Train an ambient prior on ``setup.train_images`` measurement records (:func:`training_records` with
    ``seed``; visibilities only) into ``out_dir`` with the noisy ambient loss. Returns the checkpoint and the
    budget spent (``source``, ``steps``, ``images_seen``, ``seconds``)."""
    t0 = time.perf_counter()
    dataset = training_records(setup.train_images, setup.npix, setup.fov_uas, seed=seed)
    print(f"training set: {len(dataset)} records of visibilities ({time.perf_counter() - t0:.0f} s)", flush=True)
    network = dict(
        model_channels=setup.model_channels,
        channel_mult=[1, 2, 2],
        num_blocks=1,
        attn_levels=[2],
        head_channels=min(16, 2 * setup.model_channels),
        sigma_data=0.5,
    )
    train_cfg = TrainConfig(
        out_dir=str(out_dir),
        steps=setup.train_steps,
        batch_size=setup.batch_size,
        lr=1e-3,
        warmup_images=2000,
        ema_halflife_images=2000,
        checkpoint_every=100,
        log_every=10,
        seed=seed,
        device=device,
        resume="auto" if resume else "",
    )
    config = RunConfig(network=network, loss=LossConfig(kind="noisy_ambient"), train=train_cfg)
    t1 = time.perf_counter()
    result = train(config, dataset, family=dataset.family)
    info = {"source": f"trained in this run ({out_dir})", "steps": result.step,
            "images_seen": result.images_seen, "seconds": round(time.perf_counter() - t1, 1)}  # fmt: skip
    return Path(result.checkpoint), info


def load_priors(
    setup: Setup,
    out: Path,
    *,
    device: str = "auto",
    seed: int = 0,
    prior: Path | None = None,
    shipped: bool = True,
    train: Literal["always", "never", "if_no_prior"] = "always",
    resume: bool = False,
    shipped_name: str = SHIPPED,
) -> tuple[dict[str, Prior], dict[str, dict], Setup]:
    """The priors of a run.

    ``ambient``: the checkpoint or exported prior ``prior``, else (``shipped``) the shipped prior ``shipped_name``
    (default :data:`SHIPPED`) when it fits the setup's grid, or on its own grid when ``train`` is ``"never"`` or
    ``"if_no_prior"`` (nothing is trained here that would have to share it). ``ambient_this_run``: trained
    here (:func:`train_prior` into ``out / "train"``) when ``train`` is ``"always"``, or ``"if_no_prior"`` and
    there is no ``ambient`` prior. Returns ``(priors, train_info, setup)``, the setup on the priors' grid.
    """
    if train not in ("always", "never", "if_no_prior"):
        raise ValueError(f"load_priors: train must be 'always', 'never' or 'if_no_prior', got {train!r}")
    where = resolve_device(device)
    priors, info = {}, {}
    grid = pretrained.info(shipped_name)["family"] if shipped else {}
    fits = (setup.npix, setup.fov_uas) == (grid.get("npix"), grid.get("fov_uas")) or train != "always"
    if prior is not None:
        priors["ambient"], info["ambient"] = load_prior(prior, map_location=where), {"source": str(prior)}
    elif shipped and fits:
        priors["ambient"] = pretrained.load(shipped_name, map_location=where)
        info["ambient"] = pretrained.budget(shipped_name)
    elif shipped:
        print(f"shipped prior {shipped_name} skipped: it was trained at {grid.get('npix')} × {grid.get('npix')} "
              f"pixels over {grid.get('fov_uas')} µas, the prior trained here at {setup.npix} × {setup.npix}")
    if train == "always" or (train == "if_no_prior" and not priors):
        checkpoint, info["ambient_this_run"] = train_prior(
            setup, out / "train", seed=seed, device=device, resume=resume
        )
        priors["ambient_this_run"] = load_prior(checkpoint, map_location=where)
    if not priors:
        raise ValueError("load_priors: no prior to image with: train one (train='always') or pass prior=PATH")
    family = next(iter(priors.values())).family
    if (family.npix, family.fov_uas) != (setup.npix, setup.fov_uas):
        setup = dataclasses.replace(setup, npix=family.npix, fov_uas=family.fov_uas)
    for label, entry in info.items():
        print(f"prior {label}: {entry['source']}", flush=True)
    return priors, info, setup
