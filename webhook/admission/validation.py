"""The validating webhook's dispatch: AdmissionRequest + Guard -> AdmissionResponse.

Routes what kube-apiserver sends (design §7): Pod CREATE, `pods/binding` CREATE, Namespace
CREATE/UPDATE, and workloads / `*/scale` (see `workloads.py`). Composition only: the checks live
in `evaluation`, the modes in `guard.enforce`. The only side effect is the ledger reservation of
an admitted, non-dry-run binding (and remembering admitted pods and templates).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from webhook.admission import review as rv
from webhook.admission.context import Guard, enforce
from webhook.admission.memo import UNREAD_OR_IDENTITY, Memo, content_key
from webhook.admission.mutation import is_pod
from webhook.admission.review import AdmissionRequest, AdmissionResponse
from webhook.admission.workloads import validate_workload
from webhook.core.evaluation import PodAssessment, PodEvaluation, Violation, assess_pod, evaluate_pod, quota_used
from webhook.core.explain import CAPACITY_FIX, describe_fit
from webhook.core.inventory import GpuNode
from webhook.core.ledger import Fit
from webhook.core.policy import NamespacePolicy, guard_annotations, is_policy_admin
from webhook.core.quantity import format_mib
from webhook.core.staleness import Staleness, catching_up, catching_up_short
from webhook.core.tenants import DeclarationError, pod_identity, read_pod
from webhook.core.view import Tenant, tenant_from_pod


def is_binding(req: AdmissionRequest) -> bool:
    """`pods/binding` (what kube-scheduler uses) or the legacy `bindings` resource."""
    resource, sub = req.resource.resource, req.sub_resource
    return (resource == "pods" and sub == "binding") or (resource == "bindings" and not sub)


def validate(req: AdmissionRequest, guard: Guard) -> AdmissionResponse:
    if req.dry_run:  # answered exactly the same, but nothing is recorded (sideEffects: NoneOnDryRun)
        guard = replace(guard, on_would_deny=_ignore)
    if is_binding(req):
        return validate_binding(req, guard)
    if is_pod(req) and req.operation == "CREATE" and isinstance(req.object, dict):
        return validate_pod(req, guard)
    if req.kind.kind == "Namespace" and req.operation in ("CREATE", "UPDATE"):
        return validate_namespace(req, guard)
    return validate_workload(req, guard)


def _ignore(namespace: str, rule: str, message: str) -> None:
    return None


def validate_pod(req: AdmissionRequest, guard: Guard) -> AdmissionResponse:
    assert req.object is not None
    ledger = guard.ledger
    try:
        evaluation, identity = remembered_evaluation(req.object, req.namespace, guard, finite=req.finite)
    except DeclarationError as exc:
        return rv.bad_declaration(f"pod {req.namespace}/{req.name}: {exc}")
    response = enforce(evaluation.policy, evaluation.violations, guard, subject=f"pod {req.namespace}/{req.name}")
    if response.allowed and not req.dry_run and evaluation.demand is not None and evaluation.pod.is_gpu_tenant:
        ledger.remember_admitted(tenant_from_pod(evaluation.pod, evaluation.demand, identity=identity))
    return rv.with_warnings(response, evaluation.notes[:1]) if evaluation.notes else response


_assessments: Memo[PodAssessment] = Memo()
_evaluations: Memo[PodEvaluation] = Memo()


def remembered_evaluation(
    raw: dict[str, Any], namespace: str, guard: Guard, *, finite: bool = False
) -> tuple[PodEvaluation, tuple[str, str]]:
    """`evaluate_pod` for a Pod CREATE, remembered per distinct pod (see `memo`) at two levels:

    - the whole evaluation, tied besides to the published view and the ledger's committed state
      (`Ledger.capacity_token`: any binding, release, expiry or new view starts it afresh), and
      in a namespace with a VRAM quota keyed by the quota figure the pod finds (`quota_used`:
      it changes with every pod admitted there); kept only when it holds for a replica
      (`PodAssessment.names_no_pod`);
    - what the pod's content alone decides (`assess_pod`), tied to the view's namespaces only, so
      it outlives bindings.

    A replica differs only by name and UID: the evaluation returned may be another replica's (its
    `pod` then names that one), with this pod's (name, UID) beside it; nothing else in it names
    the pod. `finite`: see `memo.content_key`. Raises DeclarationError as `read_pod`."""
    ledger = guard.ledger
    view = ledger.view
    content = content_key(raw, drop=UNREAD_OR_IDENTITY, finite=finite)
    meta = raw.get("metadata")
    name, uid = pod_identity(meta if isinstance(meta, dict) else {})
    pod_key = f"{namespace}/{name}"
    pending: int | None = None  # the namespace's pending VRAM besides this pod, read once if its quota needs it
    quota: int | None = None
    if content is not None and view.namespace_policy(guard.cluster, namespace).vram_quota_mib is not None:
        pending = ledger.pending_usage(namespace, besides=pod_key)
        quota = quota_used(view, namespace, pod_key, uid, pending)
    key = None if content is None else (namespace, content, quota)
    owner = (guard.cluster, guard.catalog, view, ledger.capacity_token())
    assessed: list[PodAssessment] = []

    def pending_usage(of: str, /, *, besides: str = "") -> int:
        """The figure in the key, so what is computed is what the key says (the watch may admit
        or drop pods meanwhile)."""
        if pending is not None and (of, besides) == (namespace, pod_key):
            return pending
        return ledger.pending_usage(of, besides=besides)

    def compute() -> PodEvaluation:
        assessed.append(assessed_pod(raw, namespace, guard, key=key, identity=(name, uid)))
        return evaluate_pod(
            raw,
            namespace=namespace,
            cluster=guard.cluster,
            catalog=guard.catalog,
            view=view,
            committed=ledger.committed,
            pending_usage=pending_usage,
            assessed=assessed[0],
        )

    def holds_for_replicas(evaluation: PodEvaluation) -> bool:
        # the figure in the key is the one the quota check read only if it judged this namespace's pod
        keyed = quota is not None and evaluation.pod.namespace == namespace
        return assessed[0].names_no_pod(evaluation, quota_keyed=keyed)

    return _evaluations.get(owner, key, compute, keep=holds_for_replicas), (name, uid)


def assessed_pod(
    raw: dict[str, Any],
    namespace: str,
    guard: Guard,
    *,
    key: tuple[object, ...] | None,
    identity: tuple[str, str],
) -> PodAssessment:
    """`assess_pod` for a Pod CREATE, remembered per distinct pod under `key` (the pod's content
    and namespace, or None: computed afresh), answered for the pod `identity` (name, UID) names."""
    cluster, catalog, view = guard.cluster, guard.catalog, guard.ledger.view

    def compute() -> PodAssessment:
        pod = read_pod(raw, gpu_resources=cluster.gpu_resources, namespace=namespace)
        return assess_pod(pod, view.namespace_policy(cluster, pod.namespace), cluster=cluster, catalog=catalog)

    found = _assessments.get((cluster, catalog, view.namespaces), key, compute)
    if (found.pod.name, found.pod.uid) == identity:
        return found
    return found.with_pod(found.pod.renamed(*identity))


def validate_binding(req: AdmissionRequest, guard: Guard) -> AdmissionResponse:
    obj = req.object or {}
    target, meta = obj.get("target"), obj.get("metadata")
    node_name = str(target.get("name") or "") if isinstance(target, dict) else ""
    pod_uid = str(meta.get("uid") or "") if isinstance(meta, dict) else ""
    key = f"{req.namespace}/{req.name}"
    ledger = guard.ledger
    view = ledger.view
    node = view.nodes.get(node_name)
    if node is None and node_name and view.stale is not None and view.stale.covers("Node"):
        return _bound_while_stale(req, guard, key=key, pod_uid=pod_uid, node_name=node_name, stale=view.stale)
    if node is None or not node.guarded:
        return rv.allowed()
    tenant = ledger.find_tenant(key, pod_uid)
    if tenant is None:
        return rv.allowed()  # not a GPU tenant the guard admitted (pods webhook only sees GPU/Ollama pods)
    ns = view.namespace_policy(guard.cluster, req.namespace)
    if not ns.active:  # exempt or off: never denied, but the VRAM it takes is still counted
        ledger.reserve(tenant, node, dry_run=req.dry_run, force=True)
        return rv.allowed()
    fit = ledger.reserve(tenant, node, dry_run=req.dry_run)
    if fit.ok:
        if not req.dry_run:
            guard.on_bound(tenant, node.name)
        return rv.allowed()
    response = _over_commit(tenant, node, fit, ns, guard)
    if response.allowed and not req.dry_run:
        ledger.reserve(tenant, node, force=True)
        guard.on_bound(tenant, node.name)
    return response


_over_commits: Memo[AdmissionResponse] = Memo()


def _over_commit(tenant: Tenant, node: GpuNode, fit: Fit, ns: NamespacePolicy, guard: Guard) -> AdmissionResponse:
    """What `enforce` makes of a binding that does not fit. Remembered in the modes where `enforce`
    has no side effect (enforce, warn), keyed by everything the answer reads (the mode, the tenant,
    the node's name and even share, the fit's figures): the scheduler retries a pod on the same
    node, and a node that stays full gives it the same answer."""

    def compute() -> AdmissionResponse:
        violation = Violation(
            "capacity",
            f"binding to {node.name} would over-commit its VRAM: the pod needs "
            f"{describe_demand_of(tenant, node.even_share_mib)}; {describe_fit(fit)} "
            f"({format_mib(fit.committed_mib)} committed). The scheduler tries again, on another node or "
            f"when VRAM is freed. {CAPACITY_FIX}",
            short=f"binding to {node.name}: needs {format_mib(fit.demand_mib)}, {format_mib(fit.free_mib)} free",
        )
        return enforce(ns, [violation], guard, subject=f"pod {tenant.key}")

    pure = ns.enforcement in ("enforce", "warn")
    key = (ns.enforcement, tenant, node.name, node.even_share_mib, fit) if pure else None
    return _over_commits.get((guard.cluster,), key, compute)


def _bound_while_stale(
    req: AdmissionRequest, guard: Guard, *, key: str, pod_uid: str, node_name: str, stale: Staleness
) -> AdmissionResponse:
    """A GPU tenant's binding to a node a stale view does not hold is denied, to be retried (issue
    20); any other pod's binding stays allowed (design §14: no cluster-wide blast radius)."""
    ns = guard.ledger.view.namespace_policy(guard.cluster, req.namespace)
    if guard.ledger.find_tenant(key, pod_uid) is None or not ns.active:
        return rv.allowed()
    message = catching_up(stale, what=f"binding pod {key} to node {node_name}")
    violation = Violation("stale-view", message, short=catching_up_short(node_name))
    return enforce(ns, [violation], guard, subject=f"pod {key}")


