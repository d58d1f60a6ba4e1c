"""RFC 6902 JSON Patch builders against the raw request object (design §8).

Paths are RFC 6901 pointers (`~` -> `~0`, `/` -> `~1`). Missing parents (`metadata.annotations`,
`env`, `resources`, `resources.limits`) are added as whole objects/lists; an existing list is only
ever appended to (`/-`) or has one item replaced (`/env/3`), never replaced itself. Every builder
emits nothing when the object already holds the wanted value, so a mutation applied to its own
output yields an empty patch. All resource amounts of one container go into one set of ops (never
two `add /resources`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Operation = dict[str, Any]


def escape(token: str) -> str:
    """Escape one JSON Pointer reference token (RFC 6901 §3)."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    return "".join(f"/{escape(str(t))}" for t in tokens)


@dataclass(frozen=True, slots=True)
class ContainerEdit:
    """What to add to one container, addressed by its list and index in the raw object."""

    field: str  # "containers" or "initContainers"
    index: int
    #: (name, value) pairs added when the container has no variable of that name
    env: tuple[tuple[str, str], ...] = ()
    #: (name, value) pairs the container must end up with: added when absent; when present, its last
    #: entry (the one the kubelet uses) is replaced as a whole (a `valueFrom` goes) if it differs
    env_set: tuple[tuple[str, str], ...] = ()
    #: (resource name, whole amount) pairs the container must hold, each in both `limits` and
    #: `requests` (equal, as kube-apiserver requires of extended resources): added when absent,
    #: replaced when different
    resources: tuple[tuple[str, int], ...] = ()


def set_annotations(obj: Mapping[str, Any], values: Mapping[str, str], *, base: str = "") -> list[Operation]:
    """Add or replace annotations; creates `metadata` / `metadata.annotations` when absent."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return [{"op": "add", "path": f"{base}/metadata", "value": {"annotations": dict(values)}}]
    current = meta.get("annotations")
    if not isinstance(current, Mapping):
        return [{"op": "add", "path": f"{base}/metadata/annotations", "value": dict(values)}]
    ops: list[Operation] = []
    for key, value in values.items():
        if current.get(key) == value:
            continue
        op = "replace" if key in current else "add"
        ops.append({"op": op, "path": f"{base}{pointer('metadata', 'annotations', key)}", "value": value})
    return ops


def edit_container(pod_spec: Mapping[str, Any], edit: ContainerEdit, *, base: str = "/spec") -> list[Operation]:
    containers = pod_spec.get(edit.field)
    if not isinstance(containers, list) or not 0 <= edit.index < len(containers):
        return []
    container = containers[edit.index]
    if not isinstance(container, Mapping):
        return []
    path = f"{base}{pointer(edit.field, edit.index)}"
    return [*_add_env(container, edit.env, edit.env_set, path), *_set_resources(container, edit, path)]


def _add_env(
    container: Mapping[str, Any], env: Sequence[tuple[str, str]], env_set: Sequence[tuple[str, str]], path: str
) -> list[Operation]:
    current = container.get("env")
    items = current if isinstance(current, list) else []
    last = {str(e.get("name")): i for i, e in enumerate(items) if isinstance(e, Mapping)}
    wanted = dict(env) | dict(env_set)
    missing = [{"name": name, "value": value} for name, value in wanted.items() if name not in last]
    replaced = [
        {"op": "replace", "path": f"{path}/env/{last[name]}", "value": {"name": name, "value": value}}
        for name, value in env_set
        if name in last and items[last[name]] != {"name": name, "value": value}
    ]
    if not missing:
        return replaced
    if not isinstance(current, list):
        return [{"op": "add", "path": f"{path}/env", "value": missing}]
    return [*({"op": "add", "path": f"{path}/env/-", "value": item} for item in missing), *replaced]


def _set_resources(container: Mapping[str, Any], edit: ContainerEdit, path: str) -> list[Operation]:
    if not edit.resources:
        return []
    wanted = {name: str(amount) for name, amount in edit.resources}
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        return [{"op": "add", "path": f"{path}/resources", "value": {"limits": wanted, "requests": dict(wanted)}}]
    ops: list[Operation] = []
    for section in ("limits", "requests"):
        current = resources.get(section)
        if not isinstance(current, Mapping):
            ops.append({"op": "add", "path": f"{path}/resources/{section}", "value": dict(wanted)})
            continue
        for name, amount in wanted.items():
            if current.get(name) != amount:
                op = "replace" if name in current else "add"
                ops.append({"op": op, "path": f"{path}/resources/{section}/{escape(name)}", "value": amount})
    return ops
