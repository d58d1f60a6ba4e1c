"""Which GPU nodes a pod could be scheduled on: nodeSelector, required node affinity, taints.

Mirrors the scheduler's filters that matter for the guard (NodeName, NodeSelector /
NodeAffinity `requiredDuringSchedulingIgnoredDuringExecution`, TaintToleration for NoSchedule and
NoExecute, GPU slots); preferred terms never exclude a node. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from webhook.core.inventory import GpuNode, Taint
from webhook.core.rawdict import items, mapping


def candidate_nodes(pod_spec: Mapping[str, Any], nodes: Iterable[GpuNode]) -> list[GpuNode]:
    """GPU nodes that advertise GPU slots and pass the pod's hard scheduling constraints."""
    return list(iter_candidates(pod_spec, nodes))


def iter_candidates(pod_spec: Mapping[str, Any], nodes: Iterable[GpuNode]) -> Iterator[GpuNode]:
    """Lazily, the candidate nodes (callers that only need "is there one that…" stop early)."""
    pinned = str(pod_spec.get("nodeName") or "")
    selector = [(str(k), str(v)) for k, v in mapping(pod_spec.get("nodeSelector")).items()]
    terms = _required_terms(pod_spec)
    tolerations = [_toleration(t) for t in items(pod_spec.get("tolerations")) if isinstance(t, Mapping)]
    for node in nodes:
        if (pinned and node.name != pinned) or node.slots <= 0 or node.unschedulable:
            continue
        if selector and any(node.labels.get(k) != v for k, v in selector):
            continue
        if terms is not None and not any(_term_matches(t, node) for t in terms):
            continue
        if node.taints and not all(
            _tolerated(taint, tolerations) for taint in node.taints if taint.effect in ("NoSchedule", "NoExecute")
        ):
            continue
        yield node


#: a toleration as (key, operator, value, effect), read once per pod
_Toleration = tuple[str, str, str, str]


def _toleration(raw: Mapping[str, Any]) -> _Toleration:
    return (
        str(raw.get("key") or ""),
        str(raw.get("operator") or "Equal"),
        str(raw.get("value") or ""),
        str(raw.get("effect") or ""),
    )


def _tolerated(taint: Taint, tolerations: Sequence[_Toleration]) -> bool:
    """The scheduler's rule: a matching effect (empty: any), then an empty key with Exists matches
    every taint, else the key must match and Exists ignores the value."""
    for key, operator, value, effect in tolerations:
        if effect and effect != taint.effect:
            continue
        if not key and operator == "Exists":
            return True
        if key == taint.key and (operator == "Exists" or value == taint.value):
            return True
    return False


def _required_terms(pod_spec: Mapping[str, Any]) -> Sequence[Mapping[str, Any]] | None:
    affinity = mapping(mapping(pod_spec.get("affinity")).get("nodeAffinity"))
    required = mapping(affinity.get("requiredDuringSchedulingIgnoredDuringExecution"))
    terms = required.get("nodeSelectorTerms")
    return [t for t in terms if isinstance(t, Mapping)] if isinstance(terms, list) else None


def _term_matches(term: Mapping[str, Any], node: GpuNode) -> bool:
    exprs = [e for e in items(term.get("matchExpressions")) if isinstance(e, Mapping)]
    fields = [f for f in items(term.get("matchFields")) if isinstance(f, Mapping)]
    if not exprs and not fields:
        return False  # an empty term matches no objects
    fields_ok = all(_expression(f, {"metadata.name": node.name}) for f in fields)
    return fields_ok and all(_expression(e, node.labels) for e in exprs)


def _expression(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = str(expr.get("key", "")), str(expr.get("operator", ""))
    values = [str(v) for v in items(expr.get("values"))]
    present = key in labels
    value = labels.get(key, "")
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            left, right = int(value), int(values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False
