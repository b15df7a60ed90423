"""Black-hole imaging with a diffusion prior trained from sparse interferometric visibilities only.

What it shows. Synthetic black-hole-like images (rings, crescents, blobs, with turbulence) are observed by
random EHT 2017 coverages (random source declinations, observing windows, station drop-outs), with
thermal noise and residual station gains. Only these measurement records (visibilities + coverage: uv
points, stations, times, noise) enter training: an ambient diffusion prior is trained on them with the
project's trainer (``ambient_science.training.trainer.train``) and the interferometer family's further corruption
(random stations, baselines and time blocks dropped). No image ever enters training. Held-out synthetic
observations, with uncalibrated station phases, are then imaged from closure phases, log closure
amplitudes and the total flux by DAPS and A-DPS through the prior, and compared with regularised maximum
likelihood (RML, closure χ² + TV + MEM + flux) and the dirty image. Finally the real EHT 2017 M87* data
can be imaged the same way.

Two priors by default, both trained from visibilities only: the **shipped** prior ``black-hole-eht2017-32``
(``ambient_science.pretrained``, trained by this library for much longer than a demo allows, on other
synthetic observations; its model card says how long) -> rows ``ambient_daps`` and ``ambient_dps``; and a
short prior trained **in this run** (the trainer demonstration) -> rows ``ambient_daps_this_run`` and
``ambient_dps_this_run``. ``--uvfits`` images with the shipped prior (or ``--prior``) and trains nothing.

Run::

    python examples/black_hole.py                                  # train, then evaluate on synthetic data
    python examples/black_hole.py --uvfits ../shared/data/eht/observations/M87_2017-04-11_hops_lo.uvfits
                                                                   # image real data with the shipped prior
    python examples/black_hole.py --quick --out /tmp/bh            # a tiny configuration (seconds; the test)

Options:
    --out DIR            results (default ``runs/black_hole``): ``metrics.json``, ``black_hole.png``,
                         the training run under ``DIR/train`` (checkpoints, ``metrics.jsonl``).
    --device D           ``auto`` (CUDA when available), ``cpu`` or ``cuda``; bf16 autocast on CUDA comes
                         from the trainer's config.
    --train-steps N      optimizer steps (batch 32). --train-images N: measurement records simulated for training.
    --resume             continue the training run in ``DIR/train`` (or reuse it when it is complete).
    --prior PATH         a checkpoint (run, ``checkpoints/`` or ``checkpoint-*`` dir) or exported prior, used in
                         place of the shipped one (rows without the ``_this_run`` suffix).
    --train-only-here    skip the shipped prior. --no-training: skip the in-run prior.
    --uvfits PATH        image this UVFITS file (Stokes I, scan-averaged, closure quantities) with the prior and
                         DAPS, instead of the synthetic evaluation; writes ``DIR/<file stem>/`` with ``image.fits``,
                         ``image.png`` and ``metrics.json`` (closure χ², ring diameter, brightness position angle).
    --total-flux JY      total flux for ``--uvfits`` (default: the median intra-site amplitude, e.g. ALMA–APEX).
    --num-test N         held-out synthetic observations. --num-samples S: posterior samples per observation.
    --inference-operator ``test`` (default: Ã_inf a further corruption of the observation's own coverage) or
                         ``law`` (a random coverage of the training law).
    --seed N             seed of every random draw (data, training, sampling).
    --quick              a tiny configuration for tests (16² images, a few steps; numbers meaningless).

Choices, with reasons:

* Images: 32 × 32 pixels over 128 µas (4 µas pixels), a small U-Net (16 channels, 0.3 M parameters), 800
  steps of 32 images (~0.45 s each on two idle CPU cores): what fits the 15-minute budget with the
  evaluation. 600, 900, 1200 and 1500 steps gave a blurred PSNR of 31.9, 32.1, 32.8 and 32.6 dB on the
  held-out set (seed 0). The EHT's resolution is ~20 µas; metrics are also given after a 20 µas blur
  (``blur_fwhm_uas``).
* Data: 4096 records, a 10-s integration every 20 minutes (Earth rotation moves a baseline by less than a
  Fourier cell of 1/128 µas meanwhile), 15 % of stations absent, 4–12 h windows, declinations −30°…60°.
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
* DAPS (the main method; no backpropagation through the network): 30 levels from σ = 10 to 0.2, 10 Langevin
  steps per level at the closure likelihood's curvature (re-estimated every level: the χ² is far stiffer
  near smooth images), ``Ã_inf`` a further corruption of the observation's own coverage (``test``; the
  training law, ``law``, did about as well). Each sample ends with a data-consistency step (L-BFGS on
  ``||x − x̂_0||²/2r² + L(x)``, ``x > 0``); samples stuck in a local optimum of the non-convex closure χ²
  (above twice the best) are dropped; the point estimate is the mean of the others made data-consistent
  the same way, and their spread the std map. A-DPS (guidance through the network) the same way.
* Dirty image: uniform weighting of the gain-free visibilities (an optimistic reference), clipped at 0 and
  scaled to the total flux.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads made training
# several times slower here. Set before torch loads; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from ambient_science.pipelines import eht as eht
from ambient_science.pipelines.eht import (
    SamplerSettings,
    closure_observation,
    dirty_image,
    image_metrics,
    reconstruct_closure,
    rml_baseline,
    zero_baseline_flux,
)
from ambient_science.training.distributed import resolve_device

SHIPPED = "black-hole-eht2017-32"  # ambient_science.pretrained: trained from visibilities only, on this grid
BASELINES = ("rml", "dirty")
METRIC_KEYS = ("psnr", "blur_psnr", "nxcorr", "chi2_cphase", "chi2_logcamp")


# samplers: DAPS's Langevin step at the likelihood's curvature (step_size 1); each sample then a data-consistency
# step; the mean of the samples that fit the data, made data-consistent, is the point estimate
DAPS = SamplerSettings(
    method="daps", levels=30, langevin_steps=10, step_size=1.0, polish_iterations=200, polish_mean_iterations=200
)
DPS = SamplerSettings(method="dps", levels=30, zeta=0.1, polish_iterations=200, polish_mean_iterations=200)


@dataclass(frozen=True)
class Setup:
    """Sizes of one run (the defaults fit 15 minutes on two CPU cores; ``--quick`` shrinks everything)."""

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
    blur_fwhm_uas: float = 20.0


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
)

TEST_GAIN_AMP = 0.1  # held-out data: 10 % amplitude gains and uniformly random station phases


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/black_hole"), help="results directory")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train and sample")
    p.add_argument("--train-steps", type=int, help="optimizer steps of 32 records (default 800)")
    p.add_argument("--train-images", type=int, help="measurement records simulated for training (default 4096)")
    p.add_argument("--resume", action="store_true", help="continue (or reuse) the training run in OUT/train")
    p.add_argument("--prior", type=Path, help="a checkpoint or exported prior used in place of the shipped one")
    p.add_argument("--train-only-here", action="store_true", help="skip the shipped prior")
    p.add_argument("--no-training", action="store_true", help="no in-run training (shipped / --prior prior only)")
    p.add_argument("--uvfits", type=Path, help="image this UVFITS file instead of the synthetic evaluation")
    p.add_argument("--total-flux", type=float, help="total flux [Jy] for --uvfits (default: intra-site amplitude)")
    p.add_argument("--num-test", type=int, help="held-out synthetic observations (default 8)")
    p.add_argument("--num-samples", type=int, help="DAPS posterior samples per observation (default 8)")
    p.add_argument("--inference-operator", choices=("test", "law"), default="test", help="law of Ã_inf")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--quick", action="store_true", help="a tiny configuration (tests)")
    return p.parse_args(argv)


def resolve_setup(args: argparse.Namespace) -> Setup:
    setup = QUICK if args.quick else Setup()
    overrides = {
        "train_steps": args.train_steps,
        "train_images": args.train_images,
        "num_test": args.num_test,
        "num_samples": args.num_samples,
    }
    setup = dataclasses.replace(setup, **{k: v for k, v in overrides.items() if v is not None})
    daps = dataclasses.replace(setup.daps, inference_operator=args.inference_operator)
    dps = dataclasses.replace(setup.dps, inference_operator=args.inference_operator)
    return dataclasses.replace(setup, daps=daps, dps=dps)


# -- data ----------------------------------------------------------------------------------------------------


def coverage_family(setup: Setup, *, normalize: bool):
    return eht.coverage_family(setup.npix, setup.fov_uas, normalize=normalize)


def training_set(setup: Setup, seed: int):
    """Measurement records only (visibilities + coverage), as the normalised family's dataset."""
    return eht.training_records(setup.train_images, setup.npix, setup.fov_uas, seed=seed)


