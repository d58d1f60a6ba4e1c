"""ClusterMirror against a loopback API server, through the real `kubernetes` client over HTTP."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_api_fixture import KubeApiFixture
from kubernetes.client import ApiClient, Configuration, CoreV1Api

from webhook.state.mirror import (
    ClusterConfigError,
    ClusterMirror,
    Kind,
    WatchEvent,
    backoff_delay,
    load_api_client,
)

DEADLINE = 5.0


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "labels": labels}}


def pod(name: str, namespace: str = "team-a", **labels: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": "gpu-1", "containers": [{"name": "ollama"}]}}


def namespace(name: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name}}


def keep_labels(kind: Kind, raw: dict[str, Any]) -> dict[str, Any] | None:
    return {"labels": raw["metadata"].get("labels") or {}}


def keep_guarded(kind: Kind, raw: dict[str, Any]) -> dict[str, Any] | None:
    labels = raw["metadata"].get("labels") or {}
    return {"labels": labels} if kind != "Pod" or labels.get("guard") == "yes" else None


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


class Recorder:
    """on_event sink, optionally raising once for one key (a buggy consumer)."""

    def __init__(self, fail_once_on: str | None = None) -> None:
        self.events: list[WatchEvent] = []
        self._fail_once_on = fail_once_on

    def __call__(self, event: WatchEvent) -> None:
        if event.key == self._fail_once_on:
            self._fail_once_on = None
            raise RuntimeError("consumer bug")
        self.events.append(event)

    def summary(self, kind: Kind, start: int = 0) -> list[tuple[str, str]]:
        return [(e.type, e.key) for e in self.events[start:] if e.kind == kind]


class MaxJitter(random.Random):
    """Always the top of the jitter range: makes backoff delays exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


MirrorFactory = Callable[..., tuple[ClusterMirror, Recorder]]


@pytest.fixture
def api() -> Iterator[KubeApiFixture]:
    with KubeApiFixture() as server:
        yield server


@pytest.fixture
def mirror(api: KubeApiFixture) -> Iterator[MirrorFactory]:
    made: list[ClusterMirror] = []

    def make(*, recorder: Recorder | None = None, start: bool = True,
             **options: Any) -> tuple[ClusterMirror, Recorder]:
        recorder = recorder or Recorder()
        settings: dict[str, Any] = {"project": keep_labels, "backoff_base": 0.02,
                                    "backoff_cap": 0.1} | options
        made.append(ClusterMirror(ApiClient(Configuration(host=api.url)), on_event=recorder,
                                  **settings))
        if start:
            made[-1].start()
        return made[-1], recorder

    yield make
    for each in made:
        each.stop()


def test_initial_list_pages_and_applies_every_kind(api: KubeApiFixture,
                                                    mirror: MirrorFactory) -> None:
    for obj in [node("gpu-1"), namespace("team-a"), *(pod(f"p{i}") for i in range(5))]:
        api.add(obj)
    cluster, recorder = mirror(list_page_size=2)
    assert cluster.wait_ready(DEADLINE)
    assert sorted(cluster.objects("Pod")) == [f"team-a/p{i}" for i in range(5)]
    assert dict(cluster.objects("Node")) == {"gpu-1": {"labels": {}}}
    assert recorder.summary("Pod") == [("ADDED", f"team-a/p{i}") for i in range(5)] + [
        ("SYNC", "")]
    assert [r.query.get("continue") is None for r in api.requests("Pod", watch=False)] == [
        True, False, False]
    status = cluster.status()["Pod"]
    assert (status.ready, status.resource_version, status.relists) == (
        True, str(api.resource_version), 0)


def test_ready_only_after_every_kind_listed(api: KubeApiFixture, mirror: MirrorFactory) -> None:
    api.set_failure("Namespace", 500)
    cluster, _ = mirror()
    wait_until(lambda: len(api.requests("Namespace", watch=False)) >= 3)
    status = cluster.status()
    assert (status["Node"].ready, status["Pod"].ready, status["Namespace"].ready) == (
        True, True, False)
    assert not cluster.ready()
    assert status["Namespace"].errors >= 2
    assert "(500)" in (status["Namespace"].last_error or "")
    api.set_failure("Namespace", None)
    assert cluster.wait_ready(DEADLINE)


