"""``ambient-science prepare``: raw data or a generator -> a measurement file that holds only corrupted data.

    ambient-science prepare synthetic-knee data/knee --volumes 8 --recon-size 128
    ambient-science prepare fastmri data/knee -o data/knee_r4.h5 --acceleration 4 --resolution 64
    ambient-science prepare black-holes data/bh.h5 --records 8192 --npix 32
    ambient-science prepare images my_scans/ -o data/mine_r4.h5 --acceleration 4 --resolution 64
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import h5py

from ambient_science.datasets.images import prepare_images
from ambient_science.datasets.measurements import save_measurements
from ambient_science.datasets.prepare import prepare_fastmri
from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.operators.mri_masks import MASK_KINDS
from ambient_science.pipelines.eht import (
    BROAD_ARRAYS,
    COVERAGE_LAW,
    TRAIN_FLUX_JY,
    TRAIN_GAINS,
    broad_training_records,
    training_records,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``prepare fastmri ...``, ``prepare synthetic-knee ...``, ``prepare images ...``, ``prepare black-holes ...``."""
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    p = sub.add_parser("fastmri", help="fastMRI volumes -> an undersampled measurement file")
    p.add_argument("inputs", nargs="+", type=Path, help="fastMRI .h5 files or directories")
    p.add_argument("-o", "--output", type=Path, required=True, help="measurement file to write")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--center-fraction", type=float, default=0.08)
    p.add_argument("--mask", dest="mask_kind", default="random", choices=list(MASK_KINDS))
    p.add_argument("--resolution", type=int, default=None, help="training grid side (default: the recon size)")
    p.add_argument("--recon-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--drop-fraction", type=float, default=0.2, help="further corruption at training time")
    p.add_argument("--mask-per", choices=["slice", "volume"], default="slice")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sigma-n",
        type=_sigma_arg,
        default="auto",
        help="noise std (per real component) of the normalised k-space, or 'auto': from the file's "
        "attrs['noise_std'], else estimated from the k-space (the background of its coil images)",
    )
    p.add_argument("--targets", type=Path, default=None, help="also write fully sampled references (evaluation)")
    p.add_argument("--device", default=None, help="device for ESPIRiT (multi-coil), e.g. cuda")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")
    p.set_defaults(_prepare=_run_fastmri)

    q = sub.add_parser("synthetic-knee", help="write SYNTHETIC knee volumes in the fastMRI layout")
    q.add_argument("output", type=Path, help="directory to write synthetic_knee_<seed>.h5 into")
    q.add_argument("--volumes", type=int, default=8)
    q.add_argument("--slices", type=int, default=8)
    q.add_argument("--recon-size", type=int, default=128)
    q.add_argument("--coils", type=int, default=None, help="multi-coil (birdcage) with this many coils")
    q.add_argument("--noise", type=float, default=0.01, help="k-space noise std relative to the image maximum")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--overwrite", action="store_true")
    q.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")
    q.set_defaults(_prepare=_run_synthetic)

    m = sub.add_parser("images", help="your magnitude images (NIfTI, .npy/.npz, PNG folders) -> a measurement file")
    m.add_argument("inputs", nargs="+", type=Path, help="image files or folders (datasets/images.py lists formats)")
    m.add_argument("-o", "--output", type=Path, required=True, help="measurement file of the training volumes")
    m.add_argument("--acceleration", type=float, default=4.0)
    m.add_argument("--center-fraction", type=float, default=None, help="default 0.08 for R <= 4, else 0.04")
    m.add_argument("--mask", dest="mask_kind", default="random", choices=list(MASK_KINDS))
    m.add_argument("--resolution", type=int, default=None, help="resize slices to this side (default: kept)")
    m.add_argument("--masks-per-slice", type=int, default=1, help="masks drawn per training slice")
    m.add_argument("--holdout", type=float, default=0.2, help="fraction of volumes held out (OUT_heldout.h5)")
    m.add_argument("--drop-fraction", type=float, default=0.2, help="further corruption at training time")
    m.add_argument("--noise", type=float, default=0.01, help="k-space noise std relative to the image maximum")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")
    m.set_defaults(_prepare=_run_images)

    b = sub.add_parser(
        "black-holes", help="SYNTHETIC black-hole observations -> a measurement file of visibilities only"
    )
    b.add_argument("output", type=Path, help="measurement file to write")
    b.add_argument("--records", type=int, default=4096, help="observations (one random coverage each)")
    b.add_argument("--npix", type=int, default=32, help="image side in pixels")
    b.add_argument("--fov-uas", type=float, default=128.0, help="field of view in µas")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--generator", choices=["rings", "broad"], default="rings",
                   help="rings: the 32 px prior's rings/crescents (EHT 2017); broad: datasets.black_hole_families "
                        "(EHT 2017 and eht2025 coverages, records normalised to the training flux)")  # fmt: skip
    b.add_argument("--split", default="both", choices=["both", "texture", "double_ring", "none"],
                   help="broad: the held-out families left out of the records (both: texture and double_ring)")
    b.add_argument("--arrays", default=",".join(BROAD_ARRAYS), help="broad: comma-separated arrays, in turn")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")
    b.set_defaults(_prepare=_run_black_holes)


