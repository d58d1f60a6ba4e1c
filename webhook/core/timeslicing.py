"""The time-slicing plan (design §16): how many `replicas` each GPU node class should advertise.

What is planned, and by which rule:

- **Node classes**: GPU nodes grouped by product (GFD's `nvidia.com/gpu.product`, without the
  `-SHARED` suffix GFD appends once a node is time-sliced with `renameByDefault: false`), memory
  per GPU (`nvidia.com/gpu.memory`, MiB) and GPU count. MIG nodes (`nvidia.com/mig.strategy`
  single/mixed) are excluded: the hardware partitions them (design §3), and this plan only
  replicates whole `nvidia.com/gpu` devices. A class whose memory is unknown gets no figure.
- **Which workloads run on a class**: the admission's own candidate logic
  (`scheduling.iter_candidates`: nodeName, nodeSelector, required node affinity, taints and
  tolerations) against the class's nodes, with the transient state that logic also reads set
  aside (a cordoned node, or one whose device plugin advertises no GPU yet, still gets planned).
- **Demands**: `demand.compute_demand` of each workload's pod *after* the guard's mutation (the
  caller passes those facts: `webhook.audit.timeslicing`), per slice = demand ÷ GPUs requested.
  Pods that declare nothing (no models, no `ollama-guard.io/vram`) are not sized: their VRAM is
  unknown until they run, and counting them at "one slice's even share" would be circular.
- **Replicas per GPU** = how many of the smallest such pods one GPU's usable VRAM holds
  (`gpu.memory − ollama-guard.io/vram-reserved ÷ GPUs`), capped at `max_replicas`. One workload
  size: exactly the pods that fit (an 80 GB H100 under 24.5 GiB pods serves 3; a fourth slice only
  admits a pod that can never fit). Several sizes: by the smallest, because a slice is a
  scheduling token, not a VRAM partition: with enough slices for the smallest pods every slice can
  be used, and the guard's `ollama-guard.io/vram-mib` request keeps the larger pods within the
  card (they wait Pending instead of overcommitting it). Sizing by the largest would leave VRAM
  idle behind slices that run out first. The cap (default 16, the top of the seed's table) is
  there because time-slicing divides the GPU's compute between the pods: past it each pod's share
  of the card's time is too thin to serve a model.
- **Nothing sized runs on a class**: the seed's rule of thumb (heavy 7B+ LLMs 2–4, medium 1–7B 4–8,
  light < 1B 8–16), each row within what the card holds of a typical model of the row
  (`llama3.1:8b`, `llama3.2:3b`, `qwen2.5:0.5b` at the cluster defaults); the heavy row is the
  recommendation (the safe side while the models are unknown), and the plan says so.
- One pod per GPU (or none fits): replicas 1, i.e. no `sharing` section at all: the device plugin
  rejects time-slicing replicas below 2 (`api/config/v1/replicas.go`, "number of replicas must be
  >= 2"). The upper bound is `MAX_REPLICAS`, what the guard reads back from
  `nvidia.com/gpu.replicas` (`inventory`).

The arithmetic of one class and the words of its reasons live in `replicas`. Pure: frozen values
in, a frozen `Plan` out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from webhook.core.catalog import Catalog
from webhook.core.demand import compute_demand
from webhook.core.inventory import LABEL_MIG, LABEL_REPLICAS, GpuNode
from webhook.core.policy import ClusterPolicy, NamespacePolicy
from webhook.core.quantity import format_mib
from webhook.core.replicas import (
    DEFAULT_MAX_REPLICAS,
    MAX_REPLICAS,
    MIN_REPLICAS,
    Basis,
    NodeClass,
    Sized,
    recommend,
    unknown_memory,
)
from webhook.core.scheduling import iter_candidates
from webhook.core.tenants import DeclarationError, PodFacts

LABEL_CONFIG = "nvidia.com/device-plugin.config"
SHARED_SUFFIX = "-SHARED"
SHARED_RESOURCE = "nvidia.com/gpu.shared"


@dataclass(frozen=True, slots=True)
class PlanWorkload:
    """One distinct pod shape: a workload's pods (or a bare pod) as the guard would admit them."""

    label: str
    #: the pod spec its candidate nodes are read from (nodeSelector, affinity, tolerations)
    spec: Mapping[str, Any]
    #: the pod's facts after the mutating webhook's edits
    facts: PodFacts
    policy: NamespacePolicy
    copies: int = 1