@pytest.mark.parametrize(("change", "expected_type", "expected"), [
    pytest.param(lambda a: a.add(pod("new", tier="gpu")), "ADDED", {"tier": "gpu"}, id="added"),
    pytest.param(lambda a: a.modify(pod("old", tier="cpu")), "MODIFIED", {"tier": "cpu"},
                 id="modified"),
    pytest.param(lambda a: a.delete("Pod", "team-a/old"), "DELETED", None, id="deleted"),
])
def test_watch_changes_reach_objects_and_callback(
        api: KubeApiFixture, mirror: MirrorFactory, change: Callable[[KubeApiFixture], Any],
        expected_type: str, expected: dict[str, str] | None) -> None:
    api.add(pod("old", tier="gpu"))
    cluster, recorder = mirror()
    assert cluster.wait_ready(DEADLINE)
    start = len(recorder.events)
    rv = change(api)["metadata"]["resourceVersion"]
    wait_until(lambda: len(recorder.events) > start)
    event = recorder.events[start]
    assert event.type == expected_type
    held = cluster.objects("Pod").get(event.key)
    assert (held or {}).get("labels") == expected
    assert cluster.status()["Pod"].resource_version == rv


@pytest.mark.parametrize(("before", "change", "expected_events", "expected_keys"), [
    pytest.param([], lambda a: a.add(pod("plain")), [], [], id="unwanted-add-dropped"),
    pytest.param([pod("p", guard="yes")], lambda a: a.modify(pod("p")),
                 [("DELETED", "team-a/p")], [], id="no-longer-wanted-is-deleted"),
    pytest.param([pod("p", guard="yes")], lambda a: a.delete("Pod", "team-a/p"),
                 [("DELETED", "team-a/p")], [], id="held-delete-delivered"),
    pytest.param([pod("p")], lambda a: a.delete("Pod", "team-a/p"), [], [],
                 id="unheld-delete-silent"),
    pytest.param([pod("p")], lambda a: a.modify(pod("p", guard="yes")),
                 [("ADDED", "team-a/p")], ["team-a/p"], id="becomes-wanted-is-added"),
])
def test_projection_none_drops_objects(
        api: KubeApiFixture, mirror: MirrorFactory, *, before: list[dict[str, Any]],
        change: Callable[[KubeApiFixture], Any], expected_events: list[tuple[str, str]],
        expected_keys: list[str]) -> None:
    for obj in before:
        api.add(obj)
    cluster, recorder = mirror(project=keep_guarded)
    assert cluster.wait_ready(DEADLINE)
    start = len(recorder.events)
    change(api)
    api.add(pod("zz-barrier", guard="yes"))  # events arrive in order: this one comes last
    wait_until(lambda: ("ADDED", "team-a/zz-barrier") in recorder.summary("Pod", start))
    assert recorder.summary("Pod", start)[:-1] == expected_events
    assert sorted(cluster.objects("Pod"))[:-1] == expected_keys
    assert all(e.obj == {"labels": {"guard": "yes"}} for e in recorder.events[start:])


def test_bookmark_advances_resource_version(api: KubeApiFixture,
                                            mirror: MirrorFactory) -> None:
    cluster, recorder = mirror()
    assert cluster.wait_ready(DEADLINE)
    wait_until(lambda: api.open_watches("Node") == 1)
    assert api.requests("Node", watch=True)[0].query["allowWatchBookmarks"] == "true"
    api.add(namespace("elsewhere"))  # moves the global RV past the Node watch's position
    start = len(recorder.events)
    rv = str(api.bookmark("Node"))
    wait_until(lambda: cluster.status()["Node"].resource_version == rv)
    assert recorder.summary("Node", start) == []
    api.drop_connections()
    wait_until(lambda: len(api.requests("Node", watch=True)) == 2)
    assert api.requests("Node", watch=True)[1].query["resourceVersion"] == rv


