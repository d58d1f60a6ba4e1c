"""Memory per cached pod: what the live guard costs at 100,000 pods (tracemalloc).

Each pod goes through what the live path does: a realistic full Pod as the API server sends it
(managedFields, probes, status, the guard's own stamps...) is serialised, parsed with
`json.loads` on its own (as a watch event is, so no string is shared across pods), projected,
and only what the guard keeps is retained.

The main figure (`live cache`) is the guard's real code: `webhook.state.live.project` into a
`key -> projection` store (what `ClusterMirror` keeps), `ViewBuilder.set_pod` (the `Tenant`), and
one `ViewBuilder.build()` (the published view's maps), for `--pods` (100,000) pods the guard has
stamped; then, on `--sample` pods: pods without stamps (recomputed, so their Ollama settings and
commands are kept), and the worst case for sharing, where no two pods have the same containers
(stamped, and unstamped).

Design alternatives, measured on samples for comparison (scaled to `--pods`):
- `projected`: a wider field list (owner, nodeSelector, tolerations, affinity) as plain dicts;
- `projected+interned`: the same with every string `sys.intern`-ed;
- `projected+shared`: interned, and identical sub-structures shared across pods;
- `record`: a frozen slotted dataclass with the fields the ledger and policy need;
- `raw`: the full parsed Pod.

tracemalloc slows allocation about tenfold: the default run takes about three minutes
(`--live-only` about two). Results: benchmarks/MEMORY.md.
Usage: `python benchmarks/pod_memory.py [--pods 100000] [--sample 10000] [--raw-sample 2000] [--live-only]`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webhook.admission.mutation import estimate_annotation
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.demand import compute_demand
from webhook.core.policy import resolve_namespace_policy
from webhook.core.tenants import ANN_DEMAND, ANN_ESTIMATE, read_pod
from webhook.core.view import ViewBuilder
from webhook.state.live import project
from webhook.state.mirror import object_key

GUARD_PREFIX = "ollama-guard.io/"
_POOL = 1_000
MODELS = ["llama3.1:8b-instruct-q4_K_M", "qwen2.5:14b", "mistral:7b", "gemma2:27b",
          "nomic-embed-text", "llama3.1:70b-instruct-q4_K_M", "phi3:mini", "deepseek-r1:32b"]


@functools.cache
def guard_stamps(model: str, parallel: int) -> tuple[tuple[str, str], ...]:
    """The two annotations the mutating webhook writes on such a pod (the real estimator)."""
    cluster = load_settings().cluster_policy()
    pod = read_pod({
        "metadata": {"namespace": "team-000", "name": "p",
                     "annotations": {"ollama-guard.io/models": f"{model},nomic-embed-text"}},
        "spec": {"containers": [{"name": "ollama", "image": "ollama/ollama:0.5.7",
                                 "resources": {"limits": {"nvidia.com/gpu": "1"}},
                                 "env": [{"name": "OLLAMA_NUM_PARALLEL", "value": str(parallel)},
                                         {"name": "OLLAMA_CONTEXT_LENGTH", "value": "8192"},
                                         {"name": "OLLAMA_MAX_LOADED_MODELS", "value": "2"}]}]},
    }, gpu_resources=cluster.gpu_resources)
    demand = compute_demand(pod, ns=resolve_namespace_policy(cluster, "team-000", None),
                            cluster=cluster, catalog=load_catalog())
    return ((ANN_DEMAND, str(demand.demand_mib)), (ANN_ESTIMATE, estimate_annotation(demand)))


def full_pod(i: int, *, stamped: bool = True) -> dict[str, Any]:
    """A Deployment-owned Ollama pod as `kubectl get pod -o json` shows it (about 8 KB).

    `stamped`: carries the demand annotations the guard's mutating webhook writes (the real
    estimator's output); without them the pod predates the guard and its demand is recomputed.
    """
    ns, app = f"team-{i % 200:03d}", f"ollama-{i % 50}"
    rs_hash, suffix = f"{(i * 7919) % 16**10:010x}", f"{(i * 104729) % 36**5:05x}"
    name, node = f"{app}-{rs_hash}-{suffix}", f"gpu-node-{i % 1000:04d}"
    model = MODELS[i % len(MODELS)]
    labels = {"app": app, "app.kubernetes.io/name": "ollama", "app.kubernetes.io/instance": app,
              "app.kubernetes.io/part-of": "llm-platform", "pod-template-hash": rs_hash}
    annotations = {
        "ollama-guard.io/models": f"{model},nomic-embed-text",
        **(dict(guard_stamps(model, 1 + i % 4)) if stamped else {}),
        "kubectl.kubernetes.io/restartedAt": "2024-11-20T10:00:00Z",
        "prometheus.io/scrape": "true", "prometheus.io/port": "11434",
    }
    resources = {"limits": {"nvidia.com/gpu": "1", "memory": "32Gi"},
                 "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}}
    env: list[dict[str, Any]] = [{"name": "OLLAMA_NUM_PARALLEL", "value": str(1 + i % 4)},
           {"name": "OLLAMA_CONTEXT_LENGTH", "value": "8192"},
           {"name": "OLLAMA_MAX_LOADED_MODELS", "value": "2"},
           {"name": "OLLAMA_KEEP_ALIVE", "value": "24h"},
           {"name": "OLLAMA_FLASH_ATTENTION", "value": "1"},
           {"name": "HF_HOME", "value": "/models/hf"},
           {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                          "fieldPath": "status.podIP"}}}]
    probe = {"httpGet": {"path": "/api/version", "port": 11434, "scheme": "HTTP"},
             "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 1,
             "successThreshold": 1, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": "ollama", "image": "ollama/ollama:0.5.7", "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 11434, "protocol": "TCP"}], "env": env,
        "resources": resources, "livenessProbe": probe, "readinessProbe": probe,
        "volumeMounts": [{"name": "models", "mountPath": "/root/.ollama"},
                         {"name": "kube-api-access-x7k2p", "readOnly": True,
                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    init: dict[str, Any] = {"name": "pull-model", "image": "ollama/ollama:0.5.7",
            "command": ["/bin/sh", "-c", f"ollama serve & sleep 5; ollama pull {model}"],
            "env": env[:2], "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
            "volumeMounts": container["volumeMounts"][:1],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}
    managed = [{"manager": m, "operation": "Update", "apiVersion": "v1",
                "time": "2024-11-20T10:00:05Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {f"f:{k}": {} for k in labels},
                                            "f:ownerReferences": {"k:{\"uid\":\"x\"}": {}}},
                             "f:spec": {"f:containers": {"k:{\"name\":\"ollama\"}": {
                                 "f:env": {f"k:{{\"name\":\"{e['name']}\"}}": {} for e in env},
                                 "f:image": {}, "f:resources": {}}}}}}
               for m in ("kube-controller-manager", "kubelet")]
    condition_types = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                       "PodScheduled")
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "generateName": f"{app}-{rs_hash}-", "namespace": ns,
            "uid": f"{i:08x}-1f2e-4c3b-9a8d-{i * 31 % 16**12:012x}",
            "resourceVersion": str(1_000_000 + i), "creationTimestamp": "2024-11-20T10:00:00Z",
            "labels": labels, "annotations": annotations, "managedFields": managed,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": f"{app}-{rs_hash}", "uid": f"rs-{i % 5000:08x}",
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": f"{app}-m"}},
                        {"name": "kube-api-access-x7k2p", "projected": {
                            "defaultMode": 420, "sources": [
                                {"serviceAccountToken": {"expirationSeconds": 3607,
                                                         "path": "token"}},
                                {"configMap": {"name": "kube-root-ca.crt", "items": [
                                    {"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "initContainers": [init], "containers": [container],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
            "serviceAccount": "default", "nodeName": node,
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-SHARED"},
            "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["40000"]}]}]}}},
            "priority": 0, "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": t, "status": "True", "lastProbeTime": None,
                            "lastTransitionTime": "2024-11-20T10:00:30Z"}
                           for t in condition_types],
            "hostIP": f"10.0.{i % 250}.{i % 200}", "podIP": f"10.244.{i % 250}.{i % 240}",
            "podIPs": [{"ip": f"10.244.{i % 250}.{i % 240}"}],
            "startTime": "2024-11-20T10:00:01Z", "qosClass": "Burstable",
            "containerStatuses": [{
                "name": "ollama", "ready": True, "restartCount": 0, "started": True,
                "image": "docker.io/ollama/ollama:0.5.7",
                "imageID": "docker.io/ollama/ollama@sha256:" + "ab" * 32,
                "containerID": f"containerd://{i:064x}",
                "state": {"running": {"startedAt": "2024-11-20T10:00:20Z"}},
                "lastState": {}}],
        },
    }


def project_pod(raw: dict[str, Any]) -> dict[str, Any]:
    """The projection the guard keeps (design §11; the lead's field list)."""
    meta, spec = raw["metadata"], raw.get("spec") or {}
    return {
        "metadata": {
            "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid"),
            "labels": meta.get("labels") or {},
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items()
                            if k.startswith(GUARD_PREFIX)},
            "deletionTimestamp": meta.get("deletionTimestamp"),
            "ownerReferences": [{"kind": o.get("kind"), "name": o.get("name")}
                                for o in meta.get("ownerReferences") or ()],
        },
        "spec": {
            "nodeName": spec.get("nodeName"), "nodeSelector": spec.get("nodeSelector") or {},
            "tolerations": spec.get("tolerations") or [],
            "affinity": {"nodeAffinity": (spec.get("affinity") or {}).get("nodeAffinity")},
            "containers": [_container(c) for c in spec.get("containers") or ()],
            "initContainers": [_container(c) for c in spec.get("initContainers") or ()],
        },
        "status": {"phase": (raw.get("status") or {}).get("phase")},
    }


