"""Command-line options made from the config dataclasses: one source of truth for defaults.

Each field ``name: type = default  # comment`` becomes ``--name`` (underscores as dashes) with
that default, and the comment, as its help; a ``list[int]`` (or float, str) field takes a
comma-separated list. ``config_from`` builds the config back from the parsed arguments.

A config is named by its dotted path (``"landscape.curves:CurveConfig"``): its fields are read
from the module's source (:func:`light_fields`) without importing it, as are option choices
(:func:`light_constant`, :func:`light_keys`), so every ``landscape <cmd> --help`` and argument
error answers before torch loads; the command imports the class when it runs.
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

__all__ = ["add_config", "config_from", "light_constant", "light_fields", "light_keys"]


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


def _light_class(module: str, name: str) -> list[Option]:
    """The scalar and list fields of dataclass ``name`` in ``module`` (bases first), from the
    source.

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
    helps = _help_of(node, lines)
    scope = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "None": None}
    own: list[str] = []
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        own.append(item.target.id)
        try:
            hint = eval(ast.unparse(item.annotation), {"__builtins__": {}}, scope)  # noqa: S307
        except (NameError, AttributeError):
            continue  # not a scalar (a nested config): set by the command itself
        kind, optional, many = _scalar(hint)
        if kind not in (int, float, str, bool):
            continue
        if item.value is None:
            raise ValueError(f"{name}.{item.target.id} has no default")
        found[item.target.id] = Option(
            item.target.id, kind, optional, _literal_default(item.value),
            helps.get(item.target.id, ""), many,
        )  # fmt: skip
    # The config's own fields first, then the shared ones it inherits (as add_config orders).
    return [found[n] for n in own if n in found] + [o for n, o in found.items() if n not in own]


def _literal_default(value: ast.expr) -> Any:
    """A field's declared default: a literal, or ``field(default_factory=lambda: <literal>)``.

    Raises:
        ValueError: any other default.
    """
    if isinstance(value, ast.Call):
        factory = next((k.value for k in value.keywords if k.arg == "default_factory"), None)
        if not isinstance(factory, ast.Lambda):
            raise ValueError(f"not a literal default: {ast.unparse(value)}")
        value = factory.body
    return ast.literal_eval(value)


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


def _class_fields(cls: type) -> list[Option]:
    hints = typing.get_type_hints(cls)
    helps = _field_help(cls)
    own = cls.__dict__.get("__annotations__", {})
    out = []
    # The config's own fields first, then the shared ones it inherits.
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
    path: str,
    *,
    skip: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
    choices: dict[str, tuple] | None = None,
) -> None:
    """Add one option per scalar or list field of the config ``"module:Class"`` (except
    ``skip``), read from its source (:func:`light_fields`): the module is imported only when
    the command runs. The ``required`` options show their default as an example instead.
    """
    for f in light_fields(path):
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
