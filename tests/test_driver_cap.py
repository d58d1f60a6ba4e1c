"""The driver-enforced VRAM cap (design §8, issue 14): `NVIDIA_GPU_MEMORY_LIMIT` and
`NVIDIA_GPU_MEMORY_REQUEST` on each Ollama container = the pod's demand per GPU, whole MiB.

Pods are the recorded kube-apiserver reviews (`mutate-pod-create-*.json`) and variants of them,
among them the otwld/ollama-helm chart's pod (postStart pull script), mutated in process against
the bundled snapshot. For every case: the exact variable values on every container, the exact
warnings, the patch applies op by op (nothing replaces a list; a lowered value is one item replaced
in place), the patched pod is schema-valid, nothing else differs from what the same guard with the
cap off answers, a second mutation is empty, and `/validate` of the result says nothing about the
cap. Garbage values are left by the mutation and denied by `/validate` with a 400 naming the
container and the variable. `/validate`, the audit, the estimate annotation and `ollama-guard
estimate` report the cap.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
from conftest import GuardServer, load_recorded, require_fixtures, snapshot_objects, variant
from hypothesis import given
from hypothesis import strategies as st
from test_mutation_vram import CATALOG, EVEN_SHARE_MIB, not_ollama
from test_patch_validity import (
    EMBED,
    KUBE_VERSION,
    PULL_INIT,
    SIDECAR,
    add_container,
    apply_checked,
    chain,
    check_pod_rules,
    helm_pull_script,
    helm_rendered,
    set_env,
    set_resources,
)
from test_server_fixtures import LLAMA31_8B_MIB
from typer.testing import CliRunner

from webhook.admission.context import Guard
from webhook.admission.mutation import mutate
from webhook.admission.review import AdmissionResponse, parse_review
from webhook.admission.validation import validate
from webhook.audit.run import run_audit
from webhook.cli.main import app
from webhook.cli.settings import load_settings
from webhook.core.drivercap import MAX_CAP_MIB, plan_cap
from webhook.core.tenants import ContainerFacts
from webhook.state.snapshot import SnapshotSource

LIMIT = "NVIDIA_GPU_MEMORY_LIMIT"
REQUEST = "NVIDIA_GPU_MEMORY_REQUEST"
CAP_VARS = {LIMIT, REQUEST}
GPU = "nvidia.com/gpu"
ANN_DEMAND = "ollama-guard.io/vram-demand"
ANN_ESTIMATE = "ollama-guard.io/estimate"
ANN_CAP = "ollama-guard.io/driver-memory-limit"
#: stands for "the pod's demand per GPU", read from the patched pod's stamped demand
CAP = "cap"
#: the recorded pod's cap: llama3.1:8b at the injected settings on one GPU (test_server_fixtures)
N = str(LLAMA31_8B_MIB)
Edit = Callable[[dict[str, Any]], None]
Expected = Mapping[str, tuple[str | None, str | None]]


# --- guards and reviews ----------------------------------------------------------------------------


def make_guard(*, namespaces: Mapping[str, Mapping[str, str]] | None = None, **settings: Any) -> Guard:
    """The bundled snapshot, with `namespaces` (name -> annotations) replacing or adding Namespaces."""
    extra = dict(namespaces or {})
    objects = [o for o in snapshot_objects() if not (o["kind"] == "Namespace" and o["metadata"]["name"] in extra)]
    objects += [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": dict(ann)}}
        for name, ann in extra.items()
    ]
    cluster = load_settings(**settings).cluster_policy()
    source = SnapshotSource(objects, cluster=cluster, catalog=CATALOG, origin="test")
    return Guard(cluster=cluster, catalog=CATALOG, ledger=source.ledger, on_bound=source.on_bound)


def run(review: dict[str, Any], guard: Guard, webhook: Callable[..., AdmissionResponse] = mutate) -> AdmissionResponse:
    return webhook(parse_review(review), guard)


def carrying(review: dict[str, Any], pod: dict[str, Any], *, name: str = "ollama-capped") -> dict[str, Any]:
    """The same review carrying `pod`, named (what kube-apiserver sends on reinvocation / to /validate)."""
    out = variant(review, edit=lambda obj: (obj.clear(), obj.update(copy.deepcopy(pod))))
    out["request"]["name"] = name
    out["request"]["object"].setdefault("metadata", {})["name"] = name
    return out


def cap_env(container: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The container's (limit, request) as the kubelet reads them (the last entry of each name)."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    return env.get(LIMIT), env.get(REQUEST)


def containers(pod: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for field in ("containers", "initContainers") for c in spec.get(field, [])}


def env_of(index: int, *pairs: tuple[str, str | dict[str, Any]]) -> Edit:
    """Append env entries to container `index`, in order (repeats allowed, unlike `set_env`)."""

    def edit(pod: dict[str, Any]) -> None:
        env = pod["spec"]["containers"][index].setdefault("env", [])
        for name, value in pairs:
            env.append(
                {"name": name, "valueFrom": value} if isinstance(value, dict) else {"name": name, "value": value}
            )

    return edit


def two_gpus(index: int = 0, count: str = "2") -> Edit:
    return set_resources(index, {"limits": {GPU: count}, "requests": {GPU: count}})


GPU_EMBED = {**EMBED, "resources": {"limits": {GPU: "1"}, "requests": {GPU: "1"}}}
CONFIGMAP = {"configMapKeyRef": {"name": "ollama", "key": "gpu-memory"}}


# --- the table -------------------------------------------------------------------------------------------


def case(
    id: str,
    edit: Edit | None = None,
    *,
    base: str = "mutate-pod-create-2.json",
    caps: Expected | None = None,
    warnings: tuple[str, ...] = (),
    gpus: int = 1,
    cap: int | None = None,
    ops: list[tuple[str, str]] | None = None,
    settings: dict[str, Any] | None = None,
    capped: bool | None = None,
) -> Any:
    """`caps`: container name -> (limit, request) after the mutation (`CAP`: the pod's per-GPU demand,
    None: absent); every container not named has neither. `warnings`: exact, `CAP` substituted.
    `gpus`: what the demand is divided by; `cap`: an independent figure for it; `ops`: the exact
    (op, path) of every env operation, when the case is about them; `capped`: whether the estimate
    shows a cap (default: when some container gets `CAP`)."""
    if capped is None:
        capped = any(CAP in pair for pair in (caps or {}).values())
    expect = {"caps": caps or {}, "warnings": warnings, "gpus": gpus, "cap": cap, "ops": ops, "capped": capped}
    return pytest.param(base, edit, settings or {}, expect, id=id)


ENV0 = "/spec/containers/0/env"
CASES = [
    case(
        "recorded-pod-2-gets-both",
        caps={"ollama": (CAP, CAP)},
        cap=LLAMA31_8B_MIB,
        ops=[("add", f"{ENV0}/-")] * 6,
    ),
    case("recorded-pod-3", base="mutate-pod-create-3.json", caps={"ollama": (CAP, CAP)}, cap=LLAMA31_8B_MIB),
    case("recorded-pod-4", base="mutate-pod-create-4.json", caps={"ollama": (CAP, CAP)}, cap=LLAMA31_8B_MIB),
    case(
        "recorded-pod-1-no-models-capped-at-its-even-share",
        base="mutate-pod-create-1.json",
        caps={"ollama-single": (CAP, CAP)},
        cap=EVEN_SHARE_MIB,
        ops=[("add", ENV0)],
    ),
    case(
        "helm-chart-pod-pull-script",
        helm_rendered(helm_pull_script("llama3.1:8b", "qwen2.5:7b")),
        caps={"ollama": (CAP, CAP)},
    ),
    case(
        "helm-chart-pod-two-gpus",
        chain(helm_rendered(helm_pull_script("qwen2.5:32b")), two_gpus()),
        caps={"ollama": (CAP, CAP)},
        gpus=2,
    ),
    case(
        "helm-chart-pod-cpu-values-gets-gpu-and-cap",
        helm_rendered(helm_pull_script("llama3.2:3b"), gpu=False),
        caps={"ollama": (CAP, CAP)},
    ),
    case("two-gpus-half-each", two_gpus(), caps={"ollama": (CAP, CAP)}, gpus=2, cap=-(-LLAMA31_8B_MIB // 2)),
    case("three-gpus-rounded-up", two_gpus(count="3"), caps={"ollama": (CAP, CAP)}, gpus=3),
    case(
        "two-ollama-containers-one-gpu-each",
        add_container(GPU_EMBED),
        caps={"ollama": (CAP, CAP), "ollama-embed": (CAP, CAP)},
        gpus=2,
    ),
    case(
        "second-ollama-container-without-gpu-capped-too",
        chain(add_container(SIDECAR), add_container(EMBED)),
        caps={"ollama": (CAP, CAP), "ollama-embed": (CAP, CAP)},
    ),
    case(
        "init-container-with-ollama-image-untouched",
        add_container(PULL_INIT, init=True),
        caps={"ollama": (CAP, CAP)},
    ),
    case(
        "user-limit-higher-is-lowered-in-place",
        set_env(0, NVIDIA_GPU_MEMORY_LIMIT="80000"),
        caps={"ollama": (CAP, CAP)},
        warnings=("container ollama: NVIDIA_GPU_MEMORY_LIMIT=80000 lowered to cap (per-GPU demand, MiB)",),
        ops=[("add", f"{ENV0}/-")] * 5 + [("replace", f"{ENV0}/1")],
    ),
    case(
        "user-both-higher-both-lowered",
        set_env(0, NVIDIA_GPU_MEMORY_LIMIT="81559", NVIDIA_GPU_MEMORY_REQUEST="81559"),
        caps={"ollama": (CAP, CAP)},
        warnings=(
            "container ollama: NVIDIA_GPU_MEMORY_LIMIT=81559 lowered to cap (per-GPU demand, MiB)",
            "container ollama: NVIDIA_GPU_MEMORY_REQUEST=81559 lowered to cap (per-GPU demand, MiB)",
        ),
        ops=[("add", f"{ENV0}/-")] * 4 + [("replace", f"{ENV0}/1"), ("replace", f"{ENV0}/2")],
    ),
    case(
        "user-limit-equal-is-left-alone",
        set_env(0, NVIDIA_GPU_MEMORY_LIMIT=str(LLAMA31_8B_MIB)),
        caps={"ollama": (str(LLAMA31_8B_MIB), CAP)},
        cap=LLAMA31_8B_MIB,
        ops=[("add", f"{ENV0}/-")] * 5,
    ),
    case(
        "user-limit-lower-is-kept-and-the-request-follows-it",
        set_env(0, NVIDIA_GPU_MEMORY_LIMIT="4096"),
        caps={"ollama": ("4096", "4096")},
        capped=True,
    ),
    case(
        "user-request-lower-is-kept",
        set_env(0, NVIDIA_GPU_MEMORY_REQUEST="1024"),
        caps={"ollama": (CAP, "1024")},
    ),
    case(
        "user-request-zero-no-soft-guarantee-is-kept",
        set_env(0, NVIDIA_GPU_MEMORY_REQUEST="0"),
        caps={"ollama": (CAP, "0")},
    ),
    case(
        "user-limit-leading-zeros-read-as-the-hook-does",
        set_env(0, NVIDIA_GPU_MEMORY_LIMIT="080000"),
        caps={"ollama": (CAP, CAP)},
        warnings=("container ollama: NVIDIA_GPU_MEMORY_LIMIT=080000 lowered to cap (per-GPU demand, MiB)",),
    ),
    case(
        "user-limit-from-configmap-is-replaced",
        set_env(0, NVIDIA_GPU_MEMORY_LIMIT=CONFIGMAP),
        caps={"ollama": (CAP, CAP)},
        warnings=("container ollama: NVIDIA_GPU_MEMORY_LIMIT from valueFrom replaced by cap (per-GPU demand)",),
    ),
    case(
        "plural-spellings-warned-and-singular-set",
        set_env(0, NVIDIA_GPU_MEMORY_LIMITS="4096", NVIDIA_GPU_MEMORY_REQUESTS="4096"),
        caps={"ollama": (CAP, CAP)},
        warnings=(
            "container ollama: NVIDIA's hook ignores NVIDIA_GPU_MEMORY_LIMITS; use NVIDIA_GPU_MEMORY_LIMIT",
            "container ollama: NVIDIA's hook ignores NVIDIA_GPU_MEMORY_REQUESTS; use NVIDIA_GPU_MEMORY_REQUEST",
        ),
    ),
    case(
        "plural-next-to-a-higher-singular",
        set_env(0, NVIDIA_GPU_MEMORY_LIMITS="80000", NVIDIA_GPU_MEMORY_LIMIT="80000"),
        caps={"ollama": (CAP, CAP)},
        warnings=(
            "container ollama: NVIDIA's hook ignores NVIDIA_GPU_MEMORY_LIMITS; use NVIDIA_GPU_MEMORY_LIMIT",
            "container ollama: NVIDIA_GPU_MEMORY_LIMIT=80000 lowered to cap (per-GPU demand, MiB)",
        ),
    ),
    case("non-ollama-tenant-untouched", not_ollama(annotations={"ollama-guard.io/vram": "20Gi"})),
    case("non-ollama-tenant-undeclared-untouched", not_ollama()),
    case(
        "non-ollama-tenant-with-its-own-values-untouched",
        chain(not_ollama(), set_env(0, NVIDIA_GPU_MEMORY_LIMIT="80000", NVIDIA_GPU_MEMORY_LIMITS="1")),
        caps={"ollama": ("80000", None)},
    ),
    case("cpu-only-ollama-no-gpu-no-cap", set_resources(0, {}), settings={"ollama_requires_gpu": False}),
    case(
        "unknown-model-left-to-the-validating-webhook",
        lambda pod: pod["metadata"]["annotations"].update({"ollama-guard.io/models": "myorg/custom:latest"}),
    ),
    case(
        "cluster-policy-off",
        set_env(0, NVIDIA_GPU_MEMORY_LIMIT="80000", NVIDIA_GPU_MEMORY_LIMITS="1"),
        caps={"ollama": ("80000", None)},
        settings={"driver_memory_limit": False},
    ),
]


# --- checks ------------------------------------------------------------------------------------------------


def without_caps(pod: dict[str, Any]) -> dict[str, Any]:
    """`pod` without the two variables and the estimate's `driverCapMiB` (what the cap adds)."""
    out = copy.deepcopy(pod)
    for container in containers(out).values():
        if "env" in container:
            container["env"] = [e for e in container["env"] if e["name"] not in CAP_VARS]
    annotations = out["metadata"].get("annotations", {})
    if ANN_ESTIMATE in annotations:
        estimate = json.loads(annotations[ANN_ESTIMATE])
        estimate.pop("driverCapMiB", None)
        annotations[ANN_ESTIMATE] = estimate
    return out


