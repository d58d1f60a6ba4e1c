"""After an API server outage: catch up in seconds, and never decide from a view known to be stale
(issue 20).

The outage is real: the loopback API server (`KubeApiFixture.outage`) stops listening, so every
request is refused and every open connection is cut, then serves again on the same port. The
tests measure how long the mirror and a live guard take to hold a node added after the restart
(the figure is printed: run with `-s`), readiness while down and after, the denial of a pod
pinned to a node the stale view does not know (and of a binding to such a node), and that once
caught up the same requests are judged normally. Each timing test runs under the worst jitter
(`MaxJitter`: always the top of the range) and under seeded random jitter, with the product's
backoff (base 0.5 s, cap 30 s). The pure rule is tested with plain views.
"""

from __future__ import annotations

import functools
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import urllib3
from conftest import GuardServer, fixtures_dir, load_recorded, recorded_names, variant
from kube_api_fixture import KubeApiFixture
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from live_cluster import binding_review, gpu_node, namespace, stamped_pod, wait_until, write_kubeconfig

from webhook.admission.context import Guard
from webhook.admission.review import parse_review
from webhook.admission.validation import validate
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.ledger import Ledger
from webhook.core.staleness import Staleness
from webhook.core.view import build_view
from webhook.state.live import LiveSource
from webhook.state.mirror import ClusterMirror, Kind, backoff_delay, load_api_client
from webhook.state.snapshot import SnapshotSource

CATALOG = load_catalog()
KNOWN, NEW = "gpu-h100-a", "gpu-new"
POD = "team-a/ollama-56cdc79669-r8tvv"  # the recorded pod's name
SINCE = "2026-01-01T00:00:00Z"
OUTAGE_SECONDS = 4.0
CATCH_UP_BOUND = 3.0  # generous: typically well under a second (a quarter of the outage at most)
DISCONNECTED = "ollama_guard_watch_disconnected_seconds"
requires_fixtures = pytest.mark.skipif(not recorded_names(), reason=f"recorded reviews not found at {fixtures_dir()}")


class MaxJitter(random.Random):
    """Always the top of the jitter range: the slowest reconnects the backoff allows."""

    def uniform(self, a: float, b: float) -> float:
        return b


JITTERS = [
    pytest.param(MaxJitter, id="max-jitter"),
    pytest.param(lambda: random.Random(20), id="seeded-jitter-20"),
]


def pinned_pod_review(node: str = NEW, *, vram: str = "90Gi") -> dict[str, Any]:
    """The issue's request: the recorded Ollama pod, pinned to `node`, declaring more than an 80 GB card."""
    return variant(
        load_recorded("validate-pod-create-2.json"),
        models="myorg/custom:latest",
        annotations={"ollama-guard.io/vram": vram},
        node=node,
    )


def catching_up_text(what: str, kinds: str = "Node", since: str = SINCE) -> str:
    why = (
        f"its watch of {kinds} has been interrupted since {since}" if since
        else f"it has not finished listing {kinds}"
    )
    return (
        f"{what}, which is not in the guard's view of the cluster; that view is catching up with the API server "
        f"({why}), so the guard cannot check that node's VRAM yet. This is temporary: retry in a few seconds "
        "(controllers and the scheduler retry on their own)."
    )


# --- the rule, on plain views ------------------------------------------------------------------------


@functools.cache
def waiting() -> dict[str, Any]:
    """A GPU tenant the view holds, not bound yet."""
    return stamped_pod("waiting", phase="Pending", uid="0c0d0a00-0000-4000-8000-00000000a17e")


def guard_on(stale: Staleness | None, *, annotations: dict[str, str] | None = None) -> Guard:
    settings = load_settings()
    cluster = settings.cluster_policy()
    objects = [gpu_node(KNOWN), namespace("team-a", **(annotations or {})), waiting()]
    view = replace(build_view(objects, cluster=cluster, catalog=CATALOG), stale=stale)
    return Guard(cluster=cluster, catalog=CATALOG, ledger=Ledger(view))


NODE_STALE = Staleness(kinds=("Node", "Pod"), since=SINCE)
DENIED_POD = f"pod {POD} denied by ollama-guard: " + catching_up_text(
    f"pod {POD} is pinned to node {NEW}", kinds="Node, Pod"
)


