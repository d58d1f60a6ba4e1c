"""The decision core end to end with plain dicts: mutate/validate on recorded and derived reviews.

No HTTP here (the server tests cover the wire); these pin what the guard decides and says.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from design_figures import LLAMA31_8B_MIB
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.admission.context import Guard
from webhook.admission.mutation import mutate
from webhook.admission.review import AdmissionRequest, AdmissionResponse, parse_review
from webhook.admission.validation import validate
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.policy import ClusterPolicy
from webhook.core.quantity import format_mib
from webhook.state.files import load_objects
from webhook.state.snapshot import SnapshotSource

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("OLLAMA_GUARD_FIXTURES", ROOT.parent / "shared/fixtures/kube-apiserver-1.24"))
CATALOG = load_catalog()
requires_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"recorded reviews not found at {FIXTURES}")


def recorded(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return document


def make_guard(
    *,
    namespaces: dict[str, dict[str, str]] | None = None,
    cluster: ClusterPolicy | None = None,
    extra: list[dict[str, Any]] | None = None,
) -> tuple[Guard, list[tuple[str, str, str]]]:
    cluster = cluster or load_settings().cluster_policy()
    objects = load_objects([ROOT / "examples/cluster.yaml"])
    for name, ann in (namespaces or {}).items():
        objects = [o for o in objects if not (o["kind"] == "Namespace" and o["metadata"]["name"] == name)]
        objects.append({"kind": "Namespace", "metadata": {"name": name, "annotations": ann}})
    source = SnapshotSource([*objects, *(extra or [])], cluster=cluster, catalog=CATALOG, origin="test")
    records: list[tuple[str, str, str]] = []
    guard = Guard(
        cluster=cluster,
        catalog=CATALOG,
        ledger=source.ledger,
        on_bound=source.on_bound,
        on_would_deny=lambda ns, rule, msg: records.append((ns, rule, msg)),
    )
    return guard, records


def request(review: dict[str, Any]) -> AdmissionRequest:
    return parse_review(review)


def ollama_pod_review(
    *,
    models: str = "llama3.1:8b",
    namespace: str = "team-a",
    name: str | None = None,
    env: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    node: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """A validate Pod CREATE derived from the recorded ReplicaSet pod (validate-pod-create-2)."""
    review = copy.deepcopy(recorded("validate-pod-create-2"))
    req = review["request"]
    pod = req["object"]
    req["uid"] = str(uuid.uuid4())
    name = name or f"ollama-{uuid.uuid4().hex[:5]}"
    req["name"], req["namespace"], req["dryRun"] = name, namespace, dry_run
    pod["metadata"].update(name=name, namespace=namespace, uid=str(uuid.uuid4()))
    pod["metadata"]["annotations"] = {"ollama-guard.io/models": models, **(annotations or {})}
    defaults = {
        "OLLAMA_MAX_LOADED_MODELS": "1", "OLLAMA_CONTEXT_LENGTH": "8192", "OLLAMA_NUM_PARALLEL": "1",
        "OLLAMA_FLASH_ATTENTION": "1",
    }
    # as the mutation leaves it, with a driver cap below any demand here (tests/test_driver_cap.py checks its value)
    defaults |= {"NVIDIA_GPU_MEMORY_LIMIT": "1024", "NVIDIA_GPU_MEMORY_REQUEST": "1024"}
    pod["spec"]["containers"][0]["env"] = [{"name": k, "value": v} for k, v in {**defaults, **(env or {})}.items()]
    if node:
        pod["spec"]["nodeName"] = node
    return review


def binding_review(pod_review: dict[str, Any], node: str = "gpu-h100-a", *, dry_run: bool = False) -> dict[str, Any]:
    review = copy.deepcopy(recorded("validate-binding-binding-create-2"))
    req, pod = review["request"], pod_review["request"]["object"]
    req["uid"] = str(uuid.uuid4())
    req["name"], req["namespace"], req["dryRun"] = pod["metadata"]["name"], pod["metadata"]["namespace"], dry_run
    req["object"]["metadata"].update(name=req["name"], namespace=req["namespace"], uid=pod["metadata"]["uid"])
    req["object"]["target"]["name"] = node
    return review


def estimate_of(pod: dict[str, Any]) -> dict[str, Any]:
    breakdown: dict[str, Any] = json.loads(pod["metadata"]["annotations"]["ollama-guard.io/estimate"])
    return breakdown


def apply(review: dict[str, Any], response: AdmissionResponse) -> dict[str, Any]:
    patched: dict[str, Any] = jsonpatch.apply_patch(review["request"]["object"], list(response.patch))
    return patched


# --------------------------------------------------------------------------- mutate


@requires_fixtures
def test_mutate_recorded_replicaset_pod_injects_settings_and_stamps() -> None:
    guard, _ = make_guard()
    review = recorded("mutate-pod-create-2")
    response = mutate(request(review), guard)
    assert response.allowed
    paths = [op["path"] for op in response.patch]
    assert paths.count("/spec/containers/0/env/-") == 6  # four settings, the driver cap's two variables
    assert "/metadata/annotations/ollama-guard.io~1vram-demand" in paths
    assert "/metadata/annotations/ollama-guard.io~1estimate" in paths
    pod = apply(review, response)
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env == {
        "OLLAMA_HOST": "0.0.0.0:11434",
        "OLLAMA_MAX_LOADED_MODELS": "1",
        "OLLAMA_CONTEXT_LENGTH": "8192",
        "OLLAMA_NUM_PARALLEL": "1",
        "OLLAMA_FLASH_ATTENTION": "1",
        "NVIDIA_GPU_MEMORY_LIMIT": str(estimate_of(pod)["demandMiB"]),
        "NVIDIA_GPU_MEMORY_REQUEST": str(estimate_of(pod)["demandMiB"]),
    }
    estimate = estimate_of(pod)
    assert estimate["source"] == "estimate" and estimate["perModel"][0]["tag"] == "llama3.1:8b"
    assert pod["metadata"]["annotations"]["ollama-guard.io/vram-demand"] == str(estimate["demandMiB"])
    again = copy.deepcopy(review)
    again["request"]["object"] = pod
    assert mutate(request(again), guard).patch == ()


@requires_fixtures
def test_mutate_injects_gpu_request_when_none_and_respects_existing_values() -> None:
    guard, _ = make_guard(namespaces={"team-a": {"ollama-guard.io/context-length": "4096"}})
    review = copy.deepcopy(recorded("mutate-pod-create-2"))
    container = review["request"]["object"]["spec"]["containers"][0]
    del container["resources"]
    container["env"].append({"name": "OLLAMA_NUM_PARALLEL", "value": "2"})
    response = mutate(request(review), guard)
    assert [op["path"] for op in response.patch].count("/spec/containers/0/resources") == 1
    pod = apply(review, response)
    c = pod["spec"]["containers"][0]
    demand = pod["metadata"]["annotations"]["ollama-guard.io/vram-demand"]
    # the GPU and the VRAM resource request (design §8) arrive together, in one `add /resources`
    wanted = {"nvidia.com/gpu": "1", "ollama-guard.io/vram-mib": demand}
    assert c["resources"] == {"limits": wanted, "requests": wanted}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["OLLAMA_NUM_PARALLEL"] == "2" and env["OLLAMA_CONTEXT_LENGTH"] == "4096"


@requires_fixtures
@pytest.mark.parametrize(
    ("policy", "env", "injected", "flash"),
    [
        pytest.param(True, None, "1", True, id="absent-gets-it-and-the-estimate-counts-it"),
        pytest.param(True, "0", "0", False, id="the-authors-off-is-kept-and-estimated-off"),
        pytest.param(False, None, None, False, id="policy-off-injects-nothing-estimates-off"),
    ],
)
def test_mutate_injects_flash_attention_the_estimate_relies_on(
    policy: bool, env: str | None, injected: str | None, flash: bool
) -> None:
    """Design §5.1: the guard counts flash attention only where it is certain, so it sets it."""
    guard, _ = make_guard(cluster=load_settings(flash_attention=policy).cluster_policy())
    review = copy.deepcopy(recorded("mutate-pod-create-2"))
    if env is not None:
        review["request"]["object"]["spec"]["containers"][0]["env"].append(
            {"name": "OLLAMA_FLASH_ATTENTION", "value": env}
        )
    pod = apply(review, mutate(request(review), guard))
    got = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}.get("OLLAMA_FLASH_ATTENTION")
    assert got == injected
    assert [m["flashAttention"] for m in estimate_of(pod)["perModel"]] == [flash]


@requires_fixtures
def test_mutate_cpu_only_ollama_gets_visible_devices_void_when_gpu_not_required() -> None:
    cluster = ClusterPolicy(ollama_requires_gpu=False)
    guard, _ = make_guard(cluster=cluster)
    review = copy.deepcopy(recorded("mutate-pod-create-2"))
    del review["request"]["object"]["spec"]["containers"][0]["resources"]
    pod = apply(review, mutate(request(review), guard))
    c = pod["spec"]["containers"][0]
    assert "resources" not in c
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in c["env"]


@requires_fixtures
def test_mutate_overwrites_a_user_supplied_demand() -> None:
    guard, _ = make_guard()
    review = copy.deepcopy(recorded("mutate-pod-create-2"))
    review["request"]["object"]["metadata"]["annotations"]["ollama-guard.io/vram-demand"] = "1"
    pod = apply(review, mutate(request(review), guard))
    assert pod["metadata"]["annotations"]["ollama-guard.io/vram-demand"] != "1"


@pytest.mark.parametrize(
    ("fixture", "namespace_annotations"),
    [
        pytest.param("mutate-binding-binding-create-1", None, id="binding"),
        pytest.param("mutate-deployment-create-1", None, id="deployment"),
        pytest.param("mutate-namespace-update-1", None, id="namespace"),
        pytest.param("mutate-pod-create-2", {"ollama-guard.io/enforcement": "off"}, id="enforcement-off"),
    ],
)
@requires_fixtures
def test_mutate_leaves_other_requests_alone(fixture: str, namespace_annotations: dict[str, str] | None) -> None:
    guard, _ = make_guard(namespaces={"team-a": namespace_annotations} if namespace_annotations else None)
    response = mutate(request(recorded(fixture)), guard)
    assert response.allowed and response.patch == ()


env_names = st.sampled_from(["OLLAMA_MAX_LOADED_MODELS", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_NUM_PARALLEL", "OTHER"])
containers = st.fixed_dictionaries(
    {
        "name": st.text("abcdefgh", min_size=1, max_size=6),
        "image": st.sampled_from(["ollama/ollama:0.6.8", "docker.io/ollama/ollama", "busybox", "vllm/vllm-openai"]),
    },
    optional={
        "env": st.lists(
            st.fixed_dictionaries({"name": env_names, "value": st.sampled_from(["1", "2", "4096"])}), max_size=4
        ),
        "resources": st.fixed_dictionaries(
            {},
            optional={
                "limits": st.dictionaries(
                    st.sampled_from(["nvidia.com/gpu", "cpu", "memory"]), st.sampled_from(["1", "2"])
                ),
                "requests": st.dictionaries(st.sampled_from(["nvidia.com/gpu", "cpu"]), st.sampled_from(["1"])),
            },
        ),
    },
)
annotations = st.dictionaries(
    st.sampled_from(
        [
            "ollama-guard.io/models",
            "ollama-guard.io/vram-demand",
            "ollama-guard.io/estimate",
            "ollama-guard.io/vram",
            "a/b~c",
            "note",
        ]
    ),
    st.sampled_from(["llama3.1:8b", "qwen2.5:7b, gemma2:2b", "12", "24Gi", "{}", "x"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cs=st.lists(containers, min_size=1, max_size=3),
    ann=st.one_of(st.none(), annotations),
    labels=st.one_of(st.none(), st.just({"app.kubernetes.io/name": "ollama"})),
)
def test_mutation_is_valid_json_patch_and_idempotent_on_generated_pods(
    cs: list[dict[str, Any]], ann: dict[str, str] | None, labels: dict[str, str] | None
) -> None:
    guard, _ = make_guard_cached()
    meta: dict[str, Any] = {"generateName": "gen-", "namespace": "team-a"}
    if ann is not None:
        meta["annotations"] = ann
    if labels is not None:
        meta["labels"] = labels
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": cs}},
        },
    }
    first = mutate(request(review), guard)
    assert first.allowed
    patched = apply(review, first)  # raises if any op is invalid for this document
    again = copy.deepcopy(review)
    again["request"]["object"] = patched
    assert mutate(request(again), guard).patch == ()
    for op in first.patch:  # never replaces a whole list
        assert not (op["op"] == "replace" and isinstance(op.get("value"), list))


_CACHED: list[tuple[Guard, list[tuple[str, str, str]]]] = []


def make_guard_cached() -> tuple[Guard, list[tuple[str, str, str]]]:
    if not _CACHED:
        _CACHED.append(make_guard())
    return _CACHED[0]


# --------------------------------------------------------------------------- validate: pods


@requires_fixtures
def test_recorded_pod_fits_the_bundled_node() -> None:
    guard, _ = make_guard()
    response = validate(request(ollama_pod_review()), guard)
    assert response.allowed and response.code is None


@requires_fixtures
def test_recorded_unmutated_pod_is_allowed_with_an_advisory() -> None:
    guard, _ = make_guard()
    response = validate(request(recorded("validate-pod-create-2")), guard)
    assert response.allowed
    assert any("not set" in w for w in response.warnings)


HUGE = {"models": "llama3.1:70b", "env": {"OLLAMA_CONTEXT_LENGTH": "131072", "OLLAMA_NUM_PARALLEL": "4"}}
OPEN_CAPS = {"ollama-guard.io/context-length": "131072", "ollama-guard.io/num-parallel": "4"}


@requires_fixtures
def test_pod_over_capacity_is_denied_with_an_actionable_message() -> None:
    guard, _ = make_guard(namespaces={"team-a": OPEN_CAPS})
    response = validate(request(ollama_pod_review(**HUGE)), guard)  # type: ignore[arg-type]
    assert not response.allowed and response.code == 403
    msg = response.message
    assert "denied by ollama-guard" in msg and "llama3.1:70b" in msg and "gpu-h100-a" in msg
    assert "free of" in msg and "Fix:" in msg and "context 131072" in msg


@pytest.mark.parametrize(
    ("mode", "allowed", "warned", "recorded_"),
    [
        pytest.param("enforce", False, False, False, id="enforce"),
        pytest.param("warn", True, True, False, id="warn"),
        pytest.param("audit", True, False, True, id="audit"),
        pytest.param("off", True, False, False, id="off"),
    ],
)
@requires_fixtures
def test_enforcement_modes(mode: str, allowed: bool, warned: bool, recorded_: bool) -> None:
    guard, records = make_guard(namespaces={"team-a": {**OPEN_CAPS, "ollama-guard.io/enforcement": mode}})
    response = validate(request(ollama_pod_review(**HUGE)), guard)  # type: ignore[arg-type]
    assert response.allowed is allowed
    assert bool(response.warnings) is warned
    assert all(len(w) <= 120 for w in response.warnings) and len(response.warnings) <= 4
    assert bool(records) is recorded_
    if recorded_:
        assert records[0][:2] == ("team-a", "capacity")
        assert "ollama-guard.io/would-deny" in dict(response.audit_annotations)


@pytest.mark.parametrize(
    ("namespace_annotations", "pod", "code", "needles"),
    [
        pytest.param(
            {"ollama-guard.io/enforcement": "maybe"},
            {},
            400,
            ["ollama-guard.io/enforcement", "enforce, warn, audit, off"],
            id="bad-namespace-annotation",
        ),
        pytest.param(
            {"ollama-guard.io/enforcement": "warn", "ollama-guard.io/vram-quota": "lots"},
            {},
            400,
            ["ollama-guard.io/vram-quota"],
            id="bad-annotation-denies-even-in-warn",
        ),
        pytest.param(
            {},
            {"models": "myorg/custom:latest"},
            400,
            ["myorg/custom:latest", "ollama-guard.io/vram"],
            id="unknown-model",
        ),
        pytest.param(
            {},
            {"env": {"OLLAMA_CONTEXT_LENGTH": "32768"}},
            403,
            ["OLLAMA_CONTEXT_LENGTH=32768", "cap of 8192"],
            id="context-over-cap",
        ),
        pytest.param(
            {"ollama-guard.io/allowed-models": "qwen2.5:*"},
            {},
            403,
            ["llama3.1:8b not allowed", "qwen2.5:*"],
            id="model-not-allowed",
        ),
        pytest.param({"ollama-guard.io/vram-quota": "4Gi"}, {}, 403, ["quota", "4.0 GiB"], id="quota"),
        pytest.param({}, {"annotations": {"ollama-guard.io/vram": "-1Gi"}}, 400, ["negative"], id="negative-vram"),
        pytest.param(
            {}, {"annotations": {"ollama-guard.io/vram-demand": "5"}}, 403, ["written by the guard"], id="forged-demand"
        ),
    ],
)
@requires_fixtures
def test_pod_denials(namespace_annotations: dict[str, str], pod: dict[str, Any], code: int, needles: list[str]) -> None:
    guard, _ = make_guard(namespaces={"team-a": namespace_annotations})
    response = validate(request(ollama_pod_review(**pod)), guard)
    assert not response.allowed and response.code == code
    for needle in needles:
        assert needle in response.message


@requires_fixtures
def test_unknown_model_with_declared_vram_is_counted_as_declared() -> None:
    guard, _ = make_guard()
    review = ollama_pod_review(models="myorg/custom:latest", annotations={"ollama-guard.io/vram": "90Gi"})
    response = validate(request(review), guard)
    assert not response.allowed and "90.0 GiB" in response.message


@requires_fixtures
def test_pod_that_can_land_on_an_unguarded_gpu_node_is_not_held_back() -> None:
    plain_gpu = {
        "kind": "Node",
        "metadata": {"name": "gpu-plain", "labels": {"nvidia.com/gpu.memory": "24576"}},
        "status": {"allocatable": {"nvidia.com/gpu": "1"}},
    }
    guard, _ = make_guard(namespaces={"team-a": OPEN_CAPS}, extra=[plain_gpu])
    assert validate(request(ollama_pod_review(**HUGE)), guard).allowed  # type: ignore[arg-type]


@requires_fixtures
def test_pinned_pod_is_checked_against_its_node() -> None:
    guard, _ = make_guard(namespaces={"team-a": OPEN_CAPS})
    response = validate(request(ollama_pod_review(**HUGE, node="gpu-h100-a")), guard)  # type: ignore[arg-type]
    assert not response.allowed and "node gpu-h100-a" in response.message


# --------------------------------------------------------------------------- validate: bindings


@requires_fixtures
def test_bindings_fill_the_node_until_denied() -> None:
    """Nine pods created at once (each fits the node as it is now); the scheduler binds them in turn."""
    guard, _ = make_guard()
    node = guard.ledger.view.nodes["gpu-h100-a"]
    free = node.budget_mib - guard.ledger.committed("gpu-h100-a")
    pods = [ollama_pod_review() for _ in range(9)]
    assert all(validate(request(p), guard).allowed for p in pods)
    answers = [validate(request(binding_review(p)), guard) for p in pods]
    demand = guard.ledger.find_tenant(f"team-a/{pods[0]['request']['name']}").demand_mib  # type: ignore[union-attr]
    fits = free // demand  # exactly floor(free / demand) are admitted
    assert fits == 7 and [a.allowed for a in answers] == [True] * fits + [False] * (len(pods) - fits)
    assert guard.ledger.committed("gpu-h100-a") <= node.budget_mib
    denial = answers[fits].message
    assert "binding to gpu-h100-a would over-commit" in denial and "free of" in denial
    assert f"{demand / 1024:.1f} GiB for llama3.1:8b" in denial
    # once the node is full, a new pod is already refused at creation, naming the free VRAM
    late = validate(request(ollama_pod_review()), guard)
    assert not late.allowed and "gpu-h100-a:" in late.message


@requires_fixtures
def test_dry_run_binding_reserves_nothing() -> None:
    guard, _ = make_guard()
    pod = ollama_pod_review()
    validate(request(pod), guard)
    before = guard.ledger.committed("gpu-h100-a")
    assert validate(request(binding_review(pod, dry_run=True)), guard).allowed
    assert guard.ledger.committed("gpu-h100-a") == before


@requires_fixtures
def test_binding_of_an_unknown_pod_or_to_an_unguarded_node_is_allowed() -> None:
    guard, _ = make_guard()
    assert validate(request(recorded("validate-binding-binding-create-3")), guard).allowed
    pod = ollama_pod_review()
    validate(request(pod), guard)
    assert validate(request(binding_review(pod, node="cpu-a")), guard).allowed


# --------------------------------------------------------------------------- validate: namespaces


@requires_fixtures
def test_policy_admin_may_change_guard_annotations() -> None:
    guard, _ = make_guard()
    assert validate(request(recorded("validate-namespace-update-1")), guard).allowed


@pytest.mark.parametrize(
    ("user", "groups", "allowed"),
    [
        pytest.param("alice", ["team-a-admins", "system:authenticated"], False, id="tenant"),
        pytest.param("system:serviceaccount:team-a:ci", ["system:serviceaccounts"], False, id="service-account"),
        pytest.param("admin", ["system:masters"], True, id="admin"),
    ],
)
@requires_fixtures
def test_tenant_cannot_lift_its_own_enforcement(user: str, groups: list[str], allowed: bool) -> None:
    guard, _ = make_guard()
    review = copy.deepcopy(recorded("validate-namespace-update-1"))
    review["request"]["userInfo"] = {"username": user, "groups": groups}
    response = validate(request(review), guard)
    assert response.allowed is allowed
    if not allowed:
        assert response.code == 403
        assert "ollama-guard.io/enforcement" in response.message and "group system:masters" in response.message


@requires_fixtures
def test_tenant_may_change_other_namespace_annotations() -> None:
    guard, _ = make_guard()
    review = copy.deepcopy(recorded("validate-namespace-update-1"))
    req = review["request"]
    req["userInfo"] = {"username": "alice", "groups": ["system:authenticated"]}
    req["object"]["metadata"]["annotations"] = {**(req["oldObject"]["metadata"].get("annotations") or {}), "team": "x"}
    assert validate(request(review), guard).allowed


# --------------------------------------------------------------------------- validate: workloads and scale


def deployment_review(
    replicas: int, *, models: str = "llama3.1:8b", old_replicas: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    review = copy.deepcopy(recorded("validate-deployment-create-1"))
    req = review["request"]
    req["uid"], req["dryRun"] = str(uuid.uuid4()), dry_run
    req["object"]["spec"]["replicas"] = replicas
    req["object"]["spec"]["template"]["metadata"].setdefault("annotations", {})["ollama-guard.io/models"] = models
    if old_replicas is not None:
        req["operation"] = "UPDATE"
        req["oldObject"] = copy.deepcopy(req["object"])
        req["oldObject"]["spec"]["replicas"] = old_replicas
    return review


@requires_fixtures
@pytest.mark.parametrize(
    ("fixture", "allowed"),
    [
        pytest.param("validate-deployment-create-1", True, id="deployment-create"),
        pytest.param("validate-deployment-create-dryrun-1", True, id="deployment-dry-run"),
        pytest.param("validate-deployment-update-1", True, id="deployment-update"),
        pytest.param("validate-cronjob-create-1", True, id="cronjob"),
    ],
)
def test_recorded_workloads(fixture: str, allowed: bool) -> None:
    guard, _ = make_guard()
    assert validate(request(recorded(fixture)), guard).allowed is allowed


@requires_fixtures
def test_deployment_whose_replicas_cannot_fit_is_denied_at_apply() -> None:
    guard, _ = make_guard()
    response = validate(request(deployment_review(10)), guard)
    assert not response.allowed
    assert "10 replicas" in response.message and "hold 7 more right now" in response.message
    assert "gpu-h100-a can hold 7 more" in response.message


@requires_fixtures
def test_scale_down_is_never_denied_and_scale_up_is_checked_by_increment() -> None:
    guard, _ = make_guard()
    assert validate(request(deployment_review(3, old_replicas=20)), guard).allowed
    assert validate(request(deployment_review(8, old_replicas=4)), guard).allowed  # 4 more fit
    assert not validate(request(deployment_review(12, old_replicas=4)), guard).allowed


@requires_fixtures
def test_scale_subresource_uses_the_known_template() -> None:
    guard, _ = make_guard()
    scale = copy.deepcopy(recorded("validate-scale-scale-update-1"))
    unknown = validate(request(scale), guard)
    assert unknown.allowed and any("not checked" in w for w in unknown.warnings)
    assert validate(request(deployment_review(1)), guard).allowed  # the guard now knows the template
    scale["request"]["object"]["spec"]["replicas"] = 40
    denied = validate(request(scale), guard)
    assert not denied.allowed and "scaling deployment team-a/ollama to 40" in denied.message


@requires_fixtures
def test_dry_run_deployment_is_answered_the_same_but_not_remembered() -> None:
    guard, _ = make_guard()
    assert not validate(request(deployment_review(10, dry_run=True)), guard).allowed
    assert validate(request(deployment_review(1, dry_run=True)), guard).allowed
    assert guard.templates.get("Deployment", "team-a", "ollama") is None


def workload_review(kind: str, spec: dict[str, Any], *, api: str = "apps/v1") -> dict[str, Any]:
    """A workload CREATE derived from the recorded Deployment review, re-shaped to `kind`."""
    review = copy.deepcopy(recorded("validate-deployment-create-1"))
    req = review["request"]
    template = req["object"]["spec"]["template"]
    template["metadata"].setdefault("annotations", {})["ollama-guard.io/models"] = "llama3.1:70b"
    group, _, version = api.rpartition("/")
    req["uid"] = str(uuid.uuid4())
    req["kind"] = {"group": group, "version": version, "kind": kind}
    req["resource"] = {"group": group, "version": version, "resource": kind.lower() + "s"}
    body = {**spec}
    if kind == "CronJob":
        body = {"schedule": "0 * * * *", "jobTemplate": {"spec": {**spec, "template": template}}}
    else:
        body["template"] = template
    req["object"] = {"apiVersion": api, "kind": kind, "metadata": {"name": "w", "namespace": "team-a"}, "spec": body}
    return review


@requires_fixtures
@pytest.mark.parametrize(
    ("kind", "spec", "api", "allowed"),
    [
        pytest.param("StatefulSet", {"replicas": 1}, "apps/v1", True, id="statefulset-1"),
        pytest.param("StatefulSet", {"replicas": 3}, "apps/v1", False, id="statefulset-3"),
        pytest.param("ReplicaSet", {"replicas": 2}, "apps/v1", False, id="replicaset-2"),
        pytest.param("DaemonSet", {}, "apps/v1", True, id="daemonset-one-per-node"),
        pytest.param("Job", {"parallelism": 1}, "batch/v1", True, id="job-1"),
        pytest.param("Job", {"parallelism": 2}, "batch/v1", False, id="job-parallel-2"),
        pytest.param("CronJob", {"parallelism": 2}, "batch/v1", False, id="cronjob-parallel-2"),
        pytest.param("ReplicationController", {"replicas": 2}, "v1", False, id="rc-2"),
    ],
)
def test_workload_kinds_count_their_copies(kind: str, spec: dict[str, Any], api: str, allowed: bool) -> None:
    """llama3.1:70b (47.6 GiB at the default context) fits the bundled node's 50.7 GiB free once, not twice."""
    guard, _ = make_guard()
    response = validate(request(workload_review(kind, spec, api=api)), guard)
    assert response.allowed is allowed, response.message
    if not allowed:
        assert f"{kind.lower()} team-a/w denied" in response.message and "more right now:" in response.message


