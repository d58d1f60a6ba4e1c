"""The reviews a real kube-apiserver 1.24 sent, POSTed over real TLS to a real uvicorn server.

First the admission contract for every recorded file unchanged (design §10); then the expected
outcome of each file and of variants derived from them (other users, namespaces, models,
replicas), worked out from design §7-§9; then a replay in the order the API server sent them;
then the structured log line every decision leaves.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import (
    GuardServer,
    endpoint_for,
    load_recorded,
    recorded_bytes,
    recorded_params,
    require_fixtures,
    variant,
)
from design_figures import LLAMA31_8B_MIB

from webhook.http.logs import JsonFormatter

MIB = 1 << 20
ENV_NAMES = ("OLLAMA_MAX_LOADED_MODELS", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_NUM_PARALLEL", "OLLAMA_FLASH_ATTENTION")
ANN_DEMAND = "ollama-guard.io/vram-demand"
ANN_ESTIMATE = "ollama-guard.io/estimate"
NODE = "gpu-h100-a"
#: one replica's even share of the bundled node (81559 MiB / 4 replicas): what an undeclared pod requests
EVEN_SHARE_MIB = 81559 // 4


def decode_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        return []
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops


# --- the contract, for every recorded file ----------------------------------------------------------


@pytest.mark.parametrize("name", recorded_params())
def test_recorded_review_gets_a_well_formed_admission_review(guard: GuardServer, name: str) -> None:
    body = recorded_bytes(name)
    endpoint = endpoint_for(name)
    reply = guard.post(endpoint, body, timeout="5s")

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].split(";")[0] == "application/json"
    document = reply.json()
    assert set(document) == {"apiVersion", "kind", "response"}
    assert (document["apiVersion"], document["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = document["response"]
    assert response["uid"] == json.loads(body)["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    assert ("patch" in response) == ("patchType" in response)
    if "patch" in response:
        assert endpoint == "/mutate"
        assert response["allowed"] is True
        assert response["patchType"] == "JSONPatch"
        assert isinstance(decode_patch(response), list)
    warnings = response.get("warnings", [])
    assert len(warnings) <= 4
    assert all(isinstance(w, str) and 0 < len(w) <= 120 for w in warnings)
    if not response["allowed"]:
        assert response["status"]["code"] in (400, 403, 500)
        assert response["status"]["message"]


# --- expected outcomes --------------------------------------------------------------------------------


def env_appends(*values: str) -> list[tuple[str, str, Any]]:
    return [
        ("add", "/spec/containers/0/env/-", {"name": n, "value": v}) for n, v in zip(ENV_NAMES, values, strict=True)
    ]


def driver_cap(mib: int) -> list[dict[str, str]]:
    """The driver cap's two variables (design §8), per GPU: the demand on these one-GPU pods."""
    return [{"name": n, "value": str(mib)} for n in ("NVIDIA_GPU_MEMORY_LIMIT", "NVIDIA_GPU_MEMORY_REQUEST")]


def vram_request(mib: int) -> list[tuple[str, str, Any]]:
    """The `ollama-guard.io/vram-mib` request (design §8, §14) added next to the recorded GPU request."""
    return [
        ("add", f"/spec/containers/0/resources/{section}/ollama-guard.io~1vram-mib", str(mib))
        for section in ("limits", "requests")
    ]


def _ops(response: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(op["op"], op["path"], op.get("value")) for op in decode_patch(response)]


