"""Dashboard entry script: ``streamlit run app/main.py`` from the repository root.

Builds the navigation (one file per page in ``app/views/``) and the sidebar (study, A/B,
device) that every page reads through ``app.state.selection()``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # streamlit puts app/ on sys.path; the pages import app.*
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import state  # noqa: E402


def run() -> None:
    """Draw the sidebar and run the selected page."""
    st.set_page_config(page_title="landscape", page_icon=":material/landscape:", layout="wide")
    pages = [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/connectivity.py", title="Connectivity", icon=":material/timeline:"),
        st.Page("views/plane.py", title="Plane", icon=":material/grid_on:"),
        st.Page("views/trajectories.py", title="Trajectories", icon=":material/route:"),
        st.Page("views/directions.py", title="Directions", icon=":material/explore:"),
        st.Page("views/pruning.py", title="Pruning", icon=":material/content_cut:"),
        st.Page("views/upload.py", title="Upload", icon=":material/upload_file:"),
    ]
    page = st.navigation(pages)
    st.session_state["selection"] = state.sidebar()
    page.run()


if __name__ == "__main__":
    run()
