"""The cluster as the guard sees it: an immutable `ClusterView` of GPU nodes, namespaces and
GPU tenants, built from raw Node/Pod/Namespace dicts (a snapshot file or the watch cache).

Every active GPU tenant bound to a node counts against it: its demand is the guard's own
`ollama-guard.io/vram-demand` stamp when that stamp carries the current estimate version, else it
is recomputed (restart recovery loses nothing); a pod whose declaration is broken still counts,
as declared or as the node's even share, and says so. `ViewBuilder` applies watch events and
publishes new frozen views. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from webhook.core.catalog import Catalog
from webhook.core.declarations import read_declaration
from webhook.core.demand import PodDemand, compute_demand
from webhook.core.inventory import GpuNode, read_advertised, read_node
from webhook.core.policy import ClusterPolicy, NamespacePolicy, resolve_namespace_policy
from webhook.core.quantity import whole_number
from webhook.core.staleness import Staleness
from webhook.core.tenants import ANN_DEMAND, ANN_ESTIMATE, DeclarationError, PodFacts, could_be_subject, read_pod

ESTIMATE_VERSION = 1


class Tenant(NamedTuple):
    """One active GPU tenant (bound or still pending). A named tuple: one is made for every pod
    the view holds and for every GPU pod admitted (a frozen dataclass's __init__ sets each of its
    eleven fields by a separate call, issue 17); copies with changes by `_replace`."""

    namespace: str
    name: str
    uid: str
    node: str
    gpus: int
    is_ollama: bool
    #: None: counted as the node's even share
    demand_mib: int | None
    source: str
    models: tuple[str, ...] = ()
    problem: str = ""
    #: the pod's own `ollama-guard.io/vram-mib` request, MiB; 0: not covered by the resource (a pod
    #: from before the guard, or one the guard does not mutate), so the node's advertised figure
    #: holds its demand back instead
    requested_mib: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def demand_on(self, node: GpuNode) -> int:
        demand = self.demand_mib if self.demand_mib is not None else node.even_share_mib
        return max(demand, self.requested_mib)


@dataclass(frozen=True, slots=True)
class ClusterView:
    nodes: Mapping[str, GpuNode] = field(default_factory=dict)
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    tenants: Mapping[str, Tenant] = field(default_factory=dict)
    #: node name -> committed MiB of the tenants bound to it
    committed: Mapping[str, int] = field(default_factory=dict)
    #: node name -> keys of the tenants bound to it
    bound: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: namespace -> MiB held by its GPU tenants across the cluster
    namespace_usage: Mapping[str, int] = field(default_factory=dict)
    #: nodes that are not GPU nodes (any more) but still show `ollama-guard.io/vram-mib` -> its figure
    stray_advertised: Mapping[str, int] = field(default_factory=dict)
    #: set by the live source while a kind's list/watch is broken or catching up (issue 20);
    #: None: current (a snapshot is never stale)
    stale: Staleness | None = None
    #: memo of `namespace_policy` (the view never changes, so neither does a namespace's policy)
    _policies: dict[str, tuple[ClusterPolicy, NamespacePolicy]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def namespace_policy(self, cluster: ClusterPolicy, namespace: str) -> NamespacePolicy:
        memo = self._policies.get(namespace)
        if memo is not None and memo[0] is cluster:
            return memo[1]
        annotations = self.namespaces.get(namespace)
        policy = resolve_namespace_policy(cluster, namespace, annotations)
        if annotations is not None:  # bounded by the namespaces the view holds
            self._policies[namespace] = (cluster, policy)
        return policy


def tenant_from_pod(
    pod: PodFacts, demand: PodDemand | None, problem: str = "", *, identity: tuple[str, str] | None = None
) -> Tenant:
    """The tenant `pod` is; `identity` (name, UID): of a replica these facts stand for instead."""
    decl_models = demand.declaration.models if demand else ()
    name, uid = identity or (pod.name, pod.uid)
    return Tenant(
        namespace=pod.namespace,
        name=name,
        uid=uid,
        node=pod.node_name,
        gpus=pod.gpus,
        is_ollama=pod.is_ollama,
        demand_mib=demand.demand_mib if demand else None,
        source=demand.source if demand else "default",
        models=decl_models,
        problem=problem,
        requested_mib=pod.vram_mib,
    )


def stamped_demand(pod: PodFacts) -> int | None:
    """The guard's own demand stamp, when it was written by this estimate version."""
    raw, estimate = pod.annotations.get(ANN_DEMAND), pod.annotations.get(ANN_ESTIMATE)
    demand = whole_number(raw or "", maximum=1 << 40)
    if demand is None or estimate is None:
        return None
    try:
        version = json.loads(estimate).get("v")
    except (ValueError, AttributeError):
        return None
    return demand if version == ESTIMATE_VERSION else None


