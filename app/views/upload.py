"""Upload: add checkpoints (kept by content hash) and name studies from two or more of them."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import state
from landscape.checkpoints import CheckpointError
from landscape.data import DATASETS, DataError
from landscape.models import MODELS
from landscape.studies import Member, Upload, create_study, list_uploads

MB = 1024 * 1024


def _data_options(prefix: str) -> dict:
    cols = st.columns(3)
    name = cols[0].selectbox("Data set", DATASETS, key=f"{prefix}_data")
    seed = cols[1].number_input("Split seed", min_value=0, value=0, step=1, key=f"{prefix}_seed")
    root = cols[2].text_input(
        "Data folder (mnist, cifar10)", key=f"{prefix}_root", disabled=name == "digits"
    )
    data = {"name": name, "split_seed": int(seed)}
    if name != "digits" and root.strip():
        data["root"] = root.strip()
    return data


def _show_upload(up: Upload) -> None:
    verb = "Stored" if up.new else "Already stored (same weights)"
    s = state.summary(up.member)
    st.success(
        f"{verb}: **{up.member.label}**, content hash `{up.hash}`, architecture "
        f"{s.arch['name']} {json.dumps(s.arch.get('kwargs', {}))}, data "
        f"{(s.data or {}).get('name')}, {s.n_params:,} parameters, sparsity {s.sparsity:.2%}."
    )


def _upload_section(limit_mb: int) -> None:
    st.subheader("Add a checkpoint")
    st.caption(
        f"A `.safetensors` file written by `landscape train` carries its architecture and data "
        f"set. A `.pt`/`.pth` state dict (read with `torch.load(weights_only=True)`: no code "
        f"runs) needs both chosen below. Size limit: {limit_mb} MB (server.maxUploadSize)."
    )
    file = st.file_uploader("Checkpoint file", type=["safetensors", "pt", "pth"], key="upload_file")
    with st.expander(
        "Architecture (for .pt/.pth)",
        expanded=file is not None and not file.name.endswith(".safetensors"),
    ):
        arch_name = st.selectbox("Architecture", sorted(MODELS), key="upload_arch")
        arch_kwargs = st.text_input(
            "Arguments (JSON)", value="", key="upload_kwargs", placeholder='{"widths": [64, 64]}'
        )
    st.caption("Data set (used when the file names none):")
    data = _data_options("upload")
    if not st.button("Add checkpoint", key="upload_add", disabled=file is None, type="primary"):
        return
    try:
        up = state.upload_checkpoint(
            file.getvalue(),
            file.name,
            arch_name=arch_name,
            arch_kwargs=arch_kwargs,
            data=data,
            max_bytes=limit_mb * MB,
        )
    except (CheckpointError, DataError, ValueError) as err:
        st.error(f"Not added: {err}", icon=":material/error:")
        return
    _show_upload(up)


def _study_section() -> None:
    st.subheader("New study")
    available = state.members_available()
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
    state.select_study_next_run(study.name)
    st.rerun()


def _uploads_table() -> None:
    uploads = list_uploads()
    if not uploads:
        return
    st.subheader("Uploaded checkpoints")
    rows = []
    for m in uploads:
        s = state.summary(m)
        rows.append(
            {
                "label": m.label,
                "hash": s.hash,
                "architecture": s.arch["name"],
                "data": (s.data or {}).get("name"),
                "parameters": s.n_params,
                "sparsity": round(s.sparsity, 4),
                "file": m.path,
            }
        )
    st.dataframe(pd.DataFrame(rows), key="uploads_table")


def main() -> None:
    st.title("Upload")
    _upload_section(int(st.get_option("server.maxUploadSize")))
    _uploads_table()
    _study_section()


main()
