"""Dashboard entry script: ``landscape app`` runs ``streamlit run`` on this file.

Builds the navigation (one file per page in ``views/`` next to this file, found by absolute
path so the installed package works from any folder) and the sidebar (study, A/B, device)
that every page reads through ``landscape.app.sidebar.selection()``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from landscape.app import VIEWS, sidebar
from landscape.checkpoints import CheckpointError

PAGES = (  # file stem, title, icon; the first is the default page
    ("overview", "Overview", ":material/dashboard:"),
    ("connectivity", "Connectivity", ":material/timeline:"),
    ("plane", "Plane", ":material/grid_on:"),
    ("trajectories", "Trajectories", ":material/route:"),
    ("directions", "Directions", ":material/explore:"),
    ("pruning", "Pruning", ":material/content_cut:"),
    ("upload", "Upload", ":material/upload_file:"),
)


def page_path(stem: str) -> Path:
    """The absolute path of a page script (``st.switch_page`` takes it too)."""
    return VIEWS / f"{stem}.py"


def run() -> None:
    """Draw the sidebar and run the selected page."""
    st.set_page_config(page_title="landscape", page_icon=":material/landscape:", layout="wide")
    pages = [
        st.Page(page_path(stem), title=title, icon=icon, default=i == 0)
        for i, (stem, title, icon) in enumerate(PAGES)
    ]
    page = st.navigation(pages)
    stem = {title: stem for stem, title, _ in PAGES}[page.title]
    linked = st.query_params.get("page")
    first = not st.session_state.get(sidebar.URL_READ_KEY)
    sel = st.session_state["selection"] = sidebar.sidebar()
    st.session_state[sidebar.URL_READ_KEY] = True
    if first and linked in {s for s, _, _ in PAGES} and linked != stem:
        st.switch_page(page_path(linked), query_params=st.query_params.to_dict())  # the link's
    if st.query_params.get("page") != stem:
        st.query_params["page"] = stem
    try:
        page.run()
    except CheckpointError as err:
        # A stored file that no longer validates: say so, never a traceback.
        st.error(
            f"A checkpoint of study {sel.study.name!r} does not load: {err}. Choose another "
            "study, or delete the file on the Upload page.",
            icon=":material/broken_image:",
        )


if __name__ == "__main__":
    run()