@dataclass(frozen=True, slots=True)
class ClassPlan:
    node_class: NodeClass
    #: per GPU; None: no figure (the class's memory is unknown)
    replicas: int | None
    basis: Basis
    reasons: tuple[str, ...]
    problems: tuple[str, ...]
    sized: tuple[Sized, ...]
    unsized: tuple[str, ...]
    rename_by_default: bool
    fail_requests_greater_than_one: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SkippedNode:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    classes: tuple[ClassPlan, ...]
    skipped: tuple[SkippedNode, ...]
    #: workload-level problems (unknown models, malformed declarations), each a line
    problems: tuple[str, ...]
    #: workloads no planned node class can run, and why
    unplaced: tuple[str, ...]
    max_replicas: int


def plan_timeslicing(
    nodes: Iterable[GpuNode],
    workloads: Sequence[PlanWorkload],
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
    bound_gpus: Mapping[str, int] | None = None,
) -> Plan:
    """The plan for `nodes` under `workloads` (see the module docstring for every rule)."""
    if not MIN_REPLICAS <= max_replicas <= MAX_REPLICAS:
        raise ValueError(f"max_replicas {max_replicas}: use {MIN_REPLICAS} to {MAX_REPLICAS}")
    classes, skipped = node_classes(nodes)
    demands, problems = resolve_demands(workloads, cluster=cluster, catalog=catalog)
    placed: set[str] = set()
    plans = []
    for node_class in classes:
        here = [(w, sized) for w, sized in demands if runs_on(w, node_class)]
        placed.update(w.label for w, _ in here)
        plans.append(plan_class(node_class, here, cluster=cluster, catalog=catalog, max_replicas=max_replicas,
                                bound_gpus=bound_gpus or {}))
    unplaced = tuple(
        f"{w.label}: no planned GPU node class matches its nodeName, nodeSelector, required affinity and tolerations"
        for w, _ in demands
        if w.label not in placed
    )
    return Plan(tuple(plans), skipped, problems, unplaced, max_replicas)


def node_classes(nodes: Iterable[GpuNode]) -> tuple[list[NodeClass], tuple[SkippedNode, ...]]:
    """Non-MIG GPU nodes grouped by (product, memory per GPU, count), each class named for its config."""
    groups: dict[tuple[str, int, int], list[GpuNode]] = {}
    skipped = []
    for node in sorted(nodes, key=lambda n: n.name):
        if node.labels.get(LABEL_MIG) in ("single", "mixed"):
            strategy = node.labels[LABEL_MIG]
            skipped.append(SkippedNode(node.name, f"MIG ({LABEL_MIG}={strategy}): hard-partitioned, not time-sliced"))
            continue
        groups.setdefault((base_product(node.product), node.gpu_memory_mib, node.gpu_count), []).append(node)
    names = _config_names(list(groups))
    classes = [NodeClass(names[key], key[0], key[1], key[2], tuple(members)) for key, members in groups.items()]
    return sorted(classes, key=lambda c: c.name), tuple(skipped)


def base_product(product: str) -> str:
    return product[: -len(SHARED_SUFFIX)] if product.endswith(SHARED_SUFFIX) else product


def _config_names(keys: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], str]:
    """A config name per class, usable as a ConfigMap key and a label value (≤ 63 characters)."""
    names: dict[tuple[str, int, int], str] = {}
    for product, memory, count in keys:
        slug = re.sub(r"[^a-z0-9]+", "-", product.lower()).strip("-") or "gpu"
        clash = sum(1 for p, _, c in keys if p == product and c == count) > 1
        suffix = f"-{memory}mib-x{count}" if clash or not product else f"-x{count}"
        name = f"{slug[: 63 - len(suffix)].rstrip('-')}{suffix}"
        while name in names.values():  # products that differ only in punctuation, or cut at 63
            name = f"{name[:59]}-{len(names)}"
        names[(product, memory, count)] = name
    return names


