"""The `ollama-guard.io/vram-mib` resource request the mutating webhook adds (design §8, §14).

Every GPU tenant the guard mutates requests its demand, in MiB, as the extended resource
`ollama-guard.io/vram-mib`, in `limits` and the equal `requests` (kube-apiserver answers 422 to
request != limit and to fractions: `../shared/fixtures/kube-apiserver-1.24/extended-resources/`), on
the container that holds the GPU request; a lower value is raised, a higher one kept; a CPU-only
Ollama pod gets none; a malformed value is left to the validating webhook, which answers 400.

Each case is a recorded kube-apiserver pod review or a variant of one, mutated in process against
the bundled snapshot (one H100 80GB with 4 replicas: an even share is 81559 // 4 MiB). For every
case the patch applies op by op without overwriting or replacing a list, the patched pod is
schema-valid, the resource is a whole number equal in limits and requests, the estimate says what
the pod requests, mutating the result changes nothing, and nothing else in the pod changed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes_validate
import pytest
from conftest import GuardServer, load_recorded, recorded_names, require_fixtures, snapshot_objects, variant
from test_patch_validity import KUBE_VERSION, SIDECAR, add_container, apply_checked, chain, check_pod_rules, drop
from test_server_fixtures import LLAMA31_8B_MIB

from webhook.admission.context import Guard
from webhook.admission.mutation import mutate
from webhook.admission.patches import ContainerEdit, edit_container
from webhook.admission.review import AdmissionResponse, parse_review
from webhook.admission.validation import validate
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.tenants import is_ollama_image
from webhook.state.snapshot import SnapshotSource

VRAM = "ollama-guard.io/vram-mib"
VRAM_TOKEN = "ollama-guard.io~1vram-mib"
GPU = "nvidia.com/gpu"
ANN_DEMAND = "ollama-guard.io/vram-demand"
ANN_ESTIMATE = "ollama-guard.io/estimate"
ANN_MODELS = "ollama-guard.io/models"
#: what the guard may add to an Ollama container's env (design §8; the driver cap: tests/test_driver_cap.py)
GUARD_ENV = {
    "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_CONTEXT_LENGTH",
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_FLASH_ATTENTION",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_GPU_MEMORY_LIMIT",
    "NVIDIA_GPU_MEMORY_REQUEST",
}
#: one replica's even share of the bundled node: `nvidia.com/gpu.memory` 81559 / `gpu.replicas` 4
EVEN_SHARE_MIB = 81559 // 4
#: stands for "the pod's demand", read from the patched pod's `ollama-guard.io/vram-demand`
DEMAND = "demand"
CATALOG = load_catalog()
Edit = Callable[[dict[str, Any]], None]


# --- building guards and reviews ------------------------------------------------------------------------


def make_guard(**settings: Any) -> Guard:
    """A guard on the bundled snapshot, as `tests/test_admission.py` builds one (settings overridable)."""
    cluster = load_settings(**settings).cluster_policy()
    source = SnapshotSource(snapshot_objects(), cluster=cluster, catalog=CATALOG, origin="test")
    return Guard(cluster=cluster, catalog=CATALOG, ledger=source.ledger, on_bound=source.on_bound)


def run(review: dict[str, Any], guard: Guard, webhook: Callable[..., AdmissionResponse] = mutate) -> AdmissionResponse:
    return webhook(parse_review(review), guard)


def again(review: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """The same review carrying `pod` (what kube-apiserver sends on reinvocation)."""
    return variant(review, edit=lambda obj: (obj.clear(), obj.update(copy.deepcopy(pod))))


# --- pod edits ------------------------------------------------------------------------------------------


def resources(index: int, value: dict[str, Any], *, field: str = "containers") -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        pod["spec"][field][index]["resources"] = copy.deepcopy(value)

    return edit


SAME = "same as the limit"


def vram(limit: str | None, request: str | None = SAME, *, index: int = 0) -> Edit:
    """Set a user's own `ollama-guard.io/vram-mib` on container `index` (None: leave that section)."""

    def edit(pod: dict[str, Any]) -> None:
        res = pod["spec"]["containers"][index].setdefault("resources", {})
        for section, value in (("limits", limit), ("requests", limit if request == SAME else request)):
            if value is not None:
                res.setdefault(section, {})[VRAM] = value

    return edit