def _sigma_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number >= 0, got {text!r}")
    return value


def _run_fastmri(args: argparse.Namespace) -> int:
    settings = {
        "inputs": [str(p) for p in args.inputs],
        "output": str(args.output),
        "acceleration": args.acceleration,
        "center_fraction": args.center_fraction,
        "mask_kind": args.mask_kind,
        "resolution": args.resolution,
        "recon_size": args.recon_size,
        "drop_fraction": args.drop_fraction,
        "mask_per": args.mask_per,
        "seed": args.seed,
        "sigma_n": args.sigma_n,
        "targets_output": None if args.targets is None else str(args.targets),
        "overwrite": args.overwrite,
        "device": args.device,
    }
    if args.dry_run:
        print(json.dumps(settings, indent=2))
        return 0
    kwargs = {k: v for k, v in settings.items() if k not in ("inputs", "output")}
    out = prepare_fastmri(args.inputs, args.output, **kwargs)
    with h5py.File(out, "r") as f:
        n = f["y"].shape[0]
        noise = json.loads(f.attrs["metadata"]).get("noise", [])
    for entry in noise:
        raw = entry["kspace_noise_std"]
        raw = "" if raw is None else f"k-space noise std {raw:.3g} ({entry['method']}), "
        print(f"{entry['file']}: {raw}sigma_n = {entry['sigma_n']:.3g} (normalised units)")
    print(f"wrote {n} undersampled slices to {out}")
    return 0


def _run_synthetic(args: argparse.Namespace) -> int:
    settings = {
        "output": str(args.output),
        "num_volumes": args.volumes,
        "num_slices": args.slices,
        "recon_size": [args.recon_size, args.recon_size],
        "num_coils": args.coils,
        "noise_level": args.noise,
        "seed": args.seed,
    }
    if args.dry_run:
        print(json.dumps(settings, indent=2))
        return 0
    names = [args.output / f"synthetic_knee_{args.seed + i:05d}.h5" for i in range(args.volumes)]
    existing = [str(p) for p in names if p.exists()]
    if existing and not args.overwrite:  # before writing any volume
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} of the volumes do); pass --overwrite")
    paths = write_synthetic_knee_dataset(
        args.output,
        args.volumes,
        seed=args.seed,
        overwrite=args.overwrite,
        num_slices=args.slices,
        recon_size=(args.recon_size, args.recon_size),
        num_coils=args.coils,
        noise_level=args.noise,
    )
    print(f"wrote {len(paths)} SYNTHETIC knee volumes to {args.output}")
    return 0


def _run_images(args: argparse.Namespace) -> int:
    settings = {"inputs": [str(p) for p in args.inputs], "output": str(args.output), "acceleration": args.acceleration,
                "center_fraction": args.center_fraction, "mask_kind": args.mask_kind, "resolution": args.resolution,
                "masks_per_slice": args.masks_per_slice, "holdout": args.holdout, "drop_fraction": args.drop_fraction,
                "noise_level": args.noise, "seed": args.seed, "overwrite": args.overwrite}  # fmt: skip
    if args.dry_run:
        print(json.dumps(settings, indent=2))
        return 0
    kwargs = {k: v for k, v in settings.items() if k not in ("inputs", "output")}
    written = prepare_images(args.inputs, args.output, **kwargs)
    for part, path in written.items():
        print(f"wrote {part}: {path}")
    return 0


def _run_black_holes(args: argparse.Namespace) -> int:
    """Simulate records with :func:`ambient_science.pipelines.eht.training_records` (the coverage law of
    ``examples/black_hole.py``) and write them; the images never reach the file."""
    settings = {"output": str(args.output), "records": args.records, "npix": args.npix, "fov_uas": args.fov_uas,
                "seed": args.seed, "coverage_law": COVERAGE_LAW, "gains": TRAIN_GAINS}  # fmt: skip
    if args.generator == "broad":
        arrays = [a.strip() for a in args.arrays.split(",") if a.strip()]
        settings.update(generator="broad", split=args.split, arrays=arrays, train_flux_jy=TRAIN_FLUX_JY)
    if args.dry_run:
        print(json.dumps(settings, indent=2))
        return 0
    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    if args.generator == "broad":
        ds = broad_training_records(
            args.records, args.npix, args.fov_uas, seed=args.seed, split=args.split, arrays=settings["arrays"]
        )
    else:
        ds = training_records(args.records, args.npix, args.fov_uas, seed=args.seed)
    save_measurements(args.output, ds.y, ds.params, ds.family, sigma_n=ds.sigma_n, overwrite=args.overwrite,
                      metadata={"source": "SYNTHETIC black holes (visibilities only)", **settings})  # fmt: skip
    print(f"wrote {len(ds)} SYNTHETIC black-hole observations (visibilities only) to {args.output}")
    return 0


def run(args: argparse.Namespace) -> int:
    return int(args._prepare(args))
