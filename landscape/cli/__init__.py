"""Command line: ``landscape train|info|curve|plane|...``.

Each sub-command is added by a small ``_add_<name>(subparsers)`` function that sets ``func``;
study options and their defaults come from the study kinds' config dataclasses
(:mod:`landscape.cli.options`). Every command returns an exit status and reports bad input as
one ``error:`` line.
"""

from __future__ import annotations

import argparse
import sys

from landscape.checkpoints import CheckpointError
from landscape.cli import manage, report, runs, studies
from landscape.data import DataError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landscape", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (*runs.COMMANDS, *manage.COMMANDS, *studies.COMMANDS, *report.COMMANDS):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``landscape`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, DataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
