"""``ambient-science train``: train a diffusion prior (ambient, or clean with the ``clean`` family) from a config.

    ambient-science train configs/pixel_mask_toy.toml --set data.path=toy.h5 --set train.steps=2000
    ambient-science train configs/pixel_mask_toy.toml --dry-run          # print the resolved config
    ambient-science train configs/pixel_mask_toy.toml --resume           # continue out_dir's latest checkpoint
    torchrun --nproc_per_node=2 -m ambient_science.cli train configs/pixel_mask_toy.toml   # DDP

Config format: :mod:`ambient_science.training.config`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "resolve", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="TOML or JSON config file (optional: all keys have defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (TOML syntax, e.g. train.lr=1e-4 or network.channel_mult=[1,2,2])",
    )
    parser.add_argument("--data", help="measurement file (= --set data.path=...)")
    parser.add_argument("--out-dir", help="run directory (= --set train.out_dir=...)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (= --set train.device=...)")
    parser.add_argument("--steps", type=int, help="optimizer steps (= --set train.steps=...)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="resume from a checkpoint, or (no value) from out_dir's latest one",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")


def resolve(args: argparse.Namespace):
    """The :class:`~ambient_science.training.config.RunConfig` from the file, ``--set`` and the shortcut flags."""
    from ambient_science.training.config import apply_overrides, load_config_file, run_config_from_dict

    raw = load_config_file(args.config) if args.config else {}
    shortcuts = {
        "data.path": args.data,
        "train.out_dir": args.out_dir,
        "train.device": args.device,
        "train.steps": args.steps,
        "train.resume": args.resume,
    }
    overrides = list(args.overrides) + [f"{k}={json.dumps(v)}" for k, v in shortcuts.items() if v is not None]
    return run_config_from_dict(apply_overrides(raw, overrides))


def _dry_run(config) -> dict:
    """The resolved config, plus the family and full network config when the data file is readable."""
    from ambient_science.pipelines.training import prepare_data
    from ambient_science.training.config import resolve_network_config

    out = config.to_dict()
    if config.data.path and Path(config.data.path).is_file():
        _, family = prepare_data(config)
        out["resolved"] = {
            "family": family.config(),
            "network": resolve_network_config(config.network, family).to_dict(),
            "total_steps": config.train.total_steps(),
        }
    return out


def run(args: argparse.Namespace) -> int:
    try:
        config = resolve(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"ambient-science train: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(_dry_run(config), indent=2, sort_keys=True))
        return 0
    from ambient_science.pipelines.training import train
    from ambient_science.training.checkpoint import CheckpointError
    from ambient_science.training.trainer import NonFiniteError

    try:
        result = train(config)
    except (CheckpointError, NonFiniteError, FileExistsError, FileNotFoundError) as err:
        print(f"ambient-science train: {err}", file=sys.stderr)
        return 1
    if result.checkpoint is not None:
        print(f"trained {result.step} steps ({result.images_seen} images); checkpoint: {result.checkpoint}")
    return 0