def resolve_demands(
    workloads: Sequence[PlanWorkload], *, cluster: ClusterPolicy, catalog: Catalog
) -> tuple[list[tuple[PlanWorkload, Sized | None]], tuple[str, ...]]:
    """Each GPU workload with its pods' demand (None: they declare nothing); problems as lines."""
    out: list[tuple[PlanWorkload, Sized | None]] = []
    problems = []
    for w in workloads:
        facts = w.facts
        if not facts.is_gpu_tenant:
            continue
        try:
            demand = compute_demand(facts, ns=w.policy, cluster=cluster, catalog=catalog)
        except DeclarationError as exc:
            problems.append(f"{w.label}: {exc} (left out of the plan)")
            continue
        if demand.demand_mib is None or demand.source == "default":
            out.append((w, None))
            continue
        out.append((w, Sized(w.label, demand.declaration.models, demand.demand_mib, facts.gpus)))
    return out, tuple(problems)


def runs_on(workload: PlanWorkload, node_class: NodeClass) -> bool:
    """Whether the admission's candidate logic puts any of the class's nodes in reach of the pods."""
    planned = (replace(n, slots=max(n.slots, 1), unschedulable=False) for n in node_class.nodes)
    return next(iter_candidates(workload.spec, planned), None) is not None


def plan_class(
    node_class: NodeClass,
    workloads: Sequence[tuple[PlanWorkload, Sized | None]],
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    max_replicas: int,
    bound_gpus: Mapping[str, int],
) -> ClassPlan:
    sized = tuple(s for _, s in workloads if s is not None)
    unsized = tuple(w.label for w, s in workloads if s is None)
    multi = sorted({w.label for w, _ in workloads if w.facts.gpus > 1})
    problems = [f"node {n.name}: {p}" for n in node_class.nodes for p in n.problems]
    replicas: int | None = None
    basis: Basis = "unknown"
    reasons: tuple[str, ...] = (unknown_memory(node_class),)
    if node_class.gpu_memory_mib > 0 and node_class.usable_mib > 0:
        replicas, basis, reasons, never = recommend(node_class, sized, unsized, cluster=cluster, catalog=catalog,
                                                    max_replicas=max_replicas)
        problems += never
    return ClassPlan(
        node_class=node_class,
        replicas=replicas,
        basis=basis,
        reasons=reasons,
        problems=tuple(problems),
        sized=sized,
        unsized=unsized,
        rename_by_default=any(n.gpu_resource == SHARED_RESOURCE for n in node_class.nodes),
        fail_requests_greater_than_one=not multi,
        notes=_class_notes(node_class, replicas, unsized, multi, bound_gpus),
    )


def _class_notes(
    node_class: NodeClass,
    replicas: int | None,
    unsized: Sequence[str],
    multi: Sequence[str],
    bound_gpus: Mapping[str, int],
) -> tuple[str, ...]:
    notes = []
    if multi:
        notes.append(
            f"failRequestsGreaterThanOne stays off: {', '.join(multi)} request more than one GPU (with "
            "time-slicing such a request may get two slices of the same card)"
        )
    if replicas is not None:
        for node in node_class.nodes:
            slots, bound = replicas * node.gpu_count, bound_gpus.get(node.name, 0)
            if bound > slots:
                notes.append(f"node {node.name} runs {bound} GPU pods now; with {slots} slices the surplus keeps "
                             "running until those pods end, and no new GPU pod is placed there until then")
    if unsized and replicas is not None and replicas > 1:
        notes.append("pods that declare nothing count one slice's even share of a GPU once admitted "
                     f"({format_mib(node_class.gpu_memory_mib // replicas)} here)")
    return tuple(notes)


def current_replicas(node: GpuNode) -> str:
    """The node's `nvidia.com/gpu.replicas` label as GFD shows it ("" when absent)."""
    return node.labels.get(LABEL_REPLICAS, "")
