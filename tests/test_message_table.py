"""Every denial and warning the guard produces, as its author reads it (issue 18): one scenario per
message, each answer checked for what a message must do, and all of them kept as golden text in
`tests/golden/messages.txt` (`UPDATE_GOLDEN=1 pytest tests/test_message_table.py` rewrites it; review
the diff like any change of product surface)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_admission import (
    binding_review,
    deployment_review,
    make_guard,
    ollama_pod_review,
    recorded,
    request,
    requires_fixtures,
    workload_review,
)
from test_messages import ends_with_a_fix, gpu_tenant

from webhook.admission.review import AdmissionResponse
from webhook.admission.validation import validate
from webhook.cli.settings import load_settings

GOLDEN = Path(__file__).parent / "golden" / "messages.txt"
DENY = load_settings(capacity_at_admission="deny").cluster_policy()
WARN = load_settings(capacity_at_admission="warn").cluster_policy()
# with the snapshot's two running tenants (29,614 MiB) this leaves 4.7 GiB of the bundled H100's 79.6
BIG = gpu_tenant("big", 47_144, node="gpu-h100-a")
ROOMY_B = {
    "kind": "Node",
    "metadata": {"name": "gpu-h100-b", "labels": {
        "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.replicas": "4",
        "nvidia.com/gpu.sharing-strategy": "time-slicing"}},
    "status": {"allocatable": {"nvidia.com/gpu": "4"}},
}


def pod(cluster: Any = DENY, ns: dict[str, str] | None = None, extra: list[Any] | None = None,
        **review: Any) -> AdmissionResponse:
    guard, _ = make_guard(cluster=cluster, namespaces={"team-a": ns or {}}, extra=extra or [BIG])
    return validate(request(ollama_pod_review(**review)), guard)


def binding() -> AdmissionResponse:
    """A pod admitted at CREATE with a warning (it waits Pending), then bound to the full node anyway
    (a scheduler that does not know the resource): the safety net behind design §14."""
    guard, _ = make_guard(cluster=WARN, extra=[BIG])
    review = ollama_pod_review()
    assert validate(request(review), guard).allowed
    return validate(request(binding_review(review)), guard)


def deployment(replicas: int, old: int | None = None) -> AdmissionResponse:
    guard, _ = make_guard(extra=[BIG])
    return validate(request(deployment_review(replicas, old_replicas=old)), guard)


def daemonset() -> AdmissionResponse:
    guard, _ = make_guard(extra=[ROOMY_B])
    review = workload_review("DaemonSet", {})
    review["request"]["object"]["spec"]["template"]["metadata"]["annotations"]["ollama-guard.io/models"] = "qwen2.5:72b"
    return validate(request(review), guard)


def scale() -> AdmissionResponse:
    guard, _ = make_guard()
    validate(request(deployment_review(1)), guard)
    review = copy.deepcopy(recorded("validate-scale-scale-update-1"))
    review["request"]["object"]["spec"]["replicas"] = 40
    return validate(request(review), guard)


def namespace_edit() -> AdmissionResponse:
    guard, _ = make_guard()
    review = copy.deepcopy(recorded("validate-namespace-update-1"))
    review["request"]["userInfo"] = {"username": "alice", "groups": ["team-a-admins"]}
    return validate(request(review), guard)


SCENARIOS: dict[str, Callable[[], AdmissionResponse]] = {
    "pod-capacity-deny": pod,
    "pod-capacity-warn": lambda: pod(WARN),
    "pod-pinned-no-room": lambda: pod(WARN, node="gpu-h100-a"),
    "pod-never-fits": lambda: pod(WARN, annotations={"ollama-guard.io/vram": "90Gi"}),
    "pod-context-over-cap": lambda: pod(env={"OLLAMA_CONTEXT_LENGTH": "32768"}, extra=[]),
    "pod-unknown-model": lambda: pod(models="myorg/custom:latest", extra=[]),
    "pod-model-not-allowed": lambda: pod(ns={"ollama-guard.io/allowed-models": "qwen2.5:*"}, extra=[]),
    "pod-quota": lambda: pod(ns={"ollama-guard.io/vram-quota": "4Gi"}, extra=[]),
    "pod-bad-namespace-annotation": lambda: pod(ns={"ollama-guard.io/num-parallel": "many"}, extra=[]),
    "pod-vram-below-1mib": lambda: pod(annotations={"ollama-guard.io/vram": "1e-3"}, extra=[]),
    "pod-forged-demand": lambda: pod(annotations={"ollama-guard.io/vram-demand": "5"}, extra=[]),
    "binding-over-commit": binding,
    "deployment-replicas-short": lambda: deployment(3),
    "deployment-scale-up-short": lambda: deployment(4, old=1),
    "scale-subresource-short": scale,
    "daemonset-a-node-short": daemonset,
    "namespace-edit-by-tenant": namespace_edit,
}


def render(name: str, answer: AdmissionResponse) -> str:
    head = "allowed" if answer.allowed else f"denied {answer.code}"
    lines = [f"## {name}: {head}"]
    if answer.message:
        lines.append(answer.message)
    lines += [f"warning: {w}" for w in answer.warnings]
    return re.sub(r"\bollama-[0-9a-f]{5}\b", "ollama-xxxxx", "\n".join(lines))  # generated pod names


@pytest.fixture(scope="module")
def answers() -> dict[str, AdmissionResponse]:
    return {name: make() for name, make in SCENARIOS.items()}


@requires_fixtures
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_message_does_what_a_message_must(answers: dict[str, AdmissionResponse], name: str) -> None:
    answer = answers[name]
    for warning in answer.warnings:
        assert len(warning) <= 120, warning
    if answer.allowed:
        assert answer.warnings, f"{name}: allowed without a word, though something was wrong"
        return
    text = answer.message
    assert re.match(r"^(pod|binding|deployment|scaling|daemonset|namespace|statefulset)\b", text, re.I), text
    assert "ollama-guard" in text
    assert ends_with_a_fix(text), text
    sizes = re.findall(r"\d+(?:\.\d+)? ?(GiB|MiB|GB|Gi|Mi)\b", text)
    assert set(sizes) <= {"GiB", "MiB", "Gi", "Mi"}, sizes  # the guard's figures in GiB/MiB; Gi, Mi as typed


@requires_fixtures
def test_the_messages_match_the_golden_text(answers: dict[str, AdmissionResponse]) -> None:
    text = "\n\n".join(render(name, answers[name]) for name in SCENARIOS) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.read_text(encoding="utf-8") == text, "messages changed; rerun with UPDATE_GOLDEN=1 and review"