@pytest.mark.parametrize("route", [
    pytest.param("error-event", id="error-event-410"),
    pytest.param("http-status", id="http-410"),
])
def test_expired_watch_relists_and_syncs(api: KubeApiFixture, mirror: MirrorFactory,
                                         route: str) -> None:
    for name in ("kept", "changed", "vanished"):
        api.add(pod(name))
    cluster, recorder = mirror()
    assert cluster.wait_ready(DEADLINE)
    wait_until(lambda: api.open_watches("Pod") == 1)
    lists, start = len(api.requests("Pod", watch=False)), len(recorder.events)
    with api.hold_watches():
        api.delete("Pod", "team-a/vanished")
        api.add(pod("created"))
        api.modify(pod("changed", tier="gpu"))
        if route == "error-event":
            api.compact()
        else:
            api.set_failure("Pod", 410, watch=True, times=1)
    wait_until(lambda: ("SYNC", "") in recorder.summary("Pod", start))
    assert recorder.summary("Pod", start) == [
        ("DELETED", "team-a/vanished"), ("MODIFIED", "team-a/changed"),
        ("ADDED", "team-a/created"), ("MODIFIED", "team-a/kept"), ("SYNC", "")]
    assert cluster.objects("Pod")["team-a/changed"] == {"labels": {"tier": "gpu"}}
    assert sorted(cluster.objects("Pod")) == ["team-a/changed", "team-a/created", "team-a/kept"]
    status = cluster.status()["Pod"]
    assert (status.relists, status.errors) == (1, 1)  # the dropped stream; expiry is no error
    assert len(api.requests("Pod", watch=False)) == lists + 1
    assert status.resource_version == str(api.resource_version)


def test_dropped_connection_resumes_from_last_resource_version(
        api: KubeApiFixture, mirror: MirrorFactory) -> None:
    cluster, _ = mirror()
    assert cluster.wait_ready(DEADLINE)
    rv = api.add(pod("before"))["metadata"]["resourceVersion"]
    wait_until(lambda: "team-a/before" in cluster.objects("Pod"))
    lists, watches = len(api.requests("Pod", watch=False)), len(api.requests("Pod", watch=True))
    wait_until(lambda: api.open_watches() == 3)
    assert api.drop_connections() == 3
    api.add(pod("during"))
    wait_until(lambda: "team-a/during" in cluster.objects("Pod"))
    resumed = api.requests("Pod", watch=True)[watches]
    assert resumed.query["resourceVersion"] == rv
    assert len(api.requests("Pod", watch=False)) == lists
    status = cluster.status()["Pod"]
    assert (status.reconnects, status.errors, status.relists) == (1, 1, 0)
    assert "ProtocolError" in (status.last_error or "")


def test_watch_timeout_rewatches_at_once(api: KubeApiFixture, mirror: MirrorFactory) -> None:
    cluster, _ = mirror(kinds=("Node",), watch_timeout_seconds=1, backoff_base=5.0,
                         backoff_cap=5.0)
    assert cluster.wait_ready(DEADLINE)
    wait_until(lambda: len(api.requests("Node", watch=True)) >= 2)
    first, second = api.requests("Node", watch=True)[:2]
    assert first.query["timeoutSeconds"] == "1"
    assert second.query["resourceVersion"] == first.query["resourceVersion"]
    assert second.at - first.at < 1.5  # no backoff (base 5 s) after a normal end
    status = cluster.status()["Node"]
    assert (status.reconnects, status.errors) == (0, 0)


def test_watch_closed_at_once_without_events_backs_off(api: KubeApiFixture,
                                                       mirror: MirrorFactory) -> None:
    # timeoutSeconds=0: the server ends every stream at once, as a broken proxy might
    cluster, _ = mirror(kinds=("Node",), watch_timeout_seconds=0, backoff_base=0.1,
                        backoff_cap=0.1, rng=MaxJitter())
    wait_until(lambda: len(api.requests("Node", watch=True)) >= 3)
    first, second, third = api.requests("Node", watch=True)[:3]
    assert second.at - first.at >= 0.1 and third.at - second.at >= 0.1
    status = cluster.status()["Node"]
    assert status.errors >= 2 and status.reconnects >= 2
    assert status.last_error == "ConnectionError: watch closed in under a second without an event"


def test_backoff_grows_and_is_capped(api: KubeApiFixture, mirror: MirrorFactory) -> None:
    api.set_failure("Node", 503)
    mirror(kinds=("Node",), backoff_base=0.05, backoff_cap=0.2, rng=MaxJitter())
    wait_until(lambda: len(api.requests("Node", watch=False)) >= 7)
    times = [r.at for r in api.requests("Node", watch=False)[:7]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2, 0.2], strict=True):
        assert expected <= gap < expected + 0.3  # uncapped, the 5th and 6th would be 0.8, 1.6


