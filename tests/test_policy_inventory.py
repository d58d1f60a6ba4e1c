"""Namespace policy resolution (design §9) and node budgets (design §6)."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.core.inventory import read_node
from webhook.core.policy import ClusterPolicy, resolve_namespace_policy

HUGE = "9" * 5000  # past the interpreter's 4,300-digit limit for int()

CLUSTER = ClusterPolicy()
GPU = CLUSTER.gpu_resources


def test_defaults_without_annotations() -> None:
    ns = resolve_namespace_policy(CLUSTER, "team-a", None)
    assert (ns.enforcement, ns.max_loaded_models, ns.context_length, ns.num_parallel) == ("enforce", 1, 8192, 1)
    assert ns.vram_quota_mib is None and ns.allowed_models == ("*",) and not ns.problems and ns.active


def test_annotations_override_defaults() -> None:
    ns = resolve_namespace_policy(
        CLUSTER,
        "team-a",
        {
            "ollama-guard.io/enforcement": "Warn",
            "ollama-guard.io/max-loaded-models": "2",
            "ollama-guard.io/context-length": "32768",
            "ollama-guard.io/num-parallel": "4",
            "ollama-guard.io/vram-quota": "40Gi",
            "ollama-guard.io/allowed-models": "llama3.*, qwen2.5:*",
        },
    )
    assert ns.enforcement == "warn" and ns.max_loaded_models == 2 and ns.context_length == 32768
    assert ns.num_parallel == 4 and ns.vram_quota_mib == 40 * 1024
    assert ns.model_allowed("llama3.1:8b") and ns.model_allowed("qwen2.5:14b") and not ns.model_allowed("gemma2:9b")


@pytest.mark.parametrize(
    ("annotation", "value", "needle"),
    [
        pytest.param("ollama-guard.io/enforcement", "strict", "enforce, warn, audit, off", id="enforcement"),
        pytest.param("ollama-guard.io/max-loaded-models", "0", "whole number from 1 to 64", id="max-loaded-zero"),
        pytest.param("ollama-guard.io/context-length", "8k", "whole number", id="context-suffix"),
        pytest.param("ollama-guard.io/num-parallel", "-2", "whole number", id="parallel-negative"),
        pytest.param("ollama-guard.io/vram-quota", "1 Gi", "whitespace", id="quota-space"),
        pytest.param("ollama-guard.io/vram-quota", "-1Gi", "negative", id="quota-negative"),
        pytest.param("ollama-guard.io/vram-quota", "9e999", "9e999", id="quota-absurd"),
        pytest.param("ollama-guard.io/allowed-models", "llama3;rm -rf", "comma-separated globs", id="globs"),
        pytest.param("ollama-guard.io/allowed-models", " , ", "comma-separated globs", id="globs-empty"),
        pytest.param("ollama-guard.io/max-loaded-models", HUGE, "whole number from 1 to 64", id="max-loaded-huge"),
    ],
)
def test_malformed_annotations_are_problems_naming_annotation_and_form(
    annotation: str, value: str, needle: str
) -> None:
    ns = resolve_namespace_policy(CLUSTER, "team-a", {annotation: value})
    assert len(ns.problems) == 1
    text = str(ns.problems[0])
    assert annotation in text and needle in text and value[:60] in text
    assert len(text) < 300  # a value pasted by mistake is shortened, not echoed whole


def test_exempt_and_off() -> None:
    assert resolve_namespace_policy(CLUSTER, "kube-system", None).exempt
    off = resolve_namespace_policy(CLUSTER, "team-a", {"ollama-guard.io/enforcement": "off"})
    assert not off.active


def node(labels: dict[str, str], annotations: dict[str, str] | None = None, gpus: str | None = "4") -> dict[str, Any]:
    status = {"allocatable": {"nvidia.com/gpu": gpus}} if gpus else {}
    return {"metadata": {"name": "n", "labels": labels, "annotations": annotations or {}}, "status": status}


H100 = {
    "nvidia.com/gpu.memory": "81559",
    "nvidia.com/gpu.count": "1",
    "nvidia.com/gpu.replicas": "4",
    "nvidia.com/gpu.sharing-strategy": "time-slicing",
}


@pytest.mark.parametrize(
    ("raw", "guarded", "capacity", "reserved", "per_gpu"),
    [
        pytest.param(node(H100), True, 81559, 0, 81559, id="h100-time-sliced"),
        pytest.param(node({**H100, "nvidia.com/gpu.count": "8"}, gpus="32"), True, 8 * 81559, 0, 81559, id="8-gpus"),
        pytest.param(
            node({**H100, "nvidia.com/gpu.memory": str(81559 * 1024 * 1024)}),
            True,
            81559,
            0,
            81559,
            id="gfd-bytes-instead-of-mib",
        ),
        pytest.param(
            node({"nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.replicas": "2"}, gpus="2"),
            True,
            81559,
            0,
            81559,
            id="replicas-only",
        ),
        pytest.param(
            node({"nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.replicas": "2"}, gpus="4"),
            True,
            2 * 81559,
            0,
            81559,
            id="gpu-count-inferred-from-slots",
        ),
        pytest.param(
            node({"nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "1"}, gpus="1"),
            False,
            81559,
            0,
            81559,
            id="not-time-sliced",
        ),
        pytest.param(
            node(H100, {"ollama-guard.io/vram-capacity": "70Gi", "ollama-guard.io/vram-reserved": "2Gi"}),
            True,
            70 * 1024,
            2048,
            81559,
            id="capacity-override-and-reserved",
        ),
        pytest.param(
            node({}, {"ollama-guard.io/vram-capacity": "24Gi"}, gpus="1"),
            True,
            24576,
            0,
            24576,
            id="annotation-alone-guards",
        ),
    ],
)
def test_node_budgets(raw: dict[str, Any], guarded: bool, capacity: int, reserved: int, per_gpu: int) -> None:
    n = read_node(raw, gpu_resources=GPU)
    assert n is not None
    assert (n.guarded, n.capacity_mib, n.reserved_mib, n.gpu_memory_mib) == (guarded, capacity, reserved, per_gpu)
    assert n.budget_mib == capacity - reserved
    assert not n.problems


def test_even_share_is_memory_over_replicas() -> None:
    n = read_node(node(H100), gpu_resources=GPU)
    assert n is not None and n.even_share_mib == 81559 // 4


def test_mig_node_is_not_guarded() -> None:
    n = read_node(
        node({"nvidia.com/mig.strategy": "mixed", "nvidia.com/gpu.memory": "81559"}, gpus=None), gpu_resources=GPU
    )
    assert n is not None and n.mig and not n.guarded


def test_cpu_node_is_not_a_gpu_node() -> None:
    assert read_node(node({"kubernetes.io/os": "linux"}, gpus=None), gpu_resources=GPU) is None


@pytest.mark.parametrize(
    ("labels", "annotations", "needle"),
    [
        pytest.param({**H100, "nvidia.com/gpu.memory": "lots"}, {}, "nvidia.com/gpu.memory", id="bad-memory"),
        pytest.param({"nvidia.com/gpu.sharing-strategy": "time-slicing"}, {}, "VRAM is unknown", id="no-memory"),
        pytest.param(H100, {"ollama-guard.io/vram-reserved": "-1Gi"}, "vram-reserved", id="bad-reserved"),
        pytest.param({**H100, "nvidia.com/gpu.replicas": "x"}, {}, "gpu.replicas", id="bad-replicas"),
        pytest.param({**H100, "nvidia.com/gpu.memory": HUGE}, {}, "nvidia.com/gpu.memory", id="huge-memory"),
        pytest.param({**H100, "nvidia.com/gpu.replicas": HUGE}, {}, "gpu.replicas", id="huge-replicas"),
    ],
)
def test_unreadable_budgets_are_problems(labels: dict[str, str], annotations: dict[str, str], needle: str) -> None:
    n = read_node(node(labels, annotations), gpu_resources=GPU)
    assert n is not None and any(needle in p for p in n.problems)
