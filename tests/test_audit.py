"""`ollama-guard audit`: the pure audit, its five formats, the CLI and its exit codes, consistency
with the real `/validate` handler, and the live path against loopback API servers.

Goldens (`tests/golden/audit.*`) are rendered from `examples/cluster.yaml` + `examples/manifests/`
at a fixed time and compared byte for byte; `UPDATE_GOLDEN=1 pytest tests/test_audit.py` rewrites
them (review the diff before committing).
"""

from __future__ import annotations

import copy
import json
import os
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from design_figures import LLAMA31_8B_MIB
from kube_api_fixture import KubeApiFixture
from typer.testing import CliRunner

from webhook.admission.context import Guard
from webhook.admission.mutation import mutate
from webhook.admission.review import AdmissionRequest, AdmissionResponse, parse_review
from webhook.admission.validation import validate
from webhook.audit.render_html import render_html
from webhook.audit.render_policy import json_document, policy_reports
from webhook.audit.render_text import render_markdown, render_table, usage_bar
from webhook.audit.run import AuditReport, Manifest, describe_patch, run_audit
from webhook.cli.audit import RENDERERS, Format, load_manifests
from webhook.cli.main import app
from webhook.core.catalog import Catalog, load_catalog
from webhook.core.policy import ClusterPolicy
from webhook.state.files import load_objects
from webhook.state.snapshot import SnapshotSource

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
CLUSTER = ClusterPolicy(capacity_at_admission="deny")  # as the whole suite runs (conftest)
CATALOG = load_catalog()
GOLDEN_FILES = {
    Format.table: "audit.txt",
    Format.json: "audit.json",
    Format.markdown: "audit.md",
    Format.html: "audit.html",
    Format.policyreport: "audit.policyreport.yaml",
    Format.openreports: "audit.openreports.yaml",
}
XSS = '<script>alert("gpu")</script>'


# --- scenario builders ---------------------------------------------------------------------------
def gpu_node(name: str, *, memory: int | None, replicas: int = 4, count: int = 1, **extra: Any) -> dict[str, Any]:
    labels = {"nvidia.com/gpu.count": str(count), "nvidia.com/gpu.product": extra.pop("product", "NVIDIA-L40S")}
    if memory is not None:
        labels["nvidia.com/gpu.memory"] = str(memory)
    if replicas > 1:
        labels |= {"nvidia.com/gpu.replicas": str(replicas), "nvidia.com/gpu.sharing-strategy": "time-slicing"}
    labels |= extra.pop("labels", {})
    resource = extra.pop("resource", "nvidia.com/gpu")
    slots = extra.pop("slots", replicas * count)
    meta = {"name": name, "labels": labels, "annotations": extra.pop("annotations", {})}
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "status": {"allocatable": {resource: str(slots)}}}


def namespace(name: str, **annotations: str) -> dict[str, Any]:
    ann = {f"ollama-guard.io/{k.replace('_', '-')}": v for k, v in annotations.items()}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": ann}}


