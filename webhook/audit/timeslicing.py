"""The time-slicing plan of a whole cluster (design §16): state + manifests -> `timeslicing.Plan`.

Which pods are planned for, each once, as the guard would admit them:

1. Workload objects of the state (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
   ReplicationController), except a ReplicaSet or Job whose controller (a Deployment, a CronJob)
   is listed too: the controller's template says the same.
2. Active pods of the state that could be GPU tenants and whose controller is not listed (for a
   ReplicaSet owner, the Deployment is found by the `pod-template-hash` label): one entry per
   controller, counting its pods, or per bare pod. A running pod's `spec.nodeName` is where the
   scheduler put it, not a constraint, so it is not read as one.
3. Manifests (`-f`): Nodes and Namespaces replace their state objects; Pods and workloads replace
   the state's object of the same kind, namespace and name, or are added.

Each template becomes the pod its controller creates, mutated the way the webhook would
(`admission.workloads.template_pod`: the same path the workload checks and the audit take), and
its demand is computed on those facts by the core planner. Pure: objects in, a frozen plan out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.admission.context import Guard
from webhook.admission.workloads import template_pod
from webhook.audit.model import Manifest
from webhook.core.catalog import Catalog
from webhook.core.ledger import Ledger
from webhook.core.policy import ClusterPolicy
from webhook.core.rawdict import items, mapping
from webhook.core.replicas import DEFAULT_MAX_REPLICAS
from webhook.core.templates import WORKLOAD_KINDS, Workload, read_workload
from webhook.core.tenants import TERMINAL_PHASES, DeclarationError, could_be_subject
from webhook.core.timeslicing import Plan, PlanWorkload, plan_timeslicing
from webhook.core.view import ClusterView, ViewBuilder

#: a controller -> the kind whose template it copies (a ReplicaSet's Deployment, a Job's CronJob)
PARENTS = {"ReplicaSet": "Deployment", "Job": "CronJob"}


def plan_cluster(
    state: Sequence[Mapping[str, Any]],
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    manifests: Sequence[Manifest] = (),
    max_replicas: int = DEFAULT_MAX_REPLICAS,
    default_namespace: str = "default",
) -> Plan:
    """The plan for the state's GPU nodes under its workloads and the manifests' (module docstring)."""
    view = _view(state, manifests, cluster=cluster, catalog=catalog)
    guard = Guard(cluster=cluster, catalog=catalog, ledger=Ledger(view))
    workloads, problems = [], []
    for workload, pinned in collect_workloads(
        state, manifests, gpu_resources=cluster.gpu_resources, default_namespace=default_namespace
    ):
        label = f"{workload.kind.lower()} {workload.namespace}/{workload.name}"
        try:
            pod, facts = template_pod(workload, guard)
        except DeclarationError as exc:
            problems.append(f"{label}: {exc} (left out of the plan)")
            continue
        spec = dict(pod["spec"]) if pinned else {k: v for k, v in pod["spec"].items() if k != "nodeName"}
        policy = view.namespace_policy(cluster, workload.namespace)
        workloads.append(PlanWorkload(label, spec, facts, policy, max(workload.replicas, 1)))
    plan = plan_timeslicing(view.nodes.values(), workloads, cluster=cluster, catalog=catalog,
                            max_replicas=max_replicas, bound_gpus=bound_gpus(view))
    if not problems:
        return plan
    return Plan(plan.classes, plan.skipped, (*problems, *plan.problems), plan.unplaced, plan.max_replicas)


def _view(state: Sequence[Mapping[str, Any]], manifests: Sequence[Manifest], *, cluster: ClusterPolicy,
          catalog: Catalog) -> ClusterView:
    builder = ViewBuilder(cluster=cluster, catalog=catalog)
    builder.add_all(o for o in state if o.get("kind") in ("Node", "Namespace"))
    builder.add_all(m.obj for m in manifests if m.obj.get("kind") in ("Node", "Namespace"))
    builder.add_all(o for o in state if o.get("kind") == "Pod")
    return builder.build()


def bound_gpus(view: ClusterView) -> dict[str, int]:
    """Node -> GPU replicas its bound tenants hold now."""
    return {
        node: sum(view.tenants[k].gpus for k in keys if k in view.tenants) for node, keys in view.bound.items()
    }


@dataclass(frozen=True, slots=True)
class _Found:
    workload: Workload
    #: whether its `spec.nodeName` is a constraint (the author's), not the scheduler's choice
    pinned: bool
    #: its controller (kind, name), from `metadata.ownerReferences`
    owner: tuple[str, str] | None


def collect_workloads(
    state: Sequence[Mapping[str, Any]],
    manifests: Sequence[Manifest],
    *,
    gpu_resources: Sequence[str],
    default_namespace: str = "default",
) -> list[tuple[Workload, bool]]:
    """Each distinct pod shape once, with whether its `spec.nodeName` is a constraint (module docstring)."""
    found: dict[str, _Found] = {}
    for obj in state:
        workload = read_workload(obj) if obj.get("kind") in WORKLOAD_KINDS else None
        if workload is not None:
            found[_key(workload.kind, workload.namespace, workload.name)] = _Found(workload, True, _controller(obj))
    for item in manifests:
        workload = _manifest_workload(item.obj, default_namespace)
        if workload is not None:
            found[_key(workload.kind, workload.namespace, workload.name)] = _Found(workload, True,
                                                                                   _controller(item.obj))
    listed = set(found)
    kept = {k: f for k, f in found.items() if not _covered(f.workload.namespace, f.owner, {}, listed)}
    pods = (o for o in state if o.get("kind") == "Pod" and _active_gpu_pod(o, gpu_resources))
    for workload in _pod_groups(pods, listed):
        kept.setdefault(_key(workload.kind, workload.namespace, workload.name), _Found(workload, False, None))
    return [(f.workload, f.pinned) for f in kept.values()]


def _key(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def _controller(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    for raw in items(mapping(obj.get("metadata")).get("ownerReferences")):
        ref = mapping(raw)
        if ref.get("controller") is True:
            return str(ref.get("kind") or ""), str(ref.get("name") or "")
    return None


def _covered(namespace: str, owner: tuple[str, str] | None, labels: Mapping[str, str], listed: set[str]) -> bool:
    """Whether a listed workload already stands for an object with this controller."""
    if owner is None:
        return False
    kind, name = owner
    if _key(kind, namespace, name) in listed:
        return True
    parent = _parent(kind, name, labels)
    return parent is not None and _key(parent[0], namespace, parent[1]) in listed


def _parent(kind: str, name: str, labels: Mapping[str, str]) -> tuple[str, str] | None:
    """The Deployment of a ReplicaSet (its name is the Deployment's + `-<pod-template-hash>`)."""
    suffix = f"-{labels.get('pod-template-hash', '')}"
    if kind == "ReplicaSet" and len(suffix) > 1 and name.endswith(suffix):
        return "Deployment", name[: -len(suffix)]
    return None


def _active_gpu_pod(pod: Mapping[str, Any], gpu_resources: Sequence[str]) -> bool:
    meta, status = mapping(pod.get("metadata")), mapping(pod.get("status"))
    if status.get("phase") in TERMINAL_PHASES or meta.get("deletionTimestamp"):
        return False
    return could_be_subject(pod, gpu_resources=gpu_resources)


def _pod_groups(pods: Iterable[Mapping[str, Any]], listed: set[str]) -> list[Workload]:
    """State pods no listed workload stands for: one entry per controller (its pods counted), or per pod."""
    groups: dict[str, Workload] = {}
    for pod in pods:
        meta = mapping(pod.get("metadata"))
        namespace = str(meta.get("namespace") or "default")
        labels = {str(k): str(v) for k, v in mapping(meta.get("labels")).items()}
        owner = _controller(pod)
        if _covered(namespace, owner, labels, listed):
            continue
        kind, name = _group_of(owner, labels) or ("Pod", str(meta.get("name") or ""))
        key = _key(kind, namespace, name)
        if key in groups:
            known = groups[key]
            groups[key] = Workload(known.kind, known.namespace, known.name, known.template, known.replicas + 1)
            continue
        template = {"metadata": {"labels": labels, "annotations": mapping(meta.get("annotations"))},
                    "spec": mapping(pod.get("spec"))}
        groups[key] = Workload(kind, namespace, name, template, 1)
    return list(groups.values())


def _group_of(owner: tuple[str, str] | None, labels: Mapping[str, str]) -> tuple[str, str] | None:
    """The workload a controlled pod belongs to: its controller, or that controller's Deployment."""
    if owner is None:
        return None
    return _parent(owner[0], owner[1], labels) or owner


def _manifest_workload(obj: Mapping[str, Any], namespace: str) -> Workload | None:
    if obj.get("kind") != "Pod":
        return read_workload(obj, namespace=namespace)
    meta = mapping(obj.get("metadata"))
    name = str(meta.get("name") or meta.get("generateName") or "")
    template = {"metadata": meta, "spec": mapping(obj.get("spec"))}
    return Workload("Pod", str(meta.get("namespace") or namespace), name, template, 1)
