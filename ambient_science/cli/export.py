"""``ambient-science export-prior``: a training run -> a shipped prior (EMA weights + config + model card).

    ambient-science export-prior runs/pretrained/mri-knee-synthetic-r4 --name mri-knee-synthetic-r4 \\
        --kind ambient --config configs/pretrained/mri-knee-synthetic-r4.toml --commit 7c6279b

The card is filled from the run itself (steps, images seen, wall time from ``metrics.jsonl``, network size),
from its measurement file (records, the corruption law of the data) and from the arguments (what kind of
prior, the committed config whose text is stored, the commit that trained it, the machine). An ``ambient``
label on data that were not corrupted (or a ``clean`` label on data that were) is refused. The model cards
of every exported prior in the output root are then rendered into its ``README.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "build_card", "corruption_law", "render_cards", "run", "training_time"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="training run (or checkpoints/ or checkpoint-<step>) directory")
    parser.add_argument("--name", required=True, help="the prior's name (its directory under the output root)")
    parser.add_argument("--kind", required=True, choices=("ambient", "em", "clean"),
                        help="ambient: the ambient loss on corrupted data; em: a clean-image prior trained by EM "
                             "from corrupted data (train.method = 'em'); clean: a baseline on fully sampled "
                             "data")  # fmt: skip
    parser.add_argument("--config", type=Path, required=True, help="the committed training config (text is stored)")
    parser.add_argument("--commit", default=None, help="commit that trained it (default: git HEAD of --config)")
    parser.add_argument("--machine", default=None, help="where it trained (default: this machine's description)")
    parser.add_argument("--notes", default="", help="free text for the card (e.g. 'CPU shared by 3 trainings')")
    parser.add_argument("--out-root", type=Path, default=None, help="default: the installed ambient_science.pretrained")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing prior of that name")
    parser.add_argument("--fit-scorer", type=Path, default=None,
                        help="an exported ambient prior of the same training data that scores this prior's fit test "
                             "(for an em or clean prior, whose network cannot: copied in, its calibrated fit entry "
                             "becomes this prior's)")  # fmt: skip


def corruption_law(data_family: dict[str, Any], train_family: dict[str, Any]) -> str:
    """One line naming how the training data were corrupted, or ``"none"`` for fully sampled images; the further
    corruption of training (``train_family``) where it has one."""
    name = data_family.get("family")
    if name == "clean":
        return "none"
    if name == "cartesian_mri":
        R = float(data_family.get("acceleration", 1.0))
        if R <= 1.0:
            return "none"
        law = (
            f"Cartesian {data_family.get('mask_kind')} phase-encode mask, R = {R:g}, "
            f"{100 * float(data_family.get('center_fraction', 0)):g} % fully sampled centre"
        )
        if "drop_fraction" not in train_family:  # trained without further corruption (EM: on posterior samples)
            return law
        drop = float(train_family["drop_fraction"])
        return f"{law}; further corruption drops {100 * drop:g} % of the observed non-centre columns"
    if name == "pixel_mask":
        p, delta = float(data_family.get("p", 0.0)), float(train_family.get("delta", 0.0))
        if p <= 0.0:
            return "none"
        return f"Bernoulli pixel mask hiding each pixel with p = {p:g}; further corruption hides δ = {delta:g} more"
    if name == "interferometer":
        array = data_family.get("array")
        array = array if isinstance(array, str) else "custom array"
        return (
            f"sparse visibilities of random {array} coverages ({data_family.get('npix')}² pixels over "
            f"{data_family.get('fov_uas')} µas, {100 * float(data_family.get('p_station_drop', 0)):g} % of stations "
            f"absent, thermal noise); further corruption drops stations / baselines / time blocks "
            f"(δ = {train_family.get('delta_station')} / {train_family.get('delta_baseline')} / "
            f"{train_family.get('delta_time')})"
        )
    return json.dumps(data_family, sort_keys=True)


def training_time(run_dir: Path, up_to_step: int | None = None, *, max_gap: float = 600.0) -> dict[str, float]:
    """Wall seconds of training up to ``up_to_step`` from the run's ``metrics.jsonl`` (gaps between logs of
    ``max_gap`` seconds or more, e.g. a stop before ``--resume``, are replaced by the logged seconds per step; 0:
    every gap, the optimizer steps' time only — EM's E-steps, between logs, are counted apart) and the mean
    images per second."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    logs = [m for m in lines if "time" in m and "step" in m and (up_to_step is None or m["step"] <= up_to_step)]
    if not logs:
        return {"wall_seconds": float("nan"), "images_per_second": float("nan")}
    seconds = logs[0]["step"] * logs[0].get("sec_per_step", 0.0)
    for a, b in itertools.pairwise(logs):
        dt = b["time"] - a["time"]
        steps = max(b["step"] - a["step"], 0)
        seconds += dt if 0 <= dt < max_gap else steps * b.get("sec_per_step", 0.0)
    images = logs[-1].get("images", 0)
    return {"wall_seconds": round(seconds, 1), "images_per_second": round(images / max(seconds, 1e-9), 2)}


