"""The guard in live mode: a real HTTPS guard whose state comes from list + watch (design §6, §7, §11).

Each test runs a loopback Kubernetes API server (`KubeApiFixture`), writes a kubeconfig pointing
at it, and starts the guard with a `LiveSource` built on that kubeconfig (the real `kubernetes`
client over HTTP; nothing is patched). What the API server holds reaches the decisions through
the watch; the tests read the outcome from `/readyz`, `/metrics`, admission answers, the ledger
and the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GuardServer, load_recorded, variant
from design_figures import LLAMA31_8B_MIB
from kube_api_fixture import KubeApiFixture
from live_cluster import (
    ANN_ESTIMATE,
    binding_review,
    demand_of,
    gpu_node,
    namespace,
    stamped_pod,
    unmutated_pod,
    wait_until,
    write_kubeconfig,
)

from webhook.cli.settings import Settings, load_settings
from webhook.core.catalog import load_catalog
from webhook.core.view import ViewBuilder
from webhook.state.live import ESTIMATE_STUB, LiveSource, project
from webhook.state.mirror import ClusterMirror, load_api_client
from webhook.state.snapshot import SnapshotSource

NODE = "gpu-h100-a"
BUDGET = 81559
COMMITTED = "ollama_guard_node_vram_committed_mib"
CAPACITY = "ollama_guard_node_vram_capacity_mib"
OVERCOMMITTED = "ollama_guard_overcommitted_nodes"

LiveGuard = Callable[..., GuardServer]


@pytest.fixture
def api() -> Iterator[KubeApiFixture]:
    with KubeApiFixture() as server:
        yield server


@pytest.fixture
def live_guard(api: KubeApiFixture, start_guard: Callable[..., GuardServer], tmp_path: Path) -> Iterator[LiveGuard]:
    """`live_guard(settings=None, ready=True)`: a guard on a LiveSource reading `api`."""
    sources: list[LiveSource] = []

    def start(*, settings: Settings | None = None, ready: bool = True) -> GuardServer:
        settings = settings or load_settings()
        client = load_api_client(kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", api.url))
        assert client is not None

        def mirror(**kwargs: Any) -> ClusterMirror:
            return ClusterMirror(client, backoff_base=0.02, backoff_cap=0.2, **kwargs)

        source = LiveSource(mirror, cluster=settings.cluster_policy(), catalog=load_catalog(), publish_interval=0.02)
        sources.append(source)
        guard = start_guard(source=source, settings=settings)
        if ready:
            wait_until(lambda: is_ready(guard), "the guard to be ready")
        return guard

    yield start
    for source in sources:
        source.stop()  # before the API server goes away: no reconnect noise


def is_ready(guard: GuardServer) -> bool:
    return guard.client.get("/readyz").status_code == 200


def committed(guard: GuardServer, node: str = NODE) -> float | None:
    return guard.metric(COMMITTED, node=node)


def ledger_of(guard: GuardServer) -> Any:
    return guard.source.ledger


def seed(api: KubeApiFixture, *objects: dict[str, Any]) -> None:
    for obj in (gpu_node(NODE), namespace("team-a"), *objects):
        api.add(obj)


# --- the projection -------------------------------------------------------------------------------


def finish(pod: dict[str, Any]) -> dict[str, Any]:
    return {**pod, "status": {"phase": "Succeeded"}}


def failed(pod: dict[str, Any]) -> dict[str, Any]:
    return {**pod, "status": {"phase": "Failed"}}


def terminating(pod: dict[str, Any]) -> dict[str, Any]:
    return {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "2030-01-01T00:00:00Z"}}


def with_container(pod: dict[str, Any], **fields: Any) -> dict[str, Any]:
    pod["spec"]["containers"][0].update(fields)
    return pod


def pull_from_env(pod: dict[str, Any]) -> dict[str, Any]:
    """No models annotation: the model is discovered in `ollama pull $MODEL`, MODEL from the env."""
    del pod["metadata"]["annotations"]["ollama-guard.io/models"]
    container = pod["spec"]["containers"][0]
    container["env"] = [
        *container.get("env", []),
        {"name": "MODEL", "value": "qwen2.5:14b"},
        {"name": "UNRELATED", "value": "x" * 200},
    ]
    container["lifecycle"] = {"postStart": {"exec": {"command": ["/bin/sh", "-c", "ollama pull ${MODEL}"]}}}
    return pod


def without_models(pod: dict[str, Any]) -> dict[str, Any]:
    del pod["metadata"]["annotations"]["ollama-guard.io/models"]
    return pod


def cuda_pod(**resources: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "cuda",
            "namespace": "team-a",
            "uid": "u1",
            "labels": {"app": "trainer"},
            "annotations": {"ollama-guard.io/vram": "10Gi", "team": "ml"},
        },
        "spec": {
            "nodeName": NODE,
            "containers": [
                {"name": "main", "image": "nvcr.io/nvidia/cuda:12", "resources": {"limits": {"cpu": "4", **resources}}}
            ],
        },
        "status": {"phase": "Running"},
    }


PROJECTED_PODS = [  # factories: the recorded reviews are read when the test runs, not at collection
    pytest.param(lambda: stamped_pod("p", node=NODE, phase="Running"), id="stamped"),
    pytest.param(lambda: stamped_pod("p", node=NODE, stamp="old"), id="older-stamp"),
    pytest.param(lambda: stamped_pod("p", node=NODE, stamp="none", models="gemma2:9b"), id="no-stamp"),
    pytest.param(lambda: unmutated_pod("p", node=NODE), id="created-before-the-guard"),
    pytest.param(lambda: pull_from_env(unmutated_pod("p", node=NODE)), id="model-discovered-through-env"),
    pytest.param(lambda: pull_from_env(stamped_pod("p", node=NODE)), id="stamped-model-discovered-through-env"),
    pytest.param(lambda: without_models(stamped_pod("p", node=NODE)), id="stamped-model-discovered-in-post-start"),
    pytest.param(
        lambda: with_container(
            stamped_pod("p", node=NODE),
            env=[{"name": "OLLAMA_NUM_PARALLEL", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
        ),
        id="env-value-from",
    ),
    pytest.param(
        lambda: with_container(stamped_pod("p"), resources={"limits": {"nvidia.com/gpu": "1.5"}}), id="bad-gpu-count"
    ),
    pytest.param(
        lambda: with_container(
            stamped_pod("p", node=NODE, stamp="none"), env=[{"name": "OLLAMA_ORIGINS", "value": "caf\u00e9 \ud800"}]
        ),
        id="non-ascii-and-lone-surrogate",
    ),
    pytest.param(lambda: terminating(stamped_pod("p", node=NODE)), id="terminating"),
    pytest.param(lambda: finish(stamped_pod("p", node=NODE)), id="finished"),
    pytest.param(lambda: cuda_pod(**{"nvidia.com/gpu": "2"}), id="cuda-declared"),
    pytest.param(lambda: cuda_pod(**{"nvidia.com/gpu.shared": "1"}), id="renamed-gpu-resource"),
    pytest.param(lambda: cuda_pod(**{"nvidia.com/mig-1g.10gb": "1"}), id="mig-only"),
]


@pytest.mark.parametrize("make", PROJECTED_PODS)
def test_the_projection_keeps_everything_a_tenant_is_made_of(make: Callable[[], dict[str, Any]]) -> None:
    raw = make()
    settings = load_settings()
    builder = ViewBuilder(cluster=settings.cluster_policy(), catalog=load_catalog())
    projected = project("Pod", raw)
    if projected is None:
        assert builder.tenant_of(raw) is None
    else:
        assert builder.tenant_of(projected) == builder.tenant_of(raw)


def test_a_plain_pod_is_not_kept() -> None:
    plain = cuda_pod()
    del plain["metadata"]["annotations"]["ollama-guard.io/vram"]
    assert project("Pod", plain) is None


LLAMA_MIB = LLAMA31_8B_MIB  # llama3.1:8b at the namespace defaults, as the mutating webhook requests it


def test_replicas_share_their_projection_and_a_current_stamp_is_reduced() -> None:
    first, second = (project("Pod", stamped_pod(f"r{i}", node=NODE, phase="Running")) for i in range(2))
    assert first is not None and second is not None
    assert (first["metadata"]["name"], second["metadata"]["name"]) == ("r0", "r1")
    for path in (("spec",), ("status",), ("metadata", "annotations"), ("metadata", "labels")):
        a, b = first, second
        for step in path:
            a, b = a[step], b[step]
        assert a is b, path
    assert first["metadata"]["annotations"][ANN_ESTIMATE] == ESTIMATE_STUB == '{"v":1}'
    assert first["spec"]["containers"] == [
        {  # the stamp is the demand and the models are declared; the VRAM request counts too (design §14)
            "name": "ollama",
            "image": "ollama/ollama:0.6.8",
            "resources": {
                "limits": {"nvidia.com/gpu": "1", "ollama-guard.io/vram-mib": str(LLAMA_MIB)},
                "requests": {"nvidia.com/gpu": "1", "ollama-guard.io/vram-mib": str(LLAMA_MIB)},
            },
        }
    ]
    old = project("Pod", stamped_pod("old", stamp="old"))
    assert old is not None and old["metadata"]["annotations"][ANN_ESTIMATE] == '{"v": 0, "demandMiB": 1}'


# --- readiness -----------------------------------------------------------------------------------


def test_readyz_is_503_until_every_first_list_is_applied_and_published(
    api: KubeApiFixture, live_guard: LiveGuard
) -> None:
    bound = [stamped_pod(f"bound-{i}", node=NODE, phase="Running") for i in range(3)]
    seed(api, namespace("team-b"), *bound)
    api.set_failure("Namespace", 500)  # the Namespace list fails until the API server recovers
    guard = live_guard(ready=False)
    wait_until(lambda: len(api.requests("Namespace", watch=False)) >= 2, "a retried Namespace list")

    def others_listed() -> bool:
        kinds = guard.client.get("/readyz").json()["kinds"]
        return all(v["ready"] for k, v in kinds.items() if k != "Namespace")

    wait_until(others_listed, "every other kind's first list")  # their order is the threads' business
    waiting = guard.client.get("/readyz")
    assert waiting.status_code == 503
    body = waiting.json()
    assert (body["ready"], body["mode"]) == (False, "live")
    assert {k: v["ready"] for k, v in body["kinds"].items()} == {
        "Node": True,
        "Pod": True,
        "Namespace": False,
        "Deployment": True,
        "StatefulSet": True,
    }
    assert body["kinds"]["Namespace"]["lastEventAgeSeconds"] is None

    api.set_failure("Namespace", None)
    wait_until(lambda: is_ready(guard), "readiness after recovery")
    ready = guard.client.get("/readyz").json()
    # the first 200 already serves a view holding every kind's first list
    assert (ready["ready"], ready["nodes"], ready["tenants"]) == (True, 1, 3)
    assert set(ready["kinds"]) == {"Node", "Pod", "Namespace", "Deployment", "StatefulSet"}
    for kind, status in ready["kinds"].items():
        assert status["ready"] is True, kind
        assert 0 <= status["lastEventAgeSeconds"] < 10, kind
    assert sorted(ledger_of(guard).view.namespaces) == ["team-a", "team-b"]
    assert committed(guard) == sum(demand_of(p) for p in bound)


def test_metrics_report_watch_staleness_per_kind(api: KubeApiFixture, live_guard: LiveGuard) -> None:
    seed(api, namespace("team-b"))
    guard = live_guard()
    for kind in ("Node", "Pod", "Namespace"):
        age = guard.metric("ollama_guard_watch_last_event_age_seconds", kind=kind)
        assert age is not None and 0 <= age < 60
    assert guard.metric("ollama_guard_ready") == 1.0


def test_a_quiet_cluster_becomes_ready_without_further_events(api: KubeApiFixture, live_guard: LiveGuard) -> None:
    """Readiness may not depend on a watch event arriving after the last first list."""
    seed(api)
    for _ in range(5):
        guard = live_guard(ready=False)
        wait_until(lambda: is_ready(guard), "readiness of a quiet cluster")  # noqa: B023 (used at once)


# --- cluster changes reach decisions --------------------------------------------------------------


def test_a_namespace_annotation_change_flips_enforcement(api: KubeApiFixture, live_guard: LiveGuard) -> None:
    seed(api, namespace("team-q", **{"ollama-guard.io/allowed-models": "qwen2.5:*"}))
    guard = live_guard()
    review = load_recorded("validate-pod-create-2.json")

    def answer() -> dict[str, Any]:
        return guard.review("/validate", variant(review, namespace="team-q", models="llama3.1:8b"))

    denied = answer()
    assert (denied["allowed"], denied["status"]["code"]) == (False, 403)
    assert "model llama3.1:8b not allowed in namespace team-q" in denied["status"]["message"]

    api.modify(
        namespace("team-q", **{"ollama-guard.io/allowed-models": "qwen2.5:*", "ollama-guard.io/enforcement": "warn"})
    )
    wait_until(lambda: answer()["allowed"], "the namespace's warn mode to reach the guard")
    warned = answer()
    assert any(w.startswith("would deny: model llama3.1:8b is not allowed here") for w in warned["warnings"])

    api.modify(namespace("team-q", **{"ollama-guard.io/allowed-models": "qwen2.5:*"}))
    wait_until(lambda: not answer()["allowed"], "enforcement to come back")


@pytest.mark.parametrize(
    ("labels", "capacity", "share"),
    [
        pytest.param({"nvidia.com/gpu.memory": "49140"}, 49140, 49140 // 4, id="gpu-memory"),
        pytest.param({"nvidia.com/gpu.replicas": "8"}, BUDGET, BUDGET // 8, id="replicas"),
        pytest.param({"nvidia.com/gpu.memory": str(46068 * 2**20)}, 46068, 46068 // 4, id="gpu-memory-in-bytes"),
        pytest.param({"nvidia.com/gpu.count": "2"}, 2 * BUDGET, BUDGET // 4, id="gpu-count"),
    ],
)
def test_a_node_label_change_moves_its_budget(
    api: KubeApiFixture, live_guard: LiveGuard, labels: dict[str, str], capacity: int, share: int
) -> None:
    """An undeclared non-Ollama tenant counts one replica's share: it follows the labels too."""
    tenant = stamped_pod("ollama-0", node=NODE, phase="Running")
    plain = {
        "kind": "Pod",
        "metadata": {"name": "cuda-job", "namespace": "team-a", "uid": "u-cuda"},
        "spec": {
            "nodeName": NODE,
            "containers": [
                {
                    "name": "main",
                    "image": "nvcr.io/nvidia/cuda:12.4.1-base",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
        "status": {"phase": "Running"},
    }
    seed(api, tenant, plain)
    guard = live_guard()
    assert (guard.metric(CAPACITY, node=NODE), committed(guard)) == (BUDGET, demand_of(tenant) + BUDGET // 4)

    node = gpu_node(NODE)
    node["metadata"]["labels"] |= labels
    api.modify(node)
    expected = (capacity, demand_of(tenant) + share)
    wait_until(lambda: (guard.metric(CAPACITY, node=NODE), committed(guard)) == expected, "the new budget in /metrics")


def test_a_node_that_stops_time_slicing_is_no_longer_guarded(api: KubeApiFixture, live_guard: LiveGuard) -> None:
    seed(api)
    guard = live_guard()
    assert guard.metric(CAPACITY, node=NODE) == BUDGET
    api.modify(gpu_node(NODE, replicas=None))
    wait_until(lambda: guard.metric(CAPACITY, node=NODE) is None, "the node to leave /metrics")
    api.modify(gpu_node(NODE, **{"ollama-guard.io/vram-capacity": "40Gi"}, replicas=None))
    wait_until(lambda: guard.metric(CAPACITY, node=NODE) == 40960, "the annotated capacity")


# --- bindings, confirmation and release -----------------------------------------------------------


def bind(guard: GuardServer, pod: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    return guard.review("/validate", binding_review(pod, NODE, dry_run=dry_run))


def pending(guard: GuardServer, api: KubeApiFixture, pod: dict[str, Any]) -> None:
    """Create `pod` (unbound) in the API server and wait until the guard's view holds it."""
    api.add(pod)
    key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    wait_until(lambda: key in ledger_of(guard).view.tenants, f"{key} in the view")


def test_a_binding_reserves_and_the_watch_confirms_it_without_double_counting(
    api: KubeApiFixture, live_guard: LiveGuard
) -> None:
    running = stamped_pod("running", node=NODE, phase="Running")
    seed(api, running)
    guard = live_guard()
    base = demand_of(running)
    pod = stamped_pod("ollama-new")
    pending(guard, api, pod)
    assert committed(guard) == base, "a pending pod holds nothing yet"

    assert bind(guard, pod)["allowed"] is True
    ledger = ledger_of(guard)
    assert [(r.key, r.node, r.demand_mib) for r in ledger.reservations()] == [
        ("team-a/ollama-new", NODE, demand_of(pod))
    ]
    assert committed(guard) == base + demand_of(pod)

    api.modify({**pod, "spec": {**pod["spec"], "nodeName": NODE}})
    wait_until(lambda: not ledger.reservations(), "the watch to confirm the reservation")
    tenant = ledger.view.tenants["team-a/ollama-new"]
    assert (tenant.node, tenant.uid, tenant.demand_mib) == (NODE, pod["metadata"]["uid"], demand_of(pod))
    assert committed(guard) == base + demand_of(pod)
    assert ledger.committed(NODE) == base + demand_of(pod)

    api.modify({**pod, "spec": {**pod["spec"], "nodeName": NODE}, "status": {"phase": "Running"}})
    assert bind(guard, pod)["allowed"] is True, "a repeated binding of a bound pod is still admitted"
    assert committed(guard) == base + demand_of(pod)


RELEASES = [
    pytest.param(lambda api, pod: api.delete("Pod", "team-a/ollama-gone"), id="deleted"),
    pytest.param(lambda api, pod: api.modify(finish(pod)), id="succeeded"),
    pytest.param(lambda api, pod: api.modify(failed(pod)), id="failed"),
    pytest.param(lambda api, pod: api.modify(terminating(pod)), id="being-deleted"),
]


@pytest.mark.parametrize("confirmed", [pytest.param(True, id="confirmed"), pytest.param(False, id="unconfirmed")])
@pytest.mark.parametrize("release", RELEASES)
def test_a_pod_that_goes_away_releases_its_vram(
    api: KubeApiFixture,
    live_guard: LiveGuard,
    release: Callable[[KubeApiFixture, dict[str, Any]], Any],
    confirmed: bool,
) -> None:
    seed(api)
    guard = live_guard()
    pod = stamped_pod("ollama-gone")
    pending(guard, api, pod)
    assert bind(guard, pod)["allowed"] is True
    if confirmed:
        pod = {**pod, "spec": {**pod["spec"], "nodeName": NODE}, "status": {"phase": "Running"}}
        api.modify(pod)
        wait_until(lambda: not ledger_of(guard).reservations(), "the confirmation")
    assert committed(guard) == demand_of(pod)

    release(api, pod)
    wait_until(lambda: "team-a/ollama-gone" not in ledger_of(guard).view.tenants, "the pod to leave the view")
    assert ledger_of(guard).reservations() == ()
    assert committed(guard) == 0


def test_an_unconfirmed_reservation_expires_after_the_ttl(api: KubeApiFixture, live_guard: LiveGuard) -> None:
    seed(api)
    guard = live_guard(settings=load_settings(reservation_ttl_seconds=0.5))
    pod = stamped_pod("ollama-never-bound")
    pending(guard, api, pod)
    assert bind(guard, pod)["allowed"] is True
    assert committed(guard) == demand_of(pod)
    # nothing else happens: no request, no event; the scrape alone must show the release
    wait_until(lambda: committed(guard) == 0, "the TTL release", timeout=5)
    assert ledger_of(guard).reservations() == ()


def test_a_dry_run_binding_reserves_nothing(api: KubeApiFixture, live_guard: LiveGuard) -> None:
    seed(api)
    guard = live_guard()
    pod = stamped_pod("ollama-dry")
    pending(guard, api, pod)
    for _ in range(2):
        assert bind(guard, pod, dry_run=True)["allowed"] is True
        assert (committed(guard), ledger_of(guard).reservations()) == (0, ())
    assert bind(guard, pod)["allowed"] is True
    assert committed(guard) == demand_of(pod)


def test_a_binding_that_does_not_fit_is_denied_from_the_watched_state(
    api: KubeApiFixture, live_guard: LiveGuard
) -> None:
    tenants = [stamped_pod(f"big-{i}", node=NODE, phase="Running", demand=20000) for i in range(4)]
    seed(api, *tenants)
    guard = live_guard()
    pod = stamped_pod("ollama-late")
    pending(guard, api, pod)
    answer = bind(guard, pod)
    assert (answer["allowed"], answer["status"]["code"]) == (False, 403)
    assert f"binding to {NODE} would over-commit its VRAM" in answer["status"]["message"]
    assert "1.5 GiB free of 79.6 GiB (78.1 GiB committed)" in answer["status"]["message"]  # 80000 of 81559 MiB
    assert ledger_of(guard).reservations() == ()


# --- over-commitment is reported ------------------------------------------------------------------


def test_an_overcommitted_node_is_a_metric_and_one_log_line(
    api: KubeApiFixture, live_guard: LiveGuard, caplog: pytest.LogCaptureFixture
) -> None:
    seed(api, *(stamped_pod(f"big-{i}", node=NODE, phase="Running", demand=20000) for i in range(4)))
    guard = live_guard()
    assert guard.metric(OVERCOMMITTED) == 0
    caplog.set_level(logging.WARNING, logger="ollama_guard")

    # pods bound behind the guard's back (e.g. before it was installed) push the node over
    api.add(stamped_pod("sneaky-1", node=NODE, phase="Running", demand=3000))
    wait_until(lambda: guard.metric(OVERCOMMITTED) == 1, "the over-committed gauge")
    api.add(stamped_pod("sneaky-2", node=NODE, phase="Running", demand=1000))
    wait_until(lambda: committed(guard) == 84000, "the second pod")
    api.add(namespace("unrelated"))  # more publishes, same episode
    wait_until(lambda: "unrelated" in ledger_of(guard).view.namespaces, "the namespace")

    lines = [r.getMessage() for r in caplog.records if "over-committed" in r.getMessage()]
    assert lines == [f"node {NODE} is over-committed by 1441 MiB (83000 MiB committed, budget 81559 MiB)"]
    assert guard.metric("ollama_guard_node_vram_free_mib", node=NODE) == BUDGET - 84000

    api.delete("Pod", "team-a/sneaky-1")
    api.delete("Pod", "team-a/sneaky-2")
    wait_until(lambda: guard.metric(OVERCOMMITTED) == 0, "the node back within budget")


# --- workload templates (design §10: a scale-up is checked with the template from the view) --------


def recorded_deployment(name: str, *, gpu: bool = True) -> dict[str, Any]:
    deployment = load_recorded("validate-deployment-create-1.json")["request"]["object"]
    deployment["metadata"] = {"name": name, "namespace": "team-a", "uid": f"uid-{name}"}
    if not gpu:  # a web app: no GPU, not the ollama image, no Ollama label or annotation
        template = deployment["spec"]["template"]
        template["metadata"] = {"labels": {"app": name}}
        template["spec"]["containers"] = [{"name": "web", "image": "nginx:1.27"}]
    return deployment


def scale_review(name: str, replicas: int, old: int = 1) -> dict[str, Any]:
    review = variant(load_recorded("validate-scale-scale-update-1.json"), name=name)
    review["request"]["object"]["spec"]["replicas"] = replicas
    review["request"]["oldObject"]["spec"]["replicas"] = old
    return review


def test_a_scale_up_is_checked_with_the_template_of_a_watched_deployment(
    api: KubeApiFixture, live_guard: LiveGuard
) -> None:
    seed(api, recorded_deployment("ollama"), recorded_deployment("web", gpu=False))
    guard = live_guard()  # started after the Deployments were created: it never saw them admitted
    templates = guard.source.templates
    assert templates.get("Deployment", "team-a", "ollama") is not None
    assert templates.get("Deployment", "team-a", "web") is None  # no GPU pods: not kept

    denied = guard.review("/validate", scale_review("ollama", 40))
    assert not denied["allowed"] and "scaling deployment team-a/ollama to 40" in denied["status"]["message"]
    fits = guard.review("/validate", scale_review("ollama", 2))
    assert fits["allowed"] and not fits.get("warnings")

    api.delete("Deployment", "team-a/ollama")
    wait_until(lambda: templates.get("Deployment", "team-a", "ollama") is None, "the deleted template to go")
    unknown = guard.review("/validate", scale_review("ollama", 40))
    assert unknown["allowed"] and "not checked" in unknown["warnings"][0]


def test_a_snapshot_gives_scale_checks_the_templates_of_its_gpu_workloads() -> None:
    objects = [
        gpu_node(NODE),
        namespace("team-a"),
        recorded_deployment("ollama"),
        recorded_deployment("web", gpu=False),
    ]
    source = SnapshotSource(objects, cluster=load_settings().cluster_policy(), catalog=load_catalog(), origin="t")
    assert len(source.templates) == 1
    kept = source.templates.get("Deployment", "team-a", "ollama")
    assert kept is not None and kept.replicas == 1 and kept.template["spec"]["containers"][0]["name"] == "ollama"
