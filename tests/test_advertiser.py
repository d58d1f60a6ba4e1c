"""VRAM as an extended resource (design §14): the figures, and the advertiser + Lease against the
loopback API server, which answers node status merge patches, Leases with 409 conflicts and
canonical quantities as the recorded kube-apiserver does (`tests/kube_api_fixture.py`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_api_fixture import KubeApiFixture
from live_cluster import gpu_node, namespace, write_kubeconfig

from webhook.cli.settings import load_settings
from webhook.core.advertise import UNCONSTRAINED, figures, plan_writes
from webhook.core.catalog import load_catalog
from webhook.core.view import build_view
from webhook.state.advertiser import KubeNodeStatusApi, NodeAdvertiser
from webhook.state.lease import KubeLeaseApi, LeaseElector
from webhook.state.live import LiveSource
from webhook.state.mirror import ClusterMirror, load_api_client

R = "ollama-guard.io/vram-mib"
CLUSTER = load_settings().cluster_policy()
CATALOG = load_catalog()
NS = "ollama-guard-system"


def tenant(name: str, node: str, *, vram: str = "20000Mi", requested: int | None = None) -> dict[str, Any]:
    """A non-Ollama GPU tenant bound to `node` declaring `vram`; `requested`: its vram-mib request."""
    limits: dict[str, str] = {"nvidia.com/gpu": "1"}
    if requested is not None:
        limits[R] = str(requested)
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}",
                     "annotations": {"ollama-guard.io/vram": vram}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "cuda", "resources": {"limits": limits}}]},
        "status": {"phase": "Running"},
    }


def shown(node: dict[str, Any], value: str | None, allocatable: str | None = "same") -> dict[str, Any]:
    status = node.setdefault("status", {})
    if value is not None:
        status.setdefault("capacity", {})[R] = value
    alloc = value if allocatable == "same" else allocatable
    if alloc is not None:
        status.setdefault("allocatable", {})[R] = alloc
    return node


def mig_node(name: str) -> dict[str, Any]:
    node = gpu_node(name, replicas=None)
    node["metadata"]["labels"]["nvidia.com/mig.strategy"] = "single"
    return node


def unknown_vram(name: str) -> dict[str, Any]:
    node = gpu_node(name)
    del node["metadata"]["labels"]["nvidia.com/gpu.memory"]
    return node


def cpu_node(name: str) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name}, "status": {"allocatable": {"cpu": "8"}}}


# --- the figures (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("objects", "node", "figure"),
    [
        pytest.param([gpu_node("a")], "a", 81559, id="empty-h100"),
        pytest.param([gpu_node("a"), tenant("t", "a")], "a", 81559 - 20000, id="uncovered-tenant-held-back"),
        pytest.param([gpu_node("a"), tenant("t", "a", requested=20000)], "a", 81559, id="covered-tenant-not-held"),
        pytest.param([gpu_node("a"), tenant("t", "a", vram="90000Mi")], "a", 0, id="never-negative"),
        pytest.param([gpu_node("a", **{"ollama-guard.io/vram-reserved": "4Gi"})], "a", 81559 - 4096, id="reserved"),
        pytest.param([gpu_node("a", replicas=None)], "a", 81559, id="unguarded-known-vram-advertised"),
        pytest.param([gpu_node("a", count="2")], "a", 2 * 81559, id="two-gpus-one-pool"),
        pytest.param([unknown_vram("a")], "a", UNCONSTRAINED, id="unknown-vram-unconstrained"),
        pytest.param([mig_node("a")], "a", None, id="mig-only-none"),
        pytest.param([shown(cpu_node("a"), "1000")], "a", None, id="no-longer-gpu-node-removed"),
    ],
)
def test_figures(objects: list[dict[str, Any]], node: str, figure: int | None) -> None:
    view = build_view(objects, cluster=CLUSTER, catalog=CATALOG)
    assert figures(view)[node].figure == figure


@pytest.mark.parametrize(
    ("node", "writes"),
    [
        pytest.param(gpu_node("a"), [("a", 81559)], id="absent-written"),
        pytest.param(shown(gpu_node("a"), "81559"), [], id="equal-no-write"),
        pytest.param(shown(gpu_node("a", memory="20000"), "20k"), [], id="canonical-20k-is-20000"),
        pytest.param(shown(gpu_node("a"), "81559", allocatable=None), [("a", 81559)], id="capacity-only-rewritten"),
        pytest.param(shown(gpu_node("a"), "0"), [("a", 81559)], id="kubelet-zeroed-rewritten"),
        pytest.param(shown(mig_node("a"), "81559"), [("a", None)], id="mig-removed"),
        pytest.param(mig_node("a"), [], id="mig-without-resource-untouched"),
        pytest.param(cpu_node("a"), [], id="cpu-node-untouched"),
        pytest.param(shown(cpu_node("a"), "5"), [("a", None)], id="stray-removed"),
    ],
)
def test_plan_writes_only_what_differs(node: dict[str, Any], writes: list[tuple[str, int | None]]) -> None:
    view = build_view([node], cluster=CLUSTER, catalog=CATALOG)
    assert [(w.node, w.figure) for w in plan_writes(view)] == writes


def test_merge_patch_sets_both_sections_or_nulls_them() -> None:
    view = build_view([gpu_node("a"), shown(mig_node("b"), "7")], cluster=CLUSTER, catalog=CATALOG)
    patches = {w.node: w.merge_patch() for w in plan_writes(view)}
    assert patches["a"] == {"status": {"capacity": {R: "81559"}, "allocatable": {R: "81559"}}}
    assert patches["b"] == {"status": {"capacity": {R: None}, "allocatable": {R: None}}}


# --- against the loopback API server --------------------------------------------------------------


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def api() -> Iterator[KubeApiFixture]:
    with KubeApiFixture() as server:
        yield server


Start = Callable[..., LiveSource]


@pytest.fixture
def guard(api: KubeApiFixture, tmp_path: Path) -> Iterator[Start]:
    """`guard(identity)`: a LiveSource with an advertiser elected through the fixture's Lease."""
    sources: list[LiveSource] = []

    def start(identity: str, *, run: bool = True) -> LiveSource:
        client = load_api_client(kubeconfig=write_kubeconfig(tmp_path / f"{identity}.kubeconfig", api.url))
        assert client is not None

        def mirror(**kwargs: Any) -> ClusterMirror:
            return ClusterMirror(client, backoff_base=0.02, backoff_cap=0.2, **kwargs)

        source = LiveSource(mirror, cluster=CLUSTER, catalog=CATALOG, publish_interval=0.02)
        elector = LeaseElector(KubeLeaseApi(client), namespace=NS, identity=identity, duration=1.5,
                               renew_deadline=1.0, renew_every=0.2)
        advertiser = NodeAdvertiser(lambda: source.ledger.view, KubeNodeStatusApi(client), elector=elector,
                                    interval=0.05, resend_after=0.5)
        if run:
            source.attach_advertiser(advertiser)
        else:
            source.advertiser = advertiser  # stepped by the test itself
        source.start()
        sources.append(source)
        wait_until(lambda: source.readiness()[0], f"{identity}'s first view")
        return source

    yield start
    for source in sources:
        source.stop()


