"""The audit's judgements as text (design §12): report lines and subjects -> `Finding`s.

Owns the PolicyReport vocabulary applied to the audit (rule -> severity and category), every
finding and advice message the audit prints, and `describe_patch` (the mutating webhook's JSON
Patch as people read it). Pure: values in, values out; it never evaluates a pod or touches the
ledger (that is `audit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from webhook.admission.review import AdmissionResponse
from webhook.audit.model import Finding, NamespaceLine, NodeLine, ObjectRef, OtherNode, Result, Severity, Subject
from webhook.core.catalog import Catalog
from webhook.core.demand import resolve_models
from webhook.core.drift import Observation, describe_models
from webhook.core.evaluation import PodEvaluation, Violation
from webhook.core.inventory import RESOURCE_VRAM
from webhook.core.quantity import format_mib
from webhook.core.tenants import ANN_ESTIMATE

#: severity of a rule when it fails or warns (a pass or skip is always "info")
SEVERITY: Mapping[str, Severity] = {
    "node-vram-budget": "high",
    "capacity": "high",
    "declaration": "high",
    "namespace-policy": "high",
    "gpu-request": "high",
    "vram-quota": "medium",
    "settings-cap": "medium",
    "settings-missing": "medium",
    "driver-memory-limit": "medium",
    "allowed-models": "medium",
    "undeclared-models": "medium",
    "guard-annotation": "low",
    "undeclared-vram": "low",
    "unknown-model": "low",
    "unschedulable": "low",
    "observed-vram": "high",
}
#: the PolicyReport `category` of each rule
CATEGORY: Mapping[str, str] = {
    "node-vram-budget": "VRAM capacity",
    "capacity": "VRAM capacity",
    "unschedulable": "VRAM capacity",
    "vram-quota": "VRAM quota",
    "declaration": "Model declaration",
    "undeclared-models": "Model declaration",
    "undeclared-vram": "Model declaration",
    "unknown-model": "Model declaration",
    "guard-annotation": "Model declaration",
    "namespace-policy": "Namespace policy",
    "allowed-models": "Namespace policy",
    "settings-cap": "Ollama settings",
    "settings-missing": "Ollama settings",
    "driver-memory-limit": "Driver VRAM cap",
    "gpu-request": "GPU request",
    "gpu-node-guarded": "GPU inventory",
    "admission": "Admission",
    "evaluation": "Admission",
    "observed-vram": "Runtime drift",
}

UNDECLARED_MODELS = (
    "Ollama pod declares no models (no ollama-guard.io/models annotation, no `ollama pull|run` in its "
    "commands): it is counted as one replica's even share ({share}), which may be far from what it loads. "
    "Declare the models it serves in ollama-guard.io/models"
)
UNDECLARED_VRAM = (
    "GPU tenant declares no VRAM: it is counted as one replica's even share of the GPU ({share}). "
    "Declare what it really uses in ollama-guard.io/vram (e.g. 8Gi)"
)
UNKNOWN_MODEL = (
    "model(s) {models} not in the guard's catalog: its demand rests on the declared ollama-guard.io/vram "
    "({declared}); ask an admin to add the model(s) to the catalog overlay"
)
PENDING = "{count} pod(s) would be admitted but stay Pending: {why}"
OBSERVED_OVER = (
    "pod {pod} holds {observed} of VRAM on {node} by its own Ollama's account (/api/ps), {over} above the "
    "{demand} it is accounted with: the estimate fell short, and its neighbours on the GPU may run out of "
    "memory. Loaded: {models}. Lower its OLLAMA_CONTEXT_LENGTH or OLLAMA_NUM_PARALLEL, or declare what it "
    "needs in ollama-guard.io/vram"
)
OBSERVED_IDLE = (
    "pod {pod} has held only {observed} ({share} of its {demand} demand) for {minutes} min: VRAM reserved on "
    "{node} but idle. Loaded: {models}. Scale it down or lower its settings to make room for other tenants"
)
OBSERVED_WITHIN = "pod {pod} holds {observed} of its {demand} demand ({share}); loaded: {models}"
OBSERVED_UNKNOWN = "observed VRAM of pod {pod} unknown ({detail}); it is not counted as zero"


def _advice(rule: str, message: str) -> Violation:
    return Violation(rule, message, 200, "warn")


def advise(ev: PodEvaluation, *, catalog: Catalog, pending: str, copies: int, share: int) -> tuple[Violation, ...]:
    """Audit-only advice: what the webhook accepts but a platform team should know."""
    out: list[Violation] = []
    demand = ev.demand
    if demand is not None and not ev.skipped:
        decl = demand.declaration
        if ev.pod.is_ollama and not decl.models and decl.vram_mib is None:
            out.append(_advice("undeclared-models", UNDECLARED_MODELS.format(share=format_mib(share))))
        elif not ev.pod.is_ollama and demand.source == "default":
            out.append(_advice("undeclared-vram", UNDECLARED_VRAM.format(share=format_mib(share))))
        unknown = resolve_models(catalog, decl.models)[1]
        if unknown and decl.vram_mib is not None:
            text = UNKNOWN_MODEL.format(models=", ".join(unknown), declared=format_mib(decl.vram_mib))
            out.append(_advice("unknown-model", text))
    if pending:
        out.append(_advice("unschedulable", PENDING.format(count=copies, why=pending)))
    return tuple(out)


def _finding(
    rule: str,
    result: Result,
    message: str,
    resource: ObjectRef,
    *,
    namespace: str = "",
    severity: Severity | None = None,
    properties: Mapping[str, str] | None = None,
) -> Finding:
    level: Severity = severity or ("info" if result in ("pass", "skip") else SEVERITY.get(rule, "medium"))
    return Finding(
        rule=rule,
        result=result,
        severity=level,
        category=CATEGORY.get(rule, "Admission"),
        message=message,
        resource=resource,
        namespace=namespace,
        properties=tuple(sorted((properties or {}).items())),
    )


def _percent(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%" if whole else "n/a"


def node_findings(line: NodeLine) -> list[Finding]:
    """The node's VRAM budget: broken inventory (error), over-committed now or after the manifests, or fine."""
    node = line.node
    ref = ObjectRef("v1", "Node", node.name)
    rule = "node-vram-budget"
    props = {
        "capacityMiB": str(node.capacity_mib),
        "reservedMiB": str(node.reserved_mib),
        "committedMiB": str(line.committed_mib),
        "plannedMiB": str(line.planned_mib),
        "advertisedMiB": "" if line.advertised_mib is None else str(line.advertised_mib),
        "advertiseTargetMiB": "" if line.advertise_target_mib is None else str(line.advertise_target_mib),
    }
    if node.problems:
        text = f"node {node.name}: {'; '.join(node.problems)}. The guard admits no GPU tenant on it until this is fixed"
        return [_finding(rule, "error", text, ref, severity="high", properties=props)]
    budget = format_mib(node.budget_mib)
    running = ", ".join(f"{t.key} {format_mib(t.demand_mib)}" for t in line.tenants if not t.planned)
    tenants = ", ".join(f"{t.key} {format_mib(t.demand_mib)}" for t in line.tenants)
    if line.existing_mib > node.budget_mib:
        text = (
            f"node {node.name} is over-committed now: {format_mib(line.existing_mib)} committed of {budget} "
            f"({_percent(line.existing_mib, node.budget_mib)}); the last tenants to load a model will fail with "
            f"CUDA out-of-memory. Tenants: {running}. Move or shrink tenants, or lower their settings"
        )
        return [_finding(rule, "fail", text, ref, properties=props)]
    if line.committed_mib > node.budget_mib:
        text = (
            f"node {node.name} would be over-committed after the manifests: {format_mib(line.committed_mib)} of "
            f"{budget} ({_percent(line.committed_mib, node.budget_mib)}). Tenants: {tenants}"
        )
        return [_finding(rule, "fail", text, ref, properties=props)]
    planned = f", incl. {format_mib(line.planned_mib)} planned from manifests" if line.planned_mib else ""
    text = (
        f"{format_mib(line.committed_mib)} of {budget} committed ({_percent(line.committed_mib, node.budget_mib)})"
        f"{planned}; {format_mib(line.free_mib)} free; {len(line.tenants)} tenant(s)"
    )
    uncovered = line.uncovered
    if uncovered:
        held = ", ".join(f"{t.key} {format_mib(t.demand_mib)}" for t in uncovered[:5])
        more = f" and {len(uncovered) - 5} more" if len(uncovered) > 5 else ""
        text += (
            f"; {len(uncovered)} not covered by {RESOURCE_VRAM} (held back from the figure the scheduler sees): "
            f"{held}{more}"
        )
    return [_finding(rule, "pass", text, ref, properties=props)]


