"""``ambient-science`` command line: one subcommand per job, each defined in the module that does the job.

Subcommands are imported lazily, so ``ambient-science --help`` stays fast and a missing optional
dependency of one subcommand does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ambient_science.version import __version__

__all__ = ["main"]

# subcommand -> (module defining ``add_arguments(parser)`` and ``run(args) -> int``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": (
        "ambient_science.cli.prepare",
        "raw data (e.g. fastMRI) -> an undersampled measurement file",
    ),
    "train": ("ambient_science.cli.train", "train a diffusion prior (ambient or clean) from a config"),
    "reconstruct": ("ambient_science.cli.reconstruct", "posterior sampling from a checkpoint and a measurement file"),
    "export-prior": (
        "ambient_science.cli.export",
        "a training run -> a shipped prior (EMA weights, config and model card)",
    ),
    "audit": ("ambient_science.cli.audit", "memorisation audit: generated samples vs their nearest training images"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="ambient-science",
        description="Train diffusion priors from corrupted measurements only, and reconstruct with them.",
    )
    parser.add_argument("--version", action="version", version=f"ambient-science {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