def pod(
    name: str,
    ns: str,
    *,
    models: str | None = None,
    vram: str | None = None,
    gpus: str | None = "1",
    image: str = "ollama/ollama:0.6.8",
    node: str = "",
    env: Mapping[str, str] | None = None,
    uid: str = "",
    phase: str = "",
) -> dict[str, Any]:
    ann = {}
    if models is not None:
        ann["ollama-guard.io/models"] = models
    if vram is not None:
        ann["ollama-guard.io/vram"] = vram
    container: dict[str, Any] = {"name": "main", "image": image}
    if gpus is not None:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec: dict[str, Any] = {"containers": [container]}
    if node:
        spec["nodeName"] = node
    meta = {"name": name, "namespace": ns, "uid": uid or f"uid-{ns}-{name}", "annotations": ann}
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def workload(kind: str, name: str, ns: str, template: Mapping[str, Any], *, replicas: int = 1) -> dict[str, Any]:
    tpl = {"metadata": {"annotations": template["metadata"]["annotations"]}, "spec": template["spec"]}
    group = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
    if kind == "CronJob":
        spec: dict[str, Any] = {
            "schedule": "0 * * * *",
            "jobTemplate": {"spec": {"parallelism": replicas, "template": tpl}},
        }
    elif kind == "Job":
        spec = {"parallelism": replicas, "template": tpl}
    elif kind == "DaemonSet":
        spec = {"template": tpl}
    else:
        spec = {"replicas": replicas, "template": tpl}
    return {"apiVersion": group, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


def rich_state() -> list[dict[str, Any]]:
    """Two guarded nodes (one over-committed), a plain GPU node, a MIG node, a node of unknown VRAM."""
    return [
        gpu_node("gpu-l40s", memory=46068, replicas=2),
        gpu_node(
            "gpu-a100",
            memory=81920,
            replicas=4,
            count=2,
            product="NVIDIA-A100-SXM4-80GB",
            annotations={"ollama-guard.io/vram-reserved": "4Gi"},
        ),
        gpu_node("gpu-plain", memory=24576, replicas=1, product="NVIDIA-L4"),
        gpu_node(
            "gpu-mig",
            memory=81920,
            replicas=1,
            product="NVIDIA-H100",
            resource="nvidia.com/mig-1g.10gb",
            slots=7,
            labels={"nvidia.com/mig.strategy": "single"},
        ),
        gpu_node("gpu-unknown", memory=None, replicas=4, product="NVIDIA-T4"),
        namespace("lab", vram_quota="40Gi"),
        namespace("ml", allowed_models="llama3.*", num_parallel="lots"),
        namespace("kube-system"),
        pod(XSS, "lab", vram="30Gi", gpus="1", image="ghcr.io/lab/train:1", node="gpu-l40s"),
        pod("big-two", "lab", vram="24Gi", gpus="1", image="ghcr.io/lab/train:1", node="gpu-l40s"),
        pod(
            "chat",
            "ml",
            models="llama3.1:8b",
            node="gpu-a100",
            env={"OLLAMA_CONTEXT_LENGTH": "8192", "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_LOADED_MODELS": "1"},
        ),
        pod(
            "mystery",
            "lab",
            models="mystery-model:7b",
            vram="12Gi",
            node="gpu-a100",
            env={"OLLAMA_CONTEXT_LENGTH": "8192", "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_LOADED_MODELS": "1"},
        ),
        pod("bare-ollama", "lab", node="gpu-a100"),
        pod("cpu-ollama", "lab", models="llama3.2:1b", gpus=None),
        pod("dcgm", "kube-system", gpus="1", image="nvcr.io/nvidia/dcgm:3", node="gpu-a100"),
        pod("done", "lab", vram="70Gi", node="gpu-a100", phase="Succeeded"),
        pod("web", "lab", gpus=None, image="nginx:1.27"),
    ]


def audit(state: list[dict[str, Any]], manifests: Sequence[Mapping[str, Any]] = (), **kwargs: Any) -> AuditReport:
    return run_audit(
        state,
        cluster=CLUSTER,
        catalog=CATALOG,
        now=NOW,
        state_origin="test",
        manifests=[Manifest("test.yaml", m) for m in manifests],
        **kwargs,
    )


def results(report: AuditReport, name: str) -> dict[str, str]:
    """rule -> result for the findings on the resource called `name`."""
    return {f.rule: f.result for f in report.findings if f.resource.name == name}


# --- goldens -------------------------------------------------------------------------------------
@pytest.fixture
def example_report(monkeypatch: pytest.MonkeyPatch) -> AuditReport:
    monkeypatch.chdir(REPO)
    return run_audit(
        load_objects([Path("examples/cluster.yaml")]),
        cluster=CLUSTER,
        catalog=CATALOG,
        now=NOW,
        state_origin="snapshot examples/cluster.yaml",
        manifests=load_manifests([Path("examples/manifests")]),
    )


@pytest.mark.parametrize("fmt", [pytest.param(f, id=f.value) for f in Format])
def test_golden_output(example_report: AuditReport, fmt: Format) -> None:
    text = RENDERERS[fmt](example_report)
    path = GOLDEN / GOLDEN_FILES[fmt]
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    assert path.read_bytes() == text.encode("utf-8"), f"{path.name} changed; rerun with UPDATE_GOLDEN=1 and review"


LLAMA = LLAMA31_8B_MIB  # one model loaded at once: the larger of the two


def test_example_audit_says_what_the_examples_are_for(example_report: AuditReport) -> None:
    subjects = {s.resource.name: s for s in example_report.subjects}
    assert (subjects["ollama"].verdict, subjects["ollama"].models_from) == ("admit", "discovered")
    assert subjects["ollama"].models == ("llama3.1:8b", "nomic-embed-text")
    assert subjects["ollama"].inject[0] == (
        "container ollama: env OLLAMA_MAX_LOADED_MODELS=1, OLLAMA_CONTEXT_LENGTH=8192, OLLAMA_NUM_PARALLEL=1, "
        f"OLLAMA_FLASH_ATTENTION=1, NVIDIA_GPU_MEMORY_LIMIT={LLAMA}, NVIDIA_GPU_MEMORY_REQUEST={LLAMA}; "
        f"limits ollama-guard.io/vram-mib={LLAMA}; requests ollama-guard.io/vram-mib={LLAMA}"
    )
    assert (subjects["qwen-chat"].verdict, subjects["qwen-chat"].admission) == ("deny", "warned")
    assert [v.rule for v in subjects["llama-70b-eval"].violations] == ["settings-cap", "capacity"]
    assert subjects["whisper-transcribe"].nodes == ()
    assert [v.rule for v in subjects["whisper-transcribe"].advisories] == ["undeclared-vram", "unschedulable"]
    (node,) = example_report.nodes
    assert [t.name for t in node.tenants if t.planned] == ["ollama-0", "nightly-embed-0"]
    # qwen2.5:14b at context 16384 (estimate), comfyui (declared), llama3.1:8b, nomic-embed-text
    assert node.committed_mib == 13230 + 16384 + LLAMA + 1513
    # the running qwen2.5 pod predates the driver cap (design §8) and the flash-attention setting the
    # estimate assumes (§5.1): two warnings
    assert [f.rule for f in example_report.findings if f.resource.name.startswith("ollama-qwen")] == [
        "settings-missing",
        "driver-memory-limit",
    ]
    assert example_report.summary == {"pass": 5, "fail": 3, "warn": 4, "error": 0, "skip": 0}
    assert [ref.kind for _, ref in example_report.ignored] == ["ServiceAccount", "Service"]


# --- the audit's judgement -----------------------------------------------------------------------
def test_rich_state_findings() -> None:
    report = audit(rich_state())
    assert results(report, "gpu-l40s") == {"node-vram-budget": "fail"}
    assert results(report, "gpu-unknown") == {"node-vram-budget": "error"}
    assert results(report, "gpu-a100") == {"node-vram-budget": "pass"}
    assert results(report, "gpu-plain") == results(report, "gpu-mig") == {"gpu-node-guarded": "skip"}
    assert {o.name: o.mig for o in report.other_nodes} == {"gpu-mig": True, "gpu-plain": False}
    # each tenant of an over-committed node would be denied if created now, next to the others
    assert results(report, XSS) == results(report, "big-two") == {"capacity": "fail", "vram-quota": "fail"}
    assert results(report, "ml") == {"namespace-policy": "fail"}
    # running Ollama pods the mutation never saw have no driver cap (design §8) nor OLLAMA_FLASH_ATTENTION
    assert results(report, "chat") == {
        "namespace-policy": "fail",
        "driver-memory-limit": "warn",
        "settings-missing": "warn",
    }
    assert results(report, "lab") == {"vram-quota": "fail"}
    assert results(report, "mystery") == {
        "unknown-model": "warn",
        "vram-quota": "fail",
        "driver-memory-limit": "warn",
        "settings-missing": "warn",
    }
    assert results(report, "bare-ollama") == {
        "settings-missing": "warn",
        "undeclared-models": "warn",
        "vram-quota": "fail",
    }
    assert results(report, "cpu-ollama") == {"gpu-request": "fail", "settings-missing": "warn"}
    assert results(report, "dcgm") == {"admission": "skip"}
    assert not results(report, "done") and not results(report, "web")
    over = next(line for line in report.nodes if line.node.name == "gpu-l40s")
    assert (over.committed_mib, over.node.budget_mib, over.free_mib) == (55296, 46068, -9228)
    a100 = next(line for line in report.nodes if line.node.name == "gpu-a100")
    assert (a100.node.capacity_mib, a100.node.budget_mib) == (163840, 159744)
    assert {t.name: t.source for t in a100.tenants} == {
        "chat": "estimate",
        "mystery": "declared",
        "bare-ollama": "default",
        "dcgm": "default",
    }


@pytest.mark.parametrize(
    ("manifests", "expected"),
    [
        pytest.param(
            [
                workload(
                    "Deployment",
                    "chat",
                    "team-a",
                    {
                        "metadata": {"annotations": {"ollama-guard.io/models": "llama3.1:8b"}},
                        "spec": {
                            "containers": [
                                {"name": "o", "image": "ollama/ollama", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                            ]
                        },
                    },
                    replicas=3,
                )
            ],
            {"chat": ("admit", ("gpu-h100-a",) * 2, ["unschedulable"])},
            id="replicas-beyond-free-gpu-replicas-stay-pending",
        ),
        pytest.param(
            [namespace("team-a", enforcement="off"), pod("p", "team-a", models="llama3.1:70b")],
            {"p": ("skip", ("gpu-h100-a",), [])},
            id="manifest-namespace-applies-to-later-objects",
        ),
        pytest.param(
            [pod("big", "kube-system", vram="70Gi", image="ghcr.io/x/y:1")],
            {"big": ("skip", ("gpu-h100-a",), [])},
            id="exempt-gpu-pod-is-placed-even-if-it-over-commits",
        ),
        pytest.param(
            [pod("a", "team-a", models="llama3.1:70b"), pod("b", "team-a", models="llama3.1:70b")],
            {"a": ("admit", ("gpu-h100-a",), []), "b": ("deny", (), [])},
            id="admitted-pods-count-for-the-next",
        ),
        pytest.param(
            [pod("pinned", "team-a", models="llama3.2:1b", node="cpu-a")],
            {"pinned": ("admit", (), ["unschedulable"])},
            id="pinned-to-a-node-without-gpus",
        ),
    ],
)
def test_manifests_apply_in_order(
    manifests: list[dict[str, Any]], expected: dict[str, tuple[str, tuple[str, ...], list[str]]]
) -> None:
    report = audit(load_objects([REPO / "examples" / "cluster.yaml"]), manifests)
    got = {
        s.resource.name: (s.verdict, s.nodes, [v.rule for v in s.advisories])
        for s in report.subjects
        if s.origin == "test.yaml"
    }
    assert got == expected


def test_exempt_pod_over_commits_the_node() -> None:
    report = audit(
        load_objects([REPO / "examples" / "cluster.yaml"]),
        [pod("big", "kube-system", vram="70Gi", image="ghcr.io/x/y:1")],
    )
    assert results(report, "gpu-h100-a") == {"node-vram-budget": "fail"}
    assert "would be over-committed after the manifests" in next(
        f.message for f in report.findings if f.rule == "node-vram-budget"
    )


def test_daemonset_one_pod_per_guarded_candidate() -> None:
    state = [gpu_node("g1", memory=46068), gpu_node("g2", memory=46068), gpu_node("plain", memory=24576, replicas=1)]
    template = {
        "metadata": {"annotations": {"ollama-guard.io/vram": "8Gi"}},
        "spec": {
            "containers": [{"name": "x", "image": "ghcr.io/x:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
        },
    }
    report = audit(state, [workload("DaemonSet", "agent", "default", template)])
    (subject,) = report.subjects
    assert (subject.verdict, subject.replicas, subject.nodes) == ("admit", 2, ("g1", "g2"))


def test_namespace_filter_keeps_nodes_and_defaults_the_namespace() -> None:
    objects = [pod("loose", "", models="llama3.2:1b")]
    objects[0]["metadata"].pop("namespace")
    report = audit(rich_state(), objects, namespace="ml")
    assert {s.resource.namespace for s in report.subjects} == {"ml"}
    assert "loose" in {s.resource.name for s in report.subjects}
    assert {f.namespace for f in report.findings} == {"", "ml"}
    assert {line.node.name for line in report.nodes} == {"gpu-l40s", "gpu-a100", "gpu-unknown"}
    assert [line.policy.namespace for line in report.namespaces] == ["ml"]


WRONG_TYPED = [
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "team-a"},
        "spec": {"replicas": 1, "template": {"metadata": {}, "spec": "containers"}},
    },
    {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "c", "namespace": "team-a"},
        "spec": {"jobTemplate": "nightly"},
    },
    {
        **pod("tolerations", "team-a", models="llama3.2:1b"),
        "spec": {"tolerations": 3, "containers": [{"name": "o", "image": "ollama/ollama"}]},
    },
    {
        **pod("affinity", "team-a", models="llama3.2:1b"),
        "spec": {
            "containers": [{"name": "o", "image": "ollama/ollama"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In", "values": 7}]}]
                    }
                }
            },
        },
    },
    {**pod("containers", "team-a", models="llama3.2:1b"), "spec": {"containers": "ollama"}},
    {**pod("env", "team-a"), "spec": {"containers": [{"name": "o", "image": "ollama/ollama", "env": "X=1"}]}},
    {
        **pod("limits", "team-a"),
        "spec": {"containers": [{"name": "o", "image": "ollama/ollama", "resources": {"limits": ["nvidia.com/gpu"]}}]},
    },
]


