"""Every patch the mutating webhook returns, applied with `jsonpatch` to the object it was computed
for, yields a Pod that the Kubernetes schema accepts (`kubernetes_validate`, strict), that keeps
extended-resource and env rules, and that a second /mutate leaves alone (design §8). Every GPU
tenant also gets its demand as the `ollama-guard.io/vram-mib` resource request (design §14) on the
container that holds the GPU; the other changes to its resources are checked with that one removed.

Pods are the recorded kube-apiserver reviews and variants of them: written like Helm-rendered
Ollama deployments (otwld/ollama-helm's postStart pull script, new and old forms), without env,
resources or annotations, with several containers, with an init container, with
`ollama_requires_gpu` off, and with a user-supplied guard annotation.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from conftest import GuardServer, variant

from webhook.cli.settings import load_settings

KUBE_VERSION = kubernetes_validate.latest_version()
GPU = "nvidia.com/gpu"
GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/gpu.shared")
ANN_DEMAND = "ollama-guard.io/vram-demand"
ANN_ESTIMATE = "ollama-guard.io/estimate"
ANN_MODELS = "ollama-guard.io/models"
VRAM = "ollama-guard.io/vram-mib"
DEFAULT_ENV = {
    "OLLAMA_MAX_LOADED_MODELS": "1", "OLLAMA_CONTEXT_LENGTH": "8192", "OLLAMA_NUM_PARALLEL": "1",
    "OLLAMA_FLASH_ATTENTION": "1",
}
Edit = Callable[[dict[str, Any]], None]


# --- pod edits: how real manifests differ from the recorded one -------------------------------------


def helm_pull_script(*models: str, insecure: bool = False, run: tuple[str, ...] = ()) -> str:
    """otwld/ollama-helm >= 1.x: wait for the server, then one `/bin/ollama pull` line per model."""
    flag = "--insecure" if insecure else ""  # the chart renders `{{ternary "--insecure" "" ...}}`
    lines = ["while ! /bin/ollama ps > /dev/null 2>&1; do", "  sleep 5", "done"]
    lines += [f"/bin/ollama pull {flag} {m}" for m in models]
    lines += [f"/bin/ollama run {m}" for m in run]
    return "\n".join(lines) + "\n"


def helm_xargs_script(*models: str) -> str:
    """otwld/ollama-helm 0.x: `echo "m1 m2" | xargs -n1 /bin/ollama pull` (note the trailing space)."""
    joined = " ".join(models)
    return (
        f'while ! /bin/ollama ps > /dev/null 2>&1; do\n  sleep 5\ndone\necho "{joined}" | xargs -n1 /bin/ollama pull \n'
    )


def _probe(initial_delay: int, period: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/", "port": "http", "scheme": "HTTP"},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "successThreshold": 1,
        "failureThreshold": 6,
    }


def helm_rendered(script: str, *, gpu: bool = True) -> Edit:
    """The pod the chart's ReplicaSet creates, as kube-apiserver sends it (nulls and empty maps dropped)."""

    def edit(pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        meta["generateName"] = "ollama-6b8f9c7d54-"
        meta["labels"] = {
            "app.kubernetes.io/instance": "ollama",
            "app.kubernetes.io/managed-by": "Helm",
            "app.kubernetes.io/name": "ollama",
            "app.kubernetes.io/version": "0.6.8",
            "helm.sh/chart": "ollama-1.24.0",
            "pod-template-hash": "6b8f9c7d54",
        }
        meta.pop("annotations", None)  # podAnnotations is empty by default
        spec = pod["spec"]
        container = spec["containers"][0]
        container["ports"] = [{"name": "http", "containerPort": 11434, "protocol": "TCP"}]
        container["livenessProbe"] = _probe(60, 10, 5)
        container["readinessProbe"] = _probe(30, 5, 3)
        container["securityContext"] = {}
        container["volumeMounts"].append({"name": "ollama-data", "mountPath": "/root/.ollama"})
        container["lifecycle"] = {"postStart": {"exec": {"command": ["/bin/sh", "-c", script]}}}
        if gpu:
            container["env"] = [
                {
                    "name": "PATH",
                    "value": "/usr/local/nvidia/bin:/usr/local/nvidia/lib64:/usr/bin:/usr/sbin:/bin:/sbin",
                },
                {"name": "LD_LIBRARY_PATH", "value": "/usr/local/nvidia/lib64"},
                {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"},
            ]
            spec["runtimeClassName"] = "nvidia"
            spec["tolerations"].append({"key": GPU, "operator": "Exists", "effect": "NoSchedule"})
        else:
            container.pop("env", None)
            container["resources"] = {}
        spec["volumes"].append({"name": "ollama-data", "emptyDir": {}})
        spec["serviceAccountName"] = spec["serviceAccount"] = "ollama"

    return edit


def chain(*edits: Edit) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        for step in edits:
            step(pod)

    return edit


def drop(*path: str) -> Edit:
    """Remove one key, e.g. drop("spec", "containers", "0", "env")."""

    def edit(pod: dict[str, Any]) -> None:
        node: Any = pod
        for key in path[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node.pop(path[-1], None)

    return edit


def annotate(values: dict[str, str]) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        pod["metadata"].setdefault("annotations", {}).update(values)

    return edit


def set_env(index: int, **values: str | dict[str, Any]) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        env = pod["spec"]["containers"][index].setdefault("env", [])
        for name, value in values.items():
            env.append(
                {"name": name, "valueFrom": value} if isinstance(value, dict) else {"name": name, "value": value}
            )

    return edit


def set_resources(index: int, resources: dict[str, Any]) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][index]["resources"] = copy.deepcopy(resources)

    return edit


def set_image(index: int, image: str) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][index]["image"] = image

    return edit


def add_container(container: dict[str, Any], *, at: int | None = None, init: bool = False) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        field = "initContainers" if init else "containers"
        items = pod["spec"].setdefault(field, [])
        items.insert(len(items) if at is None else at, copy.deepcopy(container))

    return edit


SIDECAR = {
    "name": "exporter",
    "image": "ghcr.io/example/ollama-exporter:0.3",
    "ports": [{"containerPort": 9100, "protocol": "TCP"}],
    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "imagePullPolicy": "IfNotPresent",
}
EMBED = {
    "name": "ollama-embed",
    "image": "docker.io/ollama/ollama:0.6.8",
    "env": [{"name": "OLLAMA_HOST", "value": "0.0.0.0:11435"}],
    "resources": {},
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "imagePullPolicy": "IfNotPresent",
}
PULL_INIT = {
    "name": "pull-models",
    "image": "ollama/ollama:0.6.8",
    "command": ["sh", "-c", "ollama serve & sleep 2 && ollama pull llama3.2:3b"],
    "resources": {},
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "imagePullPolicy": "IfNotPresent",
}
NO_GPU = set_resources(0, {})
DIGEST = "sha256:" + "0123456789abcdef" * 4


# --- the table ------------------------------------------------------------------------------------------


def case(
    id: str,
    base: str = "mutate-pod-create-2.json",
    edit: Edit | None = None,
    *,
    env: dict[str, dict[str, str]] | None = None,
    gpu: dict[str, str] | None = None,
    untouched: tuple[str, ...] = (),
    models: tuple[list[str], str] | None = None,
    demand: bool = True,
    settings: dict[str, Any] | None = None,
    namespace: str | None = None,
    vram: str | None = "ollama",
) -> Any:
    """One variant: how to derive it, and what the patched pod must hold (by container name).

    `vram`: the container that must request `ollama-guard.io/vram-mib` (None: no container does).
    """
    expect = {
        "env": env if env is not None else {"ollama": DEFAULT_ENV},
        "gpu": gpu or {},
        "untouched": untouched,
        "models": models,
        "demand": demand,
        "vram": vram,
    }
    return pytest.param(base, edit, settings or {}, namespace, expect, id=id)


CASES = [
    case(
        "recorded-pod-1-kubectl-run",
        "mutate-pod-create-1.json",
        env={"ollama-single": DEFAULT_ENV},
        demand=False,
        vram="ollama-single",
    ),
    case("recorded-pod-2", models=(["llama3.1:8b"], "annotation")),
    case("recorded-pod-3", "mutate-pod-create-3.json", models=(["llama3.1:8b"], "annotation")),
    case("recorded-pod-4", "mutate-pod-create-4.json", models=(["llama3.1:8b"], "annotation")),
    case(
        "helm-pull-lines",
        edit=helm_rendered(helm_pull_script("llama3.1:8b", "qwen2.5:7b")),
        models=(["llama3.1:8b", "qwen2.5:7b"], "discovered"),
    ),
    case(
        "helm-pull-insecure",
        edit=helm_rendered(helm_pull_script("qwen2.5:14b", insecure=True)),
        models=(["qwen2.5:14b"], "discovered"),
    ),
    case(
        "helm-pull-and-run",
        edit=helm_rendered(helm_pull_script("llama3.2:3b", run=("llama3.2:1b",))),
        models=(["llama3.2:3b", "llama3.2:1b"], "discovered"),
    ),
    case(
        "helm-old-xargs-cpu-values",
        edit=helm_rendered(helm_xargs_script("llama3.2:3b", "nomic-embed-text"), gpu=False),
        gpu={"ollama": GPU},
        models=(["llama3.2:3b", "nomic-embed-text"], "discovered"),
    ),
    case("no-env", edit=drop("spec", "containers", "0", "env"), models=(["llama3.1:8b"], "annotation")),
    case("no-resources", edit=drop("spec", "containers", "0", "resources"), gpu={"ollama": GPU}),
    case(
        "cpu-and-memory-limits-only",
        edit=set_resources(0, {"limits": {"cpu": "8", "memory": "32Gi"}}),
        gpu={"ollama": GPU},
    ),
    case(
        "no-annotations-models-from-poststart",
        edit=drop("metadata", "annotations"),
        models=(["llama3.1:8b"], "discovered"),
    ),
    case(
        "sidecar-and-second-ollama-container",
        edit=chain(add_container(SIDECAR), add_container(EMBED)),
        env={"ollama": DEFAULT_ENV, "ollama-embed": DEFAULT_ENV},
        untouched=("exporter",),
    ),
    case(
        "ollama-second-without-any-gpu",
        edit=chain(NO_GPU, add_container(SIDECAR, at=0)),
        gpu={"ollama": GPU},
        untouched=("exporter",),
    ),
    case(
        "init-container-pulls-a-model",
        edit=chain(drop("metadata", "annotations"), add_container(PULL_INIT, init=True)),
        models=(["llama3.1:8b", "llama3.2:3b"], "discovered"),
        untouched=("pull-models",),
    ),
    case(
        "requires-gpu-off-cpu-pod",
        edit=NO_GPU,
        env={"ollama": {**DEFAULT_ENV, "NVIDIA_VISIBLE_DEVICES": "void"}},
        settings={"ollama_requires_gpu": False},
        demand=False,
        vram=None,
    ),
    case("requires-gpu-off-gpu-pod", settings={"ollama_requires_gpu": False}, models=(["llama3.1:8b"], "annotation")),
    case(
        "user-supplied-guard-annotations-overwritten",
        edit=annotate({ANN_DEMAND: "1", ANN_ESTIMATE: "{}"}),
        models=(["llama3.1:8b"], "annotation"),
    ),
    case(
        "user-supplied-demand-removed-when-undeclared",
        "mutate-pod-create-1.json",
        edit=annotate({ANN_DEMAND: "99999"}),
        env={"ollama-single": DEFAULT_ENV},
        demand=False,
        vram="ollama-single",
    ),
    case(
        "context-already-set-is-kept",
        edit=set_env(0, OLLAMA_CONTEXT_LENGTH="4096"),
        env={"ollama": {**DEFAULT_ENV, "OLLAMA_CONTEXT_LENGTH": "4096"}},
    ),
    case(
        "parallel-from-configmap-is-kept",
        edit=set_env(0, OLLAMA_NUM_PARALLEL={"configMapKeyRef": {"name": "ollama", "key": "parallel"}}),
        env={"ollama": {k: v for k, v in DEFAULT_ENV.items() if k != "OLLAMA_NUM_PARALLEL"}},
    ),
    case(
        "context-from-pod-annotation",
        edit=annotate({"ollama-guard.io/context-length": "4096"}),
        env={"ollama": {**DEFAULT_ENV, "OLLAMA_CONTEXT_LENGTH": "4096"}},
    ),
    case(
        "namespace-default-context",
        namespace="team-b",
        env={"ollama": {**DEFAULT_ENV, "OLLAMA_CONTEXT_LENGTH": "16384"}},
    ),
    case("shared-gpu-resource-name", edit=set_resources(0, {"limits": {"nvidia.com/gpu.shared": "1"}})),
    case(
        "image-by-registry-and-digest-without-gpu",
        edit=chain(set_image(0, f"registry.example.com:5000/mirror/ollama/ollama@{DIGEST}"), NO_GPU),
        gpu={"ollama": GPU},
    ),
    case("two-gpus", edit=set_resources(0, {"limits": {GPU: "2"}, "requests": {GPU: "2"}})),
]


# --- checks ------------------------------------------------------------------------------------------------


def decode(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert ("patch" in response) == ("patchType" in response)
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"], validate=True))
    return ops


def apply_checked(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply op by op: an `add` never overwrites (except list append), nothing replaces a list."""
    current = copy.deepcopy(obj)
    for op in ops:
        assert op["op"] in ("add", "replace", "remove"), op
        pointer = jsonpatch.JsonPointer(op["path"])
        parent, key = pointer.to_last(current)
        if op["op"] == "add" and key != "-":
            assert isinstance(parent, dict) and key not in parent, f"add would overwrite {op['path']}"
        if op["op"] == "replace":
            assert not isinstance(parent[key], list), f"replaces a whole list at {op['path']}"
        current = jsonpatch.apply_patch(current, [op])
    return current


def by_name(pod: dict[str, Any], field: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"].get(field, [])}


def check_pod_rules(pod: dict[str, Any]) -> None:
    """What the API server's validation adds to the schema: unique env names, GPU requests == limits,
    and an extended resource's request equal to its limit and a whole number (else 422)."""
    for field in ("containers", "initContainers"):
        for container in pod["spec"].get(field, []):
            names = [e["name"] for e in container.get("env", [])]
            assert len(names) == len(set(names)), f"duplicate env in {container['name']}: {names}"
            resources = container.get("resources", {})
            for resource in GPU_RESOURCES:
                requested = resources.get("requests", {}).get(resource)
                if requested is not None:
                    assert resources.get("limits", {}).get(resource) == requested, container
            pair = (resources.get("limits", {}).get(VRAM), resources.get("requests", {}).get(VRAM))
            if pair != (None, None):
                assert pair[0] == pair[1] and isinstance(pair[0], str) and pair[0].isdigit(), container


def without_vram(resources: dict[str, Any] | None) -> dict[str, Any] | None:
    """A container's resources with the guard's `ollama-guard.io/vram-mib` taken out (and a section
    that only held it)."""
    if resources is None:
        return None
    out = {k: v for k, v in resources.items() if k not in ("limits", "requests")}
    for section in ("limits", "requests"):
        if section in resources:
            rest = {k: v for k, v in resources[section].items() if k != VRAM}
            if rest or resources[section].keys() != {VRAM}:
                out[section] = rest
    return out


def check_expectations(before: dict[str, Any], after: dict[str, Any], expect: dict[str, Any]) -> None:
    containers = by_name(after)
    for name, wanted in expect["env"].items():
        env = {e["name"]: e.get("value") for e in containers[name].get("env", [])}
        assert {k: env.get(k) for k in wanted} == wanted, (name, env)
    for name, resource in expect["gpu"].items():
        resources = containers[name]["resources"]
        assert (resources["limits"][resource], resources["requests"][resource]) == ("1", "1")
    if not expect["gpu"]:  # no GPU added anywhere
        for name, container in containers.items():
            original = by_name(before)[name].get("resources")
            assert without_vram(container.get("resources")) == original, name
    annotations = after["metadata"].get("annotations", {})
    requesting = {n for n, c in containers.items() if VRAM in c.get("resources", {}).get("limits", {})}
    assert requesting == ({expect["vram"]} if expect["vram"] else set())
    estimate = json.loads(annotations.get(ANN_ESTIMATE, "{}"))
    if expect["vram"]:
        value = containers[expect["vram"]]["resources"]["limits"][VRAM]
        assert int(value) == estimate["requestedMiB"] > 0
        if expect["demand"]:
            assert value == annotations[ANN_DEMAND]
    else:
        assert "requestedMiB" not in estimate
    for name in expect["untouched"]:
        originals = {**by_name(before), **by_name(before, "initContainers")}
        assert {**containers, **by_name(after, "initContainers")}[name] == originals[name]
    if expect["demand"]:
        assert annotations[ANN_DEMAND].isdigit() and int(annotations[ANN_DEMAND]) > 0
        estimate = json.loads(annotations[ANN_ESTIMATE])
        assert estimate["v"] == 1
        assert estimate["demandMiB"] == int(annotations[ANN_DEMAND])
    else:
        assert ANN_DEMAND not in annotations
    if expect["models"] is not None:
        estimate = json.loads(annotations[ANN_ESTIMATE])
        assert (estimate["models"], estimate["modelsFrom"]) == tuple(expect["models"])
    user_keys = {k: v for k, v in before["metadata"].get("annotations", {}).items() if k != ANN_ESTIMATE}
    for key, value in user_keys.items():
        if key != ANN_DEMAND:
            assert annotations[key] == value  # the user's own annotations are kept


@pytest.mark.parametrize(("base", "edit", "settings", "namespace", "expect"), CASES)
def test_patch_yields_a_valid_pod_and_is_idempotent(
    start_guard: Callable[..., GuardServer],
    recorded: Callable[[str], dict[str, Any]],
    base: str,
    edit: Edit | None,
    settings: dict[str, Any],
    namespace: str | None,
    expect: dict[str, Any],
) -> None:
    guard = start_guard(settings=load_settings(**settings))
    review = variant(recorded(base), edit=edit, namespace=namespace)
    pod = review["request"]["object"]
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)  # the variant itself is a real pod

    response = guard.review("/mutate", review)
    assert response["allowed"] is True
    ops = decode(response)
    assert ops, "an Ollama pod always gets something from the guard"
    patched = apply_checked(pod, ops)

    kubernetes_validate.validate(patched, KUBE_VERSION, strict=True)
    check_pod_rules(patched)
    check_expectations(pod, patched, expect)

    again = guard.review("/mutate", variant(review, edit=lambda obj: obj.update(copy.deepcopy(patched))))
    assert again["allowed"] is True
    assert decode(again) == [], "mutating the mutated pod must change nothing"


@pytest.mark.parametrize(("base", "edit", "settings", "namespace", "expect"), CASES)
def test_the_mutated_pod_satisfies_the_validating_webhook(
    start_guard: Callable[..., GuardServer],
    recorded: Callable[[str], dict[str, Any]],
    base: str,
    edit: Edit | None,
    settings: dict[str, Any],
    namespace: str | None,
    expect: dict[str, Any],
) -> None:
    """After /mutate, /validate finds the settings it relies on: no 'not set' warning, no denial."""
    guard = start_guard(settings=load_settings(**settings))
    review = variant(recorded(base), edit=edit, namespace=namespace)
    patched = jsonpatch.apply_patch(review["request"]["object"], decode(guard.review("/mutate", review)))
    name = f"ollama-{review['request']['uid'][:8]}"
    patched["metadata"].update(name=name, uid=review["request"]["uid"])
    validation = variant(review, name=name, edit=lambda obj: obj.update(patched))
    response = guard.review("/validate", validation)
    assert response["allowed"] is True, response
    assert not [w for w in response.get("warnings", []) if "not set" in w or "requests no GPU" in w]
