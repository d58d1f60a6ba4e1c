"""Live cluster edge: an in-memory, projected mirror of Nodes, Pods and Namespaces (list + watch).

The only module that imports `kubernetes`. It speaks the list/watch protocol with raw JSON dicts
(never generated models) and keeps, per kind, `key -> project(kind, raw)`; what to keep and what
a change means belong to the caller. Protocol, as client-go's reflector:

- lists are paginated (`limit`/`continue`) and replace the whole set; after a (re)list the
  mirror emits DELETED for vanished keys, ADDED for new ones, MODIFIED for every other key
  (changed or not), then one SYNC;
- watches (`allowWatchBookmarks`) resume from the last resourceVersion seen in list metadata,
  events and BOOKMARKs; a server that ends the stream (its timeout) is re-watched at once;
- a dropped stream, an HTTP 4xx error or a watch closed in under a second with no event backs off
  and resumes from the last resourceVersion; `410 Gone`/Expired (an ERROR event or the HTTP
  status), an API server that was unavailable (no answer, or a 5xx) and anything unexpected (a
  malformed stream, an exception from `project` or `on_event`) back off and relist (after an
  outage the list is the one definite point where the kind is current again). The backoff is
  capped exponential with full jitter over the consecutive failures, which a successful list,
  an opened watch, any watch event or bookmark resets; while the API server does not answer at
  all its ceiling is also at most a quarter of the outage so far, and the first request that it
  answers again wakes every kind that lost its connection (issue 20: all kinds catch up
  together, in seconds, while a server that stays down still gets the backoff).

Staleness: a kind is current once listed and until its list/watch breaks; it is current again
once a relist is delivered or a resumed watch is open. `status()` says per kind since when it
has been disconnected; `on_connection(kind, current)` is called on each change.

Threads: `start()` runs one daemon thread per kind. `project` and `on_event` run in that thread,
after the store is updated (so `objects()` already shows the change); a consumer should treat
ADDED and MODIFIED alike, as upserts. A kind is ready once its first list has been applied
*and* delivered to `on_event`. All reads are thread-safe.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import kubernetes
import urllib3
from kubernetes.client import ApiClient, ApiException, Configuration
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader

Kind = Literal["Node", "Pod", "Namespace", "Deployment", "StatefulSet"]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "SYNC"]
Project = Callable[[Kind, dict[str, Any]], dict[str, Any] | None]

# kind -> (API class in kubernetes.client, all-namespaces list method): one entry per kind.
_KINDS: Final[Mapping[Kind, tuple[str, str]]] = {
    "Node": ("CoreV1Api", "list_node"),
    "Pod": ("CoreV1Api", "list_pod_for_all_namespaces"),
    "Namespace": ("CoreV1Api", "list_namespace"),
    "Deployment": ("AppsV1Api", "list_deployment_for_all_namespaces"),
    "StatefulSet": ("AppsV1Api", "list_stateful_set_for_all_namespaces"),
}
_SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_TRANSPORT_ERRORS: Final = (OSError, urllib3.exceptions.HTTPError, ApiException)
_SHORT_WATCH_SECONDS: Final = 1.0
_OUTAGE_SHARE: Final = 0.25  # while unanswered, the backoff ceiling is at most this share of the outage
_log = logging.getLogger(__name__)


class ClusterConfigError(RuntimeError):
    """A kubeconfig or in-cluster configuration exists but cannot be used."""


def load_api_client(
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = _SERVICE_ACCOUNT,
) -> ApiClient | None:
    """In-cluster config (unless a kubeconfig or context is given), else kubeconfig, else None.

    The kubeconfig is `kubeconfig`, else `$KUBECONFIG` (a path list), else `~/.kube/config`.
    None means no configuration was found; a broken one raises `ClusterConfigError`.
    """
    env = os.environ if environ is None else environ
    config = Configuration()
    try:
        if kubeconfig is None and context is None and _in_cluster(env, service_account_dir):
            loader: Any = InClusterConfigLoader  # untyped in the client
            loader(
                token_filename=str(service_account_dir / "token"),
                environ=env,
                cert_filename=str(service_account_dir / "ca.crt"),
            ).load_and_set(config)
        elif not _load_kubeconfig(config, kubeconfig, context, env):
            return None
    except ConfigException as exc:
        raise ClusterConfigError(str(exc)) from exc
    return ApiClient(config)


def _load_kubeconfig(
    config: Configuration, kubeconfig: Path | None, context: str | None, env: Mapping[str, str]
) -> bool:
    if kubeconfig is not None and not kubeconfig.is_file():
        raise ClusterConfigError(f"kubeconfig {kubeconfig} does not exist")
    paths = str(kubeconfig) if kubeconfig else env.get("KUBECONFIG") or "~/.kube/config"
    if not any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p):
        return False
    load: Any = kubernetes.config.load_kube_config  # untyped in the client
    load(config_file=paths, context=context, client_configuration=config, persist_config=False)
    return True


def _in_cluster(env: Mapping[str, str], service_account_dir: Path) -> bool:
    return bool(
        env.get("KUBERNETES_SERVICE_HOST")
        and env.get("KUBERNETES_SERVICE_PORT")
        and (service_account_dir / "token").is_file()
    )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change to the mirror; `obj` is the projected object (None for SYNC)."""

    kind: Kind
    type: EventType
    key: str  # "namespace/name", or "name" for cluster-scoped kinds
    obj: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class KindStatus:
    """Health of one kind's list/watch."""

    ready: bool
    resource_version: str | None
    last_event_age_seconds: float | None  # since the last list, event or bookmark
    relists: int  # lists applied after the first one
    reconnects: int  # watches resumed after an error
    errors: int
    last_error: str | None
    #: since the list/watch broke, until it is current again (None: current or never broken)
    disconnected_seconds: float | None = None


