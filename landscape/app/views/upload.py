"""Upload: add checkpoints (kept by content hash) and name studies from two or more of them."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from landscape.app import sidebar
from landscape.checkpoints import CheckpointError
from landscape.data import DATASETS, NORMALIZATIONS, DataError
from landscape.deletion import delete_study, delete_upload, upload_hash
from landscape.models import MODELS, RESEARCH_ARCHS
from landscape.settings import QUOTA_ENV, settings
from landscape.sources import MODEL_PATHS_ENV, TORCHVISION, trusted_models
from landscape.workspace import Member, Upload, create_study, list_uploads, uploads_usage

MB = 1024 * 1024
RECOGNISED = "Recognised (from the file's keys)"
REGISTRY, ZOO, MODEL_FILE = "Registry", "torchvision", "Model file (trusted)"
ARCH_CHOICES = sorted(MODELS) + sorted(RESEARCH_ARCHS)
NOT_RECOGNISED = "not recognised from its keys"  # landscape.research's message for that case
DELETED_KEY = "upload_deleted"  # what was deleted, shown after the rerun


def _suggest(prefix: str, file, suggested: dict) -> None:
    """Preset the data widgets to what a newly recognised file's runs used (once per file)."""
    ident = (file.name, file.size)
    if st.session_state.get(f"{prefix}_suggested_for") != ident:
        st.session_state[f"{prefix}_suggested_for"] = ident
        st.session_state[f"{prefix}_data"] = suggested.get("name", "digits")
        st.session_state[f"{prefix}_norm"] = suggested.get("normalize", "none")
        st.session_state[f"{prefix}_arch_source"] = RECOGNISED


def _image_options(prefix: str) -> dict:
    """imagefolder's options: image size and channels (default: the first image's)."""
    cols = st.columns(2)
    size = cols[0].text_input(
        "Image size (HxW)", key=f"{prefix}_size", placeholder="the first image's",
        help="every image is resized to this, e.g. 32x32",
    )  # fmt: skip
    channels = cols[1].selectbox(
        "Channels", [None, 1, 3], key=f"{prefix}_channels",
        format_func=lambda c: "the first image's" if c is None else {1: "1 (grey)", 3: "3 (RGB)"}[c],
    )  # fmt: skip
    out: dict = {"size": size.strip()} if size.strip() else {}
    return out | ({"channels": channels} if channels else {})


def _data_options(prefix: str) -> dict:
    cols = st.columns(4)
    name = cols[0].selectbox(
        "Data set", DATASETS, key=f"{prefix}_data",
        help="digits is bundled; the others are read from the folder (or .npz file) given",
    )  # fmt: skip
    seed = cols[1].number_input("Split seed", min_value=0, value=0, step=1, key=f"{prefix}_seed")
    norm = cols[2].selectbox(
        "Normalisation", sorted(NORMALIZATIONS), key=f"{prefix}_norm",
        help="per-channel (x - mean) / std, as the runs were trained",
    )  # fmt: skip
    root = cols[3].text_input(
        "Data folder or .npz file", key=f"{prefix}_root", disabled=name == "digits",
        help="npz: the .npz file (x_train, y_train, x_test, y_test); imagefolder: a folder with "
        "train/<class>/ and test/<class>/; mnist, fashionmnist, cifar10, cifar100, svhn: the "
        "folder with their files (nothing is downloaded)",
    )  # fmt: skip
    data = {"name": name, "split_seed": int(seed)}
    if norm != "none":
        data["normalize"] = norm
    if name != "digits" and root.strip():
        data["root"] = root.strip()
    if name == "imagefolder":
        data |= _image_options(prefix)
    if name != "digits" and not root.strip():
        st.warning(
            f"{name} is not bundled: give the folder (or file) with its data, or every "
            "computation on this checkpoint will stop at loading the data.",
            icon=":material/folder_open:",
        )
    return data


