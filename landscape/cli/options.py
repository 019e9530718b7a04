"""Command-line options made from the config dataclasses: one source of truth for defaults.

Each field ``name: type = default  # comment`` becomes ``--name`` (underscores as dashes) with
that default, and the comment, as its help; ``config_from`` builds the config back from the
parsed arguments.

A config may be named by its dotted path (``"landscape.curves:CurveConfig"``) instead of the
class: its fields are then read from the module's source (:func:`light_fields`) without
importing it, so ``landscape curve --help`` and an argument error answer before torch loads.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.util
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["add_config", "config_from", "field_help", "light_constant", "light_fields"]

_FIELD = re.compile(r"^\s+(\w+)\s*:[^=]*=.*#\s*(?P<help>.+)$")


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """The comment after each field of a dataclass (its documentation)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        out.update(_help_of(inspect.getsource(klass).splitlines()))
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


def _light_class(module: str, name: str) -> list[Option]:
    """The scalar fields of dataclass ``name`` in ``module`` (bases first), from the source.

    Raises:
        ValueError: a field this reader cannot evaluate without importing (the caller then
            imports the class).
    """
    tree, lines = _module_tree(module)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    found: dict[str, Option] = {}
    for base in node.bases:  # a base imported by name: ``from landscape.x import Base``
        source = next(
            (i.module for i in tree.body if isinstance(i, ast.ImportFrom)
             for a in i.names if isinstance(base, ast.Name) and (a.asname or a.name) == base.id),
            module,
        )  # fmt: skip
        found.update({o.name: o for o in _light_class(source, ast.unparse(base))})
    helps = _help_of(lines[node.lineno - 1 : node.end_lineno])
    scope = {"int": int, "float": float, "str": str, "bool": bool, "None": None}
    own: list[str] = []
    if any(
        isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
        and "self." in ast.unparse(n).split("=")[0]
        for f in node.body if isinstance(f, ast.FunctionDef) for n in ast.walk(f)
    ):  # fmt: skip
        raise ValueError(f"{name} rewrites its fields: its defaults need the class")
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        own.append(item.target.id)
        try:
            hint = eval(ast.unparse(item.annotation), {"__builtins__": {}}, scope)  # noqa: S307
        except (NameError, AttributeError):
            continue  # not a scalar (a nested config): set by the command itself
        kind, optional = _scalar(hint)
        if kind not in (int, float, str, bool):
            continue
        if item.value is None:
            raise ValueError(f"{name}.{item.target.id} has no default")
        default = ast.literal_eval(item.value)  # ValueError when not a literal
        found[item.target.id] = Option(
            item.target.id, kind, optional, default, helps.get(item.target.id, "")
        )
    # The config's own fields first, then the shared ones it inherits (as add_config orders).
    return [found[n] for n in own if n in found] + [o for n, o in found.items() if n not in own]


def light_fields(path: str) -> list[Option]:
    """The options of the config ``"module:Class"``, from its source when the module is not
    imported yet, else from the class (the same list either way; tests compare them)."""
    module, name = path.split(":")
    if module not in sys.modules:
        try:
            return _light_class(module, name)
        except (ValueError, StopIteration, SyntaxError):
            pass  # an unusual field: import the class
    cls = getattr(importlib.import_module(module), name)
    return _class_fields(cls)


def light_constant(path: str) -> Any:
    """A literal module constant ``"module:NAME"`` (e.g. option choices) without importing."""
    module, name = path.split(":")
    if module in sys.modules:
        return getattr(sys.modules[module], name)
    tree, _ = _module_tree(module)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    return getattr(importlib.import_module(module), name)


def _class_fields(cls: type) -> list[Option]:
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    defaults = cls()
    own = cls.__dict__.get("__annotations__", {})
    out = []
    # The config's own fields first, then the shared ones it inherits.
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        kind, optional = _scalar(hints[f.name])
        if kind in (int, float, str, bool):
            out.append(
                Option(f.name, kind, optional, getattr(defaults, f.name), helps.get(f.name, ""))
            )
    return out


class Option(NamedTuple):
    """One scalar field of a config: its name, type, whether None is allowed, default, help."""

    name: str
    kind: type
    optional: bool
    default: Any
    help: str


def _help_of(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
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
    cls: type | str,
    *,
    skip: tuple[str, ...] = (),
    choices: dict[str, tuple] | None = None,
) -> None:
    """Add one option per scalar field of the dataclass ``cls`` (except ``skip``).

    ``cls`` may be a ``"module:Class"`` path: its options then come from the source
    (:func:`light_fields`), and the module is imported only when the command runs.
    """
    fields = light_fields(cls) if isinstance(cls, str) else _class_fields(cls)
    for f in fields:
        if f.name in skip:
            continue
        # argparse %-formats help texts: a literal % in a comment ("50%") must be doubled
        text = f"{f.help} (default: {f.default})".strip().replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if f.kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=text
            )
            continue
        parse = _parse_optional(f.kind) if f.optional else f.kind
        parser.add_argument(
            flag, type=parse, default=f.default, help=text, choices=(choices or {}).get(f.name)
        )


def config_from(args: argparse.Namespace, cls: type, **overrides: Any) -> Any:
    """The dataclass ``cls`` from the parsed options that ``add_config`` added."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return cls(**{**values, **overrides})
