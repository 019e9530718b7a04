"""Command-line options made from the config dataclasses: one source of truth for defaults.

Each field ``name: type = default  # comment`` becomes ``--name`` (underscores as dashes) with
that default, and the comment, as its help; a ``list[int]`` (or float, str) field takes a
comma-separated list. ``config_from`` builds the config back from the parsed arguments.

The configs live in the torch-free :mod:`landscape.configs`, so a command builds (and so
checks) its config before it imports torch, and ``--help`` never imports it. Option choices
kept in torch modules (the model registry) are read from the module's source instead
(:func:`light_constant`, :func:`light_keys`), so every ``landscape <cmd> --help`` and argument
error answers before torch loads.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.util
import inspect
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Option", "add_config", "config_fields", "config_from", "light_constant", "light_keys"]


@functools.cache
def _field_help(cls: type) -> dict[str, str]:
    """The comment after each field of a dataclass (its documentation)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        lines = textwrap.dedent(inspect.getsource(klass)).splitlines()
        out.update(_help_of(ast.parse("\n".join(lines)).body[0], lines))
    return out


@functools.cache
def _module_tree(module: str) -> tuple[ast.Module, list[str]]:
    """The parsed source of a module (found, not imported) and its lines."""
    # Found beside its top-level package: find_spec("a.b.c") would import a.b's __init__.
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        raise ImportError(f"no module {module}")
    path = Path(spec.origin).parent.joinpath(*rest.split(".")) if rest else Path(spec.origin)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    text = path.read_text(encoding="utf-8")
    return ast.parse(text), text.splitlines()


def _constant(module: str, name: str) -> ast.expr | None:
    """The value assigned to module constant ``name`` (``NAME = ...`` or ``NAME: T = ...``)."""
    tree, _ = _module_tree(module)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.value
    return None


def light_constant(path: str) -> Any:
    """A literal module constant ``"module:NAME"`` (e.g. option choices) without importing."""
    module, name = path.split(":")
    value = None if module in sys.modules else _constant(module, name)
    if value is None:
        return getattr(importlib.import_module(module), name)
    return ast.literal_eval(value)


def light_keys(path: str) -> tuple[str, ...]:
    """The keys of a module's dict constant ``"module:NAME"`` (a registry of names), in order,
    without importing the module when they are literals."""
    module, name = path.split(":")
    value = None if module in sys.modules else _constant(module, name)
    if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) for k in value.keys):
        return tuple(k.value for k in value.keys)
    return tuple(getattr(importlib.import_module(module), name))


def config_fields(cls: type) -> list[Option]:
    """The scalar and list fields of the config dataclass ``cls``: its own first, then the
    shared ones it inherits."""
    hints = typing.get_type_hints(cls)
    helps = _field_help(cls)
    own = cls.__dict__.get("__annotations__", {})
    out = []
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        kind, optional, many = _scalar(hints[f.name])
        if kind in (int, float, str, bool):
            # The declared default, not an instance's: __post_init__ may derive a field from
            # others (SliceConfig.span from direction), and must see what the user left unset.
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            out.append(Option(f.name, kind, optional, default, helps.get(f.name, ""), many))
    return out


class Option(NamedTuple):
    """One field of a config: its name, type (of each value when a list), whether None is
    allowed, default, help, and whether it is a list."""

    name: str
    kind: type
    optional: bool
    default: Any
    help: str
    many: bool = False


def _help_of(node: ast.ClassDef, lines: list[str]) -> dict[str, str]:
    """The comment on each field's lines (``name: type = default  # comment``, also when the
    formatter splits the default over lines) of a class whose source ``lines`` are given."""
    out: dict[str, str] = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            text = lines[item.lineno - 1 : item.end_lineno]
            comments = [line.split("#", 1)[1].strip() for line in text if "#" in line]
            if comments:
                out[item.target.id] = " ".join(comments)
    return out


def _scalar(hint: Any) -> tuple[type, bool, bool]:
    """(the type to parse each value with, whether None is allowed, whether a list) of a
    field's annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True, False
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], False, True
    return hint, False, False


def _parse_optional(kind: type):
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _comma_list(kind: type):
    """An argparse type: "a,b,c" parsed into ``[kind(a), kind(b), kind(c)]``."""

    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from err
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values

    parse.__name__ = f"list of {kind.__name__}"
    return parse


def add_config(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
    choices: dict[str, tuple] | None = None,
) -> None:
    """Add one option per scalar or list field of the config dataclass ``cls`` (except
    ``skip``). The ``required`` options show their default as an example instead.
    """
    for f in config_fields(cls):
        if f.name in skip:
            continue
        shown = ",".join(map(str, f.default)) if f.many else f.default
        tail = f", e.g. {shown} (required)" if f.name in required else f" (default: {shown})"
        # argparse %-formats help texts: a literal % in a comment ("50%") must be doubled
        text = (f.help + (", comma-separated" if f.many else "") + tail).strip()
        text = text.replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if f.kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=text
            )
            continue
        parse = _comma_list(f.kind) if f.many else f.kind
        given = {"required": True} if f.name in required else {"default": f.default}
        parser.add_argument(
            flag, type=_parse_optional(parse) if f.optional else parse, help=text,
            choices=(choices or {}).get(f.name), **given,
        )  # fmt: skip


def config_from(args: argparse.Namespace, cls: type, **overrides: Any) -> Any:
    """The dataclass ``cls`` from the parsed options that ``add_config`` added."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return cls(**{**values, **overrides})
