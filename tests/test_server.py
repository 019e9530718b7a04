"""The served dashboard: Host check against DNS rebinding, and settings that hold from any folder.

The server is started as ``landscape app`` starts it (``server_command``), from a folder whose
``.streamlit/config.toml`` asks for the opposite of every safe setting.
"""

import base64
import json
import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from landscape.app import server_command, server_options, streamlit_flags
from landscape.app.serve import running_app
from landscape.app.server import host_allowed, page_imports

HOSTILE_CONFIG = """
[server]
address = "0.0.0.0"
enableCORS = false
enableXsrfProtection = false
maxUploadSize = 100000
[browser]
gatherUsageStats = true
"""


def _hostile_folder(path):
    (path / ".streamlit").mkdir(parents=True)
    (path / ".streamlit" / "config.toml").write_text(HOSTILE_CONFIG)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = _hostile_folder(tmp_path_factory.mktemp("served"))  # running_app runs in ``home``
    with running_app(home) as url:
        yield urlsplit(url).port


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def _get(port: int, host: str) -> int:
    return _status(
        _raw(port, f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    )


def _upgrade(port: int, host: str) -> int:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: streamlit\r\n\r\n"
    )
    return _status(_raw(port, request.encode()))


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example"])
def test_foreign_host_is_refused_on_http_and_websocket(served, host):
    host = host.format(port=served)
    assert 400 <= _get(served, host) < 500
    assert _upgrade(served, host) != 101  # refused before the WebSocket opens
    assert 400 <= _upgrade(served, host) < 500


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "127.0.0.1"])
def test_local_host_is_served(served, host):
    host = host.format(port=served)
    assert _get(served, host) == 200
    assert _upgrade(served, host) == 101


def _listening(port: int) -> list[str]:
    """Local addresses of the listening TCP sockets on ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for name in ("tcp", "tcp6"):
        path = f"/proc/net/{name}"
        if not os.path.exists(path):
            continue
        for line in open(path).read().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


def test_server_binds_loopback_only_despite_a_config_in_the_folder(served):
    assert _listening(served) == ["0100007F"]  # 127.0.0.1, little-endian hex; no 0.0.0.0 or ::


def test_flags_override_a_hostile_config_in_the_current_folder(tmp_path):
    folder = _hostile_folder(tmp_path / "cwd")
    code = (
        "import json, sys\n"
        "from streamlit import config\n"
        "from streamlit.web.bootstrap import load_config_options\n"
        "flags = sys.argv[1:]\n"
        "load_config_options({k[2:].replace('.', '_'): v for k, v in zip(flags[::2], flags[1::2])})\n"
        "names = ['server.address', 'browser.gatherUsageStats', 'server.enableCORS',\n"
        "         'server.enableXsrfProtection', 'server.maxUploadSize']\n"
        "print(json.dumps({n: config.get_option(n) for n in names}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *streamlit_flags(port=8599)],
        cwd=folder, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # Flags arrive as text (click converts them when streamlit runs): compare as text.
    got = {k: str(v).lower() for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    assert got == {
        "server.address": "127.0.0.1",
        "browser.gatherUsageStats": "false",
        "server.enableCORS": "true",
        "server.enableXsrfProtection": "true",
        "server.maxUploadSize": server_options()["server.maxUploadSize"],
    }


def test_command_serves_through_the_host_check():
    cmd = server_command(port=8599)
    assert cmd[1:3] == ["-m", "landscape.app.server"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.enableXsrfProtection"] == "true"


def test_upload_limit_follows_the_setting(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_MAX_UPLOAD", str(10 * 1024 * 1024 + 1))
    assert server_options()["server.maxUploadSize"] == "11"


@pytest.mark.parametrize(
    "host, ok",
    [("127.0.0.1:8501", True), ("localhost", True), ("[::1]:8501", True), ("LOCALHOST.", True),
     ("evil.example", False), ("", False), ("user@127.0.0.1", False), ("127.0.0.1:99999", True)],
)  # fmt: skip
def test_host_allowed(host, ok):
    assert host_allowed(host, "127.0.0.1") is ok


FIRST_RUN = """
import json, sys
from landscape.app import MAIN
from landscape.app.server import preload

preload()
from streamlit.testing.v1 import AppTest

before = set(sys.modules)
at = AppTest.from_file(str(MAIN), default_timeout=60)
at.run()
new = sorted(set(sys.modules) - before)
print(json.dumps({"before": sorted(before), "new": new, "title": at.title[0].value,
                  "exception": [str(e.value) for e in at.exception]}))
"""


def test_preload_imports_what_the_first_page_needs(home):
    # The served script runs in the server's process: after preload, the Overview's first run
    # imports no package that was not there (only lazy parts of plotly, pandas, streamlit).
    done = subprocess.run([sys.executable, "-c", FIRST_RUN], capture_output=True, text=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["exception"] == [] and report["title"] == "Overview: default"
    assert {"torch", "plotly", "pandas", "landscape.app.report"} <= set(report["before"])
    top = {m.split(".")[0] for m in report["before"]}
    assert [m for m in report["new"] if m.split(".")[0] not in top] == []
    assert [m for m in report["new"] if m.startswith("landscape")] == []
    assert "No runtime found" not in done.stderr  # streamlit's warning, filtered in preload


def test_page_imports_reads_the_pages_imports_also_inside_functions():
    found = page_imports()
    assert ("streamlit", []) in found
    assert ("landscape.app", ["charts", "sidebar", "ui"]) in found  # views/overview.py
    assert ("landscape.app.report", ["build_report"]) in found  # inside a function
