"""The pods of a generated cluster: GPU tenants (Ollama and not), DaemonSet and system pods, CPU pods.

`TenantFactory` keeps each GPU node within its slots and its physical VRAM using the guard's own
demand for every tenant (`ViewBuilder.tenant_of`, the same code that builds the live view), and
stamps admitted Ollama pods with the guard's own mutation (`webhook.admission.mutation.mutate`, applied as
the JSON Patch it returns). Randomness comes only from the `random.Random` it is given.
"""

from __future__ import annotations

import fnmatch
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jsonpatch

from benchmarks import objects as ob
from webhook.admission.context import Guard
from webhook.admission.mutation import mutate
from webhook.admission.review import parse_request
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.inventory import GpuNode, read_node
from webhook.core.ledger import Ledger
from webhook.core.view import ViewBuilder

#: chat models and how often pods run them (the small and mid sizes dominate real clusters)
MODELS = (
    ("llama3.1:8b", 20), ("qwen2.5:7b", 12), ("qwen2.5:14b", 10), ("mistral:7b", 8), ("qwen3:8b", 8),
    ("llama3.2:3b", 8), ("gemma2:9b", 6), ("deepseek-r1:14b", 6), ("phi4:14b", 4), ("qwen2.5:32b", 4),
    ("gemma3:27b", 3), ("qwen3:30b", 2), ("llama3.1:70b", 2), ("mixtral:8x7b", 1),
)
EMBEDDING = "nomic-embed-text"
OLLAMA_IMAGES = ("ollama/ollama:0.5.7", "ollama/ollama:0.6.8", "docker.io/ollama/ollama:0.9.0")
OTHER_GPU = (
    ("vllm", "vllm/vllm-openai:v0.6.3"),
    ("comfyui", "ghcr.io/ai-dock/comfyui:v2-cuda-12.1.1"),
    ("triton", "nvcr.io/nvidia/tritonserver:24.08-py3"),
    ("notebook", "quay.io/jupyter/pytorch-notebook:cuda12-2024-11-18"),
)
DECLARED_VRAM = ("8Gi", "12Gi", "16Gi", "20Gi", "24Gi", "32Gi", "40Gi")
CPU_APPS = (
    ("open-webui", "ghcr.io/open-webui/open-webui:0.4.8"), ("api", "python:3.12-slim"),
    ("web", "nginx:1.27"), ("worker", "ghcr.io/example/worker:2.3"), ("redis", "redis:7.4"),
)
#: kinds of GPU tenant and their weights
TENANT_KINDS = (("ollama-stamped", 45), ("ollama-unstamped", 15), ("gpu-declared", 25), ("gpu-undeclared", 15))
DAEMONSETS_GPU = (
    ("kube-system", "kube-proxy", "registry.k8s.io/kube-proxy:v1.30.4"),
    ("monitoring", "node-exporter", "quay.io/prometheus/node-exporter:v1.8.2"),
    ("gpu-operator", "nvidia-device-plugin-daemonset", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"),
    ("gpu-operator", "gpu-feature-discovery", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"),
    ("gpu-operator", "nvidia-dcgm-exporter", "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.8-3.6.0-ubuntu22.04"),
)
DAEMONSETS_CPU = DAEMONSETS_GPU[:2]
ALLOWED_KEY = "ollama-guard.io/allowed-models"


class Ids(Protocol):
    def uid(self) -> str: ...

    def suffix(self, n: int = 5) -> str: ...


def guard_for(policies: Mapping[str, Mapping[str, str]]) -> tuple[ViewBuilder, Guard]:
    """A view builder that knows the namespaces' policies, and a guard over its view (default settings)."""
    settings = load_settings()
    cluster = settings.cluster_policy()
    catalog = load_catalog(settings.catalog_overlay)
    builder = ViewBuilder(cluster=cluster, catalog=catalog)
    for ns, policy in policies.items():
        builder.set_namespace(ob.namespace(ns, uid="", annotations=policy))
    return builder, Guard(cluster=cluster, catalog=catalog, ledger=Ledger(builder.build()))


def mutation_patch(guard: Guard, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch the guard's mutating webhook returns for this pod at CREATE."""
    req = parse_request({
        "uid": "generate", "kind": {"version": "v1", "kind": "Pod"},
        "resource": {"version": "v1", "resource": "pods"}, "namespace": raw["metadata"]["namespace"],
        "operation": "CREATE", "object": raw,
    })
    return list(mutate(req, guard).patch)


def choose_models(rng: random.Random, policy: Mapping[str, str]) -> tuple[str, ...]:
    """One to two chat models (sometimes with the embedding model) the namespace's policy allows."""
    allowed = [g.strip() for g in policy.get(ALLOWED_KEY, "*").split(",")]
    choices = [(m, w) for m, w in MODELS if any(fnmatch.fnmatchcase(m, g) for g in allowed)]
    names, weights = [m for m, _ in choices], [w for _, w in choices]
    first = rng.choices(names, weights=weights)[0]
    roll = rng.random()
    if roll < 0.2:
        return (first, EMBEDDING)
    if roll < 0.3:
        return tuple(dict.fromkeys((first, rng.choices(names, weights=weights)[0])))
    return (first,)


class TenantFactory:
    """Builds pods node by node, tracking committed VRAM per node and usage per namespace."""

    def __init__(self, *, policies: Mapping[str, Mapping[str, str]], rng: random.Random, ids: Ids) -> None:
        self._builder, self._guard = guard_for(policies)
        self.cluster = self._guard.cluster
        self._policies = policies
        self._rng = rng
        self._ids = ids
        self._ops: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self._index = 0
        self.usage_mib: dict[str, int] = {}
        #: GPU node -> free MiB after its tenants
        self.free_mib: dict[str, int] = {}
        self.counts: Counter[str] = Counter()

    def node_pods(
        self, node: dict[str, Any], profile: ob.GpuProfile | None, *, budget: int, teams: Sequence[str]
    ) -> list[dict[str, Any]]:
        name = node["metadata"]["name"]
        sets = DAEMONSETS_GPU if profile else DAEMONSETS_CPU
        pods = [self._daemon_pod(ns, ds, image, name) for ns, ds, image in sets]
        if profile is not None:
            gpu = read_node(node, gpu_resources=self.cluster.gpu_resources)
            assert gpu is not None
            room = max(min(profile.slots, budget - len(pods)), 0)
            pods += self._tenants(gpu, round(room * self._rng.uniform(0.5, 1.0)), teams)
        while len(pods) < budget:
            pods.append(self._cpu_pod(self._rng.choice(teams), name))
        return pods

    def _tenants(self, node: GpuNode, target: int, teams: Sequence[str]) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = []
        committed, slots = 0, node.slots
        for _ in range(target):
            ns = self._rng.choice(teams)
            kind = self._rng.choices([k for k, _ in TENANT_KINDS], weights=[w for _, w in TENANT_KINDS])[0]
            gpus = 2 if node.gpu_count > 1 and self._rng.random() < 0.1 else 1
            raw = self._gpu_pod(kind, ns, node=node.name, gpus=gpus)
            tenant = self._builder.tenant_of(raw)
            assert tenant is not None, raw["metadata"]["name"]
            demand = tenant.demand_on(node)
            if gpus > slots or committed + demand > node.budget_mib or -(-demand // gpus) > node.gpu_memory_mib:
                continue  # the guard would not have admitted it here
            committed += demand
            slots -= gpus
            self.usage_mib[ns] = self.usage_mib.get(ns, 0) + demand
            self.counts[kind] += 1
            pods.append(raw)
        self.free_mib[node.name] = node.budget_mib - committed
        return pods

    def pending_pod(self, ns: str) -> tuple[dict[str, Any], int]:
        """An admitted (stamped) Ollama pod the scheduler has not bound yet, and its demand in MiB."""
        raw = self._ollama_pod(ns, node="", gpus=1, stamped=True)
        tenant = self._builder.tenant_of(raw)
        demand = (tenant.demand_mib or 0) if tenant else 0
        self.usage_mib[ns] = self.usage_mib.get(ns, 0) + demand
        self.counts["ollama-pending"] += 1
        return raw, demand

    def system_pods(self, cpu_nodes: Sequence[str]) -> list[dict[str, Any]]:
        specs = (("kube-system", "coredns", "registry.k8s.io/coredns/coredns:v1.11.3"),) * 2 + (
            ("ollama-guard-system", "ollama-guard", "ghcr.io/example/ollama-guard:0.1.0"),
        ) * 2
        return [self._app_pod(ns, app, image, node=cpu_nodes[i % len(cpu_nodes)])
                for i, (ns, app, image) in enumerate(specs)]

    def _gpu_pod(self, kind: str, ns: str, *, node: str, gpus: int) -> dict[str, Any]:
        if kind.startswith("ollama"):
            return self._ollama_pod(ns, node=node, gpus=gpus, stamped=kind == "ollama-stamped")
        app, image = self._rng.choice(OTHER_GPU)
        annotations = {"ollama-guard.io/vram": self._rng.choice(DECLARED_VRAM)} if kind == "gpu-declared" else {}
        c = ob.container(app, image, cpu="8", memory="64Gi", gpus=gpus, port=8000, probe_path="/health")
        return self._owned_pod(ns, app, [c], node=node, annotations=annotations, gpu=True)

    def _ollama_pod(self, ns: str, *, node: str, gpus: int, stamped: bool) -> dict[str, Any]:
        models = self._models(ns)
        by_annotation = self._rng.random() < 0.5
        env = [{"name": "OLLAMA_HOST", "value": "0.0.0.0:11434"}, {"name": "OLLAMA_KEEP_ALIVE", "value": "24h"}]
        image = self._rng.choice(OLLAMA_IMAGES)
        c = ob.container("ollama", image, cpu="4", memory="32Gi", gpus=gpus, env=env, port=11434,
                         post_start=ob.pull_script(models), probe_path="/")
        annotations = {"ollama-guard.io/models": ",".join(models)} if by_annotation else {}
        app = "ollama-" + models[0].split(":")[0].replace(".", "-")
        raw = self._owned_pod(ns, app, [c], node=node, annotations=annotations, gpu=True,
                              labels={"app.kubernetes.io/name": "ollama"})
        if stamped:
            key = (ns, by_annotation, models, gpus)
            if key not in self._ops:
                self._ops[key] = mutation_patch(self._guard, raw)
            jsonpatch.apply_patch(raw, self._ops[key], in_place=True)
        return raw

    def _models(self, ns: str) -> tuple[str, ...]:
        return choose_models(self._rng, self._policies.get(ns, {}))

    def _cpu_pod(self, ns: str, node: str) -> dict[str, Any]:
        app, image = self._rng.choice(CPU_APPS)
        if self._rng.random() < 0.03:
            job = f"{app}-migrate-{self._ids.suffix(8)}"
            c = ob.container("job", image, cpu="500m", memory="512Mi")
            self.counts["cpu-job-completed"] += 1
            return self._pod(ns, f"{job}-{self._ids.suffix()}", [c], node=node, phase="Succeeded",
                             owner=("Job", job, self._ids.uid()), labels={"job-name": job})
        self.counts["cpu"] += 1
        return self._app_pod(ns, app, image, node=node)

    def _app_pod(self, ns: str, app: str, image: str, *, node: str) -> dict[str, Any]:
        c = ob.container(app, image, cpu="500m", memory="1Gi", port=8080, probe_path="/healthz")
        return self._owned_pod(ns, app, [c], node=node, annotations={}, gpu=False)

    def _daemon_pod(self, ns: str, ds: str, image: str, node: str) -> dict[str, Any]:
        c = ob.container(ds, image, cpu="100m", memory="128Mi")
        self.counts["daemonset"] += 1
        return self._pod(ns, f"{ds}-{self._ids.suffix()}", [c], node=node, owner=("DaemonSet", ds, self._ids.uid()),
                         labels={"app.kubernetes.io/name": ds, "controller-revision-hash": "6d4b9c7f8"},
                         tolerations=({"operator": "Exists"},))

    def _owned_pod(
        self, ns: str, app: str, containers: list[dict[str, Any]], *, node: str, annotations: Mapping[str, str],
        gpu: bool, labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        rs_hash = self._ids.suffix(10)
        replicaset = f"{app}-{rs_hash}"
        tolerations = (*ob.DEFAULT_TOLERATIONS, ob.GPU_TOLERATION) if gpu else ob.DEFAULT_TOLERATIONS
        all_labels = {"app.kubernetes.io/instance": app, **(labels or {}), "pod-template-hash": rs_hash}
        return self._pod(ns, f"{replicaset}-{self._ids.suffix()}", containers, node=node, annotations=annotations,
                         owner=("ReplicaSet", replicaset, self._ids.uid()), labels=all_labels,
                         tolerations=tolerations)

    def _pod(self, ns: str, name: str, containers: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        self._index += 1
        return ob.pod(name, namespace=ns, uid=self._ids.uid(), index=self._index, containers=containers, **kwargs)
