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

This module is the composition: the report values live in `audit_model`, findings and their texts
in `audit_findings`; every public name of both is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

import jsonpatch

from webhook.admission.context import Guard, enforce
from webhook.admission.mutation import mutate
from webhook.admission.review import parse_request
from webhook.admission.workloads import evaluate_workload
from webhook.audit.findings import (
    CATEGORY,
    PENDING,
    SEVERITY,
    UNDECLARED_MODELS,
    UNDECLARED_VRAM,
    UNKNOWN_MODEL,
    admission_of,
    admitted_text,
    advise,
    describe_patch,
    namespace_findings,
    node_findings,
    observed_finding,
    other_node_finding,
    report_findings,
    subject_findings,
)
from webhook.audit.model import (
    RANK,
    RESULTS,
    AuditReport,
    Finding,
    Manifest,
    NamespaceLine,
    NodeLine,
    ObjectRef,
    OtherNode,
    Result,
    Severity,
    Subject,
    TenantLine,
    Verdict,
    count_results,
)
from webhook.core.advertise import figure_for
from webhook.core.catalog import Catalog
from webhook.core.drift import Observation
from webhook.core.evaluation import PodEvaluation, Violation, evaluate_pod
from webhook.core.explain import describe_demand
from webhook.core.inventory import GpuNode
from webhook.core.ledger import Ledger, fits
from webhook.core.policy import ClusterPolicy
from webhook.core.scheduling import candidate_nodes
from webhook.core.templates import Workload, read_workload
from webhook.core.tenants import DeclarationError, read_pod
from webhook.core.view import ClusterView, Tenant, ViewBuilder, tenant_from_pod

__all__ = [
    "API_VERSIONS",
    "CATEGORY",
    "PENDING",
    "RANK",
    "RESULTS",
    "SEVERITY",
    "UNDECLARED_MODELS",
    "UNDECLARED_VRAM",
    "UNKNOWN_MODEL",
    "AuditReport",
    "Finding",
    "Manifest",
    "NamespaceLine",
    "NodeLine",
    "ObjectRef",
    "OtherNode",
    "Result",
    "Severity",
    "Subject",
    "TenantLine",
    "Verdict",
    "admission_of",
    "admitted_text",
    "audit_view",
    "count_results",
    "describe_patch",
    "namespace_findings",
    "node_findings",
    "observed_finding",
    "other_node_finding",
    "run_audit",
    "subject_findings",
    "with_observations",
]

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


def audit_view(
    view: ClusterView,
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    now: datetime,
    state_origin: str,
    observations: Mapping[str, Observation] | None = None,
) -> AuditReport:
    """The report of a view the guard already holds (the live page, design §15): its nodes and
    namespaces with their findings, each tenant's observed VRAM and the drift findings
    (`observations` by namespace/name); no pod is re-judged (`run_audit` does that)."""
    run = _Run((), cluster=cluster, catalog=catalog, view=view)
    report = run.report(now=now, state_origin=state_origin, manifest_origins=(), namespace=None, ignored=())
    return with_observations(report, observations or {})


def with_observations(report: AuditReport, observations: Mapping[str, Observation]) -> AuditReport:
    """`report` with each observed tenant's VRAM and one `observed-vram` finding per observation."""
    if not observations:
        return report

    def seen(t: TenantLine) -> TenantLine:
        obs = None if t.planned else observations.get(t.key)
        return replace(t, observed_mib=obs.observed_mib) if obs is not None else t

    nodes = tuple(replace(line, tenants=tuple(seen(t) for t in line.tenants)) for line in report.nodes)
    drift = tuple(observed_finding(o) for _, o in sorted(observations.items()))
    return replace(report, nodes=nodes, findings=(*report.findings, *drift))