def _without_estimate(ops: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    """The estimate annotation is a long JSON text: checked on its own."""
    return [op for op in ops if op[1] != "/metadata/annotations/ollama-guard.io~1estimate"]


PLAIN_ALLOW: dict[str, Any] = {"allowed": True, "patch": [], "warnings": []}

RECORDED_OUTCOMES = [
    *[
        pytest.param(f"mutate-binding-binding-create-{n}.json", PLAIN_ALLOW, id=f"mutate-binding-{n}")
        for n in range(1, 5)
    ],
    *[
        pytest.param(name, PLAIN_ALLOW, id=name.removesuffix(".json"))
        for name in (
            "mutate-cronjob-create-1.json",
            "mutate-deployment-create-1.json",
            "mutate-deployment-create-dryrun-1.json",
            "mutate-deployment-update-1.json",
            "mutate-namespace-create-1.json",
            "mutate-namespace-update-1.json",
            "mutate-scale-scale-update-1.json",
        )
    ],
    pytest.param(
        "mutate-pod-create-1.json",
        {
            "allowed": True,
            # no env and no annotations: both are added whole; no models, so no demand stamp, and the
            # VRAM request is one replica's even share of the node it can land on
            "patch": [
                (
                    "add",
                    "/spec/containers/0/env",
                    [{"name": n, "value": v} for n, v in zip(ENV_NAMES, ("1", "8192", "1", "1"), strict=True)]
                    + driver_cap(EVEN_SHARE_MIB),
                ),
                *vram_request(EVEN_SHARE_MIB),
                (
                    "add",
                    "/metadata/annotations",
                    {
                        ANN_ESTIMATE: f'{{"demandMiB":null,"driverCapMiB":{EVEN_SHARE_MIB},'
                        f'"requestedMiB":{EVEN_SHARE_MIB},"source":"default","v":1}}'
                    },
                ),
            ],
            "warnings": [],
        },
        id="mutate-pod-create-1",
    ),
    *[
        pytest.param(
            f"mutate-pod-create-{n}.json",
            {
                "allowed": True,
                "patch": [
                    *env_appends("1", "8192", "1", "1"),
                    *[("add", "/spec/containers/0/env/-", item) for item in driver_cap(LLAMA31_8B_MIB)],
                    *vram_request(LLAMA31_8B_MIB),
                    ("add", "/metadata/annotations/ollama-guard.io~1vram-demand", str(LLAMA31_8B_MIB)),
                ],
                "estimate": {
                    "models": ["llama3.1:8b"],
                    "modelsFrom": "annotation",
                    "demandMiB": LLAMA31_8B_MIB,
                    "requestedMiB": LLAMA31_8B_MIB,
                    "driverCapMiB": LLAMA31_8B_MIB,
                },
                "warnings": [],
            },
            id=f"mutate-pod-create-{n}",
        )
        for n in (2, 3, 4)
    ],
    # the pods are not known to a fresh guard: nothing to hold against the binding
    *[
        pytest.param(f"validate-binding-binding-create-{n}.json", PLAIN_ALLOW, id=f"validate-binding-{n}")
        for n in range(1, 5)
    ],
    *[
        pytest.param(name, PLAIN_ALLOW, id=name.removesuffix(".json"))
        for name in (
            "validate-cronjob-create-1.json",
            "validate-deployment-create-1.json",
            "validate-deployment-create-dryrun-1.json",
            "validate-deployment-update-1.json",
            # kubectl as `admin` (group system:masters): a policy admin may change guard annotations
            "validate-namespace-create-1.json",
            "validate-namespace-update-1.json",
        )
    ],
    pytest.param(
        "validate-pod-create-1.json",
        {
            "allowed": True,
            "warnings": [
                "OLLAMA_CONTEXT_LENGTH, OLLAMA_FLASH_ATTENTION, OLLAMA_MAX_LOADED_MODELS, OLLAMA_NUM_PARALLEL not set",
                "no models declared: counted as one replica's even share",
            ],
        },
        id="validate-pod-create-1",
    ),
    # recorded without the mutation, so the settings and the driver cap are missing: warnings, not a denial
    *[
        pytest.param(
            f"validate-pod-create-{n}.json",
            {
                "allowed": True,
                "warnings": [
                    "OLLAMA_CONTEXT_LENGTH, OLLAMA_FLASH_ATTENTION, OLLAMA_MAX_LOADED_MODELS, OLLAMA_NUM_PARALLEL",
                    f"container ollama: no NVIDIA_GPU_MEMORY_LIMIT/_REQUEST; driver cap unset (per-GPU demand "
                    f"{LLAMA31_8B_MIB})",
                ],
            },
            id=f"validate-pod-create-{n}",
        )
        for n in (2, 3, 4)
    ],
    pytest.param(
        "validate-scale-scale-update-1.json",
        {
            "allowed": True,
            "warnings": ["has not seen the pod template of deployment team-a/ollama; this scale-up was not checked"],
        },
        id="validate-scale-without-known-template",
    ),
]


def check_outcome(response: dict[str, Any], expected: dict[str, Any]) -> None:
    assert response["allowed"] is expected["allowed"], response
    if "code" in expected:
        assert response["status"]["code"] == expected["code"], response
    for fragment in expected.get("message", []):
        assert fragment in response["status"]["message"], response["status"]["message"]
    if "patch" in expected:
        assert _without_estimate(_ops(response)) == expected["patch"]
    if "estimate" in expected:
        estimates = [v for _, p, v in _ops(response) if p.endswith("ollama-guard.io~1estimate")]
        assert len(estimates) == 1
        breakdown = json.loads(estimates[0])
        assert {k: breakdown[k] for k in expected["estimate"]} == expected["estimate"]
    warnings = response.get("warnings", [])
    if "warnings" in expected:
        assert len(warnings) == len(expected["warnings"]), warnings
        for fragment, warning in zip(expected["warnings"], warnings, strict=True):
            assert fragment in warning, warnings


@pytest.mark.parametrize(("name", "expected"), RECORDED_OUTCOMES)
def test_recorded_review_outcome_on_a_fresh_guard(
    start_guard: Callable[..., GuardServer],
    recorded: Callable[[str], dict[str, Any]],
    name: str,
    expected: dict[str, Any],
) -> None:
    fresh = start_guard()
    check_outcome(fresh.review(endpoint_for(name), recorded(name)), expected)


def test_every_recorded_file_has_an_expected_outcome() -> None:
    require_fixtures()
    covered = {p.values[0] for p in RECORDED_OUTCOMES}
    assert {p.values[0] for p in recorded_params()} <= covered


# --- variants derived from the recorded reviews -------------------------------------------------------

NON_ADMIN = {"user": "alice", "groups": ("system:authenticated",)}
GPU_NODE_FULL = "no time-sliced GPU node it can run on has that free: gpu-h100-a:"
#: replicas: how many more the nodes hold, per node, and the fix that follows from it (issue 18)
NODES_HOLD_7 = "they can run on hold 7 more right now: gpu-h100-a can hold 7 more (50.7 GiB free of 79.6 GiB)"


def _keep_enforcement(obj: dict[str, Any]) -> None:
    obj["metadata"]["annotations"]["ollama-guard.io/enforcement"] = "enforce"
    obj["metadata"]["labels"]["team"] = "a"


def _scale_to(replicas: int) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["replicas"] = replicas

    return edit


VARIANTS = [
    pytest.param(
        [],
        "validate-namespace-update-1.json",
        NON_ADMIN,
        {
            "allowed": False,
            "code": 403,
            "message": [
                "namespace team-a: user 'alice' may not add, change or remove",
                "(ollama-guard.io/enforcement)",
                "only policy admins may (group system:masters)",
            ],
        },
        id="namespace-update-by-non-admin-denied",
    ),
    pytest.param(
        [],
        "validate-namespace-create-1.json",
        NON_ADMIN,
        {"allowed": False, "code": 403, "message": ["only policy admins may", "ollama-guard.io/enforcement"]},
        id="namespace-create-with-guard-annotation-by-non-admin-denied",
    ),
    pytest.param(
        [],
        "validate-namespace-update-1.json",
        {**NON_ADMIN, "edit": _keep_enforcement},
        PLAIN_ALLOW,
        id="namespace-update-by-non-admin-not-touching-guard-annotations",
    ),
    pytest.param(
        ["validate-deployment-create-1.json"],
        "validate-scale-scale-update-1.json",
        {},
        PLAIN_ALLOW,
        id="scale-after-the-deployment-was-seen",
    ),
    pytest.param(
        ["validate-deployment-create-1.json"],
        "validate-scale-scale-update-1.json",
        {"edit": _scale_to(30)},
        {
            "allowed": False,
            "code": 403,
            "message": ["scaling deployment team-a/ollama to 30 denied", "29 more replicas of pod", NODES_HOLD_7,
                        "at most 7 more replicas"],
        },
        id="scale-to-30-denied",
    ),
    pytest.param(
        ["validate-deployment-create-dryrun-1.json"],
        "validate-scale-scale-update-1.json",
        {"name": "ollama-dry"},
        {"allowed": True, "warnings": ["has not seen the pod template of deployment team-a/ollama-dry"]},
        id="dry-run-deployment-is-not-remembered",
    ),
    pytest.param(
        [],
        "validate-deployment-update-1.json",
        {"replicas": 20},
        {
            "allowed": False,
            "code": 403,
            "message": ["deployment team-a/ollama denied", "replicas of pod", NODES_HOLD_7],
        },
        id="deployment-update-to-20-replicas-denied",
    ),
    pytest.param(
        [],
        "mutate-pod-create-2.json",
        {"namespace": "kube-system"},
        PLAIN_ALLOW,
        id="mutate-in-exempt-namespace-untouched",
    ),
    pytest.param(
        [],
        "mutate-pod-create-2.json",
        {"namespace": "team-b"},
        {"allowed": True, "warnings": []},
        id="mutate-in-team-b-context-16384",
    ),
    pytest.param(
        [],
        "validate-pod-create-2.json",
        {"models": "###"},
        {"allowed": False, "code": 400, "message": ['"###" is not an Ollama model reference']},
        id="validate-malformed-model-400",
    ),
    pytest.param(
        [],
        "validate-pod-create-2.json",
        {"models": "myorg/custom:latest"},
        {"allowed": False, "code": 400, "message": ["unknown model 'myorg/custom:latest'", "ollama-guard.io/vram"]},
        id="validate-unknown-model-400",
    ),
    pytest.param(
        [],
        "validate-pod-create-2.json",
        {"annotations": {"ollama-guard.io/vram": "-1Gi"}},
        {"allowed": False, "code": 400, "message": ["ollama-guard.io/vram"]},
        id="validate-negative-vram-400",
    ),
    pytest.param(
        [],
        "validate-pod-create-2.json",
        {"models": "qwen2.5:72b"},
        {"allowed": False, "code": 403, "message": ["qwen2.5:72b", GPU_NODE_FULL, "50.7 GiB free of 79.6 GiB"]},
        id="validate-72b-does-not-fit-the-free-vram",
    ),
    pytest.param(
        [],
        "validate-pod-create-2.json",
        {"models": "llama3.1:70b", "namespace": "team-b"},
        {"allowed": True},
        id="validate-70b-in-warn-namespace-allowed",
    ),
    pytest.param(
        [],
        "validate-pod-create-2.json",
        {"models": "llama3.1:70b", "node": "cpu-a"},
        {"allowed": True},
        id="validate-pinned-to-unguarded-node-allowed",
    ),
    pytest.param(
        [],
        "validate-binding-binding-create-2.json",
        {"node": "cpu-a"},
        PLAIN_ALLOW,
        id="binding-to-unguarded-node-allowed",
    ),
]


@pytest.mark.parametrize(("before", "name", "changes", "expected"), VARIANTS)
def test_variant_outcome(
    start_guard: Callable[..., GuardServer],
    recorded: Callable[[str], dict[str, Any]],
    before: list[str],
    name: str,
    changes: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    fresh = start_guard()
    for earlier in before:
        assert fresh.review(endpoint_for(earlier), recorded(earlier))["allowed"] is True
    check_outcome(fresh.review(endpoint_for(name), variant(recorded(name), **changes)), expected)


def test_mutation_follows_the_namespace_defaults(guard: GuardServer, recorded: Callable[[str], dict[str, Any]]) -> None:
    """team-b's `ollama-guard.io/context-length: 16384` is what gets injected there."""
    response = guard.review("/mutate", variant(recorded("mutate-pod-create-2.json"), namespace="team-b"))
    assert _without_estimate(_ops(response))[:4] == env_appends("1", "16384", "1", "1")


def test_warn_mode_says_what_it_would_deny(guard: GuardServer, recorded: Callable[[str], dict[str, Any]]) -> None:
    review = variant(recorded("validate-pod-create-2.json"), models="llama3.1:70b", namespace="team-b")
    response = guard.review("/validate", review)
    assert response["allowed"] is True
    assert any(w.startswith("would deny: ") and "gpu-h100-a" in w for w in response["warnings"])


# --- the recorded session, replayed in order --------------------------------------------------------


def test_replaying_the_recorded_session_fills_the_ledger_like_the_cluster(
    start_guard: Callable[..., GuardServer], recorded: Callable[[str], dict[str, Any]]
) -> None:
    """The order of the README: each pod, then its binding; the scale after the Deployment."""
    fresh = start_guard()
    capacity = fresh.metric("ollama_guard_node_vram_capacity_mib", node=NODE)
    free_before = fresh.metric("ollama_guard_node_vram_free_mib", node=NODE)
    assert capacity == 81559  # nvidia.com/gpu.memory x gpu.count of the bundled snapshot
    assert free_before is not None
    sequence = [
        "validate-pod-create-1.json",
        "validate-binding-binding-create-1.json",
        "validate-deployment-create-1.json",
        "validate-pod-create-2.json",
        "validate-binding-binding-create-2.json",
        "validate-scale-scale-update-1.json",
        "validate-pod-create-3.json",
        "validate-binding-binding-create-3.json",
        "validate-deployment-update-1.json",
        "validate-pod-create-4.json",
        "validate-binding-binding-create-4.json",
    ]
    for name in sequence:
        response = fresh.review("/validate", recorded(name))
        assert response["allowed"] is True, (name, response)
        if name.startswith("validate-scale"):
            assert "warnings" not in response  # the Deployment's template is known by now
    # pod-create-1 declares no model: one replica's even share (81559 / 4); the others llama3.1:8b
    expected_free = free_before - 81559 // 4 - 3 * LLAMA31_8B_MIB
    assert fresh.metric("ollama_guard_node_vram_free_mib", node=NODE) == expected_free
    assert fresh.metric("ollama_guard_admission_requests_total", webhook="validate", kind="Binding") == 4


# --- structured logs ------------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """JSON lines the server writes on the `ollama_guard` logger (it does not propagate in production)."""
    logger = logging.getLogger("ollama_guard")
    handler = _Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # plain admissions are logged at DEBUG, reasons at INFO
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize(
    ("endpoint", "name", "changes", "decision", "kind", "where"),
    [
        pytest.param("/mutate", "mutate-pod-create-2.json", {}, "patched", "Pod", ("team-a", ""), id="patched"),
        pytest.param(
            "/validate",
            "validate-pod-create-2.json",
            {"models": "llama3.1:70b"},
            "denied",
            "Pod",
            ("team-a", "ollama-56cdc79669-r8tvv"),
            id="denied",
        ),
        pytest.param(
            "/validate",
            "validate-binding-binding-create-2.json",
            {},
            "allowed",
            "Binding",
            ("team-a", "ollama-56cdc79669-r8tvv"),
            id="allowed",
        ),
    ],
)
def test_each_decision_leaves_one_json_log_line(
    guard: GuardServer,
    log_lines: list[str],
    endpoint: str,
    name: str,
    changes: dict[str, Any],
    decision: str,
    kind: str,
    where: tuple[str, str],
) -> None:
    review = variant(load_recorded(name), **changes)
    uid = review["request"]["uid"]
    guard.review(endpoint, review)

    entries = [json.loads(line) for line in log_lines]
    mine = [e for e in entries if e.get("uid") == uid]
    assert len(mine) == 1, entries
    entry = mine[0]
    assert entry["msg"] == "admission"
    assert entry["level"] == ("info" if decision == "denied" else "debug")
    assert (entry["kind"], entry["namespace"], entry["name"]) == (kind, *where)
    assert entry["webhook"] == endpoint.strip("/")
    assert entry["decision"] == decision
    assert isinstance(entry["latency_ms"], int | float)
    assert 0 <= entry["latency_ms"] < 5000
    if decision == "denied":
        assert "llama3.1:70b" in entry["reason"]
