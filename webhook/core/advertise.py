"""What each node should advertise as `ollama-guard.io/vram-mib` (design §14), and what to write.

The figure of a GPU node whose VRAM is known (guarded or not; MIG-only nodes excepted) is
`usable − Σ demand of the GPU tenants bound there that do not request the resource`, with
`usable = physical VRAM − ollama-guard.io/vram-reserved`: tenants that request it are counted by
the scheduler and the kubelet themselves; the others (pods from before the guard, exempt
namespaces) are held back here. On a GPU node whose VRAM is unknown the figure is `UNCONSTRAINED`,
so a VRAM request never makes a pod unschedulable where it could run today. A MIG-only node, and
a node that is no GPU node any more, gets the resource removed (`None`).

`plan_writes` compares those figures with what each node's status shows (capacity *and*
allocatable: the scheduler reads allocatable, the kubelet copies capacity into it at each sync)
and returns only the nodes that differ. Pure: a view in, values out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from webhook.core.inventory import RESOURCE_VRAM, GpuNode
from webhook.core.view import ClusterView

#: 1 PiB in MiB: the figure of a GPU node whose VRAM is unknown, more than any pod can request
UNCONSTRAINED = 1 << 30


@dataclass(frozen=True, slots=True)
class NodeFigure:
    """One node's wanted figure and the arithmetic behind it (for the audit, metrics and logs)."""

    node: str
    #: MiB to advertise; None: the node must not carry the resource
    figure: int | None
    usable_mib: int
    #: MiB held back for tenants the resource does not cover, and their keys
    uncovered_mib: int
    uncovered: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class NodeWrite:
    """A status change for one node: set the resource to `figure`, or remove it (None)."""

    node: str
    figure: int | None
    #: what the node shows now (capacity, allocatable)
    shown: tuple[int | None, int | None]

    def merge_patch(self) -> dict[str, object]:
        """The JSON merge patch (RFC 7386) for `PATCH /api/v1/nodes/{name}/status`."""
        value = None if self.figure is None else str(self.figure)
        return {"status": {"capacity": {RESOURCE_VRAM: value}, "allocatable": {RESOURCE_VRAM: value}}}


def figure_for(node: GpuNode, view: ClusterView) -> NodeFigure:
    """The figure one GPU node of `view` should advertise."""
    if node.mig:
        return NodeFigure(node.name, None, 0, 0, (), "MIG-only: hard-partitioned, not advertised")
    if not node.vram_known:
        return NodeFigure(node.name, UNCONSTRAINED, 0, 0, (), "VRAM unknown: advertised without a limit")
    uncovered = [
        key for key in view.bound.get(node.name, ()) if (t := view.tenants.get(key)) is not None and not t.requested_mib
    ]
    held = sum(view.tenants[key].demand_on(node) for key in uncovered)
    usable = node.budget_mib
    return NodeFigure(node.name, max(usable - held, 0), usable, held, tuple(uncovered), "usable − uncovered tenants")


def figures(view: ClusterView) -> dict[str, NodeFigure]:
    """Every node's wanted figure: GPU nodes of the view, and nodes that still show the resource
    but are no GPU nodes any more (figure None)."""
    wanted = {name: figure_for(node, view) for name, node in view.nodes.items()}
    for name in view.stray_advertised:
        wanted.setdefault(name, NodeFigure(name, None, 0, 0, (), "no longer a GPU node"))
    return wanted


def plan_writes(view: ClusterView, wanted: Mapping[str, NodeFigure] | None = None) -> list[NodeWrite]:
    """The nodes whose status differs from their wanted figure, in name order."""
    wanted = figures(view) if wanted is None else wanted
    writes = []
    for name in sorted(wanted):
        figure = wanted[name].figure
        node = view.nodes.get(name)
        shown = node.advertised if node is not None else (view.stray_advertised.get(name), None)
        if node is None and figure is None and name not in view.stray_advertised:
            continue
        if shown != (figure, figure):
            writes.append(NodeWrite(name, figure, shown))
    return writes
