"""``ambient-science train``: train a diffusion prior (ambient, or clean with the ``clean`` family) from a config.

    ambient-science train configs/pixel_mask_toy.toml --set data.path=toy.h5 --set train.steps=2000
    ambient-science train configs/pixel_mask_toy.toml --dry-run          # print the resolved config
    ambient-science train configs/pixel_mask_toy.toml --resume           # continue out_dir's latest checkpoint
    ambient-science train configs/pixel_mask_toy.toml --resume=auto      # ... or start fresh when there is none
    ambient-science train configs/pixel_mask_toy.toml --max-minutes 230  # stop cleanly with a checkpoint
    torchrun --nproc_per_node=2 -m ambient_science.cli train configs/pixel_mask_toy.toml   # DDP

Config format: :mod:`ambient_science.training.config`. Errors in the config, the data or the checkpoints
are one line and exit code 2 (``ambient_science.cli``); a run stopped by ``train.max_minutes`` exits 0, one
stopped by SIGTERM / SIGINT exits 128 + the signal number, both after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

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
        "--max-minutes", type=float, help="wall-clock budget; stop with a checkpoint (= --set train.max_minutes=...)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="resume from a checkpoint; no value: out_dir's latest one (an error when there is none); "
        "'auto': out_dir's latest one if any, else start fresh",
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
        "train.max_minutes": args.max_minutes,
        "train.resume": args.resume,
    }
    overrides = list(args.overrides) + [f"{k}={json.dumps(v)}" for k, v in shortcuts.items() if v is not None]
    return run_config_from_dict(apply_overrides(raw, overrides))


def _dry_run(config) -> dict:
    """The resolved config, plus the family and full network config when the data file is readable."""
    from ambient_science.pipelines.training import prepare_data
    from ambient_science.training.config import resolve_network_config

    out = config.to_dict()
    if config.data.path:  # the data must be readable: a dry run checks everything a run would
        _, family = prepare_data(config)
        out["resolved"] = {
            "family": family.config(),
            "network": resolve_network_config(config.network, family).to_dict(),
            "total_steps": config.train.total_steps(),
        }
    return out


def run(args: argparse.Namespace) -> int:
    """Errors propagate to :func:`ambient_science.cli.main` (one line, exit 2 for user errors)."""
    config = resolve(args)
    if args.dry_run:
        print(json.dumps(_dry_run(config), indent=2, sort_keys=True))
        return 0
    from ambient_science.pipelines.training import train

    result = train(config)
    if result.checkpoint is not None:
        print(f"trained {result.step} steps ({result.images_seen} images); checkpoint: {result.checkpoint}")
    if result.stopped is not None:
        print(f"stopped early ({result.stopped}); continue with --resume", file=sys.stderr)
        return 128 + result.signal if result.signal else 0
    return 0
