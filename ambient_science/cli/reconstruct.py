"""``ambient-science reconstruct``: a checkpoint + a measurement file -> reconstructions (h5, PNG, FITS, metrics).

    ambient-science reconstruct --checkpoint runs/train --measurements test.h5 --out runs/recon \\
        --method dps --num-samples 4 --truth test_targets.h5

Writes ``reconstructions.h5`` (``mean``, ``std``, ``index``; the run's settings in ``attrs``),
``reconstructions.png`` (magnitudes of the first images: zero-filled ``Aᴴy``, mean, std, and the truth
when given), one FITS image per reconstruction for interferometric families (pixel scale in µas, the
source position and date from ``--ra-deg``/``--dec-deg``/``--mjd``, else the file's metadata; without
either the FITS files say so in a ``COMMENT`` and a note is printed), and ``metrics.json`` when ``--truth`` is
a file with a ``target`` dataset (e.g. the targets file of ``ambient-science prepare``). Nothing in ``--out``
is ever overwritten, and every input is checked before any output is written.

The likelihood is Gaussian with the noise standard deviation of each record (per entry when the
operator parameters carry ``sigma``, else the record's ``sigma_n``); ``--sigma`` overrides it.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ambient_science.sampling.reconstruction import METHODS

    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a training run directory")
    parser.add_argument("--measurements", required=True, help="measurement file (ambient_science.datasets)")
    parser.add_argument("--out", required=True, help="output directory (existing outputs are never overwritten)")
    parser.add_argument("--method", choices=METHODS, default="dps")
    parser.add_argument(
        "--num-samples", type=_positive_int, default=None, help="posterior samples per image (default: recommended)"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=None, help="sampler steps (A-DPS) or annealing levels (DAPS)"
    )
    parser.add_argument("--indices", default="all", help="records to reconstruct: 'all', '0:8' or '1,5,7'")
    parser.add_argument("--batch-size", type=_positive_int, default=8)
    parser.add_argument("--sigma", type=_positive_float, default=None, help="noise std of the measurements (overrides)")
    parser.add_argument(
        "--inference-operator",
        choices=("law", "test", "full", "measurement"),
        default=None,
        help="Ã_inf: a draw of the training law, the further-corrupted test operator, everything observed, or "
        "the test operator itself (measurement); default: recommended",
    )
    parser.add_argument(
        "--sigma-max",
        type=_positive_float,
        default=None,
        help="first noise level of the schedule (default: recommended, else 80 for A-DPS, 10 for DAPS)",
    )
    parser.add_argument(
        "--start",
        choices=("noise", "data"),
        default=None,
        help="where the samplers start at --sigma-max: pure noise, or the minimum-norm fit of the data plus noise "
        "(a warm start: use it with a low --sigma-max and fewer --steps); default: recommended, else noise",
    )
    parser.add_argument(
        "--antithetic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw the samples as antithetic pairs (an even --num-samples): a better posterior mean for the same "
        "cost; default: recommended, else off",
    )
    parser.add_argument(
        "--sigma-min",
        type=float,
        default=None,
        help="last nonzero noise level of the schedule (default 0.002, or the prior's sigma_n when higher)",
    )
    parser.add_argument("--num-draws", type=_positive_int, default=None, help="draws of Ã_inf averaged in the denoiser")
    parser.add_argument("--data-consistency", choices=("none", "cg", "replace"), default=None)
    parser.add_argument(
        "--safe-mode",
        choices=("auto", "shrink", "report", "off"),
        default="auto",
        help="fit test of the prior on the data; auto: the images that fire get the safe reconstruction",
    )
    parser.add_argument(
        "--fallback",
        choices=("l1", "shrink"),
        default="l1",
        help="safe reconstruction (MRI): L1-wavelet (the prior card's lambda) or the shrink toward zero-filling",
    )
    parser.add_argument("--truth", default=None, help="h5 file with a 'target' dataset (N, H, W) for metrics")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--ra-deg", type=float, default=None, help="source RA for FITS outputs (interferometry)")
    parser.add_argument("--dec-deg", type=float, default=None, help="source Dec for FITS outputs")
    parser.add_argument("--mjd", type=int, default=None, help="observing day (MJD) for FITS outputs")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


OUTPUTS = ("reconstructions.h5", "reconstructions.png", "metrics.json")


def parse_indices(spec: str, n: int) -> list[int]:
    """``"all"``, ``"a:b"`` or ``"i,j,k"`` -> record indices, checked against ``n`` records."""
    if spec == "all":
        return list(range(n))
    try:
        if ":" in spec:
            start, _, stop = spec.partition(":")
            idx = list(range(int(start or 0), int(stop) if stop else n))
        else:
            idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--indices {spec!r}: expected 'all', 'a:b' or 'i,j,k' (record numbers)") from None
    bad = [i for i in idx if not 0 <= i < n]
    if bad or not idx:
        raise ValueError(f"--indices {spec!r} selects {bad or 'nothing'}; the file has {n} records (0..{n - 1})")
    return idx


def run(args: argparse.Namespace) -> int:
    import h5py
    from torch.utils.data import DataLoader, Subset

    from ambient_science.datasets.measurements import MeasurementFile
    from ambient_science.pipelines.fit_calibration import noise_sigma
    from ambient_science.sampling.likelihoods import GaussianLikelihood
    from ambient_science.sampling.prior import load_prior
    from ambient_science.sampling.reconstruction import reconstruct
    from ambient_science.training.distributed import resolve_device

    out = Path(args.out)
    target_file = out / "reconstructions.h5"
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; expected an output directory")
    existing = [p.name for p in (out / name for name in OUTPUTS) if p.exists()]
    existing += sorted(p.name for p in out.glob("reconstruction_*.fits")) if out.is_dir() else []
    if existing:
        raise FileExistsError(f"{out} already holds {existing}; choose another --out (outputs are never overwritten)")
    device = resolve_device(args.device)
    data = MeasurementFile(args.measurements)
    prior = load_prior(args.checkpoint, map_location=device)
    _check_fits(prior.family, data.family)
    if prior.family.config() != data.family_config:
        print(f"note: measurement family {data.family_config} differs from the prior's {prior.family.config()}")
    indices = parse_indices(args.indices, len(data))
    truth = _read_truth(args.truth, indices) if args.truth else None  # checked before any output is written
    generator = torch.Generator().manual_seed(args.seed)
    means, stds, zero_filled, fits = [], [], [], []
    warnings.filterwarnings("ignore", message="the prior does not fit")  # one summary line below instead
    loader = DataLoader(Subset(data, indices), batch_size=args.batch_size)
    for batch in loader:
        A = data.family.make({k: v.to(device) for k, v in batch["params"].items()})
        y = batch["y"].to(device)
        sigma = noise_sigma(batch, args.sigma)
        sigma = sigma.to(device) if isinstance(sigma, torch.Tensor) else sigma
        lik = GaussianLikelihood(A, y, sigma)
        post = reconstruct(
            prior,
            lik,
            method=args.method,
            generator=generator,
            num_samples=args.num_samples,
            steps=args.steps,
            inference_operator=args.inference_operator,
            sigma_max=args.sigma_max,
            sigma_min=args.sigma_min,
            start=args.start,
            antithetic=args.antithetic,
            num_draws=args.num_draws,
            data_consistency=args.data_consistency,
            safe_mode=args.safe_mode,
            fallback=_fallback(prior, A, args.fallback),
            progress=not args.no_progress,
        )
        if post.fit is not None:
            fits.append(post.fit)
        means.append(post.mean.cpu())
        stds.append(post.std.cpu())
        zero_filled.append(A.H(y).detach().cpu())
    mean, std, zf = torch.cat(means), torch.cat(stds), torch.cat(zero_filled)

    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    with h5py.File(target_file.with_name(target_file.name + ".tmp"), "w") as f:
        f.create_dataset("mean", data=mean.numpy())
        f.create_dataset("std", data=std.numpy())
        f.create_dataset("index", data=indices)
        f.attrs["settings"] = json.dumps(settings)
        f.attrs["family"] = json.dumps(prior.family.config())
        if fits:
            f.create_dataset("fit_score", data=torch.cat([r.score for r in fits]).numpy())
            f.create_dataset("fit_fires", data=torch.cat([r.fires for r in fits]).numpy())
    target_file.with_name(target_file.name + ".tmp").replace(target_file)
    if means and post.antithetic and post.num_samples == 2:
        print(
            "note: the std comes from one antithetic pair of samples: the part of the spread that is odd in the "
            "sampler's noise only (a lower bound); --num-samples 8 (four pairs) estimates all of it"
        )
    fit_summary = _fit_summary(fits, indices)
    if fit_summary is not None:
        print(fit_summary["line"])

    _save_figure(out / "reconstructions.png", zf, mean, std, truth)
    if prior.family.name == "interferometer":
        _save_fits(out, mean, prior.family, {**data.metadata, **_position(args)})
    if truth is not None:
        metrics = _metrics(truth, mean)
        if fit_summary is not None:
            metrics["fit"] = {k: v for k, v in fit_summary.items() if k != "line"}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps(metrics, indent=2))
    print(f"wrote {target_file}")
    return 0


def _fallback(prior, A, kind: str):
    """The safe reconstruction of images that fire: L1-wavelet for Cartesian MRI (λ from the prior's ``"fit"``
    entry at the nearest acceleration, else 3e-4), or ``None`` (the shrink toward zero-filling)."""
    if kind != "l1" or prior.family.name != "cartesian_mri":
        return None
    from ambient_science.operators.mri_recon import l1_wavelet
    from ambient_science.pipelines.mri_eval import l1_fallback

    return l1_fallback(prior, A) or (lambda likelihood: l1_wavelet(likelihood.A, likelihood.y, lam=3e-4))


def _fit_summary(fits: list, indices: list[int]) -> dict[str, Any] | None:
    """One line and the numbers of the fit test over all records (``None`` when it did not run)."""
    if not fits:
        return None
    score = torch.cat([r.score for r in fits])
    fires = torch.cat([r.fires for r in fits])
    threshold = fits[0].threshold
    fired = [i for i, f in zip(indices, fires.tolist()) if f]
    line = (
        f"fit test: score {float(score.min()):.3f}-{float(score.max()):.3f} (threshold "
        f"{'none calibrated' if threshold is None else f'{threshold:.3f}'}); "
        + (f"the prior does NOT fit {len(fired)} of {len(indices)} records {fired[:20]}: safe reconstruction used"
           if fired else "no record flagged")
    )  # fmt: skip
    return {"line": line, "score": [round(float(s), 4) for s in score], "fires": fires.tolist(),
            "threshold": threshold, "fired_fraction": float(fires.float().mean())}  # fmt: skip


def _check_fits(prior_family, data_family) -> None:
    """The prior must be of the measurements' family and image shape (parameters such as R may differ)."""
    if prior_family.name != data_family.name or tuple(prior_family.image_shape) != tuple(data_family.image_shape):
        raise ValueError(
            f"the prior ({prior_family.name}, images {tuple(prior_family.image_shape)}) does not fit the "
            f"measurements ({data_family.name}, images {tuple(data_family.image_shape)}); expected the same family "
            "and image shape"
        )