class ViewBuilder:
    """Mutable accumulator of raw objects; `build()` returns a frozen ClusterView."""

    def __init__(self, *, cluster: ClusterPolicy, catalog: Catalog) -> None:
        self._cluster = cluster
        self._catalog = catalog
        self._nodes: dict[str, GpuNode] = {}
        self._namespaces: dict[str, Mapping[str, str]] = {}
        self._tenants: dict[str, Tenant] = {}
        self._stray: dict[str, int] = {}
        #: namespace -> key -> raw pod: unstamped Ollama pods whose namespace policy is not known yet
        #: (`kubectl get nodes,pods,namespaces` lists pods first); recomputed when it arrives
        self._waiting: dict[str, dict[str, Mapping[str, Any]]] = {}

    def set_node(self, raw: Mapping[str, Any]) -> None:
        node = read_node(raw, gpu_resources=self._cluster.gpu_resources)
        name = str(_meta(raw).get("name") or "")
        self._stray.pop(name, None)
        if node is None:
            self._nodes.pop(name, None)
            shown = read_advertised(raw)
            if shown != (None, None):
                self._stray[name] = max(v or 0 for v in shown)
        else:
            self._nodes[name] = node

    def delete_node(self, name: str) -> None:
        self._nodes.pop(name, None)
        self._stray.pop(name, None)

    def set_namespace(self, raw: Mapping[str, Any]) -> None:
        meta = _meta(raw)
        ann = meta.get("annotations") or {}
        name = str(meta.get("name") or "")
        self._namespaces[name] = {str(k): str(v) for k, v in ann.items() if str(k).startswith("ollama-guard.io/")}
        for pod in self._waiting.pop(name, {}).values():
            self.set_pod(pod)

    def delete_namespace(self, name: str) -> None:
        self._namespaces.pop(name, None)

    def set_pod(self, raw: Mapping[str, Any]) -> Tenant | None:
        """Record a pod; returns its Tenant when it is an active GPU tenant."""
        namespace = str(_meta(raw).get("namespace", ""))
        key = f"{namespace}/{_meta(raw).get('name', '')}"
        self._waiting.get(namespace, {}).pop(key, None)
        tenant = self.tenant_of(raw)
        if tenant is None:
            self._tenants.pop(key, None)
        else:
            self._tenants[key] = tenant
            if tenant.source not in ("annotation", "declared", "default") and namespace not in self._namespaces:
                self._waiting.setdefault(namespace, {})[key] = raw
        return tenant

    def delete_pod(self, key: str) -> None:
        self._tenants.pop(key, None)
        self._waiting.get(key.split("/", 1)[0], {}).pop(key, None)

    def tenant_of(self, raw: Mapping[str, Any]) -> Tenant | None:
        """The pod as a tenant: its guard stamp when current, else its recomputed demand."""
        if not could_be_subject(raw, gpu_resources=self._cluster.gpu_resources):
            return None
        try:
            pod = read_pod(raw, gpu_resources=self._cluster.gpu_resources)
        except DeclarationError as exc:
            return None if not _meta(raw).get("name") else _broken(raw, str(exc))
        if not pod.is_gpu_tenant or not pod.active or pod.mirror:
            return None
        stamp = stamped_demand(pod)
        if stamp is not None:
            models = _declared_models(pod)
            demand = max(stamp, pod.vram_mib)
            return tenant_from_pod(pod, None)._replace(demand_mib=demand, source="annotation", models=models)
        ns = resolve_namespace_policy(self._cluster, pod.namespace, self._namespaces.get(pod.namespace))
        try:
            return tenant_from_pod(pod, compute_demand(pod, ns=ns, cluster=self._cluster, catalog=self._catalog))
        except DeclarationError as exc:
            return tenant_from_pod(pod, None, problem=str(exc))

    def add_all(self, objects: Iterable[Mapping[str, Any]]) -> None:
        setters = {"Node": self.set_node, "Namespace": self.set_namespace, "Pod": self.set_pod}
        for obj in objects:
            setter = setters.get(str(obj.get("kind")))
            if setter is not None:
                setter(obj)

    def put_tenant(self, tenant: Tenant, *, base: ClusterView) -> ClusterView:
        """Record one tenant and return `base` updated for it without a full rebuild."""
        old = self._tenants.get(tenant.key)
        self._tenants[tenant.key] = tenant
        return replace_tenant(base, old, tenant)

    def build(self) -> ClusterView:
        return replace(assemble_view(self._nodes, self._namespaces, self._tenants), stray_advertised=dict(self._stray))


