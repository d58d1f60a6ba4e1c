"""The audit's report values (design §12): what one audit found, as frozen values.

Owns the vocabulary (`Result`, `Severity`, `Verdict`, their ranking) and the report shapes the
renderers read: `ObjectRef`, `Finding`, `TenantLine`, `NodeLine`, `OtherNode`, `NamespaceLine`,
`Subject`, `AuditReport`, and `Manifest` (an audit input). Pure values: no evaluation, no I/O;
`audit_findings` turns lines and subjects into findings, `audit` runs the evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from webhook.core.evaluation import Violation
from webhook.core.inventory import GpuNode
from webhook.core.policy import NamespacePolicy

Result = Literal["pass", "fail", "warn", "error", "skip"]
Severity = Literal["high", "medium", "low", "info"]
Verdict = Literal["admit", "deny", "skip", "error"]
RESULTS: tuple[Result, ...] = ("pass", "fail", "warn", "error", "skip")
#: how bad a result is, for `--fail-on` and for sorting (worst first)
RANK: Mapping[str, int] = {"pass": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A Kubernetes object reference (the PolicyReport `resources` entry)."""

    api_version: str
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""

    @property
    def display(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One result: a rule checked on one resource."""

    rule: str
    result: Result
    severity: Severity
    category: str
    message: str
    resource: ObjectRef
    #: the namespace whose PolicyReport holds it; "" for the ClusterPolicyReport (nodes)
    namespace: str = ""
    properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TenantLine:
    """One tenant counted against a guarded node."""

    namespace: str
    name: str
    demand_mib: int
    #: estimate, declared, max(declared, estimate), default or annotation (the guard's stamp)
    source: str
    models: tuple[str, ...]
    #: True when it comes from the manifests (placed by the audit), False when it runs now
    planned: bool = False
    owner: str = ""
    problem: str = ""
    #: requests `ollama-guard.io/vram-mib`, so the scheduler counts it (design §14); False: held back
    #: from the node's advertised figure instead (a pod from before the guard, an exempt namespace)
    covered: bool = False
    #: MiB its Ollama reports holding (`GET /api/ps`, design §15); None: not observed, or unknown
    observed_mib: int | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class NodeLine:
    """A guarded node: its budget and every tenant counted against it."""

    node: GpuNode
    tenants: tuple[TenantLine, ...]
    #: `ollama-guard.io/vram-mib` the node shows the scheduler now (allocatable), None when absent
    advertised_mib: int | None = None
    #: the figure the advertiser keeps there: usable VRAM minus the tenants the resource does not cover
    advertise_target_mib: int | None = None

    @property
    def uncovered(self) -> tuple[TenantLine, ...]:
        return tuple(t for t in self.tenants if not t.covered)

    @property
    def committed_mib(self) -> int:
        return sum(t.demand_mib for t in self.tenants)

    @property
    def planned_mib(self) -> int:
        return sum(t.demand_mib for t in self.tenants if t.planned)

    @property
    def existing_mib(self) -> int:
        return self.committed_mib - self.planned_mib

    @property
    def free_mib(self) -> int:
        """Budget left; negative when over-committed."""
        return self.node.budget_mib - self.committed_mib

    @property
    def used_ratio(self) -> float:
        budget = self.node.budget_mib
        return self.committed_mib / budget if budget else (1.0 if self.committed_mib else 0.0)


@dataclass(frozen=True, slots=True)
class OtherNode:
    """A GPU node the guard does not account: not time-sliced, or MIG."""

    name: str
    product: str
    gpu_resource: str
    slots: int
    mig: bool

    @property
    def reason(self) -> str:
        if self.mig:
            return "MIG: slices are hard-partitioned by the hardware"
        return "time-slicing off: each GPU replica is a whole GPU"


@dataclass(frozen=True, slots=True)
class NamespaceLine:
    """A namespace's effective policy and the VRAM its tenants hold."""

    policy: NamespacePolicy
    used_mib: int


@dataclass(frozen=True, slots=True)
class Subject:
    """One Pod or workload judged as if created now."""

    resource: ObjectRef
    #: "cluster" for what runs now, else the manifest file
    origin: str
    replicas: int
    verdict: Verdict
    #: what the webhook answers in the namespace's own mode: denied, warned, audited, allowed
    admission: str
    #: the denial message under `enforce` ("" when admitted)
    decision: str
    demand_mib: int | None
    demand_text: str
    demand_source: str
    models: tuple[str, ...]
    models_from: str
    violations: tuple[Violation, ...]
    #: audit-only advice (undeclared models, pending pods…); never part of the verdict
    advisories: tuple[Violation, ...]
    notes: tuple[str, ...]
    patch: tuple[Mapping[str, Any], ...]
    inject: tuple[str, ...]
    #: nodes it is bound to (cluster) or placed on (manifests), one entry per pod
    nodes: tuple[str, ...]
    skipped: str = ""


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Everything one audit found: nodes, namespaces, subjects and their findings."""

    generated_at: datetime
    state_origin: str
    manifest_origins: tuple[str, ...]
    namespace: str | None
    nodes: tuple[NodeLine, ...]
    other_nodes: tuple[OtherNode, ...]
    namespaces: tuple[NamespaceLine, ...]
    subjects: tuple[Subject, ...]
    findings: tuple[Finding, ...]
    #: manifest objects of other kinds: (origin, reference)
    ignored: tuple[tuple[str, ObjectRef], ...] = ()

    @property
    def summary(self) -> dict[str, int]:
        return count_results(self.findings)

    def reaches(self, level: Result) -> bool:
        """Whether any result is at or above `level` (warn < fail < error)."""
        return any(RANK[f.result] >= RANK[level] for f in self.findings)

    def ordered_findings(self) -> tuple[Finding, ...]:
        """Worst first, then cluster before namespaces, then by resource."""
        return tuple(
            sorted(
                self.findings,
                key=lambda f: (-RANK[f.result], f.result, f.namespace, f.resource.display, f.rule),
            )
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """One object from `-f`, with the file it came from."""

    origin: str
    obj: Mapping[str, Any]


def count_results(findings: Sequence[Finding]) -> dict[str, int]:
    """How many findings have each result, every result present (in `RESULTS` order)."""
    counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
    for f in findings:
        counts[f.result] += 1
    return counts
