"""One admission webhook's HTTP edge as a bare ASGI app, kept free of framework layers.

Per request: the content type (415), the body limit (413, checked on Content-Length and while
reading), JSON + AdmissionReview decoding (400 with a JSON error body), the decision within the
request's `?timeout=` (see `Deadline`), serialisation, metrics and one structured log line.
Anything our own code raises becomes an AdmissionReview with `status.code: 500`.
`AdmissionEndpoint.answer` is that work from the complete body on, without ASGI: the hot path,
which `protocol.AdmissionProtocol` calls directly for the reviews kube-apiserver sends.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from threading import get_ident
from typing import Any
from urllib.parse import parse_qs

import anyio
import orjson

from webhook.admission import review as rv
from webhook.admission.context import Guard
from webhook.admission.review import AdmissionRequest, AdmissionResponse
from webhook.http.logs import log_fields, millis
from webhook.http.metrics import Metrics

log = logging.getLogger("ollama_guard")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[AdmissionRequest, Guard], AdmissionResponse]
#: told of every decided review worth showing (denied, failed, or with warnings or audit
#: annotations): (webhook, request, response, decision); the live page's ring
Recorder = Callable[[str, AdmissionRequest, AdmissionResponse, str], None]

DEFAULT_TIMEOUT = 10.0
#: answer this much before kube-apiserver gives up, so it gets our reason rather than a timeout
TIMEOUT_HEADROOM = 0.2
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_JSON = (b"content-type", b"application/json")


class BodyTooLarge(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


def parse_timeout(raw: str | None) -> float:
    """kube-apiserver's `?timeout=5s` (a Go duration); unknown forms fall back to the default."""
    match = _DURATION.match(raw or "")
    if not match:
        return DEFAULT_TIMEOUT
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]
    return min(max(value, 0.05), 30.0)


@functools.lru_cache(maxsize=64)
def query_timeout(query: bytes | None) -> float:
    """The decision budget for a request's query string: every request of one webhook has the same."""
    values = parse_qs((query or b"").decode("latin-1")).get("timeout")
    return parse_timeout(values[0] if values else None)


class Deadline:
    """Runs a decision so that it ends by its budget.

    On the main thread (how `ollama-guard serve` runs uvicorn) the decision runs inline, bounded by
    a SIGALRM interval timer: no thread hand-off on the hot path. Elsewhere (a server embedded in
    another program's thread) it runs in a worker thread bounded by `asyncio.wait_for`.

    The timer is not armed and disarmed around every decision (two system calls per review): a
    decision records its deadline, and arms the timer only when none is pending or the pending
    one would fire after that deadline. When the timer fires, it interrupts the running decision
    if its deadline has passed, re-arms for the rest of its budget if not, and stays quiet when no
    decision is running. Under steady traffic with one budget that is one system call per budget,
    and no decision can outlive its deadline. The process's SIGALRM belongs to this class.
    """

    @staticmethod
    def _on_alarm(signum: int, frame: object) -> None:
        timer = _TIMER
        timer.alarm_at = None
        deadline = timer.deadline
        if deadline is None:
            return  # between decisions: nothing to bound, nothing to re-arm
        left = deadline - time.monotonic()
        if left <= 0:
            timer.deadline = None  # cleared before raising: a stale deadline can never fire later
            raise DeadlineExceeded
        Deadline._arm(deadline, left)

    @staticmethod
    def _arm(deadline: float, seconds: float) -> None:
        _TIMER.alarm_at = deadline
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-4))

    @classmethod
    def inline_ok(cls) -> bool:
        """Whether decisions on this thread can run inline under SIGALRM (installs the handler once)."""
        if not _HAS_TIMER or threading.get_ident() != _MAIN_THREAD:
            return False
        if not _TIMER.installed:
            signal.signal(signal.SIGALRM, cls._on_alarm)
            # a timer still pending at exit would fire once Python has restored SIGALRM's default
            # action, and end the process with "Alarm clock" instead of its own exit status
            atexit.register(signal.setitimer, signal.ITIMER_REAL, 0)
            _TIMER.installed = True
        return True

    @staticmethod
    def run_inline(call: Callable[..., AdmissionResponse], budget: float, *args: Any) -> AdmissionResponse:
        """`call(*args)`, bounded by `budget` seconds (see the class docstring); main thread only."""
        timer = _TIMER
        deadline = time.monotonic() + budget
        timer.deadline = deadline  # set first: a timer firing from here on bounds this decision
        pending = timer.alarm_at
        if pending is None or pending > deadline:
            Deadline._arm(deadline, budget)
        try:
            return call(*args)
        finally:
            timer.deadline = None

    @classmethod
    async def run(cls, call: Callable[[], AdmissionResponse], budget: float) -> AdmissionResponse:
        budget = max(budget, 0.01)
        if cls.inline_ok():
            return cls.run_inline(call, budget)
        try:
            return await asyncio.wait_for(anyio.to_thread.run_sync(call), timeout=budget)
        except TimeoutError:
            raise DeadlineExceeded from None