def replace_tenant(view: ClusterView, old: Tenant | None, new: Tenant) -> ClusterView:
    """`view` with tenant `old` replaced by `new` (O(tenants) dict copy, no recomputation)."""
    committed, usage = dict(view.committed), dict(view.namespace_usage)
    bound = dict(view.bound)
    for tenant, sign in ((old, -1), (new, 1)):
        if tenant is None:
            continue
        node = view.nodes.get(tenant.node)
        demand = tenant.demand_on(node) if node else (tenant.demand_mib or 0)
        usage[tenant.namespace] = usage.get(tenant.namespace, 0) + sign * demand
        if node is not None:
            committed[node.name] = committed.get(node.name, 0) + sign * demand
            keys = [k for k in bound.get(node.name, ()) if k != tenant.key]
            bound[node.name] = (*keys, tenant.key) if sign > 0 else tuple(keys)
    tenants = dict(view.tenants)
    tenants[new.key] = new
    return replace(view, tenants=tenants, committed=committed, bound=bound, namespace_usage=usage)


def assemble_view(
    nodes: Mapping[str, GpuNode], namespaces: Mapping[str, Mapping[str, str]], tenants: Mapping[str, Tenant]
) -> ClusterView:
    committed: dict[str, int] = {}
    bound: dict[str, list[str]] = {}
    usage: dict[str, int] = {}
    for key, tenant in tenants.items():
        node = nodes.get(tenant.node)
        demand = tenant.demand_on(node) if node else (tenant.demand_mib or 0)
        usage[tenant.namespace] = usage.get(tenant.namespace, 0) + demand
        if node is not None:
            committed[node.name] = committed.get(node.name, 0) + demand
            bound.setdefault(node.name, []).append(key)
    return ClusterView(
        nodes=dict(nodes),
        namespaces=dict(namespaces),
        tenants=dict(tenants),
        committed=committed,
        bound={k: tuple(v) for k, v in bound.items()},
        namespace_usage=usage,
    )


def build_view(objects: Iterable[Mapping[str, Any]], *, cluster: ClusterPolicy, catalog: Catalog) -> ClusterView:
    """A view from Node, Namespace and Pod objects in any order (one pass; nothing else is kept)."""
    builder = ViewBuilder(cluster=cluster, catalog=catalog)
    builder.add_all(objects)
    return builder.build()


def _declared_models(pod: PodFacts) -> tuple[str, ...]:
    try:
        return read_declaration(pod).models
    except DeclarationError:
        return ()


def _broken(raw: Mapping[str, Any], problem: str) -> Tenant:
    meta, spec = _meta(raw), raw.get("spec") or {}
    return Tenant(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        node=str(spec.get("nodeName") or ""),
        gpus=1,
        is_ollama=False,
        demand_mib=None,
        source="default",
        problem=problem,
    )


def _meta(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = raw.get("metadata")
    return meta if isinstance(meta, Mapping) else {}
