"""Learning curves (issue #19): held-out PSNR / SSIM against images seen, for priors of the same network trained
from R = 4 undersampled k-space (``ambient``), from the fully sampled images (``clean``) and by expectation
maximisation (``em``), tested at R = 4 and 8, on the SYNTHETIC knees and on a second SYNTHETIC family the knee
generator does not produce (the brain-like heads of ``ambient_science.datasets.anatomy``).

One command, resumable: every (family, prior) is ONE training run under ``<out>/<family>/<prior>/`` extended
milestone by milestone (``train.images`` raised, ``resume = "auto"``; constant learning rate after warm-up, so
the point at 30 k images is the 10 k run continued, never a fresh run); every evaluated point is stored in
``<out>/results.json`` and never recomputed. Interrupt it at any time and run the same command again. Two
invocations may run side by side on different priors of a family whose data are already prepared (the results
file is re-read before each point is added).

    OMP_NUM_THREADS=1 python benchmarks/learning_curves.py --out runs/curves \\
        --families knee --priors ambient,clean --milestones 10000,30000

Variants of a prior are rows of their own: ``--tag`` names a training variant (``--drop-fraction``, ``--loss``),
``--variants`` evaluates the checkpoint of each finished point called another way at inference (``Ã_inf``, draws
averaged, a higher schedule floor, a σ-switch between two operators, raw weights; :func:`parse_variant`), without
training again:

    OMP_NUM_THREADS=1 python benchmarks/learning_curves.py --families knee --priors ambient --milestones 10000 \\
        --variants 'law;full,smin=0.05;full,switch=0.2:law;law,k=4;full,weights=model'

Outputs (rewritten after every point): ``results.json``, ``table.md`` (one row per point, with the
zero-filled and L1-wavelet baselines of the same held-out slices) and ``curves.png``.

Besides PSNR / SSIM the table gives ``bg_hf``: the speckle measure of the issue, the mean energy of the
residual's (``|estimate| − truth``) highest spatial frequencies (outside half the Nyquist radius) over the
background pixels (truth below 5 % of the slice's maximum, at least 4 px from any pixel above it), relative to
the slice's mean squared truth, in dB (lower is smoother).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from ambient_science.datasets.anatomy import write_synthetic_brain_dataset
from ambient_science.pipelines.mri import PRESETS, prepare_volumes, source_volumes
from ambient_science.pipelines.mri_eval import evaluate
from ambient_science.pipelines.training import train
from ambient_science.sampling.prior import INFERENCE_OPERATORS, Prior, load_prior, trained_sigma_n
from ambient_science.sampling.schedules_inference import InferencePrior
from ambient_science.training.checkpoint import load_checkpoint
from ambient_science.training.config import DataConfig, EMConfig, RunConfig, TrainConfig
from ambient_science.training.em import em_compute
from ambient_science.training.losses import LossConfig

# the shipped knee priors' network (~0.4 M parameters) and optimiser, so the curves extend the shipped pair
NETWORK = {"kind": "unet", "model_channels": 16, "channel_mult": [1, 2, 2, 2], "num_blocks": 1, "attn_levels": [],
           "mid_attention": True, "sigma_data": 0.5}  # fmt: skip
BATCH, LR, WARMUP, EMA_HALFLIFE = 16, 1e-3, 2_000, 20_000
PRESET = PRESETS["cpu"]  # 48 train volumes x 12 slices (576 images), 4 test volumes, 128 px volumes on a 64 grid


# -- data -------------------------------------------------------------------------------------------------
def family_files(out: Path, family: str) -> tuple[list[Path], list[Path]]:
    if family == "knee":
        return source_volumes(out / "knee", PRESET, seed=0)
    root = out / family / "data" / "synthetic"
    sizes = {"recon_size": (PRESET.recon_size, PRESET.recon_size), "num_slices": PRESET.slices}
    result = []
    for name, count, seed in (("train", PRESET.train_volumes, 0), ("test", PRESET.test_volumes, 10_000)):
        folder = root / name
        files = sorted(folder.glob("*.h5"))
        if len(files) != count:
            print(f"writing {count} SYNTHETIC brain volumes to {folder}", flush=True)
            files = write_synthetic_brain_dataset(folder, count, seed=seed, overwrite=True, **sizes)
        result.append(files)
    return result[0], result[1]


def measurement_files(out: Path, family: str, test_rs: list[int], train_rs: tuple[int, ...] = (4,)) -> dict[str, Path]:
    train_files, test_files = family_files(out, family)
    data = out / family / "data"
    res = PRESET.resolution
    files = {
        f"train_r{R}": prepare_volumes(train_files, data / f"train_r{R}_{res}.h5", acceleration=R, resolution=res,
                                       seed=0, targets=False)
        for R in sorted({1, *train_rs})
    }  # fmt: skip
    for R in test_rs:
        files[f"test_r{R}"] = prepare_volumes(
            test_files, data / f"test_r{R}_{res}.h5", acceleration=R, resolution=res, seed=1, targets=True
        )
    return files


# -- training ---------------------------------------------------------------------------------------------
def run_config(prior: str, data: Path, run_dir: Path, images: int, args) -> RunConfig:
    """``ambient``: the ambient loss on R = 4 k-space; ``clean``: EDM on the fully sampled images (R = 1, no further
    corruption); ``em``: expectation maximisation on the R = 4 k-space (``--em``: EMConfig fields)."""
    return RunConfig(
        data=DataConfig(path=str(data)),
        family={"drop_fraction": 0.0} if prior == "clean" else {"drop_fraction": args.drop_fraction},
        network=dict(NETWORK),
        # the curves' "ambient" prior is the plain loss (hidden_weight 1) unless --loss says otherwise (e.g. _hw20)
        loss=LossConfig(kind="auto", **{"hidden_weight": 1.0, **args.loss}),
        train=TrainConfig(
            out_dir=str(run_dir), images=images, batch_size=BATCH, lr=LR, warmup_images=WARMUP,
            ema_halflife_images=EMA_HALFLIFE, checkpoint_every=max(2_000 // BATCH, 1), keep_checkpoints=2,
            log_every=25, seed=args.seed, device="cpu", progress=False, resume="auto",
            max_minutes=args.max_minutes_per_run, method="em" if prior == "em" else "ambient",
        ),
        em=EMConfig(**args.em),
    )  # fmt: skip


def train_to(prior: str, files: dict[str, Path], run_dir: Path, images: int, args):
    """Extend the run in ``run_dir`` to ``images`` images; returns (checkpoint, images seen, stopped reason)."""
    data = files["train_r1" if prior == "clean" else f"train_r{args.train_r}"]
    result = train(run_config(prior, data, run_dir, images, args))
    return result.checkpoint, result.images_seen, result.stopped


def train_seconds(run_dir: Path, images: int) -> float:
    """Training wall-clock of ``run_dir`` up to ``images`` images, from its ``metrics.jsonl`` (each line's
    ``sec_per_step`` times the steps since the previous line), plus the EM E-steps' seconds: the cost of a point
    whatever the number of restarts."""
    total, last_step = 0.0, 0
    path = run_dir / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    for m in sorted(lines, key=lambda m: m["step"]):
        if m["images"] > images:
            break
        total += m.get("sec_per_step", 0.0) * (m["step"] - last_step)
        last_step = m["step"]
    return round(total + em_compute(run_dir)["e_step_seconds"], 1)


# -- evaluation -------------------------------------------------------------------------------------------
def background_hf(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean high-frequency energy of the residual ``|estimate| − truth`` over the background, relative to the
    mean squared truth (dB, averaged over slices).

    Shape: estimate (B, C, h, w) complex or (B, h, w); truth (B, h, w)."""
    mag = estimate.abs().pow(2).sum(dim=1).sqrt() if estimate.ndim == 4 else estimate.abs()
    mag, truth = mag.float().cpu(), truth.float().cpu()
    h, w = mag.shape[-2:]
    fy, fx = torch.meshgrid(torch.fft.fftfreq(h), torch.fft.fftfreq(w), indexing="ij")
    high = (fy.square() + fx.square()).sqrt() > 0.25  # outside half the Nyquist radius (0.5 cycles / px)
    hf = torch.fft.ifft2(torch.fft.fft2(mag - truth) * high).real  # of the residual: the truth's own edges cancel
    # background: below 5 % of the slice's maximum and at least 4 px from anything above it (edges ring)
    tissue = (truth >= 0.05 * truth.amax(dim=(-2, -1), keepdim=True)).float()[:, None]
    background = torch.nn.functional.max_pool2d(tissue, 9, stride=1, padding=4)[:, 0] == 0
    out = []
    for i in range(mag.shape[0]):
        bg = background[i]
        if not bool(bg.any()):
            continue
        energy = hf[i][bg].square().mean() / truth[i].square().mean()
        out.append(10 * math.log10(float(energy) + 1e-12))
    return round(sum(out) / len(out), 2) if out else float("nan")