class _Timer:
    """The process's SIGALRM state (see `Deadline`). An instance, not class attributes of
    `Deadline`: writing a class attribute invalidates the interpreter's attribute caches for the
    class, twice per review (issue 17)."""

    __slots__ = ("alarm_at", "deadline", "installed")

    def __init__(self) -> None:
        #: the running inline decision's deadline (time.monotonic), None between decisions
        self.deadline: float | None = None
        #: when the pending timer fires (time.monotonic), None when no timer is pending
        self.alarm_at: float | None = None
        self.installed = False


_TIMER = _Timer()
_MAIN_THREAD = threading.main_thread().ident
_HAS_TIMER = hasattr(signal, "setitimer")


class AdmissionEndpoint:
    """`POST /mutate` or `POST /validate` as an ASGI app."""

    def __init__(
        self,
        *,
        webhook: str,
        handler: Handler,
        guard: Callable[[], Guard],
        metrics: Metrics,
        max_body_bytes: int,
        recorder: Recorder | None = None,
    ) -> None:
        self.webhook = webhook
        self.recorder = recorder
        self.handler = handler
        self.guard = guard
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.mutating = webhook == "mutate"
        self._stats = metrics.admissions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request, answered in this one coroutine on the common path (a body in one message,
        decided inline: see `Deadline`); every await or call saved here is saved per review (issue
        17). A decided review is counted, timed (arrival to encoded answer) and logged."""
        started = time.perf_counter()
        ctype, declared, _ = content_headers(scope.get("headers") or ())
        if ctype != b"application/json":  # the exact form kube-apiserver sends; else compare the media type
            media = ctype.split(b";")[0].strip().lower().decode("latin-1")
            if media != "application/json":
                return await self.reject(send, 415, f"content type must be application/json, got {media or 'none'!r}")
        limit = self.max_body_bytes
        if self.declares_too_much(declared):
            return await self.reject(send, 413, f"request body exceeds the {limit} byte limit")
        message = await receive()
        raw: bytes = message.get("body", b"")
        if message.get("more_body", False) or len(raw) > limit:  # the whole body in one message is the rule
            try:
                raw = await self.read_rest(raw, message, receive)
            except BodyTooLarge:
                return await self.reject(send, 413, f"request body exceeds the {limit} byte limit")
        # `Deadline.inline_ok()`, without the call once its handler is installed: decided here, inline
        if (_TIMER.installed and get_ident() == _MAIN_THREAD) or Deadline.inline_ok():
            status, body = self.answer(raw, scope.get("query_string"), started)
        else:
            status, body = await self.answer_off_main(raw, scope.get("query_string"), started)
        headers = [_JSON, (b"content-length", b"%d" % len(body))]  # as `_headers`, without the call
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def declares_too_much(self, declared: bytes) -> bool:
        """Whether a Content-Length value (digits; anything else is not a length) exceeds the limit."""
        return declared.isdigit() and (len(declared) > 18 or int(declared) > self.max_body_bytes)

    def answer(self, raw: bytes, query: bytes | None, started: float) -> tuple[int, bytes]:
        """HTTP status and JSON body for one complete request body, decided inline (main thread
        only, see `Deadline`): 400 for a body that is not a review, else 200 with the
        AdmissionReview. `started` (time.perf_counter) is the request's arrival, for its latency.
        The ASGI endpoint and `protocol.AdmissionProtocol` both answer through here."""
        req = self._read(raw)
        if isinstance(req, bytes):
            return 400, req
        budget = query_timeout(query) - TIMEOUT_HEADROOM
        try:
            response = Deadline.run_inline(self.handler, max(budget, 0.01), req, self.guard())
        except DeadlineExceeded:
            response = self._timed_out(req, budget)
        except Exception:
            response = self._failed(req)
        return 200, self.encode(req, response, started)

    async def answer_off_main(self, raw: bytes, query: bytes | None, started: float) -> tuple[int, bytes]:
        """`answer` for a server embedded off the main thread: the decision in a worker thread."""
        req = self._read(raw)
        if isinstance(req, bytes):
            return 400, req
        response = await self.decide(req, query_timeout(query) - TIMEOUT_HEADROOM)
        return 200, self.encode(req, response, started)

    def _read(self, raw: bytes) -> AdmissionRequest | bytes:
        """The review in a request body, or the (counted) 400's body for a body that is not one."""
        try:
            return rv.parse_review(orjson.loads(raw), finite=True)  # orjson refuses NaN and Infinity
        except (ValueError, RecursionError) as exc:
            text = str(exc) if isinstance(exc, rv.ReviewError) else f"body is not valid JSON: {str(exc)[:200]}"
            return self.error(400, text)[1]

    def encode(self, req: AdmissionRequest, response: AdmissionResponse, started: float) -> bytes:
        """The AdmissionReview for a decided review; counted, timed (arrival to encoded) and logged."""
        body = rv.encode_review(req.uid, response, mutating=self.mutating)
        elapsed = time.perf_counter() - started
        if response is rv.PLAIN_ALLOWED:  # most of the traffic: counted, logged at DEBUG, not recorded
            self._stats.answered(self.webhook, req.kind.kind, req.operation, "allowed", elapsed)
            if log.isEnabledFor(logging.DEBUG):
                self._log(logging.DEBUG, req, response, "allowed", elapsed)
        else:
            self.record(req, response, elapsed)
        return body

    async def read_rest(self, first: bytes, message: Message, receive: Receive) -> bytes:
        """The whole body, from its first `message` (whose body is `first`) on."""
        chunks = [first]
        size = len(first)
        while True:
            if size > self.max_body_bytes:
                raise BodyTooLarge
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)

    async def decide(self, req: AdmissionRequest, budget: float) -> AdmissionResponse:
        handler, guard = self.handler, self.guard
        try:
            return await Deadline.run(lambda: handler(req, guard()), budget)
        except DeadlineExceeded:
            return self._timed_out(req, budget)
        except Exception:
            return self._failed(req)

    def _timed_out(self, req: AdmissionRequest, budget: float) -> AdmissionResponse:
        log.error("decision timed out", extra={"fields": {"uid": req.uid, "budget_s": round(budget, 3)}})
        return rv.errored(f"ollama-guard could not decide within the request timeout ({budget:.2f}s)")

    def _failed(self, req: AdmissionRequest) -> AdmissionResponse:
        """Our own bug: reported inside the review, never as a dropped connection."""
        log.exception("internal error", extra={"fields": {"uid": req.uid}})
        return rv.errored("ollama-guard internal error while evaluating this request; see the guard's logs")

    async def reject(self, send: Send, status: int, message: str) -> None:
        """An HTTP error (not an AdmissionReview): the request was not a review we can decide."""
        status, body = self.error(status, message)
        await send({"type": "http.response.start", "status": status, "headers": _headers(body)})
        await send({"type": "http.response.body", "body": body})

    def error(self, status: int, message: str) -> tuple[int, bytes]:
        """A counted HTTP error with its JSON body `{"error": message, "status": status}`."""
        self.metrics.bad_requests.labels(self.webhook, str(status)).inc()
        return status, json.dumps({"error": message, "status": status}).encode()

    def record(self, req: AdmissionRequest, response: AdmissionResponse, elapsed: float) -> None:
        """Count, time, offer to the recorder and log a decided review other than a plain admission."""
        decision = decision_of(response)
        self._stats.answered(self.webhook, req.kind.kind, req.operation, decision, elapsed)
        if self.recorder is not None and (not response.allowed or response.warnings or response.audit_annotations):
            self.recorder(self.webhook, req, response, decision)
        # plain admissions at DEBUG (they are most of the traffic); anything with a reason at INFO+
        level = logging.DEBUG if decision in ("allowed", "patched") else logging.INFO
        if decision == "error":
            level = logging.ERROR
        if log.isEnabledFor(level):
            self._log(level, req, response, decision, elapsed)

    def _log(
        self, level: int, req: AdmissionRequest, response: AdmissionResponse, decision: str, elapsed: float
    ) -> None:
        fields = {
            "uid": req.uid,
            "webhook": self.webhook,
            "kind": req.kind.kind,
            "subresource": req.sub_resource,
            "operation": req.operation,
            "namespace": req.namespace,
            "name": req.name,
            "dryRun": req.dry_run,
            "decision": decision,
            "code": response.code,
            "latency_ms": millis(elapsed * 1000),
        }
        if not response.allowed:
            fields["reason"] = response.message
        if response.warnings:
            fields["warnings"] = list(response.warnings)
        log_fields(log, level, "admission", fields)


def content_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, bytes, bool]:
    """A request's Content-Type and Content-Length values (b"" when absent) and whether it has a
    Transfer-Encoding, from its raw headers (names lower-case, as uvicorn gives them)."""
    ctype, declared, encoded = b"", b"", False
    for name, value in headers:
        if name == b"content-type":
            ctype = value
        elif name == b"content-length":
            declared = value
        elif name == b"transfer-encoding":
            encoded = True
    return ctype, declared, encoded


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [_JSON, (b"content-length", b"%d" % len(body))]


def decision_of(response: AdmissionResponse) -> str:
    if not response.allowed:
        return "error" if response.code == 500 else "denied"
    if response.patch:
        return "patched"
    return "warned" if response.warnings else "allowed"
