"""Kubernetes objects shaped like `kubectl get nodes,namespaces,pods -A -o json` prints them.

Builders only: plain dicts in, plain dicts out, no randomness and no clock (timestamps are fixed
offsets from one instant), so the same arguments always give the same object. What kubectl omits
by default (`managedFields`) is omitted here too; node `status.images` is left out (it does not
change what the guard reads and would only make the files larger).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EPOCH = "2026-11-20T08:{:02d}:{:02d}Z"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
DEFAULT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
)


@dataclass(frozen=True, slots=True)
class GpuProfile:
    """One node pool: a GPU model, GPUs per node and time-slicing replicas per GPU."""

    key: str
    product: str
    family: str
    memory_mib: int
    count: int
    replicas: int
    instance_type: str
    tainted: bool

    @property
    def slots(self) -> int:
        return self.count * self.replicas

    @property
    def capacity_mib(self) -> int:
        return self.memory_mib * self.count


def stamp(seconds: int) -> str:
    """A fixed creationTimestamp `seconds` after the epoch instant (wraps within the hour)."""
    return EPOCH.format((seconds // 60) % 60, seconds % 60)


def gpu_node(name: str, *, profile: GpuProfile, uid: str, index: int) -> dict[str, Any]:
    """A GPU node with the labels GPU Feature Discovery publishes for a time-sliced GPU."""
    labels = {
        **_node_labels(name, profile.instance_type, index),
        "nvidia.com/cuda.driver-version.major": "550",
        "nvidia.com/cuda.driver-version.minor": "127",
        "nvidia.com/cuda.runtime-version.major": "12",
        "nvidia.com/cuda.runtime-version.minor": "4",
        "nvidia.com/gfd.timestamp": "1763625600",
        "nvidia.com/gpu.compute.major": "9",
        "nvidia.com/gpu.compute.minor": "0",
        "nvidia.com/gpu.count": str(profile.count),
        "nvidia.com/gpu.family": profile.family,
        "nvidia.com/gpu.machine": profile.instance_type,
        "nvidia.com/gpu.memory": str(profile.memory_mib),
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": profile.product,
        "nvidia.com/gpu.replicas": str(profile.replicas),
        "nvidia.com/gpu.sharing-strategy": "time-slicing",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "none",
        "node-pool": profile.key,
    }
    taints = [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}] if profile.tainted else []
    resources = {"cpu": "192", "memory": "2063876Mi", "pods": "110", GPU_RESOURCE: str(profile.slots)}
    return _node(name, uid=uid, index=index, labels=labels, taints=taints, resources=resources)


def cpu_node(name: str, *, uid: str, index: int) -> dict[str, Any]:
    resources = {"cpu": "32", "memory": "128450Mi", "pods": "110"}
    labels = {**_node_labels(name, "m7i.8xlarge", index), "node-pool": "system"}
    return _node(name, uid=uid, index=index, labels=labels, taints=[], resources=resources)


def _node_labels(name: str, instance_type: str, index: int) -> dict[str, str]:
    return {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": instance_type,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": f"us-east-1{'abc'[index % 3]}",
    }


def _node(
    name: str, *, uid: str, index: int, labels: dict[str, str], taints: list[dict[str, str]], resources: dict[str, str]
) -> dict[str, Any]:
    ip = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    conditions = [
        _condition(kind, "False", reason, message)
        for kind, reason, message in (
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        )
    ] + [_condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
    allocatable = dict(resources)
    allocatable["cpu"] = str(int(resources["cpu"]) - 1)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
            "creationTimestamp": stamp(index),
            "labels": labels,
            "name": name,
            "resourceVersion": str(100000 + index),
            "uid": uid,
        },
        "spec": {"podCIDR": f"100.{index // 250 % 250}.{index % 250}.0/24", "providerID": f"aws:///{name}",
                 **({"taints": taints} if taints else {})},
        "status": {
            "addresses": [{"address": ip, "type": "InternalIP"}, {"address": name, "type": "Hostname"}],
            "allocatable": allocatable,
            "capacity": resources,
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": "6.1.112-124.190.amzn2023.x86_64",
                "kubeProxyVersion": "v1.30.4",
                "kubeletVersion": "v1.30.4",
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023.6.20241010",
            },
        },
    }


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {
        "lastHeartbeatTime": stamp(3000),
        "lastTransitionTime": stamp(0),
        "message": message,
        "reason": reason,
        "status": status,
        "type": kind,
    }


def namespace(name: str, *, uid: str, annotations: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "creationTimestamp": stamp(0),
        "labels": {"kubernetes.io/metadata.name": name},
        "name": name,
        "resourceVersion": "42",
        "uid": uid,
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}}


def container(
    name: str,
    image: str,
    *,
    cpu: str = "250m",
    memory: str = "256Mi",
    gpus: int = 0,
    env: Sequence[Mapping[str, Any]] = (),
    port: int | None = None,
    post_start: Sequence[str] = (),
    probe_path: str = "",
) -> dict[str, Any]:
    """One container as the API server stores it (defaulted fields included)."""
    limits: dict[str, str] = {"memory": memory}
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits[GPU_RESOURCE] = requests[GPU_RESOURCE] = str(gpus)
    out: dict[str, Any] = {"image": image, "imagePullPolicy": "IfNotPresent", "name": name}
    if env:
        out["env"] = [dict(e) for e in env]
    if post_start:
        out["lifecycle"] = {"postStart": {"exec": {"command": list(post_start)}}}
    if port is not None:
        out["ports"] = [{"containerPort": port, "name": "http", "protocol": "TCP"}]
        if probe_path:
            out["readinessProbe"] = {
                "failureThreshold": 3,
                "httpGet": {"path": probe_path, "port": "http", "scheme": "HTTP"},
                "periodSeconds": 10,
                "successThreshold": 1,
                "timeoutSeconds": 1,
            }
    out.update(
        resources={"limits": limits, "requests": requests},
        terminationMessagePath="/dev/termination-log",
        terminationMessagePolicy="File",
        volumeMounts=[
            {"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access", "readOnly": True}
        ],
    )
    return out


def pull_script(models: Sequence[str]) -> list[str]:
    """The postStart command the popular Ollama Helm chart writes for its `models.pull` list."""
    pulls = "".join(f"/bin/ollama pull {m}\n" for m in models)
    return ["/bin/sh", "-c", f"while ! /bin/ollama ps > /dev/null 2>&1; do\n  sleep 5\ndone\n{pulls}"]


def pod(
    name: str,
    *,
    namespace: str,
    uid: str,
    index: int,
    containers: Sequence[dict[str, Any]],
    node: str = "",
    phase: str = "Running",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owner: tuple[str, str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = DEFAULT_TOLERATIONS,
) -> dict[str, Any]:
    """A pod; `owner` is (kind, name, uid) of its controller."""
    meta: dict[str, Any] = {"creationTimestamp": stamp(index), "labels": dict(labels or {}), "name": name,
                            "namespace": namespace, "resourceVersion": str(200000 + index), "uid": uid}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner is not None:
        kind, owner_name, owner_uid = owner
        api = "v1" if kind == "Node" else "batch/v1" if kind == "Job" else "apps/v1"
        meta["generateName"] = f"{owner_name}-"
        meta["ownerReferences"] = [{"apiVersion": api, "blockOwnerDeletion": True, "controller": True,
                                    "kind": kind, "name": owner_name, "uid": owner_uid}]
    spec: dict[str, Any] = {
        "containers": list(containers),
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Never" if owner and owner[0] == "Job" else "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": "default",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
        "tolerations": [dict(t) for t in tolerations],
        "volumes": [_api_access_volume()],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": _pod_status(phase, containers, node=node, index=index)}


def _api_access_volume() -> dict[str, Any]:
    return {
        "name": "kube-api-access",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                            "path": "namespace"}]}},
            ],
        },
    }


def _pod_status(phase: str, containers: Sequence[dict[str, Any]], *, node: str, index: int) -> dict[str, Any]:
    if not node:
        return {"conditions": [{"lastProbeTime": None, "lastTransitionTime": stamp(index), "message":
                                "0/1 nodes are available: waiting for the scheduler", "reason": "Unschedulable",
                                "status": "False", "type": "PodScheduled"}],
                "phase": "Pending", "qosClass": "Burstable"}
    running = phase == "Running"
    ready = "True" if running else "False"
    conditions = [
        {"lastProbeTime": None, "lastTransitionTime": stamp(index), "status": status, "type": kind}
        for kind, status in (("Initialized", "True"), ("Ready", ready), ("ContainersReady", ready),
                             ("PodScheduled", "True"))
    ]
    state: dict[str, Any] = (
        {"running": {"startedAt": stamp(index + 20)}}
        if running
        else {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": stamp(index + 20),
                             "finishedAt": stamp(index + 600), "containerID": f"containerd://{index:064x}"}}
    )
    statuses = [
        {"containerID": f"containerd://{index:060x}{i:04x}", "image": c["image"], "imageID": f"{c['image']}@sha256:"
         f"{index * 31 + i:064x}", "lastState": {}, "name": c["name"], "ready": running, "restartCount": 0,
         "started": running, "state": state}
        for i, c in enumerate(containers)
    ]
    ip = f"100.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    return {"conditions": conditions, "containerStatuses": statuses, "hostIP": "10.0.0.1", "phase": phase,
            "podIP": ip, "podIPs": [{"ip": ip}], "qosClass": "Burstable", "startTime": stamp(index + 5)}
