"""The live state source: `ClusterMirror` events -> `ViewBuilder` -> published `ClusterView`s.

Watch events update a mutable builder in the watcher threads; a publisher thread swaps a new
frozen view into the ledger at most every `publish_interval` seconds (the request path only ever
reads a published view). Pods are projected to what the budget, the policy and the binding
lookup need; pods that are neither Ollama pods nor GPU tenants are not kept at all. A deleted
or finished pod releases its reservation; a node whose committed VRAM passes its budget is
logged (once per episode) and shows in `/metrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from webhook.catalog import Catalog
from webhook.cluster import ClusterMirror, Kind, WatchEvent, load_api_client
from webhook.ledger import Ledger
from webhook.policy import PREFIX, ClusterPolicy
from webhook.view import ClusterView, ViewBuilder

log = logging.getLogger("ollama_guard")
OLLAMA_ENV_PREFIXES = ("OLLAMA_", "NVIDIA_VISIBLE_DEVICES")


def project(
    kind: Kind, raw: dict[str, Any], *, gpu_resources: tuple[str, ...] = ("nvidia.com/gpu", "nvidia.com/gpu.shared")
) -> dict[str, Any] | None:
    """The trimmed copy the guard keeps of one object (None: not kept)."""
    meta = raw.get("metadata") or {}
    if kind == "Namespace":
        return {"kind": "Namespace", "metadata": {"name": meta.get("name"), "annotations": _guard_ann(meta)}}
    if kind == "Node":
        status = raw.get("status") or {}
        return {
            "kind": "Node",
            "metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {}, "annotations": _guard_ann(meta)},
            "spec": {k: v for k, v in (raw.get("spec") or {}).items() if k in ("taints", "unschedulable")},
            "status": {
                "allocatable": {k: v for k, v in (status.get("allocatable") or {}).items() if "nvidia.com/" in k}
            },
        }
    spec = raw.get("spec") or {}
    containers = [_container(c) for c in spec.get("containers") or []]
    inits = [_container(c) for c in spec.get("initContainers") or []]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    wanted = any(_is_candidate(c, gpu_resources) for c in (*containers, *inits)) or (
        labels.get("app.kubernetes.io/name") == "ollama" or f"{PREFIX}models" in annotations
    )
    if not wanted:
        return None
    return {
        "kind": "Pod",
        "metadata": {
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "labels": {k: v for k, v in labels.items() if k == "app.kubernetes.io/name"},
            "annotations": {
                k: v for k, v in annotations.items() if k.startswith(PREFIX) or k == "kubernetes.io/config.mirror"
            },
            **({"deletionTimestamp": meta["deletionTimestamp"]} if meta.get("deletionTimestamp") else {}),
        },
        "spec": {"nodeName": spec.get("nodeName"), "containers": containers, "initContainers": inits},
        "status": {"phase": (raw.get("status") or {}).get("phase")},
    }


def _container(raw: Mapping[str, Any]) -> dict[str, Any]:
    env = [e for e in raw.get("env") or [] if str(e.get("name", "")).startswith(OLLAMA_ENV_PREFIXES)]
    kept: dict[str, Any] = {"name": raw.get("name"), "image": raw.get("image"), "env": env}
    if raw.get("resources"):
        kept["resources"] = raw["resources"]
    for field in ("command", "args"):
        if raw.get(field):
            kept[field] = raw[field]
    post = ((raw.get("lifecycle") or {}).get("postStart") or {}).get("exec")
    if post:
        kept["lifecycle"] = {"postStart": {"exec": post}}
    return kept


def _is_candidate(container: Mapping[str, Any], gpu_resources: tuple[str, ...]) -> bool:
    from webhook.tenants import is_ollama_image

    resources = container.get("resources") or {}
    names = {*(resources.get("limits") or {}), *(resources.get("requests") or {})}
    return bool(names & set(gpu_resources)) or is_ollama_image(str(container.get("image") or ""))


def _guard_ann(meta: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(PREFIX)}


class LiveSource:
    """Cluster state from list + watch; owns the ledger the webhook decides with."""

    def __init__(
        self, mirror_factory: Any, *, cluster: ClusterPolicy, catalog: Catalog, publish_interval: float = 0.2
    ) -> None:
        self._builder = ViewBuilder(cluster=cluster, catalog=catalog)
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._interval = publish_interval
        self._over: set[str] = set()
        self.ledger = Ledger(ClusterView(), ttl_seconds=cluster.reservation_ttl_seconds)
        gpu = cluster.gpu_resources
        self.mirror: ClusterMirror = mirror_factory(
            project=lambda kind, raw: project(kind, raw, gpu_resources=gpu), on_event=self._on_event
        )
        self._publisher = threading.Thread(target=self._publish_loop, name="view-publisher", daemon=True)

    def start(self) -> None:
        self.mirror.start()
        self._publisher.start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        self.mirror.stop()

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        status = self.mirror.status()
        kinds = {
            kind: {"ready": s.ready, "lastEventAgeSeconds": s.last_event_age_seconds, "relists": s.relists}
            for kind, s in status.items()
        }
        view = self.ledger.view
        ready = self.mirror.ready() and self._published_once
        return ready, {"mode": "live", "kinds": kinds, "nodes": len(view.nodes), "tenants": len(view.tenants)}

    def on_bound(self, tenant: Any, node: str) -> None:
        return None  # the watch confirms the binding when the pod shows spec.nodeName

    _published_once = False

    def _on_event(self, event: WatchEvent) -> None:
        with self._lock:
            if event.type == "SYNC":
                pass
            elif event.kind == "Node":
                self._apply(event, self._builder.set_node, self._builder.delete_node)
            elif event.kind == "Namespace":
                self._apply(event, self._builder.set_namespace, self._builder.delete_namespace)
            else:
                if event.type == "DELETED" and event.obj is not None:
                    self.ledger.release(str((event.obj.get("metadata") or {}).get("uid") or ""))
                self._apply(event, self._builder.set_pod, self._builder.delete_pod)
        self._dirty.set()

    @staticmethod
    def _apply(event: WatchEvent, setter: Any, deleter: Any) -> None:
        if event.type == "DELETED" or event.obj is None:
            deleter(event.key)
        else:
            setter(event.obj)

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            self._dirty.clear()
            if self._stop.is_set():
                return
            ready_before = self.mirror.ready()  # checked first: the view below then holds every first list
            with self._lock:
                view = self._builder.build()
            self.ledger.publish(view)
            self._published_once = self._published_once or ready_before
            self._report_overcommit(view)
            time.sleep(self._interval)

    def _report_overcommit(self, view: ClusterView) -> None:
        for node in view.nodes.values():
            if not node.guarded:
                continue
            over = self.ledger.committed(node.name) - node.budget_mib
            if over > 0 and node.name not in self._over:
                self._over.add(node.name)
                log.warning(
                    "node over-committed",
                    extra={"fields": {"node": node.name, "overshootMiB": over, "budgetMiB": node.budget_mib}},
                )
            elif over <= 0:
                self._over.discard(node.name)


def live_source(
    *, kubeconfig: Path | None, context: str | None, cluster: ClusterPolicy, catalog: Catalog
) -> LiveSource | None:
    """A LiveSource when in-cluster config or a kubeconfig is available, else None."""
    client = load_api_client(kubeconfig=kubeconfig, context=context)
    if client is None:
        return None

    def factory(**kwargs: Any) -> ClusterMirror:
        return ClusterMirror(client, **kwargs)

    return LiveSource(factory, cluster=cluster, catalog=catalog)
