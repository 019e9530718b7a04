"""What an uploaded checkpoint needs besides its tensors: the architecture a ``.pt``/``.pth``
state dict is named with, and a data set (:mod:`landscape.workspace` keeps the uploads)."""

from __future__ import annotations

from typing import Any

from landscape.checkpoints import CheckpointError
from landscape.data import DATASETS, dataset_from_meta
from landscape.models import RESEARCH_ARCHS, resolve_arch
from landscape.sources import EXPORT, FILE, check_source, is_external, model_paths, parse_file_spec

__all__ = ["RESEARCH_FAMILIES", "check_data", "check_upload_source", "upload_arch"]

RESEARCH_FAMILIES = frozenset(name for name, _ in RESEARCH_ARCHS.values())


def check_upload_source(name: str) -> None:
    """Refuse an external architecture an upload may not name.

    ``torchvision:<name>`` is allowed; ``file:<path.py>:<callable>`` only from a trusted
    folder (``--model-path`` / ``LANDSCAPE_MODEL_PATHS``): a file trusted by naming it on one
    command line would not load in the app, which trusts folders only; an exported program
    never (it is opened with ``--trust`` only).

    Raises:
        ValueError: saying why.
    """
    if name.startswith(EXPORT):
        raise ValueError(
            f"{name!r}: exported programs (.pt2) are opened on the command line with --trust only"
        )
    if name.startswith(FILE):
        path, _ = parse_file_spec(name)
        if not any(path.is_relative_to(f) for f in model_paths()):
            folders = ", ".join(map(str, model_paths())) or "none"
            raise ValueError(
                f"model file {path} is not in a trusted folder (importing it runs its code); "
                f"trusted folders ($LANDSCAPE_MODEL_PATHS, --model-path): {folders}"
            )
    check_source(name)


def upload_arch(name: str, kwargs: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Architecture metadata for a ``.pt``/``.pth`` upload, sized to its data set.

    Like the training runs, ``in_shape`` and ``num_classes`` of a registry model come from the
    data set unless the user's ``kwargs`` set them. ``torchvision:`` and ``file:`` models
    (see :func:`check_upload_source`) take ``kwargs`` as they are: their constructors say
    which arguments they take.

    Raises:
        ValueError: unknown or refused architecture, or kwargs that are not a dict.
        DataError: the data set cannot be read (to size a registry model).
    """
    if not isinstance(kwargs, dict):
        raise ValueError(f"architecture arguments must be a JSON object, got {kwargs!r}")
    if is_external(name):
        check_upload_source(name)
        if name.startswith(FILE):  # one spelling per file, so checkpoints of it compare equal
            path, attr = parse_file_spec(name)
            name = f"{FILE}{path}:{attr}"
        return {"name": name, "kwargs": dict(kwargs)}
    name, kwargs = resolve_arch(name, kwargs)
    if name in RESEARCH_FAMILIES:
        # Built for 32x32 RGB; the classes are read off the file when it is opened.
        return {"name": name, "kwargs": kwargs}
    # Sizing needs no normalisation: that is checked where the data set is used.
    ds = dataset_from_meta({k: v for k, v in data.items() if k != "normalize"})
    sized = {"in_shape": list(ds.input_shape), "num_classes": ds.num_classes}
    return {"name": name, "kwargs": {**sized, **kwargs}}


def check_data(meta: dict[str, Any], filename: str) -> None:
    """CheckpointError unless ``meta`` names a known data set."""
    data = meta.get("data")
    if not isinstance(data, dict) or "name" not in data:
        raise CheckpointError(f"{filename}: metadata names no data set; choose one")
    if data["name"] not in DATASETS:
        raise CheckpointError(
            f"{filename}: unknown data set {data['name']!r}; known: {', '.join(DATASETS)}"
        )