def check_only_the_cap_differs(with_cap: dict[str, Any], without: dict[str, Any], before: dict[str, Any]) -> None:
    """Against the same pod mutated with the cap off: equal once the two variables are taken out;
    the names of each container's env in the same order, the cap's own appended at the end; a
    variable the author had stays at its index."""
    assert without_caps(with_cap) == without_caps(without)
    original = containers(before)
    for name, container in containers(with_cap).items():
        names = [e["name"] for e in container.get("env", [])]
        plain = [e["name"] for e in containers(without)[name].get("env", [])]
        assert names[: len(plain)] == plain, name
        assert set(names[len(plain) :]) <= CAP_VARS, name
        for i, entry in enumerate(original[name].get("env", [])):
            assert names[i] == entry["name"], (name, i)


@pytest.mark.parametrize(("base", "edit", "settings", "expect"), CASES)
def test_mutation_sets_the_driver_cap(
    base: str, edit: Edit | None, settings: dict[str, Any], expect: dict[str, Any]
) -> None:
    require_fixtures()
    guard = make_guard(**settings)
    review = variant(load_recorded(base), edit=edit)
    pod = review["request"]["object"]
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)  # the input itself is a real pod

    response = run(review, guard)
    assert response.allowed and response.code is None
    patched = apply_checked(pod, list(response.patch))
    kubernetes_validate.validate(patched, KUBE_VERSION, strict=True)
    check_pod_rules(patched)

    annotations = patched["metadata"].get("annotations", {})
    estimate = json.loads(annotations.get(ANN_ESTIMATE, "{}"))
    cap = estimate.get("driverCapMiB")
    if expect["capped"]:
        demand = int(annotations.get(ANN_DEMAND) or estimate["requestedMiB"])
        assert cap == -(-demand // expect["gpus"]) > 0
        if expect["cap"] is not None:
            assert cap == expect["cap"]
    else:
        assert cap is None
    for name, container in containers(patched).items():
        wanted = expect["caps"].get(name, (None, None))
        assert cap_env(container) == tuple(str(cap) if v == CAP else v for v in wanted), name
    assert response.warnings == tuple(w.replace(CAP, str(cap)) for w in expect["warnings"])
    assert all(len(w) <= 120 for w in response.warnings)
    if expect["ops"] is not None:
        assert [(op["op"], op["path"]) for op in response.patch if "/env" in op["path"]] == expect["ops"]

    off = run(review, make_guard(**{**settings, "driver_memory_limit": False}))
    assert off.warnings == () and "driverCapMiB" not in str(off.patch)
    check_only_the_cap_differs(patched, apply_checked(pod, list(off.patch)), pod)

    second = run(carrying(review, patched), guard)
    assert second.allowed and second.patch == (), "mutating the mutated pod must change nothing"
    plural = [w for w in response.warnings if "ignores" in w]
    assert second.warnings == tuple(plural)  # the misspelling is still there; nothing else to say

    checked = run(carrying(variant(load_recorded("validate-pod-create-2.json")), patched), guard, validate)
    assert checked.allowed or expect["caps"] == {}, checked.message
    assert not [w for w in checked.warnings if "NVIDIA_GPU_MEMORY" in w], checked.warnings


def test_recorded_pod_holds_the_design_figure() -> None:
    """An independent number: llama3.1:8b at the injected settings (test_server_fixtures) on one GPU."""
    require_fixtures()
    review = load_recorded("mutate-pod-create-2.json")
    patched = apply_checked(review["request"]["object"], list(run(review, make_guard()).patch))
    env = patched["spec"]["containers"][0]["env"]
    assert env[-2:] == [
        {"name": LIMIT, "value": str(LLAMA31_8B_MIB)},
        {"name": REQUEST, "value": str(LLAMA31_8B_MIB)},
    ]


def test_a_repeated_variable_has_its_last_entry_lowered() -> None:
    """The kubelet uses the last of two entries with one name: that one is lowered, the first kept."""
    require_fixtures()
    edit = env_of(0, (LIMIT, "1000"), (LIMIT, "90000"))
    review = variant(load_recorded("mutate-pod-create-2.json"), edit=edit)
    response = run(review, make_guard())
    patched = apply_checked(review["request"]["object"], list(response.patch))
    limits = [e["value"] for e in patched["spec"]["containers"][0]["env"] if e["name"] == LIMIT]
    assert limits == ["1000", str(LLAMA31_8B_MIB)]
    assert ("replace", f"{ENV0}/2") in [(op["op"], op["path"]) for op in response.patch]
    assert run(carrying(review, patched), make_guard()).patch == ()


# --- namespace opt-out ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "applied"),
    [
        pytest.param("off", False, id="off"),
        pytest.param(" OFF ", False, id="off-any-case-and-spaces"),
        pytest.param("on", True, id="on"),
    ],
)
def test_namespace_annotation_turns_the_cap_off_or_on(value: str, applied: bool) -> None:
    require_fixtures()
    edit = set_env(0, NVIDIA_GPU_MEMORY_LIMITS="1", NVIDIA_GPU_MEMORY_LIMIT="80000")
    review = variant(load_recorded("mutate-pod-create-2.json"), edit=edit)
    # the cluster-wide default is the other way round: the namespace decides
    guard = make_guard(namespaces={"team-a": {ANN_CAP: value}}, driver_memory_limit=not applied)
    response = run(review, guard)
    patched = apply_checked(review["request"]["object"], list(response.patch))
    limit, request = cap_env(patched["spec"]["containers"][0])
    if applied:
        assert (limit, request) == (str(LLAMA31_8B_MIB),) * 2 and len(response.warnings) == 2
    else:
        assert (limit, request) == ("80000", None) and response.warnings == ()
        assert "driverCapMiB" not in patched["metadata"]["annotations"][ANN_ESTIMATE]
    raw = variant(load_recorded("validate-pod-create-2.json"), name="ollama-raw", edit=edit)
    checked = run(raw, guard, validate)
    assert checked.allowed
    assert bool([w for w in checked.warnings if "NVIDIA_GPU_MEMORY" in w]) is applied


