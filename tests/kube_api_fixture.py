"""A small Kubernetes API server on loopback (test helper): list + watch of Nodes, Pods, Namespaces,
Deployments and StatefulSets.

It speaks the real wire format that `kube-apiserver` uses for the collections the `kubernetes`
client calls (`/api/v1/nodes`, `/api/v1/pods`, `/api/v1/namespaces`, `/apis/apps/v1/deployments`,
`/apis/apps/v1/statefulsets`):

- list: `{"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "12"},
  "items": [...]}` with items lacking kind/apiVersion; `limit` + `continue` paginate over a
  consistent snapshot (a continue token of a compacted snapshot gets HTTP 410).
- `?watch=true|1`: HTTP 200, `Transfer-Encoding: chunked`, one JSON event per line
  (`{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": {...}}`) for changes after the
  requested resourceVersion; `timeoutSeconds` ends the stream cleanly; BOOKMARKs only with
  `allowWatchBookmarks=true`; a resourceVersion older than the retained history gets an ERROR
  event carrying a `410 Expired` Status, then the stream ends.

Test controls: `add`, `modify`, `delete`, `bookmark`, `compact`, `drop_connections` (abrupt
close of open watch streams), `hold_watches` (watch requests wait while held), `set_failure`
(answer a kind's lists or watches with an HTTP error Status), `open_watches`, and `requests`
(every request's path and query, with its arrival time). One global, monotonically increasing
resourceVersion.
"""

from __future__ import annotations