@pytest.mark.parametrize("obj", [pytest.param(o, id=o["metadata"]["name"]) for o in WRONG_TYPED])
def test_wrong_typed_manifests_never_crash_the_audit(obj: dict[str, Any]) -> None:
    report = audit(load_objects([REPO / "examples" / "cluster.yaml"]), [obj])
    subjects = [s for s in report.subjects if s.origin == "test.yaml"]
    assert len(subjects) + len(report.ignored) == 1  # judged once, or not a workload at all
    assert render_html(report) and render_table(report) and policy_reports(report)
    if not subjects:
        return
    subject = subjects[0]
    found = {f.rule: (f.result, f.severity) for f in report.findings if f.resource.name == obj["metadata"]["name"]}
    if subject.verdict == "error":
        assert found == {"evaluation": ("error", "high")}
        assert "could not evaluate this object" in subject.decision


class BrokenCatalog(Catalog):
    """Our own seam: a catalog that fails the way a core bug would."""

    def resolve(self, ref: str) -> Any:
        raise TypeError(f"cannot resolve {ref}")


def test_an_object_the_core_cannot_evaluate_is_an_error_result() -> None:
    state = [gpu_node("g1", memory=46068)]
    report = run_audit(
        state,
        cluster=CLUSTER,
        catalog=BrokenCatalog(),
        now=NOW,
        state_origin="test",
        manifests=[Manifest("m.yaml", pod("p", "team-a", models="llama3.1:8b"))],
    )
    (subject,) = report.subjects
    assert (subject.verdict, subject.admission) == ("error", "error")
    assert subject.decision.startswith("ollama-guard could not evaluate this object (TypeError: cannot resolve")
    assert [(f.rule, f.result, f.severity) for f in report.findings if f.namespace] == [("evaluation", "error", "high")]
    assert report.reaches("fail") and report.summary["error"] == 1
    assert "not evaluated" in render_table(report)


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        pytest.param(
            [
                {
                    "op": "add",
                    "path": "/spec/containers/0/env",
                    "value": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                {
                    "op": "add",
                    "path": "/spec/containers/0/resources",
                    "value": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
                },
            ],
            ("container ollama: env A=1, B=2; limits nvidia.com/gpu=1; requests nvidia.com/gpu=1",),
            id="env-list-and-resources",
        ),
        pytest.param(
            [
                {"op": "add", "path": "/spec/containers/1/env/-", "value": {"name": "C", "value": "3"}},
                {"op": "add", "path": "/spec/containers/1/resources/limits/nvidia.com~1gpu", "value": "1"},
            ],
            ("container side: env C=3; limits nvidia.com/gpu=1",),
            id="append-and-escaped-pointer",
        ),
        pytest.param(
            [
                {"op": "add", "path": "/metadata/annotations", "value": {"ollama-guard.io/vram-demand": "7"}},
                {"op": "replace", "path": "/metadata/annotations/ollama-guard.io~1estimate", "value": "{}"},
                {"op": "remove", "path": "/metadata/annotations/ollama-guard.io~1vram-demand"},
            ],
            (
                "annotations ollama-guard.io/vram-demand=7, ollama-guard.io/estimate (VRAM breakdown), "
                "remove ollama-guard.io/vram-demand",
            ),
            id="annotations",
        ),
        pytest.param([], (), id="nothing"),
    ],
)
def test_describe_patch(ops: list[dict[str, Any]], expected: tuple[str, ...]) -> None:
    raw = {"spec": {"containers": [{"name": "ollama"}, {"name": "side"}]}}
    assert describe_patch(raw, ops) == expected


