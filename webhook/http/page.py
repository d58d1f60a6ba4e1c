"""The live page (design §15): a read-only, plain-HTTP app on its own port, never the webhook's.

`GET /` is one self-contained page (`webhook/data/live.html`: inline CSS and script, no fonts,
images or any other request than its own JSON) that redraws itself every 2 s from
`GET /api/state`, the document the caller's `state()` returns (the audit's JSON of the view plus
the drift observations and recent decisions: `webhook.audit.live`). Only GET and HEAD; a Content
Security Policy allows nothing but the page's own script (by hash), inline styles and requests
back to this origin. When bound to a loopback address, a request whose `Host` is not a loopback
name is refused (421): a web page elsewhere cannot read the cluster's state through the user's
browser by rebinding a DNS name to 127.0.0.1.

`companion` builds the uvicorn server that `server.serve_https` runs beside the webhook (it leaves
the process's signals to the webhook's server and stops with it).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

PAGE = (Path(__file__).resolve().parents[1] / "data" / "live.html").read_bytes()
_SCRIPT = re.search(rb"<script>(.*?)</script>", PAGE, re.S)
assert _SCRIPT is not None, "live.html has its script inline"
SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.group(1)).digest()).decode()
CSP = (
    f"default-src 'none'; script-src 'sha256-{SCRIPT_HASH}'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an IP, IPv6 possibly in brackets) is this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host of a `Host` header without its port (`[::1]:8080` -> `::1`)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def create_page_app(*, state: Callable[[], bytes], loopback_only: bool) -> FastAPI:
    """The page app; `state()` returns the JSON document (bytes), computed off the event loop."""
    app = FastAPI(title="ollama-guard live", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _plain(405, "read-only: only GET and HEAD", Allow="GET, HEAD")
        if loopback_only and not is_loopback(_host_of(request.headers.get("host", ""))):
            return _plain(421, "this page answers to a loopback host name only (e.g. http://127.0.0.1:PORT/)")
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    @app.api_route("/", methods=["GET", "HEAD"])
    async def page() -> Response:
        return Response(PAGE, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": CSP})

    @app.api_route("/api/state", methods=["GET", "HEAD"])
    async def api_state() -> Response:
        body = await anyio.to_thread.run_sync(state)
        return Response(body, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def _plain(status: int, text: str, **headers: str) -> Response:
    return Response(
        text + "\n", status_code=status, media_type="text/plain; charset=utf-8", headers={**HEADERS, **headers}
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket for the page, bound now so a taken port fails before serving starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _CompanionServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the webhook's server (it stops with it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, slots=True)
class Companion:
    """A server run beside the webhook's, on a socket bound beforehand."""

    server: uvicorn.Server
    socket: socket.socket


def companion(app: FastAPI, sock: socket.socket) -> Companion:
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", limit_concurrency=64)
    return Companion(_CompanionServer(config), sock)
