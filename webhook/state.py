"""Where the guard's view of the cluster comes from, and how it is kept current.

`SnapshotSource` (the embedded default and `--snapshot FILE`): a fixed set of objects loaded once;
an admitted binding binds the pod in the view, so a sequence of bindings fills nodes like a real
cluster. The live source (list + watch) lives in `live.py`. Both own a `Ledger`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from webhook.catalog import Catalog
from webhook.ledger import Ledger
from webhook.policy import ClusterPolicy
from webhook.view import Tenant, ViewBuilder


class StateSource(Protocol):
    ledger: Ledger

    def readiness(self) -> tuple[bool, Mapping[str, Any]]: ...

    def on_bound(self, tenant: Tenant, node: str) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class SnapshotSource:
    """Cluster state from a file; bindings admitted by the guard are applied to it."""

    def __init__(
        self, objects: Iterable[Mapping[str, Any]], *, cluster: ClusterPolicy, catalog: Catalog, origin: str
    ) -> None:
        self._builder = ViewBuilder(cluster=cluster, catalog=catalog)
        self._builder.add_all(objects)  # streamed: raw objects are dropped as soon as they are read
        self._lock = threading.Lock()
        self.origin = origin
        self.ledger = Ledger(self._builder.build(), ttl_seconds=cluster.reservation_ttl_seconds)

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        view = self.ledger.view
        return True, {"mode": "snapshot", "source": self.origin, "nodes": len(view.nodes), "tenants": len(view.tenants)}

    def on_bound(self, tenant: Tenant, node: str) -> None:
        with self._lock:
            view = self._builder.put_tenant(replace(tenant, node=node), base=self.ledger.view)
            self.ledger.publish(view)

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None
