"""The HTTPS server: `create_app(...) -> FastAPI` and the uvicorn runner. With `protocol` (which
extends uvicorn's httptools protocol), the only importer of FastAPI and uvicorn.

`/mutate` and `/validate` are `endpoint.AdmissionEndpoint`s (bare ASGI); on uvicorn's httptools
parser the reviews kube-apiserver sends are answered before any ASGI cycle, by
`protocol.AdmissionProtocol` through the same endpoint (the hot path). The framework serves
`/healthz`, `/readyz` and `/metrics`, and runs the state source in `lifespan`. The request path
reads in-memory state only.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from webhook.admission.context import Guard
from webhook.admission.mutation import mutate
from webhook.admission.validation import validate
from webhook.core.catalog import Catalog
from webhook.core.drift import Observation
from webhook.core.policy import ClusterPolicy
from webhook.http import hugepages
from webhook.http.endpoint import AdmissionEndpoint, Receive, Recorder, Scope, Send
from webhook.http.metrics import CONTENT_TYPE, Metrics
from webhook.http.page import Companion
from webhook.http.tls import ReloadingTLS
from webhook.state.snapshot import StateSource

log = logging.getLogger("ollama_guard")
#: seconds between two passes marking the heap for huge pages (a live view grows new arenas)
HUGE_PAGES_INTERVAL = 60.0


def create_app(
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    source: StateSource,
    max_body_bytes: int = 3 << 20,
    recorder: Recorder | None = None,
    drift: Callable[[], Mapping[str, Observation]] | None = None,
    huge_pages: bool = False,
) -> FastAPI:
    """The admission server for one state source. Startup/shutdown of the source in `lifespan`.

    `recorder` is told of every decided review (the live page's ring of recent denials and
    warnings); `drift` gives the runtime drift observations `/metrics` shows (design §15);
    `huge_pages`: the heap on transparent huge pages (`hugepages`), at startup and every
    HUGE_PAGES_INTERVAL seconds after (off by default: a test's process keeps its own heap)."""
    metrics = Metrics(lambda: source.ledger, source.readiness, drift=drift)
    templates = source.templates  # watched or read from the snapshot, and fed by admitted workloads

    def would_deny(namespace: str, rule: str, message: str) -> None:
        metrics.would_deny.labels(namespace, rule).inc()
        log.info("audit: would deny", extra={"fields": {"namespace": namespace, "rule": rule, "reason": message}})

    current: list[Guard] = []

    def guard() -> Guard:
        """The request's Guard: one frozen value, rebuilt only if the source swaps its ledger."""
        ledger = source.ledger
        if not current or current[0].ledger is not ledger:
            current[:] = [
                Guard(
                    cluster=cluster,
                    catalog=catalog,
                    ledger=ledger,
                    templates=templates,
                    on_bound=source.on_bound,
                    on_would_deny=would_deny,
                )
            ]
        return current[0]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        source.start()
        gc.freeze()  # the startup view is long-lived: keep it out of every later collection
        advising = None
        if huge_pages:  # the view as it is now collapsed before serving; what the heap grows marked after
            advice = await anyio.to_thread.run_sync(functools.partial(hugepages.advise, collapse=True))
            log.info("huge pages", extra={"fields": {"heap": advice.describe()}})
            advising = asyncio.create_task(_mark_huge_pages())
        try:
            yield
        finally:
            if advising is not None:
                advising.cancel()
            source.stop()

    app = FastAPI(title="ollama-guard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics
    app.state.source = source
    app.state.admission = {}
    for webhook, handler in (("mutate", mutate), ("validate", validate)):
        endpoint = AdmissionEndpoint(
            webhook=webhook,
            handler=handler,
            guard=guard,
            metrics=metrics,
            max_body_bytes=max_body_bytes,
            recorder=recorder,
        )
        app.router.routes.append(Route(f"/{webhook}", endpoint=endpoint, methods=["POST"]))
        app.state.admission[f"/{webhook}"] = endpoint

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, detail = source.readiness()
        return JSONResponse(status_code=200 if ready else 503, content={"ready": ready, **detail})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE)

    return app


async def _mark_huge_pages(interval: float = HUGE_PAGES_INTERVAL) -> None:
    """Every `interval` seconds, mark what the heap has grown for huge pages (khugepaged backs it
    at its own pace); in a worker thread, off the event loop."""
    while True:
        await asyncio.sleep(interval)
        await anyio.to_thread.run_sync(functools.partial(hugepages.advise, collapse=False))


class AdmissionFront:
    """ASGI front door: `POST /mutate` and `POST /validate` go straight to their endpoints (no
    framework middleware on the hot path); everything else, lifespan included, to the FastAPI app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.endpoints: dict[str, AdmissionEndpoint] = dict(app.state.admission)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            endpoint = self.endpoints.get(scope.get("path", ""))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True, slots=True)
class ServerStack:
    """The event loop and HTTP parser uvicorn runs on (uvicorn's `loop` and `http` settings)."""

    loop: str
    http: str

    @property
    def fallback(self) -> str | None:
        """What to tell the operator when uvicorn[standard]'s fast loop or parser is missing."""
        if (self.loop, self.http) == ("uvloop", "httptools"):
            return None
        missing = " and ".join(m for m, used in (("uvloop", self.loop), ("httptools", self.http)) if m != used)
        return (
            f"{missing} not installed: serving on {self.loop} + {self.http}, several times slower per review; "
            "install ollama-guard with its uvicorn[standard] dependency"
        )


def server_stack() -> ServerStack:
    """uvloop + httptools (uvicorn[standard], a dependency of ollama-guard); asyncio's loop or h11
    only for whichever of the two is not installed."""
    found = importlib.util.find_spec
    return ServerStack(
        loop="uvloop" if found("uvloop") else "asyncio", http="httptools" if found("httptools") else "h11"
    )


def build_server(app: FastAPI, *, host: str, port: int, tls: ReloadingTLS) -> uvicorn.Server:
    """A uvicorn server on the reloading TLS context (keep-alive long enough for kube-apiserver),
    explicitly on uvloop + httptools (see `server_stack`), with the admission endpoints' direct
    path (`protocol.AdmissionProtocol`) when `app` has them; run it with `run_server`."""
    admission = getattr(getattr(app, "state", None), "admission", None)
    stack = server_stack()
    if stack.fallback:
        log.warning(stack.fallback)
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if isinstance(metrics, Metrics):
        metrics.server.http = stack.http
    http: str | type[asyncio.Protocol] = stack.http
    if admission and stack.http == "httptools":  # admission reviews on the direct path
        from webhook.http import protocol  # imports httptools: only when it is installed

        if protocol.supported():
            direct = protocol.admission_protocol(admission)
            http = direct
            if isinstance(metrics, Metrics):
                metrics.server.direct = direct.batch.counts
        else:
            log.warning(
                "this uvicorn's httptools protocol is not the one ollama-guard extends: "
                "every review takes uvicorn's ASGI cycle (slower per review)"
            )
    config = uvicorn.Config(
        AdmissionFront(app) if admission else app,
        host=host,
        port=port,
        loop=stack.loop,
        http=http,
        ssl_context_factory=tls.ssl_context_factory,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=60,
        limit_concurrency=2048,
    )
    return uvicorn.Server(config)


async def serve_https(
    server: uvicorn.Server,
    tls: ReloadingTLS,
    *,
    reload_interval: float = 2.0,
    companions: Sequence[Companion] = (),
) -> None:
    """Serve until stopped, checking the certificate files for rotation meanwhile; `companions`
    (the live page's plain-HTTP server on its own socket) run beside it and stop with it."""
    watcher = asyncio.create_task(tls.watch(interval=reload_interval))
    others = [asyncio.create_task(c.server.serve(sockets=[c.socket])) for c in companions]
    try:
        await server.serve()
    finally:
        watcher.cancel()
        for companion in companions:
            companion.server.should_exit = True
        await asyncio.gather(*others, return_exceptions=True)


def run_server(server: uvicorn.Server, tls: ReloadingTLS, *, companions: Sequence[Companion] = ()) -> None:
    """`serve_https` on the event loop the server's config names (uvloop; `asyncio.run` would
    ignore it and run asyncio's own loop)."""
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve_https(server, tls, companions=companions))


def run_https(app: FastAPI, *, host: str, port: int, tls: ReloadingTLS, companions: Sequence[Companion] = ()) -> None:
    run_server(build_server(app, host=host, port=port, tls=tls), tls, companions=companions)
