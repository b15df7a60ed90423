"""``ambient-science audit``: how close are generated samples to their nearest training images?

    ambient-science audit --samples samples.pt --training train.npy --out runs/audit
    ambient-science audit --samples s.h5 --training t.h5 --reference heldout.npy --max-shift 2 --flips

Writes ``audit.json`` (:func:`ambient_science.audit.memorization_report`: fraction of samples above the
threshold, median, quantiles, histogram, the nearest training index and similarity of every sample),
``histogram.png`` and ``closest_pairs.png`` under ``--out``, and prints a one-line summary.
Image files: ``.pt``/``.pth``, ``.npy``, ``.npz``, ``.h5``/``.hdf5`` (:func:`ambient_science.audit.load_images`;
``(N, H, W)`` or ``(N, C, H, W)``, complex data as magnitudes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", required=True, help="generated images (.pt, .npy, .npz, .h5)")
    parser.add_argument("--training", required=True, help="the training images (same C, H, W)")
    parser.add_argument(
        "--reference",
        help="held-out images of the training distribution: their nearest-training similarities are the "
        "baseline of a sampler that does not copy",
    )
    parser.add_argument("--key", help="array name inside .pt dicts / .npz / .h5 files (default: the only one)")
    parser.add_argument("--channels-last", action="store_true", help="files hold (N, H, W, C) arrays")
    parser.add_argument("--threshold", type=float, default=0.95, help="similarity above which a sample is a copy")
    parser.add_argument("--max-shift", type=int, default=0, help="also match training images shifted by ≤ this")
    parser.add_argument("--flips", action="store_true", help="also match horizontally/vertically flipped images")
    parser.add_argument("--bins", type=int, default=80, help="histogram bins over [-1, 1]")
    parser.add_argument("--top-k", type=int, default=8, help="closest sample/training pairs in the figure")
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per similarity block (memory)")
    parser.add_argument("--out", default="runs/audit", help="output directory (default: runs/audit)")
    parser.add_argument("--no-plots", action="store_true", help="write audit.json only (no matplotlib needed)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier audit in --out")


OUTPUTS = ("audit.json", "histogram.png", "closest_pairs.png")


def run(args: argparse.Namespace) -> int:
    from ambient_science.audit import load_images, memorization_report, plot_closest_pairs, plot_histogram
    from ambient_science.cli import error_line

    out = Path(args.out)
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.overwrite:
        print(f"ambient-science audit: error: {out} already holds {existing}; pass --overwrite or another --out",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        samples = load_images(args.samples, args.key, channels_last=args.channels_last)
        training = load_images(args.training, args.key, channels_last=args.channels_last)
        reference = load_images(args.reference, args.key, channels_last=args.channels_last) if args.reference else None
        report = memorization_report(
            samples,
            training,
            args.threshold,
            reference=reference,
            max_shift=args.max_shift,
            flips=args.flips,
            bins=args.bins,
            batch_size=args.batch_size,
        )
    except (OSError, KeyError, TypeError, ValueError) as err:
        print(f"ambient-science audit: error: {error_line(err)}", file=sys.stderr)
        return 2
    report["files"] = {"samples": str(args.samples), "training": str(args.training), "reference": args.reference}
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(report, indent=1) + "\n")
    if not args.no_plots:
        import torch

        sim, index = torch.tensor(report["similarity"]), torch.tensor(report["index"])
        series = {"samples": sim}
        if reference is not None:
            series["held-out reference"] = torch.tensor(report["reference"]["similarity"])
        plot_histogram(series, threshold=args.threshold, bins=args.bins, path=out / "histogram.png")
        plot_closest_pairs(samples, training, sim, index, k=args.top_k, path=out / "closest_pairs.png")
    line = (
        f"{report['num_samples']} samples vs {report['num_training']} training images: "
        f"{report['fraction_above']:.1%} above {args.threshold:g} (median similarity {report['median']:.3f})"
    )
    if reference is not None:
        ref = report["reference"]
        line += f"; held-out reference: {ref['fraction_above']:.1%} above, median {ref['median']:.3f}"
    print(line)
    print(f"wrote {out / 'audit.json'}" + ("" if args.no_plots else ", histogram.png, closest_pairs.png"))
    return 0
