"""GPU nodes and their VRAM budgets, read from raw Node dicts (design §6).

A node is *guarded* when it is time-sliced (`nvidia.com/gpu.sharing-strategy=time-slicing`,
`nvidia.com/gpu.replicas` > 1) or carries `ollama-guard.io/vram-capacity`. Its capacity is
`nvidia.com/gpu.memory` (MiB per GPU; values above 10,000,000 are bytes, as GFD sometimes
publishes) × `nvidia.com/gpu.count`, unless the annotation overrides it;
`ollama-guard.io/vram-reserved` is held back. MIG nodes without time-slicing are hard
partitioned and not guarded. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.core.quantity import QuantityError, parse_mib, parse_quantity, whole_number
from webhook.core.rawdict import mapping

LABEL_STRATEGY = "nvidia.com/gpu.sharing-strategy"
LABEL_REPLICAS = "nvidia.com/gpu.replicas"
LABEL_MEMORY = "nvidia.com/gpu.memory"
LABEL_COUNT = "nvidia.com/gpu.count"
LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_MIG = "nvidia.com/mig.strategy"
ANN_CAPACITY = "ollama-guard.io/vram-capacity"
ANN_RESERVED = "ollama-guard.io/vram-reserved"
#: the extended resource the guard advertises per node (design §14); same name as tenants.RESOURCE_VRAM
RESOURCE_VRAM = "ollama-guard.io/vram-mib"
BYTES_THRESHOLD = 10_000_000
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True)
class GpuNode:
    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    unschedulable: bool
    gpu_resource: str
    #: schedulable GPU replicas the device plugin advertises (allocatable)
    slots: int
    guarded: bool
    mig: bool
    gpu_count: int
    replicas: int
    gpu_memory_mib: int
    capacity_mib: int
    reserved_mib: int
    product: str
    #: why the budget could not be read (a guarded node with problems admits nothing)
    problems: tuple[str, ...] = ()
    #: `ollama-guard.io/vram-mib` as the node's status shows it now (capacity, allocatable); None: absent
    advertised: tuple[int | None, int | None] = (None, None)

    @property
    def vram_known(self) -> bool:
        """The node's physical VRAM is known (labels or annotation) and every budget input reads."""
        return self.capacity_mib > 0 and not self.problems

    @property
    def budget_mib(self) -> int:
        return max(self.capacity_mib - self.reserved_mib, 0)

    @property
    def even_share_mib(self) -> int:
        """One replica's share of one GPU: the default demand of an undeclared tenant."""
        return self.gpu_memory_mib // max(self.replicas, 1)


def read_node(node: Mapping[str, Any], *, gpu_resources: Sequence[str]) -> GpuNode | None:
    """A GpuNode for a node that advertises a GPU resource or is guarded; None otherwise."""
    meta = mapping(node.get("metadata"))
    labels = {str(k): str(v) for k, v in mapping(meta.get("labels")).items()}
    annotations = {str(k): str(v) for k, v in mapping(meta.get("annotations")).items()}
    status = mapping(node.get("status"))
    allocatable = mapping(status.get("allocatable")) or mapping(status.get("capacity"))
    resource, slots = next(
        ((r, _count(allocatable[r])) for r in gpu_resources if r in allocatable), (gpu_resources[0], 0)
    )
    problems: list[str] = []
    replicas = _label_int(labels, LABEL_REPLICAS, 1, problems)
    time_sliced = labels.get(LABEL_STRATEGY) == "time-slicing" or replicas > 1
    guarded = time_sliced or ANN_CAPACITY in annotations
    mig = labels.get(LABEL_MIG) in ("single", "mixed") and not time_sliced
    if slots == 0 and not guarded and not mig and LABEL_MEMORY not in labels:
        return None
    count = _label_int(labels, LABEL_COUNT, max(slots // max(replicas, 1), 1), problems)
    per_gpu = _gpu_memory_mib(labels, problems)
    capacity = per_gpu * count
    if ANN_CAPACITY in annotations:
        capacity = _annotation_mib(annotations, ANN_CAPACITY, problems)
        per_gpu = per_gpu or capacity // max(count, 1)
    reserved = _annotation_mib(annotations, ANN_RESERVED, problems) if ANN_RESERVED in annotations else 0
    if guarded and capacity == 0 and not problems:
        problems.append(
            f"node {meta.get('name')} is time-sliced but its VRAM is unknown (no {LABEL_MEMORY} label); "
            f"an admin can set the annotation {ANN_CAPACITY}"
        )
    spec = mapping(node.get("spec"))
    return GpuNode(
        name=str(meta.get("name") or ""),
        labels=labels,
        taints=tuple(
            Taint(str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "")))
            for t in spec.get("taints") or []
            if isinstance(t, Mapping)
        ),
        unschedulable=bool(spec.get("unschedulable")),
        gpu_resource=resource,
        slots=slots,
        guarded=guarded,
        mig=mig,
        gpu_count=count,
        replicas=replicas,
        gpu_memory_mib=per_gpu,
        capacity_mib=capacity,
        reserved_mib=reserved,
        product=labels.get(LABEL_PRODUCT, ""),
        problems=tuple(problems),
        advertised=read_advertised(node),
    )


def read_advertised(node: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """`ollama-guard.io/vram-mib` in the node's status (capacity, allocatable), each None when absent.

    kube-apiserver returns quantities in canonical form (`20000` comes back as `20k`): parsed here,
    never compared as text. A value that does not parse reads as absent, so it gets rewritten.
    """
    status = mapping(node.get("status"))
    return _advertised(mapping(status.get("capacity"))), _advertised(mapping(status.get("allocatable")))


def _advertised(section: Mapping[str, Any]) -> int | None:
    value = section.get(RESOURCE_VRAM)
    if value is None:
        return None
    try:
        amount = parse_quantity(str(value))
    except QuantityError:
        return None
    return int(amount) if amount >= 0 and amount == amount.to_integral_value() else None


def _gpu_memory_mib(labels: Mapping[str, str], problems: list[str]) -> int:
    raw = labels.get(LABEL_MEMORY)
    if raw is None:
        return 0
    value = whole_number(raw.strip(), maximum=1 << 60)
    if value is None:
        problems.append(f'label {LABEL_MEMORY}="{raw[:40]}" is not a whole number of MiB')
        return 0
    return value // MIB if value > BYTES_THRESHOLD else value


def _label_int(labels: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    raw = labels.get(name)
    if raw is None:
        return default
    value = whole_number(raw.strip(), minimum=1, maximum=1024)
    if value is not None:
        return value
    problems.append(f'label {name}="{raw[:40]}" is not a whole number from 1 to 1024')
    return default


def _annotation_mib(annotations: Mapping[str, str], name: str, problems: list[str]) -> int:
    try:
        return parse_mib(annotations[name])
    except QuantityError as exc:
        problems.append(f"node annotation {name}: {exc}")
        return 0


def _count(value: object) -> int:
    try:
        amount = parse_quantity(str(value))
    except QuantityError:
        return 0
    return int(amount) if amount >= 0 else 0