def capacity(api: KubeApiFixture, node: str) -> tuple[str | None, str | None]:
    status = (api.node(node) or {}).get("status", {})
    return status.get("capacity", {}).get(R), status.get("allocatable", {}).get(R)


def holder(api: KubeApiFixture) -> str:
    lease = api.lease(NS, "ollama-guard-advertiser") or {}
    return str(lease.get("spec", {}).get("holderIdentity") or "")


def seed(api: KubeApiFixture, *objects: dict[str, Any]) -> None:
    for obj in (namespace("team-a"), *objects):
        api.add(obj)


def test_one_advertiser_writes_capacity_and_allocatable(api: KubeApiFixture, guard: Start) -> None:
    seed(api, gpu_node("a"), gpu_node("b", memory="20000"))
    guard("g1")
    wait_until(lambda: capacity(api, "a") == ("81559", "81559"), "node a advertised")
    wait_until(lambda: capacity(api, "b") == ("20k", "20k"), "node b advertised (canonical 20k)")
    assert holder(api) == "g1"
    time.sleep(0.5)  # steady state: nothing differs, nothing is written again
    patches = [r for r in api.requests() if r.method == "PATCH"]
    assert len(patches) == 2, [r.path for r in patches]


def test_two_advertisers_exactly_one_writes(api: KubeApiFixture, guard: Start) -> None:
    seed(api, gpu_node("a"))
    one, two = guard("g1"), guard("g2")
    wait_until(lambda: capacity(api, "a") == ("81559", "81559"), "node a advertised")
    time.sleep(1.0)  # several renewals
    assert one.advertiser is not None and two.advertiser is not None
    leaders = [s for s in (one, two) if s.advertiser is not None and s.advertiser.leading]
    assert len(leaders) == 1
    writers = [s for s in (one, two) if s.advertiser is not None and s.advertiser.writes]
    assert writers == leaders
    assert holder(api) == ("g1" if leaders[0] is one else "g2")


