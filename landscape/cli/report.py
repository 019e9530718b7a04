"""The report command: one self-contained HTML file of a study (landscape.app.report)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["COMMANDS"]


def _cmd_report(args: argparse.Namespace) -> int:
    from landscape.app.report import build_report  # plotly only when a report is written
    from landscape.store import Store, atomic_write

    store = Store(args.store) if args.store else Store()
    text = build_report(args.study, store=store)
    out = Path(args.out)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text.encode())
    print(f"report of study {args.study!r} written to {out} ({len(text) / 1e6:.1f} MB)")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="one self-contained HTML file: a study's computed charts and verdicts"
    )
    p.add_argument("study", nargs="?", default="default", help="study name (default: default)")
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--store", default=None, help="result folder (default: $LANDSCAPE_HOME)")
    p.set_defaults(func=_cmd_report)


COMMANDS = (_add_report,)