@pytest.mark.parametrize(
    ("ratio", "bar"),
    [
        pytest.param(0.0, "[░░░░░░░░░░] 0%", id="empty"),
        pytest.param(0.62, "[██████░░░░] 62%", id="62"),
        pytest.param(1.2, "[██████████] 120%", id="over"),
    ],
)
def test_usage_bar(ratio: float, bar: str) -> None:
    assert usage_bar(ratio) == bar


# --- PolicyReport v1alpha2 -----------------------------------------------------------------------
# The openAPIV3Schema of wgpolicyk8s.io/v1alpha2 (Cluster)PolicyReport, as the CRD declares it
# (kubernetes-sigs/wg-policy-prototypes policy-report/crd/v1alpha2, Kyverno api/policyreport/v1alpha2).
# Unknown fields would be pruned by the API server, so they are errors here.
STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
OBJECT_REFERENCE = {
    "type": "object",
    "properties": dict.fromkeys(
        ("apiVersion", "fieldPath", "kind", "name", "namespace", "resourceVersion", "uid"), STRING
    ),
}
RESULT = {
    "type": "object",
    "required": ["policy"],
    "properties": {
        "category": STRING,
        "message": STRING,
        "policy": STRING,
        "properties": {"type": "object", "additionalProperties": STRING},
        "resourceSelector": {"type": "object", "additionalProperties": True},
        "resources": {"type": "array", "items": OBJECT_REFERENCE},
        "result": {"type": "string", "enum": ["pass", "fail", "warn", "error", "skip"]},
        "rule": STRING,
        "scored": {"type": "boolean"},
        "severity": {"type": "string", "enum": ["critical", "high", "low", "medium", "info"]},
        "source": STRING,
        "timestamp": {
            "type": "object",
            "required": ["nanos", "seconds"],
            "properties": {"nanos": INTEGER, "seconds": INTEGER},
        },
    },
}
REPORT = {
    "type": "object",
    "properties": {
        "apiVersion": STRING,
        "kind": STRING,
        "metadata": {"type": "object", "additionalProperties": True},
        "results": {"type": "array", "items": RESULT},
        "scope": OBJECT_REFERENCE,
        "scopeSelector": {"type": "object", "additionalProperties": True},
        "summary": {"type": "object", "properties": dict.fromkeys(("error", "fail", "pass", "skip", "warn"), INTEGER)},
    },
}
TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def schema_errors(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    if not TYPES[schema["type"]](value):
        return [f"{path or '.'}: expected {schema['type']}, got {value!r}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if schema["type"] == "array":
        errors += [e for i, item in enumerate(value) for e in schema_errors(schema["items"], item, f"{path}[{i}]")]
    if schema["type"] == "object":
        errors += [f"{path}.{k}: required" for k in schema.get("required", ()) if k not in value]
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", False)
        for key, item in value.items():
            if key in props:
                errors += schema_errors(props[key], item, f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(extra, item, f"{path}.{key}")
            elif not extra:
                errors.append(f"{path}.{key}: not in the v1alpha2 schema (would be pruned)")
    return errors


@pytest.mark.parametrize("scenario", ["example", "rich"])
def test_policy_reports_follow_v1alpha2(scenario: str, example_report: AuditReport) -> None:
    report = example_report if scenario == "example" else audit(rich_state())
    docs = policy_reports(report)
    assert [d["kind"] for d in docs] == ["ClusterPolicyReport"] + ["PolicyReport"] * (len(docs) - 1)
    seconds = int(NOW.timestamp())
    for doc in docs:
        assert schema_errors(REPORT, doc) == []
        meta = doc["metadata"]
        assert doc["apiVersion"] == "wgpolicyk8s.io/v1alpha2"
        assert meta["name"] == "ollama-guard"
        assert meta["labels"] == {"app.kubernetes.io/managed-by": "ollama-guard"}
        assert ("namespace" in meta) == (doc["kind"] == "PolicyReport")
        counted = Counter(r["result"] for r in doc["results"])
        assert doc["summary"] == {k: counted.get(k, 0) for k in ("pass", "fail", "warn", "error", "skip")}
        for result in doc["results"]:
            assert (result["policy"], result["source"]) == ("ollama-guard", "ollama-guard")
            assert result["timestamp"] == {"seconds": seconds, "nanos": 0}
            assert result["severity"] in {"high", "medium", "low", "info"}
            assert result["message"] and result["rule"] and result["category"]
            assert len(result["resources"]) == 1
            ref = result["resources"][0]
            assert {"apiVersion", "kind", "name"} <= set(ref)
            if doc["kind"] == "PolicyReport" and ref["kind"] != "Namespace":
                assert ref["namespace"] == meta["namespace"]
    total = Counter(r["result"] for d in docs for r in d["results"])
    assert {k: total.get(k, 0) for k in report.summary} == report.summary


def test_schema_checker_rejects_what_the_crd_would_not_keep() -> None:
    bad = {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {},
        "summary": {"pass": "1"},
        "results": [{"result": "denied", "severity": "urgent", "timestamp": {"seconds": 1}, "extra": 1}],
    }
    assert sorted(schema_errors(REPORT, bad)) == [
        ".results[0].extra: not in the v1alpha2 schema (would be pruned)",
        ".results[0].policy: required",
        ".results[0].result: 'denied' not in ['pass', 'fail', 'warn', 'error', 'skip']",
        ".results[0].severity: 'urgent' not in ['critical', 'high', 'low', 'medium', 'info']",
        ".results[0].timestamp.nanos: required",
        ".summary.pass: expected integer, got '1'",
    ]


def test_json_schema_version_and_summary(example_report: AuditReport) -> None:
    doc = json.loads(json.dumps(json_document(example_report)))
    assert doc["schemaVersion"] == 1
    assert doc["generatedAt"] == "2025-06-01T12:00:00Z"
    counted = Counter(r["result"] for r in doc["results"])
    assert doc["summary"] == {k: counted.get(k, 0) for k in ("pass", "fail", "warn", "error", "skip")}
    assert {s["kind"] for s in doc["subjects"]} == {"Pod", "Deployment", "StatefulSet", "CronJob", "Job"}
    deployment = next(s for s in doc["subjects"] if s["kind"] == "Deployment")
    assert jsonpatch.JsonPatch(deployment["patch"])  # a valid RFC 6902 patch


# --- HTML ----------------------------------------------------------------------------------------
VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


class HtmlChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.titled_rects = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs += attrs
        if tag == "title" and self.stack[-1:] == ["rect"]:
            self.titled_rects += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(text: str) -> HtmlChecker:
    checker = HtmlChecker()
    checker.feed(text)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert text.startswith("<!DOCTYPE html>")
    return checker


@pytest.mark.parametrize("scenario", ["example", "rich"])
def test_html_is_self_contained_and_escaped(scenario: str, example_report: AuditReport) -> None:
    report = example_report if scenario == "example" else audit(rich_state())
    text = render_html(report)
    checker = check_html(text)
    assert checker.tags["svg"] == len(report.nodes)
    assert checker.tags["rect"] == checker.titled_rects > 0
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(checker.tags)
    assert not [value for name, value in checker.attrs if name in ("src", "href") or name.startswith("on")]
    if scenario == "rich":
        assert "&lt;script&gt;alert(&quot;gpu&quot;)&lt;/script&gt;" in text
        assert XSS not in text
        assert any(XSS in chunk for chunk in checker.text)


def test_markdown_and_table_escape_user_strings() -> None:
    report = audit(rich_state())
    markdown = render_markdown(report)
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    assert XSS in render_table(report, width=200)


# --- CLI -----------------------------------------------------------------------------------------
runner = CliRunner()


def invoke(*args: str, env: Mapping[str, str] | None = None) -> Any:
    return runner.invoke(app, ["audit", *args], env={"SOURCE_DATE_EPOCH": str(int(NOW.timestamp())), **(env or {})})


@pytest.mark.parametrize("fmt", [pytest.param(f, id=f.value) for f in Format])
def test_cli_prints_the_golden(fmt: Format, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = invoke("--snapshot", "examples/cluster.yaml", "-f", "examples/manifests", "--format", fmt.value)
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / GOLDEN_FILES[fmt]).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        pytest.param([], 0, "", id="findings-without-fail-on"),
        pytest.param(["--fail-on", "fail"], 1, "", id="fail-on-fail"),
        pytest.param(["--fail-on", "warn"], 1, "", id="fail-on-warn"),
        pytest.param(
            # in team-a: the snapshot's running team-b Ollama pod has no driver cap (a warning)
            ["-f", "examples/manifests/01-ollama-helm.yaml", "-n", "team-a", "--fail-on", "warn"],
            0,
            "",
            id="clean-manifest-fail-on-warn",
        ),
        pytest.param(
            ["-f", "examples/manifests/01-ollama-helm.yaml", "--fail-on", "warn"],
            1,
            "",
            id="running-pod-without-driver-cap-fail-on-warn",
        ),
        pytest.param(
            ["-f", "examples/manifests/03-embed-cronjob.yaml", "--fail-on", "fail"],
            0,
            "",
            id="only-warnings-fail-on-fail",
        ),
        pytest.param(
            ["-f", "examples/manifests/03-embed-cronjob.yaml", "--fail-on", "warn"],
            1,
            "",
            id="only-warnings-fail-on-warn",
        ),
        pytest.param(["-f", "missing.yaml"], 2, "missing.yaml: no such file or directory", id="missing-manifest"),
        pytest.param(["--write-reports"], 2, "cannot be combined with --snapshot", id="write-reports-offline"),
        pytest.param(["-n", "team-a", "-A"], 2, "exclude each other", id="namespace-and-all"),
        pytest.param(["--fail-on", "error"], 2, "", id="bad-fail-on"),
    ],
)
def test_cli_exit_codes(args: list[str], code: int, stderr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    base = ["--snapshot", "examples/cluster.yaml", "--format", "json"]
    if not any(a == "-f" for a in args) and code != 2:
        base += ["-f", "examples/manifests"]
    result = invoke(*base, *args)
    assert result.exit_code == code, result.output
    assert stderr in result.stderr


def test_cli_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n   oops: [\n", encoding="utf-8")
    result = invoke("--snapshot", str(REPO / "examples" / "cluster.yaml"), "-f", str(bad))
    assert result.exit_code == 2
    assert f"{bad}: line 5, column 8: not valid YAML/JSON" in result.stderr
    result = invoke("--snapshot", str(bad))
    assert (result.exit_code, f"{bad}: line 5" in result.stderr) == (2, True)


def test_cli_writes_output_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "report.html"
    result = invoke(
        "--snapshot", "examples/cluster.yaml", "-f", "examples/manifests", "--format", "html", "-o", str(out)
    )
    assert (result.exit_code, result.stdout) == (0, "")
    assert out.read_text(encoding="utf-8") == (GOLDEN / "audit.html").read_text(encoding="utf-8")
    assert f"wrote the html report to {out}" in result.stderr


def test_cli_without_cluster_or_snapshot(tmp_path: Path) -> None:
    result = invoke(env={"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": ""})
    assert result.exit_code == 2
    assert "no cluster configuration found" in result.stderr


# --- consistency with the validating webhook -----------------------------------------------------
def review(
    obj: Mapping[str, Any],
    *,
    kind: str = "Pod",
    resource: str = "pods",
    group: str = "",
    version: str = "v1",
    sub: str = "",
) -> AdmissionRequest:
    meta = obj["metadata"]
    return parse_review(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"review-{meta['name']}",
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": resource},
                "subResource": sub,
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
                "object": copy.deepcopy(dict(obj)),
            },
        }
    )


def webhook_guard(state: list[dict[str, Any]]) -> tuple[Guard, SnapshotSource]:
    source = SnapshotSource(state, cluster=CLUSTER, catalog=CATALOG, origin="test")
    return Guard(cluster=CLUSTER, catalog=CATALOG, ledger=source.ledger, on_bound=source.on_bound), source


def decision(response: AdmissionResponse) -> tuple[bool, str]:
    return response.allowed, response.message


def consistency_state() -> list[dict[str, Any]]:
    return [
        *load_objects([REPO / "examples" / "cluster.yaml"]),
        gpu_node("gpu-l40s", memory=46068, replicas=8),
        namespace("strict", allowed_models="llama3.*"),
        namespace("quiet", enforcement="audit"),
    ]


SETTINGS_OK = {"OLLAMA_CONTEXT_LENGTH": "8192", "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_LOADED_MODELS": "1"}
CONSISTENCY_PODS = [
    pod("fits", "team-a", models="llama3.1:8b"),
    pod("no-gpu-request", "team-a", models="qwen2.5:7b", gpus=None),
    pod("too-big", "team-a", models="llama3.1:70b"),
    pod("unknown", "team-a", models="mystery:7b"),
    pod("over-cap", "team-a", models="llama3.2:3b", env={"OLLAMA_NUM_PARALLEL": "4"}),
    pod("over-quota", "team-b", models="qwen2.5:32b"),
    pod("pinned", "team-a", models="gemma3:1b", node="gpu-l40s"),
    pod("half-gpu", "team-a", models="llama3.2:1b", gpus="0.5"),
    pod("refused-model", "strict", models="qwen2.5:7b"),
    pod("allowed-model", "strict", models="llama3.2:1b", env=SETTINGS_OK),
    pod("audited", "quiet", models="llama3.3:70b"),
    pod("undeclared", "team-a", vram=None, image="ghcr.io/x/render:1"),
    pod("exempt", "kube-system", vram="4Gi", image="ghcr.io/x/y:1"),
]


def test_audit_and_validate_agree_on_manifest_pods() -> None:
    """Same state, same pods, in order: the audit's answers are the webhook's answers."""
    state = consistency_state()
    report = audit(state, CONSISTENCY_PODS)
    subjects = {s.resource.name: s for s in report.subjects if s.origin == "test.yaml"}
    guard, source = webhook_guard(state)
    seen = []
    for raw in CONSISTENCY_PODS:
        name = raw["metadata"]["name"]
        mutated = mutate(review(raw), guard)
        obj = jsonpatch.apply_patch(copy.deepcopy(raw), list(mutated.patch)) if mutated.patch else raw
        response = validate(review(obj), guard)
        subject = subjects[name]
        seen.append((name, subject.admission))
        assert response.allowed == (subject.admission != "denied"), name
        assert subject.patch == mutated.patch, name
        if subject.verdict != "skip" and subject.resource.namespace in ("team-a", "strict"):
            assert decision(response) == (subject.verdict == "admit", subject.decision), name
        for node in subject.nodes:  # bind where the audit placed it: the webhook must agree it fits
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": raw["metadata"]["namespace"], "uid": raw["metadata"]["uid"]},
                "target": {"kind": "Node", "name": node},
            }
            assert validate(review(binding, kind="Binding", sub="binding"), guard).allowed, name
    assert {n for n, a in seen if a == "denied"} == {"too-big", "unknown", "over-cap", "half-gpu", "refused-model"}
    assert {n for n, a in seen if a in ("warned", "audited")} == {"over-quota", "audited"}
    # exempt pods are not remembered at CREATE, so the webhook's snapshot never binds them
    committed = {
        line.node.name: line.committed_mib - sum(t.demand_mib for t in line.tenants if t.name == "exempt")
        for line in report.nodes
    }
    assert committed == {name: source.ledger.committed(name) for name in committed}


