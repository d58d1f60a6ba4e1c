"""uvicorn's httptools protocol with admission reviews answered without uvicorn's ASGI cycle.

`admission_protocol(endpoints)` is the HTTP protocol class `build_server` gives uvicorn. A request
takes the direct path when it is what kube-apiserver sends: `POST` to an endpoint's path, HTTP/1.1,
`Content-Type: application/json` exactly, a `Content-Length` within the endpoint's body limit, no
`Expect: 100-continue` or upgrade, no earlier request of the connection still with uvicorn, and
decisions can run inline (`Deadline.inline_ok`: the main thread, as `ollama-guard serve` runs).
Its body is collected as the parser hands it over. Complete requests wait in the server's `Batch`
until the event loop's next turn (at most `BATCH_LIMIT` of them): then the endpoints' `answer`
(the function the ASGI endpoint calls too) decides them one after the other, and the answers are
written, each in one write. No ASGI scope, task, event or message dicts are built for them, and
the decisions run back to back while their code and data are in the CPU's caches, not each
between one connection's TLS and socket work and the next's (issue 17, FINDINGS section 14).
Answers keep their connection's request order.

Every other request (other paths and methods, chunked or oversized bodies, another media type, a
pipelined request behind one uvicorn is answering, a server embedded off the main thread) is
uvicorn's, unchanged: it reaches the ASGI app, whose admission endpoints answer the same reviews
the same way. Keep-alive, its timeout, `Connection: close` and graceful shutdown behave as with
uvicorn's own responses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from webhook.http.endpoint import AdmissionEndpoint, Deadline, content_headers

log = logging.getLogger("ollama_guard")
#: most direct requests answered as one batch; at this many the batch runs at once
BATCH_LIMIT = 64
_JSON_HEAD = b"content-type: application/json\r\ncontent-length: "


class AdmissionProtocol(HttpToolsProtocol):
    """See the module docstring; `endpoints` (raw path → endpoint) is set by `admission_protocol`."""

    endpoints: Mapping[bytes, AdmissionEndpoint] = {}
    batch: Batch

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct: AdmissionEndpoint | None = None
        self._chunks: list[bytes] = []
        self._query = b""
        self._started = 0.0
        self._keep = True
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._default_block = b""
        #: loop time the connection went idle (its last response sent, nothing received since)
        self._idle_since: float | None = None
        #: direct requests of this connection waiting in the batch, and those answered
        self._queued = 0
        self.answered_directly = 0
        #: told to shut down while direct answers were due: they are sent, then the connection closed
        self._closing = False

    # Keep-alive: one timer per idle spell, not one per response. uvicorn arms `call_later` after
    # every response and cancels it on the next bytes; here bytes only mark the connection busy,
    # and the timer, when it fires, closes the connection if it has been idle for the whole
    # timeout, or waits for the rest of it.
    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle = self._idle_since
        if idle is None or self.transport.is_closing():
            return  # busy: the response that ends it arms the timer again
        left = idle + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: a direct request still arriving is answered, then closed."""
        if self._direct is not None or self._queued:
            self._keep = False
            self._closing = True
            return
        super().shutdown()

    def on_message_begin(self) -> None:
        """What uvicorn's parser callbacks need; the ASGI scope only once a request turns out not
        to be answered directly (`_scope`)."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _scope(self) -> None:
        """uvicorn's `on_message_begin`, for a request it answers: its scope, with the URL and
        headers already parsed."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        endpoint = self._direct_endpoint()
        if endpoint is None:
            # uvicorn answers this one from a task, which the loop runs after the batch scheduled
            # before it (its ready callbacks are first in, first out): answers keep their order
            self._scope()
            super().on_headers_complete()
            return
        self._direct = endpoint
        self._chunks = []
        self._started = time.perf_counter()

    def _direct_endpoint(self) -> AdmissionEndpoint | None:
        """The endpoint that answers this request directly, or None for uvicorn's ASGI path."""
        parser = self.parser
        if parser.get_method() != b"POST" or self.expect_100_continue or parser.get_http_version() != "1.1":
            return None
        if parser.should_upgrade():
            return None
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            return None  # an earlier request is still being answered: answers go out in order
        url = httptools.parse_url(self.url)
        endpoint = self.endpoints.get(url.path)
        if endpoint is None or not Deadline.inline_ok():
            return None
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) >= limit:
            return None  # uvicorn answers 503
        ctype, declared, encoded = content_headers(self.headers)
        if encoded or ctype != b"application/json" or not declared.isdigit() or endpoint.declares_too_much(declared):
            return None  # uvicorn's: chunked, another media type (or 415), no length, or over the limit (413)
        self._query = url.query or b""
        self._keep = parser.should_keep_alive()
        return endpoint

    def on_body(self, body: bytes) -> None:
        if self._direct is not None:
            self._chunks.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        endpoint = self._direct
        if endpoint is None:
            super().on_message_complete()
            return
        self._direct = None
        chunks = self._chunks
        self._chunks = []
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._queued += 1
        batch = self.batch
        batch.items.append((self, endpoint, raw, self._query, self._started, self._keep))
        if len(batch.items) >= BATCH_LIMIT:
            batch.run()
        elif not batch.scheduled:
            batch.scheduled = True
            self.loop.call_soon(batch.run)

    def send_answer(self, status: int, body: bytes, keep: bool) -> None:
        """Write one direct answer (status line, uvicorn's default headers, ours, the body) in one
        write; then keep-alive or close, as uvicorn does after a response."""
        self._queued -= 1
        self.answered_directly += 1
        if self.transport.is_closing():
            return
        keep = keep and not self._closing
        defaults = self.server_state.default_headers
        if defaults is not self._defaults:  # uvicorn renews them (the date) once a second
            self._defaults = defaults
            self._default_block = b"".join(b"%s: %s\r\n" % pair for pair in defaults)
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    self._default_block,
                    _JSON_HEAD,
                    b"%d\r\n" % len(body),
                    b"\r\n" if keep else b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        if not keep:
            self.transport.close()
        self.on_response_complete()


