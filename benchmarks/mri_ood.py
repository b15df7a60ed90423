"""Out-of-distribution acceptance (issue #18): the fit test and the safe mode of reconstruct(), knee priors on
knees (in distribution) and on a brain-like anatomy they never saw (mismatched), at R = 4 and 8.

    OMP_NUM_THREADS=1 python benchmarks/mri_ood.py --calibrate   # thresholds from knee VALIDATION volumes
    OMP_NUM_THREADS=1 python benchmarks/mri_ood.py               # the acceptance table

Data (all SYNTHETIC, 128 × 128 recon, 12 slices, the middle 4 of each volume evaluated, 64 × 64 grid, k-space
simulated as examples/mri_knee.py does: ``prepare_fastmri``, random columns, 8 % / 4 % centre, noise from the
generator): knee TEST volumes 10000–10003 (masks seeded 1, the example's), knee VALIDATION volumes 10100–10107
(masks seeded 2; calibration only), brain-like volumes 0–3 of :mod:`ambient_science.datasets.anatomy` (masks
seeded 1). Priors: the shipped ``mri-knee-synthetic-r4`` (EM; its fit test scored by its ambient initial prior),
``mri-knee-synthetic-r4-ambient`` and ``mri-knee-synthetic-clean``.

``--calibrate`` scores the validation slices (:func:`ambient_science.sampling.fit.check_fit`), sets each prior's
threshold per acceleration (:func:`~ambient_science.sampling.fit.calibrate_threshold`) and tunes the L1-wavelet
λ of the safe mode's fallback on the same validation slices; ``--write-card`` stores both in the shipped
priors' ``prior.json`` (``"fit"``). The table then runs ``reconstruct(method="dps")`` with the recommended
settings (each prior's card: e.g. the EM prior's one antithetic pair of 32 steps from σ 80) once per prior, anatomy
and R, with ``safe_mode="report"``, and applies the safe mode (``"auto"``, L1-wavelet fallback) to the same samples;
rows: zero-filled, L1-wavelet (validation λ), A-DPS, A-DPS safe, the fraction of slices that fire, and the worst
volume's safe − zero-filled PSNR. Writes ``<out>/results.json``; A-DPS samples are cached in ``<out>/cache``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from ambient_science import pretrained
from ambient_science.datasets.anatomy import write_synthetic_brain_dataset
from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.metrics.mri import evaluate_volume
from ambient_science.operators.mri_recon import l1_wavelet
from ambient_science.pipelines.mri import prepare_volumes
from ambient_science.pipelines.mri_eval import held_out_batch
from ambient_science.sampling.fit import apply_safe_mode, calibrate_threshold, check_fit
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.reconstruction import reconstruct

PRIORS = {"r4": "mri-knee-synthetic-r4", "r4_ambient": "mri-knee-synthetic-r4-ambient",
          "clean": "mri-knee-synthetic-clean"}
SETS = {  # name: (generator, first seed, volumes, mask seed)
    "knee_test": ("knee", 10_000, 4, 1),
    "knee_val": ("knee", 10_100, 8, 2),
    "brain": ("brain", 0, 4, 1),
}
L1_LAMS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
QUANTILE, MARGIN = 0.975, 1.25


def data_file(out: Path, name: str, R: int) -> Path:
    kind, seed, count, mask_seed = SETS[name]
    folder = out / "data" / f"{name}-128px-12sl"
    files = sorted(folder.glob("*.h5"))
    if len(files) != count:
        write = write_synthetic_knee_dataset if kind == "knee" else write_synthetic_brain_dataset
        files = write(folder, count, seed=seed, overwrite=True, recon_size=(128, 128), num_slices=12)
    return prepare_volumes(files, out / "data" / f"{name}_r{R}_64.h5", acceleration=R, resolution=64,
                           seed=mask_seed, targets=True)  # fmt: skip


def per_volume_psnr(truth: torch.Tensor, estimate: torch.Tensor, volume: torch.Tensor) -> list[float]:
    mag = estimate.abs().pow(2).sum(dim=1).sqrt().float().cpu() if estimate.ndim == 4 else estimate
    return [round(evaluate_volume(truth[volume == v], mag[volume == v])["psnr"], 3) for v in volume.unique()]


def batch(out: Path, name: str, R: int):
    b = held_out_batch(data_file(out, name, R), 4)
    return GaussianLikelihood(b.A, b.y, b.sigma), b.truth, b.volume


def calibrate(out: Path, accelerations, write_card: bool) -> dict:
    result: dict = {}
    for key, name in PRIORS.items():
        prior = pretrained.load(name)
        thresholds, scores = {}, {}
        for R in accelerations:
            lik, _, _ = batch(out, "knee_val", R)
            report = check_fit(prior, lik, generator=torch.Generator().manual_seed(0))
            scores[str(R)] = [round(float(s), 4) for s in report.score]
            thresholds[str(R)] = round(MARGIN * calibrate_threshold(report.score, QUANTILE), 4)
        result[key] = {"threshold": thresholds, "validation_scores": scores}
        print(f"{name}: thresholds {thresholds}", flush=True)
    lams = {}
    for R in accelerations:
        lik, truth, volume = batch(out, "knee_val", R)
        psnr = {lam: sum(per_volume_psnr(truth, l1_wavelet(lik.A, lik.y, lam=lam), volume)) for lam in L1_LAMS}
        lams[str(R)] = max(psnr, key=psnr.get)
        curve = {k: round(v / SETS["knee_val"][2], 2) for k, v in psnr.items()}
        print(f"R = {R}: L1-wavelet validation PSNR by λ {curve}", flush=True)
    result["l1_lam"] = lams
    if write_card:
        for key, name in PRIORS.items():
            path = pretrained.path(name) / "prior.json"
            meta = json.loads(path.read_text())
            meta["fit"] = {
                "threshold": result[key]["threshold"],
                "fallback_l1_lam": lams,
                "calibration": (
                    f"benchmarks/mri_ood.py --calibrate: {MARGIN} x the {QUANTILE} quantile of check_fit scores of 32 "
                    "knee VALIDATION slices (synthetic volumes 10100-10107, middle 4 slices, masks seeded 2) per "
                    "acceleration; fallback_l1_lam: the best L1-wavelet lambda on the same slices"
                ),
            }
            path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            print(f"wrote the fit entry of {path}")
    return result


def _cache_tag(prior) -> str:
    """The weights' hash and a hash of the card's sampler entry (the settings ``reconstruct`` takes from it)."""
    sampler = json.dumps(prior.config.get("sampler", {}).get("dps", {}), sort_keys=True)
    weights = prior.config["files"]["weights.safetensors"]["sha256"][:12]
    return f"{weights}_{hashlib.sha256(sampler.encode()).hexdigest()[:8]}"


def evaluate(out: Path, accelerations, priors) -> dict:
    rows = []
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for key in priors:
        prior = pretrained.load(PRIORS[key])
        lams = prior.config.get("fit", {}).get("fallback_l1_lam", {})
        for R in accelerations:
            lam = float(lams.get(str(R), 3e-4))
            for name in ("knee_test", "brain"):
                lik, truth, volume = batch(out, name, R)
                # the cache names the weights and the card's sampler settings: a prior re-shipped under the same
                # name, or with other settings, is not read from a stale file
                file = cache / f"{key}_{name}_r{R}_{_cache_tag(prior)}.pt"
                t0 = time.perf_counter()
                if file.exists():
                    post = torch.load(file, weights_only=False)
                else:
                    post = reconstruct(prior, lik, method="dps", generator=torch.Generator().manual_seed(0),
                                       safe_mode="report", progress=False)  # fmt: skip
                    torch.save(post, file)
                seconds = time.perf_counter() - t0
                l1 = l1_wavelet(lik.A, lik.y, lam=lam)
                safe = apply_safe_mode(post, lik, post.fit, "auto", fallback=lambda _lik, l1=l1: l1)
                zf = per_volume_psnr(truth, lik.backprojection(), volume)
                row = {
                    "prior": PRIORS[key], "anatomy": name, "R": R,
                    "zero_filled": zf,
                    "l1_wavelet": per_volume_psnr(truth, l1, volume),
                    "adps": per_volume_psnr(truth, post.mean, volume),
                    "adps_safe": per_volume_psnr(truth, safe.mean, volume),
                    "fired_fraction": float(post.fit.fires.float().mean()),
                    "score_range": [round(float(post.fit.score.min()), 4), round(float(post.fit.score.max()), 4)],
                    "threshold": post.fit.threshold, "l1_lam": lam, "adps_seconds": round(seconds, 1),
                }  # fmt: skip
                row["worst_safe_minus_zf"] = round(min(a - z for a, z in zip(row["adps_safe"], zf)), 3)
                rows.append(row)
                print(format_row(row), flush=True)
    return {"rows": rows}


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


HEADER = (
    "| prior | anatomy | R | zero-filled | L1-wavelet | A-DPS | A-DPS safe | fired | worst vol. safe − ZF |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def format_row(r: dict) -> str:
    return (
        f"| {r['prior']} | {r['anatomy']} | {r['R']} | {_mean(r['zero_filled']):.2f} | {_mean(r['l1_wavelet']):.2f} | "
        f"{_mean(r['adps']):.2f} | {_mean(r['adps_safe']):.2f} | {100 * r['fired_fraction']:.0f} % | "
        f"{r['worst_safe_minus_zf']:+.2f} |"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/mri_ood"))
    p.add_argument("--accelerations", type=int, nargs="+", default=[4, 8])
    p.add_argument("--priors", nargs="+", choices=sorted(PRIORS), default=["r4", "clean"])
    p.add_argument("--calibrate", action="store_true", help="thresholds from the knee validation volumes")
    p.add_argument("--write-card", action="store_true", help="with --calibrate: store them in the priors' cards")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.calibrate:
        result = calibrate(args.out, args.accelerations, args.write_card)
        (args.out / "calibration.json").write_text(json.dumps(result, indent=2))
        return 0
    print(HEADER)
    result = evaluate(args.out, args.accelerations, args.priors)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"\nPSNR (dB) per volume averaged over volumes; wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