def not_ollama(image: str = "vllm/vllm-openai:v0.6.3", annotations: Mapping[str, str] | None = None) -> Edit:
    """The recorded pod turned into a plain GPU tenant: another image, no Ollama label or models."""

    def edit(pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        meta["labels"] = {k: v for k, v in meta.get("labels", {}).items() if k != "app.kubernetes.io/name"}
        meta["annotations"] = dict(annotations or {})
        container = pod["spec"]["containers"][0]
        container["image"] = image
        container.pop("lifecycle", None)
        container["env"] = [{"name": "HF_HOME", "value": "/models"}]

    return edit


def node_selector(labels: dict[str, str]) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        pod["spec"]["nodeSelector"] = dict(labels)

    return edit


GPU_1 = {"limits": {GPU: "1"}, "requests": {GPU: "1"}}
GPU_SIDECAR = {**SIDECAR, "name": "embedder", "resources": {"limits": {"cpu": "1", GPU: "1"}, "requests": {GPU: "1"}}}
VRAM_SIDECAR = {
    **SIDECAR,
    "name": "reranker",
    "resources": {"limits": {VRAM: "2000", "memory": "1Gi"}, "requests": {VRAM: "2000"}},
}
GPU_INIT = {
    "name": "warm-cache",
    "image": "busybox:1.36",
    "command": ["sh", "-c", "true"],
    "resources": copy.deepcopy(GPU_1),
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "imagePullPolicy": "IfNotPresent",
}
NO_GPU = resources(0, {})


# --- the table ------------------------------------------------------------------------------------------


def case(
    id: str,
    edit: Edit | None = None,
    *,
    base: str = "mutate-pod-create-2.json",
    want: dict[str, dict[str, Any]] | None = None,
    ops: list[tuple[str, str]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Any:
    """`want`: container name -> the resource amounts the guard sets in both limits and requests
    (`DEMAND`: the pod's stamped demand); every other container's resources stay as they were.
    `ops`: the exact (op, path) of the resource operations, when the case is about them."""
    return pytest.param(base, edit, want or {}, ops, settings or {}, id=id)


LIMITS = f"/spec/containers/0/resources/limits/{VRAM_TOKEN}"
REQUESTS = f"/spec/containers/0/resources/requests/{VRAM_TOKEN}"

CASES = [
    case(
        "ollama-without-resources-gets-gpu-and-vram-together",
        drop("spec", "containers", "0", "resources"),
        want={"ollama": {GPU: "1", VRAM: DEMAND}},
        ops=[("add", "/spec/containers/0/resources")],
    ),
    case(
        "ollama-with-empty-resources",
        NO_GPU,
        want={"ollama": {GPU: "1", VRAM: DEMAND}},
        ops=[("add", "/spec/containers/0/resources/limits"), ("add", "/spec/containers/0/resources/requests")],
    ),
    case(
        "ollama-with-cpu-limits-only",
        resources(0, {"limits": {"cpu": "8", "memory": "32Gi"}}),
        want={"ollama": {GPU: "1", VRAM: DEMAND}},
        ops=[
            ("add", "/spec/containers/0/resources/limits/nvidia.com~1gpu"),
            ("add", LIMITS),
            ("add", "/spec/containers/0/resources/requests"),
        ],
    ),
    case("ollama-with-its-own-gpu", want={"ollama": {VRAM: DEMAND}}, ops=[("add", LIMITS), ("add", REQUESTS)]),
    case(
        "user-vram-lower-is-raised-in-both",
        vram("1000"),
        want={"ollama": {VRAM: DEMAND}},
        ops=[("replace", LIMITS), ("replace", REQUESTS)],
    ),
    case(
        "user-vram-lower-canonical-form-is-raised",
        vram("1k"),
        want={"ollama": {VRAM: DEMAND}},
        ops=[("replace", LIMITS), ("replace", REQUESTS)],
    ),
    case("user-vram-higher-is-kept", vram("60000"), ops=[]),
    case("user-vram-equal-is-left-alone", vram(str(LLAMA31_8B_MIB)), ops=[]),
    case(
        "user-request-not-equal-limit-both-raised",
        vram("100", request="50"),
        want={"ollama": {VRAM: DEMAND}},
        ops=[("replace", LIMITS), ("replace", REQUESTS)],
    ),
    case(
        "user-vram-in-limits-only-lower-gets-the-request-too",
        vram("100", request=None),
        want={"ollama": {VRAM: DEMAND}},
        ops=[("replace", LIMITS), ("add", REQUESTS)],
    ),
    case(
        "sidecar-requests-the-gpu",
        chain(NO_GPU, add_container(GPU_SIDECAR)),
        want={"embedder": {VRAM: DEMAND}},
        ops=[
            ("add", f"/spec/containers/1/resources/limits/{VRAM_TOKEN}"),
            ("add", f"/spec/containers/1/resources/requests/{VRAM_TOKEN}"),
        ],
    ),
    case(
        "gpu-sidecar-first-ollama-container-preferred",
        add_container(GPU_SIDECAR, at=0),
        want={"ollama": {VRAM: DEMAND}},
    ),
    case(
        "vram-split-over-containers-is-topped-up-to-the-demand",
        add_container(VRAM_SIDECAR),
        want={"ollama": {VRAM: "demand-2000"}},
    ),
    case(
        "non-ollama-tenant-declaring-20Gi",
        not_ollama(annotations={"ollama-guard.io/vram": "20Gi"}),
        want={"ollama": {VRAM: "20480"}},
    ),
    case(
        "non-ollama-tenant-undeclared-even-share",
        not_ollama(),
        want={"ollama": {VRAM: str(EVEN_SHARE_MIB)}},
    ),
    case(
        "non-ollama-tenant-undeclared-policy-default",
        not_ollama(),
        want={"ollama": {VRAM: "10240"}},
        settings={"default_tenant_vram": "10Gi"},
    ),
    case(
        "non-ollama-tenant-undeclared-no-guarded-candidate",
        chain(not_ollama(), node_selector({"kubernetes.io/hostname": "cpu-a"})),
        ops=[],
    ),
    case(
        "non-ollama-tenant-gpu-only-in-an-init-container",
        chain(not_ollama(), resources(0, {}), add_container(GPU_INIT, init=True)),
        want={"warm-cache": {VRAM: str(EVEN_SHARE_MIB)}},
        ops=[
            ("add", f"/spec/initContainers/0/resources/limits/{VRAM_TOKEN}"),
            ("add", f"/spec/initContainers/0/resources/requests/{VRAM_TOKEN}"),
        ],
    ),
    case("cpu-only-ollama-with-requires-gpu-off", NO_GPU, ops=[], settings={"ollama_requires_gpu": False}),
    case(
        "unknown-model-is-left-to-the-validating-webhook",
        lambda pod: pod["metadata"]["annotations"].update({ANN_MODELS: "myorg/custom:latest"}),
        ops=[],
    ),
    *[
        case(
            f"recorded-{name.removesuffix('.json')}",
            base=name,
            want={"ollama-single": {VRAM: str(EVEN_SHARE_MIB)}}
            if name.endswith("-1.json")
            else {"ollama": {VRAM: DEMAND}},
        )
        for name in recorded_names()
        if name.startswith("mutate-pod-create-")
    ],
]


# --- checks ------------------------------------------------------------------------------------------------


def resolve(value: str, annotations: Mapping[str, str]) -> str:
    if value.startswith(DEMAND):
        return str(int(annotations[ANN_DEMAND]) + int(value.removeprefix(DEMAND) or 0))
    return value


def expected_resources(original: dict[str, Any] | None, amounts: dict[str, str]) -> dict[str, Any] | None:
    if not amounts:
        return original
    out = copy.deepcopy(original or {})
    for section in ("limits", "requests"):
        out.setdefault(section, {}).update(amounts)
    return out


def containers_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for field in ("containers", "initContainers") for c in spec.get(field, [])}


def but(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """`obj` without `keys`."""
    return {k: v for k, v in obj.items() if k not in keys}


def check_only_the_design_changed(
    before: dict[str, Any], after: dict[str, Any], want: dict[str, dict[str, str]]
) -> None:
    """Metadata: only the two guard annotations; spec: only env on Ollama containers and the
    resources of `want`; every other field exactly as it was."""
    assert but(after, "metadata", "spec") == but(before, "metadata", "spec")
    assert but(after["metadata"], "annotations") == but(before["metadata"], "annotations")
    annotations = after["metadata"].get("annotations", {})
    assert but(annotations, ANN_DEMAND, ANN_ESTIMATE) == but(
        before["metadata"].get("annotations", {}), ANN_DEMAND, ANN_ESTIMATE
    )
    assert but(after["spec"], "containers", "initContainers") == but(before["spec"], "containers", "initContainers")
    old, new = containers_of(before), containers_of(after)
    assert list(old) == list(new)
    for name, container in new.items():
        original = old[name]
        assert but(container, "env", "resources") == but(original, "env", "resources"), name
        env_before, env_after = original.get("env", []), container.get("env", [])
        assert env_after[: len(env_before)] == env_before, name
        added = {e["name"] for e in env_after[len(env_before) :]}
        assert added <= (GUARD_ENV if is_ollama_image(container["image"]) else set()), (name, added)
        amounts = {k: resolve(v, annotations) for k, v in want.get(name, {}).items()}
        assert container.get("resources") == expected_resources(original.get("resources"), amounts), name


def check_vram_request(pod: dict[str, Any]) -> int:
    """Limits == requests, a whole-number string; returns the pod's total as the scheduler sums it."""
    app = init = 0
    for field in ("containers", "initContainers"):
        for container in pod["spec"].get(field, []):
            res = container.get("resources", {})
            pair = (res.get("limits", {}).get(VRAM), res.get("requests", {}).get(VRAM))
            if pair == (None, None):
                continue
            assert pair[0] == pair[1], container["name"]
            assert isinstance(pair[0], str) and pair[0].isascii() and pair[0].isdigit(), pair
            if field == "containers":
                app += int(pair[0])
            else:
                init = max(init, int(pair[0]))
    return max(app, init)


@pytest.mark.parametrize(("base", "edit", "want", "ops", "settings"), CASES)
def test_vram_request(
    base: str,
    edit: Edit | None,
    want: dict[str, dict[str, str]],
    ops: list[tuple[str, str]] | None,
    settings: dict[str, Any],
) -> None:
    require_fixtures()
    guard = make_guard(**settings)
    review = variant(load_recorded(base), edit=edit)
    pod = review["request"]["object"]
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)  # the input itself is a real pod

    response = run(review, guard)
    assert response.allowed and response.code is None
    patch = list(response.patch)
    patched = apply_checked(pod, patch)
    kubernetes_validate.validate(patched, KUBE_VERSION, strict=True)
    check_pod_rules(patched)
    check_only_the_design_changed(pod, patched, want)

    resource_ops = [(op["op"], op["path"]) for op in patch if "/resources" in op["path"]]
    if ops is not None:
        assert resource_ops == ops
    assert len([p for _, p in resource_ops if p.endswith("/resources")]) <= 1, "one container, one add /resources"

    total = check_vram_request(patched)
    annotations = patched["metadata"].get("annotations", {})
    estimate = json.loads(annotations.get(ANN_ESTIMATE, "{}"))
    if total:
        assert estimate["requestedMiB"] == total
    else:
        assert "requestedMiB" not in estimate
    if total and ANN_DEMAND in annotations:
        assert total == int(annotations[ANN_DEMAND])  # the pod requests exactly its demand (or more, kept)

    second = run(again(review, patched), guard)
    assert second.allowed and second.patch == (), "mutating the mutated pod must change nothing"


def test_recorded_pod_requests_the_llama_demand() -> None:
    """An independent figure: the design's llama3.1:8b demand at the injected context (test_server_fixtures)."""
    require_fixtures()
    review = load_recorded("mutate-pod-create-2.json")
    patched = apply_checked(review["request"]["object"], list(run(review, make_guard()).patch))
    limits = patched["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {GPU: "1", VRAM: str(LLAMA31_8B_MIB)} == patched["spec"]["containers"][0]["resources"]["requests"]


# --- malformed values: the mutating webhook leaves them, the validating webhook answers 400 --------------

GARBAGE = [
    pytest.param(vram("1.5"), id="fraction"),
    pytest.param(vram("abc"), id="not-a-quantity"),
    pytest.param(vram("-1"), id="negative"),
    pytest.param(vram("1" * 30), id="thirty-digits"),
    pytest.param(vram("25066", request="0.5"), id="fraction-in-requests-only"),
    pytest.param(chain(add_container(VRAM_SIDECAR), vram("1.5", index=1)), id="on-a-sidecar"),
]


def _named(review: dict[str, Any]) -> dict[str, Any]:
    return variant(review, name="ollama-bad-vram", pod_uid="0d5b4e4e-7b53-4c69-9d3e-6c1f1a3c0b11")


@pytest.mark.parametrize("edit", GARBAGE)
def test_malformed_vram_is_denied_by_the_validating_webhook(edit: Edit) -> None:
    require_fixtures()
    guard = make_guard()
    review = variant(load_recorded("mutate-pod-create-2.json"), edit=edit)
    container = "reranker" if len(review["request"]["object"]["spec"]["containers"]) > 1 else "ollama"

    mutated = run(review, guard)
    assert mutated.allowed and mutated.patch == ()  # nothing the guard could compute against

    denied = run(_named(variant(load_recorded("validate-pod-create-2.json"), edit=edit)), guard, validate)
    assert not denied.allowed and denied.code == 400 and denied.reason == "BadRequest"
    assert f"container {container!r}" in denied.message
    assert "ollama-guard.io/vram-mib must be a whole number of MiB" in denied.message
    assert denied.message.startswith("pod team-a/ollama-bad-vram: ")


@pytest.mark.parametrize("value", ["1.5", "abc", "-1", "1" * 30])
def test_malformed_vram_over_the_wire_is_a_400_review(guard: GuardServer, value: str) -> None:
    require_fixtures()
    review = _named(variant(load_recorded("validate-pod-create-2.json"), edit=vram(value)))
    response = guard.review("/validate", review)
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    message = response["status"]["message"]
    assert "container 'ollama'" in message and "ollama-guard.io/vram-mib" in message
    assert repr(value[:40]) in message


# --- the patch builder on its own -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "amounts", "expected"),
    [
        pytest.param(
            {"name": "c"},
            ((GPU, 1), (VRAM, 25066)),
            [
                {
                    "op": "add",
                    "path": "/spec/containers/0/resources",
                    "value": {"limits": {GPU: "1", VRAM: "25066"}, "requests": {GPU: "1", VRAM: "25066"}},
                }
            ],
            id="absent-resources-one-add",
        ),
        pytest.param(
            {"name": "c", "resources": {"limits": {VRAM: "100"}, "requests": {VRAM: "50"}}},
            ((VRAM, 25066),),
            [
                {"op": "replace", "path": LIMITS, "value": "25066"},
                {"op": "replace", "path": REQUESTS, "value": "25066"},
            ],
            id="replace-both",
        ),
        pytest.param(
            {"name": "c", "resources": {"limits": {VRAM: "25066"}, "requests": {VRAM: "25066"}}},
            ((VRAM, 25066),),
            [],
            id="equal-no-op",
        ),
    ],
)
def test_edit_container_resources(
    container: dict[str, Any], amounts: tuple[tuple[str, int], ...], expected: list[dict[str, Any]]
) -> None:
    spec = {"containers": [container]}
    assert edit_container(spec, ContainerEdit(field="containers", index=0, resources=amounts)) == expected
