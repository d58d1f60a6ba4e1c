"""Test helpers for the live mode: cluster objects for the loopback API server, and waiting.

- `gpu_node(...)`: a Node labelled the way GPU Feature Discovery labels a time-sliced node.
- `stamped_pod(...)`: an Ollama pod exactly as the guard's mutating webhook leaves it (the
  recorded kube-apiserver 1.24 pod `validate-pod-create-2`, run through the real `mutate`), with
  a new name, uid, node and phase; optionally with another demand stamp, an older stamp version,
  or no stamp at all; `unmutated_pod(...)`: the recorded pod as created before the guard was
  installed (no stamp, no injected Ollama env: its demand depends on its namespace's defaults).
- `write_kubeconfig(path, server)`: a kubeconfig whose current context is the loopback server.
- `wait_until(predicate, what)`: polls with a deadline (no long sleeps).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from conftest import load_recorded, variant

from webhook.admission import review as rv
from webhook.admission.context import Guard
from webhook.admission.mutation import mutate
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.ledger import Ledger
from webhook.core.view import ClusterView

DEADLINE = 10.0
ANN_DEMAND = "ollama-guard.io/vram-demand"
ANN_ESTIMATE = "ollama-guard.io/estimate"
ANN_MODELS = "ollama-guard.io/models"


def wait_until(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "fixture",
        "clusters": [{"name": "fixture", "cluster": {"server": server}}],
        "users": [{"name": "guard", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "fixture", "context": {"cluster": "fixture", "user": "guard"}}],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def gpu_node(
    name: str, *, memory: str = "81559", replicas: str | None = "4", count: str = "1", **annotations: str
) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.memory": memory, "nvidia.com/gpu.count": count}
    if replicas is not None:
        labels |= {"nvidia.com/gpu.replicas": replicas, "nvidia.com/gpu.sharing-strategy": "time-slicing"}
    slots = str(int(count) * int(replicas or 1))
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": slots, "pods": "110"}},
    }


def namespace(name: str, **annotations: str) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}, "annotations": annotations},
    }


@functools.cache
def _mutated(models: str) -> dict[str, Any]:
    """The recorded pod with `models`, as the real mutating webhook patches it."""
    review = variant(load_recorded("validate-pod-create-2.json"), models=models)
    settings = load_settings()
    guard = Guard(cluster=settings.cluster_policy(), catalog=load_catalog(), ledger=Ledger(ClusterView()))
    answer = mutate(rv.parse_review(review), guard)
    assert answer.patch, "the recorded Ollama pod must be mutated"
    pod: dict[str, Any] = jsonpatch.apply_patch(review["request"]["object"], answer.patch)
    pod["metadata"].pop("generateName", None)
    pod["metadata"].pop("managedFields", None)
    return pod


def stamped_pod(
    name: str,
    *,
    namespace: str = "team-a",
    models: str = "llama3.1:8b",
    node: str | None = None,
    phase: str = "Pending",
    uid: str | None = None,
    demand: int | None = None,
    stamp: str = "current",
) -> dict[str, Any]:
    """A mutated Ollama pod. `stamp`: "current", "old" (`{"v":0}`: must be recomputed) or "none"."""
    pod = copy.deepcopy(_mutated(models))
    meta = pod["metadata"]
    meta.update(name=name, namespace=namespace, uid=uid or str(uuid.uuid4()))
    annotations: dict[str, str] = meta["annotations"]
    if demand is not None:
        annotations[ANN_DEMAND] = str(demand)
        _request_vram(pod, demand)  # as the guard would have requested it (design §14)
    if stamp == "old":
        annotations[ANN_ESTIMATE] = json.dumps({"v": 0, "demandMiB": 1})
        annotations[ANN_DEMAND] = "1"  # what an older guard wrote: never trusted now
    elif stamp == "none":
        del annotations[ANN_ESTIMATE], annotations[ANN_DEMAND]
    if node is not None:
        pod["spec"]["nodeName"] = node
    pod["status"] = {"phase": phase}
    return pod


def _request_vram(pod: dict[str, Any], demand: int) -> None:
    for container in pod["spec"]["containers"]:
        for section in ("limits", "requests"):
            values = container.get("resources", {}).get(section, {})
            if "ollama-guard.io/vram-mib" in values:
                values["ollama-guard.io/vram-mib"] = str(demand)


def unmutated_pod(
    name: str, *, namespace: str = "team-a", models: str = "llama3.1:8b", node: str | None = None,
    phase: str = "Running",
) -> dict[str, Any]:
    """The recorded pod as created before the guard was installed: no stamp, no injected env."""
    pod: dict[str, Any] = variant(load_recorded("validate-pod-create-2.json"), models=models)["request"]["object"]
    pod["metadata"].update(name=name, namespace=namespace, uid=str(uuid.uuid4()))
    for field in ("generateName", "managedFields"):
        pod["metadata"].pop(field, None)
    if node is not None:
        pod["spec"]["nodeName"] = node
    pod["status"] = {"phase": phase}
    return pod


def demand_of(pod: Mapping[str, Any]) -> int:
    return int(pod["metadata"]["annotations"][ANN_DEMAND])


def binding_review(pod: Mapping[str, Any], node: str, *, dry_run: bool = False) -> dict[str, Any]:
    """The scheduler's `pods/binding` review for `pod` -> `node` (the recorded one, re-targeted)."""
    meta = pod["metadata"]
    return variant(
        load_recorded("validate-binding-binding-create-2.json"),
        namespace=meta["namespace"],
        name=meta["name"],
        pod_uid=meta["uid"],
        node=node,
        dry_run=dry_run,
    )


def patch_of(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(answer["patch"]))
    return ops
