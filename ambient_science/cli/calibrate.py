"""``ambient-science calibrate-fit``: set the fit test's threshold of an exported prior from validation records.

    ambient-science calibrate-fit --prior priors/mine --measurements data/mine_r4_heldout.h5 \\
        --truth data/mine_r4_heldout_targets.h5

Scores every record of each ``--measurements`` file (validation data held out from training: the network must
not have seen them) with the prior's fit test and stores ``margin ×`` the ``quantile`` of the scores, per
acceleration, as the ``"fit"`` threshold in the prior's ``prior.json`` (:mod:`ambient_science.pipelines.
fit_calibration`); with ``--truth`` (one targets file per measurement file, Cartesian MRI) also the L1-wavelet λ
of the safe mode's fallback. After that, ``reconstruct`` warns on data the prior does not fit and (``--safe-mode
auto``) replaces those images by the safe reconstruction. A threshold already stored for the same acceleration is
replaced only with ``--overwrite``; ``--dry-run`` prints without writing (and accepts a training checkpoint, whose
config is covered by its checksums and is never written: export it first to store a threshold).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ambient_science.cli.reconstruct import _positive_int
    from ambient_science.pipelines.fit_calibration import MARGIN, MIN_RECORDS, QUANTILE

    parser.add_argument("--prior", required=True, help="exported prior directory (ambient-science export-prior)")
    parser.add_argument("--measurements", nargs="+", required=True, help="validation measurement file(s)")
    parser.add_argument("--truth", nargs="+", default=None, help="their targets files (h5 'target'), same order")
    parser.add_argument("--quantile", type=float, default=QUANTILE)
    parser.add_argument("--margin", type=float, default=MARGIN, help="threshold = margin x the quantile")
    parser.add_argument("--min-records", type=_positive_int, default=MIN_RECORDS)
    parser.add_argument("--batch-size", type=_positive_int, default=8)
    parser.add_argument("--sigma", type=float, default=None, help="noise std of the measurements (overrides)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the calibration, write nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace thresholds stored for the same R")


def run(args: argparse.Namespace) -> int:
    import json

    from ambient_science.cli.reconstruct import _magnitude, _read_truth
    from ambient_science.datasets.measurements import MeasurementFile
    from ambient_science.pipelines.fit_calibration import (
        calibrate_fit,
        merge_fit_entry,
        nominal_keys,
        read_prior_card,
        write_fit_entry,
    )
    from ambient_science.sampling.prior import load_prior
    from ambient_science.training.checkpoint import is_exported_prior
    from ambient_science.training.distributed import resolve_device

    prior_dir = Path(args.prior)
    if not args.dry_run and not is_exported_prior(prior_dir):
        raise ValueError(
            f"--prior {prior_dir} is not an exported prior (no prior.json): a training checkpoint's config is "
            "covered by its checksums and is not rewritten; export it first (ambient-science export-prior), or "
            "pass --dry-run to only print the calibration"
        )
    files = [Path(f) for f in args.measurements]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"--measurements: {missing} do not exist (or are not files)")
    if args.truth is not None and len(args.truth) != len(files):
        raise ValueError(f"--truth gives {len(args.truth)} files for {len(files)} measurement files; expected one each")
    if not args.dry_run:  # a calibration the card already holds is refused before any scoring
        path, meta = read_prior_card(prior_dir)
        keys = {k: None for k in nominal_keys(files)}
        planned = {"threshold": keys, **({"fallback_l1_lam": keys} if args.truth is not None else {})}
        merge_fit_entry(meta.get("fit"), planned, overwrite=args.overwrite, where=str(path))
    truths = [None] * len(files)
    if args.truth is not None:  # read (and checked) before any scoring
        truths = [_magnitude(_read_truth(t, list(range(len(MeasurementFile(f)))))) for t, f in zip(args.truth, files)]
    prior = load_prior(prior_dir, map_location=resolve_device(args.device))
    entry = calibrate_fit(
        prior, files, truths=truths, quantile=args.quantile, margin=args.margin, min_records=args.min_records,
        batch_size=args.batch_size, sigma=args.sigma, seed=args.seed,
    )  # fmt: skip
    for key, threshold in entry["threshold"].items():
        scores = entry["validation_scores"][key]
        lam = entry.get("fallback_l1_lam", {}).get(key)
        by_lam = entry.get("fallback_l1_psnr", {}).get(key)
        print(
            f"R = {key}: {len(scores)} records, scores {min(scores):.4f}-{max(scores):.4f}, threshold {threshold}"
            + ("" if lam is None else f"; L1-wavelet fallback λ {lam:g} (mean PSNR by λ {by_lam})")
        )
    if args.dry_run:
        print(json.dumps({k: v for k, v in entry.items() if k != "validation_scores"}, indent=2))
        print("dry run: nothing written")
        return 0
    old = write_fit_entry(prior_dir, entry, overwrite=args.overwrite)
    if old is not None and args.overwrite:
        print(f"replaced the previous fit entry's values for R = {', '.join(entry['threshold'])} (was: "
              f"threshold {old.get('threshold')}, fallback λ {old.get('fallback_l1_lam')})")  # fmt: skip
    print(f"wrote the fit entry of {prior_dir / 'prior.json'}")
    return 0