@pytest.mark.parametrize("value", ["maybe", "true", "", "of f"])
def test_a_malformed_namespace_annotation_denies_naming_it(value: str) -> None:
    require_fixtures()
    guard = make_guard(namespaces={"team-a": {ANN_CAP: value}})
    review = variant(load_recorded("validate-pod-create-2.json"), name="ollama-x")
    denied = run(review, guard, validate)
    assert not denied.allowed and denied.code == 400
    assert f'namespace annotation {ANN_CAP}="{value}" is invalid: use "on" or "off"' in denied.message


# --- garbage: left by the mutation, a 400 from the validating webhook ------------------------------------------

GARBAGE = [
    pytest.param(LIMIT, "-1", id="limit-negative"),
    pytest.param(LIMIT, "1.5", id="limit-fraction"),
    pytest.param(LIMIT, "abc", id="limit-not-a-number"),
    pytest.param(LIMIT, "1" * 30, id="limit-thirty-digits"),
    pytest.param(LIMIT, "8Gi", id="limit-a-quantity"),
    pytest.param(LIMIT, " 4096", id="limit-leading-space"),
    pytest.param(LIMIT, "0", id="limit-zero"),
    pytest.param(LIMIT, "", id="limit-empty"),
    pytest.param(LIMIT, str(MAX_CAP_MIB + 1), id="limit-above-the-hook-maximum"),
    pytest.param(REQUEST, "-1", id="request-negative"),
    pytest.param(REQUEST, "1.5", id="request-fraction"),
    pytest.param(REQUEST, "abc", id="request-not-a-number"),
    pytest.param(REQUEST, "9" * 30, id="request-thirty-digits"),
]