def describe_demand_of(tenant: Tenant, even_share_mib: int) -> str:
    mib = tenant.demand_mib if tenant.demand_mib is not None else even_share_mib
    models = f" for {', '.join(tenant.models)}" if tenant.models else ""
    return f"{format_mib(mib)}{models}"


def validate_namespace(req: AdmissionRequest, guard: Guard) -> AdmissionResponse:
    new = guard_annotations(_annotations(req.object))
    old = guard_annotations(_annotations(req.old_object)) if req.operation == "UPDATE" else {}
    changed = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))
    if not changed:
        return rv.allowed()
    user = req.user_info
    if is_policy_admin(guard.cluster, username=user.username, groups=user.groups):
        return rv.allowed()
    who = ", ".join(
        [f"group {g}" for g in guard.cluster.policy_admin_groups]
        + [f"user {u}" for u in guard.cluster.policy_admin_users]
    )
    return rv.denied(
        f"namespace {req.name}: user {user.username!r} may not add, change or remove the guard's policy "
        f"annotations ({', '.join(changed)}); only policy admins may ({who or 'none configured'}). "
        "Ask a cluster admin to make this change",
    )


def _annotations(obj: object) -> dict[str, str]:
    if not isinstance(obj, dict):
        return {}
    meta = obj.get("metadata")
    ann = meta.get("annotations") if isinstance(meta, dict) else None
    return {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {}