@requires_fixtures
@pytest.mark.parametrize(
    ("stale", "node", "vram", "allowed", "message"),
    [
        pytest.param(None, NEW, "90Gi", True, "", id="current-view-unknown-node-is-not-the-guards-call"),
        pytest.param(NODE_STALE, NEW, "90Gi", False, DENIED_POD, id="stale-nodes-unknown-node-denied"),
        pytest.param(NODE_STALE, NEW, "8Gi", False, DENIED_POD, id="stale-nodes-denied-whatever-it-asks"),
        pytest.param(
            Staleness(kinds=("Node",)),
            NEW,
            "8Gi",
            False,
            f"pod {POD} denied by ollama-guard: "
            + catching_up_text(f"pod {POD} is pinned to node {NEW}", since=""),
            id="first-node-list-pending",
        ),
        pytest.param(
            Staleness(kinds=("Pod", "Namespace"), since=SINCE), NEW, "90Gi", True, "", id="nodes-current-not-the-rule"
        ),
        pytest.param(NODE_STALE, KNOWN, "8Gi", True, "", id="stale-but-known-node-that-fits"),
        pytest.param(
            NODE_STALE, KNOWN, "90Gi", False, f"node {KNOWN}, which has", id="stale-but-known-node-judged-on-capacity"
        ),
    ],
)
def test_a_pod_pinned_to_a_node_a_stale_view_does_not_know_is_denied(
    stale: Staleness | None, node: str, vram: str, allowed: bool, message: str
) -> None:
    response = validate(parse_review(pinned_pod_review(node, vram=vram)), guard_on(stale))
    assert response.allowed is allowed, response.message
    if message.startswith("pod "):
        assert (response.code, response.message) == (403, message)
    elif message:
        assert message in response.message and "catching up" not in response.message


@requires_fixtures
def test_in_a_warn_namespace_the_stale_view_rule_is_a_short_warning() -> None:
    guard = guard_on(NODE_STALE, annotations={"ollama-guard.io/enforcement": "warn"})
    response = validate(parse_review(pinned_pod_review()), guard)
    warning = f"would deny: node {NEW} not in the guard's view yet (catching up with the API server); retry shortly"
    assert response.allowed and warning in response.warnings
    assert all(len(w) <= 120 for w in response.warnings)


@requires_fixtures
@pytest.mark.parametrize(
    ("stale", "tenant", "node", "allowed"),
    [
        pytest.param(NODE_STALE, True, NEW, False, id="stale-tenant-to-unknown-node-denied"),
        pytest.param(None, True, NEW, True, id="current-view-unknown-node-allowed"),
        pytest.param(NODE_STALE, False, NEW, True, id="stale-other-pods-bind-freely"),
        pytest.param(NODE_STALE, True, KNOWN, True, id="stale-known-node-that-fits"),
        pytest.param(Staleness(kinds=("Pod",), since=SINCE), True, NEW, True, id="nodes-current-not-the-rule"),
    ],
)
def test_a_binding_to_a_node_a_stale_view_does_not_know_is_denied(
    stale: Staleness | None, tenant: bool, node: str, allowed: bool
) -> None:
    pod = waiting() if tenant else stamped_pod("not-a-tenant-the-guard-knows")
    response = validate(parse_review(binding_review(pod, node)), guard_on(stale))
    assert response.allowed is allowed, response.message
    if not allowed:
        key = "team-a/waiting"
        expected = f"pod {key} denied by ollama-guard: " + catching_up_text(
            f"binding pod {key} to node {node}", kinds="Node, Pod"
        )
        assert (response.code, response.message) == (403, expected)


@requires_fixtures
def test_an_exempt_namespace_binding_is_never_denied_by_the_stale_view_rule() -> None:
    guard = guard_on(NODE_STALE, annotations={"ollama-guard.io/enforcement": "off"})
    assert validate(parse_review(binding_review(waiting(), NEW)), guard).allowed


