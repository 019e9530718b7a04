"""Architecture sources beyond the registry: torchvision models, users' model files, exported
programs. :func:`landscape.models.build_model` sends every name with one of these prefixes here.

- ``torchvision:<name>`` with keyword arguments (``torchvision:resnet18``, ``num_classes=10``):
  ``torchvision.models.<name>(**kwargs)``, from the optional extra ``landscape[zoo]``. Weights
  come from the checkpoint: ``weights``/``pretrained`` arguments (downloads) are refused.
- ``file:<path.py>:<callable>`` with JSON keyword arguments: a class or function in a user's
  own file. Importing it runs the user's code, so a file is used only when it is trusted: named
  on the command line (:func:`trust_file`) or inside a folder of ``LANDSCAPE_MODEL_PATHS``
  (``os.pathsep``-separated) or of ``--model-path`` (:func:`trust_folder`). A checkpoint whose
  metadata names any other file is refused; an upload can only name :func:`trusted_models`.
- ``export:<graph digest>``: a program saved by ``torch.export.save``. ``torch.export.load``
  unpickles payloads of the archive with ``weights_only=False`` (weights and constants marked
  ``use_pickle``; ``tests/test_sources.py`` shows a crafted ``.pt2`` running a command), so an
  exported program is opened only when trusted on the command line (``--trust``,
  :func:`trust_export`). Its graph has no BatchNorm modules (BN is a fixed ``aten.batch_norm``
  call and ``GraphModule.train()`` is unsupported), so graphs with BatchNorm, whose statistics
  landscape recomputes at every point, are refused, as are graphs exported with a fixed batch.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "EXPORT",
    "FILE",
    "TORCHVISION",
    "ZOO_HINT",
    "build_external",
    "check_source",
    "is_external",
    "load_exported",
    "model_paths",
    "parse_file_spec",
    "trust_command_line",
    "trust_export",
    "trust_file",
    "trust_folder",
    "trusted_models",
]

TORCHVISION = "torchvision:"
FILE = "file:"
EXPORT = "export:"
ZOO_HINT = "pip install 'landscape[zoo]' (torchvision 0.28.*, the release matching torch 2.13)"
MODEL_PATHS_ENV = "LANDSCAPE_MODEL_PATHS"
_DOWNLOADS = ("weights", "pretrained", "weights_backbone", "progress")
_trusted_files: set[Path] = set()
_trusted_folders: list[Path] = []
_trusted_exports: dict[str, Path] = {}  # graph digest -> a trusted file holding that graph
_modules: dict[tuple[Path, float], Any] = {}


def is_external(name: str) -> bool:
    """Whether ``name`` is a torchvision:, file: or export: source (not a registry name)."""
    return name.startswith((TORCHVISION, FILE, EXPORT))


def trust_folder(folder: str | Path) -> None:
    """Trust every ``.py`` file in ``folder`` (the CLI's ``--model-path``)."""
    path = Path(folder).resolve()
    if path not in _trusted_folders:
        _trusted_folders.append(path)


def trust_file(path: str | Path) -> None:
    """Trust one model file (named by the user on the command line)."""
    _trusted_files.add(Path(path).resolve())


def trust_export(path: str | Path) -> None:
    """Trust one exported program (``--trust`` on the command line); see :func:`load_exported`."""
    _trusted_exports[str(Path(path).resolve())] = Path(path).resolve()


def model_paths() -> list[Path]:
    """Trusted folders: ``LANDSCAPE_MODEL_PATHS`` (os.pathsep-separated), then ``--model-path``."""
    env = [Path(p).resolve() for p in os.environ.get(MODEL_PATHS_ENV, "").split(os.pathsep) if p]
    return env + [p for p in _trusted_folders if p not in env]


def parse_file_spec(name: str) -> tuple[Path, str]:
    """``file:<path.py>:<callable>`` -> (resolved path, callable name)."""
    path, sep, attr = name.removeprefix(FILE).rpartition(":")
    if not sep or not path.endswith(".py") or not attr.isidentifier():
        raise ValueError(f"{name!r}: a model file is named file:<path.py>:<callable>")
    return Path(path).expanduser().resolve(), attr


def _is_trusted(path: Path) -> bool:
    return path in _trusted_files or any(path.is_relative_to(f) for f in model_paths())


def check_source(name: str) -> None:
    """Refuse an external source that may not be used here, before anything is built.

    Raises:
        ValueError: an untrusted model file or exported program, or a malformed name.
    """
    if name.startswith(FILE):
        path, _ = parse_file_spec(name)
        if not _is_trusted(path):
            raise ValueError(
                f"model file {path} is not trusted (importing it runs its code): name it with "
                f"--arch on the command line, or put it in a folder of --model-path or "
                f"{MODEL_PATHS_ENV}"
            )
    elif name.startswith(EXPORT):
        if name.removeprefix(EXPORT) not in _trusted_exports:
            raise ValueError(
                f"exported program {name.removeprefix(EXPORT)} is not trusted (torch.export.load "
                f"can run code stored in the file): open the .pt2 on the command line with --trust"
            )
    elif name.startswith(TORCHVISION):
        if not name.removeprefix(TORCHVISION).isidentifier():
            raise ValueError(f"{name!r}: a torchvision model is named torchvision:<name>")
    else:
        raise ValueError(f"{name!r}: not a torchvision:, file: or export: source")


def build_external(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build a model from an external source (checked with :func:`check_source` first).

    Raises:
        ValueError: untrusted, missing or unusable source, or arguments it does not take.
    """
    check_source(name)
    if name.startswith(EXPORT):
        return _fixed_mode(_exported(_trusted_exports[name.removeprefix(EXPORT)]).module())
    if name.startswith(TORCHVISION):
        make = _torchvision(name, kwargs)
    else:
        path, attr = parse_file_spec(name)
        make = getattr(_import_file(path), attr, None)
        if not callable(make):
            raise ValueError(f"{path} defines no callable {attr!r}")
    try:
        model = make(**kwargs)
    except TypeError as err:
        raise ValueError(f"Bad arguments for architecture {name!r}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision(name: str, kwargs: dict[str, Any]):
    refused = [k for k in _DOWNLOADS if kwargs.get(k) not in (None, False)]
    if refused:
        raise ValueError(
            f"{name!r}: {', '.join(refused)} would download weights; the checkpoint holds them"
        )
    try:
        import torchvision.models as zoo
    except Exception as err:  # ImportError, or a torchvision built for another torch
        raise ValueError(
            f"{name!r} needs torchvision, which does not import here ({str(err)[:200]}): {ZOO_HINT}"
        ) from err
    attr = name.removeprefix(TORCHVISION)
    make = getattr(zoo, attr, None)
    if attr.startswith("_") or not callable(make):
        raise ValueError(f"torchvision.models has no model {attr!r}")
    return make


def _import_file(path: Path):
    """Import a trusted model file (once per modification time) under a private name."""
    if not path.is_file():
        raise ValueError(f"model file {path}: no such file")
    key = (path, path.stat().st_mtime)
    if key not in _modules:
        module_name = f"_landscape_user_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        spec.loader.exec_module(module)
        _modules[key] = module
    return _modules[key]


def _returns_module(node: ast.AST) -> bool:
    """A class deriving from ``...Module`` or a function annotated ``-> ...Module``."""
    if isinstance(node, ast.ClassDef):
        return any(ast.unparse(b).endswith("Module") for b in node.bases)
    if isinstance(node, ast.FunctionDef) and node.returns is not None:
        return ast.unparse(node.returns).endswith("Module")
    return False


def trusted_models() -> list[str]:
    """``file:<path>:<callable>`` names of the models in the trusted folders (for a form).

    Found by reading the files' syntax (nothing runs): public top-level classes deriving from
    ``nn.Module`` and functions annotated to return one. Unreadable files are skipped.
    """
    found: list[str] = []
    for folder in model_paths():
        for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
            try:
                tree = ast.parse(path.read_text(), filename=str(path))
            except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
                continue
            found += [
                f"{FILE}{path}:{node.name}"
                for node in tree.body
                if _returns_module(node) and not node.name.startswith("_")
            ]
    return found


def _exported(path: Path):
    try:
        with torch.device("cpu"):  # callers build on the meta device; a program holds tensors
            return torch.export.load(str(path))
    except Exception as err:  # torch raises many types on a file it cannot read
        raise ValueError(f"{path}: not a readable exported program: {err}") from err


def _fixed_mode(module: nn.Module) -> nn.Module:
    """An exported graph's mode was fixed at export (``GraphModule.train()`` raises); with
    BatchNorm graphs refused, ``train()``/``eval()`` only set the flag, as for an MLP."""

    def train(mode: bool = True) -> nn.Module:
        for m in module.modules():
            m.training = mode
        return module

    module.train = train  # an instance attribute: eval() calls self.train(False)
    return module


def _check_exported(program, path: Path) -> None:
    """Refuse a graph the evaluator cannot use: BatchNorm, or a fixed batch size."""
    bn = [
        n.target
        for n in program.graph.nodes
        if n.op == "call_function" and "batch_norm" in str(n.target)
    ]
    if bn:
        raise ValueError(
            f"{path}: the exported graph computes BatchNorm with {bn[0]} (its mode fixed at "
            f"export; GraphModule.train() is not supported), so its statistics cannot be "
            f"recomputed at each weight point as landscape does; save the state dict and name "
            f"the architecture (torchvision:<name> or file:<path.py>:<callable>) instead"
        )
    inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" and node.name in inputs else None
        if isinstance(val, torch.Tensor) and val.ndim and isinstance(val.shape[0], int):
            raise ValueError(
                f"{path}: exported with a fixed batch size of {val.shape[0]}; export with "
                f"dynamic_shapes={{'x': {{0: torch.export.Dim('batch')}}}}"
            )


def load_exported(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and architecture ``{"name": "export:<graph digest>"}`` of a trusted
    ``.pt2``. The digest (of the graph's code and signature) names the architecture, so two
    exports of one network are endpoints of one curve; it maps to the file in this process.

    Raises:
        ValueError: untrusted (see :func:`trust_export`), unreadable, or a graph with
            BatchNorm or a fixed batch size.
    """
    path = Path(path).resolve()
    check_source(f"{EXPORT}{path}")
    program = _exported(path)
    _check_exported(program, path)
    module = program.module()
    graph = f"{module.code}\n{program.graph_signature}".encode()
    digest = hashlib.sha256(graph).hexdigest()[:16]
    _trusted_exports.setdefault(digest, path)
    state = {k: v.detach() for k, v in module.state_dict().items()}
    return state, {"name": f"{EXPORT}{digest}", "kwargs": {}}


def trust_command_line(arch: str | None, folders: list[str] | None) -> None:
    """Trust what a user names in their own command: a ``file:`` model given as ``--arch``
    and the ``--model-path`` folders (checkpoints' metadata may then name models in them)."""
    for folder in folders or []:
        trust_folder(folder)
    if arch and arch.startswith(FILE):
        trust_file(parse_file_spec(arch)[0])
