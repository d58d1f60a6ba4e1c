"""Decisions remembered per distinct pod: a workload's replicas are the same pod, so the guard
reads and assesses each distinct pod once (issue 17).

A key holds every input the remembered computation reads: the request fields it looks at (and, in a
namespace with a VRAM quota, the quota figure the pod finds: `validation.remembered_evaluation`), and
the pod object itself serialised whole (orjson, in the order kube-apiserver sent it), less the
fields named in `drop`, which the computation never reads (`managedFields`, `creationTimestamp`)
or reads only to name the pod (`name`, `uid`; the caller puts this request's back). The memo is
tied to the objects the computation reads besides (`owner`, compared by identity: the cluster
policy, the catalog, the view or its namespaces and nodes, which are never changed in place, and
for the whole validation also `Ledger.capacity_token()`) and starts afresh when any of them is
replaced; it holds at most `MAX` entries.
The same `Memo` also holds the answer to a binding that does not fit (`validation._over_commit`), keyed by
everything that answer reads (the enforcement mode, the tenant, the node, the fit's figures).
Errors are not remembered. Pure bookkeeping: no I/O.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import orjson

Value = TypeVar("Value")

#: metadata fields no remembered computation reads
UNREAD = frozenset({"managedFields", "creationTimestamp"})
#: metadata fields read only to name the pod (the caller re-reads them from each request)
IDENTITY = frozenset({"name", "uid"})
#: what a replica's key leaves out
UNREAD_OR_IDENTITY = UNREAD | IDENTITY


def content_key(raw: Mapping[str, Any], *, drop: frozenset[str], finite: bool = False) -> bytes | None:
    """The pod object as bytes, less the metadata fields in `drop`; None (not remembered) when the
    bytes could not tell it from another object: orjson refuses it (an integer beyond 64 bits, a
    key that is not a string) or it holds an infinite or NaN float, which orjson writes as null.
    `finite`: the caller knows there is none (the object was decoded by orjson, which refuses NaN
    and Infinity: what the webhook receives), so the bytes are not searched for them; objects
    read from YAML or by the standard library's `json` may hold them."""
    meta = raw.get("metadata")
    if isinstance(meta, dict) and not drop.isdisjoint(meta):
        raw = {**raw, "metadata": {k: v for k, v in meta.items() if k not in drop}}
    try:
        data = orjson.dumps(raw)
    except TypeError:
        return None
    if not finite and (b":null" in data or b"[null" in data or b",null" in data) and _non_finite(raw):
        return None
    return data


def _non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


class Memo(Generic[Value]):
    """A bounded dict tied to its owner: `get(owner, key, compute)`."""

    MAX = 1024

    def __init__(self) -> None:
        self._owner: tuple[object, ...] = ()
        self._items: dict[tuple[object, ...], Value] = {}

    def get(
        self,
        owner: tuple[object, ...],
        key: tuple[object, ...] | None,
        compute: Callable[[], Value],
        keep: Callable[[Value], bool] | None = None,
    ) -> Value:
        """The remembered value for `key`, else `compute()`'s, remembered unless `keep` says no (a
        value that would be wrong for another replica); no key: always computed."""
        if key is None:
            return compute()
        mine = self._owner
        if len(mine) != len(owner) or any(map(operator.is_not, mine, owner)):  # identity, element by element
            self._owner, self._items = owner, {}
        found = self._items.get(key)
        if found is None:
            found = compute()  # an exception propagates and nothing is remembered
            if keep is not None and not keep(found):
                return found
            if len(self._items) >= self.MAX:
                self._items.clear()
            self._items[key] = found
        return found