@dataclass
class TestCase:
    """One held-out observation: the data with gains (imaged), the gain-free data (dirty image), the truth."""

    obs: object
    obs_calibrated: object
    truth: np.ndarray
    total_flux: float


def test_set(setup: Setup, seed: int) -> list[TestCase]:
    """Held-out synthetic observations (a different seed from training), with random station phases."""
    import dataclasses as dc

    from ambient_science.datasets.black_holes import record_observation, simulate_measurements
    from ambient_science.operators.eht_noise import apply_station_gains, station_gains

    family = coverage_family(setup, normalize=False)
    g = torch.Generator().manual_seed(seed + 1_000_003)
    sim = simulate_measurements(family, setup.num_test, generator=g, min_vis=50)
    rng = np.random.default_rng(seed + 7)
    cases = []
    for i in range(setup.num_test):
        obs = record_observation(sim.y[i], {k: v[i] for k, v in sim.params.items()}, family)
        gains = station_gains(len(np.unique(obs.time)), len(obs.stations), rng, amp_std=TEST_GAIN_AMP)
        vis, sigma = apply_station_gains(obs.vis, obs.sigma, obs.time, obs.t1, obs.t2, gains)
        truth = sim.truth[i, 0].numpy().astype(np.float64)
        cases.append(TestCase(dc.replace(obs, vis=vis, sigma=sigma), obs, truth, float(truth.sum())))
    return cases


