"""The most recent admission denials and warnings, for the live page (design §15).

`RecentDecisions` is a bounded ring (oldest dropped first) that `AdmissionEndpoint` feeds with every
answer that denies, warns, errs or records an audit-mode would-be denial; plain admissions are not
kept. What is kept is what the review's author sees (kind, namespace, name, operation, the message
and warnings), never the object itself nor the requesting user. Appends happen on the server's
event-loop thread; `entries` may be read from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from webhook.admission.review import AdmissionRequest, AdmissionResponse

DEFAULT_SIZE = 50


class RecentDecision(NamedTuple):
    """One answer worth showing: denied, warned, audited (would deny) or error (a named tuple:
    one is made per denied or warned review, on the request path)."""

    at: float
    webhook: str
    decision: str
    kind: str
    subresource: str
    operation: str
    namespace: str
    name: str
    code: int | None
    message: str
    warnings: tuple[str, ...]
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "webhook": self.webhook,
            "decision": self.decision,
            "kind": self.kind,
            "subresource": self.subresource,
            "operation": self.operation,
            "namespace": self.namespace,
            "name": self.name,
            "code": self.code,
            "message": self.message,
            "warnings": list(self.warnings),
            "dryRun": self.dry_run,
        }


class RecentDecisions:
    """A ring of the last `size` decisions worth showing; `generation` counts what was ever added."""

    def __init__(self, size: int = DEFAULT_SIZE, *, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[RecentDecision] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._clock = clock
        self.generation = 0

    def record(self, webhook: str, request: AdmissionRequest, response: AdmissionResponse, decision: str) -> None:
        """Keep the answer if it denies, warns, errs or audits; an allowed or patched one is dropped."""
        if decision in ("denied", "error"):
            shown = decision
        elif response.audit_annotations:
            shown = "audited"
        elif response.warnings:
            shown = "warned"
        else:
            return
        fields = (
            self._clock(),
            webhook,
            shown,
            request.kind.kind,
            request.sub_resource,
            request.operation,
            request.namespace,
            request.name or _generated_name(request),
            response.code,
            response.message,
            tuple(response.warnings),
            request.dry_run,
        )
        entry = tuple.__new__(RecentDecision, fields)  # one C call (the named tuple's __new__ is Python)
        with self._lock:
            self._ring.append(entry)
            self.generation += 1

    def entries(self) -> tuple[RecentDecision, ...]:
        """Newest first."""
        with self._lock:
            return tuple(reversed(self._ring))


def _generated_name(request: AdmissionRequest) -> str:
    """A pod created from a template has no name yet: `ollama-56cdc79669-…` from its generateName."""
    meta = (request.object or {}).get("metadata")
    generate = meta.get("generateName") if isinstance(meta, dict) else None
    return f"{generate}…" if isinstance(generate, str) and generate else ""