@dataclass(slots=True)
class _State:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_version: str | None = None
    ready: bool = False
    last_event_at: float | None = None
    lists: int = 0
    reconnects: int = 0
    errors: int = 0
    failures: int = 0  # consecutive, drives the backoff
    last_error: str | None = None
    response: Any = None  # the in-flight urllib3 response, shut down by stop()
    broken_at: float | None = None  # the list/watch broke then and is not current again yet
    unavailable: bool = False  # the last request found the API server unavailable (no answer or 5xx)
    unanswered: bool = False  # ... and it did not answer at all (refused, reset, timed out)
    cut: bool = False  # the last failure lost the connection (a dropped stream or an unanswered request)


class _Expired(Exception):
    """410: the resourceVersion (or continue token) is gone; relist."""


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random, outage_seconds: float | None = None
) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]. During an outage (the API server
    does not answer at all) the ceiling is also at most a quarter of `outage_seconds`, never below
    `base`: a server that comes back is noticed within about a quarter of the outage."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    if outage_seconds is not None:
        ceiling = min(ceiling, max(base, outage_seconds * _OUTAGE_SHARE))
    return rng.uniform(0.0, ceiling)


def object_key(raw: Mapping[str, Any]) -> str:
    """`namespace/name` for namespaced objects, `name` for cluster-scoped ones."""
    meta = raw.get("metadata") or {}
    name = str(meta.get("name", ""))
    return f"{meta['namespace']}/{name}" if meta.get("namespace") else name


