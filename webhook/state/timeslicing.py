"""Putting a time-slicing plan in place through the Kubernetes API (design §16, `--apply`).

The changes are computed elsewhere (`webhook.core.deviceplugin.plan_changes`, which also gives
the `kubectl` line of each); this module reads what they are diffed against, sends them and checks
the outcome, over `api.request_json` (the exact JSON, with the content type it names):

1. `read_current`: the ConfigMap, the ClusterPolicy and the DaemonSets (404 means absent).
2. `apply_changes`: every change first as a server-side dry run (`?dryRun=All`: admission and
   validation run, nothing is stored); the first refusal stops everything with nothing written.
   Then each change for real, in order; the first failure stops, and the outcome says which
   changes were made and which were not.
3. `verify`: each node's `status.allocatable` shows the planned `replicas × GPUs` of its
   resource, polled until `wait` seconds have passed.

Running it again changes nothing: the second diff is empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from webhook.core.deviceplugin import Change, Current, Expectation, Targets
from webhook.core.quantity import QuantityError, parse_quantity
from webhook.state.api import ApiError, request_json

#: what a request can fail with: an API answer outside 2xx, or the transport
FAILURES = (ApiError, OSError, ValueError, urllib3.exceptions.HTTPError)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    lines: tuple[str, ...]


def read_current(api_client: Any, targets: Targets, nodes: Mapping[str, Mapping[str, str]]) -> Current:
    """The objects the changes are diffed against; `nodes`: node -> labels, as just listed."""
    config_map = _get(api_client, f"/api/v1/namespaces/{targets.namespace}/configmaps/{targets.config_map}")
    policy = (_get(api_client, f"/apis/nvidia.com/v1/clusterpolicies/{targets.cluster_policy}")
              if targets.cluster_policy else None)
    daemonsets = frozenset(
        name for name in targets.daemonsets
        if _get(api_client, f"/apis/apps/v1/namespaces/{targets.namespace}/daemonsets/{name}") is not None
    )
    return Current(config_map, policy, nodes, daemonsets)


def _get(api_client: Any, path: str) -> dict[str, Any] | None:
    try:
        return request_json(api_client, "GET", path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def apply_changes(api_client: Any, changes: Sequence[Change]) -> Outcome:
    """Dry run of every change, then the changes; stops at the first failure (module docstring)."""
    for change in changes:
        try:
            _send(api_client, change, dry_run=True)
        except FAILURES as exc:
            return Outcome(False, (f"dry run refused: {change.what}: {_reason(exc)}",
                                   f"nothing was changed ({len(changes)} change(s) not made)"))
    lines = [f"dry run accepted: {len(changes)} change(s)"]
    for i, change in enumerate(changes):
        try:
            _send(api_client, change, dry_run=False)
        except FAILURES as exc:
            lines.append(f"failed: {change.what}: {_reason(exc)}")
            lines += [f"not done: {c.what}" for c in changes[i + 1:]]
            return Outcome(False, tuple(lines))
        lines.append(f"done: {change.what}")
    return Outcome(True, tuple(lines))


def _send(api_client: Any, change: Change, *, dry_run: bool) -> None:
    path = f"{change.path}?dryRun=All" if dry_run else change.path
    request_json(api_client, change.method, path, body=dict(change.body), content_type=change.content_type)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.reason}: {exc.message}".strip()
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def verify(
    api_client: Any,
    expectations: Sequence[Expectation],
    *,
    wait: float,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Whether every node's allocatable shows its planned slices, polled for up to `wait` seconds."""
    deadline = clock() + wait
    while True:
        shown = {e.node: _allocatable(api_client, e) for e in expectations}
        pending = [e for e in expectations if shown[e.node] != str(e.count)]
        if not pending or clock() >= deadline:
            break
        sleep(interval)
    lines = [_verdict(e, shown[e.node], ok=e not in pending) for e in expectations]
    if pending:
        lines.append(f"not verified within {wait:g} s: the device plugin may still be restarting; check again "
                     "with the verify command above")
    return Outcome(not pending, tuple(lines))


def _verdict(expect: Expectation, shown: str, *, ok: bool) -> str:
    mark = "verified" if ok else "not yet"
    return f"{mark}: node {expect.node} allocatable {expect.resource} = {shown or 'absent'} (planned {expect.count})"


def _allocatable(api_client: Any, expect: Expectation) -> str:
    """The node's allocatable count of the resource, canonical ("" when absent or unreadable)."""
    try:
        node = request_json(api_client, "GET", f"/api/v1/nodes/{expect.node}")
    except FAILURES as exc:
        return f"unreadable ({_reason(exc)})"
    value = ((node.get("status") or {}).get("allocatable") or {}).get(expect.resource)
    try:
        return str(int(parse_quantity(str(value)))) if value is not None else ""
    except (QuantityError, ValueError):
        return str(value)


def node_labels(objects: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, str]]:
    """Node name -> labels, from listed Node objects."""
    out: dict[str, Mapping[str, str]] = {}
    for obj in objects:
        if obj.get("kind") == "Node":
            meta = obj.get("metadata") or {}
            out[str(meta.get("name") or "")] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return out