@requires_fixtures
def test_a_snapshot_is_never_stale() -> None:
    settings = load_settings()
    objects = [gpu_node(KNOWN), namespace("team-a")]
    source = SnapshotSource(objects, cluster=settings.cluster_policy(), catalog=CATALOG, origin="test")
    assert source.ledger.view.stale is None
    guard = Guard(cluster=settings.cluster_policy(), catalog=CATALOG, ledger=source.ledger)
    assert validate(parse_review(pinned_pod_review()), guard).allowed  # not the guard's call, as before


@pytest.mark.parametrize(
    ("attempt", "outage", "ceiling"),
    [
        pytest.param(0, None, 0.5, id="first-retry-quick"),
        pytest.param(5, None, 16.0, id="answered-failures-keep-the-exponential"),
        pytest.param(5, 2.0, 0.5, id="short-outage-never-below-base"),
        pytest.param(5, 12.0, 3.0, id="a-quarter-of-the-outage"),
        pytest.param(2, 40.0, 2.0, id="exponential-still-bounds-early-retries"),
        pytest.param(10, 1000.0, 30.0, id="a-server-that-stays-down-gets-the-cap"),
    ],
)
def test_backoff_ceiling_during_an_outage(attempt: int, outage: float | None, ceiling: float) -> None:
    assert backoff_delay(attempt, base=0.5, cap=30.0, rng=MaxJitter(), outage_seconds=outage) == ceiling


# --- the mirror through an outage --------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[KubeApiFixture]:
    with KubeApiFixture() as server:
        yield server


def test_an_outage_refuses_connections_and_comes_back_on_the_same_port(api: KubeApiFixture) -> None:
    api.add(node_named("node-0"))
    url = api.url
    host, port = url.removeprefix("http://").split(":")
    core = CoreV1Api(ApiClient(Configuration(host=url)))

    def names() -> list[str]:
        return [str(n.metadata.name) for n in core.list_node(_request_timeout=1.0).items if n.metadata]

    assert names() == ["node-0"]  # the client keeps this connection alive
    with api.outage():
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), timeout=1.0):
            pass
        with pytest.raises(urllib3.exceptions.MaxRetryError):  # the pooled connection was cut too
            names()
        api.add(node_named("node-1"))  # state is kept, and still changes
    assert api.url == url
    assert names() == ["node-0", "node-1"]


def node_named(name: str) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "labels": {}}}


def keep_name(kind: Kind, raw: dict[str, Any]) -> dict[str, Any] | None:
    return {"name": raw["metadata"]["name"]}


@pytest.fixture
def mirrors() -> Iterator[list[ClusterMirror]]:
    made: list[ClusterMirror] = []
    yield made
    for each in made:
        each.stop()


def catch_up(api: KubeApiFixture, has: Callable[[str], bool], name: str, deadline: float = 15.0) -> float:
    """Serve again, add node `name` at once, and return how long until `has(name)`."""
    api.start_listening()
    started = time.monotonic()
    api.add(node_named(name) if name.startswith("node-") else gpu_node(name))
    wait_until(lambda: has(name), f"{name} in the view", timeout=deadline)
    return time.monotonic() - started


@pytest.mark.parametrize("jitter", JITTERS)
def test_the_mirror_catches_up_in_seconds_after_each_outage(
    api: KubeApiFixture, mirrors: list[ClusterMirror], jitter: Callable[[], random.Random]
) -> None:
    api.add(node_named("node-0"))
    cluster = ClusterMirror(ApiClient(Configuration(host=api.url)), project=keep_name, rng=jitter())
    mirrors.append(cluster)
    cluster.start()
    assert cluster.wait_ready(5.0)
    wait_until(lambda: api.open_watches() == 3, "three open watches")
    for outage in (1, 2):  # the second outage must start with quick retries again: the backoff was reset
        api.stop_listening()
        time.sleep(OUTAGE_SECONDS)
        down = cluster.status()
        assert all((s.disconnected_seconds or 0) > OUTAGE_SECONDS - 1 for s in down.values()), down
        assert set(cluster.staleness()[0]) == {"Node", "Pod", "Namespace"}
        seconds = catch_up(api, lambda name: name in cluster.objects("Node"), f"node-{outage}")
        print(f"\nmirror, outage {outage} ({OUTAGE_SECONDS:.0f} s): the new node was in the view after {seconds:.2f} s")
        assert seconds < CATCH_UP_BOUND, f"caught up after {seconds:.2f} s"
        wait_until(lambda: cluster.staleness() == ((), None), "every kind current again")
        after = cluster.status()
        assert all(s.disconnected_seconds is None for s in after.values()), after
        # after an outage each kind relisted (the one definite point where it is current again)
        assert {kind: s.relists for kind, s in after.items()} == {"Node": outage, "Pod": outage, "Namespace": outage}


