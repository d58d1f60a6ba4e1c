"""Where the guard's view of the cluster comes from, and how it is kept current.

`SnapshotSource` (the embedded default and `--snapshot FILE`): a fixed set of objects loaded once;
an admitted binding's reservation is permanent (no watch will confirm it), so a sequence of
bindings fills nodes like a real cluster; Deployments and StatefulSets in the file give `scale`
checks their templates. The live source (list + watch) lives in `live.py`. Both own a `Ledger`
and a `TemplateStore` (which admitted workload requests also feed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from webhook.core.catalog import Catalog
from webhook.core.ledger import Ledger
from webhook.core.policy import ClusterPolicy
from webhook.core.templates import TemplateStore, read_workload, runs_gpu_pods
from webhook.core.view import Tenant, ViewBuilder

SCALED_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})


class StateSource(Protocol):
    ledger: Ledger
    templates: TemplateStore

    def readiness(self) -> tuple[bool, Mapping[str, Any]]: ...

    def on_bound(self, tenant: Tenant, node: str) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class SnapshotSource:
    """Cluster state from a file; bindings admitted by the guard stay reserved in its ledger."""

    def __init__(
        self, objects: Iterable[Mapping[str, Any]], *, cluster: ClusterPolicy, catalog: Catalog, origin: str
    ) -> None:
        self._builder = ViewBuilder(cluster=cluster, catalog=catalog)
        self.templates = TemplateStore()
        self._gpu_resources = cluster.gpu_resources
        self._builder.add_all(self._remember_templates(objects))  # streamed: each object is dropped once read
        self.origin = origin
        # No watch will ever confirm a binding here: the reservation *is* the binding, so it never
        # expires, and an admitted pod stays findable for its binding.
        self.ledger = Ledger(self._builder.build(), ttl_seconds=math.inf)

    def _remember_templates(self, objects: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        for obj in objects:
            workload = read_workload(obj) if obj.get("kind") in SCALED_KINDS else None
            if workload is not None and runs_gpu_pods(workload.template, gpu_resources=self._gpu_resources):
                self.templates.put(workload)
            yield obj

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        view = self.ledger.view
        return True, {"mode": "snapshot", "source": self.origin, "nodes": len(view.nodes), "tenants": len(view.tenants)}

    def on_bound(self, tenant: Tenant, node: str) -> None:
        return None  # the permanent reservation already counts the pod on its node (O(1) per binding)

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None
