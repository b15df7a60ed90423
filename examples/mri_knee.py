"""A diffusion prior trained from undersampled k-space only, then used to reconstruct new scans.

What it shows (DESIGN.md §5–§8): knee MRI volumes are undersampled at R = 4 (random phase-encode
columns, 8 % fully sampled centre) and turned into a measurement file that holds *only* that
undersampled k-space; an ambient diffusion prior is trained on it (it never sees a fully sampled
image); held-out slices are then reconstructed at R = 4 and R = 8 with the prior (A-DPS posterior mean
of several samples with its per-pixel std, and the one-step estimate) and compared with zero-filling
and L1-wavelet compressed sensing (and CG-SENSE for multi-coil data), with fastMRI's metrics.

Two priors by default, both trained from R = 4 undersampled k-space only:

* the **shipped** prior ``mri-knee-synthetic-r4`` (``ambient_science.pretrained``; trained by this library for
  much longer than a demo allows, on other synthetic volumes; its model card says how long) -> rows
  ``ambient_one_step`` and ``ambient_dps``;
* a short prior trained **in this run** (the trainer demonstration, with its progress bar) -> rows
  ``ambient_one_step_this_run`` and ``ambient_dps_this_run``.

A-DPS calls the ambient network through ``Ã_inf`` = everything observed (``--inference-operator full``):
the network was trained to denoise what a further-corrupted mask kept and to fill in the rest; given a mask
of ones it denoises every column (an extrapolation beyond its training law, in which something was always
hidden). Through a training-law mask (``law``) or a further corruption of the test mask (``test``) it sees
a fifth of k-space at every step. Chosen on held-out VALIDATION volumes (``--seed 7``: volumes 10007-10010,
not the test volumes), R = 4, A-DPS mean of 4, the shipped prior: ``python examples/mri_knee.py --no-training
--seed 7 --test-accelerations 4 --inference-operator law`` gives 21.82 dB, ``... full`` 22.99 dB (zero-filled
16.76 dB).

Run (offline, built-in SYNTHETIC knee-like phantoms, a 2-core CPU, under 15 minutes)::

    python examples/mri_knee.py

Real fastMRI data (single- or multi-coil ``.h5`` volumes; the last 20 % of the files are held out), on
a GPU node with the full-resolution preset (no shipped prior fits real data: only the in-run prior)::

    python examples/mri_knee.py --data /data/fastmri/knee_singlecoil_train --preset gpu --device cuda
    torchrun --nproc_per_node=8 examples/mri_knee.py --data ... --preset gpu   # multi-GPU training

Options: ``--out`` (default ``runs/mri_knee``), ``--data DIR``, ``--device auto|cpu|cuda``, ``--preset
cpu|gpu``, ``--acceleration`` (training R, default 4), ``--test-accelerations`` (default 4 8),
``--train-steps``, ``--resume`` (continue the training run in ``--out``), ``--prior PATH`` (any checkpoint or
exported prior, in place of the shipped one), ``--train-only-here`` (no shipped prior), ``--no-training``
(evaluate the shipped / ``--prior`` prior only), ``--with-clean-baseline`` (also a prior trained on fully
sampled images: the shipped ``mri-knee-synthetic-clean``, rows ``clean_*``, or one trained here with the
in-run budget, rows ``clean_*_this_run``), ``--quick`` (a tiny configuration for tests), ``--seed``.

Writes to ``--out``: ``metrics.json`` (per R and method: PSNR, SSIM, NMSE; per prior under ``train``: where it
came from, steps, images seen, seconds), ``reconstructions.png`` (truth, zero-filled, L1-wavelet, the
shipped prior's one-step and A-DPS mean and std, the in-run prior's A-DPS mean, per R), the training run
(checkpoints, ``metrics.jsonl``), and the prepared measurement files (``data/``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ambient_science import pretrained
from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.prepare import load_targets, prepare_fastmri
from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.metrics.mri import evaluate_volume
from ambient_science.operators.mri_recon import cg_sense, l1_wavelet
from ambient_science.pipelines.training import train
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior, load_prior
from ambient_science.sampling.reconstruction import reconstruct
from ambient_science.training.config import DataConfig, RunConfig, TrainConfig
from ambient_science.training.distributed import resolve_device
from ambient_science.training.losses import LossConfig

CENTER_FRACTION = {4: 0.08, 8: 0.04}  # fastMRI's pairs
RANK = int(os.environ.get("RANK", "0"))  # set by torchrun


@dataclass(frozen=True)
class Preset:
    """Sizes of one run: data, network, training and sampling budgets."""

    train_volumes: int
    test_volumes: int
    slices: int
    recon_size: int  # synthetic volumes' recon size
    resolution: int | None  # training grid (None: the recon size)
    test_slices: int  # held-out slices reconstructed (the middle ones of each test volume)
    network: dict[str, Any] = field(default_factory=dict)
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    ema_halflife_images: float = 10_000
    warmup_images: int = 2_000
    dps_samples: int = 4
    dps_steps: int = 48
    one_step_draws: int = 8
    l1_lams: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)


PRESETS = {
    "cpu": Preset(
        train_volumes=48, test_volumes=4, slices=12, recon_size=128, resolution=64, test_slices=4,
        network={"model_channels": 16, "channel_mult": [1, 2, 2], "num_blocks": 1, "attn_levels": [],
                 "mid_attention": True},
        steps=800, batch_size=16, ema_halflife_images=5_000,
    ),
    "gpu": Preset(
        train_volumes=0, test_volumes=0, slices=0, recon_size=320, resolution=None, test_slices=8,
        network={"model_channels": 128, "channel_mult": [1, 1, 2, 2, 4], "num_blocks": 2, "attn_levels": [3]},
        steps=100_000, batch_size=32, lr=2e-4, ema_halflife_images=500_000, warmup_images=100_000,
        dps_samples=8, dps_steps=100,
    ),
    "quick": Preset(
        train_volumes=2, test_volumes=1, slices=2, recon_size=32, resolution=16, test_slices=2,
        network={"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": [],
                 "mid_attention": False},
        steps=3, batch_size=4, dps_samples=2, dps_steps=4, one_step_draws=2, l1_lams=(1e-3,),
    ),
}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/mri_knee")
    p.add_argument("--data", default=None, help="directory of fastMRI .h5 volumes (default: synthetic)")
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny configuration (= --preset quick)")
    p.add_argument("--acceleration", type=int, default=4, help="acceleration of the training data")
    p.add_argument("--test-accelerations", type=int, nargs="+", default=[4, 8])
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--prior", default=None, help="checkpoint or exported prior used in place of the shipped one")
    p.add_argument("--train-only-here", action="store_true", help="skip the shipped prior")
    p.add_argument("--no-training", action="store_true", help="no in-run training (shipped / --prior prior only)")
    p.add_argument("--with-clean-baseline", action="store_true")
    p.add_argument(
        "--inference-operator", choices=("full", "law", "test"), default="full",
        help="Ã_inf of A-DPS (default full: the network sees all of x_σ; see the module docstring)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.preset = "quick"
    if args.no_training and args.train_only_here:
        p.error("--no-training with --train-only-here leaves no prior to evaluate")
    return args


# -- data ---------------------------------------------------------------------------------------------
def raw_volumes(args, preset: Preset, out: Path) -> tuple[list[Path], list[Path]]:
    """(train files, test files): the user's fastMRI files (last 20 % held out) or cached synthetic ones."""
    if args.data:
        files = sorted(Path(args.data).glob("*.h5"))
        if len(files) < 2:
            raise FileNotFoundError(f"--data {args.data}: expected at least 2 fastMRI .h5 volumes, found {len(files)}")
        n_test = max(1, len(files) // 5)
        return files[:-n_test], files[-n_test:]
    root = out / "data" / "synthetic"
    sizes = {"recon_size": (preset.recon_size, preset.recon_size), "num_slices": preset.slices}
    splits = {"train": (0 if args.no_training else preset.train_volumes, args.seed),
              "test": (preset.test_volumes, 10_000 + args.seed)}  # fmt: skip
    result = []
    for name, (count, seed) in splits.items():
        if count == 0:
            result.append([])
            continue
        folder = root / f"{name}-{preset.recon_size}px-{preset.slices}sl"
        files = sorted(folder.glob("*.h5"))
        if len(files) != count:  # build once, then reuse from the cache
            print(f"writing {count} SYNTHETIC knee volumes to {folder}")
            files = write_synthetic_knee_dataset(folder, count, seed=seed, overwrite=True, **sizes)
        result.append(files)
    return result[0], result[1]


def prepared(files: list[Path], path: Path, *, acceleration: int, preset: Preset, seed: int, targets: bool) -> Path:
    """The measurement file of ``files`` at ``acceleration`` (built once by rank 0; rebuilt when missing)."""
    if RANK != 0:  # torchrun: the other ranks wait for rank 0's file
        while not path.exists():
            time.sleep(1.0)
    elif not path.exists():
        prepare_fastmri(
            files,
            path,
            acceleration=acceleration,
            center_fraction=CENTER_FRACTION.get(acceleration, 0.08),
            resolution=preset.resolution,
            seed=seed,
            sigma_n="auto",
            targets_output=path.with_name(path.stem + "_targets.h5") if targets else None,
        )
    return path


# -- training ------------------------------------------------------------------------------------------
def train_prior(
    data: Path, run_dir: Path, args, preset: Preset, device: torch.device, *, clean: bool = False
) -> tuple[Prior, dict]:
    """Train on ``data`` (``clean``: no further corruption, so the loss is EDM's); the prior and its budget."""
    steps = args.train_steps or preset.steps
    config = RunConfig(
        data=DataConfig(path=str(data)),
        family={"drop_fraction": 0.0} if clean else {},
        network=dict(preset.network),
        loss=LossConfig(kind="auto"),
        train=TrainConfig(
            out_dir=str(run_dir),
            steps=steps,
            batch_size=preset.batch_size,
            lr=preset.lr,
            warmup_images=preset.warmup_images,
            ema_halflife_images=preset.ema_halflife_images,
            checkpoint_every=max(steps // 4, 1),
            sample_every=0,
            seed=args.seed,
            device=str(device),
            progress=not args.no_progress,
            resume="auto" if args.resume else "",
        ),
    )
    t0 = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - t0
    prior = load_prior(result.checkpoint, map_location=device)
    info = {"source": f"trained in this run ({run_dir})", "steps": result.step, "images_seen": result.images_seen}
    return prior, {**info, "seconds": round(seconds, 1)}


def shipped_prior(name: str, args, preset: Preset, device: torch.device) -> tuple[Prior, dict] | None:
    """The shipped prior ``name`` when it fits this run (built-in synthetic data on its grid), else None."""
    if args.data is not None or args.preset != "cpu":
        print(f"shipped prior {name} skipped: it was trained on the built-in synthetic data at the cpu preset's grid")
        return None
    return pretrained.load(name, map_location=device), pretrained.budget(name)


# -- evaluation ------------------------------------------------------------------------------------------
def held_out_batch(path: Path, preset: Preset, device: torch.device):
    """The middle ``test_slices`` slices of each held-out volume: operator, k-space, noise std, truth, volume ids."""
    data = MeasurementFile(path)
    targets = load_targets(path.with_name(path.stem + "_targets.h5"))
    index, volume = [], []
    start = 0
    for v, n in enumerate(targets["slices_per_file"]):
        k = min(preset.test_slices, n)
        first = start + (n - k) // 2
        index += list(range(first, first + k))
        volume += [v] * k
        start += n
    records = [data[i] for i in index]
    params = {k: torch.stack([r["params"][k] for r in records]).to(device) for k in data.param_names}
    A = data.family.make(params)
    y = torch.stack([r["y"] for r in records]).to(device)
    sigma = torch.stack([r["sigma_n"] for r in records]).clamp_min(1e-4).to(device)
    return A, y, sigma.reshape(-1, 1, 1, 1), targets["target"][index], torch.tensor(volume)


def volume_metrics(truth: torch.Tensor, estimate: torch.Tensor, volume: torch.Tensor) -> dict[str, float]:
    """fastMRI's metrics per volume (magnitudes), averaged over volumes."""
    mag = estimate.abs().pow(2).sum(dim=1).sqrt().float().cpu() if estimate.ndim == 4 else estimate
    per_volume = [evaluate_volume(truth[volume == v], mag[volume == v]) for v in volume.unique()]
    return {k: round(sum(m[k] for m in per_volume) / len(per_volume), 4) for k in per_volume[0]}


def evaluate(priors: dict[str, Prior], test_file: Path, preset: Preset, args, device) -> tuple[dict, dict]:
    """Every method at one acceleration: the baselines once, then each prior (label ``ambient``, ``clean``, or
    either with ``_this_run``: rows ``<prefix>_one_step<suffix>`` and ``<prefix>_dps<suffix>``)."""
    A, y, sigma, truth, volume = held_out_batch(test_file, preset, device)
    lik = GaussianLikelihood(A, y, sigma)
    images = {"truth": truth, "zero_filled": A.H(y)}
    if A.coil_maps is not None:
        images["cg_sense"] = cg_sense(A, y, lam=1e-2)
    # L1-wavelet with its λ picked on these test slices: the baseline at its best (conservative for the prior)
    l1 = {lam: l1_wavelet(A, y, lam=lam) for lam in preset.l1_lams}
    best = max(l1, key=lambda lam: volume_metrics(truth, l1[lam], volume)["psnr"])
    images["l1_wavelet"] = l1[best]
    for label, prior in priors.items():
        prefix = label.removesuffix("_this_run")
        suffix = label[len(prefix) :]
        generator = torch.Generator().manual_seed(args.seed)  # the same draws for every prior
        post_one = reconstruct(prior, lik, method="one_step", generator=generator, num_draws=preset.one_step_draws)
        images[f"{prefix}_one_step{suffix}"] = post_one.mean
        post = reconstruct(
            prior, lik, method="dps", generator=generator, num_samples=preset.dps_samples, steps=preset.dps_steps,
            inference_operator=args.inference_operator, data_consistency="cg", progress=not args.no_progress,
        )  # fmt: skip
        images[f"{prefix}_dps{suffix}"], images[f"{prefix}_dps_std{suffix}"] = post.mean, post.std
    metrics = {k: volume_metrics(truth, v, volume) for k, v in images.items() if k != "truth" and "_std" not in k}
    metrics["l1_wavelet"]["lam"] = best
    return metrics, images


def save_figure(path: Path, images_per_r: dict[int, dict[str, torch.Tensor]], source: str = "shipped prior") -> None:
    """Truth, baselines and the ``ambient`` prior's columns (``source`` names it), then this run's A-DPS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(images_per_r.values()))
    main = source if "ambient_dps" in first else "prior of this run"
    if "ambient_dps" not in first:  # no shipped / --prior prior: the in-run prior fills the ambient columns
        images_per_r = {R: {k.removesuffix("_this_run"): v for k, v in im.items()} for R, im in images_per_r.items()}
    columns = {
        "truth": "truth",
        "zero_filled": "zero-filled",
        "l1_wavelet": "L1-wavelet",
        "ambient_one_step": f"ambient one-step\n({main})",
        "ambient_dps": f"ambient A-DPS mean\n({main})",
        "ambient_dps_std": f"A-DPS std\n({main})",
        "ambient_dps_this_run": "ambient A-DPS mean\n(prior of this run)",
        "clean_dps": "clean-trained A-DPS\n(shipped baseline)",
    }
    first = next(iter(images_per_r.values()))
    cols = [k for k in columns if k in first]
    titles = [columns[k] for k in cols]
    fig, axes = plt.subplots(len(images_per_r), len(cols), figsize=(2.3 * len(cols), 2.5 * len(images_per_r)))
    axes = axes.reshape(len(images_per_r), len(cols))
    for row, (R, images) in enumerate(images_per_r.items()):
        truth = images["truth"][0]
        for c, (key, title) in enumerate(zip(cols, titles)):
            img = images[key][0]
            img = img.abs().pow(2).sum(dim=0).sqrt() if img.ndim == 3 else img.abs()
            vmax = float(truth.max()) * (0.25 if key.endswith("std") else 1.0)
            axes[row, c].imshow(img.cpu().numpy(), cmap="magma" if key.endswith("std") else "gray", vmin=0, vmax=vmax)
            axes[row, c].set_xticks([])
            axes[row, c].set_yticks([])
            if row == 0:
                axes[row, c].set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(f"R = {R}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(test: dict[str, dict[str, dict[str, float]]]) -> None:
    methods = list(next(iter(test.values())))
    print(f"\n{'method':28s}" + "".join(f"   R={R}: PSNR  SSIM   NMSE" for R in test))
    for m in methods:
        row = "".join(
            f"       {test[R][m]['psnr']:6.2f} {test[R][m]['ssim']:.3f} {test[R][m]['nmse']:.4f}" for R in test
        )
        print(f"{m:28s}{row}")


def main(argv=None) -> int:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_files, test_files = raw_volumes(args, preset, out)
    data_dir = out / "data"
    res = preset.resolution or "full"
    train_file = None
    if not args.no_training:
        train_file = prepared(train_files, data_dir / f"train_r{args.acceleration}_{res}.h5",
                              acceleration=args.acceleration, preset=preset, seed=args.seed, targets=False)  # fmt: skip
    priors: dict[str, Prior] = {}
    train_info: dict[str, dict] = {}
    if not args.no_training:  # every torchrun rank trains (DDP); only rank 0 evaluates
        priors["ambient_this_run"], train_info["ambient_this_run"] = train_prior(
            train_file, out / "train", args, preset, device
        )
    if args.prior:
        priors["ambient"] = load_prior(args.prior, map_location=device)
        train_info["ambient"] = {"source": str(args.prior)}
    elif not args.train_only_here and (shipped := shipped_prior("mri-knee-synthetic-r4", args, preset, device)):
        priors["ambient"], train_info["ambient"] = shipped
    if args.with_clean_baseline:  # fully sampled images, same network and budget
        shipped = None if args.train_only_here else shipped_prior("mri-knee-synthetic-clean", args, preset, device)
        if shipped is not None:
            priors["clean"], train_info["clean"] = shipped
        if not args.no_training:
            clean_file = prepared(train_files, data_dir / f"train_r1_{res}.h5", acceleration=1, preset=preset,
                                  seed=args.seed, targets=False)  # fmt: skip
            priors["clean_this_run"], train_info["clean_this_run"] = train_prior(
                clean_file, out / "train_clean", args, preset, device, clean=True
            )
    if not priors:
        raise SystemExit("no prior to evaluate: drop --no-training, or pass --prior PATH")
    if RANK != 0:
        return 0

    test, figure = {}, {}
    for R in args.test_accelerations:
        test_file = prepared(test_files, data_dir / f"test_r{R}_{res}.h5", acceleration=R, preset=preset,
                             seed=args.seed + 1, targets=True)  # fmt: skip
        test[str(R)], figure[R] = evaluate(priors, test_file, preset, args, device)
    metrics = {
        "train": {
            "acceleration": args.acceleration,
            "slices": None if train_file is None else len(MeasurementFile(train_file)),
            "device": str(device),
            "synthetic": args.data is None,
            "dps_inference_operator": args.inference_operator,
            **train_info,  # per prior label: source, steps, images_seen, seconds
        },
        "test": test,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_figure(out / "reconstructions.png", figure, "shipped prior" if args.prior is None else "--prior")
    print_table(test)
    print(f"\nwrote {out / 'metrics.json'} and {out / 'reconstructions.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
