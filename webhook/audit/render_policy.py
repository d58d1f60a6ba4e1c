"""Machine-readable renderings of an `AuditReport`: the `json` format, and `wgpolicyk8s.io/v1alpha2`
PolicyReport / ClusterPolicyReport documents (the format Kyverno and Policy Reporter read). The
report building is shared with `render_openreports` (`ReportApi`, `report_documents`,
`stale_reports`, `render_documents`): the OpenReports group has the same results and summary.

PolicyReports follow the v1alpha2 CRD (kubernetes-sigs/wg-policy-prototypes, Kyverno's
`api/policyreport/v1alpha2`): one `PolicyReport` named `ollama-guard` per namespace (its pods,
workloads and namespace policy), one `ClusterPolicyReport` named `ollama-guard` for the nodes;
each result has `policy: ollama-guard`, `rule`, `result` (pass|fail|warn|error|skip), `severity`
(high|medium|low|info), `category`, `message`, `source: ollama-guard`, `scored: true`,
`timestamp: {seconds, nanos}`, `resources` (ObjectReferences) and string `properties`;
`summary` counts the results; every report is labelled `app.kubernetes.io/managed-by: ollama-guard`.
Pass and skip results carry severity `info` (the current CRD's enum is critical|high|medium|low|info;
copies generated before `critical`/`info` were added accept only high|medium|low).

JSON schema (`schemaVersion: 1`; within a version fields are only ever added, never changed):

    schemaVersion  1
    generatedAt    RFC 3339 UTC time of the audit
    source         {state: what the cluster state came from, manifests: [files]}
    namespace      the --namespace filter, or null for all namespaces
    summary        {pass, fail, warn, error, skip}: counts of `results`
    nodes          guarded (time-sliced) GPU nodes: {name, product, gpuCount, replicas, gpuMemoryMiB,
                   capacityMiB, reservedMiB, budgetMiB, committedMiB, plannedMiB (from manifests),
                   freeMiB (negative when over-committed), usedPercent, problems: [str],
                   tenants: [{namespace, name, demandMiB, source, models, planned, owner, problem,
                   coveredByResource, observedMiB (what its Ollama's /api/ps reports, or null)}]}
                   tenant source: estimate | declared | max(declared, estimate) | default | annotation
    unguardedNodes GPU nodes not guarded: {name, product, gpuResource, slots, mig, reason}
    namespaces     {name, enforcement, exempt, maxLoadedModels, contextLength, numParallel,
                   vramQuotaMiB (or null), usedMiB, allowedModels, problems}
    subjects       each Pod (running, or from a manifest) and workload judged as if created now:
                   {apiVersion, kind, namespace, name, uid, origin ("cluster" or the manifest file),
                   replicas, verdict (admit|deny|skip: what `enforce` mode answers; error: the guard
                   could not evaluate it), admission (allowed|warned|audited|denied|error: the answer in
                   the namespace's own mode), decision (the denial or error message, or ""),
                   demandMiB (per pod, or null), demand (text),
                   demandSource, models, modelsFrom (annotation|discovered|none), nodes, skipped,
                   violations and advisories: [{rule, severity (fail|warn), code, message}],
                   notes, inject (human lines), patch (the RFC 6902 JSON Patch of the mutating webhook)}
    results        {policy, rule, result, severity, category, message, namespace ("" for the
                   cluster scope), resource: {apiVersion, kind, name, namespace, uid}, properties}
    ignored        manifest objects of other kinds: {origin, apiVersion, kind, namespace, name}

Pure: report in, documents and text out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from webhook.audit.model import AuditReport, Finding, NodeLine, ObjectRef, Subject, count_results
from webhook.core.evaluation import Violation

SCHEMA_VERSION = 1
POLICY = "ollama-guard"
SOURCE = "ollama-guard"
REPORT_NAME = "ollama-guard"
LABELS = {"app.kubernetes.io/managed-by": "ollama-guard"}


@dataclass(frozen=True, slots=True)
class ReportApi:
    """A policy-report API group: its version, the namespaced and cluster kinds and resources."""

    group: str
    version: str
    kind: str
    cluster_kind: str
    resource: str
    cluster_resource: str
    #: whether the report itself has a `source` field (OpenReports does, v1alpha2 does not)
    report_source: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


WGPOLICY = ReportApi(
    "wgpolicyk8s.io", "v1alpha2", "PolicyReport", "ClusterPolicyReport", "policyreports", "clusterpolicyreports"
)


# --- PolicyReport --------------------------------------------------------------------------------
def policy_reports(report: AuditReport) -> list[dict[str, Any]]:
    """The ClusterPolicyReport (nodes), then one PolicyReport per namespace, sorted by namespace."""
    return report_documents(report, WGPOLICY)


def report_documents(report: AuditReport, api: ReportApi) -> list[dict[str, Any]]:
    """The cluster-scoped report (nodes), then one namespaced report per namespace, sorted by
    namespace, in the group `api`.

    A namespace listed in the audit gets a report even with no results, so writing the reports
    replaces results that no longer hold.
    """
    grouped: dict[str, list[Finding]] = {line.policy.namespace: [] for line in report.namespaces}
    for finding in report.findings:
        if finding.namespace:
            grouped.setdefault(finding.namespace, []).append(finding)
    cluster = [f for f in report.findings if not f.namespace]
    docs = [_report_document(report, api, "", cluster)]
    docs += [_report_document(report, api, ns, grouped[ns]) for ns in sorted(grouped)]
    return docs


def stale_reports(report: AuditReport, existing: Sequence[Mapping[str, Any]]) -> list[str]:
    """Namespaces whose ollama-guard report (`existing`: the cluster's namespaced reports of one
    group, listed by our label) this report no longer writes: a namespace that lost its last GPU
    tenant and its annotations. Only namespaces within the audit's scope (`--namespace`) are
    candidates."""
    written = {line.policy.namespace for line in report.namespaces} | {f.namespace for f in report.findings}
    stale = set()
    for item in existing:
        meta = item.get("metadata") if isinstance(item.get("metadata"), Mapping) else {}
        namespace = str((meta or {}).get("namespace") or "")
        if (meta or {}).get("name") != REPORT_NAME or not namespace or namespace in written:
            continue
        if report.namespace in (None, namespace):
            stale.add(namespace)
    return sorted(stale)


def render_policy_reports(report: AuditReport) -> str:
    """Multi-document YAML, `kubectl apply -f`-able."""
    return render_documents(policy_reports(report))


def render_documents(docs: Sequence[Mapping[str, Any]]) -> str:
    """Documents as multi-document YAML, in their own key order."""
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, explicit_start=True, width=4096)


def _report_document(
    report: AuditReport, api: ReportApi, namespace: str, findings: Sequence[Finding]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": REPORT_NAME}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(LABELS)
    timestamp = {"seconds": int(report.generated_at.timestamp()), "nanos": report.generated_at.microsecond * 1000}
    kind = api.kind if namespace else api.cluster_kind
    doc: dict[str, Any] = {"apiVersion": api.api_version, "kind": kind, "metadata": metadata}
    if api.report_source:
        doc["source"] = SOURCE
    doc["summary"] = count_results(findings)
    doc["results"] = [_result(f, timestamp) for f in findings]
    return doc


def _result(finding: Finding, timestamp: Mapping[str, int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "policy": POLICY,
        "rule": finding.rule,
        "result": finding.result,
        "scored": True,
        "severity": finding.severity,
        "category": finding.category,
        "message": finding.message,
        "source": SOURCE,
        "timestamp": dict(timestamp),
        "resources": [object_reference(finding.resource)],
    }
    if finding.properties:
        result["properties"] = dict(finding.properties)
    return result


def object_reference(ref: ObjectRef) -> dict[str, str]:
    """A core/v1 ObjectReference with the empty fields left out."""
    out = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name}
    if ref.namespace:
        out["namespace"] = ref.namespace
    if ref.uid:
        out["uid"] = ref.uid
    return out


# --- JSON ----------------------------------------------------------------------------------------
def render_json(report: AuditReport) -> str:
    return json.dumps(json_document(report), indent=2, ensure_ascii=False) + "\n"


def json_document(report: AuditReport) -> dict[str, Any]:
    """The documented `json` format (see the module docstring)."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "generatedAt": report.generated_at.isoformat().replace("+00:00", "Z"),
        "source": {"state": report.state_origin, "manifests": list(report.manifest_origins)},
        "namespace": report.namespace,
        "summary": report.summary,
        "nodes": [_node(line) for line in report.nodes],
        "unguardedNodes": [
            {
                "name": o.name,
                "product": o.product,
                "gpuResource": o.gpu_resource,
                "slots": o.slots,
                "mig": o.mig,
                "reason": o.reason,
            }
            for o in report.other_nodes
        ],
        "namespaces": [
            {
                "name": line.policy.namespace,
                "enforcement": line.policy.enforcement,
                "exempt": line.policy.exempt,
                "maxLoadedModels": line.policy.max_loaded_models,
                "contextLength": line.policy.context_length,
                "numParallel": line.policy.num_parallel,
                "vramQuotaMiB": line.policy.vram_quota_mib,
                "usedMiB": line.used_mib,
                "allowedModels": list(line.policy.allowed_models),
                "problems": [str(p) for p in line.policy.problems],
            }
            for line in report.namespaces
        ],
        "subjects": [_subject(s) for s in report.subjects],
        "results": [
            {
                "policy": POLICY,
                "rule": f.rule,
                "result": f.result,
                "severity": f.severity,
                "category": f.category,
                "message": f.message,
                "namespace": f.namespace,
                "resource": _ref(f.resource),
                "properties": dict(f.properties),
            }
            for f in report.findings
        ],
        "ignored": [{"origin": origin, **_ref(ref)} for origin, ref in report.ignored],
    }


