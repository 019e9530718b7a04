"""Streamlit dashboard, shipped inside the package: ``landscape app`` serves it.

Importing this package imports no streamlit: the pages, sidebar and jobs are imported by the
entry script ``main.py`` when streamlit runs it, and the server by :mod:`landscape.app.server`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from landscape.settings import settings

MAIN = Path(__file__).resolve().parent / "main.py"  # the entry script, by absolute path
VIEWS = MAIN.parent / "views"  # one script per page

SERVER_OPTIONS = {  # passed as flags, so they hold from any folder (no .streamlit/ needed)
    "server.address": "127.0.0.1",  # local only: the app reads and writes files on this machine
    "server.headless": "true",  # do not try to open a browser on start
    "server.enableCORS": "true",  # WebSockets only from the page's own origin
    "server.enableXsrfProtection": "true",  # uploads need the page's XSRF cookie
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "minimal",
}
MB = 1024 * 1024


def server_options() -> dict[str, str]:
    """:data:`SERVER_OPTIONS` and the upload size limit (MB) of ``$LANDSCAPE_MAX_UPLOAD``."""
    limit_mb = -(-settings().max_upload // MB)  # streamlit counts whole megabytes
    return {**SERVER_OPTIONS, "server.maxUploadSize": str(limit_mb)}


def streamlit_flags(*, port: int = 8501, **overrides: str) -> list[str]:
    """``streamlit run`` flags: :func:`server_options`, the port, and ``overrides``.

    Args:
        port: the server's port.
        overrides: further options, with ``_`` for ``.`` (``server_fileWatcherType="none"``).
    """
    options = {**server_options(), "server.port": str(port)}
    options |= {k.replace("_", ".", 1): v for k, v in overrides.items()}
    return [arg for key, value in options.items() for arg in (f"--{key}", value)]


def server_command(*, port: int = 8501, **overrides: str) -> list[str]:
    """The command that serves the dashboard: streamlit behind a Host check, every option set.

    Args:
        port: the server's port.
        overrides: further options, as for :func:`streamlit_flags`.
    """
    flags = streamlit_flags(port=port, **overrides)
    return [sys.executable, "-m", "landscape.app.server", *flags]