def _git_head(where: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _machine() -> str:
    import torch

    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {platform.system()}, torch {torch.__version__}"


def _image_card(family: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """``{"image": {npix, fov_uas, pixel_size_uas, train_flux_jy}}`` for image-domain priors of an imaging grid
    (the interferometer family; ``train_flux_jy`` when the records were normalised to it), else nothing."""
    if "fov_uas" not in family or "npix" not in family:
        return {}
    image = {"npix": int(family["npix"]), "fov_uas": float(family["fov_uas"]),
             "pixel_size_uas": float(family["fov_uas"]) / int(family["npix"])}  # fmt: skip
    if metadata.get("train_flux_jy"):
        image["train_flux_jy"] = float(metadata["train_flux_jy"])
    return {"image": image}


def build_card(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The model card of the run's latest checkpoint (module docstring)."""
    from ambient_science.datasets.measurements import MeasurementFile
    from ambient_science.training.checkpoint import load_checkpoint, resolve_checkpoint

    ckpt = load_checkpoint(run_dir)
    config = ckpt.config
    run_root = resolve_checkpoint(run_dir).parent.parent
    data_path = Path(config["data"]["path"])
    data = MeasurementFile(data_path)
    law = corruption_law(data.family_config, config["family"])
    method = config["train"].get("method", "ambient")
    if args.kind in ("ambient", "em") and law == "none":
        raise ValueError(
            f"{data_path}: the training data are fully sampled (corruption 'none'); not an {args.kind} prior"
        )
    if args.kind == "clean" and law != "none":
        raise ValueError(f"{data_path}: the training data are corrupted ({law}); label the prior '{method}'")
    if (args.kind == "em") != (method == "em"):
        raise ValueError(f"the run trained with train.method = {method!r}; label the prior '{method}'")
    batch = int(config["train"]["batch_size"])
    n_params = sum(p.numel() for p in ckpt.network.parameters())
    commit = args.commit or _git_head(args.config.resolve().parent)
    return {
        "name": args.name,
        "kind": args.kind,
        "corruption": law,
        "data": {
            "file": str(data_path),
            "records": len(data),
            "source": data.metadata.get("source", "fastMRI-layout volumes (see config)"),
            "family": data.family_config,
        },
        **_image_card(data.family_config, data.metadata),
        "network": {"parameters": n_params, **config["network"]},
        "loss": config["loss"],
        "steps": ckpt.step,
        "batch_size": batch,
        "images_seen": ckpt.step * batch,
        **training_time(run_root, ckpt.step, max_gap=0.0 if method == "em" else 600.0),
        "machine": args.machine or _machine(),
        "notes": args.notes,
        "commit": commit,
        "config_file": args.config.as_posix(),
        "config_text": args.config.read_text(),
        "command": f"ambient-science train {args.config.as_posix()}",
        "exported": time.strftime("%Y-%m-%d"),
        **({"em": _em_card(args.config, run_root)} if method == "em" else {}),
    }


def _em_card(config_file: Path, run_root: Path) -> dict[str, Any]:
    """What an EM prior cost beyond its M-step images: the E-steps (network passes, seconds, from the run) and the
    initial prior (from the committed config's ``[em]``; the run's ``config.json`` holds the M-steps' config)."""
    from ambient_science.training.config import load_config_file
    from ambient_science.training.em import em_compute

    em = load_config_file(config_file).get("em", {})
    return {**em_compute(run_root), "init_prior": em.get("init_prior", ""),
            "images_per_round": em.get("images_per_round")}  # fmt: skip


def _em_row(em: dict[str, Any]) -> str:
    start = f"from `{em['init_prior']}`" if em.get("init_prior") else "from a Gaussian prior fitted to the data"
    return (
        f"| EM | {em['rounds']} rounds {start}; E-steps: {em['e_step_forwards']:,} network forward passes and "
        f"{em['e_step_vjps']:,} vector-Jacobian products, {em['e_step_seconds'] / 3600:.2f} h (besides the budget) |"
    )


def render_cards(root: Path) -> Path:
    """``root/README.md``: every exported prior's card, in prose and tables."""
    cards = []
    for p in sorted(root.iterdir()):
        if (p / "prior.json").is_file():
            cards.append(json.loads((p / "prior.json").read_text())["card"])
    out = [
        "# Shipped priors (model cards)",
        "",
        "Generated by `ambient-science export-prior` from each prior's `prior.json`; do not edit by hand.",
        "Load one with `ambient_science.pretrained.load(name)`; `--prior ambient_science/pretrained/<name>`",
        "works wherever a checkpoint does. Every prior was trained by this library's `ambient-science train`",
        "from the committed config quoted below, at the commit named; none saw a clean image unless its kind",
        "is `clean` (a baseline, trained on fully sampled images to measure what the corruption costs). An `em`",
        "prior is a clean-image prior trained by EM on posterior samples of the corrupted measurements.",
        "",
    ]
    for c in cards:
        hours = c["wall_seconds"] / 3600
        out += [
            f"## `{c['name']}` ({c['kind']})",
            "",
            "| | |",
            "|---|---|",
            f"| data | {c['data']['records']} records: {c['data']['source']} |",
            f"| corruption | {c['corruption']} |",
            f"| network | U-Net, {c['network']['parameters']:,} parameters (model_channels "
            f"{c['network'].get('model_channels')}, channel_mult {c['network'].get('channel_mult')}) |",
            f"| loss | {c['loss'].get('kind')} |",
            f"| budget | {c['steps']:,} steps × {c['batch_size']} = {c['images_seen']:,} images seen, "
            f"{hours:.2f} h wall ({c['images_per_second']} images/s) |",
            *([_em_row(c["em"])] if "em" in c else []),
            f"| machine | {c['machine']} |",
            f"| commit | `{c['commit']}` |",
            f"| exported | {c['exported']} |",
            "",
        ]
        if c.get("notes"):
            out += [c["notes"], ""]
        out += [f"Config `{c['config_file']}` (the `prepare` commands in its header make the data):", "", "```toml"]
        out += [c["config_text"].rstrip(), "```", ""]
    path = root / "README.md"
    path.write_text("\n".join(out))
    return path


def run(args: argparse.Namespace) -> int:
    from ambient_science.training.checkpoint import export_prior

    if args.out_root is None:
        from ambient_science import pretrained

        args.out_root = pretrained.ROOT
    if not args.config.is_file():
        raise FileNotFoundError(f"--config {args.config} does not exist; expected the committed training config")
    target = args.out_root / args.name
    if target.exists() and not args.overwrite:  # before any work: nothing is written
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    card = build_card(args.run, args)  # errors: one line, exit 2 (ambient_science.cli)
    out = export_prior(args.run, target, card=card, overwrite=args.overwrite, fit_scorer=args.fit_scorer)
    readme = render_cards(args.out_root)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(f"exported {args.name} ({card['kind']}, {card['images_seen']:,} images seen) to {out} ({size:.1f} MB)")
    print(f"model cards: {readme}")
    return 0
