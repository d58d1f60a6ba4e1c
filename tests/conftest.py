"""Shared fixtures for the HTTPS admission server tests: a real uvicorn on 127.0.0.1 over real TLS.

- `guard`: one session-wide server on the bundled snapshot (`examples/cluster.yaml`), for tests
  that only check the admission contract and do not care about what earlier requests reserved.
- `start_guard(...)`: a fresh server on a given snapshot / settings / catalog / state source, for
  tests whose outcome depends on the ledger (bindings, template store). Stopped after the test.
- `recorded(name)`: a deep copy of a review recorded from kube-apiserver 1.24
  (`../shared/fixtures/kube-apiserver-1.24`, or `$OLLAMA_GUARD_FIXTURES`); tests skip when absent.
- `variant(review, ...)`: a new review derived from a recorded one (new uid, other models,
  namespace, user, node...), never hand-written from memory.

Clients verify the server against the CA that `ensure_dev_certs` generated; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import os
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

# Most of this suite predates design §14 and asserts what a fixed-size cluster wants: "no node has
# room right now" denied at admission. It runs with that cluster policy (`capacity_at_admission:
# deny`, set before any test module reads its settings; subprocess guards inherit it). The product
# default, `warn` (admit and wait Pending on the scheduler's Insufficient ollama-guard.io/vram-mib),
# is asserted by tests that ask for it explicitly: `load_settings(capacity_at_admission="warn")`
# (tests/test_capacity_policy.py).
os.environ.setdefault("OLLAMA_GUARD_CAPACITY_AT_ADMISSION", "deny")
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from webhook.cli.settings import Settings, load_settings
from webhook.core.catalog import Catalog, load_catalog
from webhook.http.server import build_server, create_app, serve_https
from webhook.http.tls import ReloadingTLS
from webhook.install.certs import ensure_dev_certs
from webhook.state.files import load_objects
from webhook.state.snapshot import SnapshotSource, StateSource

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO / "examples" / "cluster.yaml"
FIXTURES_ENV = "OLLAMA_GUARD_FIXTURES"
DEFAULT_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "kube-apiserver-1.24"
STARTUP_DEADLINE = 10.0
ANN_MODELS = "ollama-guard.io/models"
_UNSET: Any = object()


# --- recorded reviews ----------------------------------------------------------------------------


def fixtures_dir() -> Path:
    """Where the recorded kube-apiserver 1.24 reviews live ($OLLAMA_GUARD_FIXTURES overrides)."""
    override = os.environ.get(FIXTURES_ENV, "").strip()
    return Path(override) if override else DEFAULT_FIXTURES


def recorded_names() -> list[str]:
    """File names of every recorded review (empty when the folder is absent)."""
    folder = fixtures_dir()
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []


def require_fixtures() -> Path:
    folder = fixtures_dir()
    if not recorded_names():
        pytest.skip(
            f"recorded kube-apiserver reviews not found in {folder} "
            f"(check out ../shared next to the repository, or set {FIXTURES_ENV})"
        )
    return folder


def load_recorded(name: str) -> dict[str, Any]:
    """A fresh copy of one recorded review (the exact bytes kube-apiserver sent, parsed)."""
    folder = require_fixtures()
    document: dict[str, Any] = json.loads((folder / name).read_bytes())
    return document


def recorded_bytes(name: str) -> bytes:
    return (require_fixtures() / name).read_bytes()


def endpoint_for(name: str) -> str:
    """`mutate-*` files were sent to /mutate, `validate-*` to /validate."""
    return "/mutate" if name.startswith("mutate-") else "/validate"


def recorded_params() -> list[Any]:
    """`pytest.param(name, id=name)` for every recorded file, or one skipped param when absent."""
    names = recorded_names()
    if not names:
        return [
            pytest.param(
                "", id="no-fixtures", marks=pytest.mark.skip(reason=f"recorded reviews not found in {fixtures_dir()}")
            )
        ]
    return [pytest.param(name, id=name.removesuffix(".json")) for name in names]


# --- deriving variants -----------------------------------------------------------------------------


def _pod_meta(obj: dict[str, Any]) -> dict[str, Any]:
    """The metadata of the pod an object describes: the object's own, or its pod template's."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    if obj.get("kind") == "CronJob" and spec is not None:
        spec = spec["jobTemplate"]["spec"]
    if spec is not None and isinstance(spec.get("template"), dict):
        meta: dict[str, Any] = spec["template"].setdefault("metadata", {})
        return meta
    own: dict[str, Any] = obj.setdefault("metadata", {})
    return own


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj.setdefault("spec", {})
    if obj.get("kind") == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    if isinstance(spec.get("template"), dict):
        inner: dict[str, Any] = spec["template"].setdefault("spec", {})
        return inner
    return spec


