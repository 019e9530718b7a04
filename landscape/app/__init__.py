"""Streamlit dashboard, shipped inside the package: ``landscape app`` serves it.

Importing this package imports no streamlit: the pages, sidebar and jobs are imported by the
entry script ``main.py`` when streamlit runs it.
"""

from __future__ import annotations

from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"  # the entry script, by absolute path

SERVER_OPTIONS = {  # passed as flags, so they hold from any folder (no .streamlit/ needed)
    "server.address": "127.0.0.1",  # local only: the app reads and writes files on this machine
    "server.headless": "true",  # do not try to open a browser on start
    "server.maxUploadSize": "1024",  # MB; the Upload page names it (a WRN28x10 curve: ~0.6 GB)
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "minimal",
}


def streamlit_flags(*, port: int = 8501, **overrides: str) -> list[str]:
    """``streamlit run`` flags: :data:`SERVER_OPTIONS`, the port, and ``overrides``.

    Args:
        port: the server's port.
        overrides: further options, with ``_`` for ``.`` (``server_fileWatcherType="none"``).
    """
    options = {**SERVER_OPTIONS, "server.port": str(port)}
    options |= {k.replace("_", ".", 1): v for k, v in overrides.items()}
    return [arg for key, value in options.items() for arg in (f"--{key}", value)]
