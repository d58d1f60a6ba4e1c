"""Denials and warnings are product surface (issue 18): each names its object, states what was asked and
what is available in the same units, never claims what the numbers beside it contradict, ends with a
fix; warnings stay under 120 characters. VRAM declarations that are not whole bytes, or below 1 MiB,
are refused in every enforcement mode."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from live_cluster import gpu_node, namespace
from test_admission import make_guard, ollama_pod_review, request, requires_fixtures

from webhook.admission.validation import validate
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.demand import compute_demand
from webhook.core.evaluation import evaluate_pod
from webhook.core.ledger import Ledger
from webhook.core.quantity import QuantityError, format_mib, parse_vram_mib
from webhook.core.tenants import read_pod
from webhook.core.view import build_view, tenant_from_pod

CATALOG = load_catalog()
DENY = load_settings(capacity_at_admission="deny").cluster_policy()
WARN = load_settings(capacity_at_admission="warn").cluster_policy()
FIX_WORDS = ("Fix:", "fix", "use ", "set ", "ask ", "remove", "declare", "request ", "wait", "lower", "retry", "run ")


def ends_with_a_fix(message: str) -> bool:
    """The last sentence (or the last two, for "…. Fix: …") tells the author what to do."""
    tail = ". ".join(message.strip().rstrip(".").split(". ")[-2:]).lower()
    return any(word.lower() in tail for word in FIX_WORDS)


# --- VRAM declarations (every mode) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("1e-3", "0.001 bytes, not a whole number of bytes", id="thousandth-of-a-byte"),
        pytest.param("0.5", "0.5 bytes, not a whole number of bytes", id="half-a-byte"),
        pytest.param("1k", "1000 bytes, less than 1 MiB", id="one-kilobyte"),
        pytest.param("0.5Mi", "524288 bytes, less than 1 MiB", id="half-a-mib"),
        pytest.param("1048575", "1048575 bytes, less than 1 MiB", id="one-byte-short"),
        pytest.param("24 Gi", "", id="space"),
        pytest.param("-1Gi", "negative", id="negative"),
    ],
)
def test_parse_vram_mib_refuses(value: str, reason: str) -> None:
    with pytest.raises(QuantityError) as caught:
        parse_vram_mib(value)
    assert reason in str(caught.value) and "24Gi" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "mib"),
    [
        pytest.param("1Mi", 1, id="one-mib"),
        pytest.param("1048576", 1, id="one-mib-in-bytes"),
        pytest.param("1048577", 2, id="rounds-up"),
        pytest.param("24Gi", 24576, id="24Gi"),
        pytest.param("1.5Gi", 1536, id="fraction-of-gib-is-whole-bytes"),
        pytest.param("2e9", 1908, id="exponent"),
    ],
)
def test_parse_vram_mib_accepts(value: str, mib: int) -> None:
    assert parse_vram_mib(value) == mib


@requires_fixtures
@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
@pytest.mark.parametrize("value", ["1e-3", "1k", "0.5Mi"])
def test_a_vram_declaration_below_one_mib_is_denied_in_every_mode(mode: str, value: str) -> None:
    guard, _ = make_guard(namespaces={"team-a": {"ollama-guard.io/enforcement": mode}})
    answer = validate(request(ollama_pod_review(annotations={"ollama-guard.io/vram": value})), guard)
    assert not answer.allowed and answer.code == 400
    assert "pod annotation ollama-guard.io/vram" in answer.message and f'"{value}"' in answer.message
    assert answer.message.endswith("declare the pod's whole VRAM, at least 1Mi.")


# --- capacity messages agree with the numbers (property) ------------------------------------------


def gpu_tenant(name: str, vram_mib: int, node: str = "") -> dict[str, Any]:
    pod: dict[str, Any] = {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a", "uid": str(uuid.uuid4()),
                     "annotations": {"ollama-guard.io/vram": f"{vram_mib}Mi"}},
        "spec": {"containers": [{"name": "c", "image": "cuda", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Running" if node else "Pending"},
    }
    if node:
        pod["spec"]["nodeName"] = node
    return pod


NODES = st.lists(
    st.tuples(st.sampled_from([24576, 46068, 81559]), st.lists(st.integers(1_000, 30_000), max_size=4)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(nodes=NODES, demand=st.integers(1_000, 90_000), replicas=st.integers(1, 12))
def test_capacity_messages_never_contradict_the_numbers(
    nodes: list[tuple[int, list[int]]], demand: int, replicas: int
) -> None:
    objects: list[dict[str, Any]] = [namespace("team-a")]
    for i, (memory, running) in enumerate(nodes):
        objects.append(gpu_node(f"n{i}", memory=str(memory)))
        objects += [gpu_tenant(f"t{i}-{j}", mib, node=f"n{i}") for j, mib in enumerate(running)]
    view = build_view(objects, cluster=DENY, catalog=CATALOG)
    ledger = Ledger(view)
    pod = gpu_tenant("new", demand)
    result = evaluate_pod(pod, namespace="team-a", cluster=DENY, catalog=CATALOG, view=view,
                          committed=ledger.committed, replicas=replicas)
    capacity = [v for v in result.violations if v.rule == "capacity"]
    # what the ledger would really admit, copy after copy, on the candidate nodes
    facts = read_pod(pod, gpu_resources=DENY.gpu_resources)
    demand_of = compute_demand(facts, ns=result.policy, cluster=DENY, catalog=CATALOG)
    admitted = 0
    for name, node in view.nodes.items():
        for k in range(replicas + 1):
            copy = tenant_from_pod(facts, demand_of)._replace(uid=f"{name}-{k}", name=f"c-{name}-{k}")
            fit = ledger.reserve(copy, node)
            if not fit.ok:
                break
            admitted += 1
    event("fits" if admitted >= replicas else "single short" if replicas == 1 else "replicas short")
    if admitted >= replicas:
        assert not capacity
        return
    (violation,) = capacity
    text = violation.message
    if replicas == 1:
        assert "no time-sliced GPU node it can run on has that free" in text or "even when empty" in text
        for fit in result.fits:  # every node listed really lacks the room
            assert fit.free_mib < fit.demand_mib or fit.exceeds_gpu
            assert f"{fit.node}: {format_mib(fit.free_mib)} free of {format_mib(fit.budget_mib)}" in text
    elif "even when empty" not in text:
        assert f"{replicas} replicas of pod team-a/new" in text
        if admitted:
            assert f"hold {admitted} more right now" in text and f"at most {admitted} more replicas" in text
        else:
            assert "hold no more right now" in text and "at most" not in text
        for fit in result.fits:
            each = max(fit.budget_mib - fit.committed_mib, 0) // fit.demand_mib
            assert f"{fit.node} can hold {each} more ({format_mib(fit.free_mib)} free" in text
    assert ends_with_a_fix(text)
    assert len(violation.summary) <= 120


# --- every message the guard produces for a pod, read as its author would -------------------------


def _capacity_cases() -> list[Any]:
    return [
        pytest.param(DENY, {}, "pod team-a/", id="capacity-deny"),
        pytest.param(WARN, {}, "", id="capacity-warn"),
        pytest.param(WARN, {"node": "gpu-h100-a"}, "node gpu-h100-a", id="capacity-pinned"),
        pytest.param(WARN, {"annotations": {"ollama-guard.io/vram": "90Gi"}}, "even when empty", id="capacity-never"),
        pytest.param(DENY, {"env": {"OLLAMA_CONTEXT_LENGTH": "999999"}}, "cap of 8192", id="settings-cap"),
        pytest.param(DENY, {"models": "nosuchmodel:1b"}, "not in the guard's catalog", id="unknown-model"),
        pytest.param(DENY, {"annotations": {"ollama-guard.io/vram-demand": "1"}}, "written by the guard",
                     id="guard-annotation"),
    ]


@requires_fixtures
@pytest.mark.parametrize(("cluster", "pod", "names"), _capacity_cases())
def test_each_message_names_its_object_and_ends_with_a_fix(cluster: Any, pod: dict[str, Any], names: str) -> None:
    guard, _ = make_guard(cluster=cluster, extra=[gpu_tenant("big", 70_000, node="gpu-h100-a")])
    answer = validate(request(ollama_pod_review(**pod)), guard)
    for warning in answer.warnings:
        assert len(warning) <= 120, warning
    if answer.allowed:
        assert answer.warnings, "an allowed pod that does not fit now must say so"
        assert any("VRAM free now" in w and "Pending" in w for w in answer.warnings)
        return
    assert answer.message.startswith("pod team-a/") and "denied by ollama-guard" in answer.message
    assert names in answer.message
    assert ends_with_a_fix(answer.message), answer.message
    units = re.findall(r"\d+(?:\.\d+)? (GiB|MiB)", answer.message)
    assert all(u in ("GiB", "MiB") for u in units)
