"""The HTTPS edge: `create_app(...) -> FastAPI`. The only importer of FastAPI.

Per request: enforce the body limit (413), the content type (415), decode JSON and the
AdmissionReview shape (400 with a JSON error body), then call the pure core (`mutate` /
`validate`) in a worker thread bounded by the request's `?timeout=`, and serialise. Anything
that goes wrong inside the core becomes an AdmissionReview with `status.code: 500`, never a
stack trace or a dropped connection. The request path reads in-memory state only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from webhook import review as rv
from webhook.admission import validate
from webhook.catalog import Catalog
from webhook.guard import Guard
from webhook.metrics import CONTENT_TYPE, Metrics
from webhook.mutation import mutate
from webhook.policy import ClusterPolicy
from webhook.review import AdmissionRequest, AdmissionResponse
from webhook.state import StateSource
from webhook.templates import TemplateStore
from webhook.tls import ReloadingTLS

log = logging.getLogger("ollama_guard")
DEFAULT_TIMEOUT = 10.0
#: answer this much before kube-apiserver gives up, so it gets our reason rather than a timeout
TIMEOUT_HEADROOM = 0.2
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
Handler = Callable[[AdmissionRequest, Guard], AdmissionResponse]


class BodyTooLarge(Exception):
    pass


def parse_timeout(raw: str | None) -> float:
    """kube-apiserver's `?timeout=5s` (a Go duration); unknown forms fall back to the default."""
    match = _DURATION.match(raw or "")
    if not match:
        return DEFAULT_TIMEOUT
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]
    return min(max(value, 0.05), 30.0)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "status": status})


def create_app(
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    source: StateSource,
    max_body_bytes: int = 3 << 20,
) -> FastAPI:
    """The admission server for one state source. Startup/shutdown of the source in `lifespan`."""
    metrics = Metrics(lambda: source.ledger)

    def would_deny(namespace: str, rule: str, message: str) -> None:
        metrics.would_deny.labels(namespace, rule).inc()
        log.info("audit: would deny", extra={"fields": {"namespace": namespace, "rule": rule, "reason": message}})

    def guard() -> Guard:
        return Guard(
            cluster=cluster,
            catalog=catalog,
            ledger=source.ledger,
            templates=templates,
            on_bound=source.on_bound,
            on_would_deny=would_deny,
        )

    templates = TemplateStore()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        source.start()
        try:
            yield
        finally:
            source.stop()

    app = FastAPI(title="ollama-guard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics
    app.state.source = source

    async def admit(request: Request, webhook: str, handler: Handler) -> Response:
        started = time.perf_counter()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            metrics.bad_requests.labels(webhook, "415").inc()
            return _error(415, f"content type must be application/json, got {ctype or 'none'!r}")
        try:
            body = await read_body(request, max_body_bytes)
        except BodyTooLarge:
            metrics.bad_requests.labels(webhook, "413").inc()
            return _error(413, f"request body exceeds the {max_body_bytes} byte limit")
        try:
            req = rv.parse_review(json.loads(body))
        except (ValueError, RecursionError) as exc:
            metrics.bad_requests.labels(webhook, "400").inc()
            message = str(exc) if isinstance(exc, rv.ReviewError) else f"body is not valid JSON: {str(exc)[:200]}"
            return _error(400, message)
        timeout = parse_timeout(request.query_params.get("timeout"))
        response = await _decide(req, handler, guard, timeout - TIMEOUT_HEADROOM)
        review = rv.build_review(req.uid, response, mutating=webhook == "mutate")
        elapsed = time.perf_counter() - started
        decision = _decision(response)
        metrics.requests.labels(webhook, req.kind.kind, req.operation, decision).inc()
        metrics.latency.labels(webhook).observe(elapsed)
        log.info(
            "admission",
            extra={
                "fields": {
                    "uid": req.uid,
                    "webhook": webhook,
                    "kind": req.kind.kind,
                    "subresource": req.sub_resource,
                    "operation": req.operation,
                    "namespace": req.namespace,
                    "name": req.name,
                    "dryRun": req.dry_run,
                    "decision": decision,
                    "code": response.code,
                    "latency_ms": round(elapsed * 1000, 3),
                    **({"reason": response.message} if not response.allowed else {}),
                }
            },
        )
        return Response(content=json.dumps(review, separators=(",", ":")), media_type="application/json")

    @app.post("/mutate")
    async def mutate_endpoint(request: Request) -> Response:
        return await admit(request, "mutate", mutate)

    @app.post("/validate")
    async def validate_endpoint(request: Request) -> Response:
        return await admit(request, "validate", validate)

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


async def _decide(
    req: AdmissionRequest, handler: Handler, make_guard: Callable[[], Guard], budget: float
) -> AdmissionResponse:
    def decide() -> AdmissionResponse:
        return handler(req, make_guard())  # the guard is built here too: reading the state can fail

    try:
        return await asyncio.wait_for(anyio.to_thread.run_sync(decide), timeout=max(budget, 0.01))
    except TimeoutError:
        log.error("decision timed out", extra={"fields": {"uid": req.uid, "budget_s": budget}})
        return rv.errored(f"ollama-guard could not decide within the request timeout ({budget:.2f}s)")
    except Exception:  # our own bug: report it inside the review, never as a dropped connection
        log.exception("internal error", extra={"fields": {"uid": req.uid}})
        return rv.errored("ollama-guard internal error while evaluating this request; see the guard's logs")


def _decision(response: AdmissionResponse) -> str:
    if not response.allowed:
        return "error" if response.code == 500 else "denied"
    if response.patch:
        return "patched"
    return "warned" if response.warnings else "allowed"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("ollama_guard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def build_server(app: FastAPI, *, host: str, port: int, tls: ReloadingTLS) -> uvicorn.Server:
    """A uvicorn server on the reloading TLS context (keep-alive long enough for kube-apiserver)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_context_factory=tls.ssl_context_factory,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=60,
        limit_concurrency=2048,
    )
    return uvicorn.Server(config)


async def serve_https(server: uvicorn.Server, tls: ReloadingTLS, *, reload_interval: float = 2.0) -> None:
    """Serve until stopped, checking the certificate files for rotation meanwhile."""
    watcher = asyncio.create_task(tls.watch(interval=reload_interval))
    try:
        await server.serve()
    finally:
        watcher.cancel()


def run_https(app: FastAPI, *, host: str, port: int, tls: ReloadingTLS) -> None:
    asyncio.run(serve_https(build_server(app, host=host, port=port, tls=tls), tls))