class SlowNode(random.Random):
    """The Node watcher always draws the top of its range (with base = cap = 5 s: a 5 s sleep);
    every other kind retries within 50 ms."""

    def uniform(self, a: float, b: float) -> float:
        return b if threading.current_thread().name == "cluster-mirror-Node" else min(b, 0.05)


def test_every_kind_recovers_as_soon_as_the_api_server_answers_one(
    api: KubeApiFixture, mirrors: list[ClusterMirror]
) -> None:
    cluster = ClusterMirror(
        ApiClient(Configuration(host=api.url)), project=keep_name, backoff_base=5.0, backoff_cap=5.0, rng=SlowNode()
    )
    mirrors.append(cluster)
    cluster.start()
    assert cluster.wait_ready(5.0)
    wait_until(lambda: api.open_watches() == 3, "three open watches")
    api.stop_listening()
    wait_until(lambda: cluster.status()["Node"].errors >= 1, "the Node watch to break")
    time.sleep(1.0)
    seconds = catch_up(api, lambda name: name in cluster.objects("Node"), "node-new", deadline=4.0)
    print(f"\nthe Node kind, asleep for 5 s, had the new node {seconds:.2f} s after the API server came back")
    assert seconds < 1.5  # woken by the Pod and Namespace watchers' first answer, not its own 5 s sleep


class RecordedJitter(MaxJitter):
    """The top of the range, and a record of each ceiling the backoff drew from."""

    def __init__(self) -> None:
        super().__init__()
        self.ceilings: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return b


def test_an_api_server_that_stays_down_still_gets_the_backoff(
    api: KubeApiFixture, mirrors: list[ClusterMirror]
) -> None:
    jitter = RecordedJitter()
    cluster = ClusterMirror(ApiClient(Configuration(host=api.url)), project=keep_name, kinds=("Node",), rng=jitter)
    mirrors.append(cluster)
    cluster.start()
    assert cluster.wait_ready(5.0)
    wait_until(lambda: api.open_watches() == 1, "an open watch")
    api.stop_listening()
    time.sleep(6.0)
    ceilings = list(jitter.ceilings)
    # quick first retries (0.5 s), then sleeps that grow with the outage: a quarter of it so far
    assert ceilings[:4] == [0.5] * 4 and ceilings == sorted(ceilings) and 0.9 < ceilings[-1] < 1.6, ceilings
    assert len(ceilings) <= 10  # a fixed 0.5 s retry would have made 12 attempts


# --- a live guard through an outage ------------------------------------------------------------------


LiveGuard = Callable[..., tuple[GuardServer, LiveSource]]


@pytest.fixture
def live_guard(api: KubeApiFixture, start_guard: Callable[..., GuardServer], tmp_path: Path) -> Iterator[LiveGuard]:
    """`live_guard(rng, stale_after)`: a guard on a LiveSource with the product's backoff."""
    sources: list[LiveSource] = []

    def start(rng: random.Random, stale_after: float) -> tuple[GuardServer, LiveSource]:
        settings = load_settings(stale_after_seconds=stale_after)
        client = load_api_client(kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", api.url))
        assert client is not None

        def mirror(**kwargs: Any) -> ClusterMirror:
            return ClusterMirror(client, rng=rng, **kwargs)

        source = LiveSource(
            mirror,
            cluster=settings.cluster_policy(),
            catalog=CATALOG,
            publish_interval=0.02,
            stale_after=settings.stale_after_seconds,
        )
        sources.append(source)
        guard = start_guard(source=source, settings=settings)
        wait_until(lambda: guard.client.get("/readyz").status_code == 200, "the guard to be ready")
        return guard, source

    yield start
    for source in sources:
        source.stop()


def message(answer: dict[str, Any]) -> str:
    return str(answer.get("status", {}).get("message", ""))


DENIAL = re.compile(
    re.escape(f"pod {POD} denied by ollama-guard: pod {POD} is pinned to node {NEW}, which is not in the guard's "
              "view of the cluster; that view is catching up with the API server (its watch of ")
    + r"Node(, [A-Za-z]+)* has been interrupted since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    + re.escape("), so the guard cannot check that node's VRAM yet. This is temporary: retry in a few seconds "
                "(controllers and the scheduler retry on their own).")
)