class Batch:
    """The direct requests completed since the event loop last ran its ready callbacks, answered
    together: all decisions first, back to back, then all writes. A decision's code and data stay
    in the CPU's caches for the next one instead of being evicted by the TLS and socket work in
    between (issue 17: on the wire a binding's decision cost ~6 × its in-process figure)."""

    def __init__(self) -> None:
        self.items: list[tuple[AdmissionProtocol, AdmissionEndpoint, bytes, bytes, float, bool]] = []
        self.scheduled = False
        #: reviews answered and the runs that answered them (`/metrics`: the mean batch)
        self.reviews = 0
        self.runs = 0

    def counts(self) -> tuple[int, int]:
        return self.reviews, self.runs

    def run(self) -> None:
        """Answer every waiting request (on the event loop's turn, or at once at `BATCH_LIMIT`).
        A scheduled run finding the batch already answered does nothing."""
        self.scheduled = False
        items, self.items = self.items, []
        if not items:
            return
        self.runs += 1
        self.reviews += len(items)
        answers = []
        for connection, endpoint, raw, query, started, keep in items:
            try:
                status, body = endpoint.answer(raw, query, started)
            except Exception:  # answer reports its own failures inside the review; this is a bug in it
                log.exception("internal error answering a review")
                status, body = endpoint.error(500, "ollama-guard internal error; see the guard's logs")
            answers.append((connection, status, body, keep))
        for connection, status, body, keep in answers:
            try:
                connection.send_answer(status, body, keep)
            except Exception:  # a transport failing its write: that connection is closed, the others answered
                log.exception("could not write an answer; closing the connection")
                connection.transport.close()


#: what the subclass uses of uvicorn's protocol, which is not a public interface (uvicorn 0.54)
_UVICORN_MEMBERS = (
    "on_message_begin", "on_url", "on_header", "on_headers_complete", "on_body", "on_message_complete",
    "on_response_complete", "_unset_keepalive_if_required", "_start_asgi_task", "shutdown", "connection_lost",
    "data_received",
)  # fmt: skip


def supported() -> bool:
    """Whether the installed uvicorn's httptools protocol has what `AdmissionProtocol` overrides
    and calls; if not, `build_server` serves on uvicorn's own protocol (and says so)."""
    return all(callable(getattr(HttpToolsProtocol, name, None)) for name in _UVICORN_MEMBERS) and 200 in STATUS_LINE


def admission_protocol(endpoints: Mapping[str, AdmissionEndpoint]) -> type[AdmissionProtocol]:
    """The protocol class for a server whose admission endpoints are `endpoints` (path → endpoint)."""
    table = {path.encode("ascii"): endpoint for path, endpoint in endpoints.items()}
    return type("AdmissionProtocol", (AdmissionProtocol,), {"endpoints": table, "batch": Batch()})