import base64
import copy
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATHS = {
    "/api/v1/nodes": "Node",
    "/api/v1/pods": "Pod",
    "/api/v1/namespaces": "Namespace",
    "/apis/apps/v1/deployments": "Deployment",
    "/apis/apps/v1/statefulsets": "StatefulSet",
}
API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1"}  # the rest: "v1"
_DEFAULT_WATCH_SECONDS = 1800.0
_DROP = object()


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server saw it."""

    kind: str | None
    path: str
    query: dict[str, str]
    at: float  # time.monotonic() on arrival

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass(slots=True)
class _Watcher:
    kind: str
    bookmarks: bool
    sock: socket.socket
    events: queue.Queue[Any] = field(default_factory=queue.Queue)


def object_key(obj: dict[str, Any]) -> str:
    """`namespace/name` for namespaced objects, `name` for cluster-scoped ones."""
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A `meta/v1 Status` failure as the API server writes it."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class KubeApiFixture:
    """The server and its state; use as a context manager or call `start()` / `close()`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rv = 1
        self._compacted_rv = 0
        self._objects: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in PATHS.values()}
        self._history: list[tuple[int, str, dict[str, Any]]] = []  # (rv, kind, event)
        self._snapshots: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._watchers: list[_Watcher] = []
        self._failures: dict[tuple[str, bool], tuple[int, int | None]] = {}
        self._held = False
        self._requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.api = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def start(self) -> KubeApiFixture:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()
        self.drop_connections()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> KubeApiFixture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- test controls -------------------------------------------------------------------------
    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create `obj` (which names its `kind`); returns the stored object (with RV and uid)."""
        kind, stored = _split_kind(obj)
        stored["metadata"].setdefault("uid", str(uuid.uuid4()))
        stored["metadata"].setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
        with self._cond:
            if object_key(stored) in self._objects[kind]:
                raise ValueError(f"{kind} {object_key(stored)} already exists")
            return self._change(kind, "ADDED", stored)

    def modify(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind, stored = _split_kind(obj)
        with self._cond:
            old = self._objects[kind][object_key(stored)]  # KeyError when absent, as a 404
            stored["metadata"].setdefault("uid", old["metadata"]["uid"])
            return self._change(kind, "MODIFIED", stored)

    def delete(self, kind: str, key: str) -> dict[str, Any]:
        with self._cond:
            return self._change(kind, "DELETED", copy.deepcopy(self._objects[kind][key]))

    def bookmark(self, kind: str) -> int:
        """Send a BOOKMARK at the current RV to the open watches of `kind` that allow them."""
        with self._cond:
            version = API_VERSIONS.get(kind, "v1")
            event = {"type": "BOOKMARK", "object": {
                "kind": kind, "apiVersion": version, "metadata": {"resourceVersion": str(self._rv)}}}
            for watcher in self._watchers:
                if watcher.kind == kind and watcher.bookmarks:
                    watcher.events.put(event)
            return self._rv

    def compact(self) -> int:
        """Forget history and list snapshots: watches from an older RV get `410 Expired`."""
        with self._cond:
            self._history.clear()
            self._snapshots.clear()
            self._compacted_rv = self._rv
            return self._rv

    def drop_connections(self) -> int:
        """Close every open watch stream abruptly (no final chunk); returns how many."""
        with self._cond:
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.events.put(_DROP)
            with suppress(OSError):
                watcher.sock.shutdown(socket.SHUT_RDWR)
        return len(watchers)

    @contextmanager
    def hold_watches(self) -> Iterator[None]:
        """Drop open watches; new watch requests wait (unanswered) until the block exits."""
        with self._cond:
            self._held = True
        self.drop_connections()
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def set_failure(self, kind: str, status: int | None, *, watch: bool = False,
                    times: int | None = None) -> None:
        """Answer `kind`'s next `times` (default: all) lists or watches with an HTTP error Status.

        None restores normal answers.
        """
        with self._cond:
            if status is None:
                self._failures.pop((kind, watch), None)
            else:
                self._failures[(kind, watch)] = (status, times)

    def open_watches(self, kind: str | None = None) -> int:
        """How many watch streams are open (registered for live events) now."""
        with self._cond:
            return sum(1 for w in self._watchers if kind is None or w.kind == kind)

    def requests(self, kind: str | None = None, *, watch: bool | None = None
                 ) -> list[RecordedRequest]:
        with self._cond:
            return [r for r in self._requests if (kind is None or r.kind == kind)
                    and (watch is None or r.watch == watch)]

    # --- protocol ------------------------------------------------------------------------------
    def _change(self, kind: str, type_: str, stored: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        stored["metadata"]["resourceVersion"] = str(self._rv)
        key = object_key(stored)
        if type_ == "DELETED":
            del self._objects[kind][key]
        else:
            self._objects[kind][key] = stored
        event = {"type": type_, "object": {"kind": kind, "apiVersion": API_VERSIONS.get(kind, "v1"), **stored}}
        self._history.append((self._rv, kind, event))
        for watcher in self._watchers:
            if watcher.kind == kind:
                watcher.events.put(event)
        return copy.deepcopy(stored)

    def _record(self, kind: str | None, path: str, query: dict[str, str]) -> None:
        with self._cond:
            self._requests.append(RecordedRequest(kind, path, query, time.monotonic()))

    def _failure(self, kind: str, watch: bool) -> int | None:
        with self._cond:
            if watch:  # a held watch request waits before it is answered at all
                while self._held:
                    self._cond.wait()
            status, times = self._failures.get((kind, watch), (None, None))
            if times is not None:
                if times <= 1:
                    del self._failures[(kind, watch)]
                else:
                    self._failures[(kind, watch)] = (status or 0, times - 1)
            return status

    def _list_body(self, kind: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._cond:
            if "continue" in query:
                token = json.loads(base64.b64decode(query["continue"]))
                rv, start = int(token["rv"]), int(token["start"])
                items = self._snapshots.get((kind, rv))
                if items is None:
                    return 410, status_body(410, "Expired", "The provided continue parameter "
                                            "is too old to display a consistent list result.")
            else:
                rv, start = self._rv, 0
                items = [copy.deepcopy(o) for _, o in sorted(self._objects[kind].items())]
            limit = int(query.get("limit") or 0) or len(items) or 1
            metadata: dict[str, Any] = {"resourceVersion": str(rv)}
            if start + limit < len(items):
                self._snapshots[(kind, rv)] = items
                token = {"v": "meta.k8s.io/v1", "rv": rv, "start": start + limit}
                metadata["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
        return 200, {"kind": f"{kind}List", "apiVersion": API_VERSIONS.get(kind, "v1"), "metadata": metadata,
                     "items": items[start:start + limit]}

    def _open_watch(self, kind: str, query: dict[str, str], sock: socket.socket
                    ) -> tuple[list[dict[str, Any]], _Watcher | None]:
        """Backlog to send first and the registered watcher (None: expired, send the backlog)."""
        with self._cond:
            since = query.get("resourceVersion", "")
            if since in ("", "0"):
                backlog = [{"type": "ADDED", "object": {"kind": kind, "apiVersion": API_VERSIONS.get(kind, "v1"), **o}}
                           for o in self._objects[kind].values()]
            elif int(since) < self._compacted_rv:
                message = f"too old resource version: {since} ({self._compacted_rv})"
                return [{"type": "ERROR", "object": status_body(410, "Expired", message)}], None
            else:
                backlog = [e for rv, k, e in self._history if k == kind and rv > int(since)]
            watcher = _Watcher(kind, query.get("allowWatchBookmarks") == "true", sock)
            self._watchers.append(watcher)
            return backlog, watcher

    def _close_watch(self, watcher: _Watcher) -> None:
        with self._cond:
            if watcher in self._watchers:
                self._watchers.remove(watcher)


def _split_kind(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    stored = copy.deepcopy(obj)
    kind = stored.pop("kind")
    stored.pop("apiVersion", None)
    if kind not in PATHS.values():
        raise ValueError(f"unsupported kind {kind!r}")
    return kind, stored


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        api: KubeApiFixture = self.server.api  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        kind = PATHS.get(parts.path)
        api._record(kind, parts.path, query)
        if kind is None:
            self._send_json(404, status_body(404, "NotFound", f"the server could not find "
                                             f"the requested resource ({parts.path})"))
            return
        watch = query.get("watch") in ("true", "1")
        failure = api._failure(kind, watch)
        if failure is not None:
            self._send_json(failure, status_body(failure, "InternalError", "injected failure"))
        elif watch:
            self._serve_watch(api, kind, query)
        else:
            self._send_json(*api._list_body(kind, query))

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve_watch(self, api: KubeApiFixture, kind: str, query: dict[str, str]) -> None:
        backlog, watcher = api._open_watch(kind, query, self.connection)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in backlog:
                self._send_chunk(event)
            if watcher is not None and not self._stream(watcher, query):
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            if watcher is not None:
                api._close_watch(watcher)

    def _stream(self, watcher: _Watcher, query: dict[str, str]) -> bool:
        """Forward events until the timeout (True) or a drop (False)."""
        timeout = float(query.get("timeoutSeconds") or _DEFAULT_WATCH_SECONDS)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = watcher.events.get(timeout=remaining)
            except queue.Empty:
                break
            if event is _DROP:
                return False
            self._send_chunk(event)
        return True

    def _send_chunk(self, event: dict[str, Any]) -> None:
        line = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
