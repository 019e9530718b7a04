"""``python -m landscape.app.server [flags]``: ``streamlit run`` of the dashboard behind a
Host check, answering only once the pages' modules are imported.

A page on another site can make a browser resolve its own name to 127.0.0.1 (DNS rebinding);
its requests then reach this server with ``Host: evil.example``. Streamlit checks no Host on
plain HTTP, so every HTTP request and WebSocket whose Host is not the bound address or
localhost is refused here (400, or the WebSocket closed before it opens: 403).

The script runs in this process, so the modules it imports (torch, plotly, pandas, the
library) are imported here before the server starts (:func:`preload`): the first visit then
runs only the page's own work (issue 15: imports were 3.2 s of a 6.8 s first page).
"""

from __future__ import annotations

import ast
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from landscape.app import MAIN, VIEWS

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def host_allowed(host: str | None, address: str) -> bool:
    """Whether a Host header names ``address`` (the bound address) or localhost."""
    if not host:
        return False
    try:
        parts = urlsplit(f"//{host}")
        name = parts.hostname
    except ValueError:
        return False
    if name is None or parts.username is not None or parts.path or parts.query:
        return False
    return name.rstrip(".") in LOCAL_HOSTS | {address}


class HostCheck:
    """ASGI middleware: refuse requests whose Host header is not local (see the module)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            from streamlit import config

            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1")
            if not host_allowed(host, config.get_option("server.address") or "127.0.0.1"):
                await _refuse(scope, send)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
        return
    headers = [(b"content-type", b"text/plain"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": b"Invalid Host header\n"})


def install_host_check() -> None:
    """Put :class:`HostCheck` in front of the middleware of every Streamlit server started."""
    from starlette.middleware import Middleware
    from streamlit.web.server.starlette import starlette_app

    create = starlette_app.create_streamlit_middleware
    if getattr(create, "host_checked", False):
        return

    def create_with_host_check() -> list[Middleware]:
        return [Middleware(HostCheck), *create()]

    create_with_host_check.host_checked = True  # type: ignore[attr-defined]
    starlette_app.create_streamlit_middleware = create_with_host_check


def page_imports() -> list[tuple[str, list[str]]]:
    """(module, names) of every absolute import in the entry script and the pages, also
    those inside functions: ``("a.b", [])`` for ``import a.b``, ``("a", ["b"])`` for
    ``from a import b``."""
    found = []
    for script in (MAIN, *sorted(VIEWS.glob("*.py"))):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((node.module, [a.name for a in node.names]))
    return found


def preload() -> None:
    """Import what the pages import, before any session asks for a page."""
    # Their caches are defined before the runtime exists: streamlit warns that it falls back
    # to a memory cache then, but every call uses the runtime's (the warning is noise here).
    caching = logging.getLogger("streamlit.runtime.caching.cache_data_api")
    caching.addFilter(_no_runtime)
    try:
        for module, names in page_imports():
            try:
                __import__(module, fromlist=names)
            except ImportError:
                continue  # an optional module: the page that imports it says what is missing
    finally:
        caching.removeFilter(_no_runtime)


def _no_runtime(record: logging.LogRecord) -> bool:
    return "No runtime found" not in record.getMessage()


def main(argv: list[str]) -> None:
    """``streamlit run MAIN *argv`` in this process, with the Host check installed and the
    pages' modules imported."""
    from streamlit.web import cli

    install_host_check()
    preload()
    sys.argv = ["streamlit", "run", str(MAIN), *argv]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main(sys.argv[1:])