def _container(c: dict[str, Any]) -> dict[str, Any]:
    return {"name": c.get("name"), "image": c.get("image"),
            "env": [e for e in c.get("env") or () if str(e.get("name", "")).startswith("OLLAMA_")],
            "resources": c.get("resources") or {}}


def intern_all(value: Any) -> Any:
    """A deep copy with every string (keys and values) interned."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(k): intern_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [intern_all(v) for v in value]
    return value


class Sharer:
    """Hash-consing: one interned object per distinct sub-structure (replicas share their spec).

    Shared objects must never be mutated; a real cache would be rebuilt on each relist so that
    structures no pod uses any more are dropped.
    """

    SHARED: tuple[tuple[str, str], ...] = (
        ("spec", "tolerations"), ("spec", "affinity"), ("spec", "nodeSelector"),
        ("spec", "containers"), ("spec", "initContainers"), ("metadata", "ownerReferences"))

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __call__(self, projected: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = intern_all(projected)
        for section, name in self.SHARED:
            value = result[section][name]
            key = json.dumps(value, sort_keys=True, separators=(",", ":"))
            result[section][name] = self._cache.setdefault(key, value)
        return result


@dataclass(frozen=True, slots=True)
class PodRecord:
    """A compact alternative: what the ledger, policy and binding lookup read."""

    namespace: str
    name: str
    uid: str
    node_name: str | None
    phase: str | None
    deleting: bool
    owner: tuple[str, str] | None
    labels: tuple[tuple[str, str], ...]
    guard_annotations: tuple[tuple[str, str], ...]
    ollama_env: tuple[tuple[str, str], ...]
    gpu_request: int
    images: tuple[str, ...]


def to_record(p: dict[str, Any]) -> PodRecord:
    meta, spec = p["metadata"], p["spec"]
    owners = meta["ownerReferences"]
    containers = spec["containers"] + spec["initContainers"]

    def pairs(d: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        return tuple((sys.intern(k), sys.intern(str(v))) for k, v in sorted(d.items()))

    gpus = sum(int((c["resources"].get("limits") or {}).get("nvidia.com/gpu", 0))
               for c in spec["containers"])
    return PodRecord(
        namespace=sys.intern(meta["namespace"]), name=meta["name"], uid=meta["uid"],
        node_name=sys.intern(spec["nodeName"]) if spec["nodeName"] else None,
        phase=sys.intern(p["status"]["phase"]), deleting=meta["deletionTimestamp"] is not None,
        owner=(sys.intern(owners[0]["kind"]), sys.intern(owners[0]["name"])) if owners else None,
        labels=pairs(meta["labels"]), guard_annotations=pairs(meta["annotations"]),
        ollama_env=pairs({e["name"]: e.get("value", "") for c in containers for e in c["env"]}),
        gpu_request=gpus, images=tuple(sys.intern(c["image"]) for c in containers))


class LiveCache:
    """What the live guard keeps per pod: the mirror's `key -> project(...)` store, the
    `ViewBuilder`'s Tenant, and the tenants map of one published ClusterView."""

    def __init__(self) -> None:
        self.cluster = load_settings().cluster_policy()
        self.store: dict[str, dict[str, Any]] = {}
        self.builder = ViewBuilder(cluster=self.cluster, catalog=load_catalog())

    def add(self, raw: dict[str, Any]) -> None:
        projected = project("Pod", raw, gpu_resources=self.cluster.gpu_resources)
        assert projected is not None
        self.store[object_key(raw)] = projected
        assert self.builder.set_pod(projected) is not None