def test_holder_dies_and_the_other_takes_over(api: KubeApiFixture, guard: Start) -> None:
    seed(api, gpu_node("a"))
    dead = guard("dead", run=False)
    assert dead.advertiser is not None and dead.advertiser.elector is not None
    assert dead.advertiser.elector.step() is True  # acquires, then never renews: a crashed process
    assert holder(api) == "dead"
    alive = guard("alive")
    took = wait_until(lambda: holder(api) == "alive", "the survivor to take the Lease over", timeout=10)
    assert took >= 1.0  # not before the dead holder's Lease (1.5 s, as the survivor observes it) ran out
    wait_until(lambda: capacity(api, "a") == ("81559", "81559"), "the survivor to advertise")
    assert alive.advertiser is not None
    wait_until(lambda: alive.advertiser is not None and alive.advertiser.writes >= 1, "the survivor's count")
    assert dead.advertiser.writes == 0


def test_release_on_shutdown_hands_over_at_once(api: KubeApiFixture, guard: Start) -> None:
    seed(api, gpu_node("a"))
    first = guard("first")
    wait_until(lambda: holder(api) == "first", "first to hold the Lease")
    second = guard("second")
    first.stop()
    assert holder(api) == ""  # released, not left to expire
    took = wait_until(lambda: holder(api) == "second", "second to take over")
    assert took < 1.0
    assert second.advertiser is not None


def test_kubelet_zeroing_is_rewritten(api: KubeApiFixture, guard: Start) -> None:
    seed(api, gpu_node("a"))
    guard("g1")
    wait_until(lambda: capacity(api, "a") == ("81559", "81559"), "node a advertised")
    api.kubelet_recreate_zero("a")
    assert capacity(api, "a") == ("0", "0")
    wait_until(lambda: capacity(api, "a") == ("81559", "81559"), "node a advertised again")


def test_relabelled_to_mig_is_removed(api: KubeApiFixture, guard: Start) -> None:
    seed(api, gpu_node("a"))
    guard("g1")
    wait_until(lambda: capacity(api, "a") == ("81559", "81559"), "node a advertised")
    node = api.node("a")
    assert node is not None
    labels = node["metadata"]["labels"]
    labels.pop("nvidia.com/gpu.replicas")
    labels.pop("nvidia.com/gpu.sharing-strategy")
    labels["nvidia.com/mig.strategy"] = "single"
    api.modify(node)
    wait_until(lambda: capacity(api, "a") == (None, None), "the resource removed from node a")


def test_legacy_tenants_lower_the_figure_and_raise_it_when_they_leave(api: KubeApiFixture, guard: Start) -> None:
    seed(api, gpu_node("a"), tenant("legacy", "a"), tenant("covered", "a", requested=20000))
    guard("g1")
    wait_until(lambda: capacity(api, "a") == ("61559", "61559"), "the legacy tenant held back")
    api.delete("Pod", "team-a/legacy")
    wait_until(lambda: capacity(api, "a") == ("81559", "81559"), "the figure raised again")


def test_api_errors_are_retried_not_fatal(api: KubeApiFixture, guard: Start) -> None:
    seed(api, gpu_node("a"))
    api.set_failure("nodes/status", 500, times=3)
    source = guard("g1")
    wait_until(lambda: capacity(api, "a") == ("81559", "81559"), "node a advertised after the errors")
    assert source.advertiser is not None and source.advertiser.failures >= 3