def test_audit_and_validate_agree_on_running_pods() -> None:
    """A running pod is judged against the cluster without itself, as the webhook would judge it."""
    state = rich_state()
    report = audit(state)
    judged = {s.resource.name: s for s in report.subjects}
    assert set(judged) == {XSS, "big-two", "chat", "mystery", "bare-ollama", "cpu-ollama", "dcgm"}
    for raw in state:
        name = raw["metadata"]["name"]
        if name not in judged:
            continue
        guard, _ = webhook_guard([o for o in state if o is not raw])
        response = validate(review(raw), guard)
        assert decision(response) == (judged[name].admission != "denied", judged[name].decision), name


TEMPLATE = {
    "metadata": {"annotations": {"ollama-guard.io/models": "llama3.1:8b"}},
    "spec": {"containers": [{"name": "o", "image": "ollama/ollama", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
}
BIG = {"metadata": {"annotations": {"ollama-guard.io/models": "qwen2.5:32b"}}, "spec": TEMPLATE["spec"]}
CONSISTENCY_WORKLOADS = [
    workload("Deployment", "web", "team-a", TEMPLATE, replicas=2),
    workload("Deployment", "many", "team-a", TEMPLATE, replicas=8),
    workload("StatefulSet", "big", "team-b", BIG, replicas=2),
    workload("StatefulSet", "big-strict", "strict", BIG),
    workload("CronJob", "nightly", "team-a", TEMPLATE),
    workload("Job", "batch", "quiet", BIG, replicas=3),
    workload("DaemonSet", "agent", "team-a", TEMPLATE),
]


@pytest.mark.parametrize(
    "obj", [pytest.param(w, id=f"{w['kind']}-{w['metadata']['name']}") for w in CONSISTENCY_WORKLOADS]
)
def test_audit_and_validate_agree_on_workloads(obj: dict[str, Any]) -> None:
    state = consistency_state()
    (subject,) = [s for s in audit(state, [obj]).subjects if s.origin == "test.yaml"]
    guard, _ = webhook_guard(state)
    group, version = obj["apiVersion"].split("/")
    response = validate(
        review(obj, kind=obj["kind"], resource=obj["kind"].lower() + "s", group=group, version=version), guard
    )
    assert response.allowed == (subject.admission != "denied")
    if subject.resource.namespace in ("team-a", "strict"):
        assert decision(response) == (subject.verdict == "admit", subject.decision)


# --- live cluster ---------------------------------------------------------------------------------
def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "live",
                "clusters": [{"name": "live", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "live", "context": {"cluster": "live", "user": "u"}}],
            }
        ),
        encoding="utf-8",
    )
    return path


