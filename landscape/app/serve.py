"""Run the dashboard in a subprocess and drive it in headless Chromium (e2e test, benchmark)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from landscape.app import MAIN, server_command, streamlit_flags

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium; Playwright's own browsers are not used
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(
    home: str | Path, *, script: str | Path = MAIN, timeout_s: float = 60.0
) -> Iterator[str]:
    """Start ``streamlit run`` of the dashboard on a free port with ``LANDSCAPE_HOME=home``.

    Runs in ``home`` with the flags of ``landscape app``: nothing depends on the current folder.

    Args:
        home: the app's data folder (results, uploads, studies) and its server log.
        script: the entry script (another one for a baseline measurement).
        timeout_s: how long to wait for the server to answer its health check.

    Yields:
        The app's URL; the server is stopped on exit.
    """
    port = free_port()
    env = {**os.environ, "LANDSCAPE_HOME": str(home)}
    if Path(script) == MAIN:  # as `landscape app` serves it
        cmd = server_command(port=port, server_fileWatcherType="none")
    else:  # a baseline script: plain streamlit with the same flags
        cmd = [sys.executable, "-m", "streamlit", "run", str(script)]
        cmd += streamlit_flags(port=port, server_fileWatcherType="none")
    Path(home).mkdir(parents=True, exist_ok=True)
    log_path = Path(home) / "streamlit.log"  # a file, not a pipe: a full pipe would block it
    log = open(log_path, "w")  # noqa: SIM115 (closed in finally, after the process)
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout_s} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def drawn(page, name: str, charts: int, timeout_ms: float = 60_000) -> None:
    """Wait until page ``name``'s title and its ``charts`` Plotly charts are drawn."""
    title = page.locator("h1", has_text=re.compile(f"^{name}"))
    title.wait_for(timeout=timeout_ms)
    # Count the charts only once the new title is the only one: the previous page's elements
    # are gone then.
    page.wait_for_function(
        """([name, charts]) => {
            const main = document.querySelector('[data-testid=stMain]');
            const h1 = [...main.querySelectorAll('h1')].map(h => h.textContent);
            const plots = [...main.querySelectorAll('.js-plotly-plot')].filter(
                p => p.querySelector('.main-svg'));
            return h1.length === 1 && h1[0].startsWith(name) && plots.length >= charts;
        }""",
        arg=[name, charts],
        timeout=timeout_ms,
    )


def idle(page, timeout_ms: float = 60_000) -> None:
    """Wait until the app's script is not running (Streamlit marks it on the stApp element)."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for(
        timeout=timeout_ms
    )
