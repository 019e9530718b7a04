"""Studies: named sets of two or more checkpoints that are compared with each other.

The default study is the bundled pair ``sgd/final.safetensors`` (A, dense) and
``grda/final.safetensors`` (B, sparse) of :func:`default_checkpoints`, with their run folders. Uploaded checkpoints
are kept by content hash under ``home()/uploads/<hash>.safetensors`` and user studies in
``home()/studies.json`` (written atomically under a lock), so a reload loses nothing and a bad
upload or a bad study never touches what is already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from landscape.checkpoints import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from landscape.curves import BezierCurve, CurveConfig, runs_between, save_curve
from landscape.models import build_model, prunable_names
from landscape.params import sparsity
from landscape.research import open_research
from landscape.settings import MAX_UPLOAD_ENV, QUOTA_ENV, settings
from landscape.store import Store, atomic_write, home
from landscape.uploadmeta import check_data as _check_data
from landscape.uploadmeta import upload_arch

__all__ = [
    "DEFAULT_NAME",
    "CheckpointSummary",
    "Member",
    "Study",
    "Upload",
    "create_study",
    "curve_label",
    "default_checkpoints",
    "display_label",
    "default_study",
    "get_study",
    "imported_curves",
    "list_studies",
    "list_uploads",
    "member",
    "save_upload",
    "summarize",
    "upload_arch",
    "uploads_usage",
]

CHECKPOINTS_ENV = "LANDSCAPE_CHECKPOINTS"  # names another folder of default runs
_PACKAGED = Path(__file__).resolve().parent / "_checkpoints"  # inside an installed wheel
_CHECKOUT = Path(__file__).resolve().parent.parent / "checkpoints"  # a source tree (editable)
DEFAULT_NAME = "default"
UPLOAD_SUFFIXES = (".safetensors", ".pt", ".pth")
_MAX_NAME = 80  # study names are shown in a sidebar selector
_MAX_LABEL = 120  # uploaded file names are display labels, shortened to this


@dataclass(frozen=True)
class Member:
    """One checkpoint of a study.

    Attributes:
        label: the name shown in the app (e.g. "sgd", or an uploaded file's name).
        path: the checkpoint file.
        run_dir: its run folder (run.json, trajectory/) when the checkpoint is a run's final
            weights, else None.
    """

    label: str
    path: str
    run_dir: str | None = None


@dataclass(frozen=True)
class Study:
    """A named set of two or more checkpoints; ``members[0]`` is A and ``members[1]`` is B."""

    name: str
    members: tuple[Member, ...]
    builtin: bool = False


@dataclass(frozen=True)
class Upload:
    """A stored upload: where it lives, its content hash, and whether it was new. For a curve
    file: ``member`` is its start (t = 0), ``end`` its end, ``curve`` the stored curve file and
    ``study`` the study of the two."""

    member: Member
    hash: str
    meta: dict[str, Any]
    new: bool
    end: Member | None = None
    curve: str | None = None
    study: str | None = None


@dataclass(frozen=True)
class CheckpointSummary:
    """What the Overview page shows about one checkpoint (all read from the file)."""

    hash: str
    arch: dict[str, Any]
    data: dict[str, Any] | None
    optimizer: dict[str, Any] | None
    metrics: dict[str, float]
    n_params: int
    sparsity: float  # fraction of exactly-zero prunable weights
    sparsity_small: float  # fraction of prunable weights with |w| < 1e-3
    layer_sparsity: dict[str, float]


def default_checkpoints() -> Path:
    """The folder of the default runs (``init.safetensors``, ``sgd/``, ``grda/``).

    In this order: ``$LANDSCAPE_CHECKPOINTS``; the copy shipped inside the installed package
    (``landscape/_checkpoints``); the ``checkpoints/`` folder of the source tree (an editable
    install). The folder is not checked: a missing file is reported where it is read.
    """
    if os.environ.get(CHECKPOINTS_ENV):
        return Path(os.environ[CHECKPOINTS_ENV]).expanduser().resolve()
    return _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT


def default_study(root: str | Path | None = None) -> Study:
    """The bundled study: SGD (A) and gRDA (B) runs of ``root`` (default: the default runs)."""
    root = Path(root) if root is not None else default_checkpoints()
    members = tuple(
        Member(label=name, path=str(root / name / "final.safetensors"), run_dir=str(root / name))
        for name in ("sgd", "grda")
    )
    return Study(name=DEFAULT_NAME, members=members, builtin=True)


def _index_path() -> Path:
    return home() / "studies.json"


def _uploads_dir() -> Path:
    return home() / "uploads"


def _read_index() -> dict[str, Any]:
    path = _index_path()
    if not path.exists():
        return {"studies": [], "uploads": {}, "curves": {}}
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); fix or remove the file") from err
    if (
        not isinstance(index, dict)
        or not isinstance(index.get("studies", []), list)
        or not isinstance(index.get("uploads", {}), dict)
        or not isinstance(index.get("curves", {}), dict)
    ):
        raise ValueError(f"{path}: expected {{studies: [...], uploads: {{...}}}}")
    keys = {"studies": [], "uploads": {}, "curves": {}}  # curves: file stem -> label
    return {key: index.get(key, empty) for key, empty in keys.items()}


def _write_index(index: dict[str, Any]) -> None:
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(index, indent=2, sort_keys=True).encode())


def _lock():
    # The store's file lock: two tabs saving a study at once must not lose either write.
    return Store(home()).lock("studies", "index")


def member(path: str | Path) -> Member:
    """A study member: a run folder (or its ``final.safetensors``) labelled with the folder's
    name, with its run folder; any other checkpoint file labelled with its name."""
    path = Path(path).resolve()
    if path.is_dir():
        path = path / "final.safetensors"
    run = path.parent if path.name == "final.safetensors" else None
    if run is not None and (run / "run.json").exists():
        return Member(label=run.name, path=str(path), run_dir=str(run))
    return Member(label=path.stem, path=str(path))


def list_studies(root: str | Path | None = None) -> list[Study]:
    """The default study, then the user's studies in the order they were created.

    Raises:
        ValueError: ``studies.json`` exists but is unreadable (it is never overwritten then).
    """
    studies = [default_study(root)]
    for entry in _read_index()["studies"]:
        members = tuple(Member(**m) for m in entry["members"])
        studies.append(Study(name=entry["name"], members=members))
    return studies


def get_study(name: str, root: str | Path | None = None) -> Study:
    """The study called ``name``; ValueError if there is none."""
    for study in list_studies(root):
        if study.name == name:
            return study
    raise ValueError(f"no study named {name!r}")


def _check_members(members: Sequence[Member], loaded: Sequence[Checkpoint] = ()) -> None:
    """One architecture and data set for all (``loaded``: the members' checkpoints, when the
    caller holds them; else each file is read)."""
    if len(members) < 2:
        raise ValueError(f"a study needs at least two checkpoints, got {len(members)}")
    paths = [str(Path(m.path).resolve()) for m in members]
    if len(set(paths)) != len(paths):
        raise ValueError("a study cannot name the same checkpoint file twice")
    first: Checkpoint | None = None
    for i, m in enumerate(members):
        ckpt = loaded[i] if loaded else load_checkpoint(m.path)
        if first is None:
            first = ckpt
            continue
        # Paths between minima only make sense in one weight space on one data set.
        if ckpt.arch != first.arch:
            raise ValueError(
                f"{m.label}: architecture {ckpt.arch} differs from {members[0].label}'s "
                f"{first.arch}"
            )
        if (ckpt.meta.get("data") or {}).get("name") != (first.meta.get("data") or {}).get("name"):
            raise ValueError(
                f"{m.label}: data set {ckpt.meta.get('data')} differs from "
                f"{members[0].label}'s {first.meta.get('data')}"
            )


def create_study(
    name: str,
    members: Sequence[Member],
    *,
    root: str | Path | None = None,
    loaded: Sequence[Checkpoint] = (),
) -> Study:
    """Validate and save a new study in ``home()/studies.json``.

    Args:
        name: a new, non-empty name (at most 80 characters).
        members: two or more distinct checkpoints of one architecture and data set; the
            first is A, the second B.
        root: folder of the default study (its name is taken; None: the default runs).
        loaded: the members' checkpoints, if the caller holds them (not read again).

    Returns:
        The saved :class:`Study`.

    Raises:
        ValueError / CheckpointError: bad name, too few or mismatched checkpoints, an
            unreadable file; nothing is written then.
    """
    name = name.strip()
    if not name:
        raise ValueError("a study needs a name")
    if len(name) > _MAX_NAME:
        raise ValueError(f"study name is {len(name)} characters, at most {_MAX_NAME} allowed")
    _check_members(members, loaded)
    study = Study(name=name, members=tuple(members))
    with _lock():
        index = _read_index()
        taken = {s.name for s in list_studies(root)}
        if name in taken:
            raise ValueError(f"a study named {name!r} already exists")
        index["studies"].append({"name": name, "members": [asdict(m) for m in members]})
        _write_index(index)
    return study


def save_upload(
    source: bytes | str | Path,
    filename: str,
    *,
    arch: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    max_bytes: int | None = None,
) -> Upload:
    """Validate an uploaded checkpoint and keep it as ``home()/uploads/<hash>.safetensors``.

    ``.safetensors`` through :func:`load_checkpoint`, ``.pt``/``.pth`` through
    :func:`landscape.research.open_research` (state dicts, the research code's model and curve
    files). Only valid files are written (as safetensors), once per content hash; a curve file
    keeps both endpoints, its curve (see :func:`imported_curves`) and a study named after it.
    File names are labels only (in the index, shortened): stored files are named by hashes.

    Args:
        source: the file (a path, read in place: the app streams uploads to disk) or its bytes.
        filename: its name as uploaded (the suffix picks the reader; the name is the label).
        arch: ``{"name", "kwargs"}`` for ``.pt``/``.pth`` files; None: recognised.
        data: ``{"name", "split_seed"[, "root", "normalize"]}``, used when the file's metadata
            names no data set (for recognised research files: completes their data set).
        max_bytes: size limit of the file (None, or above ``$LANDSCAPE_MAX_UPLOAD``: that).

    Returns:
        The stored :class:`Upload`.

    Raises:
        CheckpointError: with a message naming the file and the first problem found (also
            for a file over the size limit or one that would exceed the uploads' quota).
    """
    label = display_label(filename)
    ceiling = settings().max_upload
    limit = min(max_bytes or ceiling, ceiling)
    with _source_file(source, label) as path:
        _check_upload(path.stat().st_size, label, limit)
        points, curve = _read_upload(path, label, arch=arch, data=data, max_bytes=limit)
    for ckpt in points:
        if data is not None and not ckpt.meta.get("data"):
            ckpt.meta["data"] = data
        _check_data(ckpt.meta, label)
    if curve is None:
        first, new = _keep(points[0], label)
        return Upload(first, points[0].hash, points[0].meta, new)
    return _keep_curve(points, curve, label)


def display_label(filename: str) -> str:
    """An uploaded file's name as a label: its last part, at most 120 characters with suffix."""
    name = Path(str(filename).replace("\\", "/")).name or "upload"
    if len(name) <= _MAX_LABEL:
        return name
    suffix = Path(name).suffix[:16]
    return name[: _MAX_LABEL - len(suffix) - 1] + "\u2026" + suffix


@contextmanager
def _source_file(source: bytes | str | Path, label: str) -> Iterator[Path]:
    """The upload as a file: a path as it is, bytes through a temporary file."""
    if not isinstance(source, bytes | bytearray):
        yield Path(source)
        return
    with tempfile.TemporaryDirectory() as tmp:
        # The label is never part of a path (it may be long or odd); only its suffix is used.
        path = Path(tmp) / f"upload{Path(label).suffix.lower()[:16]}"
        atomic_write(path, bytes(source))
        yield path


def _check_upload(size: int, label: str, max_bytes: int) -> None:
    """Refuse an unsupported file type, an oversized file or one over the quota, unread."""
    suffix = Path(label).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise CheckpointError(
            f"{label}: unsupported file type {suffix!r} ({', '.join(UPLOAD_SUFFIXES)})"
        )
    if size > max_bytes:
        raise CheckpointError(
            f"{label}: file is {size} bytes, over the size limit of {max_bytes} bytes "
            f"(${MAX_UPLOAD_ENV})"
        )
    _check_quota(size, label)


def _check_quota(size: int, label: str) -> None:
    quota, used = settings().upload_quota, uploads_usage()
    if used + size > quota:
        raise CheckpointError(
            f"{label}: {size} bytes would bring the uploads to {used + size} bytes, over the "
            f"quota of {quota} bytes (${QUOTA_ENV}); delete uploads first"
        )


def _read_upload(
    path: Path,
    label: str,
    *,
    arch: dict[str, Any] | None,
    data: dict[str, Any] | None,
    max_bytes: int,
) -> tuple[list[Checkpoint], BezierCurve | None]:
    """The uploaded file's checkpoints and (for a curve file) its curve."""
    try:
        if Path(label).suffix.lower() == ".safetensors":
            return [load_checkpoint(path, arch=arch, max_bytes=max_bytes)], None
        found = open_research(path, arch=arch, data=data, max_bytes=max_bytes)
        return found.points, found.curve
    except CheckpointError as err:
        # Name the file as the user knows it, not the temporary copy.
        raise CheckpointError(str(err).replace(str(path), label)) from err


def _name_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _keep_curve(points: list[Checkpoint], curve: BezierCurve, label: str) -> Upload:
    """Keep a curve file's endpoints, its curve and a study named after the file."""
    a, b = points
    (first, new), (second, _) = _keep(a, f"{label} t=0"), _keep(b, f"{label} t=1")
    # Named by hashes only: the label may be any length or character.
    target = _uploads_dir() / "curves" / f"{a.hash}-{b.hash}-{_name_hash(label)}.safetensors"
    save_curve(target, curve, a, b, CurveConfig(order=curve.order, epochs=0))
    with _lock():
        index = _read_index()
        index["curves"][target.stem] = label
        _write_index(index)
    study = label if len(label) <= _MAX_NAME else label[: _MAX_NAME - 1] + "\u2026"
    if study not in {s.name for s in list_studies()}:
        create_study(study, [first, second], loaded=[a, b])
    return Upload(first, a.hash, a.meta, new, second, str(target), study)


def _keep(ckpt: Checkpoint, label: str) -> tuple[Member, bool]:
    """Write a validated checkpoint to the uploads (once per content hash, within the quota)."""
    target = _uploads_dir() / f"{ckpt.hash}.safetensors"
    with _lock():
        new = not target.exists()
        if new:
            # Checked again under the lock: uploads running at once cannot pass it together.
            _check_quota(sum(t.numel() * t.element_size() for t in ckpt.state.values()), label)
            save_checkpoint(target, ckpt.state, ckpt.meta)
        index = _read_index()
        index["uploads"].setdefault(ckpt.hash, {"label": label})
        _write_index(index)
        label = index["uploads"][ckpt.hash]["label"]
    return Member(label=label, path=str(target)), new


def imported_curves(a: Checkpoint, b: Checkpoint) -> list[Path]:
    """Uploaded research curve files from ``a`` to ``b``, matched by parameters, not buffers
    (:func:`landscape.curves.runs_between`: model files' BN statistics differ from a curve's)."""
    folder = _uploads_dir() / "curves"
    paths = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return [p for p in paths if runs_between(p, a, b)]


def curve_label(path: str | Path) -> str:
    """The name an imported curve file was uploaded as (its file is named by hashes)."""
    return _read_index()["curves"].get(Path(path).stem, Path(path).stem)


def list_uploads() -> list[Member]:
    """The uploaded checkpoints, oldest first, labelled with the name they were uploaded as.

    Files are listed, not validated: one that no longer loads is still listed (and can be
    deleted with :func:`delete_upload`).
    """
    folder = _uploads_dir()
    if not folder.is_dir():
        return []
    labels = _read_index()["uploads"]
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime_ns)
    return [Member(label=labels.get(p.stem, {}).get("label", p.name), path=str(p)) for p in files]


def uploads_usage() -> int:
    """Bytes held by the uploads (checkpoints and curves)."""
    folder = _uploads_dir()
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def summarize(ckpt: Checkpoint) -> CheckpointSummary:
    """Metadata, parameter count and sparsity of a checkpoint (no evaluation)."""
    # Names and shapes only: on the meta device nothing is allocated or initialised.
    with torch.device("meta"):
        model = build_model(ckpt.arch["name"], **ckpt.arch.get("kwargs", {}))
    sp = sparsity(ckpt.state, prunable_names(model))
    return CheckpointSummary(
        hash=ckpt.hash,
        arch=ckpt.arch,
        data=ckpt.meta.get("data"),
        optimizer=ckpt.meta.get("optimizer"),
        metrics=dict(ckpt.meta.get("metrics") or {}),
        n_params=sum(p.numel() for p in model.parameters()),
        sparsity=sp["zero"],
        sparsity_small=sp["small"],
        layer_sparsity=sp["layers"],
    )