def _bad(var: str, value: str) -> Edit:
    return env_of(0, (var, value))


@pytest.mark.parametrize(("var", "value"), GARBAGE)
def test_garbage_is_left_by_the_mutation_and_denied_400(var: str, value: str) -> None:
    require_fixtures()
    guard = make_guard()
    review = variant(load_recorded("mutate-pod-create-2.json"), edit=_bad(var, value))
    mutated = run(review, guard)
    assert mutated.allowed and mutated.code is None
    assert not [op for op in mutated.patch if "NVIDIA_GPU_MEMORY" in json.dumps(op)]
    assert "driverCapMiB" in str(mutated.patch)  # the pod's cap is known; this container keeps its value

    patched = apply_checked(review["request"]["object"], list(mutated.patch))
    denied = run(carrying(variant(load_recorded("validate-pod-create-2.json")), patched), guard, validate)
    assert not denied.allowed and denied.code == 400 and denied.reason == "BadRequest"
    shown = value if len(value) <= 40 else f"{value[:30]}… ({len(value)} characters)"
    assert f"container 'ollama': env {var}=\"{shown}\" is not a driver VRAM cap" in denied.message
    why = "a hard limit of 0 MiB leaves the container no GPU memory" if value == "0" else "a whole number of MiB"
    assert why in denied.message and "8 GiB = 8192" in denied.message
    assert denied.message.startswith("pod team-a/ollama-capped denied by ollama-guard: ")