@requires_fixtures
def test_dry_run_in_audit_mode_records_nothing() -> None:
    guard, records = make_guard(namespaces={"team-a": {**OPEN_CAPS, "ollama-guard.io/enforcement": "audit"}})
    dry = validate(request(ollama_pod_review(**HUGE, dry_run=True)), guard)  # type: ignore[arg-type]
    assert dry.allowed and records == []
    real = validate(request(ollama_pod_review(**HUGE)), guard)  # type: ignore[arg-type]
    assert real.allowed and [r[1] for r in records] == ["capacity"]


@requires_fixtures
def test_daemonset_is_denied_when_any_candidate_node_lacks_room() -> None:
    """Spare VRAM on one node does not help a daemon pod that must run on another."""
    roomy = {
        "kind": "Node",
        "metadata": {
            "name": "gpu-h100-b",
            "labels": {
                "nvidia.com/gpu.memory": "81559",
                "nvidia.com/gpu.count": "1",
                "nvidia.com/gpu.replicas": "4",
                "nvidia.com/gpu.sharing-strategy": "time-slicing",
            },
        },
        "status": {"allocatable": {"nvidia.com/gpu": "4"}},
    }
    guard, _ = make_guard(extra=[roomy])
    review = workload_review("DaemonSet", {})
    review["request"]["object"]["spec"]["template"]["metadata"]["annotations"]["ollama-guard.io/models"] = "qwen2.5:72b"
    response = validate(request(review), guard)
    assert not response.allowed
    assert "1 of 2 time-sliced nodes cannot hold it" in response.message and "gpu-h100-a" in response.message