@requires_fixtures
@pytest.mark.parametrize("jitter", JITTERS)
def test_a_live_guard_through_an_outage(
    api: KubeApiFixture, live_guard: LiveGuard, jitter: Callable[[], random.Random]
) -> None:
    for obj in (gpu_node(KNOWN), namespace("team-a"), waiting()):
        api.add(obj)
    guard, source = live_guard(jitter(), 1.0)
    assert guard.metric(DISCONNECTED, kind="Node") == 0.0

    api.stop_listening()
    wait_until(lambda: guard.client.get("/readyz").status_code == 503, "readiness to fail", timeout=5.0)
    every = {"Node", "Pod", "Namespace", "Deployment", "StatefulSet"}  # each kind noticed within a few ms
    wait_until(lambda: set(guard.client.get("/readyz").json()["disconnected"]) == every, "every kind", timeout=1.0)
    reply = guard.client.get("/readyz")
    down = reply.json()
    assert (reply.status_code, down["ready"], down["staleAfterSeconds"]) == (503, False, 1.0)
    assert down["kinds"]["Node"]["disconnectedSeconds"] > 1.0 and down["kinds"]["Node"]["lastError"]
    assert (guard.metric(DISCONNECTED, kind="Node") or 0.0) > 1.0
    denied = guard.review("/validate", pinned_pod_review())
    assert (denied["allowed"], denied["status"]["code"]) == (False, 403)
    assert DENIAL.fullmatch(message(denied)), message(denied)
    bound = guard.review("/validate", binding_review(waiting(), NEW))
    assert not bound["allowed"] and "binding pod team-a/waiting to node gpu-new, which is not in" in message(bound)
    time.sleep(max(0.0, OUTAGE_SECONDS - 1.5))

    seconds = catch_up(api, lambda name: name in source.ledger.view.nodes and source.ledger.view.stale is None, NEW)
    print(f"\nlive guard, {OUTAGE_SECONDS:.0f} s outage: the new node was in the published view after {seconds:.2f} s")
    assert seconds < CATCH_UP_BOUND, f"caught up after {seconds:.2f} s"
    wait_until(lambda: guard.client.get("/readyz").status_code == 200, "readiness after the outage", timeout=2.0)
    assert guard.client.get("/readyz").json()["disconnected"] == []
    assert guard.metric(DISCONNECTED, kind="Node") == 0.0

    judged = guard.review("/validate", pinned_pod_review())  # the same pod, judged on the node's VRAM now
    assert not judged["allowed"] and "catching up" not in message(judged)
    assert "90.0 GiB" in message(judged) and f"pinned (spec.nodeName) to node {NEW}, which has" in message(judged)
    assert guard.review("/validate", pinned_pod_review(vram="8Gi"))["allowed"]
    assert guard.review("/validate", binding_review(waiting(), NEW))["allowed"]


@requires_fixtures
def test_a_short_disconnection_keeps_readiness_but_never_decides_from_the_stale_view(
    api: KubeApiFixture, live_guard: LiveGuard
) -> None:
    for obj in (gpu_node(KNOWN), namespace("team-a")):
        api.add(obj)
    guard, source = live_guard(MaxJitter(), 60.0)
    assert guard.review("/validate", pinned_pod_review())["allowed"]  # current view: not the guard's call
    api.stop_listening()
    wait_until(lambda: (stale := source.ledger.view.stale) is not None and stale.covers("Node"), "a stale view")
    assert guard.client.get("/readyz").status_code == 200  # disconnected well under the 60 s bound
    assert DENIAL.fullmatch(message(guard.review("/validate", pinned_pod_review())))
    seconds = catch_up(api, lambda name: name in source.ledger.view.nodes and source.ledger.view.stale is None, NEW)
    assert seconds < CATCH_UP_BOUND
    assert "catching up" not in message(guard.review("/validate", pinned_pod_review()))
