"""Command-line options made from the config dataclasses: one source of truth for defaults.

Each field ``name: type = default  # comment`` becomes ``--name`` (underscores as dashes) with
that default, and the comment, as its help; ``config_from`` builds the config back from the
parsed arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import types
import typing
from typing import Any

__all__ = ["add_config", "config_from", "field_help"]

_FIELD = re.compile(r"^\s+(\w+)\s*:[^=]*=.*#\s*(?P<help>.+)$")


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """The comment after each field of a dataclass (its documentation)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for line in inspect.getsource(klass).splitlines():
            m = _FIELD.match(line)
            if m:
                out[m.group(1)] = m.group("help").strip()
    return out


def _scalar(hint: Any) -> tuple[type, bool]:
    """(the type to parse with, whether None is allowed) of a field's annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _parse_optional(kind: type):
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_config(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    choices: dict[str, tuple] | None = None,
) -> None:
    """Add one option per field of the dataclass ``cls`` (except ``skip``)."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    defaults = cls()
    own = cls.__dict__.get("__annotations__", {})
    # The config's own fields first, then the shared ones it inherits.
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        if f.name in skip:
            continue
        kind, optional = _scalar(hints[f.name])
        if kind not in (int, float, str, bool):
            continue  # nested configs are set by the command itself
        default = getattr(defaults, f.name)
        # argparse %-formats help texts: a literal % in a comment ("50%") must be doubled
        text = f"{helps.get(f.name, '')} (default: {default})".strip().replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=text
            )
            continue
        parse = _parse_optional(kind) if optional else kind
        parser.add_argument(
            flag, type=parse, default=default, help=text, choices=(choices or {}).get(f.name)
        )


def config_from(args: argparse.Namespace, cls: type, **overrides: Any) -> Any:
    """The dataclass ``cls`` from the parsed options that ``add_config`` added."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return cls(**{**values, **overrides})
