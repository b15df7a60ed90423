"""Black-hole imaging with a diffusion prior trained from sparse interferometric visibilities only.

What it shows. Synthetic black-hole-like images (rings, crescents, blobs, with turbulence) are observed by
random EHT 2017 coverages (random source declinations, observing windows, station drop-outs), with thermal
noise and residual station gains. Only these measurement records (visibilities + coverage) enter training:
an ambient diffusion prior is trained on them with the interferometer family's further corruption (random
stations, baselines and time blocks dropped; docs/design.md §5). No image ever enters training. Held-out
synthetic observations, with uncalibrated station phases, are then imaged from closure phases, log closure
amplitudes and the total flux by DAPS and A-DPS through the prior (§6), and compared with regularised
maximum likelihood (RML) and the dirty image (§8). The real EHT 2017 M87* data can be imaged the same way.

Two priors by default, both trained from visibilities only: the **shipped** prior ``black-hole-eht2017-32``
(``ambient_science.pretrained``; its model card says how long it trained) -> rows ``ambient_daps`` and
``ambient_dps``; and a short prior trained **in this run** on the same 32 × 32 / 128 µas grid -> rows
``ambient_daps_this_run`` and ``ambient_dps_this_run``. ``--uvfits`` images with the broad shipped prior
``black-hole-eht-64`` (64 × 64 over 160 µas, trained on a far richer generator; or ``--prior``), 32 samples, and
trains nothing.
The choices behind the sizes and samplers are in :mod:`ambient_science.pipelines.eht_setup`.

Run::

    python examples/black_hole.py                                  # train, then evaluate on synthetic data
    python examples/black_hole.py --uvfits ../shared/data/eht/observations/M87_2017-04-11_hops_lo.uvfits
                                                                   # image real data with the shipped prior
    python examples/black_hole.py --quick --out /tmp/bh            # a tiny configuration (seconds; the test)
    python examples/black_hole.py --help                           # every option

Writes ``OUT/metrics.json`` and ``OUT/black_hole.png`` (the training run under ``OUT/train``), or with
``--uvfits`` ``OUT/<file stem>/`` with ``image.fits``, ``samples.fits`` (every posterior sample, with a table of
their closure χ², fit flags and ring fits), ``image.png`` and ``metrics.json`` (ring diameter, width and PA with
68 %/95 % intervals over the kept samples, raw and calibrated by the factors in the prior's card: split-conformal,
learned on out-of-family generator images, ``pipelines.eht_calibration``).

Data consistency: every posterior sample carries its closure χ² and a ``fits`` flag (both reduced χ² in
[0.7, 1.3]); a warning names the observations where fewer than half fit. Images enter the prior at its training
flux and come back in Jy/pixel at the source's (``pipelines.eht_reconstruct``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ambient_science.threads import configure_threads, prefer_passive_wait

# Idle OpenMP threads sleep instead of spinning (set before torch loads; see ambient_science/threads.py)
prefer_passive_wait()

from ambient_science.pipelines.eht import held_out_observations
from ambient_science.pipelines.eht_eval import (
    evaluate_synthetic,
    image_uvfits,
    plot_synthetic,
    print_table,
    print_uvfits_summary,
)
from ambient_science.pipelines.eht_setup import SHIPPED, SHIPPED_REAL, load_priors, resolve_setup


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
    p.add_argument("--systematic", type=float, default=0.0,
                   help="--uvfits: fractional systematic floor on every visibility sigma (e.g. 0.02)")  # fmt: skip
    p.add_argument("--num-test", type=int, help="held-out synthetic observations (default 8)")
    p.add_argument("--num-samples", type=int,
                   help="DAPS posterior samples per observation (default 8; 32 with --uvfits)")  # fmt: skip
    p.add_argument("--inference-operator", choices=("test", "law"), default="test", help="law of Ã_inf")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (data, training, sampling)")
    p.add_argument("--quick", action="store_true", help="a tiny configuration (tests; numbers meaningless)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    configure_threads()  # one intra-op thread per free core (AMBIENT_SCIENCE_THREADS / OMP_NUM_THREADS win)
    setup = resolve_setup(
        quick=args.quick,
        train_steps=args.train_steps,
        train_images=args.train_images,
        num_test=args.num_test,
        num_samples=args.num_samples if args.num_samples or args.uvfits is None or args.quick else 32,
        inference_operator=args.inference_operator,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # 1. the priors: shipped (or --prior), and one trained here from visibilities only
    train = "never" if args.no_training else "if_no_prior" if args.uvfits is not None else "always"
    priors, train_info, setup = load_priors(
        setup,
        args.out,
        device=args.device,
        seed=args.seed,
        prior=args.prior,
        shipped=not args.train_only_here,
        train=train,
        resume=args.resume,
        shipped_name=SHIPPED_REAL if args.uvfits is not None and not args.quick else SHIPPED,
    )

    if args.uvfits is not None:  # 2'. real data: closure quantities of a UVFITS file, DAPS through one prior
        label = "ambient" if "ambient" in priors else "ambient_this_run"
        metrics = image_uvfits(
            priors[label],
            setup,
            args.uvfits,
            args.out / args.uvfits.stem,
            seed=args.seed,
            total_flux=args.total_flux,
            source=train_info[label]["source"],
            systematic=args.systematic,
        )
        print_uvfits_summary(metrics)
    else:
        # 2. held-out synthetic observations with random station phases; 3. every method on each
        cases = held_out_observations(setup.num_test, setup.npix, setup.fov_uas, seed=args.seed)
        metrics, images = evaluate_synthetic(priors, setup, cases, args.seed)
        metrics.update(train=train_info, setup=setup.to_dict(), seconds=time.perf_counter() - t0)
        plot_synthetic(images, cases, setup.fov_uas, args.out / "black_hole.png")
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print_table(metrics)
    print(f"done in {time.perf_counter() - t0:.0f} s; results in {args.out}")
    return metrics


if __name__ == "__main__":
    main()