class ClusterMirror:
    """Keeps an in-memory, projected copy of Nodes, Pods and Namespaces by list + watch."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        project: Project,
        on_event: Callable[[WatchEvent], None] | None = None,
        on_connection: Callable[[Kind, bool], None] | None = None,
        kinds: Sequence[Kind] = ("Node", "Pod", "Namespace"),
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        watch_timeout_seconds: int = 300,
        list_page_size: int = 500,
        request_timeout: float = 60.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api, self._project, self._on_event = api_client, project, on_event
        self._on_connection = on_connection
        self._backoff = (backoff_base, backoff_cap)
        self._watch_timeout, self._page_size = watch_timeout_seconds, list_page_size
        self._request_timeout, self._clock = request_timeout, clock
        self._rng = rng or random.Random()
        self._states: dict[Kind, _State] = {kind: _State() for kind in kinds}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # notified when the API server answers again
        self._answers = 0  # how many times it has (any kind's request after one went unanswered)
        self._unanswered = False  # a request went unanswered since the last answer
        self._stopping = threading.Event()
        self._all_ready = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(kind,), daemon=True, name=f"cluster-mirror-{kind}")
            for kind in kinds
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the watchers: interrupts open streams and backoff waits, joins the threads."""
        self._stopping.set()
        with self._lock:
            self._wake.notify_all()
            responses = [s.response for s in self._states.values() if s.response is not None]
        for response in responses:
            _shutdown(response)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def objects(self, kind: Kind) -> Mapping[str, Mapping[str, Any]]:
        """A read-only snapshot (key -> projected object); the objects must not be mutated."""
        with self._lock:
            return MappingProxyType(dict(self._states[kind].objects))

    def get(self, kind: Kind, key: str) -> Mapping[str, Any] | None:
        """One projected object by key (must not be mutated), or None."""
        with self._lock:
            return self._states[kind].objects.get(key)

    def ready(self) -> bool:
        return self._all_ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._all_ready.wait(timeout)

    def status(self) -> dict[Kind, KindStatus]:
        now = self._clock()
        with self._lock:
            return {
                kind: KindStatus(
                    ready=s.ready,
                    resource_version=s.resource_version,
                    last_event_age_seconds=None if s.last_event_at is None else now - s.last_event_at,
                    relists=max(0, s.lists - 1),
                    reconnects=s.reconnects,
                    errors=s.errors,
                    last_error=s.last_error,
                    disconnected_seconds=None if s.broken_at is None else now - s.broken_at,
                )
                for kind, s in self._states.items()
            }

    def staleness(self) -> tuple[tuple[Kind, ...], float | None]:
        """The kinds that are not current (not listed yet, or broken and not caught up), and how
        long the earliest broken one has been (seconds; None when none is broken)."""
        now = self._clock()
        with self._lock:
            kinds = tuple(k for k, s in self._states.items() if not s.ready or s.broken_at is not None)
            broken = [now - s.broken_at for s in self._states.values() if s.broken_at is not None]
        return kinds, max(broken, default=None)

    # --- the per-kind loop ---------------------------------------------------------------------
    def _run(self, kind: Kind) -> None:
        state, relist = self._states[kind], True
        while not self._stopping.is_set():
            try:
                if relist:
                    self._list(kind)
                    relist = False
                self._watch(kind)
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    return
                relist = relist or not isinstance(exc, _TRANSPORT_ERRORS) or state.unavailable
                self._record_failure(kind, exc)
            if not self._back_off(kind):
                return
            if not relist:
                with self._lock:
                    state.reconnects += 1

    def _back_off(self, kind: Kind) -> bool:
        """Sleep the backoff; a kind that lost its connection wakes as soon as the API server answers
        any kind again after leaving one unanswered (all kinds recover together). False: stopping."""
        state = self._states[kind]
        with self._lock:
            outage = None if not state.unanswered or state.broken_at is None else self._clock() - state.broken_at
            base, cap = self._backoff
            delay = backoff_delay(state.failures - 1, base=base, cap=cap, rng=self._rng, outage_seconds=outage)
            answers = self._answers
            self._wake.wait_for(lambda: self._stopping.is_set() or (state.cut and self._answers != answers), delay)
        return not self._stopping.is_set()

    def _record_failure(self, kind: Kind, exc: Exception) -> None:
        """Count a failure (an expiry is not an error, but still backs off: no hot relist loop)."""
        expired = isinstance(exc, _Expired)
        _log.log(
            logging.INFO if expired else logging.WARNING,
            "%s list/watch: %s",
            kind,
            exc,
            exc_info=not isinstance(exc, (_Expired, *_TRANSPORT_ERRORS)),
        )
        with self._lock:
            state = self._states[kind]
            state.failures += 1
            if not expired:
                state.errors += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
            state.cut = isinstance(exc, (OSError, urllib3.exceptions.HTTPError))
            broke = state.broken_at is None
            if broke:
                state.broken_at = self._clock()
        if broke and self._on_connection is not None:
            self._on_connection(kind, False)

    def _mark_current(self, kind: Kind, *, listed: bool) -> None:
        """The kind is current: a list was delivered (`listed`) or a watch is open; resets the backoff."""
        with self._lock:
            state = self._states[kind]
            changed = state.broken_at is not None or (listed and not state.ready)
            state.broken_at, state.failures = None, 0
            if listed:
                state.ready = True
                if all(s.ready for s in self._states.values()):
                    self._all_ready.set()
        if changed and self._on_connection is not None:
            self._on_connection(kind, True)

    def _call(self, kind: Kind, **params: Any) -> Any:
        """One list or watch request; returns the unread urllib3 response."""
        api_class, method = _KINDS[kind]
        request = getattr(getattr(kubernetes.client, api_class)(self._api), method)
        read_timeout = self._request_timeout + (self._watch_timeout if "watch" in params else 0)
        try:
            response = request(_preload_content=False, **params, _request_timeout=(self._request_timeout, read_timeout))
        except ApiException as exc:
            if exc.status == 410:
                raise _Expired(f"HTTP 410 {exc.reason}") from exc
            self._note_unavailable(kind, answered=True, unavailable=(exc.status or 0) >= 500)
            raise
        except (OSError, urllib3.exceptions.HTTPError):
            self._note_unavailable(kind, answered=False, unavailable=True)
            raise
        with self._lock:
            state = self._states[kind]
            state.response = response
            state.unavailable = state.unanswered = False
            if self._unanswered:  # the API server answers again: wake the kinds that lost it
                self._unanswered = False
                self._answers += 1
                self._wake.notify_all()
        if self._stopping.is_set():
            _shutdown(response)
        return response

    def _note_unavailable(self, kind: Kind, *, answered: bool, unavailable: bool) -> None:
        with self._lock:
            state = self._states[kind]
            state.unavailable, state.unanswered = unavailable, unavailable and not answered
            self._unanswered = self._unanswered or state.unanswered

    def _release(self, kind: Kind, response: Any, *, drained: bool) -> None:
        """Return a fully read connection to the pool; close any other."""
        with self._lock:
            self._states[kind].response = None
        if not drained:
            response.close()
        response.release_conn()

    def _list(self, kind: Kind) -> None:
        fresh: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            params = {"_continue": token} if token else {}
            response = self._call(kind, limit=self._page_size, **params)
            try:
                body = response.data
            finally:
                self._release(kind, response, drained=True)
            page = json.loads(body)
            for raw in page.get("items") or ():
                obj = self._project(kind, raw)
                if obj is not None:
                    fresh[object_key(raw)] = obj
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                break
        self._replace(kind, fresh, metadata.get("resourceVersion"))

    def _replace(self, kind: Kind, fresh: dict[str, dict[str, Any]], rv: str | None) -> None:
        state = self._states[kind]
        with self._lock:
            old, state.objects = state.objects, fresh
            state.resource_version, state.last_event_at = rv, self._clock()
            state.lists += 1
        for key, obj in old.items():
            if key not in fresh:
                self._emit(WatchEvent(kind, "DELETED", key, obj))
        for key, obj in fresh.items():  # every key, changed or not: the consumer may have missed
            self._emit(WatchEvent(kind, "MODIFIED" if key in old else "ADDED", key, obj))
        self._emit(WatchEvent(kind, "SYNC", "", None))
        self._mark_current(kind, listed=True)

    def _watch(self, kind: Kind) -> None:
        started, events = self._clock(), 0
        failures = self._states[kind].failures
        response = self._call(
            kind,
            watch=True,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout,
            resource_version=self._states[kind].resource_version,
        )
        self._mark_current(kind, listed=False)
        try:
            for line in _lines(response):
                self._handle(kind, json.loads(line))
                events += 1
        except BaseException:
            self._release(kind, response, drained=False)
            if not events:
                self._short_lived(kind, started, failures)
            raise
        self._release(kind, response, drained=True)
        if not events and self._short_lived(kind, started, failures):
            raise ConnectionError("watch closed in under a second without an event")
        with self._lock:
            self._states[kind].failures = 0  # a healthy watch ran its course

    def _short_lived(self, kind: Kind, started: float, failures: int) -> bool:
        """A watch that ended within a second without an event was no success: the failure streak
        it had reset (and so the backoff) goes on."""
        if self._clock() - started >= _SHORT_WATCH_SECONDS:
            return False
        with self._lock:
            self._states[kind].failures = failures
        return True

    def _handle(self, kind: Kind, event: Mapping[str, Any]) -> None:
        type_, raw = event.get("type"), event.get("object") or {}
        if type_ == "ERROR":
            if raw.get("code") == 410:
                raise _Expired(f"{raw.get('reason')}: {raw.get('message')}")
            raise RuntimeError(f"watch ERROR {raw.get('code')} {raw.get('reason')}: {raw.get('message')}")
        rv = (raw.get("metadata") or {}).get("resourceVersion")
        if type_ == "BOOKMARK":
            with self._lock:
                self._touch(self._states[kind], rv)
        elif type_ in ("ADDED", "MODIFIED", "DELETED"):
            self._apply(kind, type_ == "DELETED", raw, rv)
        else:
            raise ValueError(f"unknown watch event type {type_!r}")

    def _touch(self, state: _State, rv: str | None) -> None:
        state.resource_version = rv or state.resource_version
        state.last_event_at, state.failures = self._clock(), 0

    def _apply(self, kind: Kind, deleted: bool, raw: dict[str, Any], rv: str | None) -> None:
        key, projected = object_key(raw), self._project(kind, raw)
        state = self._states[kind]
        with self._lock:
            self._touch(state, rv)
            held = state.objects.get(key)
            if deleted or projected is None:
                if held is None:
                    return
                del state.objects[key]
                event = WatchEvent(kind, "DELETED", key, held if projected is None else projected)
            else:
                state.objects[key] = projected
                event = WatchEvent(kind, "ADDED" if held is None else "MODIFIED", key, projected)
        self._emit(event)

    def _emit(self, event: WatchEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)


def _lines(response: Any) -> Iterator[bytes]:
    """Non-empty lines of a chunked watch body, as they arrive."""
    buffer = bytearray()
    for chunk in response.stream(amt=None, decode_content=False):
        buffer.extend(chunk)
        *lines, rest = buffer.split(b"\n")
        buffer = bytearray(rest)
        yield from (bytes(line) for line in lines if line.strip())


def _shutdown(response: Any) -> None:
    """Unblock a thread reading `response` (urllib3 >= 2.3 `shutdown`, else close)."""
    try:
        response.shutdown()
    except (AttributeError, ValueError, RuntimeError, OSError):
        response.close()