# -- prior ---------------------------------------------------------------------------------------------------


def train_prior(setup: Setup, args: argparse.Namespace) -> tuple[Path, dict]:
    """Train the ambient prior on the measurement records; returns the checkpoint and the budget spent."""
    from ambient_science.pipelines.training import train
    from ambient_science.training.config import RunConfig, TrainConfig
    from ambient_science.training.losses import LossConfig

    t0 = time.perf_counter()
    dataset = training_set(setup, args.seed)
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
        out_dir=str(args.out / "train"),
        steps=setup.train_steps,
        batch_size=setup.batch_size,
        lr=1e-3,
        warmup_images=2000,
        ema_halflife_images=2000,
        checkpoint_every=100,
        log_every=10,
        seed=args.seed,
        device=args.device,
        resume="auto" if args.resume else "",
    )
    config = RunConfig(network=network, loss=LossConfig(kind="noisy_ambient"), train=train_cfg)
    t1 = time.perf_counter()
    result = train(config, dataset, family=dataset.family)
    info = {"source": f"trained in this run ({args.out / 'train'})", "steps": result.step,
            "images_seen": result.images_seen, "seconds": round(time.perf_counter() - t1, 1)}  # fmt: skip
    return Path(result.checkpoint), info


# -- evaluation ----------------------------------------------------------------------------------------------


def evaluate_synthetic(priors: dict, setup: Setup, cases: list[TestCase], seed: int) -> tuple[dict, dict]:
    """Every method on every held-out observation: metrics (per image and means) and the images.

    ``priors`` maps a label (``ambient``, ``ambient_this_run``) to a prior; its rows are ``ambient_daps`` and
    ``ambient_dps`` with the label's suffix (``ambient_daps_this_run``, ...).
    """
    from tqdm.auto import tqdm

    psize = next(iter(priors.values())).family.pixel_size
    closures = [closure_observation(c.obs) for c in cases]
    flux = [c.total_flux for c in cases]
    obs = [c.obs for c in cases]
    images: dict[str, list[np.ndarray]] = {}
    samples = {}
    for label, prior in priors.items():
        suffix = label.removeprefix("ambient")
        g = torch.Generator(device=prior.device).manual_seed(seed + 11)  # the same draws for every prior
        daps = reconstruct_closure(
            prior, obs, flux, num_samples=setup.num_samples, generator=g, settings=setup.daps, closures=closures
        )
        images[f"ambient_daps{suffix}"] = list(daps.estimate[:, 0].cpu().numpy())
        images[f"ambient_daps_std{suffix}"] = list(daps.std[:, 0].cpu().numpy())
        dps = reconstruct_closure(
            prior, obs, flux, num_samples=setup.dps_samples, generator=g, settings=setup.dps, closures=closures
        )
        images[f"ambient_dps{suffix}"] = list(dps.estimate[:, 0].cpu().numpy())
        samples[f"ambient_daps{suffix}"], samples[f"ambient_dps{suffix}"] = _sample_stats(daps), _sample_stats(dps)
    images["rml"] = [
        rml_baseline(
            c.obs, setup.npix, psize, c.total_flux, closure=cd, n_rounds=setup.rml_rounds, n_iter=setup.rml_iter
        )
        for c, cd in tqdm(list(zip(cases, closures, strict=True)), desc="rml", unit="obs")
    ]
    images["dirty"] = [dirty_image(c.obs_calibrated, setup.npix, psize, c.total_flux) for c in cases]
    methods = [m for m in images if "_std" not in m]
    per_image = {m: [] for m in methods}
    for m in methods:
        for i, c in enumerate(cases):
            per_image[m].append(
                image_metrics(
                    images[m][i], c.truth, c.obs, psize, blur_fwhm_uas=setup.blur_fwhm_uas, closure=closures[i]
                )
            )
    means = {m: {k: float(np.nanmean([r[k] for r in per_image[m]])) for k in METRIC_KEYS} for m in methods}
    metrics = {"test": means, "blur_fwhm_uas": setup.blur_fwhm_uas, "samples": samples, "per_image": per_image}
    return metrics, images


