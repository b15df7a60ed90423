"""``ambient-science`` command line: one subcommand per job, each defined in the module that does the job.

Subcommands are imported lazily, so ``ambient-science --help`` stays fast and a missing optional
dependency of one subcommand does not break the others.

Errors: a user error (a bad path, file, config value or argument: :data:`USER_ERRORS`) is one line on
stderr, ``ambient-science <command>: error: <what, naming the file / key and what was expected>``, and exit
code 2; ``--debug`` (anywhere on the command line) or ``AMBIENT_SCIENCE_DEBUG=1`` shows the traceback
instead. A training run that diverged (:class:`~ambient_science.training.trainer.NonFiniteError`) exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ambient_science.threads import configure_threads, prefer_passive_wait
from ambient_science.version import __version__

__all__ = ["USER_ERRORS", "main"]

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
    "calibrate-fit": (
        "ambient_science.cli.calibrate",
        "set an exported prior's fit-test threshold (and MRI fallback) from validation measurements",
    ),
}

DEBUG_ENV = "AMBIENT_SCIENCE_DEBUG"

# What a user can cause with a bad input, reported as one line (exit 2). The library's readers raise these
# with a message naming the file / key and what was expected; CheckpointError (a RuntimeError) is added
# lazily in ``_user_errors`` so that ``--help`` does not import torch.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error reported as one line (exit 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's module is imported to add its arguments."""
    parser = _Parser(
        prog="ambient-science",
        description="Train diffusion priors from corrupted measurements only, and reconstruct with them.",
        epilog=f"User errors print one line and exit 2; --debug (or {DEBUG_ENV}=1) shows the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"ambient-science {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors (also: anywhere in argv)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from ambient_science.training.checkpoint import CheckpointError

    return (*USER_ERRORS, CheckpointError)


def error_line(err: BaseException) -> str:
    """The message of ``err`` on one line (``KeyError`` without its quotes; an ``OSError`` with its file)."""
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    elif isinstance(err, OSError) and err.filename is not None and str(err.filename) not in str(err):
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    prefer_passive_wait()  # idle OpenMP threads sleep (effective before torch loads: ambient_science/threads.py)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help / --version (0) or a usage error (2, one line printed)
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    prog = f"ambient-science {args.command}"
    configure_threads()  # one intra-op thread per free core (AMBIENT_SCIENCE_THREADS / OMP_NUM_THREADS win)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        from ambient_science.training.trainer import NonFiniteError

        if isinstance(err, NonFiniteError):
            print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
            return 1
        if not isinstance(err, _user_errors()):
            raise
        print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