def test_a_request_above_the_authors_own_limit_is_denied() -> None:
    require_fixtures()
    guard = make_guard()
    edit = set_env(0, NVIDIA_GPU_MEMORY_LIMIT="4000", NVIDIA_GPU_MEMORY_REQUEST="5000")
    review = variant(load_recorded("mutate-pod-create-2.json"), edit=edit)
    mutated = run(review, guard)
    assert not [op for op in mutated.patch if "NVIDIA_GPU_MEMORY" in json.dumps(op)]
    patched = apply_checked(review["request"]["object"], list(mutated.patch))
    denied = run(carrying(variant(load_recorded("validate-pod-create-2.json")), patched), guard, validate)
    assert not denied.allowed and denied.code == 400
    assert (
        "container 'ollama': NVIDIA_GPU_MEMORY_REQUEST=5000 is above NVIDIA_GPU_MEMORY_LIMIT=4000: NVIDIA's "
        "driver-cap hook refuses to start such a container" in denied.message
    )


def test_warnings_over_the_wire(guard: GuardServer) -> None:
    """The mutating webhook's answer as kube-apiserver gets it: the patch and the kubectl warnings."""
    require_fixtures()
    edit = set_env(0, NVIDIA_GPU_MEMORY_LIMIT="81559", NVIDIA_GPU_MEMORY_REQUESTS="2048")
    response = guard.review("/mutate", variant(load_recorded("mutate-pod-create-2.json"), edit=edit))
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert response["warnings"] == [
        "container ollama: NVIDIA's hook ignores NVIDIA_GPU_MEMORY_REQUESTS; use NVIDIA_GPU_MEMORY_REQUEST",
        f"container ollama: NVIDIA_GPU_MEMORY_LIMIT=81559 lowered to {N} (per-GPU demand, MiB)",
    ]