def _sample_stats(post) -> dict:
    """How many posterior samples fitted the data, and their closure χ² (means over samples and observations)."""
    kept = post.kept.float()
    return {
        "kept_fraction": float(kept.mean()),
        "chi2_cphase_kept": float((post.chi2_cphase * kept).sum() / kept.sum()),
        "chi2_logcamp_kept": float((torch.nan_to_num(post.chi2_logcamp) * kept).sum() / kept.sum()),
        "chi2_cphase_all": float(post.chi2_cphase.mean()),
    }


def image_uvfits(prior, setup: Setup, args: argparse.Namespace, source: str) -> dict:
    """Image a UVFITS file: Stokes I, scan averages, closure quantities, DAPS through the prior."""
    from ambient_science.datasets.fits_image import SkyImage, write_fits_image
    from ambient_science.datasets.uvfits import average, read_uvfits
    from ambient_science.metrics.eht import ring_fit

    raw = read_uvfits(args.uvfits)
    obs = average(raw)  # coherent scan averages
    flux = args.total_flux or zero_baseline_flux(obs)
    if flux is None:
        raise SystemExit("the data have no intra-site baseline: pass --total-flux JY")
    closure = closure_observation(obs)
    psize = prior.family.pixel_size
    g = torch.Generator(device=prior.device).manual_seed(args.seed + 13)
    settings = dataclasses.replace(setup.daps, inference_operator=args.inference_operator)
    post = reconstruct_closure(
        prior, [obs], [flux], num_samples=setup.num_samples, generator=g, settings=settings, closures=[closure]
    )
    image, std = post.estimate[0, 0].cpu().numpy(), post.std[0, 0].cpu().numpy()
    out = args.out / args.uvfits.stem
    out.mkdir(parents=True, exist_ok=True)
    sky = SkyImage(
        image, psize, ra_deg=obs.ra_deg, dec_deg=obs.dec_deg, freq_hz=obs.freq_hz, mjd=obs.mjd, source=obs.source
    )
    write_fits_image(out / "image.fits", sky, overwrite=True)
    ring = ring_fit(image, psize)
    chi2 = image_metrics(image, None, obs, psize, blur_fwhm_uas=setup.blur_fwhm_uas, closure=closure)
    north_uas = (setup.npix / 2 - 0.5 - np.arange(setup.npix)) * (setup.fov_uas / setup.npix)  # per row
    south_fraction = float(image[north_uas < ring.center_y_uas].sum() / image.sum())
    metrics = {
        "uvfits": str(args.uvfits),
        "source": obs.source,
        "n_vis_scan_averaged": len(obs),
        "n_cphase": closure.index.n_cphase,
        "n_logcamp": closure.index.n_logcamp,
        "total_flux_jy": flux,
        **chi2,
        "ring_diameter_uas": ring.diameter_uas,
        "ring_width_uas": ring.width_uas,
        "ring_pa_deg": ring.pa_deg,
        "brightest_half": "south" if 90.0 < ring.pa_deg < 270.0 else "north",
        "south_flux_fraction": south_fraction,
        "num_samples": setup.num_samples,
        "inference_operator": args.inference_operator,
        "samples": _sample_stats(post),
        "prior": source,
    }
    plot_uvfits(image, std, ring, setup, obs.source or args.uvfits.stem, out / "image.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# -- figures -------------------------------------------------------------------------------------------------


def _show(ax, img: np.ndarray, fov_uas: float, title: str, **kw) -> None:
    h = fov_uas / 2  # column 0 is east: RA offset +h on the left (East left, as on the sky)
    ax.imshow(img, extent=(h, -h, -h, h), origin="upper", cmap=kw.pop("cmap", "afmhot"), **kw)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("Δα [µas]", fontsize=7)
    ax.set_ylabel("Δδ [µas]", fontsize=7)
    ax.tick_params(labelsize=6)


def plot_synthetic(images: dict, cases: list[TestCase], setup: Setup, path: Path, rows: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "ambient_daps" not in images:  # no shipped prior: the in-run prior fills the ambient columns
        images = {k.removesuffix("_this_run"): v for k, v in images.items()}
    main = "shipped prior" if "ambient_daps_this_run" in images else "prior"
    cols = [
        ("truth", None),
        ("dirty", "dirty"),
        ("RML", "rml"),
        (f"A-DPS ({main})", "ambient_dps"),
        (f"DAPS ({main})", "ambient_daps"),
        ("DAPS posterior std", "ambient_daps_std"),
    ]
    if "ambient_daps_this_run" in images:
        cols.append(("DAPS (prior of this run)", "ambient_daps_this_run"))
    rows = min(rows, len(cases))
    fig, axes = plt.subplots(rows, len(cols), figsize=(2.1 * len(cols), 2.1 * rows), squeeze=False)
    for r in range(rows):
        vmax = float(cases[r].truth.max())
        for c, (title, key) in enumerate(cols):
            img = cases[r].truth if key is None else images[key][r]
            std = key == "ambient_daps_std"
            _show(
                axes[r, c],
                img,
                setup.fov_uas,
                title,
                vmin=0,
                vmax=None if std else vmax,
                cmap="viridis" if std else "afmhot",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_uvfits(image: np.ndarray, std: np.ndarray, ring, setup: Setup, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    _show(
        axes[0],
        image,
        setup.fov_uas,
        f"{name}: DAPS (d = {ring.diameter_uas:.1f} µas, PA = {ring.pa_deg:.0f}°)",
        vmin=0,
    )
    _show(axes[1], std, setup.fov_uas, "posterior std", vmin=0, cmap="viridis")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------------------


def load_priors(setup: Setup, args: argparse.Namespace) -> tuple[dict, dict, Setup]:
    """The priors to evaluate: ``ambient`` (``--prior``, else the shipped prior when it fits this setup's grid)
    and ``ambient_this_run`` (trained here unless ``--no-training``; with ``--uvfits`` only when no other
    prior is at hand). Returns ``(priors, train_info, setup)``."""
    from ambient_science import pretrained
    from ambient_science.sampling.prior import load_prior

    device = resolve_device(args.device)
    priors, info = {}, {}
    fits = (setup.npix, setup.fov_uas) == (32, 128.0)
    if args.prior is not None:
        priors["ambient"], info["ambient"] = load_prior(args.prior, map_location=device), {"source": str(args.prior)}
    elif not args.train_only_here and fits:
        priors["ambient"], info["ambient"] = pretrained.load(SHIPPED, map_location=device), pretrained.budget(SHIPPED)
    elif not args.train_only_here:
        print(f"shipped prior {SHIPPED} skipped: it was trained at 32 × 32 pixels over 128 µas")
    if not args.no_training and not (args.uvfits is not None and priors):
        checkpoint, info["ambient_this_run"] = train_prior(setup, args)
        priors["ambient_this_run"] = load_prior(checkpoint, map_location=device)
    if not priors:
        raise SystemExit("no prior to image with: drop --no-training, or pass --prior PATH")
    family = next(iter(priors.values())).family
    if family.npix != setup.npix:
        setup = dataclasses.replace(setup, npix=family.npix, fov_uas=family.fov_uas)
    for label, entry in info.items():
        print(f"prior {label}: {entry['source']}", flush=True)
    return priors, info, setup


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup = resolve_setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    priors, train_info, setup = load_priors(setup, args)
    if args.uvfits is not None:
        label = "ambient" if "ambient" in priors else "ambient_this_run"
        metrics = image_uvfits(priors[label], setup, args, train_info[label]["source"])
    else:
        cases = test_set(setup, args.seed)
        metrics, images = evaluate_synthetic(priors, setup, cases, args.seed)
        metrics.update(train=train_info, setup=_plain(setup), seconds=time.perf_counter() - t0)
        plot_synthetic(images, cases, setup, args.out / "black_hole.png")
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _print_table(metrics)
    print(f"done in {time.perf_counter() - t0:.0f} s; results in {args.out}")
    return metrics


def _plain(setup: Setup) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(setup), default=str))


def _print_table(metrics: dict) -> None:
    print(f"{'method':24s}" + "".join(f"{k:>14s}" for k in METRIC_KEYS))
    for m, row in metrics["test"].items():
        print(f"{m:24s}" + "".join(f"{row[k]:14.3f}" for k in METRIC_KEYS))


if __name__ == "__main__":
    main()