def observed_finding(obs: Observation) -> Finding:
    """Runtime drift (design §15): a pod's own `/api/ps` against its demand. Above it: `warn` (high);
    idle for long: `warn` (low); unknown: `skip`; else `pass`."""
    ref = ObjectRef("v1", "Pod", obs.name, obs.namespace)
    words = {"pod": obs.key, "node": obs.node, "demand": format_mib(obs.demand_mib), "detail": obs.detail}
    props = {"demandMiB": str(obs.demand_mib), "verdict": obs.verdict, "node": obs.node}
    if obs.observed_mib is None:
        text = OBSERVED_UNKNOWN.format(**words)
        return _finding("observed-vram", "skip", text, ref, namespace=obs.namespace, properties=props)
    props["observedMiB"] = str(obs.observed_mib)
    words |= {
        "observed": format_mib(obs.observed_mib),
        "over": format_mib(obs.over_bytes / (1 << 20)),
        "share": _percent(obs.observed_mib, obs.demand_mib),
        "models": describe_models(obs.models),
        "minutes": str(round((obs.sampled_at - (obs.sampled_at if obs.low_since is None else obs.low_since)) / 60)),
    }
    verdicts: dict[str, tuple[str, Result, Severity]] = {
        "over": (OBSERVED_OVER, "warn", "high"),
        "idle": (OBSERVED_IDLE, "warn", "low"),
    }
    template, result, level = verdicts.get(obs.verdict, (OBSERVED_WITHIN, "pass", "info"))
    text = template.format(**words)
    return _finding("observed-vram", result, text, ref, namespace=obs.namespace, severity=level, properties=props)


