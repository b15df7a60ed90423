"""A diffusion prior trained from undersampled k-space only, then used to reconstruct new scans.

What it shows (docs/design.md §5–§8): knee MRI volumes are undersampled at R = 4 (random phase-encode
columns, 8 % fully sampled centre) and turned into a measurement file that holds *only* that
undersampled k-space; an ambient diffusion prior is trained on it (it never sees a fully sampled
image); held-out slices are then reconstructed at R = 4 and R = 8 with the prior (A-DPS posterior mean
of several samples with its per-pixel std, and the one-step estimate) and compared with zero-filling
and L1-wavelet compressed sensing and total variation (sigpy; each with its λ picked from a wide grid, with
``lam_interior`` saying whether the best λ lies inside it), and CG-SENSE for multi-coil data, with fastMRI's
metrics. A-DPS also runs the prior's fit test (``fit_fired_fraction``; ambient_science.sampling.fit).

Two priors by default, both trained from R = 4 undersampled k-space only:

* the **shipped** prior ``mri-knee-synthetic-r4`` (``ambient_science.pretrained``; trained by this library for
  much longer than a demo allows, on other synthetic volumes, by EM from the ambient prior
  ``mri-knee-synthetic-r4-ambient``; its model card says how long) -> row ``em_dps`` (a clean-image prior: no
  one-step estimate; ``--prior ambient_science/pretrained/mri-knee-synthetic-r4-ambient`` gives the ambient
  prior's rows ``ambient_one_step`` and ``ambient_dps``);
* a short prior trained **in this run** (the trainer demonstration, with its progress bar) -> rows
  ``ambient_one_step_this_run`` and ``ambient_dps_this_run``.

A-DPS calls the ambient network through ``Ã_inf`` = everything observed (``--inference-operator full``):
the network was trained to denoise what a further-corrupted mask kept and to fill in the rest; given a mask
of ones it denoises every column (an extrapolation beyond its training law, in which something was always
hidden). Through a training-law mask (``law``) or a further corruption of the test mask (``test``) it sees
a fifth of k-space at every step. Chosen on held-out VALIDATION volumes (``--seed 7``: volumes 10007-10010,
not the test volumes), R = 4, A-DPS mean of 4, the shipped ambient prior of then: ``python examples/mri_knee.py
--no-training --seed 7 --test-accelerations 4 --inference-operator law`` gave 21.82 dB, ``... full`` 22.99 dB
(zero-filled 16.76 dB). (For a clean-image prior such as the EM one, every choice is the identity.)

Run (offline, built-in SYNTHETIC knee-like phantoms, a 2-core CPU, about 10 minutes)::

    python examples/mri_knee.py

Real fastMRI data (single- or multi-coil ``.h5`` volumes; the last 20 % of the files are held out), on
a GPU node with the full-resolution preset (no shipped prior fits real data: only the in-run prior)::

    python examples/mri_knee.py --data /data/fastmri/knee_singlecoil_train --preset gpu --device cuda
    torchrun --nproc_per_node=8 examples/mri_knee.py --data ... --preset gpu   # multi-GPU training

Multi-coil (the setting of Aali et al.'s A-DPS): ``--coils 8`` writes the same synthetic phantoms with 8
birdcage receive coils; each slice's ESPIRiT maps come from the calibration region of its own undersampled
k-space, the ambient loss's further corruption drops k-space columns of every coil alike and keeps the maps,
and the network sees the coil-combined image ``Ãᴴ Ã x_σ`` (SENSE adjoint). The shipped priors are single-coil,
so only the prior trained in this run is evaluated (rows ``*_this_run``), beside zero-filled (maps-combined
and RSS), L1-wavelet with the maps and CG-SENSE (its Tikhonov λ picked like L1's)::

    python examples/mri_knee.py --coils 8 --out runs/mri_knee_mc

Options: ``--out`` (default ``runs/mri_knee``), ``--data DIR``, ``--device auto|cpu|cuda``, ``--preset
cpu|gpu``, ``--acceleration`` (training R, default 4), ``--test-accelerations`` (default 4 8),
``--train-steps``, ``--resume`` (continue the training run in ``--out``), ``--prior PATH`` (any checkpoint or
exported prior, in place of the shipped one), ``--train-only-here`` (no shipped prior), ``--no-training``
(evaluate the shipped / ``--prior`` prior only), ``--coils N`` (multi-coil synthetic volumes),
``--with-clean-baseline`` (also a prior trained on fully
sampled images: the shipped ``mri-knee-synthetic-clean``, rows ``clean_*``, or one trained here with the
in-run budget, rows ``clean_*_this_run``), ``--quick`` (a tiny configuration for tests), ``--seed``.

Writes to ``--out``: ``metrics.json`` (per R and method: PSNR, SSIM, NMSE; per prior under ``train``: where it
came from, steps, images seen, seconds), ``reconstructions.png`` (truth, zero-filled, L1-wavelet, the
shipped prior's A-DPS mean and std (and one-step, for an ambient one), the in-run prior's A-DPS mean, per R), the
training run (checkpoints, ``metrics.jsonl``), and the prepared measurement files (``data/``).

The steps are library functions (:mod:`ambient_science.pipelines.mri`: ``source_volumes``, ``prepare_volumes``,
``train_prior``, ``shipped_prior``, ``run``; :mod:`ambient_science.pipelines.mri_eval`: ``held_out_batch``,
``evaluate``, ``save_figure``); this script only reads the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ambient_science.threads import configure_threads, prefer_passive_wait

prefer_passive_wait()  # idle OpenMP threads sleep (before torch loads; see ambient_science/threads.py)

from ambient_science.pipelines.mri import PRESETS, KneeRun, run
from ambient_science.pipelines.mri_eval import format_table


def parse_args(argv=None) -> KneeRun:
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
    p.add_argument("--coils", type=int, default=None, help="multi-coil synthetic volumes with N coils (SENSE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        return KneeRun(
            out=args.out, data=args.data, preset="quick" if args.quick else args.preset, device=args.device,
            acceleration=args.acceleration, test_accelerations=tuple(args.test_accelerations),
            train_steps=args.train_steps, resume=args.resume, prior=args.prior, use_shipped=not args.train_only_here,
            train_here=not args.no_training, clean_baseline=args.with_clean_baseline,
            inference_operator=args.inference_operator, seed=args.seed, progress=not args.no_progress,
            coils=args.coils, workers=None,  # synthetic volumes written by one process per free core
        )  # fmt: skip
    except ValueError as e:
        p.error(str(e))


def main(argv=None) -> int:
    config = parse_args(argv)
    configure_threads()  # one intra-op thread per free core (AMBIENT_SCIENCE_THREADS / OMP_NUM_THREADS win)
    metrics = run(config)
    if metrics is None:  # torchrun rank > 0: trained, rank 0 evaluates
        return 0
    print("\n" + format_table(metrics["test"]))
    out = Path(config.out)
    print(f"\nwrote {out / 'metrics.json'} and {out / 'reconstructions.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