@pytest.mark.parametrize("value", ["-1", "1.5", "abc", "1" * 30])
def test_garbage_over_the_wire_is_a_400_review_never_a_crash(guard: GuardServer, value: str) -> None:
    require_fixtures()
    edit = _bad(LIMIT, value)
    mutated = guard.review("/mutate", variant(load_recorded("mutate-pod-create-2.json"), edit=edit))
    assert mutated["allowed"] is True
    review = variant(load_recorded("validate-pod-create-2.json"), name="ollama-bad-cap", edit=edit)
    response = guard.review("/validate", review)
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert f"env {LIMIT}=" in response["status"]["message"] and "container 'ollama'" in response["status"]["message"]


# --- /validate and the audit report a missing or too high cap ----------------------------------------------------

SETTINGS = {
    "OLLAMA_MAX_LOADED_MODELS": "1", "OLLAMA_CONTEXT_LENGTH": "8192", "OLLAMA_NUM_PARALLEL": "1",
    "OLLAMA_FLASH_ATTENTION": "1",
}


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        pytest.param(
            {}, f"container ollama: no {LIMIT}/_REQUEST; driver cap unset (per-GPU demand {N})", id="both-missing"
        ),
        pytest.param(
            {LIMIT: "4096"}, f"container ollama: no {REQUEST}; driver cap unset (per-GPU demand {N})", id="no-request"
        ),
        pytest.param(
            {LIMIT: "80000", REQUEST: N},
            f"container ollama: {LIMIT}=80000 exceeds the per-GPU demand {N}",
            id="limit-above",
        ),
        pytest.param(
            {LIMIT: CONFIGMAP, REQUEST: N},
            f"container ollama: {LIMIT} from valueFrom exceeds the per-GPU demand {N}",
            id="limit-unreadable",
        ),
        pytest.param({LIMIT: N, REQUEST: N}, "", id="at-the-demand"),
        pytest.param({LIMIT: "4096", REQUEST: "2048"}, "", id="below-the-demand"),
    ],
)
def test_validate_warns_about_a_missing_or_too_high_cap(env: dict[str, Any], warning: str) -> None:
    """A pod that reaches /validate as written (the mutating webhook was away): admitted, with a warning."""
    require_fixtures()
    edit = set_env(0, **{**SETTINGS, **env})
    review = variant(load_recorded("validate-pod-create-2.json"), name="ollama-as-written", edit=edit)
    response = run(review, make_guard(), validate)
    assert response.allowed, response.message
    assert [w for w in response.warnings if "NVIDIA_GPU_MEMORY" in w] == ([warning] if warning else [])


