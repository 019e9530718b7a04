"""Command line: ``landscape train|info|curve|plane|...``.

Each sub-command is added by a small ``_add_<name>(subparsers)`` function that sets ``func``;
study options and their defaults come from the study kinds' config dataclasses
(:mod:`landscape.cli.options`). Every command returns an exit status and reports bad input as
one ``error:`` line.

``landscape --help`` lists the commands from :data:`COMMANDS` (a static table) and
``landscape <cmd> ...`` builds only that command's parser, so help and argument errors answer
without importing torch (issue 15: ``landscape --help`` took 3.3 s, 2.6 s of it ``import
torch``); tests check the table against the commands' own help.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable

__all__ = ["COMMANDS", "build_parser", "main"]

# command: (module of landscape.cli that adds it, its one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("runs", "train SGD / gRDA / gRDAM with trajectory snapshots"),
    "defaults": ("runs", "regenerate the bundled default digits runs"),
    "info": ("runs", "metadata, metrics, parameter count and sparsity"),
    "import": ("runs", "convert a model or curve file of the mode-connectivity code"),
    "app": ("runs", "start the dashboard (http://localhost:8501)"),
    "sweep": ("runs", "train a gRDA (c, mu, seed) grid; sparsity-accuracy frontier"),
    "prune": ("runs", "magnitude-prune a checkpoint, optionally fine-tune"),
    "masks": ("runs", "zero-mask stability over a run's trajectory snapshots"),
    "upload": ("runs", "keep a checkpoint for studies, like the app's Upload page"),
    "study": (
        "manage",
        "list the studies, `study new NAME CKPT...` (also `study NAME CKPT...`) names one "
        "from two or more checkpoints, `study rm NAME` deletes one",
    ),
    "uploads": ("manage", "list the uploaded checkpoints, or delete some (rm HASH)"),
    "curve": ("studies", "fit a Bezier curve between two minima; loss along it"),
    "plane": ("studies", "loss/accuracy on the plane through A, a bend or C, and B"),
    "pca": ("studies", "loss/accuracy on the PCA plane of training trajectories"),
    "random-plane": ("studies", "random filter-normalised plane around A"),
    "slice": ("studies", "1D loss/accuracy along delta, random or top eigenvector"),
    "hessian": ("studies", "top Hessian eigenvalues; pruning-direction overlaps"),
    "frontier": ("frontier", "curves from SGD to every model of a sweep; barriers"),
    "threeway": ("frontier", "SGD, gRDA and magnitude-pruned SGD: 3 curves, 1 plane"),
    "report": ("report", "one self-contained HTML file: a study's computed charts and verdicts"),
}


def _add(sub: argparse._SubParsersAction, name: str) -> None:
    """Add command ``name`` with all its options (imports only its own module)."""
    module = importlib.import_module(f"landscape.cli.{COMMANDS[name][0]}")
    getattr(module, "_add_" + name.replace("-", "_"))(sub)


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``landscape`` parser.

    Args:
        commands: the commands built with their options (None: all); the others are listed
            with their help only.
    """
    full = set(COMMANDS if commands is None else commands)
    parser = argparse.ArgumentParser(prog="landscape", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, text) in COMMANDS.items():
        if name in full:
            _add(sub, name)
        else:
            sub.add_parser(name, help=text)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not an option), if any."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``landscape`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command(argv)
    args = build_parser(() if command is None else (command,)).parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:  # CheckpointError, DataError: ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