def _ref(ref: ObjectRef) -> dict[str, str]:
    return {
        "apiVersion": ref.api_version,
        "kind": ref.kind,
        "name": ref.name,
        "namespace": ref.namespace,
        "uid": ref.uid,
    }


def _node(line: NodeLine) -> dict[str, Any]:
    node = line.node
    return {
        "name": node.name,
        "product": node.product,
        "gpuCount": node.gpu_count,
        "replicas": node.replicas,
        "gpuMemoryMiB": node.gpu_memory_mib,
        "capacityMiB": node.capacity_mib,
        "reservedMiB": node.reserved_mib,
        "budgetMiB": node.budget_mib,
        "committedMiB": line.committed_mib,
        "plannedMiB": line.planned_mib,
        "freeMiB": line.free_mib,
        "usedPercent": round(line.used_ratio * 100, 1),
        "advertisedMiB": line.advertised_mib,
        "advertiseTargetMiB": line.advertise_target_mib,
        "problems": list(node.problems),
        "tenants": [
            {
                "namespace": t.namespace,
                "name": t.name,
                "demandMiB": t.demand_mib,
                "source": t.source,
                "models": list(t.models),
                "planned": t.planned,
                "owner": t.owner,
                "problem": t.problem,
                "coveredByResource": t.covered,
                "observedMiB": t.observed_mib,
            }
            for t in line.tenants
        ],
    }


def _violation(v: Violation) -> dict[str, Any]:
    return {"rule": v.rule, "severity": v.severity, "code": v.code, "message": v.message}


def _subject(s: Subject) -> dict[str, Any]:
    return {
        **_ref(s.resource),
        "origin": s.origin,
        "replicas": s.replicas,
        "verdict": s.verdict,
        "admission": s.admission,
        "decision": s.decision,
        "demandMiB": s.demand_mib,
        "demand": s.demand_text,
        "demandSource": s.demand_source,
        "models": list(s.models),
        "modelsFrom": s.models_from,
        "nodes": list(s.nodes),
        "skipped": s.skipped,
        "violations": [_violation(v) for v in s.violations],
        "advisories": [_violation(v) for v in s.advisories],
        "notes": list(s.notes),
        "inject": list(s.inject),
        "patch": [dict(op) for op in s.patch],
    }