class _Run:
    """The mutable state of one audit: a view builder, the ledger over its view, the guard."""

    def __init__(
        self,
        state: Sequence[Mapping[str, Any]],
        *,
        cluster: ClusterPolicy,
        catalog: Catalog,
        view: ClusterView | None = None,
    ) -> None:
        self.cluster, self.catalog = cluster, catalog
        self.builder = ViewBuilder(cluster=cluster, catalog=catalog)
        for kind, setter in (("Node", self.builder.set_node), ("Namespace", self.builder.set_namespace)):
            for obj in state:
                if obj.get("kind") == kind:
                    setter(obj)
        for obj in state:
            if obj.get("kind") == "Pod":
                self.builder.set_pod(obj)
        built = self.builder.build() if view is None else view
        self.guard = Guard(cluster=cluster, catalog=catalog, ledger=Ledger(built))
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
        request = parse_request(
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
            copy = tenant._replace(name=name, uid=f"audit:{tenant.namespace}/{name}", node=node.name)
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
        """What one object's evaluation amounts to: verdict, admission, demand, advice and patch."""
        label = f"{ref.kind.lower()} {ref.namespace}/{ref.name}"
        inject = describe_patch(raw, patch)
        if isinstance(ev, DeclarationError):
            malformed = _error_subject(ref, origin, f"{label}: {ev}")
            return _denied_declaration(malformed, ev, replicas=replicas, patch=patch, inject=inject, nodes=nodes)
        verdict, admission, decision = self.decide(ev, label)
        demand, share = ev.demand, self.share(nodes)
        advice = advise(ev, catalog=self.catalog, pending=pending, copies=replicas - len(nodes), share=share)
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
            advisories=advice,
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

    # --- the report ------------------------------------------------------------------------------
    def report(
        self,
        *,
        now: datetime,
        state_origin: str,
        manifest_origins: tuple[str, ...],
        namespace: str | None,
        ignored: tuple[tuple[str, ObjectRef], ...],
    ) -> AuditReport:
        nodes, others = self.node_lines()
        subjects = tuple(s for s in self.subjects if namespace in (None, s.resource.namespace))
        spaces = self.namespace_lines(nodes, subjects, namespace=namespace)
        findings = report_findings(nodes, others, spaces, subjects)
        return AuditReport(
            now, state_origin, manifest_origins, namespace, nodes, others, spaces, subjects, findings, ignored
        )

    def node_lines(self) -> tuple[tuple[NodeLine, ...], tuple[OtherNode, ...]]:
        """Every GPU node by name: guarded ones with their tenants, then the ones the guard skips."""
        view = self.view
        by_key = {f"{s.resource.namespace}/{s.resource.name}": s for s in self.subjects}
        ordered = sorted(view.nodes.values(), key=lambda n: n.name)
        nodes = tuple(
            _with_figures(n, tuple(self.tenant_line(view.tenants[k], n, by_key) for k in view.bound.get(n.name, ())))
            for n in ordered
            if n.guarded
        )
        others = tuple(OtherNode(n.name, n.product, n.gpu_resource, n.slots, n.mig) for n in ordered if not n.guarded)
        return nodes, others

    def namespace_lines(
        self, nodes: Sequence[NodeLine], subjects: Sequence[Subject], *, namespace: str | None
    ) -> tuple[NamespaceLine, ...]:
        """Namespaces with a subject, a tenant or annotations of their own (limited to `namespace`)."""
        view = self.view
        names = {s.resource.namespace for s in subjects} | {t.namespace for line in nodes for t in line.tenants}
        names |= {ns for ns, annotations in view.namespaces.items() if annotations}
        return tuple(
            NamespaceLine(view.namespace_policy(self.cluster, ns), view.namespace_usage.get(ns, 0))
            for ns in sorted(names)
            if namespace in (None, ns)
        )

    def tenant_line(self, tenant: Tenant, node: GpuNode, subjects: Mapping[str, Subject]) -> TenantLine:
        subject = subjects.get(tenant.key)
        planned = tenant.key not in self.existing or tenant.uid.startswith("audit:")
        return TenantLine(
            namespace=tenant.namespace,
            name=tenant.name,
            demand_mib=tenant.demand_on(node),
            source=tenant.source,
            models=tenant.models or (subject.models if subject else ()),
            planned=planned,
            owner=self.owners.get(tenant.key, ""),
            problem=tenant.problem,
            # a running pod is covered only by its own request; one the manifests add is admitted now,
            # through the mutating webhook that requests the resource for it (design §8, §14)
            covered=tenant.requested_mib > 0 or planned,
        )


def _with_figures(node: GpuNode, tenants: tuple[TenantLine, ...]) -> NodeLine:
    """The node's line with what it advertises now and what the advertiser would keep there once the
    manifests are admitted (their pods request the resource, so only running uncovered tenants are held back)."""
    target = figure_for(node, ClusterView()).figure
    if target is not None and node.vram_known:
        target = max(node.budget_mib - sum(t.demand_mib for t in tenants if not t.covered), 0)
    return NodeLine(node, tenants, advertised_mib=node.advertised[1], advertise_target_mib=target)


def _error_subject(ref: ObjectRef, origin: str, message: str) -> Subject:
    """An object the core could not evaluate: the webhook would answer with an internal error."""
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


def _denied_declaration(
    subject: Subject,
    error: DeclarationError,
    *,
    replicas: int,
    patch: tuple[Mapping[str, Any], ...],
    inject: tuple[str, ...],
    nodes: tuple[str, ...],
) -> Subject:
    """`subject` denied for its malformed declaration: validate answers 400 in every mode."""
    return replace(
        subject,
        replicas=replicas,
        verdict="deny",
        admission="denied",
        violations=(Violation("declaration", str(error), 400),),
        patch=patch,
        inject=inject,
        nodes=nodes,
    )


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
