"""Out-of-family black-hole benchmark (issue #17): image families the prior never saw, on fixed coverages.

The prior (``--prior``: a shipped name, an exported prior or a checkpoint; default ``black-hole-eht-64``, trained
without the ``texture`` and ``double_ring`` families of :mod:`ambient_science.datasets.black_hole_families`) images
test images drawn ONLY from a held-out family (``split_config(split, "test")``), on the prior's grid, observed on
fixed coverages:

- ``m87_2017``: the real EHT 2017 M87* track (u, v, times, stations and sigmas of ``--m87``, scan-averaged);
- ``sparse6``: the same track without APEX (6 stations; ALMA–JCMT–SMA–SMT–LMT–PV).

Per (family, track, image): ``--seeds`` noise seeds (thermal noise from the track's sigmas, 10 % station
amplitude gains and random station phases), drawn from ``[seed, split, track, image]`` and so independent of the
coverage, which is fixed. Methods: DAPS and A-DPS (``pipelines.eht_reconstruct.reconstruct_closure``, the
example's settings, ``--num-samples`` DAPS samples), RML (re-weighted to closure χ² in [0.7, 1.3]) and the dirty
image of the gain-free data. Metrics: blurred PSNR (20 µas), nxcorr after the best shift, closure χ² of the
estimate, the fraction of samples inside the χ² contract; and calibration: how often the truth's ring diameter and
PA (``metrics.eht.ring_fit`` on the truth) lie in the 68 % / 95 % intervals of the kept DAPS samples.

    python benchmarks/eht_out_of_family.py --out runs/eht_ood                   # the benchmark (hours on CPU)
    python benchmarks/eht_out_of_family.py --quick --prior black-hole-eht2017-32 --out /tmp/ood   # smoke test

Writes ``OUT/results.json`` (every case and the summary) and prints the summary table. Calibration: the raw
68 % / 95 % coverage, and the split-conformal factors (``pipelines.eht_calibration``) learned on one held-out
family and tested on the other (cross-fitted: the coverage is measured on cases the factor never saw);
``--write-card OUT/results.json`` stores the factors learned on all cases in the shipped prior's card, where
``examples/black_hole.py --uvfits`` applies them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ambient_science import pretrained
from ambient_science.datasets.black_hole_families import SPLITS, BroadImageConfig, sample_family_images, split_config
from ambient_science.datasets.uvfits import average, read_uvfits
from ambient_science.metrics.eht import ring_fit
from ambient_science.operators.eht_noise import apply_station_gains, station_gains
from ambient_science.operators.interferometry import Interferometer
from ambient_science.pipelines.eht import closure_observation
from ambient_science.pipelines.eht_calibration import (
    LEVELS,
    QUANTITIES,
    card_entry,
    cross_fit_coverage,
    inside,
    pooled_cases,
    write_card,
)
from ambient_science.pipelines.eht_eval import dirty_image, image_metrics, ring_intervals, rml_baseline
from ambient_science.pipelines.eht_reconstruct import reconstruct_closure
from ambient_science.pipelines.eht_setup import QUICK, Setup
from ambient_science.sampling.prior import load_prior

M87 = Path(__file__).resolve().parents[2] / "shared/data/eht/observations/M87_2017-04-11_hops_lo.uvfits"
TRACKS = ("m87_2017", "sparse6")


def tracks(m87: Path) -> dict:
    """The fixed coverages (module docstring) as observations without meaningful ``vis``."""
    obs = average(read_uvfits(m87))
    drop = [i for i, s in enumerate(obs.stations) if s.upper().startswith("AP")]
    keep = ~(np.isin(obs.t1, drop) | np.isin(obs.t2, drop))
    sparse = dataclasses.replace(
        obs, **{k: getattr(obs, k)[keep] for k in ("time", "t1", "t2", "u", "v", "vis", "sigma")}
    )
    return {"m87_2017": obs, "sparse6": sparse}


def observe(track, image: np.ndarray, psize: float, rng: np.random.Generator):
    """``(obs with gains, gain-free obs)``: ``V = A x + σ(ε_re + i ε_im)``, then 10 % amplitude gains and random
    station phases."""
    uv = torch.as_tensor(np.stack([track.u, track.v], -1))[None]
    vis = Interferometer(uv, image.shape[0], psize, method="dft")(torch.as_tensor(image)[None, None])[0].numpy()
    vis = vis + track.sigma * (rng.standard_normal(len(vis)) + 1j * rng.standard_normal(len(vis)))
    clean = dataclasses.replace(track, vis=vis.astype(np.complex128))
    g = station_gains(len(np.unique(track.time)), len(track.stations), rng, amp_std=0.1)
    v, s = apply_station_gains(clean.vis, clean.sigma, track.time, track.t1, track.t2, g)
    return dataclasses.replace(track, vis=v, sigma=s), clean


def run(args: argparse.Namespace) -> dict:
    try:
        prior = pretrained.load(args.prior) if args.prior in pretrained.available() else load_prior(args.prior)
    except (KeyError, FileNotFoundError, OSError) as err:
        raise SystemExit(f"eht_out_of_family: cannot load prior {args.prior!r}: {err}") from None
    fam = prior.family
    N, fov, psize = fam.npix, fam.fov_uas, fam.pixel_size
    setup = QUICK if args.quick else Setup()
    setup = dataclasses.replace(setup, npix=N, fov_uas=fov)
    daps = dataclasses.replace(setup.daps, inference_operator="test", fit_blur_uas=args.fit_blur_uas, **args.daps)
    setup = dataclasses.replace(setup, dps=dataclasses.replace(setup.dps, fit_blur_uas=args.fit_blur_uas))
    trk = tracks(args.m87)
    cases, t0 = [], time.perf_counter()
    for si, split in enumerate(args.splits):
        cfg = split_config(split, "test", BroadImageConfig(npix=N, fov_uas=fov))
        truths, _ = sample_family_images(
            args.first_image + args.images, cfg, generator=torch.Generator().manual_seed(2024 + si)
        )
        truths = truths[args.first_image :, 0].double().numpy()
        for ti, name in enumerate(TRACKS):
            obs, clean, meta = [], [], []
            for i in range(args.images):
                for seed in range(args.seeds):
                    o, c = observe(trk[name], truths[i], psize, np.random.default_rng([args.seed, si, ti, i, seed]))
                    obs.append(o), clean.append(c), meta.append((i, seed))
            flux = [float(truths[i].sum()) for i, _ in meta]
            closures = [closure_observation(o) for o in obs]
            g = torch.Generator(device=prior.device).manual_seed(args.seed + 11)
            post = reconstruct_closure(prior, obs, flux, num_samples=args.num_samples, generator=g, settings=daps,
                                       closures=closures, progress=False)  # fmt: skip
            dps = reconstruct_closure(prior, obs, flux, num_samples=setup.dps_samples, generator=g, settings=setup.dps,
                                      closures=closures, progress=False)  # fmt: skip
            for k, (i, seed) in enumerate(meta):
                truth = truths[i]
                est = {
                    "daps": post.estimate[k, 0].cpu().numpy(),
                    "dps": dps.estimate[k, 0].cpu().numpy(),
                    "rml": rml_baseline(
                        obs[k],
                        N,
                        psize,
                        flux[k],
                        closure=closures[k],
                        n_rounds=setup.rml_rounds,
                        n_iter=setup.rml_iter,
                        target_chi2=setup.rml_target,
                        max_reweight=setup.rml_reweight,
                    ),
                    "dirty": dirty_image(clean[k], N, psize, flux[k]),
                }
                row = {"split": split, "track": name, "image": args.first_image + i, "seed": seed, "n_vis": len(obs[k])}
                for m, img in est.items():
                    met = image_metrics(
                        img, truth, obs[k], psize, blur_fwhm_uas=setup.blur_fwhm_uas, closure=closures[k]
                    )
                    row[m] = {key: met[key] for key in ("blur_psnr", "nxcorr", "chi2_cphase", "chi2_logcamp")}
                row["daps"]["fit_fraction"] = float(post.fits[:, k].float().mean())
                row["dps"]["fit_fraction"] = float(dps.fits[:, k].float().mean())
                kept = post.kept[:, k].cpu().numpy()
                samples = post.samples[:, k, 0].cpu().numpy()[kept]
                if len(samples) >= 2:
                    iv = ring_intervals(samples, psize)
                    tr = ring_fit(truth, psize)
                    row["calibration"] = {
                        "n_samples": len(samples),
                        "truth": {"diameter_uas": tr.diameter_uas, "pa_deg": tr.pa_deg},
                        "raw": {q: iv[q] for q in QUANTITIES},
                        **{f"d_in{q}": inside(tr.diameter_uas, iv["diameter_uas"], q, "diameter_uas") for q in LEVELS},
                        **{f"pa_in{q}": inside(tr.pa_deg, iv["pa_deg"], q, "pa_deg") for q in LEVELS},
                    }
                cases.append(row)
            print(f"{split} / {name}: {len(meta)} observations ({time.perf_counter() - t0:.0f} s)", flush=True)
            if args.out is not None:  # partial results after every (family, track): a long run stopped keeps them
                args.out.mkdir(parents=True, exist_ok=True)
                partial = {"partial": True, "cases": cases, "summary": summarise(cases)}
                (args.out / "results.json").write_text(json.dumps(partial, indent=2) + "\n")
    return {"prior": str(args.prior), "grid": {"npix": N, "fov_uas": fov}, "daps": dataclasses.asdict(daps),
            "first_image": args.first_image, "num_samples": args.num_samples,
            "seeds": args.seeds, "images": args.images, "cases": cases, "summary": summarise(cases),
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def summarise(cases: list[dict]) -> dict:
    """Means per (family, track) and method, the target checks, and the calibration fractions."""
    out: dict = {"by_family_track": {}, "calibration": {}}
    groups = sorted({(c["split"], c["track"]) for c in cases})
    for split, track in groups:
        rows = [c for c in cases if c["split"] == split and c["track"] == track]
        out["by_family_track"][f"{split}/{track}"] = {
            m: {k: float(np.nanmean([r[m][k] for r in rows])) for k in rows[0][m]}
            for m in ("daps", "dps", "rml", "dirty")
        }
    fams = out["by_family_track"]
    gaps = {g: max(v["daps"]["blur_psnr"], v["dps"]["blur_psnr"]) - v["rml"]["blur_psnr"] for g, v in fams.items()}
    out["best_diffusion_minus_rml_db"] = gaps
    out["mean_gap_db"] = float(np.mean(list(gaps.values()))) if gaps else float("nan")
    out["target_met"] = bool(gaps) and out["mean_gap_db"] >= 1.0 and min(gaps.values()) >= -1.0
    cal = [c["calibration"] for c in cases if "calibration" in c]
    if cal:
        out["calibration"] = {
            k: float(np.mean([c[k] for c in cal])) for k in ("d_in68", "d_in95", "pa_in68", "pa_in95")
        }
        out["calibration"]["cases"] = len(cal)
        keys = ("split", "track", "image", "seed")
        rows = [{**{k: c.get(k) for k in keys}, **c["calibration"]} for c in cases if "raw" in c.get("calibration", {})]
        if rows:
            out["calibration"]["n_samples_median"] = float(np.median([c["n_samples"] for c in rows]))
            # factors learned on one family, tested on the other (the hardest shift); then on exchangeable groups
            out["conformal"] = cross_fit_coverage(rows, group="split")
            out["conformal"]["calibrated_cross_fit_by"] = {
                g: cross_fit_coverage(rows, group=g)["calibrated_cross_fit"]
                for g in ("seed", "image", "track")
                if len({r[g] for r in rows}) > 1
            }
    return out


def _command(res: dict) -> str:
    """The command that reproduces the results ``res``: with ``--fit-blur-uas`` and ``--daps`` for the DAPS
    settings that differ from the example's (as ``run`` sets them)."""
    cmd = (f"python benchmarks/eht_out_of_family.py --prior {res['prior']} --first-image {res.get('first_image', 0)} "
           f"--images {res['images']} --seeds {res['seeds']} --num-samples {res['num_samples']}")  # fmt: skip
    if "daps" not in res:
        return cmd
    default = json.loads(json.dumps(dataclasses.asdict(dataclasses.replace(Setup().daps, inference_operator="test"))))
    changed = {k: v for k, v in res["daps"].items() if default.get(k) != v}
    blur = changed.pop("fit_blur_uas", None)
    if blur is not None:
        cmd += f" --fit-blur-uas {blur:g}"
    if changed:
        cmd += f" --daps '{json.dumps(changed, sort_keys=True)}'"
    return cmd