@pytest.mark.parametrize(("attempt", "ceiling"), [
    pytest.param(0, 0.5, id="first"),
    pytest.param(3, 4.0, id="doubles"),
    pytest.param(6, 30.0, id="capped"),
    pytest.param(10_000, 30.0, id="huge-attempt-capped"),
])
def test_backoff_delay_full_jitter(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, base=0.5, cap=30.0, rng=MaxJitter()) == ceiling
    seeded = random.Random(7)
    delays = [backoff_delay(attempt, base=0.5, cap=30.0, rng=seeded) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert min(delays) < ceiling / 4  # jitter spans the range, not just its top


def test_status_before_start_and_event_age_from_clock(api: KubeApiFixture,
                                                      mirror: MirrorFactory) -> None:
    now = [1000.0]
    cluster, _ = mirror(start=False, kinds=("Namespace",), clock=lambda: now[0])
    before = cluster.status()["Namespace"]
    assert (before.ready, before.resource_version, before.last_event_age_seconds,
            before.relists, before.reconnects, before.errors, before.last_error) == (
        False, None, None, 0, 0, 0, None)
    cluster.start()
    assert cluster.wait_ready(DEADLINE)
    now[0] += 42.0
    assert cluster.status()["Namespace"].last_event_age_seconds == 42.0


def test_callback_error_relists_after_backoff(api: KubeApiFixture, mirror: MirrorFactory) -> None:
    cluster, recorder = mirror(recorder=Recorder(fail_once_on="team-a/boom"))
    assert cluster.wait_ready(DEADLINE)
    api.add(pod("boom"))
    wait_until(lambda: ("MODIFIED", "team-a/boom") in recorder.summary("Pod"))
    status = cluster.status()["Pod"]
    assert (status.errors, status.relists) == (1, 1)
    assert status.last_error == "RuntimeError: consumer bug"


@pytest.mark.parametrize("failing", [
    pytest.param(False, id="open-watches"),
    pytest.param(True, id="in-backoff"),
])
def test_stop_ends_threads_promptly(api: KubeApiFixture, mirror: MirrorFactory,
                                    failing: bool) -> None:
    def watcher_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("cluster-mirror-")}

    if failing:
        api.set_failure("Pod", 500)
    others = watcher_threads()
    cluster, _ = mirror(backoff_base=30.0, backoff_cap=30.0, rng=MaxJitter())
    wait_until(lambda: api.open_watches() == 2 + (not failing))
    assert len(watcher_threads() - others) == 3
    started = time.monotonic()
    cluster.stop(timeout=2.0)
    assert time.monotonic() - started < 1.0
    assert watcher_threads() - others == set()


def write_kubeconfig(path: Path, servers: dict[str, str], current: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": n, "cluster": {"server": s}} for n, s in servers.items()],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in servers],
    }))
    return path


@pytest.mark.parametrize(("use_env", "context"), [
    pytest.param(False, None, id="explicit-path-current-context"),
    pytest.param(False, "live", id="explicit-context"),
    pytest.param(True, "live", id="KUBECONFIG-path-list"),
])
def test_load_api_client_from_kubeconfig(api: KubeApiFixture, tmp_path: Path, use_env: bool,
                                         context: str | None) -> None:
    api.add(node("gpu-1"))
    servers = {"live": api.url, "other": "http://127.0.0.1:9"}
    config = write_kubeconfig(tmp_path / "config", servers, "other" if context else "live")
    environ = {"KUBECONFIG": f"{tmp_path / 'missing'}:{config}"} if use_env else {}
    client = load_api_client(kubeconfig=None if use_env else config, context=context,
                             environ=environ, service_account_dir=tmp_path)
    assert client is not None
    assert client.configuration.host == api.url
    nodes = CoreV1Api(client).list_node().items
    assert [n.metadata.name for n in nodes if n.metadata] == ["gpu-1"]


def test_load_api_client_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    client = load_api_client(environ=environ, service_account_dir=tmp_path)
    assert client is not None
    assert client.configuration.host == "https://10.96.0.1:443"
    assert client.configuration.api_key["BearerToken"] == "bearer sa-token"
    assert client.configuration.ssl_ca_cert == str(tmp_path / "ca.crt")


def test_load_api_client_none_or_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_api_client(environ={}, service_account_dir=tmp_path) is None
    with pytest.raises(ClusterConfigError, match="does not exist"):
        load_api_client(kubeconfig=tmp_path / "nope", environ={})
    config = write_kubeconfig(tmp_path / "config", {"live": "http://127.0.0.1:9"}, "live")
    with pytest.raises(ClusterConfigError, match="ghost"):
        load_api_client(kubeconfig=config, context="ghost", environ={})
