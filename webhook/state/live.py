"""The live state source: `ClusterMirror` events -> `ViewBuilder` -> published `ClusterView`s.

Watch events update a mutable builder in the watcher threads; a publisher thread swaps a new
frozen view into the ledger at most every `publish_interval` seconds (the request path only ever
reads a published view). The source is ready once a view holding every kind's first list has
been published, and stops being ready while a kind has been disconnected from the API server for
longer than `stale_after` seconds. Each published view carries its `Staleness` (the kinds not
current, read under the same lock as the build): a kind is stale from the moment its watch
breaks until what it missed is in a published view (issue 20).

Pods are projected (`project`) to what `ViewBuilder.tenant_of` needs; pods that are neither
Ollama pods nor GPU tenants are not kept at all. The projection shares what replicas have in
common (containers, labels, guard annotations, status) and interns repeated strings, so a cached
pod costs little more than its name and uid; projections are therefore read-only. A running
Ollama pod also keeps its `status.podIP` and its container port named `http`, which runtime drift
asks (`drift.py`, design §15). A pod that is
deleted, finishes, starts terminating or stops being a GPU tenant releases its reservation. A
namespace change recomputes the pods of that namespace whose demand was computed rather than
stamped (their defaults come from the namespace). A node whose committed VRAM passes its budget
is logged once per episode, naming the node and the overshoot, and shows in `/metrics`.
Deployments and StatefulSets whose pods could be GPU tenants are watched too: their templates
feed `templates`, which the `scale` subresource check reads (they are not part of the view).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from webhook.core.catalog import Catalog
from webhook.core.ledger import Ledger
from webhook.core.policy import PREFIX, ClusterPolicy
from webhook.core.quantity import whole_number
from webhook.core.rawdict import items, mapping
from webhook.core.staleness import Staleness
from webhook.core.templates import TemplateStore, read_workload, runs_gpu_pods
from webhook.core.tenants import (
    ANN_DEMAND,
    ANN_ESTIMATE,
    ANN_MIRROR,
    MIG_PREFIX,
    OLLAMA_LABEL,
    RESOURCE_VRAM,
    is_ollama_image,
)
from webhook.core.view import ESTIMATE_VERSION, ClusterView, Tenant, ViewBuilder
from webhook.state.advertiser import KubeNodeStatusApi, NodeAdvertiser
from webhook.state.lease import KubeLeaseApi, LeaseElector
from webhook.state.mirror import ClusterMirror, Kind, WatchEvent, load_api_client

log = logging.getLogger("ollama_guard")
OLLAMA_ENV_PREFIXES = ("OLLAMA_", "NVIDIA_VISIBLE_DEVICES")
DEFAULT_GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/gpu.shared")
#: what a current stamp's breakdown is reduced to: `stamped_demand` only reads its version
ESTIMATE_STUB = sys.intern(json.dumps({"v": ESTIMATE_VERSION}, separators=(",", ":")))
#: workloads whose templates a `scale` check needs (design §10); ReplicaSets are scaled by their
#: Deployment, so a bare ReplicaSet's scale-up is only checked once the guard admitted its template
WATCHED_WORKLOADS: tuple[Kind, ...] = ("Deployment", "StatefulSet")
LIVE_KINDS: tuple[Kind, ...] = ("Node", "Pod", "Namespace", *WATCHED_WORKLOADS)
_SHARED_LIMIT = 50_000
_shared: dict[object, Any] = {}


def project(
    kind: Kind, raw: Mapping[str, Any], *, gpu_resources: tuple[str, ...] = DEFAULT_GPU_RESOURCES
) -> dict[str, Any] | None:
    """The trimmed, read-only copy the guard keeps of one object (None: not kept)."""
    meta = mapping(raw.get("metadata"))
    if kind == "Namespace":
        return {"kind": "Namespace", "metadata": {"name": meta.get("name"), "annotations": _guard_ann(meta)}}
    if kind == "Node":
        status = mapping(raw.get("status"))
        return {
            "kind": "Node",
            "metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {}, "annotations": _guard_ann(meta)},
            "spec": {k: v for k, v in mapping(raw.get("spec")).items() if k in ("taints", "unschedulable")},
            "status": {
                "allocatable": {
                    k: v
                    for k, v in mapping(status.get("allocatable")).items()
                    if "nvidia.com/" in k or k == RESOURCE_VRAM
                },
                # the advertiser compares both with what it wants there (design §14)
                "capacity": {k: v for k, v in mapping(status.get("capacity")).items() if k == RESOURCE_VRAM},
            },
        }
    if kind in WATCHED_WORKLOADS:
        return _project_workload(kind, meta, raw, gpu_resources)
    return _project_pod(meta, raw, gpu_resources)


def _project_workload(
    kind: str, meta: Mapping[str, Any], raw: Mapping[str, Any], gpu: tuple[str, ...]
) -> dict[str, Any] | None:
    """A scalable workload's pod template, kept only when its pods could be GPU tenants (so a
    `kubectl scale` can be checked, design §10); the template whole, as the admission check reads it."""
    spec = mapping(raw.get("spec"))
    template = mapping(spec.get("template"))
    if not runs_gpu_pods(template, gpu_resources=gpu):
        return None
    return {
        "kind": kind,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": {"replicas": spec.get("replicas", 1), "template": dict(template)},
    }


def _project_pod(meta: Mapping[str, Any], raw: Mapping[str, Any], gpu: tuple[str, ...]) -> dict[str, Any] | None:
    spec = mapping(raw.get("spec"))
    labels, annotations = mapping(meta.get("labels")), mapping(meta.get("annotations"))
    stamped = _current_stamp(annotations)
    # a current stamp is the demand: the Ollama settings are not needed, nor the commands once the
    # models are declared by annotation (they only name the models a denial message lists)
    keep = _Keep(settings=not stamped, commands=not stamped or f"{PREFIX}models" not in annotations)
    containers = [_container(c, gpu, keep) for c in items(spec.get("containers"))]
    inits = [_container(c, gpu, keep) for c in items(spec.get("initContainers"))]
    wanted = any(_is_candidate(c, gpu) for c in (*containers, *inits)) or (
        labels.get(OLLAMA_LABEL[0]) == OLLAMA_LABEL[1] or f"{PREFIX}models" in annotations
    )
    if not wanted:
        return None
    node = spec.get("nodeName")
    pod_spec: dict[str, Any] = {"nodeName": _intern(node), "containers": _share(containers)}
    if inits:
        pod_spec["initContainers"] = _share(inits)
    metadata = {
        "namespace": _intern(meta.get("namespace")),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "labels": _share({k: v for k, v in labels.items() if k == OLLAMA_LABEL[0]}),
        "annotations": _share(_pod_annotations(annotations, stamped=stamped)),
    }
    if meta.get("deletionTimestamp"):
        metadata["deletionTimestamp"] = meta["deletionTimestamp"]
    phase = mapping(raw.get("status")).get("phase")
    return {
        "kind": "Pod",
        "metadata": metadata,
        "spec": _share(pod_spec, key=(node, id(pod_spec["containers"]), id(pod_spec.get("initContainers")))),
        "status": _pod_status(raw, phase, ollama=_is_ollama_pod(containers, labels, annotations)),
    }


def _is_ollama_pod(containers: list[dict[str, Any]], labels: Mapping[str, Any], annotations: Mapping[str, Any]) -> bool:
    return (
        any(is_ollama_image(str(c.get("image") or "")) for c in containers)
        or labels.get(OLLAMA_LABEL[0]) == OLLAMA_LABEL[1]
        or f"{PREFIX}models" in annotations
    )


def _pod_status(raw: Mapping[str, Any], phase: object, *, ollama: bool) -> dict[str, Any]:
    """The phase (shared); a running Ollama pod also keeps its IP, which runtime drift asks (design §15)."""
    ip = mapping(raw.get("status")).get("podIP")
    if ollama and phase == "Running" and isinstance(ip, str) and ip:
        return {"phase": phase, "podIP": ip}
    shared: dict[str, Any] = _share({"phase": phase})
    return shared


def _pod_annotations(annotations: Mapping[str, Any], *, stamped: bool) -> dict[str, Any]:
    """The guard's annotations (and the mirror-pod marker); a current stamp's breakdown is reduced."""
    kept = {k: v for k, v in annotations.items() if str(k).startswith(PREFIX) or k == ANN_MIRROR}
    if stamped:
        kept[ANN_ESTIMATE] = ESTIMATE_STUB
    return kept


def _current_stamp(annotations: Mapping[str, Any]) -> bool:
    demand, estimate = annotations.get(ANN_DEMAND), annotations.get(ANN_ESTIMATE)
    if not (isinstance(demand, str) and isinstance(estimate, str)) or whole_number(demand, maximum=1 << 40) is None:
        return False
    try:
        body = json.loads(estimate)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("v") == ESTIMATE_VERSION


@dataclass(frozen=True, slots=True)
class _Keep:
    settings: bool  # the Ollama env the demand is computed from
    commands: bool  # command/args/postStart, and the env they expand: where models are discovered


def _container(raw: object, gpu_resources: tuple[str, ...], keep: _Keep) -> dict[str, Any]:
    """Name, image, GPU requests and, as `keep` says, the Ollama env and the model-naming commands."""
    container = mapping(raw)
    kept: dict[str, Any] = {"name": container.get("name"), "image": container.get("image")}
    # the port runtime drift asks Ollama's /api/ps on (design §15)
    http = [
        {"name": "http", "containerPort": mapping(p).get("containerPort")}
        for p in items(container.get("ports"))
        if mapping(p).get("name") == "http"
    ]
    if http:
        kept["ports"] = http
    resources = {
        section: picked
        for section, values in mapping(container.get("resources")).items()
        if (
            picked := {
                k: v
                for k, v in mapping(values).items()
                if k in gpu_resources or k.startswith(MIG_PREFIX) or k == RESOURCE_VRAM
            }
        )
    }
    if resources:
        kept["resources"] = resources
    script: list[str] = []
    post = mapping(mapping(mapping(container.get("lifecycle")).get("postStart")).get("exec"))
    if keep.commands:
        for field in ("command", "args"):
            if container.get(field):
                kept[field] = container[field]
                script += [str(part) for part in items(container[field])]
        if post:
            kept["lifecycle"] = {"postStart": {"exec": post}}
            script += [str(part) for part in items(post.get("command"))]
    text = " ".join(script)
    env = [e for e in items(container.get("env")) if _env_needed(str(mapping(e).get("name", "")), text, keep)]
    if env:
        kept["env"] = env
    return kept


def _env_needed(name: str, script: str, keep: _Keep) -> bool:
    """The Ollama settings, and any variable a kept command expands (`ollama pull $MODEL`)."""
    if keep.settings and name.startswith(OLLAMA_ENV_PREFIXES):
        return True
    return bool(name) and ("$" + name in script or "${" + name in script)


def _is_candidate(container: Mapping[str, Any], gpu_resources: tuple[str, ...]) -> bool:
    resources = mapping(container.get("resources"))
    names = {*mapping(resources.get("limits")), *mapping(resources.get("requests"))}
    return bool(names & set(gpu_resources)) or is_ollama_image(str(container.get("image") or ""))


def _share(value: Any, *, key: object = None) -> Any:
    """One object per distinct value (replicas share it); the table is dropped when it grows large.

    Values are keyed by a 128-bit digest of their `repr` (a collision is out of reach), so a table
    of pods that share nothing costs little more than its entries.
    """
    cache_key = _digest(value) if key is None else key
    found = _shared.get(cache_key)
    if found is not None:
        return found
    if len(_shared) >= _SHARED_LIMIT:
        _shared.clear()
    return _shared.setdefault(cache_key, value)


def _digest(value: object) -> bytes:
    return hashlib.blake2b(repr(value).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _intern(value: object) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


def _guard_ann(meta: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in mapping(meta.get("annotations")).items() if str(k).startswith(PREFIX)}


class LiveSource:
    """Cluster state from list + watch; owns the ledger the webhook decides with."""

    def __init__(
        self,
        mirror_factory: Callable[..., ClusterMirror],
        *,
        cluster: ClusterPolicy,
        catalog: Catalog,
        publish_interval: float = 0.2,
        stale_after: float = 5.0,
    ) -> None:
        self._builder = ViewBuilder(cluster=cluster, catalog=catalog)
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._interval = publish_interval
        self._over: set[str] = set()
        self._synced: set[Kind] = set()
        self._complete = False  # a view holding every kind's first list has been published
        self._computed: dict[str, set[str]] = {}  # namespace -> pods whose demand was computed, not stamped
        self._stale_after = stale_after
        initial = ClusterView(stale=Staleness(kinds=LIVE_KINDS))  # nothing listed yet
        self.ledger = Ledger(initial, ttl_seconds=cluster.reservation_ttl_seconds)
        self.templates = TemplateStore()
        gpu = cluster.gpu_resources
        self.mirror = mirror_factory(
            project=lambda kind, raw: project(kind, raw, gpu_resources=gpu),
            on_event=self._on_event,
            on_connection=lambda kind, current: self._dirty.set(),  # republish with its staleness
            kinds=LIVE_KINDS,
        )
        self._kinds = frozenset(self.mirror.status())
        self._publisher = threading.Thread(target=self._publish_loop, name="view-publisher", daemon=True)
        self.advertiser: NodeAdvertiser | None = None
        self._advertising: threading.Thread | None = None

    def attach_advertiser(self, advertiser: NodeAdvertiser) -> None:
        """Run `advertiser` from `start` to `stop`, once the view is complete (design §14)."""
        self.advertiser = advertiser
        self._advertising = threading.Thread(
            target=advertiser.run, args=(self._stop,), kwargs={"ready": lambda: self._complete},
            name="node-advertiser", daemon=True,
        )

    def start(self) -> None:
        self.mirror.start()
        self._publisher.start()
        if self._advertising is not None:
            self._advertising.start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._advertising is not None and self._advertising.is_alive():
            self._advertising.join(5.0)  # releases the Lease before the client goes away
        self.mirror.stop()
        if self._publisher.is_alive():
            self._publisher.join(5.0)

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        """Ready once a complete view was published, and while no kind has been disconnected for
        longer than `stale_after` seconds (issue 20: the Service then sends reviews to a replica
        whose view is current, and the failure policies apply when none is)."""
        statuses = self.mirror.status()
        kinds = {
            kind: {
                "ready": s.ready,
                "lastEventAgeSeconds": s.last_event_age_seconds,
                "relists": s.relists,
                "disconnectedSeconds": s.disconnected_seconds,
                "lastError": s.last_error,
            }
            for kind, s in statuses.items()
        }
        late = [k for k, s in statuses.items() if (s.disconnected_seconds or 0.0) > self._stale_after]
        view = self.ledger.view
        detail = {
            "mode": "live",
            "kinds": kinds,
            "nodes": len(view.nodes),
            "tenants": len(view.tenants),
            "staleAfterSeconds": self._stale_after,
            "disconnected": late,
        }
        return self._complete and not late, detail

    def on_bound(self, tenant: Tenant, node: str) -> None:
        return None  # the watch confirms the binding when the pod shows spec.nodeName

    # --- watch events (watcher threads) ------------------------------------------------------------
    def _on_event(self, event: WatchEvent) -> None:
        with self._lock:
            if event.type == "SYNC":
                self._synced.add(event.kind)
            elif event.kind == "Node":
                self._apply(event, self._builder.set_node, self._builder.delete_node)
            elif event.kind == "Namespace":
                self._apply(event, self._builder.set_namespace, self._builder.delete_namespace)
                self._recompute_namespace(event.key)
            elif event.kind in WATCHED_WORKLOADS:
                self._apply_workload(event)
                return  # templates are not part of the view: nothing to republish
            else:
                self._apply_pod(event.key, None if event.type == "DELETED" else event.obj, event.obj)
        self._dirty.set()

    @staticmethod
    def _apply(event: WatchEvent, setter: Callable[[Any], Any], deleter: Callable[[str], None]) -> None:
        if event.type == "DELETED" or event.obj is None:
            deleter(event.key)
        else:
            setter(event.obj)

    def _apply_pod(self, key: str, obj: Mapping[str, Any] | None, last: Mapping[str, Any] | None) -> None:
        namespace = key.split("/", 1)[0]
        tenant = None if obj is None else self._builder.set_pod(obj)
        if obj is None:
            self._builder.delete_pod(key)
        if tenant is None:  # gone, finished, terminating or not a GPU tenant: nothing held any more
            uid = mapping(mapping(last).get("metadata")).get("uid")
            if uid:
                self.ledger.release(str(uid), key)
        computed = self._computed.setdefault(namespace, set())
        if tenant is not None and tenant.source != "annotation":
            computed.add(key)
        else:
            computed.discard(key)

    def _apply_workload(self, event: WatchEvent) -> None:
        namespace, _, name = event.key.partition("/")
        workload = None if event.type == "DELETED" or event.obj is None else read_workload(event.obj)
        if workload is None:
            self.templates.drop(event.kind, namespace, name)
        else:
            self.templates.put(workload)

    def _recompute_namespace(self, namespace: str) -> None:
        for key in list(self._computed.get(namespace, ())):
            obj = self.mirror.get("Pod", key)
            if obj is not None:
                self._apply_pod(key, obj, obj)

    # --- publishing (publisher thread) -------------------------------------------------------------
    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            try:
                self._publish()
            except Exception:  # never let one bad build freeze the view for good
                log.exception("building the cluster view failed")
            if self._stop.wait(self._interval):
                return

    def _publish(self) -> None:
        with self._lock:
            view = self._builder.build()
            complete = self._synced >= self._kinds  # this view holds every kind's first list
            # read under the lock: a kind the mirror calls current has delivered its events here
            view = replace(view, stale=self._staleness())
        self.ledger.publish(view)
        self._complete = self._complete or complete
        self._report_overcommit(view)

    def _staleness(self) -> Staleness | None:
        kinds, broken_for = self.mirror.staleness()
        if not kinds:
            return None
        since = "" if broken_for is None else _utc(time.time() - broken_for)
        return Staleness(kinds=kinds, since=since)

    def _report_overcommit(self, view: ClusterView) -> None:
        for node in view.nodes.values():
            if not node.guarded:
                continue
            used = self.ledger.committed(node.name)
            over = used - node.budget_mib
            if over > 0 and node.name not in self._over:
                self._over.add(node.name)
                log.warning(
                    "node %s is over-committed by %d MiB (%d MiB committed, budget %d MiB)",
                    node.name,
                    over,
                    used,
                    node.budget_mib,
                    extra={
                        "fields": {
                            "node": node.name,
                            "overshootMiB": over,
                            "committedMiB": used,
                            "budgetMiB": node.budget_mib,
                        }
                    },
                )
            elif over <= 0:
                self._over.discard(node.name)


def live_source(
    *,
    kubeconfig: Path | None,
    context: str | None,
    cluster: ClusterPolicy,
    catalog: Catalog,
    advertise_in: str | None = None,
    identity: str = "",
    stale_after: float = 5.0,
) -> LiveSource | None:
    """A LiveSource when in-cluster config or a kubeconfig is available, else None.

    With `advertise_in` (the guard's namespace) it also runs the node advertiser, elected through
    the Lease `ollama-guard-advertiser` in that namespace under `identity`.
    """
    client = load_api_client(kubeconfig=kubeconfig, context=context)
    if client is None:
        return None

    def factory(**kwargs: Any) -> ClusterMirror:
        return ClusterMirror(client, **kwargs)

    source = LiveSource(factory, cluster=cluster, catalog=catalog, stale_after=stale_after)
    if advertise_in:
        elector = LeaseElector(KubeLeaseApi(client), namespace=advertise_in, identity=identity or default_identity())
        source.attach_advertiser(NodeAdvertiser(lambda: source.ledger.view, KubeNodeStatusApi(client), elector=elector))
    return source


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_identity() -> str:
    """`$POD_NAME` (the Downward API) or the host name, plus a random suffix as client-go does, so a
    restarted process never mistakes its predecessor's Lease for its own."""
    import os
    import socket
    import uuid

    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