def variant(
    review: Mapping[str, Any],
    *,
    uid: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
    pod_uid: str | None = None,
    user: str | None = None,
    groups: tuple[str, ...] | None = None,
    models: str | None = _UNSET,
    annotations: Mapping[str, str | None] | None = None,
    node: str | None = None,
    dry_run: bool | None = None,
    replicas: int | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """A deep copy of `review` with a new request uid and the given changes.

    `namespace`/`name` change the request and the object (and oldObject); `models` sets (or, with
    None, removes) `ollama-guard.io/models` on the pod or pod template; `annotations` merges into
    them (None removes a key); `node` is a Binding's `target.name` or a Pod's `spec.nodeName`;
    `edit` receives the object for any other change.
    """
    out = copy.deepcopy(dict(review))
    req: dict[str, Any] = out["request"]
    req["uid"] = uid or str(uuid.uuid4())
    objects = [o for o in (req.get("object"), req.get("oldObject")) if isinstance(o, dict)]
    if namespace is not None:
        req["namespace"] = namespace
        for each in objects:
            each.setdefault("metadata", {})["namespace"] = namespace
    if name is not None:
        req["name"] = name
        for each in objects:
            each.setdefault("metadata", {})["name"] = name
    if user is not None:
        req.setdefault("userInfo", {})["username"] = user
    if groups is not None:
        req.setdefault("userInfo", {})["groups"] = list(groups)
    if dry_run is not None:
        req["dryRun"] = dry_run
    target = req.get("object")
    if not isinstance(target, dict):
        return out
    obj: dict[str, Any] = target
    if pod_uid is not None:
        obj.setdefault("metadata", {})["uid"] = pod_uid
    changes: dict[str, str | None] = dict(annotations or {})
    if models is not _UNSET:
        changes[ANN_MODELS] = models
    if changes:
        meta = _pod_meta(obj)
        current = meta.get("annotations")
        merged = {**(current if isinstance(current, dict) else {}), **changes}
        meta["annotations"] = {k: v for k, v in merged.items() if v is not None}
    if node is not None:
        if obj.get("kind") == "Binding":
            obj.setdefault("target", {"kind": "Node"})["name"] = node
        else:
            _pod_spec(obj)["nodeName"] = node
    if replicas is not None:
        obj.setdefault("spec", {})["replicas"] = replicas
    if edit is not None:
        edit(obj)
    return out


# --- a running server ----------------------------------------------------------------------------


@dataclass
class GuardServer:
    """One running admission server and a keep-alive HTTPS client that trusts its CA."""

    base_url: str
    client: httpx.Client
    app: FastAPI
    source: StateSource

    def post(
        self,
        endpoint: str,
        body: Mapping[str, Any] | bytes,
        *,
        timeout: str | None = "5s",
        content_type: str = "application/json",
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        params = {"timeout": timeout} if timeout is not None else None
        return self.client.post(endpoint, content=content, params=params, headers={"content-type": content_type})

    def review(self, endpoint: str, body: Mapping[str, Any] | bytes) -> dict[str, Any]:
        """POST a review that must be answered with HTTP 200; returns the AdmissionReview's `response`."""
        reply = self.post(endpoint, body)
        assert reply.status_code == 200, reply.text
        document: dict[str, Any] = reply.json()
        assert document["apiVersion"] == "admission.k8s.io/v1"
        assert document["kind"] == "AdmissionReview"
        sent = json.loads(body) if isinstance(body, bytes) else body
        assert document["response"]["uid"] == sent["request"]["uid"]
        answer: dict[str, Any] = document["response"]
        return answer

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample scraped from /metrics now (None when absent)."""
        reply = self.client.get("/metrics")
        assert reply.status_code == 200
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None


@dataclass(frozen=True)
class DevCerts:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@functools.cache
def _snapshot_file(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(load_objects([path]))


def snapshot_objects(path: Path = SNAPSHOT) -> list[dict[str, Any]]:
    """The objects of a snapshot file (parsed once per session; a fresh copy each call)."""
    return copy.deepcopy(list(_snapshot_file(path)))


@contextlib.contextmanager
def serve_guard(
    dev: DevCerts,
    *,
    objects: list[dict[str, Any]] | None = None,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    source: StateSource | None = None,
    snapshot: Path = SNAPSHOT,
    stopping: list[threading.Thread] | None = None,
) -> Iterator[GuardServer]:
    """Run create_app(...) under uvicorn + ReloadingTLS on a free 127.0.0.1 port, in a thread.

    The state is `source`, else `objects`, else the `snapshot` file (default: the bundled one);
    `catalog` replaces the real catalog for decisions only (the snapshot is read with the real one).
    On exit the server is told to stop; its thread is joined here, or appended to `stopping` for
    the caller to join later (uvicorn's shutdown takes ~0.2 s, which adds up over many servers).
    """
    settings = settings or load_settings()
    cluster = settings.cluster_policy()
    real_catalog = load_catalog()
    if source is None:
        state = objects if objects is not None else snapshot_objects(snapshot)
        source = SnapshotSource(state, cluster=cluster, catalog=real_catalog, origin="test")
    app = create_app(
        cluster=cluster, catalog=catalog or real_catalog, source=source, max_body_bytes=settings.max_body_bytes
    )
    tls = ReloadingTLS(cert_file=dev.cert_file, key_file=dev.key_file)
    server = build_server(app, host="127.0.0.1", port=0, tls=tls)
    thread = threading.Thread(target=asyncio.run, args=(serve_https(server, tls),), daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_DEADLINE
    while not server.started:
        assert thread.is_alive(), "server thread died during startup"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"https://127.0.0.1:{port}"
    client = httpx.Client(base_url=base_url, verify=dev.client_context(), timeout=30.0)
    try:
        yield GuardServer(base_url=base_url, client=client, app=app, source=source)
    finally:
        client.close()
        server.should_exit = True
        if stopping is None:
            join_all([thread])
        else:
            stopping.append(thread)


def join_all(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    assert not any(t.is_alive() for t in threads), "a server thread did not shut down"


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dev_certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    """A CA and a serving certificate valid for localhost and 127.0.0.1 (as `serve` creates them)."""
    paths, created = ensure_dev_certs(tmp_path_factory.mktemp("certs"))
    assert created
    return DevCerts(ca_file=paths["ca.crt"], cert_file=paths["tls.crt"], key_file=paths["tls.key"])


@pytest.fixture(scope="session")
def guard(dev_certs: DevCerts) -> Iterator[GuardServer]:
    """One server for the whole session, on the bundled snapshot. Its ledger is shared state."""
    with serve_guard(dev_certs) as running:
        yield running


@pytest.fixture(scope="session")
def _stopping_servers() -> Iterator[list[threading.Thread]]:
    """Threads of servers told to stop; joined once at the end of the session."""
    threads: list[threading.Thread] = []
    yield threads
    join_all(threads)


@pytest.fixture
def start_guard(dev_certs: DevCerts, _stopping_servers: list[threading.Thread]) -> Iterator[Callable[..., GuardServer]]:
    """Start fresh servers (keyword arguments of `serve_guard`); all are stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(**kwargs: Any) -> GuardServer:
            return stack.enter_context(serve_guard(dev_certs, stopping=_stopping_servers, **kwargs))

        yield start


@pytest.fixture
def recorded() -> Callable[[str], dict[str, Any]]:
    """`recorded(name)`: a fresh copy of a recorded review; skips the test when fixtures are absent."""
    require_fixtures()
    return load_recorded
