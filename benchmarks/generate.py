"""Deterministic cluster snapshots for the benchmarks (what `kubectl get nodes,namespaces,pods -A -o json`
prints for a GPU inference cluster), plus a small `.meta.json` sidecar the review builder reads.

Nodes: one in ten is a CPU node; the rest are GFD-labelled time-sliced GPU nodes from a few pools
(H100 80GB = 81559 MiB and H200 = 143771 MiB, 1 or 2 GPUs, 4 or 8 replicas; the H200 pools are
tainted). Pods per node: the DaemonSets a GPU node runs (kube-proxy, node-exporter, NVIDIA device
plugin, GPU Feature Discovery, DCGM exporter), GPU tenants up to the node's slots and within its
physical VRAM (Ollama pods declaring models by annotation or by the Helm chart's postStart pull
script, most of them carrying the guard's stamps, the rest created before the guard was installed;
non-Ollama tenants with or without `ollama-guard.io/vram`), then plain CPU pods; a few Ollama pods
are pending (the binding benchmark binds them), a few jobs have completed. Namespaces carry a mix
of policy annotations; VRAM quotas are set above what the namespace holds.

The stamps are written by the guard itself: each distinct pod shape is run through
`webhook.admission.mutation.mutate` and the resulting JSON Patch is applied. Demands used to keep nodes within
their VRAM are the guard's own (`ViewBuilder.tenant_of`). Same seed and size: same bytes.

Usage: `python -m benchmarks.generate --size medium --out FILE.json [--seed 8] [--format json|yaml]`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import objects as ob
from benchmarks.tenants import TenantFactory

GENERATOR_VERSION = 3
DEFAULT_SEED = 8


@dataclass(frozen=True, slots=True)
class ClusterSize:
    name: str
    nodes: int
    pods: int


SIZES = {
    s.name: s
    for s in (
        ClusterSize("tiny", 4, 40),
        ClusterSize("small", 10, 100),
        ClusterSize("medium", 500, 10_000),
        ClusterSize("large", 5_000, 100_000),
    )
}

PROFILES = (
    ob.GpuProfile("h100-1x4", "NVIDIA-H100-80GB-HBM3-SHARED", "hopper", 81559, 1, 4, "p5.4xlarge", False),
    ob.GpuProfile("h100-1x8", "NVIDIA-H100-80GB-HBM3-SHARED", "hopper", 81559, 1, 8, "p5.4xlarge", False),
    ob.GpuProfile("h100-2x4", "NVIDIA-H100-80GB-HBM3-SHARED", "hopper", 81559, 2, 4, "p5.12xlarge", False),
    ob.GpuProfile("h200-1x4", "NVIDIA-H200-SHARED", "hopper", 143771, 1, 4, "p5e.4xlarge", True),
    ob.GpuProfile("h200-2x8", "NVIDIA-H200-SHARED", "hopper", 143771, 2, 8, "p5e.12xlarge", True),
)
#: namespace policies (annotations) and how often each appears among team namespaces
POLICIES: tuple[tuple[dict[str, str], int], ...] = (
    ({}, 50),
    ({"ollama-guard.io/enforcement": "warn"}, 10),
    ({"ollama-guard.io/enforcement": "audit"}, 5),
    ({"ollama-guard.io/enforcement": "off"}, 5),
    ({"ollama-guard.io/context-length": "16384"}, 10),
    ({"ollama-guard.io/max-loaded-models": "2", "ollama-guard.io/num-parallel": "2"}, 5),
    ({"ollama-guard.io/allowed-models": "llama3.*, qwen2.5:*, nomic-embed-text*"}, 15),
)
QUOTA_SHARE = 0.2
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-node-lease", "gpu-operator", "monitoring", "ollama-guard-system")


@dataclass(frozen=True, slots=True)
class Snapshot:
    objects: list[dict[str, Any]]
    meta: dict[str, Any]


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def uid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def suffix(self, n: int = 5) -> str:
        return "".join(self._rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


def generate(size: ClusterSize, *, seed: int = DEFAULT_SEED) -> Snapshot:
    """The objects of one cluster of `size` and the sidecar metadata."""
    rng = random.Random(f"{seed}:{size.nodes}:{size.pods}")
    ids = _Ids(rng)
    teams = [f"team-{i:03d}" for i in range(max(3, size.nodes // 25))]
    policies = {ns: dict(_pick(rng, POLICIES)) for ns in teams}
    factory = TenantFactory(policies=policies, rng=rng, ids=ids)
    nodes, gpu_names = _nodes(size, rng, ids)
    pending = max(4, size.pods // 400)
    budgets = _budgets(size.pods - pending - 4, len(nodes))
    pods: list[dict[str, Any]] = []
    for (node, profile), budget in zip(nodes, budgets, strict=True):
        pods += factory.node_pods(node, profile, budget=budget, teams=teams)
    cpu_nodes = [n["metadata"]["name"] for n, p in nodes if p is None]
    pods += factory.system_pods(cpu_nodes)
    pending_pods = [factory.pending_pod(rng.choice(teams)) for _ in range(pending)]
    pods += [raw for raw, _ in pending_pods]
    annotations = _with_quotas(policies, factory.usage_mib, rng)
    namespaces = [ob.namespace(ns, uid=ids.uid(), annotations=annotations.get(ns, {}))
                  for ns in (*SYSTEM_NAMESPACES, *teams)]
    meta = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "size": size.name,
        "nodes": len(nodes),
        "pods": len(pods),
        "gpu_nodes": gpu_names,
        "free_mib": factory.free_mib,
        "namespaces": annotations,
        "pending": [{"namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"],
                     "uid": p["metadata"]["uid"], "demand_mib": demand} for p, demand in pending_pods],
        "tenants": factory.counts,
    }
    return Snapshot([*namespaces, *(n for n, _ in nodes), *pods], meta)


def _pick(rng: random.Random, table: Sequence[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def _nodes(size: ClusterSize, rng: random.Random, ids: _Ids) -> tuple[list[tuple[dict[str, Any], Any]], list[str]]:
    nodes: list[tuple[dict[str, Any], ob.GpuProfile | None]] = []
    gpu_names: list[str] = []
    for i in range(size.nodes):
        if i % 10 == 9 or (i == size.nodes - 1 and size.nodes < 10):
            nodes.append((ob.cpu_node(f"cpu-{i:05d}", uid=ids.uid(), index=i), None))
            continue
        profile = PROFILES[rng.randrange(len(PROFILES))]
        name = f"gpu-{profile.key}-{i:05d}"
        nodes.append((ob.gpu_node(name, profile=profile, uid=ids.uid(), index=i), profile))
        gpu_names.append(name)
    return nodes, gpu_names


def _budgets(total: int, nodes: int) -> list[int]:
    base, extra = divmod(total, nodes)
    return [base + (1 if i < extra else 0) for i in range(nodes)]


def _with_quotas(policies: dict[str, dict[str, str]], usage: dict[str, int], rng: random.Random) -> dict[str, Any]:
    """Namespace annotations, with a VRAM quota on some namespaces, set above what they already hold."""
    out: dict[str, Any] = {ns: {} for ns in SYSTEM_NAMESPACES}
    for ns, policy in policies.items():
        ann = dict(policy)
        if ann.get("ollama-guard.io/enforcement") != "off" and rng.random() < QUOTA_SHARE:
            quota_gib = math.ceil(usage.get(ns, 0) * 1.5 / 1024) + 128
            ann["ollama-guard.io/vram-quota"] = f"{quota_gib}Gi"
        out[ns] = ann
    return out


def write_snapshot(snapshot: Snapshot, path: Path, *, fmt: str = "json") -> Path:
    """Write the snapshot (a `kind: List`) and its sidecar `<path>.meta.json`; returns the sidecar."""
    document = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": snapshot.objects}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        if fmt == "yaml":
            import yaml

            yaml.dump(document, out, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
        else:
            json.dump(document, out, separators=(",", ":"))
    tmp.replace(path)
    sidecar = meta_path(path)
    sidecar.write_text(json.dumps(snapshot.meta, indent=1, sort_keys=True), encoding="utf-8")
    return sidecar


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--nodes", type=int, help="override the size's node count")
    parser.add_argument("--pods", type=int, help="override the size's pod count")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--format", choices=("json", "yaml"), default="json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    base = SIZES[args.size]
    size = ClusterSize(base.name, args.nodes or base.nodes, args.pods or base.pods)
    snapshot = generate(size, seed=args.seed)
    write_snapshot(snapshot, args.out, fmt=args.format)
    print(f"wrote {args.out}: {snapshot.meta['nodes']} nodes, {snapshot.meta['pods']} pods, "
          f"tenants {snapshot.meta['tenants']}")


if __name__ == "__main__":
    main()
