"""Classical MRI baselines on the built-in SYNTHETIC knees: zero-filled, CG-SENSE, L1-wavelet at 4x and 8x.

Proposed home: benchmarks/mri_baselines.py. Writes synthetic fastMRI-layout volumes, runs `prepare`
(undersampled k-space only, random fastMRI column masks: 4x with 8 % centre, 8x with 4 %), reconstructs
with each baseline and prints PSNR / SSIM (fastMRI definitions, data range = volume max, per volume then
averaged). Lambdas are chosen on a separate validation volume, then applied to the test volumes.

    python mri_baselines.py --grid 64                 # single-coil, the CPU demo grid
    python mri_baselines.py --grid 128 --coils 8      # multi-coil (birdcage coils, ESPIRiT from the ACS)
"""

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch

from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.prepare import load_targets, prepare_fastmri
from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.metrics.mri import psnr, ssim
from ambient_science.operators.mri_recon import cg_sense, l1_wavelet, zero_filled


def load(tmp, name, raw, R, cf, grid):
    out = prepare_fastmri(
        raw,
        tmp / f"{name}.h5",
        acceleration=R,
        center_fraction=cf,
        resolution=grid,
        targets_output=tmp / f"{name}_t.h5",
        seed=1,
        overwrite=True,
    )
    mf, ref = MeasurementFile(out), load_targets(tmp / f"{name}_t.h5")
    recs = [mf[i] for i in range(len(mf))]
    y = torch.stack([r["y"] for r in recs])
    A = mf.family.make({k: torch.stack([r["params"][k] for r in recs]) for k in recs[0]["params"]})
    bounds = torch.cumsum(torch.tensor([0, *ref["slices_per_file"]]), 0).tolist()
    return A, y, ref["target"], list(itertools.pairwise(bounds))


def score(target, x, volumes):
    x = x.abs()[:, 0]
    ps = [psnr(target[a:b], x[a:b]) for a, b in volumes]
    ss = [ssim(target[a:b], x[a:b]) for a, b in volumes]
    return sum(ps) / len(ps), sum(ss) / len(ss)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--grid", type=int, default=64)
    p.add_argument("--coils", type=int, default=None)
    p.add_argument("--volumes", type=int, default=4)
    p.add_argument("--slices", type=int, default=6)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    kw = dict(num_slices=args.slices, recon_size=(128, 128), num_coils=args.coils)
    write_synthetic_knee_dataset(tmp / "val", 1, seed=900, **kw)
    write_synthetic_knee_dataset(tmp / "test", args.volumes, seed=1000, **kw)
    lams_l1, lams_cg = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1], ([1e-3, 1e-2, 3e-2, 0.1] if args.coils else [0.0])
    print(
        f"SYNTHETIC knees, {args.volumes} test volumes x {args.slices} slices, grid {args.grid}, "
        f"coils {args.coils or 1}; PSNR dB / SSIM (fastMRI definitions)"
    )
    for R, cf in [(4, 0.08), (8, 0.04)]:
        A, y, t, vols = load(tmp, f"val{R}", tmp / "val", R, cf, args.grid)
        lam_cg = max(lams_cg, key=lambda lam: score(t, cg_sense(A, y, lam=lam, max_iter=30), vols)[0])
        lam_l1 = max(lams_l1, key=lambda lam: score(t, l1_wavelet(A, y, lam=lam, max_iter=100), vols)[0])
        A, y, t, vols = load(tmp, f"test{R}", tmp / "test", R, cf, args.grid)
        for name, fn in [
            ("zero-filled", lambda: zero_filled(A, y)),
            (f"CG-SENSE (lam={lam_cg:g})", lambda: cg_sense(A, y, lam=lam_cg, max_iter=30)),
            (f"L1-wavelet (lam={lam_l1:g})", lambda: l1_wavelet(A, y, lam=lam_l1, max_iter=100)),
        ]:
            t0 = time.time()
            ps, ss = score(t, fn(), vols)
            print(f"R={R} (centre {cf:.0%})  {name:26s} PSNR {ps:6.2f}  SSIM {ss:.4f}   [{time.time() - t0:.1f} s]")


if __name__ == "__main__":
    main()
