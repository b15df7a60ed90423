"""Memorisation vs corruption, measured: priors trained with equal compute on the same small image set, clean
(``p = 0``, ``A = I``) and ambient (each pixel hidden with probability ``p`` by a FIXED mask per training
image, drawn once like a real corrupted data set), sampled unconditionally and audited
(:mod:`ambient_science.audit`) against the training set and held-out images (docs/design.md §5, §6).

Per level ``p`` (:func:`run`): ``fraction_above`` (share of samples whose NCC with the nearest training image
exceeds ``threshold``: near-copies), ``median_nn_similarity``, ``quality`` (held-out coverage,
:func:`~ambient_science.audit.heldout_coverage`) and ``fidelity`` (median over samples of the best NCC to a
held-out image). References put them on a scale: held-out images' own nearest-training NCC, the coverage of the
training set itself (a perfect copier) and of fresh draws (a perfect sampler).

    >>> from ambient_science.pipelines.memorization import QUICK, run
    >>> metrics = run(QUICK, "runs/memorization_quick")            # doctest: +SKIP
    >>> [(lvl["p"], lvl["fraction_above"]) for lvl in metrics["levels"]]   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ambient_science.audit import (
    heldout_coverage,
    memorization_report,
    nearest_neighbours,
    plot_closest_pairs,
    plot_histogram,
)
from ambient_science.datasets.black_holes import BlackHoleImageConfig, sample_black_hole_images
from ambient_science.datasets.measurements import MeasurementDataset
from ambient_science.family import OperatorFamily
from ambient_science.operators.pixel import CleanFamily, PixelMaskFamily
from ambient_science.pipelines.training import train
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.samplers import initial_noise, sample_heun
from ambient_science.schedules import SIGMA_MAX, edm_sigmas
from ambient_science.training.config import RunConfig, TrainConfig

__all__ = [
    "QUICK",
    "MemorizationConfig",
    "family_for",
    "format_table",
    "generate",
    "make_images",
    "measurement_set",
    "run",
    "save_figures",
    "train_prior",
]


@dataclass(frozen=True)
class MemorizationConfig:
    """Everything one run of the experiment depends on; every prior gets the same compute."""

    levels: tuple[float, ...] = (0.0, 0.4, 0.6, 0.8, 0.9)
    resolution: int = 16
    num_train: int = 64
    num_heldout: int = 256
    num_samples: int = 128
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    model_channels: int = 16
    delta: float = 0.1
    sampler_steps: int = 24
    threshold: float = 0.95
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        if not self.levels or any(not 0.0 <= p < 1.0 for p in self.levels):
            raise ValueError(f"levels must be hide probabilities in [0, 1), got {self.levels}")
        if self.num_train < self.batch_size:
            raise ValueError(f"num_train ({self.num_train}) must be at least one batch ({self.batch_size})")


QUICK = MemorizationConfig(steps=80, num_samples=64, num_heldout=128, sampler_steps=12)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads (0: unchanged), restoring the previous count afterwards."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------


def make_images(n: int, resolution: int, *, generator: torch.Generator) -> Tensor:
    """Synthetic black-hole images (rings, crescents, blobs with turbulent brightness), scaled to [-1, 1].

    Each image is divided by its peak and mapped ``x ← 2x − 1``. The turbulence is raised over the
    generator's default so that distinct images are distinct at the NCC level (held-out images have a
    median nearest-training NCC of about 0.8, none above 0.95).

    Shape: ``(n, 1, resolution, resolution)`` float32.
    """
    law = BlackHoleImageConfig(
        npix=resolution,
        fov_uas=100.0,
        turbulence=(0.5, 1.0),
        correlation_uas=(6.0, 15.0),
        shift_uas=6.0,
    )
    x, _ = sample_black_hole_images(n, law, generator=generator)
    return 2.0 * x / x.amax(dim=(1, 2, 3), keepdim=True) - 1.0


def family_for(p: float, image_shape: Sequence[int], delta: float) -> OperatorFamily:
    """``p = 0``: clean data (``A = I``); else random inpainting hiding each pixel w.p. ``p``."""
    return CleanFamily(image_shape) if p == 0 else PixelMaskFamily(image_shape, p=p, delta=delta)


def measurement_set(images: Tensor, family: OperatorFamily, *, generator: torch.Generator) -> MeasurementDataset:
    """The corrupted training set ``y_i = M_i ⊙ x_i`` with one mask per image, drawn once.

    Shape: ``images (N, C, H, W)``; records hold ``y (C, H, W)`` and ``params["mask"]``.
    """
    A = family.sample(images.shape[0], generator=generator)
    return MeasurementDataset(A(images), A.params(), family)


# ---------------------------------------------------------------------------------------------------
# one prior
# ---------------------------------------------------------------------------------------------------


def train_prior(dataset: MeasurementDataset, cfg: MemorizationConfig, out_dir: Path) -> Prior:
    """Train one prior with the shared budget; returns its EMA network as a :class:`Prior`."""
    if out_dir.exists():  # this script's own run directory: start fresh
        shutil.rmtree(out_dir)
    run = RunConfig(
        network={
            "kind": "unet",
            "model_channels": cfg.model_channels,
            "channel_mult": [1, 2],
            "num_blocks": 1,
            "attn_levels": [],
            "embed_features": 32,
        },
        train=TrainConfig(
            out_dir=str(out_dir),
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            warmup_images=2000,
            ema_halflife_images=5000,
            ema_rampup=0.1,
            checkpoint_every=0,
            log_every=max(1, cfg.steps // 10),
            progress=False,
            device="cpu",
            seed=cfg.seed,
        ),
    )
    result = train(run, dataset, family=dataset.family)
    return Prior(result.ema.module, dataset.family)


def generate(prior: Prior, n: int, resolution: int, num_steps: int, *, generator: torch.Generator) -> Tensor:
    """Unconditional samples: EDM Heun from ``σ_max`` through one fixed ``Ã_inf`` per sample (docs/design.md §6).

    Shape: ``(n, 1, resolution, resolution)``.
    """
    x = initial_noise((n, 1, resolution, resolution), SIGMA_MAX, generator=generator)  # first: same for all priors
    denoiser = prior.denoiser(n, generator=generator)
    with torch.no_grad():
        return sample_heun(denoiser, x, edm_sigmas(num_steps))


# ---------------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------------


def run(cfg: MemorizationConfig, out: str | Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, sample and audit one prior per level; write ``metrics.json`` and the figures under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _torch_threads(cfg.threads):
        g_data = torch.Generator().manual_seed(cfg.seed)
        R = cfg.resolution
        images = make_images(cfg.num_train + cfg.num_heldout + cfg.num_samples, R, generator=g_data)
        training = images[: cfg.num_train]
        heldout = images[cfg.num_train : cfg.num_train + cfg.num_heldout]
        fresh = images[cfg.num_train + cfg.num_heldout :]  # a perfect sampler's output, for reference
        torch.save(training, out / "training.pt")

        ref = memorization_report(heldout, training, cfg.threshold)
        references = {
            "heldout_fraction_above": ref["fraction_above"],
            "heldout_median_nn_similarity": ref["median"],
            "quality_of_training_set": heldout_coverage(heldout, training),
            "quality_of_fresh_draws": heldout_coverage(heldout, fresh),
        }
        log(
            f"reference: held-out images vs training set: {ref['fraction_above']:.3f} above {cfg.threshold}, "
            f"median NCC {ref['median']:.3f}; quality of fresh draws {references['quality_of_fresh_draws']:.3f}"
        )

        levels, samples_by_level = [], {}
        for p in cfg.levels:
            t0 = time.perf_counter()
            family = family_for(p, (1, R, R), cfg.delta)
            dataset = measurement_set(training, family, generator=torch.Generator().manual_seed(cfg.seed + 1))
            prior = train_prior(dataset, cfg, out / "priors" / f"p{p:.2f}")
            t_train = time.perf_counter() - t0
            g = torch.Generator().manual_seed(cfg.seed + 2)  # same noise for every prior
            samples = generate(prior, cfg.num_samples, R, cfg.sampler_steps, generator=g)
            samples_by_level[p] = samples
            torch.save(samples, out / f"samples_p{p:.2f}.pt")
            report = memorization_report(samples, training, cfg.threshold)
            fidelity, _ = nearest_neighbours(samples, heldout)
            level = {
                "p": p,
                "fraction_above": report["fraction_above"],
                "median_nn_similarity": report["median"],
                "quality": heldout_coverage(heldout, samples),
                "fidelity": float(fidelity.median()),
                "distinct_nearest_training_images": len(set(report["index"])),
                "train_seconds": round(t_train, 1),
                "total_seconds": round(time.perf_counter() - t0, 1),
            }
            levels.append(level)
            log(
                f"p={p:.2f}: fraction_above={level['fraction_above']:.3f} "
                f"median_nn_similarity={level['median_nn_similarity']:.3f} quality={level['quality']:.3f} "
                f"(train {t_train:.0f} s, total {level['total_seconds']:.0f} s)"
            )
            plot_closest_pairs(
                samples, training, torch.tensor(report["similarity"]), torch.tensor(report["index"]),
                k=8, path=out / f"closest_pairs_p{p:.2f}.png", title=f"p = {p:g}: closest sample / training pairs",
            )  # fmt: skip

    metrics = {
        "levels": levels,
        "threshold": cfg.threshold,
        "reference": references,
        "quality_definition": "mean over held-out images of the max NCC to any sample (held-out coverage)",
        "config": dataclasses.asdict(cfg),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_figures(out, levels, references, samples_by_level, training, heldout, cfg.threshold)
    return metrics


def save_figures(
    out: Path,
    levels: Sequence[dict[str, Any]],
    references: dict[str, float],
    samples_by_level: dict[float, Tensor],
    training: Tensor,
    heldout: Tensor,
    threshold: float,
) -> None:
    """``tradeoff.png`` (the metrics against ``p``), ``histograms.png`` (nearest-training NCC per prior and of the
    held-out images), ``samples.png`` (training images on top, a row of samples per prior). Needs matplotlib."""
    from matplotlib.figure import Figure

    ps = [lvl["p"] for lvl in levels]
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    ax.plot(ps, [lvl["fraction_above"] for lvl in levels], "o-", color="C3", label=f"fraction NCC > {threshold:g}")
    ax.plot(ps, [lvl["median_nn_similarity"] for lvl in levels], "s-", color="C0", label="median NN similarity")
    ax.plot(ps, [lvl["quality"] for lvl in levels], "^-", color="C2", label="quality (held-out coverage)")
    ax.axhline(references["heldout_median_nn_similarity"], color="C0", ls=":", lw=1, label="held-out median NN sim.")
    ax.axhline(references["quality_of_fresh_draws"], color="C2", ls=":", lw=1, label="quality of fresh draws")
    ax.set_xlabel("hide probability p of the training measurements (0 = clean)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("memorisation vs corruption, equal compute")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)

    series = {f"p = {p:g}": torch.as_tensor(nearest_neighbours(s, training)[0]) for p, s in samples_by_level.items()}
    series["held-out images"] = nearest_neighbours(heldout, training)[0]
    plot_histogram(series, threshold=threshold, path=out / "histograms.png")

    cols = 12
    rows = {"training": training, **{f"p = {p:g}": s for p, s in samples_by_level.items()}}
    fig = Figure(figsize=(0.8 * cols, 0.85 * len(rows)))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(cols):
            ax = axes[r, c]
            if c < len(images):
                ax.imshow(images[c, 0].clamp(-1, 1).numpy(), cmap="afmhot", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("training images (top) and unconditional samples of each prior", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=100)


def format_table(metrics: dict[str, Any]) -> str:
    """The levels of ``metrics`` (from :func:`run`) as a text table: p, fraction above, median NN NCC, quality."""
    lines = [f"{'p':>5} {'fraction_above':>15} {'median_nn_sim':>14} {'quality':>8}"]
    for lvl in metrics["levels"]:
        lines.append(
            f"{lvl['p']:5.2f} {lvl['fraction_above']:15.3f} {lvl['median_nn_similarity']:14.3f} {lvl['quality']:8.3f}"
        )
    return "\n".join(lines)