def test_the_audit_reports_a_running_pod_without_a_cap() -> None:
    """A pod created before the guard set caps (the bundled snapshot's qwen2.5 server): a warning
    finding whose full text says what is missing, why it matters and the values to set."""
    report = run_audit(
        snapshot_objects(),
        cluster=load_settings().cluster_policy(),
        catalog=CATALOG,
        now=datetime(2025, 6, 1, tzinfo=UTC),
        state_origin="test",
    )
    (finding,) = [f for f in report.findings if f.rule == "driver-memory-limit"]
    assert (finding.resource.name, finding.result, finding.severity) == (
        "ollama-qwen-7d9f8b6c5d-x2kqp",
        "warn",
        "medium",
    )
    assert finding.category == "Driver VRAM cap"
    demand = dict(finding.properties)["demandMiB"]
    assert finding.message == (
        f"container 'ollama': no {LIMIT} and {REQUEST}: it was created without the guard's mutation (while "
        "the guard was away, or before it set driver caps), so NVIDIA's driver (R615+, container toolkit 1.20.1+) "
        f"does not cap it at the {demand} MiB per GPU the guard accounts for this pod; set {LIMIT}={demand}, "
        f"{REQUEST}={demand}"
    )


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        pytest.param({}, "", id="template-without-cap-is-capped-by-the-mutation"),
        pytest.param(
            {LIMIT: "80000"},
            f"container ollama: {LIMIT}=80000 exceeds the per-GPU demand {N}",
            id="template-sets-its-own",
        ),
        pytest.param({LIMIT: "4096"}, "", id="template-sets-a-lower-one"),
    ],
)
def test_a_workload_template_that_sets_its_own_cap(env: dict[str, str], warning: str) -> None:
    require_fixtures()

    def edit(obj: dict[str, Any]) -> None:
        container = obj["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [*container.get("env", []), *({"name": k, "value": v} for k, v in env.items())]

    review = variant(load_recorded("validate-deployment-create-1.json"), edit=edit)
    response = run(review, make_guard(), validate)
    assert response.allowed, response.message
    assert [w for w in response.warnings if "NVIDIA_GPU_MEMORY" in w] == ([warning] if warning else [])


def test_a_workload_template_with_a_garbage_cap_is_denied_at_apply() -> None:
    require_fixtures()

    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": LIMIT, "value": "16Gi"})

    response = run(variant(load_recorded("validate-deployment-create-1.json"), edit=edit), make_guard(), validate)
    assert not response.allowed and response.code == 400
    assert f'env {LIMIT}="16Gi" is not a driver VRAM cap' in response.message


# --- the rule itself, for any values ---------------------------------------------------------------------------------


def _container(env: dict[str, str | None]) -> ContainerFacts:
    return ContainerFacts(
        index=0, name="ollama", image="ollama/ollama", init=False, is_ollama=True, gpus=1, env=env, commands=()
    )


@given(
    cap=st.integers(min_value=1, max_value=1 << 20),
    limit=st.none() | st.integers(min_value=1, max_value=MAX_CAP_MIB),
    request=st.none() | st.integers(min_value=0, max_value=MAX_CAP_MIB),
)
def test_plan_cap_never_exceeds_the_cap_keeps_lower_values_and_is_idempotent(
    cap: int, limit: int | None, request: int | None
) -> None:
    env = {k: str(v) for k, v in ((LIMIT, limit), (REQUEST, request)) if v is not None}
    plan = plan_cap(_container(dict(env)), cap)
    if plan.problem:  # only the author's own request above their own (lower) limit
        assert limit is not None and request is not None and min(request, cap) > limit
        assert plan.changes == ()
        return
    after = {**env, **{c.name: str(c.value) for c in plan.changes}}
    final_limit, final_request = int(after[LIMIT]), int(after[REQUEST])
    assert final_request <= final_limit <= cap
    if limit is not None and limit <= cap:
        assert final_limit == limit
    if request is not None and request <= final_limit:
        assert final_request == request
    assert plan_cap(_container(dict(after)), cap).changes == ()


@given(text=st.text(max_size=60) | st.from_regex(r"\A0{0,30}[0-9]{1,20}\Z"))
def test_plan_cap_reads_any_text_without_crashing(text: str) -> None:
    plan = plan_cap(_container({LIMIT: text}), 7949)
    accepted = text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_CAP_MIB  # Go's ParseUint, base 10
    assert bool(plan.problem) is not accepted
    if plan.problem:
        assert f"env {LIMIT}=" in plan.problem and len(plan.short) <= 120


# --- the estimate shows the cap ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "cap"),
    [
        pytest.param([], LLAMA31_8B_MIB, id="one-gpu"),
        pytest.param(["--gpus", "2"], -(-LLAMA31_8B_MIB // 2), id="two-gpus"),
    ],
)
def test_cli_estimate_shows_the_cap(args: list[str], cap: int) -> None:
    runner = CliRunner()
    body = json.loads(runner.invoke(app, ["estimate", "llama3.1:8b", *args, "--json"]).stdout)
    assert body["driver_cap_mib"] == cap == -(-body["demand_mib"] // body["settings"]["gpus"])
    table = runner.invoke(app, ["estimate", "llama3.1:8b", *args]).stdout
    assert f"driver VRAM cap: {LIMIT}={cap} {REQUEST}={cap} (MiB" in table
    assert ("on each of its 2 GPUs" in table) is bool(args)


def test_cli_estimate_with_the_policy_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_GUARD_DRIVER_MEMORY_LIMIT", "false")
    runner = CliRunner()
    assert json.loads(runner.invoke(app, ["estimate", "llama3.1:8b", "--json"]).stdout)["driver_cap_mib"] is None
    assert "driver VRAM cap: off" in runner.invoke(app, ["estimate", "llama3.1:8b"]).stdout