def _position(args: argparse.Namespace) -> dict[str, Any]:
    given = {"ra_deg": args.ra_deg, "dec_deg": args.dec_deg, "mjd": args.mjd}
    return {k: v for k, v in given.items() if v is not None}


def _read_truth(path: str, indices: list[int]) -> torch.Tensor:
    import h5py
    import numpy as np

    if not Path(path).is_file():
        raise FileNotFoundError(f"--truth {path} does not exist (or is not a file); expected an h5 file with 'target'")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"--truth {path} is not a readable HDF5 file (truncated or corrupt?)") from err
    with f:
        if "target" not in f:
            raise KeyError(f"{path}: no 'target' dataset; expected target images of shape (N, H, W)")
        if f["target"].ndim not in (3, 4) or f["target"].shape[0] <= max(indices):
            raise ValueError(
                f"{path}: 'target' has shape {f['target'].shape}; expected (N, H, W) with N > {max(indices)}"
            )
        return torch.from_numpy(np.asarray(f["target"][sorted(indices)]))[np.argsort(np.argsort(indices))]


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, W)``: the magnitude (root sum of squares over channels)."""
    return x.abs().pow(2).sum(dim=1).sqrt() if x.ndim == 4 else x.abs()


def _metrics(truth: torch.Tensor, mean: torch.Tensor) -> dict[str, float]:
    from ambient_science.metrics.mri import evaluate_volume

    return evaluate_volume(_magnitude(truth).float(), _magnitude(mean).float())


def _save_figure(path: Path, zero_filled, mean, std, truth, max_rows: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [("zero-filled Aᴴy", zero_filled), ("posterior mean", mean), ("posterior std", std)]
    if truth is not None:
        columns.insert(0, ("truth", truth))
    rows = min(max_rows, mean.shape[0])
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.6 * len(columns), 2.6 * rows), squeeze=False)
    for r in range(rows):
        vmax = float(_magnitude(mean[r : r + 1]).max())
        for c, (title, images) in enumerate(columns):
            img = _magnitude(images[r : r + 1])[0]
            ax = axes[r][c]
            ax.imshow(
                img.numpy(), cmap="magma" if "std" in title else "gray", vmin=0, vmax=None if "std" in title else vmax
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save_fits(out: Path, mean: torch.Tensor, family, metadata: dict[str, Any]) -> None:
    from ambient_science.datasets.fits_image import RAD_PER_UAS, SkyImage, write_fits_image

    config = family.config()
    npix = int(config["npix"])
    psize = float(config["fov_uas"]) / npix * RAD_PER_UAS
    unknown = [k for k in ("ra_deg", "dec_deg", "mjd") if metadata.get(k) is None]
    if unknown:
        print(
            f"note: no {' / '.join(unknown)} in the measurement file or the arguments (--ra-deg, --dec-deg, --mjd): "
            "the FITS images carry RA = Dec = 0 and MJD 51544 as placeholders, marked UNKNOWN in their OBJECT"
        )
    for i, image in enumerate(mean[:, 0].numpy()):
        sky = SkyImage(
            image=image,
            psize=psize,
            ra_deg=float(metadata.get("ra_deg") or 0.0),
            dec_deg=float(metadata.get("dec_deg") or 0.0),
            freq_hz=float(metadata.get("freq_hz", config.get("freq_ghz", 230.0) * 1e9)),
            mjd=int(metadata.get("mjd") or 51544),
            source=str(metadata.get("source", "")) + (" (position/date UNKNOWN)" if unknown else ""),
        )
        write_fits_image(out / f"reconstruction_{i:04d}.fits", sky)
