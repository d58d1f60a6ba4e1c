"""The dry-run audit (design §12): a cluster state plus manifests -> one frozen `AuditReport`.

How the state is judged (pure: no I/O; the clock is the `now` argument):

1. The state (Nodes, Namespaces, Pods: a snapshot file or a live listing) becomes a
   `ClusterView` exactly as the webhook builds one. Every active Pod that is an Ollama pod or a
   GPU tenant is judged *as it runs* (its raw spec, no mutation) as if it were created now
   against the state without itself, by the same `evaluate_pod` + `guard.enforce` the validating
   webhook runs. What `mutate` would add to it is reported beside.
2. Manifests (`-f`) are applied in order, as if admitted now. A Namespace or Node replaces its
   state object; a Pod goes through `mutate` then the Pod CREATE checks; a workload through the
   workload CREATE checks (`evaluate_workload`: template × replicas). Other kinds are ignored.
3. Placement rule for what is admitted (the decision under `enforce`; a pod the guard skips,
   e.g. in an exempt namespace, is admitted too): each pod (each replica; a DaemonSet's one pod
   per guarded candidate node) goes to the candidate node (`scheduling.candidate_nodes`, which
   honours `spec.nodeName`) that has a free GPU replica and where it fits with the most free VRAM
   (ties: by name), else to an unguarded candidate with a free replica; a skipped pod that fits
   nowhere still lands on the guarded candidate with most free VRAM (nothing stops it). A pod
   with no such node stays Pending and is reported. Placed pods count for everything after.
4. Findings use the PolicyReport vocabulary (`pass`/`fail`/`warn`/`error`/`skip`, severities
   high/medium/low/info). The verdict is what `enforce` mode would do; the namespace's own mode
   only changes the reported `admission` (denied, warned, audited or allowed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, Literal

import jsonpatch

from webhook.catalog import Catalog
from webhook.demand import resolve_models
from webhook.evaluation import PodEvaluation, Violation, evaluate_pod
from webhook.explain import describe_demand
from webhook.guard import Guard, enforce
from webhook.inventory import GpuNode
from webhook.ledger import Ledger, fits
from webhook.mutation import mutate
from webhook.policy import ClusterPolicy, NamespacePolicy
from webhook.quantity import format_mib
from webhook.review import AdmissionRequest, AdmissionResponse
from webhook.scheduling import candidate_nodes
from webhook.templates import Workload, read_workload
from webhook.tenants import ANN_ESTIMATE, DeclarationError, read_pod
from webhook.view import ClusterView, Tenant, ViewBuilder, tenant_from_pod
from webhook.workloads import evaluate_workload

Result = Literal["pass", "fail", "warn", "error", "skip"]
Severity = Literal["high", "medium", "low", "info"]
Verdict = Literal["admit", "deny", "skip", "error"]
RESULTS: tuple[Result, ...] = ("pass", "fail", "warn", "error", "skip")
#: how bad a result is, for `--fail-on` and for sorting (worst first)
RANK: Mapping[str, int] = {"pass": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}
API_VERSIONS = {
    "Pod": "v1",
    "Node": "v1",
    "Namespace": "v1",
    "ReplicationController": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}
SEVERITY: Mapping[str, Severity] = {
    "node-vram-budget": "high",
    "capacity": "high",
    "declaration": "high",
    "namespace-policy": "high",
    "gpu-request": "high",
    "vram-quota": "medium",
    "settings-cap": "medium",
    "settings-missing": "medium",
    "allowed-models": "medium",
    "undeclared-models": "medium",
    "guard-annotation": "low",
    "undeclared-vram": "low",
    "unknown-model": "low",
    "unschedulable": "low",
}
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
    "gpu-request": "GPU request",
    "gpu-node-guarded": "GPU inventory",
    "admission": "Admission",
    "evaluation": "Admission",
}


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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class NodeLine:
    """A guarded node: its budget and every tenant counted against it."""

    node: GpuNode
    tenants: tuple[TenantLine, ...]

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
    counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
    for f in findings:
        counts[f.result] += 1
    return counts


def run_audit(
    state: Sequence[Mapping[str, Any]],
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    now: datetime,
    state_origin: str,
    manifests: Sequence[Manifest] = (),
    namespace: str | None = None,
    default_namespace: str = "default",
) -> AuditReport:
    """Judge the state, apply the manifests in order, and report (see the module docstring).

    `namespace` limits subjects and namespace results to one namespace (nodes stay whole);
    manifest objects without a namespace go to `namespace` or `default_namespace`.
    """
    run = _Run(state, cluster=cluster, catalog=catalog)
    for raw in sorted((p for p in state if p.get("kind") == "Pod" and run.relevant(p)), key=_ns_name):
        run.attempt(Manifest("cluster", raw), "", partial(run.judge_existing, raw))
    ignored: list[tuple[str, ObjectRef]] = []
    fallback = namespace or default_namespace
    for item in manifests:
        if not run.attempt(item, fallback, partial(run.apply, item, default_namespace=fallback)):
            ignored.append((item.origin, _ref(item.obj, fallback)))
    return run.report(
        now=now,
        state_origin=state_origin,
        manifest_origins=tuple(dict.fromkeys(m.origin for m in manifests)),
        namespace=namespace,
        ignored=tuple(ignored),
    )


class _Run:
    """The mutable state of one audit: a view builder, the ledger over its view, the guard."""

    def __init__(self, state: Sequence[Mapping[str, Any]], *, cluster: ClusterPolicy, catalog: Catalog) -> None:
        self.cluster, self.catalog = cluster, catalog
        self.builder = ViewBuilder(cluster=cluster, catalog=catalog)
        for kind, setter in (("Node", self.builder.set_node), ("Namespace", self.builder.set_namespace)):
            for obj in state:
                if obj.get("kind") == kind:
                    setter(obj)
        for obj in state:
            if obj.get("kind") == "Pod":
                self.builder.set_pod(obj)
        self.guard = Guard(cluster=cluster, catalog=catalog, ledger=Ledger(self.builder.build()))
        self.existing = frozenset(self.view.tenants)
        self.subjects: list[Subject] = []
        self.owners: dict[str, str] = {}

    @property
    def view(self) -> ClusterView:
        return self.guard.ledger.view

    def attempt(self, item: Manifest, namespace: str, call: Callable[[], bool | None]) -> bool:
        """Run one object's evaluation; what the core cannot evaluate becomes an `error` subject.

        The webhook answers such a request with an internal error (HTTP 500 in the review), which
        kube-apiserver treats as a denial under the validating webhook's `failurePolicy: Fail`.
        """
        try:
            return call() is not False
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, jsonpatch.JsonPatchException) as exc:
            message = (
                f"ollama-guard could not evaluate this object ({type(exc).__name__}: {str(exc)[:200]}); the "
                "validating webhook would answer with an internal error, which the API server treats as a denial"
            )
            self.subjects.append(_error_subject(_ref(item.obj, namespace), item.origin, message))
            return True

    def relevant(self, raw: Mapping[str, Any]) -> bool:
        try:
            pod = read_pod(raw, gpu_resources=self.cluster.gpu_resources)
        except DeclarationError:
            return True
        return pod.active and (pod.is_ollama or pod.is_gpu_tenant or pod.uses_mig)

    # --- judging ---------------------------------------------------------------------------------
    def judge_existing(self, raw: Mapping[str, Any]) -> None:
        ref = _ref(raw, "")
        without = _without(self.view, f"{ref.namespace}/{ref.name}")
        patch = self.mutation(raw, ref.namespace)
        node = str(_spec(raw).get("nodeName") or "")
        ev = self.evaluate(lambda: self._evaluate_pod(raw, ref.namespace, without))
        self.subjects.append(self.subject(ref, "cluster", ev, raw, patch=patch, nodes=(node,) if node else ()))

    def apply(self, item: Manifest, *, default_namespace: str) -> bool:
        """Apply one manifest object; False when its kind is not something the audit judges."""
        obj, kind = item.obj, str(item.obj.get("kind") or "")
        if kind in ("Node", "Namespace"):
            (self.builder.set_node if kind == "Node" else self.builder.set_namespace)(obj)
            self.guard.ledger.publish(self.builder.build())
            return True
        if kind == "Pod":
            ref = _ref(obj, default_namespace)
            if not _meta(obj).get("name"):  # generateName only: the API server adds a suffix
                ref = replace(ref, name=f"{ref.name}{len(self.subjects):05d}")
            self.apply_pod(item, ref)
            return True
        workload = read_workload(obj, namespace=default_namespace)
        if workload is None:
            return False
        self.apply_workload(item, workload)
        return True

    def apply_pod(self, item: Manifest, ref: ObjectRef) -> None:
        patch = self.mutation(item.obj, ref.namespace)
        obj = jsonpatch.apply_patch(dict(item.obj), list(patch)) if patch else dict(item.obj)
        ev = self.evaluate(lambda: self._evaluate_pod(obj, ref.namespace, self.view))
        nodes, pending = self.place(ev, obj, [dict(_spec(obj))], names=[ref.name], owner="")
        self.subjects.append(self.subject(ref, item.origin, ev, obj, patch=patch, nodes=nodes, pending=pending))

    def apply_workload(self, item: Manifest, workload: Workload) -> None:
        ref = replace(_ref(item.obj, workload.namespace), namespace=workload.namespace)
        pod = _template_pod(workload)
        patch = self.mutation(pod, workload.namespace)
        ev = self.evaluate(lambda: evaluate_workload(workload, self.guard))
        spec = dict(pod["spec"])
        if workload.kind == "DaemonSet":
            specs = [{**spec, "nodeName": n.name} for n in candidate_nodes(spec, self.view.nodes.values()) if n.guarded]
        else:
            specs = [spec] * workload.replicas
        names = [f"{workload.name}-{i}" for i in range(len(specs))]
        owner = f"{workload.kind} {workload.name}"
        nodes, pending = self.place(ev, pod, specs, names=names, owner=owner)
        self.subjects.append(
            self.subject(ref, item.origin, ev, pod, patch=patch, nodes=nodes, pending=pending, replicas=len(specs))
        )

    def _evaluate_pod(self, raw: Mapping[str, Any], namespace: str, view: ClusterView) -> PodEvaluation:
        return evaluate_pod(
            raw,
            namespace=namespace,
            cluster=self.cluster,
            catalog=self.catalog,
            view=view,
            committed=lambda node: view.committed.get(node, 0),
        )

    @staticmethod
    def evaluate(call: Callable[[], PodEvaluation]) -> PodEvaluation | DeclarationError:
        """The evaluation, or the malformed declaration the webhook answers with a 400."""
        try:
            return call()
        except DeclarationError as exc:
            return exc

    def mutation(self, raw: Mapping[str, Any], namespace: str) -> tuple[Mapping[str, Any], ...]:
        """The JSON Patch the mutating webhook would answer for this pod (dry run)."""
        request = AdmissionRequest.model_validate(
            {
                "uid": "ollama-guard-audit",
                "kind": {"version": "v1", "kind": "Pod"},
                "resource": {"version": "v1", "resource": "pods"},
                "namespace": namespace,
                "name": _ref(raw, namespace).name,
                "operation": "CREATE",
                "object": dict(raw),
                "dryRun": True,
            }
        )
        return tuple(mutate(request, self.guard).patch)

    # --- placement -------------------------------------------------------------------------------
    def place(
        self,
        ev: PodEvaluation | DeclarationError,
        obj: Mapping[str, Any],
        specs: Sequence[Mapping[str, Any]],
        *,
        names: Sequence[str],
        owner: str,
    ) -> tuple[tuple[str, ...], str]:
        """Bind each admitted copy to a node (module docstring, rule 3): (nodes, why some are pending)."""
        if isinstance(ev, DeclarationError) or (not ev.skipped and ev.failures):
            return (), ""
        tenant = (
            tenant_from_pod(ev.pod, ev.demand)
            if ev.demand is not None and ev.pod.is_gpu_tenant
            else self.builder.tenant_of(obj)
        )
        if tenant is None:
            return (), ""
        placed: list[str] = []
        pending = ""
        for spec, name in zip(specs, names, strict=True):
            node, why = self.choose(tenant, spec, force=bool(ev.skipped))
            if node is None:
                pending = why
                continue
            copy = replace(tenant, name=name, uid=f"audit:{tenant.namespace}/{name}", node=node.name)
            self.guard.ledger.publish(self.builder.put_tenant(copy, base=self.view))
            self.owners[copy.key] = owner
            placed.append(node.name)
        return tuple(placed), pending

    def choose(self, tenant: Tenant, spec: Mapping[str, Any], *, force: bool) -> tuple[GpuNode | None, str]:
        """The node for one copy, or None and why it would stay Pending."""
        view = self.view
        candidates = candidate_nodes(spec, view.nodes.values())
        open_nodes = [n for n in candidates if self.free_slots(n) >= tenant.gpus]
        guarded = [n for n in open_nodes if n.guarded]
        fitting = [
            n
            for n in guarded
            if fits(n, committed_mib=view.committed.get(n.name, 0), demand_mib=tenant.demand_on(n), gpus=tenant.gpus).ok
        ]
        pool = fitting or [n for n in open_nodes if not n.guarded] or (guarded if force else [])
        chosen = min(pool, key=lambda n: (-self.free_mib(n) if n.guarded else 0, n.name), default=None)
        if chosen is not None:
            return chosen, ""
        if not candidates:
            return None, "no GPU node matches its nodeName, nodeSelector, required affinity and tolerations"
        if not open_nodes:
            return None, "every GPU replica (time-sliced slot) of its candidate nodes is taken"
        return None, "no candidate GPU node has the free VRAM"

    def free_slots(self, node: GpuNode) -> int:
        used = sum(self.view.tenants[k].gpus for k in self.view.bound.get(node.name, ()) if k in self.view.tenants)
        return node.slots - used

    def free_mib(self, node: GpuNode) -> int:
        return node.budget_mib - self.view.committed.get(node.name, 0)

    # --- results ---------------------------------------------------------------------------------
    def decide(self, ev: PodEvaluation, subject: str) -> tuple[Verdict, str, str]:
        """(verdict under `enforce`, answer in the namespace's own mode, denial message)."""
        if ev.skipped:
            return "skip", "allowed", ""
        strict = enforce(replace(ev.policy, enforcement="enforce"), ev.violations, self.guard, subject=subject)
        actual = enforce(ev.policy, ev.violations, self.guard, subject=subject)
        return ("admit" if strict.allowed else "deny"), admission_of(actual), "" if strict.allowed else strict.message

    def subject(
        self,
        ref: ObjectRef,
        origin: str,
        ev: PodEvaluation | DeclarationError,
        raw: Mapping[str, Any],
        *,
        patch: tuple[Mapping[str, Any], ...],
        nodes: tuple[str, ...],
        pending: str = "",
        replicas: int = 1,
    ) -> Subject:
        label = f"{ref.kind.lower()} {ref.namespace}/{ref.name}"
        inject = describe_patch(raw, patch)
        if isinstance(ev, DeclarationError):
            # validate answers a malformed declaration with 400 in every mode
            return Subject(
                resource=ref,
                origin=origin,
                replicas=replicas,
                verdict="deny",
                admission="denied",
                decision=f"{label}: {ev}",
                demand_mib=None,
                demand_text="",
                demand_source="",
                models=(),
                models_from="",
                violations=(Violation("declaration", str(ev), 400),),
                advisories=(),
                notes=(),
                patch=patch,
                inject=inject,
                nodes=nodes,
            )
        verdict, admission, decision = self.decide(ev, label)
        demand, share = ev.demand, self.share(nodes)
        return Subject(
            resource=ref,
            origin=origin,
            replicas=replicas,
            verdict=verdict,
            admission=admission,
            decision=decision,
            demand_mib=demand.on_node(even_share_mib=share) if demand else None,
            demand_text=describe_demand(demand, even_share_mib=share) if demand else "",
            demand_source=demand.source if demand else "",
            models=demand.declaration.models if demand else (),
            models_from=demand.declaration.source if demand else "",
            violations=ev.violations,
            advisories=self.advise(ev, pending=pending, copies=replicas - len(nodes), share=share),
            notes=ev.notes,
            patch=patch,
            inject=inject,
            nodes=nodes,
            skipped=ev.skipped,
        )

    def share(self, nodes: Sequence[str]) -> int:
        """One replica's even share on the subject's node (else on the first guarded node)."""
        found = [self.view.nodes[n] for n in nodes if n in self.view.nodes]
        found += sorted((n for n in self.view.nodes.values() if n.guarded), key=lambda n: n.name)
        return found[0].even_share_mib if found else 0

    def advise(self, ev: PodEvaluation, *, pending: str, copies: int, share: int) -> tuple[Violation, ...]:
        """Audit-only advice: what the webhook accepts but a platform team should know."""
        out: list[Violation] = []
        demand = ev.demand
        if demand is not None and not ev.skipped:
            decl = demand.declaration
            if ev.pod.is_ollama and not decl.models and decl.vram_mib is None:
                out.append(_advice("undeclared-models", UNDECLARED_MODELS.format(share=format_mib(share))))
            elif not ev.pod.is_ollama and demand.source == "default":
                out.append(_advice("undeclared-vram", UNDECLARED_VRAM.format(share=format_mib(share))))
            unknown = resolve_models(self.catalog, decl.models)[1]
            if unknown and decl.vram_mib is not None:
                text = UNKNOWN_MODEL.format(models=", ".join(unknown), declared=format_mib(decl.vram_mib))
                out.append(_advice("unknown-model", text))
        if pending:
            out.append(_advice("unschedulable", PENDING.format(count=copies, why=pending)))
        return tuple(out)

    def report(
        self,
        *,
        now: datetime,
        state_origin: str,
        manifest_origins: tuple[str, ...],
        namespace: str | None,
        ignored: tuple[tuple[str, ObjectRef], ...],
    ) -> AuditReport:
        view = self.view
        by_key = {f"{s.resource.namespace}/{s.resource.name}": s for s in self.subjects}
        ordered = sorted(view.nodes.values(), key=lambda n: n.name)
        nodes = tuple(
            NodeLine(n, tuple(self.tenant_line(view.tenants[k], n, by_key) for k in view.bound.get(n.name, ())))
            for n in ordered
            if n.guarded
        )
        others = tuple(OtherNode(n.name, n.product, n.gpu_resource, n.slots, n.mig) for n in ordered if not n.guarded)
        subjects = tuple(s for s in self.subjects if namespace in (None, s.resource.namespace))
        names = {s.resource.namespace for s in subjects} | {t.namespace for line in nodes for t in line.tenants}
        names |= {ns for ns, annotations in view.namespaces.items() if annotations}
        spaces = tuple(
            NamespaceLine(view.namespace_policy(self.cluster, ns), view.namespace_usage.get(ns, 0))
            for ns in sorted(names)
            if namespace in (None, ns)
        )
        findings = [f for line in nodes for f in node_findings(line)]
        findings += [other_node_finding(o) for o in others]
        findings += [f for line in spaces for f in namespace_findings(line)]
        findings += [f for s in subjects for f in subject_findings(s)]
        return AuditReport(
            now, state_origin, manifest_origins, namespace, nodes, others, spaces, subjects, tuple(findings), ignored
        )

    def tenant_line(self, tenant: Tenant, node: GpuNode, subjects: Mapping[str, Subject]) -> TenantLine:
        subject = subjects.get(tenant.key)
        return TenantLine(
            namespace=tenant.namespace,
            name=tenant.name,
            demand_mib=tenant.demand_on(node),
            source=tenant.source,
            models=tenant.models or (subject.models if subject else ()),
            planned=tenant.key not in self.existing or tenant.uid.startswith("audit:"),
            owner=self.owners.get(tenant.key, ""),
            problem=tenant.problem,
        )


def _error_subject(ref: ObjectRef, origin: str, message: str) -> Subject:
    return Subject(
        resource=ref,
        origin=origin,
        replicas=1,
        verdict="error",
        admission="error",
        decision=message,
        demand_mib=None,
        demand_text="",
        demand_source="",
        models=(),
        models_from="",
        violations=(),
        advisories=(),
        notes=(),
        patch=(),
        inject=(),
        nodes=(),
    )


# --- findings ------------------------------------------------------------------------------------
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


def _advice(rule: str, message: str) -> Violation:
    return Violation(rule, message, 200, "warn")


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
    node = line.node
    ref = ObjectRef("v1", "Node", node.name)
    rule = "node-vram-budget"
    props = {
        "capacityMiB": str(node.capacity_mib),
        "reservedMiB": str(node.reserved_mib),
        "committedMiB": str(line.committed_mib),
        "plannedMiB": str(line.planned_mib),
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
    return [_finding(rule, "pass", text, ref, properties=props)]


def other_node_finding(node: OtherNode) -> Finding:
    text = f"GPU node {node.name} is not guarded ({node.reason}); its tenants are not counted"
    return _finding("gpu-node-guarded", "skip", text, ObjectRef("v1", "Node", node.name))


def namespace_findings(line: NamespaceLine) -> list[Finding]:
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
    where = ""
    if subject.nodes:
        verb = "bound to" if subject.origin == "cluster" else "placed on"
        where = f"; {verb} {', '.join(dict.fromkeys(subject.nodes))}"
    copies = f" × {subject.replicas}" if subject.replicas != 1 else ""
    demand = subject.demand_text or "no GPU"
    return f"would be admitted: {demand}{copies}{where}"


def admission_of(response: AdmissionResponse) -> str:
    if not response.allowed:
        return "denied"
    if response.audit_annotations:
        return "audited"
    return "warned" if response.warnings else "allowed"


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


# --- small helpers -------------------------------------------------------------------------------
def _without(view: ClusterView, key: str) -> ClusterView:
    """`view` minus one tenant, counted as `assemble_view` counts it: what the pod meets if re-created now."""
    tenant = view.tenants.get(key)
    if tenant is None:
        return view
    node = view.nodes.get(tenant.node)
    demand = tenant.demand_on(node) if node else (tenant.demand_mib or 0)
    tenants = dict(view.tenants)
    del tenants[key]
    usage = dict(view.namespace_usage)
    usage[tenant.namespace] = usage.get(tenant.namespace, 0) - demand
    committed, bound = dict(view.committed), dict(view.bound)
    if node is not None:
        committed[node.name] = committed.get(node.name, 0) - demand
        bound[node.name] = tuple(k for k in bound.get(node.name, ()) if k != key)
    return replace(view, tenants=tenants, committed=committed, bound=bound, namespace_usage=usage)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _ref(obj: Mapping[str, Any], namespace: str) -> ObjectRef:
    meta, kind = _meta(obj), str(obj.get("kind") or "")
    cluster_scoped = kind in ("Node", "Namespace")
    return ObjectRef(
        api_version=str(obj.get("apiVersion") or API_VERSIONS.get(kind, "v1")),
        kind=kind,
        name=str(meta.get("name") or meta.get("generateName") or ""),
        namespace="" if cluster_scoped else str(meta.get("namespace") or namespace),
        uid=str(meta.get("uid") or ""),
    )


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _ns_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(_meta(obj).get("namespace") or ""), str(_meta(obj).get("name") or "")


def _template_pod(workload: Workload) -> dict[str, Any]:
    """The raw pod a workload's controller creates (before the guard's mutation)."""
    meta = dict(workload.template.get("metadata") or {})
    meta.update(namespace=workload.namespace, name=workload.name)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": dict(workload.template.get("spec") or {})}