def other_node_finding(node: OtherNode) -> Finding:
    """A `skip`: the guard does not account this GPU node."""
    text = f"GPU node {node.name} is not guarded ({node.reason}); its tenants are not counted"
    return _finding("gpu-node-guarded", "skip", text, ObjectRef("v1", "Node", node.name))


def namespace_findings(line: NamespaceLine) -> list[Finding]:
    """The namespace's policy problems, then its VRAM quota (when it has one and is not exempt)."""
    policy = line.policy
    ref = ObjectRef("v1", "Namespace", policy.namespace)
    out = [
        _finding(
            "namespace-policy",
            "fail",
            f"{problem}. Every GPU pod in namespace {policy.namespace} is denied until it is fixed",
            ref,
            namespace=policy.namespace,
        )
        for problem in policy.problems
    ]
    quota = policy.vram_quota_mib
    if quota is not None and not policy.exempt:
        used = format_mib(line.used_mib)
        if line.used_mib > quota:
            text = (
                f"namespace {policy.namespace} holds {used} of GPU VRAM, over its quota of {format_mib(quota)} "
                f"(ollama-guard.io/vram-quota) by {format_mib(line.used_mib - quota)}"
            )
            out.append(_finding("vram-quota", "fail", text, ref, namespace=policy.namespace))
        else:
            text = f"namespace {policy.namespace} holds {used} of its {format_mib(quota)} VRAM quota"
            text += f" ({_percent(line.used_mib, quota)})"
            out.append(_finding("vram-quota", "pass", text, ref, namespace=policy.namespace))
    return out


def subject_findings(subject: Subject) -> list[Finding]:
    """One finding per violation and advisory; else one `skip`, `error` or `pass` for the subject."""
    ref, ns = subject.resource, subject.resource.namespace
    props = {"origin": subject.origin, "verdict": subject.verdict, "admission": subject.admission}
    if subject.demand_mib is not None:
        props["demandMiB"] = str(subject.demand_mib)
    if subject.nodes:
        props["nodes"] = ",".join(dict.fromkeys(subject.nodes))
    if subject.skipped:
        return [_finding("admission", "skip", subject.skipped, ref, namespace=ns, properties=props)]
    if subject.verdict == "error":
        return [_finding("evaluation", "error", subject.decision, ref, namespace=ns, severity="high", properties=props)]
    out = [
        _finding(v.rule, "fail" if v.severity == "fail" else "warn", v.message, ref, namespace=ns, properties=props)
        for v in (*subject.violations, *subject.advisories)
    ]
    if not out:
        out.append(_finding("admission", "pass", admitted_text(subject), ref, namespace=ns, properties=props))
    return out