def measure_live(n: int, parse: Callable[[int], dict[str, Any]]) -> float:
    """Bytes per pod retained by a LiveCache of `n` pods plus one published view."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cache = LiveCache()
    for i in range(n):
        cache.add(parse(i))
    view = cache.builder.build()
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(view.tenants) == len(cache.store) == n
    return (current - base) / n


def measure(n: int, build: Callable[[int], object]) -> float:
    """Bytes per pod still allocated after building and keeping `n` pods."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = [build(i) for i in range(n)]
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(kept) == n
    return (current - base) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000, help="pods for the main figure")
    parser.add_argument("--sample", type=int, default=10_000, help="pods for the alternatives")
    parser.add_argument("--raw-sample", type=int, default=2_000)
    parser.add_argument("--live-only", action="store_true", help="only the live cache figures")
    args = parser.parse_args()
    # Each json.loads makes fresh objects, so parsing a pool of texts costs what unique pods do.
    texts = [json.dumps(full_pod(i)).encode() for i in range(_POOL)]
    unstamped = [json.dumps(full_pod(i, stamped=False)).encode() for i in range(_POOL)]

    def parsed(i: int) -> dict[str, Any]:
        raw: dict[str, Any] = json.loads(texts[i % _POOL])
        return raw

    def parsed_unstamped(i: int) -> dict[str, Any]:
        raw: dict[str, Any] = json.loads(unstamped[i % _POOL])
        return raw

    def unique(parse: Callable[[int], dict[str, Any]]) -> Callable[[int], dict[str, Any]]:
        """Pods of the pool repeat; a cache keys by name, so each copy gets its own name and uid."""
        def parse_unique(i: int) -> dict[str, Any]:
            raw = parse(i)
            meta = raw["metadata"]
            meta["name"], meta["uid"] = f"{meta['name']}{i // _POOL:x}", f"{meta['uid'][:-6]}{i:06x}"
            return raw
        return parse_unique

    def distinct(parse: Callable[[int], dict[str, Any]]) -> Callable[[int], dict[str, Any]]:
        """Worst case for sharing: no two pods have the same containers (a unique Ollama env value)."""
        def parse_distinct(i: int) -> dict[str, Any]:
            raw = parse(i)
            for env in raw["spec"]["containers"][0]["env"]:
                if env["name"] == "OLLAMA_KEEP_ALIVE":
                    env["value"] = f"{i}s"
            return raw
        return parse_distinct

    print(f"full pod JSON: {len(texts[1]):,} bytes; "
          f"projected JSON: {len(json.dumps(project_pod(parsed(1)))):,} bytes")
    share = Sharer()  # its cache is built, and counted, inside the measurement
    rows = [("projected", args.sample, lambda i: project_pod(parsed(i))),
            ("projected+interned", args.sample, lambda i: intern_all(project_pod(parsed(i)))),
            ("projected+shared", args.sample, lambda i: share(project_pod(parsed(i)))),
            ("record", args.sample, lambda i: to_record(project_pod(parsed(i)))),
            ("raw", args.raw_sample, parsed)]
    print(f"{'representation':<20} {'pods measured':>13} {'bytes/pod':>10} "
          f"{f'MiB at {args.pods:,}':>14}")
    for label, n, build in [] if args.live_only else rows:
        per_pod = measure(n, build)
        print(f"{label:<20} {n:>13,} {per_pod:>10,.0f} {per_pod * args.pods / 2**20:>14,.1f}")
    print("\nlive cache (webhook.state.live.project + ViewBuilder.set_pod + one built view):")
    live = [("guard-stamped", args.pods, unique(parsed)),
            ("unstamped", args.sample, unique(parsed_unstamped)),
            ("no two alike", args.sample, distinct(unique(parsed))),
            ("unstamped, unalike", args.sample, distinct(unique(parsed_unstamped)))]
    for label, n, parse in live:
        per_pod = measure_live(n, parse)
        print(f"{label:<20} {n:>13,} {per_pod:>10,.0f} {per_pod * args.pods / 2**20:>14,.1f}")


if __name__ == "__main__":
    main()
