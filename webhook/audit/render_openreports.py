"""OpenReports renderings of an `AuditReport`: `openreports.io/v1alpha1` Report / ClusterReport
documents, the successor of `wgpolicyk8s.io/v1alpha2` that Kyverno (1.15+, `--openreportsEnabled`)
writes and Policy Reporter reads.

The same reports as `render_policy`'s PolicyReports, in the other group: one `Report` named
`ollama-guard` per namespace in the audit (its pods, workloads and namespace policy) and one
`ClusterReport` named `ollama-guard` for the nodes, built by `render_policy.report_documents`.
Only the group, the kinds, the resources and the report-level `source` differ.

Field by field, against the Go types of `openreports/reports-api`
(`apis/openreports.io/v1alpha1/report_types.go`, `clusterreport_types.go`) and its CRDs
(`config/install.yaml`; a copy of their `openAPIV3Schema` is in `tests/data/crds/`):

    Report / ClusterReport (Go field, `json` name)  written as
    TypeMeta     apiVersion, kind    openreports.io/v1alpha1; Report (namespaced, resource `reports`)
                                     or ClusterReport (cluster-scoped, resource `clusterreports`)
    ObjectMeta   metadata            name ollama-guard; namespace (Report only); labels
                                     app.kubernetes.io/managed-by: ollama-guard (what pruning lists)
    Source       source              ollama-guard (the report-level field v1alpha2 does not have)
    Scope        scope               not written: a report holds results for many resources (a
    ScopeSelector scopeSelector      namespace's pods and workloads, or all nodes), each named in its
                                     result's `resources`; a scope would say it is about one object
    Configuration configuration      not written: every result is written (no limits.maxResults,
                                     no statusFilter); `limits` is required inside it
    Summary      summary             {pass, fail, warn, error, skip}: counts of the report's
                                     results, every key present
    Results      results             one ReportResult per finding, in the audit's order:

    ReportResult (Go field, `json` name)  written as
    Source       source              ollama-guard (also per result: the Go type serialises it
                                     without omitempty, and readers coming from v1alpha2 read it here)
    Policy       policy              ollama-guard (the only required field)
    Rule         rule                the check: node-vram-budget, capacity, vram-quota, ...
    Category     category            the rule's category (see `webhook.audit.findings`)
    Severity     severity            high | medium | low | info (pass and skip are info); the
                                     enum also allows critical, which the guard does not use
    Timestamp    timestamp           the audit time as metav1.Timestamp {seconds, nanos}
    Result       result              pass | fail | warn | error | skip
    Scored       scored              true
    Subjects     resources           [one core/v1 ObjectReference: apiVersion, kind, name,
                                     namespace and uid when known]
    ResourceSelector resourceSelector  not written (results name their resource)
    Description  message             the finding's message, for the resource's owner
    Properties   properties          the finding's string properties (demand, node, ...), left out
                                     when there are none

Pure: report in, documents and text out.
"""

from __future__ import annotations

from typing import Any

from webhook.audit.model import AuditReport
from webhook.audit.render_policy import ReportApi, render_documents, report_documents

OPENREPORTS = ReportApi(
    "openreports.io", "v1alpha1", "Report", "ClusterReport", "reports", "clusterreports", report_source=True
)


def open_reports(report: AuditReport) -> list[dict[str, Any]]:
    """The ClusterReport (nodes), then one Report per namespace, sorted by namespace."""
    return report_documents(report, OPENREPORTS)


def render_open_reports(report: AuditReport) -> str:
    """Multi-document YAML, `kubectl apply -f`-able."""
    return render_documents(open_reports(report))
