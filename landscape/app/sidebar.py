"""The sidebar (study, A/B, device), cached loaders of checkpoints, and upload helpers.

The app computes nothing of its own: every number comes from a ``landscape`` function.
Checkpoints are shared between sessions through ``st.cache_resource`` (never mutate them);
cheap derived values go through ``st.cache_data`` keyed by file modification time, so a
replaced file is read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from landscape.checkpoints import Checkpoint, CheckpointError, load_checkpoint
from landscape.research import open_research
from landscape.workspace import (
    CheckpointSummary,
    Member,
    Study,
    Upload,
    default_study,
    display_label,
    list_studies,
    list_uploads,
    save_upload,
    summarize,
    upload_arch,
)
from landscape.workspace import imported_curves as workspace_imported_curves

STUDY_KEY = "study"  # session-state key of the selected study's name
PENDING_STUDY_KEY = "pending_study"  # set by the Upload page; applied before the selector
DEVICE_KEY = "device"
URL_READ_KEY = "url_read"  # session state: the link's query parameters were applied


@dataclass(frozen=True)
class Selection:
    """What the sidebar selected: the study, its checkpoints A and B, and the device."""

    study: Study
    a: Member
    b: Member
    device: str


def mtime(path: str | Path) -> int:
    """A file's modification time (ns): part of cache keys, so a replaced file is read again."""
    return Path(path).stat().st_mtime_ns


@st.cache_resource(show_spinner=False, max_entries=32)
def _checkpoint(path: str, mtime_ns: int) -> Checkpoint:
    return load_checkpoint(path)


def checkpoint(member: Member) -> Checkpoint:
    """The validated checkpoint of a study member (shared between sessions: read only)."""
    return _checkpoint(member.path, mtime(member.path))


@st.cache_data(show_spinner=False, max_entries=64)
def _summary(path: str, mtime_ns: int) -> CheckpointSummary:
    return summarize(_checkpoint(path, mtime_ns))


def summary(member: Member) -> CheckpointSummary:
    """Metadata, parameter count and sparsity of a member's checkpoint."""
    return _summary(member.path, mtime(member.path))


@st.cache_data(show_spinner=False, max_entries=64)
def _run_record(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text())


def run_record(member: Member) -> dict | None:
    """The run.json of a member's run folder, or None for a lone checkpoint."""
    if member.run_dir is None or not (Path(member.run_dir) / "run.json").exists():
        return None
    path = Path(member.run_dir) / "run.json"
    return _run_record(str(path), mtime(path))


def studies() -> tuple[list[Study], str | None]:
    """All studies, and an error text if ``studies.json`` is unreadable (default only then)."""
    try:
        return list_studies(), None
    except ValueError as err:
        return [default_study()], str(err)


def members_available() -> list[Member]:
    """Checkpoints a new study can be made of: the default study's and the uploaded ones."""
    return [*default_study().members, *list_uploads()]


def devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def sidebar() -> Selection:
    """Draw the study, A/B and device selectors; the default study is selected on first load."""
    all_studies, error = studies()
    if error:
        st.sidebar.error(error)
    names = [s.name for s in all_studies]
    if not st.session_state.get(URL_READ_KEY):  # a shared link names the study (first run only)
        if st.query_params.get("study") in names:
            st.session_state[STUDY_KEY] = st.query_params["study"]
    if st.session_state.get(PENDING_STUDY_KEY) in names:
        st.session_state[STUDY_KEY] = st.session_state.pop(PENDING_STUDY_KEY)
    if st.session_state.get(STUDY_KEY) not in names:
        st.session_state[STUDY_KEY] = names[0]
    name = st.sidebar.selectbox("Study", names, key=STUDY_KEY)
    study = all_studies[names.index(name)]
    missing = [m.path for m in study.members if not Path(m.path).is_file()]
    if missing:
        st.sidebar.error(
            f"Study {name!r} names missing files: {', '.join(missing)}; showing the default study."
        )
        study = all_studies[0]
    labels = [m.label for m in study.members]
    a, b = 0, 1
    if len(study.members) > 2:
        a = st.sidebar.selectbox("A", range(len(labels)), format_func=labels.__getitem__, key="a")
        others = [i for i in range(len(labels)) if i != a]
        b = st.sidebar.selectbox("B", others, format_func=labels.__getitem__, key="b")
    else:
        st.sidebar.caption(f"A = {labels[0]}, B = {labels[1]}")
    device = st.sidebar.selectbox("Device", devices(), key=DEVICE_KEY)
    if st.query_params.get("study") != study.name:
        st.query_params["study"] = study.name  # the link to this view names its study
    return Selection(study, study.members[a], study.members[b], device)


