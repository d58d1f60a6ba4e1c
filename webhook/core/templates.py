"""Pod templates of GPU workloads: reading them from workload objects and remembering them.

`read_workload` understands Deployment, StatefulSet, ReplicaSet, ReplicationController
(`spec.replicas`), Job (`spec.parallelism`), CronJob (`spec.jobTemplate.spec`) and DaemonSet.
`TemplateStore` keeps the last admitted (or, in live mode, watched) template per workload so a
later `scale` subresource update (which carries replicas only) can be checked. Pure apart from its
lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core.rawdict import mapping
from webhook.core.tenants import could_be_subject

WORKLOAD_KINDS = {
    "Deployment",
    "StatefulSet",
    "ReplicaSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
}
SCALABLE = {"deployments": "Deployment", "statefulsets": "StatefulSet", "replicasets": "ReplicaSet"}
MAX_REPLICAS = 100_000


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    namespace: str
    name: str
    template: Mapping[str, Any]
    replicas: int


class TemplateStore:
    """Pod templates of GPU workloads, keyed kind/namespace/name (fed by admissions and views)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Workload] = {}

    def put(self, workload: Workload) -> None:
        with self._lock:
            self._items[f"{workload.kind}/{workload.namespace}/{workload.name}"] = workload

    def drop(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._items.pop(f"{kind}/{namespace}/{name}", None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, kind: str, namespace: str, name: str) -> Workload | None:
        with self._lock:
            return self._items.get(f"{kind}/{namespace}/{name}")


def runs_gpu_pods(template: Mapping[str, Any], *, gpu_resources: tuple[str, ...]) -> bool:
    """Whether a pod template's pods could be GPU tenants (the only templates worth keeping)."""
    pod = {"metadata": template.get("metadata"), "spec": template.get("spec")}
    return could_be_subject(pod, gpu_resources=gpu_resources)


def read_workload(obj: Mapping[str, Any], *, namespace: str = "") -> Workload | None:
    """The pod template and copy count of a workload object; None when it has no usable template."""
    kind = str(obj.get("kind") or "")
    if kind not in WORKLOAD_KINDS:
        return None
    meta, spec = mapping(obj.get("metadata")), mapping(obj.get("spec"))
    if kind == "CronJob":
        job = mapping(mapping(spec.get("jobTemplate")).get("spec"))
        template, count = job.get("template"), job.get("parallelism", 1)
    else:
        template = spec.get("template")
        count = spec.get("parallelism" if kind == "Job" else "replicas", 1)
    if not isinstance(template, Mapping):
        return None
    replicas = count if isinstance(count, int) and not isinstance(count, bool) else 1
    return Workload(
        kind,
        str(meta.get("namespace") or namespace),
        str(meta.get("name") or ""),
        template,
        min(max(replicas, 0), MAX_REPLICAS),
    )
