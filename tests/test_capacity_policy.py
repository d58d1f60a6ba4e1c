"""`capacity_at_admission` (design §14): with the scheduler accounting VRAM, "no node has room right
now" is a warning by default and the pod waits Pending; what can never succeed is still denied."""

from __future__ import annotations

from typing import Any

import pytest
from test_admission import binding_review, make_guard, ollama_pod_review, request, requires_fixtures

from webhook.admission.validation import validate
from webhook.cli.settings import load_settings

WARN = load_settings(capacity_at_admission="warn").cluster_policy()
DENY = load_settings(capacity_at_admission="deny").cluster_policy()


def fill(guard: Any, count: int = 10) -> None:
    """Bind llama3.1:8b pods to the bundled H100 until it is full."""
    for _ in range(count):
        pod = ollama_pod_review()
        if validate(request(pod), guard).allowed:
            validate(request(binding_review(pod)), guard)


def test_the_product_default_is_warn() -> None:
    import os

    assert os.environ["OLLAMA_GUARD_CAPACITY_AT_ADMISSION"] == "deny"  # the suite's setting (conftest)
    from webhook.core.policy import ClusterPolicy

    assert ClusterPolicy().capacity_at_admission == "warn"
    assert WARN.capacity_at_admission == "warn"  # an explicit argument beats the environment


@requires_fixtures
@pytest.mark.parametrize(
    ("cluster", "pod", "allowed", "text"),
    [
        pytest.param(WARN, {}, True, "waits Pending for room", id="warn-unpinned-waits"),
        pytest.param(DENY, {}, False, "no time-sliced GPU node it can run on has that free", id="deny-unpinned"),
        pytest.param(WARN, {"node": "gpu-h100-a"}, False, "pinned (spec.nodeName) to node gpu-h100-a, which has",
                     id="warn-pinned-still-denied"),
        pytest.param(WARN, {"models": "llama3.1:70b", "env": {"OLLAMA_CONTEXT_LENGTH": "131072"}}, False,
                     "more than any time-sliced GPU node it can run on holds even when empty", id="warn-never-fits"),
    ],
)
def test_a_full_node(cluster: Any, pod: dict[str, Any], allowed: bool, text: str) -> None:
    guard, _ = make_guard(cluster=cluster)
    fill(guard)
    answer = validate(request(ollama_pod_review(**pod)), guard)
    assert answer.allowed is allowed
    if allowed:
        assert len(answer.warnings) == 1 and text in answer.warnings[0]
        assert len(answer.warnings[0]) <= 120
        assert "gpu-h100-a" in answer.warnings[0]  # where the most is free
    else:
        assert text in answer.message, answer.message
        assert answer.message.rstrip(".").split(". ")[-1].startswith(("Fix:", "or wait"))


@requires_fixtures
def test_a_pod_that_does_not_fit_now_is_admitted_with_a_warning_and_the_binding_still_guards() -> None:
    guard, _ = make_guard(cluster=WARN)
    fill(guard)
    late = ollama_pod_review()
    assert validate(request(late), guard).allowed
    binding = validate(request(binding_review(late)), guard)
    assert not binding.allowed and "would over-commit" in binding.message  # the safety net behind §14