def test_stamped_tenant_keeps_its_models() -> None:
    stamped = {
        "kind": "Pod",
        "metadata": {
            "name": "stamped",
            "namespace": "team-a",
            "uid": "u-1",
            "annotations": {
                "ollama-guard.io/models": "llama3.1:8b",
                "ollama-guard.io/vram-demand": "7949",
                "ollama-guard.io/estimate": '{"v":1}',
            },
        },
        "spec": {
            "nodeName": "gpu-h100-a",
            "containers": [{"name": "o", "image": "ollama/ollama", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Running"},
    }
    guard, _ = make_guard(extra=[stamped])
    tenant = guard.ledger.view.tenants["team-a/stamped"]
    assert (tenant.models, tenant.demand_mib, tenant.source) == (("llama3.1:8b",), 7949, "annotation")


@requires_fixtures
def test_binding_after_mutate_only_still_reserves() -> None:
    """`kubectl run` names the pod: the mutating call alone lets the binding find it."""
    guard, _ = make_guard()
    review = copy.deepcopy(recorded("mutate-pod-create-1"))
    review["request"]["object"]["metadata"]["annotations"] = {"ollama-guard.io/models": "qwen2.5:7b"}
    assert mutate(request(review), guard).allowed
    before = guard.ledger.committed("gpu-h100-a")
    assert validate(request(recorded("validate-binding-binding-create-1")), guard).allowed
    assert guard.ledger.committed("gpu-h100-a") > before


def helm_deployment_review(replicas: int) -> dict[str, Any]:
    """`kubectl apply` of the Helm-rendered Ollama Deployment (postStart pull script, no annotation)."""
    objects = load_objects([ROOT / "examples/manifests/01-ollama-helm.yaml"])
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["replicas"] = replicas
    review = copy.deepcopy(recorded("validate-deployment-create-1"))
    review["request"]["uid"] = str(uuid.uuid4())
    review["request"]["object"] = deployment
    return review


@requires_fixtures
@pytest.mark.parametrize(
    ("mode", "allowed", "warned", "audited"),
    [
        pytest.param("enforce", False, False, False, id="enforce"),
        pytest.param("warn", True, True, False, id="warn"),
        pytest.param("audit", True, False, True, id="audit"),
        pytest.param("off", True, False, False, id="off"),
    ],
)
def test_helm_rendered_deployment_in_each_mode(mode: str, allowed: bool, warned: bool, audited: bool) -> None:
    guard, records = make_guard(namespaces={"team-a": {"ollama-guard.io/enforcement": mode}})
    response = validate(request(helm_deployment_review(12)), guard)
    assert response.allowed is allowed
    assert bool(response.warnings) is warned
    assert len(response.warnings) <= 4 and all(len(w) <= 120 for w in response.warnings)
    assert bool(records) is audited
    if not allowed:
        assert "deployment team-a/ollama denied" in response.message
        assert "llama3.1:8b" in response.message  # discovered from the postStart script
    if warned:
        assert response.warnings[0].startswith("would deny: needs")
    assert validate(request(helm_deployment_review(1)), guard).allowed  # one replica fits in every mode


QUOTA_FOR_TWO = f"{LLAMA31_8B_MIB * 5 // 2}Mi"
TWO_IN_USE = f"{format_mib(2 * LLAMA31_8B_MIB)} in use"


@requires_fixtures
def test_bound_pods_count_against_the_quota_in_snapshot_mode() -> None:
    """Two llama3.1:8b pods fit a quota of two and a half, the third does not."""
    guard, _ = make_guard(namespaces={"team-a": {"ollama-guard.io/vram-quota": QUOTA_FOR_TWO}})
    for _ in range(2):
        pod = ollama_pod_review()
        assert validate(request(pod), guard).allowed
        assert validate(request(binding_review(pod)), guard).allowed
    third = validate(request(ollama_pod_review()), guard)
    assert not third.allowed and "quota" in third.message and TWO_IN_USE in third.message


@requires_fixtures
def test_pods_admitted_but_not_yet_bound_count_against_the_quota() -> None:
    """A burst: pods validated one after another before the scheduler binds any of them."""
    guard, _ = make_guard(namespaces={"team-a": {"ollama-guard.io/vram-quota": QUOTA_FOR_TWO}})
    first, second = ollama_pod_review(), ollama_pod_review()
    assert validate(request(first), guard).allowed
    assert validate(request(first), guard).allowed  # the same pod judged again does not count twice
    assert validate(request(second), guard).allowed
    third = validate(request(ollama_pod_review()), guard)
    assert not third.allowed and "quota" in third.message and TWO_IN_USE in third.message
    assert validate(request(binding_review(first)), guard).allowed  # bound: counted once, not twice
    assert TWO_IN_USE in validate(request(ollama_pod_review()), guard).message


@requires_fixtures
@pytest.mark.parametrize(
    ("groups", "annotations", "allowed"),
    [
        pytest.param(["system:authenticated"], {"ollama-guard.io/enforcement": "off"}, False, id="tenant-sets-policy"),
        pytest.param(["system:authenticated"], {"team": "a"}, True, id="tenant-plain-annotations"),
        pytest.param(["system:masters"], {"ollama-guard.io/vram-quota": "40Gi"}, True, id="admin-sets-policy"),
    ],
)
def test_namespace_create_with_policy_annotations(
    groups: list[str], annotations: dict[str, str], allowed: bool
) -> None:
    guard, _ = make_guard()
    review = copy.deepcopy(recorded("validate-namespace-create-1"))
    review["request"]["userInfo"] = {"username": "someone", "groups": groups}
    review["request"]["object"]["metadata"]["annotations"] = annotations
    response = validate(request(review), guard)
    assert response.allowed is allowed
    if not allowed:
        assert "may not add, change or remove" in response.message and "ollama-guard.io/enforcement" in response.message