def parse_variant(spec: str) -> dict:
    """An inference variant ``OP[,k=K][,smin=S][,switch=SIGMA:OP2][,weights=model]`` (``--variants``) as a dict:
    ``operator`` (A-DPS's ``Ã_inf``: law, test, full, measurement), ``k`` (at least K draws of ``Ã_inf`` averaged),
    ``smin`` (the schedule stops at σ = S and returns the denoiser's estimate there), ``switch`` ((σ, OP2): OP2
    below σ), ``weights`` (``ema`` or the raw ``model`` weights). Its canonical spelling is the point's
    ``operator`` key (a bare OP: the points of earlier runs)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or parts[0] not in INFERENCE_OPERATORS:
        raise ValueError(f"variant {spec!r}: must start with one of {INFERENCE_OPERATORS}")
    out = {"operator": parts[0], "k": 1, "smin": None, "switch": None, "weights": "ema"}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        try:
            if key == "k":
                out["k"] = int(value)
            elif key == "smin":
                out["smin"] = float(value)
            elif key == "switch":
                sigma, _, op = value.partition(":")
                if op not in INFERENCE_OPERATORS:
                    raise ValueError(op)
                out["switch"] = (float(sigma), op)
            elif key == "weights" and value in ("ema", "model"):
                out["weights"] = value
            else:
                raise ValueError(key)
        except ValueError:
            raise ValueError(
                f"variant {spec!r}: bad part {part!r}; expected k=INT, smin=FLOAT, switch=FLOAT:OP "
                f"(OP one of {INFERENCE_OPERATORS}) or weights=ema|model"
            ) from None
    return out


def variant_label(v: dict) -> str:
    label = v["operator"]
    if v["k"] > 1:
        label += f",k={v['k']}"
    if v["smin"] is not None:
        label += f",smin={v['smin']:g}"
    if v["switch"] is not None:
        label += f",switch={v['switch'][0]:g}:{v['switch'][1]}"
    if v["weights"] != "ema":
        label += f",weights={v['weights']}"
    return label


def variant_prior(checkpoint: Path, v: dict) -> Prior:
    """The prior of ``checkpoint`` (EMA or raw weights) wrapped to be called as the variant ``v`` says."""
    if v["weights"] == "ema":
        prior = load_prior(checkpoint, map_location="cpu")
    else:
        ckpt = load_checkpoint(checkpoint, map_location="cpu", weights=v["weights"])
        prior = Prior(ckpt.network, ckpt.family, sigma_n=trained_sigma_n(ckpt.config))
        prior.config = dict(ckpt.config)
    if v["k"] == 1 and v["smin"] is None and v["switch"] is None:
        return prior
    switch_sigma, low = v["switch"] if v["switch"] is not None else (None, "law")
    return InferencePrior(prior, switch_sigma=switch_sigma, low_operator=low, min_draws=v["k"],
                          sigma_floor=v["smin"] or 0.0)  # fmt: skip


def evaluate_point(
    checkpoint: Path | Prior, label: str, test_file: Path, operator: str, args, l1_metrics: dict | None = None
) -> dict:
    """Every method of :func:`evaluate` on the held-out slices of ``test_file``, the prior of ``checkpoint`` called
    as the variant ``operator`` says. ``l1_metrics``: the L1-wavelet baseline of these same slices from an earlier
    point (not recomputed: it does not depend on the prior)."""
    v = parse_variant(operator)
    prior = checkpoint if isinstance(checkpoint, Prior) else variant_prior(checkpoint, v)
    t0 = time.perf_counter()
    metrics, images = evaluate(
        {label: prior}, test_file, test_slices=args.test_slices, l1_lams=() if l1_metrics else PRESET.l1_lams,
        one_step_draws=PRESET.one_step_draws, dps_samples=args.dps_samples, dps_steps=args.dps_steps,
        inference_operator=v["operator"], seed=0, device="cpu", progress=False, dps_antithetic=False,
    )  # fmt: skip
    for key, m in metrics.items():
        if key in images:
            m["bg_hf_db"] = background_hf(images[key], images["truth"])
    if l1_metrics:
        metrics["l1_wavelet"] = dict(l1_metrics)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return metrics


def compute_images(point: dict, init_prior: str | None) -> int:
    """An EM point's whole cost in training images (one forward + one backward pass each): its M-steps' images,
    its E-steps' forward and backward passes (two passes per image), and the images its initial prior
    (``em.init_prior``: a checkpoint's ``state.json``, or an exported prior's ``prior.json`` steps × batch) was
    trained on; an initial prior that records neither is counted as 0, with a message."""
    cost = point["em_compute"]
    total = point["images"] + (cost["e_step_forwards"] + cost["e_step_vjps"]) / 2
    if init_prior:
        state, card = Path(init_prior) / "state.json", Path(init_prior) / "prior.json"
        if state.is_file():
            total += json.loads(state.read_text())["extra"]["images_seen"]
        elif card.is_file():
            info = json.loads(card.read_text())
            total += int(info.get("step", 0)) * int(info.get("train", {}).get("batch_size", 0))
        else:
            print(f"compute_images: {init_prior} records no training images; its cost is not counted", flush=True)
    return round(total)


# -- results ----------------------------------------------------------------------------------------------
def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"points": []}


def find(results: dict, **key) -> dict | None:
    return next((p for p in results["points"] if all(p.get(k) == v for k, v in key.items())), None)


def add_point(out: Path, point: dict) -> dict:
    """Append ``point`` to ``out/results.json`` (re-read first: another invocation may have added points
    meanwhile) and rewrite the table and the figure; returns the results."""
    path = out / "results.json"
    results = load_results(path)
    results["points"].append(point)
    path.write_text(json.dumps(results, indent=1))
    write_table(out, results)
    write_plot(out, results)
    return results


def write_table(out: Path, results: dict) -> None:
    rows = ["| family | prior | images seen | train s | eval | R | PSNR one-step | PSNR A-DPS | SSIM A-DPS "
            "| bg_hf A-DPS dB | zero-filled | L1-wavelet |", "|---" * 12 + "|"]  # fmt: skip
    points = sorted(
        results["points"], key=lambda p: (p["family"], p["prior"], p["eval"], p["images"], p["R"], p["operator"])
    )
    for p in points:
        m = p["metrics"]
        label = p["prior"] + ("" if p["operator"] == _default_operator(p["prior"]) else f" ({p['operator']})")
        rows.append(
            f"| {p['family']} | {label} | {p['images']} | {p.get('train_seconds', '')} | {p['eval']} | {p['R']} "
            f"| {m['ambient_one_step']['psnr']:.2f} | {m['ambient_dps']['psnr']:.2f} | {m['ambient_dps']['ssim']:.3f} "
            f"| {m['ambient_dps']['bg_hf_db']:.1f} | {m['zero_filled']['psnr']:.2f} | {m['l1_wavelet']['psnr']:.2f} |"
        )
    (out / "table.md").write_text("\n".join(rows) + "\n")


def _default_operator(prior: str) -> str:
    return "law" if prior.startswith("em") else "full"


def write_plot(out: Path, results: dict, figure: Path | None = None) -> None:
    """The curves (A-DPS PSNR against images seen), one panel per family and test R, into ``figure`` (default
    ``out/curves.png``): a line per prior (a tagged training variant is a prior of its own) at its default
    inference operator and the evaluation most points share; other inference variants as grey markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({p["family"] for p in results["points"]})
    colours = {name: f"C{i % 10}" for i, name in enumerate(sorted({p["prior"] for p in results["points"]}))}
    rs = sorted({p["R"] for p in results["points"]})
    if not families:
        return
    fig, axes = plt.subplots(len(families), len(rs), figsize=(4.5 * len(rs), 3.5 * len(families)), squeeze=False)
    for i, fam in enumerate(families):
        for j, R in enumerate(rs):
            ax = axes[i, j]
            pts = [p for p in results["points"] if p["family"] == fam and p["R"] == R]
            evals = [p["eval"] for p in pts]
            main = max(set(evals), key=evals.count) if evals else None  # the evaluation most points share
            variant_label = "variants (tags, inference operators, other evaluations)"
            for prior, op, ev in sorted({(p["prior"], p["operator"], p["eval"]) for p in pts}):
                sel = [p for p in pts if (p["prior"], p["operator"], p["eval"]) == (prior, op, ev)]
                sel.sort(key=lambda p: p.get("compute_images", p["images"]))
                x = [p.get("compute_images", p["images"]) for p in sel]  # EM: its whole cost (compute_images)
                y = [p["metrics"]["ambient_dps"]["psnr"] for p in sel]
                if op == _default_operator(prior) and ev == main:
                    ax.plot(x, y, "o-", c=colours[prior], label=f"{prior} A-DPS")
                else:  # a variant of the gap study: a grey marker, one legend entry for all of them
                    ax.plot(x, y, "x", c="0.6", ms=5, label=variant_label)
                    variant_label = None
            if pts:
                for base, style in (("l1_wavelet", "--"), ("zero_filled", ":")):
                    ax.axhline(pts[0]["metrics"][base]["psnr"], ls=style, c="gray", label=base)
            ax.set_xscale("log")
            ax.set_xlabel("training images seen (EM: its whole cost in training images)")
            ax.set_ylabel("PSNR [dB]")
            ax.set_title(f"{fam}, test R = {R}")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, framealpha=0.5)
    fig.tight_layout()
    fig.savefig(figure or out / "curves.png", dpi=110)
    plt.close(fig)


