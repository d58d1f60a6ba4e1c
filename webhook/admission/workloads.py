"""Answers at `kubectl apply` for workloads and `kubectl scale` (design §7, issue 5).

A workload's pod template is evaluated as the pods it will create: the mutation the pods will get
is applied to the template first, then the same checks as a Pod run with `replicas` copies
(Deployment/StatefulSet/ReplicaSet/ReplicationController: `spec.replicas`; Job/CronJob:
`parallelism`; DaemonSet: one per candidate node). On UPDATE only what gets worse than
`oldObject` is held against the user: a scale-down or an unchanged template never is.
A `scale` subresource UPDATE is checked with the template the guard last saw for that workload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.admission import review as rv
from webhook.admission.context import Guard, enforce
from webhook.admission.mutation import after_edits, plan_edits
from webhook.admission.review import AdmissionRequest, AdmissionResponse
from webhook.core.evaluation import PodEvaluation, evaluate_pod
from webhook.core.templates import MAX_REPLICAS, SCALABLE, Workload, read_workload
from webhook.core.tenants import DeclarationError, PodFacts, read_pod


def template_pod(workload: Workload, guard: Guard) -> tuple[dict[str, Any], PodFacts]:
    """The pod the workload's controller will create (raw, unmutated) and its facts after the
    guard's mutation (derived from the edits; the template is never copied deeply)."""
    raw_meta, raw_spec = workload.template.get("metadata"), workload.template.get("spec")
    meta = dict(raw_meta) if isinstance(raw_meta, Mapping) else {}
    meta.update(namespace=workload.namespace, name=f"{workload.name} ({workload.kind})")
    pod: dict[str, Any] = {
        "kind": "Pod",
        "metadata": meta,
        "spec": dict(raw_spec) if isinstance(raw_spec, Mapping) else {},
    }
    facts = read_pod(pod, gpu_resources=guard.cluster.gpu_resources)
    ns = guard.ledger.view.namespace_policy(guard.cluster, workload.namespace)
    return pod, after_edits(facts, plan_edits(facts, ns, guard.cluster)) if ns.active else facts


def evaluate_workload(workload: Workload, guard: Guard, *, replicas: int | None = None) -> PodEvaluation:
    """The template's pods as the controller will create them (DaemonSet: one on every candidate node);
    `replicas`: only that many more (a scale-up), which is what the messages then say."""
    ledger = guard.ledger
    pod, facts = template_pod(workload, guard)
    return evaluate_pod(
        pod,
        namespace=workload.namespace,
        cluster=guard.cluster,
        catalog=guard.catalog,
        view=ledger.view,
        committed=ledger.committed,
        replicas=workload.replicas if replicas is None else replicas,
        added=replicas is not None,  # an UPDATE or scale-up: `replicas` more than there are
        one_per_node=workload.kind == "DaemonSet",
        facts=facts,
        pending_usage=ledger.pending_usage,
    )


def validate_workload(req: AdmissionRequest, guard: Guard) -> AdmissionResponse:
    if req.sub_resource == "scale":
        return validate_scale(req, guard)
    if req.operation not in ("CREATE", "UPDATE") or not isinstance(req.object, dict):
        return rv.allowed()
    new = read_workload(req.object, namespace=req.namespace)
    if new is None:
        return rv.allowed()
    old = read_workload(req.old_object, namespace=req.namespace) if isinstance(req.old_object, dict) else None
    subject = f"{new.kind.lower()} {new.namespace}/{new.name}"
    try:
        response = _judge(new, old, guard, subject=subject)
    except DeclarationError as exc:
        return rv.bad_declaration(f"{subject}: {exc}")
    if response.allowed and not req.dry_run:
        guard.templates.put(new)
    return response


def _judge(new: Workload, old: Workload | None, guard: Guard, *, subject: str) -> AdmissionResponse:
    added = new.replicas if old is None else max(new.replicas - old.replicas, 0)
    evaluation = evaluate_workload(new, guard)
    if evaluation.skipped or not evaluation.violations:
        return rv.allowed()
    if old is not None:
        before = evaluate_workload(old, guard)
        grew = (
            evaluation.demand
            and before.demand
            and (evaluation.demand.demand_mib or 0) > (before.demand.demand_mib or 0)
        )
        if not grew:
            if added == 0 and _rules(evaluation) <= _rules(before):
                return rv.allowed()
            evaluation = evaluate_workload(new, guard, replicas=added)
            old_rules = _rules(before) - {"capacity", "vram-quota"}
            kept = tuple(v for v in evaluation.violations if v.rule not in old_rules)
            if not kept:
                return rv.allowed()
            return enforce(evaluation.policy, kept, guard, subject=subject)
    return enforce(evaluation.policy, evaluation.violations, guard, subject=subject)


def _rules(evaluation: PodEvaluation) -> set[str]:
    return {v.rule for v in evaluation.violations}


def validate_scale(req: AdmissionRequest, guard: Guard) -> AdmissionResponse:
    kind = SCALABLE.get(req.resource.resource)
    if kind is None or req.operation != "UPDATE" or not isinstance(req.object, dict):
        return rv.allowed()
    new_replicas = _scale_replicas(req.object)
    old_replicas = _scale_replicas(req.old_object) if isinstance(req.old_object, dict) else 0
    subject = f"{kind.lower()} {req.namespace}/{req.name}"
    if new_replicas <= old_replicas:
        return rv.allowed()
    known = guard.templates.get(kind, req.namespace, req.name)
    if known is None:
        return rv.with_warnings(
            rv.allowed(), [f"ollama-guard has not seen the pod template of {subject}; this scale-up was not checked"]
        )
    workload = Workload(kind, req.namespace, req.name, known.template, new_replicas)
    try:
        evaluation = evaluate_workload(workload, guard, replicas=new_replicas - old_replicas)
    except DeclarationError as exc:
        return rv.bad_declaration(f"{subject}: {exc}")
    response = enforce(evaluation.policy, evaluation.violations, guard, subject=f"scaling {subject} to {new_replicas}")
    if response.allowed and not req.dry_run:
        guard.templates.put(workload)
    return response


def _scale_replicas(obj: Mapping[str, Any]) -> int:
    value = (obj.get("spec") or {}).get("replicas", 0) if isinstance(obj.get("spec"), Mapping) else 0
    return min(max(value, 0), MAX_REPLICAS) if isinstance(value, int) and not isinstance(value, bool) else 0