def test_lease_conflict_means_not_leader(api: KubeApiFixture, guard: Start, tmp_path: Path) -> None:
    seed(api, gpu_node("a"))
    source = guard("g1", run=False)
    assert source.advertiser is not None and source.advertiser.elector is not None
    elector = source.advertiser.elector
    barrier, results = threading.Barrier(2), []

    def race(e: LeaseElector) -> None:
        barrier.wait()
        results.append(e.step())

    client = load_api_client(kubeconfig=write_kubeconfig(tmp_path / "other.kubeconfig", api.url))
    other = LeaseElector(KubeLeaseApi(client), namespace=NS, identity="g2", duration=1.5, renew_deadline=1.0,
                         renew_every=0.2)
    threads = [threading.Thread(target=race, args=(e,)) for e in (elector, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    assert elector.is_leader != other.is_leader


# --- metrics: what the node shows, what the guard wants there, and what is held back ---------------


@pytest.mark.parametrize(
    ("objects", "on_node", "target", "uncovered"),
    [
        pytest.param([gpu_node("a")], None, 81559, 0, id="not-advertised-yet"),
        pytest.param([shown(gpu_node("a"), "81559")], 81559, 81559, 0, id="in-step"),
        pytest.param([gpu_node("a"), tenant("t", "a")], None, 61559, 20000, id="legacy-tenant-held-back"),
        pytest.param([shown(gpu_node("a", memory="20000"), "20k")], 20000, 20000, 0, id="canonical-read"),
    ],
)
def test_metrics_show_advertised_target_and_uncovered(
    start_guard: Callable[..., Any], objects: list[dict[str, Any]], on_node: int | None, target: int, uncovered: int
) -> None:
    guard = start_guard(objects=[namespace("team-a"), *objects])
    assert guard.metric("ollama_guard_node_vram_advertised_mib", node="a") == on_node
    assert guard.metric("ollama_guard_node_vram_advertise_target_mib", node="a") == target
    assert guard.metric("ollama_guard_node_vram_uncovered_mib", node="a") == uncovered


# --- the audit: advertised next to committed and free, and who the resource does not cover -------


def test_audit_shows_the_advertised_figure_and_the_uncovered_tenants() -> None:
    from datetime import UTC, datetime

    from webhook.audit.model import Manifest
    from webhook.audit.run import run_audit

    state = [namespace("team-a"), shown(gpu_node("a"), "70000"), tenant("legacy", "a"),
             tenant("covered", "a", requested=10000)]
    planned = tenant("planned", "a")
    del planned["spec"]["nodeName"], planned["status"]
    report = run_audit(state, cluster=CLUSTER, catalog=CATALOG, now=datetime(2026, 1, 1, tzinfo=UTC),
                       state_origin="test", manifests=[Manifest("planned.yaml", planned)])
    (line,) = report.nodes
    assert line.advertised_mib == 70000
    assert line.advertise_target_mib == 81559 - 20000  # only the running pod without a request is held back
    assert {t.name: t.covered for t in line.tenants} == {"legacy": False, "covered": True, "planned": True}
    finding = next(f for f in report.findings if f.rule == "node-vram-budget")
    assert "1 not covered by ollama-guard.io/vram-mib" in finding.message
    assert "team-a/legacy 19.5 GiB" in finding.message
    assert ("advertisedMiB", "70000") in finding.properties


def test_nothing_is_written_from_a_stale_view() -> None:
    from dataclasses import replace

    from webhook.core.staleness import Staleness

    sent: list[tuple[str, dict[str, Any]]] = []

    class Recorder:  # our own seam: what the advertiser would send
        def patch_status(self, node: str, patch: dict[str, Any]) -> dict[str, Any]:
            sent.append((node, patch))
            return {}

    current = build_view([gpu_node("a")], cluster=CLUSTER, catalog=CATALOG)
    views = [replace(current, stale=Staleness(("Pod",), since="2026-12-01T08:00:00Z")), current]
    advertiser = NodeAdvertiser(lambda: views[0], Recorder())
    assert advertiser.step() == [] and sent == []
    views.pop(0)
    assert [w.node for w in advertiser.step()] == ["a"] and sent[0][0] == "a"