def _arch_choice(found: dict | None) -> tuple[str | None, str]:
    """(architecture name, None for the recognised one; its arguments as JSON text)."""
    sources = ([RECOGNISED] if found else []) + [REGISTRY, ZOO, MODEL_FILE]
    source = st.radio("Architecture source", sources, key="upload_arch_source", horizontal=True)
    name: str | None = None
    if source == REGISTRY:
        name = st.selectbox("Architecture", ARCH_CHOICES, key="upload_arch")
    elif source == ZOO:
        model = st.text_input(
            "torchvision model", key="upload_zoo", placeholder="resnet18",
            help="torchvision.models.<name> (needs landscape[zoo]); weights come from the file",
        )  # fmt: skip
        name = f"{TORCHVISION}{model.strip()}"
    elif source == MODEL_FILE:
        files = trusted_models()
        if not files:
            st.info(
                f"No trusted model files: start the app with ${MODEL_PATHS_ENV} naming the "
                "folders of your model files (importing a file runs its code).",
                icon=":material/lock:",
            )
        name = st.selectbox("Model (class or function)", files, key="upload_model_file")
    kwargs = st.text_input(
        "Arguments (JSON)", value="", key="upload_kwargs", placeholder='{"widths": [64, 64]}',
        help="registry models are sized to the data set (in_shape, num_classes) unless given "
        "here; torchvision and file models take exactly these arguments",
    )  # fmt: skip
    return (None if source == RECOGNISED else name or ""), kwargs


def _recognised(file) -> dict | None:
    """What a .pt/.pth file is (shown before it is added); None for .safetensors."""
    if file is None or file.name.lower().endswith(".safetensors"):
        return None
    path, digest = sidebar.spool_upload(file)
    try:
        found = sidebar.inspect_research(str(path), digest, file.name)
    except CheckpointError as err:
        if NOT_RECOGNISED in str(err):
            st.info(f"Architecture not recognised, choose it below: {err}", icon=":material/help:")
        else:
            st.error(f"Not readable: {err}", icon=":material/error:")
        return None
    what = (
        f"a Bezier curve of order {found['order']} (its two endpoints and bends are kept)"
        if found["kind"] == "curve"
        else "a model"
    )
    opt = found["optimizer"] or {}
    trained = ", ".join(f"{k} {v}" for k, v in opt.items()) if opt else "no optimizer state"
    st.info(
        f"**Recognised: {found['label']}**, {what}; architecture `{found['arch']['name']}` "
        f"{json.dumps(found['arch']['kwargs'])}; epoch {found['epoch']}; {trained}. "
        f"Keep *Recognised* below to confirm, or choose another architecture.",
        icon=":material/check_circle:",
    )
    return found


def _show_upload(up: Upload) -> None:
    verb = "Stored" if up.new else "Already stored (same weights)"
    s = sidebar.summary(up.member)
    st.success(
        f"{verb}: **{up.member.label}**, content hash `{up.hash}`, architecture "
        f"{s.arch['name']} {json.dumps(s.arch.get('kwargs', {}))}, data "
        f"{(s.data or {}).get('name')}, {s.n_params:,} parameters, sparsity {s.sparsity:.2%}."
    )


def _upload_section(limit_mb: int) -> None:
    st.subheader("Add a checkpoint")
    st.caption(
        f"A `.safetensors` file written by `landscape train` carries its architecture and data "
        f"set. A `.pt`/`.pth` file (read with `torch.load(weights_only=True)`: no code runs) is "
        f"a state dict, or a model or curve file saved by the mode-connectivity research code "
        f"(VGG16, PreResNet, WideResNet28x10): its architecture is recognised from its keys or "
        f"chosen below (registry, torchvision, or a model file of ${MODEL_PATHS_ENV}). Size limit: {limit_mb} MB (server.maxUploadSize); all uploads together: "
        f"{uploads_usage() / MB:,.0f} of {settings().upload_quota / MB:,.0f} MB used "
        f"(${QUOTA_ENV})."
    )
    file = st.file_uploader("Checkpoint file", type=["safetensors", "pt", "pth"], key="upload_file")
    found = _recognised(file)
    with st.expander(
        "Architecture (for .pt/.pth)",
        expanded=file is not None and not file.name.endswith(".safetensors"),
    ):
        if found:
            _suggest("upload", file, found["data"])
        arch_name, arch_kwargs = _arch_choice(found)
    st.caption("Data set (used when the file names none):")
    data = _data_options("upload")
    if file is None:
        sidebar.drop_spool()
    if not st.button("Add checkpoint", key="upload_add", disabled=file is None, type="primary"):
        return
    try:
        path, _ = sidebar.spool_upload(file)  # on disk, in chunks: no copy of the bytes kept
        up = sidebar.upload_checkpoint(
            path,
            file.name,
            arch_name=arch_name,
            arch_kwargs=arch_kwargs,
            data=data,
            max_bytes=limit_mb * MB,
        )
    except (CheckpointError, DataError, ValueError) as err:
        st.error(f"Not added: {err}", icon=":material/error:")
        return
    finally:
        sidebar.drop_spool()
    _show_upload(up)
    if up.study:
        sidebar.select_study_next_run(up.study)
        st.success(
            f"Study **{up.study}** holds the curve's endpoints; its Connectivity page shows the "
            f"imported curve beside one fitted here.",
            icon=":material/timeline:",
        )


