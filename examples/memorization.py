"""Memorisation falls as training corruption grows: the trade-off of ambient diffusion, measured.

What it shows. A diffusion prior trained long on a small data set copies its training images
(Somepalli et al. 2023; Carlini et al. 2023). Ambient diffusion (Daras et al., NeurIPS 2023) trains from
corrupted measurements only, here ``y = M ⊙ x`` with a FIXED random mask ``M`` per training image
hiding each pixel with probability ``p`` (drawn once, like a real corrupted data set: the
measurements never change across epochs). This script trains, with equal compute (same network,
steps, batch, learning rate, sampler), a clean prior (``p = 0``, ``A = I``) and ambient priors at
``p ∈ {0.4, 0.6, 0.8, 0.9}`` on the same small training set of synthetic black-hole images
(:func:`ambient_science.datasets.black_holes.sample_black_hole_images`, 16×16 px, 64 images), samples
each prior unconditionally (EDM Heun through a fixed ``Ã_inf`` drawn from the training corruption law,
docs/design.md §6) and audits the samples (:mod:`ambient_science.audit`):

* ``fraction_above``: share of samples whose normalised cross-correlation (NCC) with the nearest
  training image exceeds ``--threshold`` (0.95): near-copies;
* ``median_nn_similarity``: median of that nearest-neighbour NCC;
* ``quality``: a sample-quality proxy against HELD-OUT images, the held-out coverage
  ``mean_j max_i NCC(h_j, s_i)`` — how well the samples cover fresh images of the distribution
  (noisy, blurred or mode-collapsed samples score low; copies of training images score like the
  training set itself). Also ``fidelity``, the median over samples of ``max_j NCC(s_i, h_j)``.

References in ``metrics.json`` put the numbers on a scale: the held-out images' own nearest-training
NCC (what a sampler that reproduces the distribution without copying shows), the coverage reached by
the training set itself (a perfect copier) and by fresh draws of the distribution (a perfect sampler).

How to run::

    python examples/memorization.py                 # default: ~15–20 min on 2 CPU cores
    python examples/memorization.py --quick         # ~2 min: fewer steps, the trend is weaker
    python examples/memorization.py --levels 0 0.8 --steps 600 --out runs/mem_small

Options: ``--out DIR`` (default ``runs/memorization``), ``--quick``, ``--levels P ...``, ``--steps N``
(optimizer steps per prior), ``--batch-size``, ``--lr``, ``--num-train``, ``--num-samples``,
``--sampler-steps``, ``--delta`` (further corruption of ambient training), ``--threshold``,
``--seed``, ``--threads`` (torch CPU threads while it runs; 1 is fastest for these tiny networks on a
shared CPU, 0 keeps torch's default).

Outputs under ``--out``: ``metrics.json`` (``{"levels": [{"p", "fraction_above",
"median_nn_similarity", "quality", ...}], "threshold", ...}``), ``tradeoff.png`` (the curve),
``histograms.png``, ``samples.png`` (a row of samples per prior, the training images on top),
``closest_pairs_p*.png``, ``samples_p*.pt`` and ``training.pt`` (to re-audit with
``ambient-science audit --samples runs/memorization/samples_p0.00.pt --training runs/memorization/training.pt``)
and the trained priors under ``priors/``.

The experiment is :func:`ambient_science.pipelines.memorization.run` (data, training, sampling, audit, figures);
this script only reads the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from ambient_science.threads import configure_threads, prefer_passive_wait

prefer_passive_wait()  # idle OpenMP threads sleep (before torch loads; see ambient_science/threads.py)

from ambient_science.pipelines.memorization import QUICK, MemorizationConfig, format_table, run


def parse_args(argv: Sequence[str] | None = None) -> tuple[MemorizationConfig, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/memorization", help="output directory (default: runs/memorization)")
    parser.add_argument("--quick", action="store_true", help="a ~2-minute version (fewer steps and samples)")
    parser.add_argument("--levels", type=float, nargs="+", help="hide probabilities p (0 = the clean prior)")
    for name, kind in [
        ("steps", int), ("batch_size", int), ("lr", float), ("num_train", int), ("num_samples", int),
        ("sampler_steps", int), ("delta", float), ("threshold", float), ("seed", int), ("threads", int),
    ]:  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"override {name}")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else MemorizationConfig()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cfg)
        if hasattr(args, f.name) and getattr(args, f.name) is not None
    }
    if "levels" in overrides:
        overrides["levels"] = tuple(overrides["levels"])
    return dataclasses.replace(cfg, **overrides), args.out


def main(argv: Sequence[str] | None = None) -> int:
    cfg, out = parse_args(argv)
    configure_threads()  # one intra-op thread per free core (AMBIENT_SCIENCE_THREADS / OMP_NUM_THREADS win)
    metrics = run(cfg, out)
    print("\n" + format_table(metrics))
    print(f"wrote {Path(out) / 'metrics.json'} and figures ({metrics['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
