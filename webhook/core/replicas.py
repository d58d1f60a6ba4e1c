"""How many pods of known VRAM one GPU of a node class holds, and the words that say so (design §16).

The arithmetic and reasons of one class, for `timeslicing` (whose docstring states every rule):
the node class and the sized workloads as values, the recommendation by demand (the smallest pod
that runs there decides, capped), the seed's table when nothing is sized, and the device plugin's
bounds on `replicas`. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from webhook.core.catalog import Catalog, UnknownModelError
from webhook.core.estimate import OllamaSettings, estimate_pod
from webhook.core.inventory import ANN_RESERVED, LABEL_MEMORY, GpuNode
from webhook.core.policy import ClusterPolicy
from webhook.core.quantity import format_mib

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


def unknown_memory(node_class: NodeClass) -> str:
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
        why = _why_unsized(sized, unsized)
        replicas, reasons = seed_replicas(node_class, why, cluster=cluster, catalog=catalog,
                                          max_replicas=max_replicas)
        return replicas, "seed table", reasons, never
    lines = _sizes(fitting, usable)
    lines.append(_verdict(node_class, fitting, max_replicas))
    if unsized:
        lines.append(f"not sized (they declare no models or VRAM): {', '.join(unsized)}")
    smallest = min(fitting, key=lambda s: s.per_slice_mib)
    return min(usable // smallest.per_slice_mib, max_replicas), "demand", tuple(lines), never


def _why_unsized(sized: Sequence[Sized], unsized: Sequence[str]) -> str:
    if sized:
        return "no workload that can run here fits one of its GPUs"
    if unsized:
        return f"no workload that can run here declares models or VRAM ({', '.join(unsized)})"
    return "no GPU workload of the state or the manifests can run here"


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
        flash_attention=cluster.flash_attention,
    )
    estimate = estimate_pod([(tag, spec)], settings, cuda_context_overhead_mib=cluster.cuda_context_overhead_mib,
                            runner_overhead_mib=cluster.runner_overhead_mib, safety_margin=cluster.safety_margin)
    return estimate.demand_mib
