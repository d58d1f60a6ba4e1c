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

Pure: frozen values in, a frozen `Plan` out; the words of every reason are here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from webhook.core.catalog import Catalog, UnknownModelError
from webhook.core.demand import compute_demand
from webhook.core.estimate import OllamaSettings, estimate_pod
from webhook.core.inventory import ANN_RESERVED, LABEL_MEMORY, LABEL_MIG, LABEL_REPLICAS, GpuNode
from webhook.core.policy import ClusterPolicy, NamespacePolicy
from webhook.core.quantity import format_mib
from webhook.core.scheduling import iter_candidates
from webhook.core.tenants import DeclarationError, PodFacts

LABEL_CONFIG = "nvidia.com/device-plugin.config"
SHARED_SUFFIX = "-SHARED"
SHARED_RESOURCE = "nvidia.com/gpu.shared"
#: api/config/v1/replicas.go (ReplicatedResource.UnmarshalJSON): "number of replicas must be >= 2"
MIN_REPLICAS = 2
#: the most `nvidia.com/gpu.replicas` the guard reads back (inventory._label_int)
MAX_REPLICAS = 1024
DEFAULT_MAX_REPLICAS = 16
Basis = Literal["demand", "seed table", "unknown"]


@dataclass(frozen=True, slots=True)
class SeedRow:
    """One row of the seed's replica table, with the catalog model that stands for it."""

    name: str
    models: str
    low: int
    high: int
    example: str