def point_operators(prior: str, args) -> list[str]:
    """The canonical variant labels to evaluate for ``prior``: ``--variants`` when given, else the clean prior
    through its fully observed operator, the EM prior (a clean-family prior: 'law' is the identity) through
    'law', the ambient prior through ``--inference-operator``."""
    if args.variants:
        return [variant_label(parse_variant(v)) for v in args.variants.split(";") if v.strip()]
    return [{"clean": "full", "em": "law"}.get(prior, args.inference_operator)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/curves", help="run directories and results (resumed when present)")
    p.add_argument("--families", default="knee,brain", help="comma-separated: knee, brain")
    p.add_argument("--priors", default="ambient,clean", help="comma-separated: ambient, clean, em")
    p.add_argument("--train-r", type=int, default=4, help="acceleration of the corrupted training k-space "
                   "(ambient, em; give such runs their own --tag)")
    p.add_argument("--milestones", default="10000,30000,100000", help="images seen at each evaluated point")
    p.add_argument("--test-r", default="4,8")
    p.add_argument("--test-slices", type=int, default=PRESET.test_slices, help="middle slices per test volume")
    p.add_argument("--dps-samples", type=int, default=4)  # the in-run priors' count (no card)
    p.add_argument("--dps-steps", type=int, default=PRESET.dps_steps or 48)
    p.add_argument(
        "--inference-operator",
        default="full",
        help="A-DPS's Ã_inf of the ambient priors (clean: full; em: the identity)",
    )
    p.add_argument(
        "--variants",
        default="",
        help="semicolon-separated inference variants of the priors, evaluated on the checkpoint of each milestone\n"
        "(no training when that point exists): OP[,k=K][,smin=S][,switch=SIGMA:OP2][,weights=model], e.g.\n"
        "'law;full,smin=0.05;full,switch=0.2:law;law,k=4;full,weights=model' (replaces --inference-operator)",
    )
    p.add_argument("--drop-fraction", type=float, default=0.2, help="further corruption of the ambient loss")
    p.add_argument("--tag", default="", help="suffix of the run directory and label (a variant of a prior)")
    p.add_argument("--em", default="{}", help="EMConfig fields as JSON (prior em)")
    p.add_argument("--loss", default="{}", help="LossConfig fields as JSON, e.g. '{\"tilde_draws\": 4}' (with --tag)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes-per-run", type=float, default=0.0, help="stop a training run cleanly after this")
    p.add_argument("--replot", default="", metavar="RESULTS",
                   help="only draw the figure of a results file (e.g. docs/learning_curves.json, the README's\n"
                        "points) into --figure; no training, no evaluation")  # fmt: skip
    p.add_argument("--figure", default="", help="the figure's path (default <out>/curves.png)")
    p.add_argument("--shipped", action="store_true",
                   help="also evaluate the shipped knee pair (mri-knee-synthetic-r4-ambient / -clean: 1,152 slices,\n"
                        "136,000 images each) on the knee held-out slices with this protocol (their cards' sampler\n"
                        "settings set aside): points 'shipped_ambient' and 'shipped_clean'")  # fmt: skip
    args = p.parse_args(argv)
    if args.replot:
        if not Path(args.replot).is_file():
            p.error(f"--replot: no results file at {args.replot}")
        figure = Path(args.figure) if args.figure else Path(args.out) / "curves.png"
        figure.parent.mkdir(parents=True, exist_ok=True)
        write_plot(figure.parent, load_results(Path(args.replot)), figure)
        print(f"wrote {figure}")
        return
    args.em, args.loss = json.loads(args.em), json.loads(args.loss)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results_path = out / "results.json"
    results = load_results(results_path)
    test_rs = [int(r) for r in args.test_r.split(",")]
    ev = f"{args.test_slices}sl/{args.dps_samples}x{args.dps_steps}"  # evaluation settings, part of a point's key
    for family in args.families.split(","):
        files = measurement_files(out, family, test_rs, (args.train_r,))
        for images in [int(m) for m in args.milestones.split(",")]:
            for prior in args.priors.split(","):
                name = prior + args.tag
                todo = [
                    (op, R)
                    for op in point_operators(prior, args)
                    for R in test_rs
                    if not find(results, family=family, prior=name, images=images, R=R, operator=op, eval=ev)
                ]
                if not todo:
                    continue
                run_dir = out / family / name
                done = [
                    q for q in results["points"] if (q["family"], q["prior"], q["images"]) == (family, name, images)
                ]
                if done and Path(done[0]["checkpoint"]).exists():  # a new evaluation of a trained point
                    ckpt, seen = Path(done[0]["checkpoint"]), images
                elif done:  # its run went on and the checkpoint was rotated away: never evaluate a later one
                    print(f"{family} {name} at {images} images: checkpoint {done[0]['checkpoint']} is gone; skipped")
                    continue
                else:
                    print(f"[{time.strftime('%H:%M:%S')}] {family} {name}: training to {images} images", flush=True)
                    ckpt, seen, stopped = train_to(prior, files, run_dir, images, args)
                    if stopped:
                        print(f"stopped at {seen} images ({stopped}); run the same command again to continue",
                              flush=True)  # fmt: skip
                        return
                seconds = train_seconds(run_dir, images)
                for op, R in todo:
                    print(f"[{time.strftime('%H:%M:%S')}] evaluating {family} {name} at {seen} images, R = {R}, "
                          f"A-DPS through {op}", flush=True)  # fmt: skip
                    same = find(results, family=family, R=R, eval=ev)  # the baselines of the same slices
                    l1 = same["metrics"]["l1_wavelet"] if same else None
                    metrics = evaluate_point(ckpt, "ambient", files[f"test_r{R}"], op, args, l1_metrics=l1)
                    point = {
                        "family": family,
                        "prior": name,
                        "images": images,
                        "R": R,
                        "operator": op,
                        "eval": ev,
                        "checkpoint": str(ckpt),
                        "train_seconds": seconds,
                        "metrics": metrics,
                    }
                    if args.train_r != 4 and prior != "clean":
                        point["train_R"] = args.train_r
                    if prior == "em":
                        point["em_compute"] = em_compute(run_dir)
                        point["compute_images"] = compute_images(point, args.em.get("init_prior"))
                    results = add_point(out, point)
                    m = metrics["ambient_dps"]
                    print(f"  A-DPS {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}  bg_hf {m['bg_hf_db']:.1f} dB | "
                          f"one-step {metrics['ambient_one_step']['psnr']:.2f} | L1 {metrics['l1_wavelet']['psnr']:.2f}"
                          f" | zero-filled {metrics['zero_filled']['psnr']:.2f}", flush=True)  # fmt: skip
    if args.shipped and "knee" in args.families.split(","):
        evaluate_shipped(out, args, ev, test_rs)


SHIPPED = {"shipped_ambient": "mri-knee-synthetic-r4-ambient", "shipped_clean": "mri-knee-synthetic-clean"}


def evaluate_shipped(out: Path, args, ev: str, test_rs: list[int]) -> None:
    """The shipped knee pair on the knee held-out slices, A-DPS as every other point (their cards' sampler
    settings set aside: 48 steps from σ 80, no per-step step). Their training volumes (seeds 100–195) are disjoint
    from the held-out ones (10,000 on)."""
    from ambient_science import pretrained

    files = measurement_files(out, "knee", test_rs)
    results_path = out / "results.json"
    for name, card in SHIPPED.items():
        prior = pretrained.load(card)
        prior.config = {k: v for k, v in prior.config.items() if k != "sampler"}
        images = int(prior.config["step"]) * int(prior.config["train"]["batch_size"])  # the steps the card records
        for R in test_rs:
            results = load_results(results_path)
            if find(results, family="knee", prior=name, R=R, eval=ev):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] evaluating {card} (shipped) at R = {R}", flush=True)
            same = find(results, family="knee", R=R, eval=ev)
            l1 = same["metrics"]["l1_wavelet"] if same else None
            metrics = evaluate_point(prior, "ambient", files[f"test_r{R}"], "full", args, l1_metrics=l1)
            point = {"family": "knee", "prior": name, "images": images, "R": R, "operator": "full", "eval": ev,
                     "checkpoint": f"pretrained:{card}", "metrics": metrics}  # fmt: skip
            add_point(out, point)
            m = metrics["ambient_dps"]
            print(f"  A-DPS {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}  bg_hf {m['bg_hf_db']:.1f} dB", flush=True)


if __name__ == "__main__":
    main()