def selection() -> Selection:
    """The current selection (the entry script draws the sidebar before every page)."""
    return st.session_state["selection"]


def select_study_next_run(name: str) -> None:
    """Make ``name`` the selected study on the next run (a drawn widget's key cannot change)."""
    st.session_state[PENDING_STUDY_KEY] = name


SPOOL_KEY = "upload_spool"  # session state: (file id, temp path, sha256), never the bytes
CHUNK = 8 * 1024 * 1024  # bytes copied at a time from an upload to its temp file


def spool_upload(file) -> tuple[Path, str]:
    """The uploaded file on disk (copied in chunks once per file) and its content hash.

    Session state keeps only the path and the hash, so no copy of the bytes outlives the
    upload widget; :func:`drop_spool` removes the file.
    """
    kept = st.session_state.get(SPOOL_KEY)
    if kept and kept[0] == file.file_id and Path(kept[1]).is_file():
        return Path(kept[1]), kept[2]
    drop_spool()
    digest = hashlib.sha256()
    fd, name = tempfile.mkstemp(prefix="landscape-upload-", suffix=Path(file.name).suffix[:16])
    with os.fdopen(fd, "wb") as out:
        file.seek(0)
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    st.session_state[SPOOL_KEY] = (file.file_id, name, digest.hexdigest())
    return Path(name), digest.hexdigest()


def drop_spool() -> None:
    """Remove the temp file of :func:`spool_upload` (after it was stored, or another file)."""
    kept = st.session_state.pop(SPOOL_KEY, None)
    if kept:
        Path(kept[1]).unlink(missing_ok=True)


def upload_checkpoint(
    path: str | Path,
    filename: str,
    *,
    arch_name: str | None,
    arch_kwargs: str,
    data: dict,
    max_bytes: int,
) -> Upload:
    """Validate and keep an uploaded file (the Upload page's action, testable without a page).

    Args:
        path: the file on disk (:func:`spool_upload`).
        filename: its name; ``.pt``/``.pth`` files use ``arch_name`` and ``arch_kwargs``.
        arch_name: architecture of a ``.pt``/``.pth`` file (registry or research-code name);
            None: recognised from the file's keys.
        arch_kwargs: its constructor arguments as JSON text ("" for none).
        data: ``{"name", "split_seed"[, "root"]}``: the data set, used when the file names none.
        max_bytes: size limit.

    Returns:
        The stored :class:`Upload`.

    Raises:
        CheckpointError / DataError / ValueError: the specific problem; nothing is written.
    """
    arch = None
    if Path(filename).suffix.lower() in (".pt", ".pth") and arch_name is not None:
        try:
            kwargs = json.loads(arch_kwargs) if arch_kwargs.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"architecture arguments are not valid JSON: {err}") from err
        arch = upload_arch(arch_name, kwargs, data)
    return save_upload(Path(path), filename, arch=arch, data=data, max_bytes=max_bytes)


@st.cache_data(max_entries=4, show_spinner="Reading the file")
def inspect_research(_path: str, digest: str, filename: str) -> dict:
    """What a ``.pt``/``.pth`` file holds, its architecture recognised from its keys.

    Cached by the file's content hash ``digest`` (the path is not part of the key).

    Returns:
        {"kind", "label", "arch", "data", "epoch", "optimizer", "order"} (plain data, cached).

    Raises:
        CheckpointError: unreadable, refused, or not recognised.
    """
    try:
        found = open_research(_path)
    except CheckpointError as err:
        raise CheckpointError(str(err).replace(str(_path), display_label(filename))) from err
    return {
        "kind": found.kind,
        "label": found.label,
        "arch": found.arch,
        "data": found.points[0].meta.get("data", {}),
        "epoch": found.epoch,
        "optimizer": found.optimizer,
        "order": found.curve.order if found.curve is not None else None,
    }


def data_root(member: Member) -> str | None:
    """The data folder recorded with an uploaded checkpoint (mnist, cifar10), if any."""
    return (summary(member).data or {}).get("root")


def imported_curves(sel: Selection) -> list[Path]:
    """Curve files uploaded from the research code that run from A to B."""
    return workspace_imported_curves(checkpoint(sel.a), checkpoint(sel.b))