def test_live_audit_lists_each_kind_once_and_never_watches(tmp_path: Path) -> None:
    with KubeApiFixture() as api:
        for obj in load_objects([REPO / "examples" / "cluster.yaml"]):
            api.add(obj)
        for i in range(3):
            api.add(pod(f"extra-{i}", "team-a", vram="1Gi", image="ghcr.io/x:1", node="gpu-h100-a"))
        config = write_kubeconfig(tmp_path / "config", api.url)
        result = invoke("--kubeconfig", str(config), "--format", "json")
        requests = api.requests()
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["source"]["state"] == "live cluster " + api.url
    (node,) = doc["nodes"]
    assert node["committedMiB"] == 13230 + 16384 + 3 * 1024  # qwen2.5:14b estimated, comfyui, the extras
    assert not [r for r in requests if r.watch]
    assert sorted({r.kind for r in requests if r.kind}) == ["Namespace", "Node", "Pod"]
    assert all(r.query.get("limit") == "500" for r in requests)


class ReportStore(BaseHTTPRequestHandler):
    """Just enough of kube-apiserver: the example cluster's core lists, PolicyReport get/create/
    replace/delete, and the cluster-wide PolicyReport list with an equality label selector."""

    protocol_version = "HTTP/1.1"
    store: dict[str, dict[str, Any]]
    calls: list[str]
    reject = ""
    forbid_list = False

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _send(self, code: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        return dict(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self.calls.append(f"GET {path}")
        if path == f"{REPORTS_API}/policyreports":
            self._list_reports(dict(urllib.parse.parse_qsl(query)).get("labelSelector", ""))
        elif path.startswith("/api/v1/"):
            self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": self.lists(path)})
        elif path in self.store:
            self._send(200, self.store[path])
        else:
            self._send(
                404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
            )

    def _list_reports(self, selector: str) -> None:
        if self.forbid_list:
            self._send(
                403,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "Forbidden",
                    "message": "policyreports is forbidden",
                    "code": 403,
                },
            )
            return
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        found = [
            doc
            for key, doc in self.store.items()
            if "/policyreports/" in key
            and all(doc["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        self._send(200, {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReportList", "items": found})

    def do_DELETE(self) -> None:
        self.calls.append(f"DELETE {self.path}")
        if self.store.pop(self.path, None) is None:
            self._send(
                404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
            )
            return
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def lists(self, path: str) -> list[dict[str, Any]]:
        kind = {"/api/v1/nodes": "Node", "/api/v1/namespaces": "Namespace", "/api/v1/pods": "Pod"}[path]
        return [
            {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
            for o in load_objects([REPO / "examples" / "cluster.yaml"])
            if o["kind"] == kind
        ]

    def do_POST(self) -> None:
        body = self._body()
        if body["metadata"].get("namespace") == self.reject:
            message = 'PolicyReport.wgpolicyk8s.io "ollama-guard" is invalid: results[0].severity: Unsupported value'
            self._send(
                422,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": message,
                    "reason": "Invalid",
                    "code": 422,
                },
            )
            return
        path = f"{self.path}/{body['metadata']['name']}"
        self.calls.append(f"POST {self.path}")
        body["metadata"]["resourceVersion"] = "1"
        self.store[path] = body
        self._send(201, body)

    def do_PUT(self) -> None:
        body = self._body()
        self.calls.append(f"PUT {self.path} rv={body['metadata'].get('resourceVersion')}")
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        self.store[self.path] = body
        self._send(200, body)


@pytest.fixture
def report_store() -> Iterator[tuple[str, type[ReportStore]]]:
    handler = type("Handler", (ReportStore,), {"store": {}, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_write_reports_creates_then_replaces(report_store: tuple[str, type[ReportStore]], tmp_path: Path) -> None:
    url, handler = report_store
    config = write_kubeconfig(tmp_path / "config", url)
    first = invoke("--kubeconfig", str(config), "--format", "json", "--write-reports")
    assert first.exit_code == 0, first.output
    base = "/apis/wgpolicyk8s.io/v1alpha2"
    assert "created ClusterPolicyReport ollama-guard" in first.stderr
    assert "created PolicyReport team-b/ollama-guard" in first.stderr
    stored = handler.store[f"{base}/namespaces/team-b/policyreports/ollama-guard"]
    # the running qwen2.5 pod has no driver cap nor OLLAMA_FLASH_ATTENTION: warnings, not a pass (design §8)
    assert (stored["summary"]["pass"], stored["summary"]["warn"]) == (2, 2) and stored["kind"] == "PolicyReport"
    second = invoke("--kubeconfig", str(config), "--format", "json", "--write-reports")
    assert second.exit_code == 0, second.output
    assert "updated PolicyReport team-b/ollama-guard" in second.stderr
    assert f"PUT {base}/namespaces/team-b/policyreports/ollama-guard rv=1" in handler.calls
    assert handler.store[f"{base}/clusterpolicyreports/ollama-guard"]["metadata"]["resourceVersion"] == "2"


REPORTS_API = "/apis/wgpolicyk8s.io/v1alpha2"


def _stored_report(namespace: str, *, name: str = "ollama-guard", ours: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "ollama-guard" if ours else "kyverno"}
    return {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "resourceVersion": "7"},
        "results": [{"policy": "ollama-guard", "result": "fail", "message": "a pod long gone"}],
    }


@pytest.mark.parametrize(
    ("scope", "pruned"),
    [pytest.param([], True, id="all-namespaces"), pytest.param(["--namespace", "team-b"], False, id="one-namespace")],
)
def test_write_reports_deletes_our_reports_of_namespaces_that_left_the_audit(
    report_store: tuple[str, type[ReportStore]], tmp_path: Path, scope: list[str], pruned: bool
) -> None:
    url, handler = report_store
    gone = f"{REPORTS_API}/namespaces/team-gone/policyreports/ollama-guard"
    foreign = f"{REPORTS_API}/namespaces/team-gone/policyreports/kyverno-report"
    handler.store[gone] = _stored_report("team-gone")
    handler.store[foreign] = _stored_report("team-gone", name="kyverno-report", ours=False)
    config = write_kubeconfig(tmp_path / "config", url)
    result = invoke("--kubeconfig", str(config), "--format", "json", "--write-reports", *scope)
    assert result.exit_code == 0, result.output
    assert (gone not in handler.store) is pruned  # out of a --namespace audit's scope: left alone
    assert foreign in handler.store  # never another tool's report
    assert ("deleted PolicyReport team-gone/ollama-guard" in result.stderr) is pruned
    assert f"{REPORTS_API}/namespaces/team-b/policyreports/ollama-guard" in handler.store


def test_write_reports_without_list_permission_writes_and_says_it_did_not_prune(
    report_store: tuple[str, type[ReportStore]], tmp_path: Path
) -> None:
    url, handler = report_store
    handler.forbid_list = True
    result = invoke(
        "--kubeconfig", str(write_kubeconfig(tmp_path / "config", url)), "--format", "json", "--write-reports"
    )
    assert result.exit_code == 0, result.output
    assert "created PolicyReport team-b/ollama-guard" in result.stderr
    assert "not pruned: listing PolicyReports failed: HTTP 403 policyreports is forbidden" in result.stderr


def test_write_reports_names_what_the_api_server_refused(
    report_store: tuple[str, type[ReportStore]], tmp_path: Path
) -> None:
    url, handler = report_store
    handler.reject = "team-b"
    result = invoke(
        "--kubeconfig", str(write_kubeconfig(tmp_path / "config", url)), "--format", "json", "--write-reports"
    )
    assert result.exit_code == 2
    assert "writing PolicyReport team-b/ollama-guard failed: HTTP 422 PolicyReport.wgpolicyk8s.io" in result.stderr