def admitted_text(subject: Subject) -> str:
    """The `pass` message: the demand, the copies and where they run."""
    where = ""
    if subject.nodes:
        verb = "bound to" if subject.origin == "cluster" else "placed on"
        where = f"; {verb} {', '.join(dict.fromkeys(subject.nodes))}"
    copies = f" × {subject.replicas}" if subject.replicas != 1 else ""
    demand = subject.demand_text or "no GPU"
    return f"would be admitted: {demand}{copies}{where}"


def admission_of(response: AdmissionResponse) -> str:
    """What the webhook's answer means to the pod's author: denied, audited, warned or allowed."""
    if not response.allowed:
        return "denied"
    if response.audit_annotations:
        return "audited"
    return "warned" if response.warnings else "allowed"


def report_findings(
    nodes: Sequence[NodeLine],
    others: Sequence[OtherNode],
    spaces: Sequence[NamespaceLine],
    subjects: Sequence[Subject],
) -> tuple[Finding, ...]:
    """Every finding of a report: guarded nodes, unguarded nodes, namespaces, then subjects."""
    findings = [f for line in nodes for f in node_findings(line)]
    findings += [other_node_finding(o) for o in others]
    findings += [f for line in spaces for f in namespace_findings(line)]
    findings += [f for s in subjects for f in subject_findings(s)]
    return tuple(findings)


# --- what the mutating webhook would inject -------------------------------------------------------
def describe_patch(pod: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """JSON Patch ops as people read them: 'container ollama: env A=1, B=2; limits nvidia.com/gpu=1'."""
    containers: dict[str, dict[str, list[str]]] = {}
    annotations: list[str] = []
    other: list[str] = []
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    for op in ops:
        path = [p.replace("~1", "/").replace("~0", "~") for p in str(op.get("path", "")).split("/")[1:]]
        value = op.get("value")
        if path[:1] == ["metadata"]:
            annotations += _annotation_changes(str(op.get("op")), path, value)
        elif len(path) >= 4 and path[0] == "spec" and path[1] in ("containers", "initContainers"):
            items = (spec or {}).get(path[1])
            index = int(path[2]) if path[2].isdigit() else -1
            found = items[index] if isinstance(items, list) and 0 <= index < len(items) else {}
            name = str(found.get("name") if isinstance(found, Mapping) else "") or f"#{path[2]}"
            for group, change in _container_changes(path[3:], value):
                containers.setdefault(name, {}).setdefault(group, []).append(change)
        else:
            other.append(f"{op.get('op')} {op.get('path')}")
    lines = [
        f"container {name}: " + "; ".join(f"{group} {', '.join(changes)}" for group, changes in groups.items())
        for name, groups in containers.items()
    ]
    if annotations:
        lines.append(f"annotations {', '.join(annotations)}")
    return (*lines, *other)


def _container_changes(path: list[str], value: Any) -> list[tuple[str, str]]:
    if path[0] == "env":
        entries = value if isinstance(value, list) else [value]
        return [("env", f"{e.get('name')}={e.get('value')}") for e in entries if isinstance(e, Mapping)]
    if path[0] == "resources":
        sections: Mapping[str, Any] = value if len(path) == 1 and isinstance(value, Mapping) else {}
        if len(path) == 2:
            sections = {path[1]: value}
        if len(path) == 3:
            sections = {path[1]: {path[2]: value}}
        return [
            (str(section), f"{resource}={amount}")
            for section, amounts in sections.items()
            if isinstance(amounts, Mapping)
            for resource, amount in amounts.items()
        ]
    return [("set", "/".join(path))]


def _annotation_changes(op: str, path: list[str], value: Any) -> list[str]:
    if op == "remove":
        return [f"remove {path[-1]}"]
    if len(path) == 3:
        values = {path[2]: value}
    elif len(path) == 2 and isinstance(value, Mapping):
        values = dict(value)
    else:
        values = dict(value.get("annotations") or {}) if isinstance(value, Mapping) else {}
    return [f"{k} (VRAM breakdown)" if k == ANN_ESTIMATE else f"{k}={v}" for k, v in values.items()]