def _study_section() -> None:
    st.subheader("New study")
    available = sidebar.members_available()
    if len(available) < 2:
        st.info("Upload a checkpoint to combine it with the default ones.")
        return
    options = list(range(len(available)))
    names = [f"{m.label} ({m.path})" for m in available]
    name = st.text_input("Study name", key="study_name")
    chosen = st.multiselect(
        "Checkpoints (the first is A, the second B)",
        options,
        format_func=names.__getitem__,
        key="study_members",
    )
    if not st.button("Create study", key="study_create"):
        return
    members: list[Member] = [available[i] for i in chosen]
    try:
        study = create_study(name, members)
    except (CheckpointError, ValueError) as err:
        st.error(f"Study not created: {err}", icon=":material/error:")
        return
    sidebar.select_study_next_run(study.name)
    st.rerun()


def _row(m: Member) -> dict:
    """One line of the uploads table; a file that no longer validates is marked broken."""
    row = {"label": m.label, "hash": upload_hash(m.path), "status": "ok"}
    try:
        s = sidebar.summary(m)
    except (CheckpointError, ValueError, OSError) as err:
        return row | {"status": f"broken: {err}", "file": m.path}
    return row | {
        "architecture": s.arch["name"],
        "data": (s.data or {}).get("name"),
        "parameters": s.n_params,
        "sparsity": round(s.sparsity, 4),
        "file": m.path,
    }


def _uploads_table() -> None:
    uploads = list_uploads()
    if not uploads:
        return
    st.subheader("Uploaded checkpoints")
    rows = [_row(m) for m in uploads]
    st.dataframe(pd.DataFrame(rows), key="uploads_table")
    for row in rows:
        if row["status"] != "ok":
            st.error(
                f"**{row['label']}** (`{row['hash']}`) no longer loads: "
                f"{row['status'][len('broken: ') :]}",
                icon=":material/broken_image:",
            )
    _delete_upload(rows)


def _delete_upload(rows: list[dict]) -> None:
    names = {r["hash"]: f"{r['label']} ({r['hash'][:12]}, {r['status'][:6]})" for r in rows}
    cols = st.columns([3, 2, 1], vertical_alignment="bottom")
    chosen = cols[0].selectbox(
        "Upload to delete", list(names), format_func=names.__getitem__, key="delete_upload"
    )
    with_studies = cols[1].checkbox("and the studies that use it", key="delete_with_studies")
    if not cols[2].button("Delete upload", key="delete_upload_button"):
        return
    try:
        gone = delete_upload(chosen, with_studies=with_studies)
    except ValueError as err:
        st.error(f"Not deleted: {err}", icon=":material/error:")
        return
    st.session_state[DELETED_KEY] = f"Deleted {names[chosen]}" + (
        f" and the studies {', '.join(map(repr, gone))}" if gone else ""
    )
    st.rerun()


def _delete_study() -> None:
    own = [s.name for s in sidebar.studies()[0] if not s.builtin]
    if not own:
        return
    st.subheader("Delete a study")
    cols = st.columns([3, 1], vertical_alignment="bottom")
    name = cols[0].selectbox("Study", own, key="delete_study")
    if cols[1].button("Delete study", key="delete_study_button"):
        delete_study(name)  # its checkpoints stay
        st.session_state[DELETED_KEY] = f"Deleted study {name!r}"
        st.rerun()


def main() -> None:
    st.title("Upload")
    _upload_section(int(st.get_option("server.maxUploadSize")))
    if DELETED_KEY in st.session_state:
        st.success(st.session_state.pop(DELETED_KEY), icon=":material/delete:")
    _uploads_table()
    _study_section()
    _delete_study()


main()