SEED_TABLE = (
    SeedRow("heavy", "7B+ LLMs", 2, 4, "llama3.1:8b"),
    SeedRow("medium", "1–7B", 4, 8, "llama3.2:3b"),
    SeedRow("light", "< 1B", 8, 16, "qwen2.5:0.5b"),
)
SEED_TEXT = "heavy 7B+ LLMs 2–4, medium 1–7B 4–8, light < 1B 8–16 replicas"


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
class Sized:
    """A workload whose pods' VRAM is known."""

    workload: str
    models: tuple[str, ...]
    demand_mib: int
    gpus: int

    @property
    def per_slice_mib(self) -> int:
        return -(-self.demand_mib // max(self.gpus, 1))

    @property
    def pods(self) -> str:
        """`qwen2.5:32b pods of 24.5 GiB`, or `pods declaring 16.0 GiB` for a workload naming no model."""
        size = format_mib(self.per_slice_mib)
        return f"{', '.join(self.models)} pods of {size}" if self.models else f"pods declaring {size}"


@dataclass(frozen=True, slots=True)
class NodeClass:
    name: str
    product: str
    gpu_memory_mib: int
    gpu_count: int
    nodes: tuple[GpuNode, ...]

    @property
    def reserved_mib(self) -> int:
        """The largest `ollama-guard.io/vram-reserved` of the class: a figure that fits it fits all."""
        return max((n.reserved_mib for n in self.nodes), default=0)

    @property
    def usable_mib(self) -> int:
        """One GPU's VRAM minus its share of the node's reservation."""
        return self.gpu_memory_mib - -(-self.reserved_mib // max(self.gpu_count, 1))

    @property
    def card(self) -> str:
        text = f"{self.product or 'GPU'} ({format_mib(self.gpu_memory_mib)} per GPU"
        if self.reserved_mib:
            text += f", {format_mib(self.usable_mib)} usable after {ANN_RESERVED}"
        return text + ")"


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
    reasons: tuple[str, ...] = (_unknown_memory(node_class),)
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


def _unknown_memory(node_class: NodeClass) -> str:
    names = ", ".join(n.name for n in node_class.nodes)
    if node_class.gpu_memory_mib > 0:
        return (f"{names}: {ANN_RESERVED} holds back all of the GPU's VRAM; no pod can run there, "
                "so no replicas can be recommended")
    return (f"{names}: no usable {LABEL_MEMORY} label, so the card's VRAM is unknown and no replicas can be "
            "computed; GPU Feature Discovery publishes the label (or annotate the node with "
            "ollama-guard.io/vram-capacity)")


def recommend(
    node_class: NodeClass,
    sized: Sequence[Sized],
    unsized: Sequence[str],
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    max_replicas: int,
) -> tuple[int, Basis, tuple[str, ...], list[str]]:
    """(replicas, basis, reasons, problems) for a class whose usable VRAM per GPU is known."""
    usable = node_class.usable_mib
    never = [
        f"{s.workload}: pods of {format_mib(s.per_slice_mib)} per GPU never fit one {node_class.card}: "
        "they cannot run on this class at any replica count"
        for s in sized
        if s.per_slice_mib > usable
    ]
    fitting = sorted((s for s in sized if s.per_slice_mib <= usable), key=lambda s: (-s.per_slice_mib, s.workload))
    if not fitting:
        why = ("no workload that can run here declares models or VRAM" if not sized
               else "no workload that can run here fits one of its GPUs")
        replicas, reasons = seed_replicas(node_class, why, cluster=cluster, catalog=catalog,
                                          max_replicas=max_replicas)
        return replicas, "seed table", reasons, never
    lines = _sizes(fitting, usable)
    lines.append(_verdict(node_class, fitting, max_replicas))
    if unsized:
        lines.append(f"not sized (they declare no models or VRAM): {', '.join(unsized)}")
    smallest = min(fitting, key=lambda s: s.per_slice_mib)
    return min(usable // smallest.per_slice_mib, max_replicas), "demand", tuple(lines), never


def _sizes(fitting: Sequence[Sized], usable: int) -> list[str]:
    """One line per distinct pod size: `qwen2.5:32b pods of 24.5 GiB: 3 fit (deployment ai/qwen)`."""
    lines: dict[tuple[str, int], list[str]] = {}
    for s in fitting:
        lines.setdefault((s.pods, s.per_slice_mib), []).append(s.workload)
    out = []
    for (pods, per_slice), owners in lines.items():
        fit = usable // per_slice
        out.append(f"{pods}: {fit} fit{'s' if fit == 1 else ''} ({', '.join(owners)})")
    return out


def _verdict(node_class: NodeClass, fitting: Sequence[Sized], max_replicas: int) -> str:
    usable, card = node_class.usable_mib, node_class.card
    smallest = min(fitting, key=lambda s: s.per_slice_mib)
    fit = usable // smallest.per_slice_mib
    fits = f"{fit} fit{'s' if fit == 1 else ''}"
    if len({s.per_slice_mib for s in fitting}) == 1:
        head = f"{card} under {smallest.pods}: {fits}"
        spare = "one that no such pod can use"
    else:
        head = (f"{card} runs pods of {len({s.per_slice_mib for s in fitting})} sizes; slices are sized by the "
                f"smallest ({smallest.pods}): {fits}")
        spare = ("one that no pod of these workloads can use; larger pods fill the VRAM with fewer slices, and "
                 "their ollama-guard.io/vram-mib request makes the next one wait Pending rather than overcommit "
                 "the card")
    if fit == 1:
        return (f"{head}; time-slicing would only add slices that no such pod can use, so this class gets no "
                "sharing (the device plugin refuses time-slicing replicas below 2)")
    if fit > max_replicas:
        return (f"{head}; capped at {max_replicas} (--max-replicas): time-slicing divides the GPU's compute "
                "between its pods, and the seed's table stops at 16")
    return f"{head}; {fit + 1} slices would leave {spare}"


def seed_replicas(
    node_class: NodeClass, why: str, *, cluster: ClusterPolicy, catalog: Catalog, max_replicas: int
) -> tuple[int, tuple[str, ...]]:
    """The seed's table on this card: each row within what the card holds of the row's typical model."""
    usable = node_class.usable_mib
    values = []
    for row in SEED_TABLE:
        demand = _typical_demand(row.example, cluster=cluster, catalog=catalog)
        holds = usable // demand if demand else row.high
        value = max(min(row.high, holds, max_replicas), 1)
        pods = "pod" if holds == 1 else "pods"
        held = f"holds {holds} {row.example} {pods} of {format_mib(demand)}" if demand else "typical model unknown"
        values.append((row, value, held))
    heavy, value, held = values[0]
    rows = "; ".join(f"{row.name} → {v} ({h})" for row, v, h in values)
    below = f" (below the row's {heavy.low}: the card {held})" if value < heavy.low else ""
    return value, (
        f"{why}: falling back to the seed's table ({SEED_TEXT})",
        f"on one {node_class.card}: {rows}",
        f"recommending the {heavy.name} row, the safe side while the models are unknown: {value}{below}; declare "
        "the models (ollama-guard.io/models) or the VRAM (ollama-guard.io/vram) for an exact figure",
    )


def _typical_demand(tag: str, *, cluster: ClusterPolicy, catalog: Catalog) -> int:
    """The demand of an Ollama pod serving `tag` at the cluster defaults; 0 when the catalog lacks it."""
    try:
        spec = catalog.resolve(tag)
    except UnknownModelError:
        return 0
    settings = OllamaSettings(
        context_length=cluster.context_length,
        num_parallel=cluster.num_parallel,
        max_loaded_models=cluster.max_loaded_models,
    )
    estimate = estimate_pod([(tag, spec)], settings, cuda_context_overhead_mib=cluster.cuda_context_overhead_mib,
                            safety_margin=cluster.safety_margin)
    return estimate.demand_mib


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