def pooled_results(paths: list[Path]) -> dict:
    """The cases of several results files of one prior and one DAPS setting (e.g. ``--first-image 1`` and ``2``),
    pooled and summarised again, with the commands that made them (``; ``-joined)."""
    try:
        runs, cases = pooled_cases(paths)
    except ValueError as err:
        raise SystemExit(f"eht_out_of_family: {err}") from None
    return {"files": [str(q) for q in paths], "command": "; ".join(_command(r) for r in runs), "cases": cases,
            "summary": summarise(cases)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", default="black-hole-eht-64", help="shipped prior name, exported prior or checkpoint")
    p.add_argument("--m87", type=Path, default=M87, help="the EHT 2017 M87* UVFITS file (its coverage is used)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--images", type=int, default=4, help="test images per family")
    p.add_argument("--first-image", type=int, default=0,
                   help="skip this many images of each family's fixed draw (cases not used to choose settings)")
    p.add_argument("--daps", type=json.loads, default={}, metavar="JSON",
                   help='DAPS settings changed from the example\'s, e.g. \'{"map_below": 0, "resample_at": []}\'')
    p.add_argument("--seeds", type=int, default=3, help="noise seeds per image and track")
    p.add_argument("--num-samples", type=int, default=32, help="DAPS posterior samples per observation")
    p.add_argument(
        "--fit-blur-uas", type=float, default=0.0,
        help="restart the samples that do not fit from a blurred copy of this FWHM (SamplerSettings.fit_blur_uas)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/eht_ood"))
    p.add_argument("--quick", action="store_true", help="tiny sampler settings (a smoke test; numbers meaningless)")
    p.add_argument("--write-card", type=Path, nargs="+", metavar="RESULTS",
                   help="run nothing: store the ring-interval calibration factors of RESULTS (results.json files of "
                        "this benchmark, same prior and DAPS settings; their cases pooled) in the card of the shipped "
                        "prior --prior")  # fmt: skip
    args = p.parse_args(argv)
    if args.write_card is not None:
        res = pooled_results(args.write_card)
        if "conformal" not in res["summary"]:
            raise SystemExit(f"eht_out_of_family: {args.write_card} hold no calibration cases (summary.conformal)")
        entry = card_entry(res["summary"]["conformal"], command=res["command"], results=", ".join(res["files"]))
        print(f"wrote {write_card(pretrained.path(args.prior), entry)}: {entry['factors']} from {entry['cases']} cases")
        return res
    if not args.m87.is_file():
        raise SystemExit(f"eht_out_of_family: --m87 {args.m87} is not a file; pass the EHT 2017 M87* UVFITS file")
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    s = res["summary"]
    print(f"{'family/track':28s}" + "".join(f"{m + ' bPSNR':>14s}" for m in ("daps", "dps", "rml", "dirty")))
    for g, v in s["by_family_track"].items():
        print(f"{g:28s}" + "".join(f"{v[m]['blur_psnr']:14.2f}" for m in ("daps", "dps", "rml", "dirty")))
    print(f"best diffusion - RML: mean {s['mean_gap_db']:.2f} dB; target met: {s['target_met']}")
    print(f"calibration (raw intervals of the kept samples): {s['calibration']}")
    if "conformal" in s:
        c = s["conformal"]
        print(f"conformal, factors learned on the other family: {c['calibrated_cross_fit']}")
        for g, cov in c["calibrated_cross_fit_by"].items():
            print(f"conformal, factors learned on the other {g}s: {cov}")
        print(f"factors by held-out family: {c['factors_by_held_out_group']}; on all cases: {c['factors_all']}")
    fit = {g: round(v["daps"]["fit_fraction"], 2) for g, v in s["by_family_track"].items()}
    print(f"DAPS samples fitting both closure sets in [0.7, 1.3]: {fit}")
    print(f"results in {args.out / 'results.json'} ({res['seconds']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
