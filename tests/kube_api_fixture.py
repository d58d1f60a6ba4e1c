"""A small Kubernetes API server on loopback (test helper): list + watch of Nodes, Pods, Namespaces,
Deployments and StatefulSets.

It speaks the real wire format that `kube-apiserver` uses for the collections the `kubernetes`
client calls (`/api/v1/nodes`, `/api/v1/pods`, `/api/v1/namespaces`, `/apis/apps/v1/deployments`,
`/apis/apps/v1/statefulsets`):

- list: `{"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "12"},
  "items": [...]}` with items lacking kind/apiVersion; `limit` + `continue` paginate over a
  consistent snapshot (a continue token of a compacted snapshot gets HTTP 410).
- `?watch=true|1`: HTTP 200, `Transfer-Encoding: chunked`, one JSON event per line
  (`{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": {...}}`) for changes after the
  requested resourceVersion; `timeoutSeconds` ends the stream cleanly; BOOKMARKs only with
  `allowWatchBookmarks=true`; a resourceVersion older than the retained history gets an ERROR
  event carrying a `410 Expired` Status, then the stream ends.

Single objects, for a node VRAM advertiser (behaviour recorded from kube-apiserver 1.24 in
`../shared/fixtures/kube-apiserver-1.24/extended-resources/`):

- `GET /api/v1/nodes/{name}` (and `.../status`); `PATCH /api/v1/nodes/{name}/status` with a JSON
  merge patch (`application/merge-patch+json`, RFC 7386: `null` deletes), a strategic merge patch
  (`application/strategic-merge-patch+json`: what the `kubernetes` client sends for a dict body;
  maps merge as in a merge patch, `status.conditions`/`addresses` merge by `type`) or a JSON patch
  (`application/json-patch+json`, RFC 6902: what the client sends for a list body). The status
  subresource keeps `spec`; `PATCH /api/v1/nodes/{name}` keeps `status`. 200 with the whole Node,
  a new resourceVersion and a MODIFIED event; a patch that changes nothing keeps the
  resourceVersion and emits nothing (as etcd's no-op update does); `metadata.resourceVersion` in a
  patch is a precondition (409). Quantities in `status.capacity` / `status.allocatable` come back
  in Kubernetes' canonical form (`"20000"` is `"20k"`, see `canonical_quantity`) and are validated
  (non-negative; whole numbers for extended resources: 422 like the real one).
- Leases, `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]`: POST (201, 409
  AlreadyExists), GET (200, 404), PUT (200 when `metadata.resourceVersion` is the stored one, 409
  Conflict when stale, 422 when missing: Lease has no unconditional update; 201 when absent: Lease
  allows create on update), DELETE (200 Status, `preconditions` honoured); no Lease list/watch.
  `acquireTime` / `renewTime` are MicroTimes: exactly six fractional digits or 400, returned in UTC
  (`...Z`); note that the `kubernetes` client writes a whole-second datetime without a fraction.
- `?dryRun=All` answers without storing. Errors are `meta/v1 Status` bodies in the real shapes.
- ConfigMaps, `/api/v1/namespaces/{ns}/configmaps[/{name}]`: POST (201, 409 AlreadyExists, 404 when
  the namespace is not stored), GET (200, 404), PATCH (merge, strategic or JSON patch; 404 when
  absent); a PATCH of a custom object takes a merge or JSON patch (415 for a strategic merge patch,
  as for any custom resource); both honour `?dryRun=All`.
- Custom resources, for the CRDs a test declares with `serve_crd` (no recording of these: modelled on
  kube-apiserver's documented behaviour for CRDs without subresources):
  `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}]` answer POST (201, 409
  AlreadyExists), GET (200, 404; a collection lists, cluster-wide for namespaced kinds too, with
  `labelSelector` equality terms), PUT (200 at the stored `metadata.resourceVersion`, 409 when
  stale, 422 when missing, 404 when absent: no create on update) and DELETE (200, the deleted
  object; no finalizers, no graceful deletion). Objects keep their apiVersion and kind, as custom
  objects do; bodies are stored verbatim (no schema pruning: tests check what is stored against the
  CRD schema). A group no CRD serves gets the server's plain 404. `GET /apis` is the discovery
  `APIGroupList` (the legacy, non-aggregated form a client gets for `Accept: application/json`):
  apps, coordination.k8s.io and the CRDs' groups.

Test controls: `add`, `modify`, `delete`, `bookmark`, `compact`, `drop_connections` (abrupt
close of open watch streams), `stop_listening` / `start_listening` / `outage` (connection refused
on the same port, every open connection cut, state kept), `hold_watches` (watch requests wait while held), `set_failure`
(answer a kind's lists or watches, or `"nodes"`, `"nodes/status"`, `"leases"`,
`"leases:<verb>"`, a CRD's `"<plural>"` / `"<plural>:<verb>"` (verb `list` for collections) or
`"discovery"` calls, with an HTTP error Status), `serve_crd`, `add_custom` and `custom` (stored
custom objects), `open_watches`, `requests` (every request's
method, path, query, content type and body, with its arrival time), `node` / `lease` (the stored
object), and the kubelet's own writes: `kubelet_sync` (allocatable follows capacity) and
`kubelet_recreate_zero` (a re-created node zeroes its extended resources). `add` / `modify` store
objects verbatim (seed canonical quantities). One global, monotonically increasing
resourceVersion.
`set_failure(..., after=N)` answers the first N matching requests normally (a failure mid-way);
`config_map(ns, name)` is the stored ConfigMap; `"configmaps"` / `"configmaps:<verb>"` fail its calls.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import queue
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PATHS = {
    "/api/v1/nodes": "Node",
    "/api/v1/pods": "Pod",
    "/api/v1/namespaces": "Namespace",
    "/apis/apps/v1/deployments": "Deployment",
    "/apis/apps/v1/statefulsets": "StatefulSet",
}
API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1",
                "Lease": "coordination.k8s.io/v1"}  # the rest: "v1"
KINDS = (*PATHS.values(), "Lease", "ConfigMap")  # what the fixture stores (Leases, ConfigMaps: single objects)
_DEFAULT_WATCH_SECONDS = 1800.0
_DROP = object()


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server saw it (`body`: the parsed JSON, or the text when not JSON)."""

    kind: str | None
    path: str
    query: dict[str, str]
    at: float  # time.monotonic() on arrival
    method: str = "GET"
    body: Any = None
    content_type: str | None = None

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass(slots=True)
class _Watcher:
    kind: str
    bookmarks: bool
    sock: socket.socket
    events: queue.Queue[Any] = field(default_factory=queue.Queue)


@dataclass(frozen=True, slots=True)
class _Crd:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def object_key(obj: dict[str, Any]) -> str:
    """`namespace/name` for namespaced objects, `name` for cluster-scoped ones."""
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


def status_body(code: int, reason: str, message: str,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `meta/v1 Status` failure as the API server writes it."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


# --- quantities (k8s.io/apimachinery/pkg/api/resource, v1.24) ------------------------------------

_QUANTITY_PATTERN = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
ERR_FORMAT_WRONG = f"quantities must match the regular expression '{_QUANTITY_PATTERN}'"
ERR_NUMERIC = "unable to parse numeric part of quantity"
ERR_SUFFIX = "unable to parse quantity's suffix"
_DECIMAL_SUFFIXES = {"": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_BY_EXPONENT = {e: s for s, e in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_POWER = {e // 10: s for s, e in _BINARY_SUFFIXES.items()}  # by power of 1024
_MAX_INT64 = 2**63 - 1
_NANO = 10**9
_INTEGER_RESOURCES = frozenset({"pods", "services", "replicationcontrollers", "resourcequotas", "secrets",
                                "configmaps", "persistentvolumeclaims", "services.nodeports",
                                "services.loadbalancers"})


class QuantityError(ValueError):
    """A string kube-apiserver would not accept as a `resource.Quantity` (the Go error text)."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """A parsed `resource.Quantity`: exact value, format, and what Go's parser kept.

    `cached` is the input string when Go's fast path judged it canonical and kept it (it is then
    serialised verbatim); `int64` is the fast path's `(value, scale)`, None for the inf.Dec path.
    """

    value: Fraction
    format: str  # "DecimalSI" | "BinarySI" | "DecimalExponent"
    cached: str | None = None
    int64: tuple[int, int] | None = None

    def __str__(self) -> str:
        return self.cached if self.cached else format_quantity(self.value, self.format)

    def go_repr(self) -> str:
        """`%#v` of the Go value, as validation messages print it (v1.24 struct layout)."""
        value, scale = self.int64 or (0, 0)
        dec = "(*inf.Dec)(nil)" if self.int64 is not None else "(*inf.Dec)(0xc000000000)"
        return (f"resource.Quantity{{i:resource.int64Amount{{value:{value}, scale:{scale}}}, "
                f"d:resource.infDecAmount{{Dec:{dec}}}, s:{json.dumps(self.cached or '')}, "
                f"Format:{json.dumps(self.format)}}}")


def _scan_quantity(text: str) -> tuple[bool, str, str, str, str]:
    """Port of Go's `parseQuantityString`: (positive, value, num, denom, suffix)."""
    positive, pos, end = True, 0, len(text)
    if text[0] in "+-":
        positive, pos = text[0] != "-", 1
    while pos < end and text[pos] == "0":  # leading zeros
        pos += 1
    if pos >= end:
        return positive, "0", "0", "", ""
    start = pos
    while pos < end and text[pos].isdigit():
        pos += 1
    num = text[start:pos] or "0"
    if pos >= end:
        return positive, text, num, "", ""
    denom = ""
    if text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos].isdigit():
            pos += 1
        denom = text[start:pos]
        if pos >= end:
            return positive, text, num, denom, ""
    value, suffix_start = text[:pos], pos
    while pos < end and text[pos] in "eEinumkKMGTP":
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos].isdigit():
        pos += 1
    if pos < end:
        raise QuantityError(ERR_FORMAT_WRONG)
    return positive, value, num, denom, text[suffix_start:]


def _interpret_suffix(suffix: str) -> tuple[int, int, str]:
    """(base, exponent, format) of a suffix, as Go's `quantitySuffixer.interpret`."""
    if suffix in _DECIMAL_SUFFIXES:
        return 10, _DECIMAL_SUFFIXES[suffix], "DecimalSI"
    if suffix in _BINARY_SUFFIXES:
        return 2, _BINARY_SUFFIXES[suffix], "BinarySI"
    if len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        return 10, int(suffix[1:]), "DecimalExponent"
    raise QuantityError(ERR_SUFFIX)


def parse_quantity(text: str) -> Quantity:
    """Parse like Go's `resource.ParseQuantity` (after `UnmarshalJSON`'s TrimSpace).

    Values are exact; non-zero values finer than 1n are rounded up (away from zero) to 1n; BinarySI
    values are capped at 2^63-1, and BinarySI values strictly between 0 and 1 become DecimalSI.
    Raises QuantityError with Go's message for what Go rejects.
    """
    text = text.strip()
    if not text:
        raise QuantityError(ERR_FORMAT_WRONG)
    if text == "0":
        return Quantity(Fraction(0), "DecimalSI", "0", (0, 0))
    positive, value, num, denom, suffix = _scan_quantity(text)
    base, exponent, fmt = _interpret_suffix(suffix)
    fast = _parse_fast(text, positive, num, denom, exponent, fmt)
    if fast is not None:
        return fast
    try:
        amount = Fraction(Decimal(value))
    except (InvalidOperation, ValueError) as exc:
        raise QuantityError(ERR_NUMERIC) from exc
    amount *= Fraction(base) ** exponent
    sign, amount = (-1 if amount < 0 else 1), abs(amount)
    amount = Fraction(math.ceil(amount * _NANO), _NANO)  # RoundUp to nano
    if fmt == "BinarySI" and amount > _MAX_INT64:
        amount = Fraction(_MAX_INT64)
    if fmt == "BinarySI" and 0 < amount < 1:
        fmt = "DecimalSI"
    return Quantity(sign * amount, fmt)


def _parse_fast(text: str, positive: bool, num: str, denom: str, exponent: int, fmt: str) -> Quantity | None:
    """Go's int64 fast path of ParseQuantity (None: use the inf.Dec path)."""
    mantissa = 1
    if fmt == "BinarySI":
        if exponent < 0 or denom:
            return None
        scale, mantissa = 0, 1 << exponent
        precision = 15 - len(num) - int(exponent * 3 / 10) - 1
    else:
        scale, precision = exponent, 18 - (len(num) + len(denom))
    scale -= len(denom)
    if precision < 0 or scale < -9:
        return None
    shifted = num + denom
    parsed = int(shifted)
    result = parsed * mantissa
    if result > _MAX_INT64:
        return None
    result = result if positive else -result
    if fmt == "BinarySI":
        keep = exponent % 10 == 0 and parsed & 0x07 != 0
    else:
        keep = scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"
    return Quantity(result * Fraction(10) ** scale, fmt, text if keep else None, (result, scale))


def format_quantity(value: Fraction, fmt: str = "DecimalSI") -> str:
    """Go's `Quantity.CanonicalizeBytes`: the canonical string of `value` in format `fmt`.

    - zero is "0";
    - BinarySI: the largest power-of-1024 suffix (Ki..Ei) that divides the value, when the value is
      a whole number of magnitude >= 1024; otherwise it is written as DecimalSI;
    - DecimalSI: mantissa * 10^e with no fractional digits and e the largest multiple of 3 that
      loses nothing, written with n/u/m/""/k/M/G/T/P/E (20000 -> "20k", 81559 -> "81559",
      1.5 -> "1500m"); DecimalExponent writes e as "e<e>" instead ("12e6").

    One deliberate difference from v1.24: a DecimalSI exponent above 18 (1e21 and up) is written in
    exponent form, where v1.24 dropped the suffix (fixed upstream since).
    """
    if value == 0:
        return "0"
    sign, magnitude = ("-" if value < 0 else ""), abs(value)
    if fmt == "BinarySI" and magnitude >= 1024 and magnitude.denominator == 1:
        amount, power = int(magnitude), 0
        while amount % 1024 == 0 and power < 6:
            amount, power = amount // 1024, power + 1
        return f"{sign}{amount}{_BINARY_BY_POWER.get(power, '')}"
    fmt = "DecimalSI" if fmt == "BinarySI" else fmt
    amount, exponent = math.ceil(magnitude * _NANO), -9  # values are multiples of 1n
    while amount % 10 == 0:
        amount, exponent = amount // 10, exponent + 1
    down = exponent % 3
    amount, exponent = amount * 10**down, exponent - down
    if fmt == "DecimalSI" and exponent in _DECIMAL_BY_EXPONENT:
        suffix = _DECIMAL_BY_EXPONENT[exponent]
    else:
        suffix = f"e{exponent}" if exponent else ""
    return f"{sign}{amount}{suffix}"


def canonical_quantity(text: str) -> str:
    """What kube-apiserver returns for a quantity written as `text` (GET, list, watch, PATCH).

    A whole number n gets the largest decimal SI suffix that divides it exactly ("20000" -> "20k",
    "1000000" -> "1M", "81559" stays), binary values keep their binary form canonicalised
    ("1024Ki" -> "1Mi", "1.5Gi" -> "1536Mi"), fractions go to milli/micro/nano ("1.5" ->
    "1500m"), and "0" stays "0". As in Go, a string the fast parser already finds canonical is kept
    verbatim (so "+5" and "05" come back as sent). Raises QuantityError for what Go rejects.
    """
    return str(parse_quantity(text))


def is_extended_resource(name: str) -> bool:
    """Go's `IsExtendedResourceName`: a qualified name outside `kubernetes.io/`, not `requests.*`."""
    if "/" not in name or "kubernetes.io/" in name or name.startswith("requests."):
        return False
    prefix, _, rest = name.partition("/")
    return bool(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", prefix)
                and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", rest)
                and len(rest) <= 63 and len(prefix) <= 253)


def _quantity_text(value: Any) -> str:
    """The text Go's `Quantity.UnmarshalJSON` parses for a JSON value."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    raise QuantityError(ERR_FORMAT_WRONG)


# --- patches -------------------------------------------------------------------------------------

_MERGE_KEYS = {("status", "conditions"): "type", ("status", "addresses"): "type",
               ("status", "volumesAttached"): "name", ("metadata", "ownerReferences"): "uid"}
_MERGE_PRIMITIVE_LISTS = {("metadata", "finalizers")}


class _PatchError(ValueError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """A strategic merge patch for Node-shaped objects: maps as RFC 7386; lists with a merge key
    (`status.conditions` / `addresses` by `type`, ...) merge by it; other lists are replaced;
    `$patch: replace|delete`, `$retainKeys`, `$deleteFromPrimitiveList/` and `$setElementOrder/`
    are honoured (the last one by ignoring it). None means "delete this map"."""
    if not isinstance(patch, dict):
        raise _PatchError(400, "strategic merge patch: expected a JSON object")
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        sub = (*path, key)
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [x for x in result.get(name) or [] if x not in value]
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, sub)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in _MERGE_KEYS:
            result[key] = _merge_keyed_list(result.get(key) or [], value, _MERGE_KEYS[sub], sub)
        elif isinstance(value, list) and sub in _MERGE_PRIMITIVE_LISTS:
            current = list(result.get(key) or [])
            result[key] = current + [x for x in value if x not in current]
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str, path: tuple[str, ...]) -> list[Any]:
    out = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise _PatchError(400, f"map: {item} does not contain declared merge key: {key}")
        at = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
        elif at is None:
            out.append(strategic_merge_patch({}, item, path))
        else:
            out[at] = strategic_merge_patch(out[at], item, path)
    return out


_JSON_PATCH_REJECTED = "the server rejected our request due to an error in our request"


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test) with RFC 6901 pointers (`~1` is `/`)."""
    if not isinstance(operations, list):
        raise _PatchError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(document)
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise _PatchError(422, _JSON_PATCH_REJECTED)
        kind = op.get("op")
        if kind == "test":
            if _pointer_get(doc, op["path"]) != op.get("value"):
                raise _PatchError(422, _JSON_PATCH_REJECTED)
        elif kind == "remove":
            _pointer_remove(doc, op["path"])
        elif kind == "add":
            doc = _pointer_add(doc, op["path"], copy.deepcopy(op.get("value")))
        elif kind == "replace":
            _pointer_get(doc, op["path"])  # must exist
            if op["path"] == "":
                doc = copy.deepcopy(op.get("value"))
            else:
                _pointer_remove(doc, op["path"])
                doc = _pointer_add(doc, op["path"], copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy") and isinstance(op.get("from"), str):
            value = copy.deepcopy(_pointer_get(doc, op["from"]))
            if kind == "move":
                _pointer_remove(doc, op["from"])
            doc = _pointer_add(doc, op["path"], value)
        else:
            raise _PatchError(422, _JSON_PATCH_REJECTED)
    return doc


def _pointer_tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _PatchError(422, _JSON_PATCH_REJECTED)
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _step(node: Any, token: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    raise _PatchError(422, _JSON_PATCH_REJECTED)


def _pointer_get(doc: Any, pointer: str) -> Any:
    node = doc
    for token in _pointer_tokens(pointer):
        node = _step(node, token)
    return node


def _pointer_remove(doc: Any, pointer: str) -> None:
    *parents, last = _pointer_tokens(pointer) or [""]
    parent = doc
    for token in parents:
        parent = _step(parent, token)
    _step(parent, last)  # must exist
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]


def _pointer_add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _pointer_tokens(pointer)
    if not tokens:
        return value
    parent = doc
    for token in tokens[:-1]:
        parent = _step(parent, token)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and (last == "-" or (last.isdigit() and int(last) <= len(parent))):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        raise _PatchError(422, _JSON_PATCH_REJECTED)
    return doc


# --- API errors ----------------------------------------------------------------------------------

_RESOURCES = {"Node": ("", "nodes"), "Lease": ("coordination.k8s.io", "leases"), "ConfigMap": ("", "configmaps")}
_OPTIMISTIC_LOCK = "the object has been modified; please apply your changes to the latest version and try again"
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml")
_MICRO_TIME = "2006-01-02T15:04:05.000000Z07:00"
_MICRO_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})")
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


class _ApiError(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.body = body


def _details(kind: str, name: str, **extra: Any) -> dict[str, Any]:
    group, resource = _RESOURCES[kind]
    return {"name": name, **({"group": group} if group else {}), "kind": resource, **extra}


def _qualified(kind: str) -> str:
    group, resource = _RESOURCES[kind]
    return f"{resource}.{group}" if group else resource


def _not_found(kind: str, name: str) -> _ApiError:
    return _ApiError(status_body(404, "NotFound", f'{_qualified(kind)} "{name}" not found', _details(kind, name)))


def _conflict(kind: str, name: str, why: str = _OPTIMISTIC_LOCK) -> _ApiError:
    return _ApiError(status_body(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(kind)} "{name}": '
                                 f"{why}", _details(kind, name)))


def _bad_request(message: str) -> _ApiError:
    return _ApiError(status_body(400, "BadRequest", message))


@dataclass(frozen=True, slots=True)
class _FieldError:
    field: str
    detail: str
    value: str | None = None  # already rendered as Go prints it; None: a Required error

    def __str__(self) -> str:
        return f"{self.field}: {self.cause}"

    @property
    def cause(self) -> str:
        return f"Required value: {self.detail}" if self.value is None else f"Invalid value: {self.value}: {self.detail}"


def _invalid(group_kind: tuple[str, str], name: str, errors: list[_FieldError]) -> _ApiError:
    """Go's `errors.NewInvalid(GroupKind, name, errs)`."""
    group, kind = group_kind
    qualified = f"{kind}.{group}" if group else kind
    aggregate = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    causes = [{"reason": "FieldValueRequired" if e.value is None else "FieldValueInvalid",
               "message": e.cause, "field": e.field} for e in errors]
    details = {**({"name": name} if name else {}), **({"group": group} if group else {}),
               **({"kind": kind} if kind else {}), "causes": causes}
    return _ApiError(status_body(422, "Invalid", f"{qualified} {json.dumps(name)} is invalid: {aggregate}", details))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_kind(kind: str, stored: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": API_VERSIONS.get(kind, "v1"), **copy.deepcopy(stored)}


class KubeApiFixture:
    """The server and its state; use as a context manager or call `start()` / `close()`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rv = 1
        self._compacted_rv = 0
        self._objects: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self._history: list[tuple[int, str, dict[str, Any]]] = []  # (rv, kind, event)
        self._snapshots: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._watchers: list[_Watcher] = []
        self._failures: dict[tuple[str, bool], tuple[int, int | None]] = {}
        self._failure_skips: dict[tuple[str, bool], int] = {}  # requests to answer before failing
        self._held = False
        self._requests: list[RecordedRequest] = []
        self._sockets: set[socket.socket] = set()  # open client connections (cut by `stop_listening`)
        self._listening = True
        self._crds: dict[tuple[str, str, str], _Crd] = {}  # (group, version, plural)
        self._custom: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}  # same key -> objects by key
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.api = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def start(self) -> KubeApiFixture:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()
        self.drop_connections()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> KubeApiFixture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- test controls -------------------------------------------------------------------------
    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create `obj` (which names its `kind`); returns the stored object (with RV and uid)."""
        kind, stored = _split_kind(obj)
        stored["metadata"].setdefault("uid", str(uuid.uuid4()))
        stored["metadata"].setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
        with self._cond:
            if object_key(stored) in self._objects[kind]:
                raise ValueError(f"{kind} {object_key(stored)} already exists")
            return self._change(kind, "ADDED", stored)

    def modify(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind, stored = _split_kind(obj)
        with self._cond:
            old = self._objects[kind][object_key(stored)]  # KeyError when absent, as a 404
            stored["metadata"].setdefault("uid", old["metadata"]["uid"])
            return self._change(kind, "MODIFIED", stored)

    def delete(self, kind: str, key: str) -> dict[str, Any]:
        with self._cond:
            return self._change(kind, "DELETED", copy.deepcopy(self._objects[kind][key]))

    def node(self, name: str) -> dict[str, Any] | None:
        """The stored Node as `GET /api/v1/nodes/{name}` returns it (a deep copy), or None."""
        with self._cond:
            stored = self._objects["Node"].get(name)
            return _with_kind("Node", stored) if stored is not None else None

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored ConfigMap as a GET returns it (a deep copy), or None."""
        with self._cond:
            stored = self._objects["ConfigMap"].get(f"{namespace}/{name}")
            return _with_kind("ConfigMap", stored) if stored is not None else None

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored Lease as a GET returns it (a deep copy), or None."""
        with self._cond:
            stored = self._objects["Lease"].get(f"{namespace}/{name}")
            return _with_kind("Lease", stored) if stored is not None else None

    def kubelet_sync(self, name: str, *, reserved: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The kubelet's node status sync (v1.24 `MachineInfo` setter) on node `name`.

        `allocatable[r] = capacity[r] - reserved[r]` (never below 0) for every resource in capacity,
        extended ones included; extended resources in allocatable but not in capacity are dropped.
        `reserved` (default: none) stands for the kubelet's own reservations (cpu, memory...).
        A change emits MODIFIED (an unchanged node keeps its resourceVersion). Returns the Node;
        KeyError when there is none.
        """
        reserved = reserved or {}
        with self._cond:
            current = self._objects["Node"][name]
            new = copy.deepcopy(current)
            status = new.setdefault("status", {})
            capacity = status.get("capacity") or {}
            allocatable = {k: v for k, v in (status.get("allocatable") or {}).items()
                           if k in capacity or not is_extended_resource(k)}
            for resource, value in capacity.items():
                if resource not in reserved:
                    allocatable[resource] = value
                    continue
                quantity = parse_quantity(value)
                left = max(quantity.value - parse_quantity(reserved[resource]).value, Fraction(0))
                allocatable[resource] = format_quantity(left, quantity.format)
            status["allocatable"] = allocatable
            return _with_kind("Node", self._commit("Node", current, new, dry_run=False))

    def kubelet_recreate_zero(self, name: str) -> dict[str, Any]:
        """The kubelet on a re-created node (v1.24 `reconcileExtendedResource`): every extended
        resource in capacity (`nvidia.com/gpu`, `ollama-guard.io/vram-mib`, ...: a `/`-qualified
        name outside `kubernetes.io/`) is set to "0" in capacity and allocatable; cpu, memory,
        pods, ephemeral-storage and hugepages-* are kept. A change emits MODIFIED. Returns the Node;
        KeyError when there is none.
        """
        with self._cond:
            current = self._objects["Node"][name]
            new = copy.deepcopy(current)
            status = new.setdefault("status", {})
            capacity = status.setdefault("capacity", {})
            allocatable = status.setdefault("allocatable", {})
            for resource in capacity:
                if is_extended_resource(resource):
                    capacity[resource] = allocatable[resource] = "0"
            return _with_kind("Node", self._commit("Node", current, new, dry_run=False))

    def bookmark(self, kind: str) -> int:
        """Send a BOOKMARK at the current RV to the open watches of `kind` that allow them."""
        with self._cond:
            version = API_VERSIONS.get(kind, "v1")
            event = {"type": "BOOKMARK", "object": {
                "kind": kind, "apiVersion": version, "metadata": {"resourceVersion": str(self._rv)}}}
            for watcher in self._watchers:
                if watcher.kind == kind and watcher.bookmarks:
                    watcher.events.put(event)
            return self._rv

    def compact(self) -> int:
        """Forget history and list snapshots: watches from an older RV get `410 Expired`."""
        with self._cond:
            self._history.clear()
            self._snapshots.clear()
            self._compacted_rv = self._rv
            return self._rv

    def drop_connections(self) -> int:
        """Close every open watch stream abruptly (no final chunk); returns how many."""
        with self._cond:
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.events.put(_DROP)
            with suppress(OSError):
                watcher.sock.shutdown(socket.SHUT_RDWR)
        return len(watchers)

    def stop_listening(self) -> None:
        """An API server outage: the port refuses connections and every open connection is cut (watch
        streams end abruptly, keep-alive connections close); the stored state is kept, and test
        controls still change it. `start_listening()` serves again on the same port."""
        with self._cond:
            self._listening = False
            sockets = list(self._sockets)
        self._server.shutdown()
        self._server.server_close()
        self.drop_connections()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def start_listening(self) -> None:
        """Serve again on the port `stop_listening` closed."""
        host, port = self._server.server_address[:2]
        server = ThreadingHTTPServer((str(host), int(port)), _Handler)
        server.daemon_threads = True
        server.api = self  # type: ignore[attr-defined]
        with self._cond:
            self._listening = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @contextmanager
    def outage(self) -> Iterator[None]:
        """`stop_listening()` for the block, then `start_listening()`."""
        self.stop_listening()
        try:
            yield
        finally:
            self.start_listening()

    @contextmanager
    def hold_watches(self) -> Iterator[None]:
        """Drop open watches; new watch requests wait (unanswered) until the block exits."""
        with self._cond:
            self._held = True
        self.drop_connections()
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def set_failure(self, kind: str, status: int | None, *, watch: bool = False,
                    times: int | None = None, after: int = 0) -> None:
        """Answer `kind`'s next `times` (default: all) requests with an HTTP error Status; with
        `after`, the first `after` of them are answered normally (a failure mid-way).

        `kind` is a collection's kind (`"Node"`, `"Pod"`...: its lists, or its watches with
        `watch=True`), `"nodes"` (GET / PATCH of one node), `"nodes/status"` (status patches),
        `"leases"` (every Lease call) or `"leases:<verb>"` (`get`, `create`, `update`, `delete`).
        None restores normal answers.
        """
        with self._cond:
            self._failure_skips[(kind, watch)] = after
            if status is None:
                self._failures.pop((kind, watch), None)
            else:
                self._failures[(kind, watch)] = (status, times)

    def open_watches(self, kind: str | None = None) -> int:
        """How many watch streams are open (registered for live events) now."""
        with self._cond:
            return sum(1 for w in self._watchers if kind is None or w.kind == kind)

    def requests(self, kind: str | None = None, *, watch: bool | None = None,
                 method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally only those of one kind, watch or not, or one HTTP method."""
        with self._cond:
            return [r for r in self._requests if (kind is None or r.kind == kind)
                    and (watch is None or r.watch == watch) and (method is None or r.method == method)]

    def serve_crd(self, group: str, version: str, kind: str, plural: str, *, namespaced: bool) -> None:
        """Serve a CustomResourceDefinition's resource from now on (and list its group in `/apis`)."""
        with self._cond:
            self._crds[(group, version, plural)] = _Crd(group, version, kind, plural, namespaced)
            self._custom.setdefault((group, version, plural), {})

    def add_custom(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a custom object of a served CRD (found by its apiVersion and kind) as if created."""
        crd = next(c for c in self._crds.values() if (c.api_version, c.kind) == (obj["apiVersion"], obj["kind"]))
        code, body = self._create_custom(crd, obj["metadata"].get("namespace"), json.dumps(obj).encode())
        assert code == 201, body
        return body

    def custom(self, group: str, version: str, plural: str) -> dict[str, dict[str, Any]]:
        """The stored objects of a served CRD by `namespace/name` (or `name`), as a GET returns them."""
        with self._cond:
            return copy.deepcopy(self._custom[(group, version, plural)])

    # --- protocol ------------------------------------------------------------------------------
    def _change(self, kind: str, type_: str, stored: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        stored["metadata"]["resourceVersion"] = str(self._rv)
        key = object_key(stored)
        if type_ == "DELETED":
            del self._objects[kind][key]
        else:
            self._objects[kind][key] = stored
        event = {"type": type_, "object": {"kind": kind, "apiVersion": API_VERSIONS.get(kind, "v1"), **stored}}
        self._history.append((self._rv, kind, event))
        for watcher in self._watchers:
            if watcher.kind == kind:
                watcher.events.put(event)
        return copy.deepcopy(stored)

    def _commit(self, kind: str, current: dict[str, Any] | None, new: dict[str, Any], *,
                dry_run: bool) -> dict[str, Any]:
        """Store `new` (lock held): nothing happens when it equals `current` (etcd's no-op update)."""
        if current is not None and new == current:
            return copy.deepcopy(current)
        if dry_run:
            return copy.deepcopy(new)
        return self._change(kind, "ADDED" if current is None else "MODIFIED", new)

    def _record(self, kind: str | None, path: str, query: dict[str, str], *, method: str = "GET",
                body: Any = None, content_type: str | None = None) -> None:
        with self._cond:
            self._requests.append(RecordedRequest(kind, path, query, time.monotonic(), method, body,
                                                  content_type))

    def _failure(self, kind: str, watch: bool) -> int | None:
        with self._cond:
            if watch:  # a held watch request waits before it is answered at all
                while self._held:
                    self._cond.wait()
            if self._failure_skips.get((kind, watch), 0) > 0 and (kind, watch) in self._failures:
                self._failure_skips[(kind, watch)] -= 1
                return None
            status, times = self._failures.get((kind, watch), (None, None))
            if times is not None:
                if times <= 1:
                    del self._failures[(kind, watch)]
                else:
                    self._failures[(kind, watch)] = (status or 0, times - 1)
            return status

    def _list_body(self, kind: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._cond:
            if "continue" in query:
                token = json.loads(base64.b64decode(query["continue"]))
                rv, start = int(token["rv"]), int(token["start"])
                items = self._snapshots.get((kind, rv))
                if items is None:
                    return 410, status_body(410, "Expired", "The provided continue parameter "
                                            "is too old to display a consistent list result.")
            else:
                rv, start = self._rv, 0
                items = [copy.deepcopy(o) for _, o in sorted(self._objects[kind].items())]
            limit = int(query.get("limit") or 0) or len(items) or 1
            metadata: dict[str, Any] = {"resourceVersion": str(rv)}
            if start + limit < len(items):
                self._snapshots[(kind, rv)] = items
                token = {"v": "meta.k8s.io/v1", "rv": rv, "start": start + limit}
                metadata["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
        return 200, {"kind": f"{kind}List", "apiVersion": API_VERSIONS.get(kind, "v1"), "metadata": metadata,
                     "items": items[start:start + limit]}

    def _open_watch(self, kind: str, query: dict[str, str], sock: socket.socket
                    ) -> tuple[list[dict[str, Any]], _Watcher | None]:
        """Backlog to send first and the registered watcher (None: expired, send the backlog)."""
        with self._cond:
            since = query.get("resourceVersion", "")
            if since in ("", "0"):
                backlog = [{"type": "ADDED", "object": {"kind": kind, "apiVersion": API_VERSIONS.get(kind, "v1"), **o}}
                           for o in self._objects[kind].values()]
            elif int(since) < self._compacted_rv:
                message = f"too old resource version: {since} ({self._compacted_rv})"
                return [{"type": "ERROR", "object": status_body(410, "Expired", message)}], None
            else:
                backlog = [e for rv, k, e in self._history if k == kind and rv > int(since)]
            watcher = _Watcher(kind, query.get("allowWatchBookmarks") == "true", sock)
            self._watchers.append(watcher)
            return backlog, watcher

    def _close_watch(self, watcher: _Watcher) -> None:
        with self._cond:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    # --- single objects: nodes ---------------------------------------------------------------
    def _get(self, kind: str, key: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._cond:
            stored = self._objects[kind].get(key)
            if stored is None:
                raise _not_found(kind, name)
            return 200, _with_kind(kind, stored)

    def _patch_node(self, name: str, subresource: str | None, content_type: str, raw: bytes,
                    dry_run: bool) -> tuple[int, dict[str, Any]]:
        patch_type = content_type.split(";", maxsplit=1)[0].strip().lower()
        if patch_type not in _PATCH_TYPES:
            raise _ApiError(status_body(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                                        "format - accepted media types include: " + ", ".join(_PATCH_TYPES)))
        if patch_type == "application/apply-patch+yaml":
            raise _ApiError(status_body(415, "UnsupportedMediaType", "server-side apply is not implemented by "
                                        "this test fixture (kube_api_fixture)"))
        try:
            patch = json.loads(raw)
        except ValueError as exc:
            raise _bad_request(f"error decoding patch: {exc}") from exc
        if patch_type != "application/json-patch+json" and not isinstance(patch, dict):
            raise _bad_request("Invalid JSON Patch")
        with self._cond:
            current = self._objects["Node"].get(name)
            if current is None:
                raise _not_found("Node", name)
            document = _with_kind("Node", current)
            try:
                if patch_type == "application/merge-patch+json":
                    patched = json_merge_patch(document, patch)
                elif patch_type == "application/strategic-merge-patch+json":
                    patched = strategic_merge_patch(document, patch) or {}
                else:
                    patched = json_patch(document, patch)
            except _PatchError as exc:
                raise _ApiError(status_body(exc.code, _REASONS[exc.code], str(exc))) from exc
            new = _patched_node(current, patched, name, subresource)
            return 200, _with_kind("Node", self._commit("Node", current, new, dry_run=dry_run))

    # --- single objects: leases --------------------------------------------------------------
    def _create_lease(self, namespace: str, raw: bytes, dry_run: bool) -> tuple[int, dict[str, Any]]:
        body = _lease_body(raw, namespace)
        meta = body["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        name = str(meta.get("name") or "")
        if not name:
            raise _invalid(("coordination.k8s.io", "Lease"), "", [
                _FieldError("metadata.name", "name or generateName is required")])
        _validate_lease(body)
        with self._cond:
            if f"{namespace}/{name}" in self._objects["Lease"]:
                raise _ApiError(status_body(409, "AlreadyExists", f'{_qualified("Lease")} "{name}" already exists',
                                            _details("Lease", name)))
            return 201, _with_kind("Lease", self._commit("Lease", None, _new_lease(body), dry_run=dry_run))

    def _replace_lease(self, namespace: str, name: str, raw: bytes, dry_run: bool) -> tuple[int, dict[str, Any]]:
        body = _lease_body(raw, namespace)
        meta = body["metadata"]
        if meta.get("name") != name:
            raise _bad_request(f"the name of the object ({meta.get('name') or ''}) does not match the name on "
                               f"the URL ({name})")
        _validate_lease(body)
        with self._cond:
            current = self._objects["Lease"].get(f"{namespace}/{name}")
            if current is None:  # Lease: AllowCreateOnUpdate
                return 201, _with_kind("Lease", self._commit("Lease", None, _new_lease(body), dry_run=dry_run))
            version = str(meta.get("resourceVersion") or "")
            if not version:  # Lease: no AllowUnconditionalUpdate
                raise _invalid(("coordination.k8s.io", "leases"), name, [
                    _FieldError("metadata.resourceVersion", "must be specified for an update", "0x0")])
            if version != current["metadata"]["resourceVersion"]:
                raise _conflict("Lease", name)
            old_meta = current["metadata"]
            if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
                raise _invalid(("coordination.k8s.io", "Lease"), name, [
                    _FieldError("metadata.uid", "field is immutable", json.dumps(meta["uid"]))])
            meta["uid"] = old_meta.get("uid")
            meta["creationTimestamp"] = old_meta.get("creationTimestamp")
            return 200, _with_kind("Lease", self._commit("Lease", current, body, dry_run=dry_run))

    def _delete_lease(self, namespace: str, name: str, raw: bytes, dry_run: bool) -> tuple[int, dict[str, Any]]:
        options = _json_object(raw) if raw.strip() else {}
        preconditions = options.get("preconditions") or {}
        with self._cond:
            current = self._objects["Lease"].get(f"{namespace}/{name}")
            if current is None:
                raise _not_found("Lease", name)
            meta = current["metadata"]
            for field_name, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(field_name)
                if wanted is not None and wanted != meta.get(field_name):
                    raise _conflict("Lease", name, (
                        f"StorageError: invalid object, Code: 4, Key: /registry/leases/{namespace}/{name}, "
                        f"ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: {label} in precondition: "
                        f"{wanted}, {label} in object meta: {meta.get(field_name)}"))
            if not dry_run:
                self._change("Lease", "DELETED", copy.deepcopy(current))
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": _details("Lease", name, uid=meta.get("uid"))}


    # --- custom resources and discovery ------------------------------------------------------
    def _discovery(self) -> dict[str, Any]:
        """`GET /apis`: the legacy APIGroupList."""
        versions: dict[str, list[str]] = {"apps": ["v1"], "coordination.k8s.io": ["v1"]}
        with self._cond:
            for crd in self._crds.values():
                if crd.version not in versions.setdefault(crd.group, []):
                    versions[crd.group].append(crd.version)
        groups = []
        for name, served in versions.items():
            entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in served]
            groups.append({"name": name, "versions": entries, "preferredVersion": entries[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _custom_route(self, path: str) -> tuple[_Crd, str | None, str | None] | None:
        """(CRD, namespace, name) of a custom-resource path, or None when no CRD serves it."""
        match = _CUSTOM_PATH.fullmatch(path)
        if match is None:
            return None
        group, version, namespace, plural, name = (unquote(g) if g else None for g in match.groups())
        with self._cond:
            crd = self._crds.get((str(group), str(version), str(plural)))
        if crd is None or (namespace is not None and not crd.namespaced):
            return None
        if crd.namespaced and namespace is None and name is not None:
            return None
        return crd, namespace, name

    def _custom_body(self, crd: _Crd, raw: bytes, namespace: str | None) -> dict[str, Any]:
        body = _json_object(raw)
        if body.get("apiVersion") != crd.api_version or body.get("kind") != crd.kind:
            raise _bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match the "
                               f"expected API version ({crd.api_version})")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request(f"{crd.kind} in version \"{crd.version}\" cannot be handled: metadata must be an object")
        if crd.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if crd.namespaced:
            meta["namespace"] = namespace
        return body

    def _custom_error(self, crd: _Crd, code: int, name: str, why: str) -> _ApiError:
        details = {"name": name, "group": crd.group, "kind": crd.plural}
        reason = "AlreadyExists" if code == 409 else _REASONS[code]
        return _ApiError(status_body(code, reason, f'{crd.plural}.{crd.group} "{name}" {why}', details))

    def _create_custom(self, crd: _Crd, namespace: str | None, raw: bytes) -> tuple[int, dict[str, Any]]:
        body = self._custom_body(crd, raw, namespace)
        name = str(body["metadata"].get("name") or "")
        if not name:
            raise _invalid((crd.group, crd.kind), "", [
                _FieldError("metadata.name", "name or generateName is required")])
        key = f"{namespace}/{name}" if crd.namespaced else name
        with self._cond:
            objects = self._custom[(crd.group, crd.version, crd.plural)]
            if key in objects:
                raise self._custom_error(crd, 409, name, "already exists")
            stored = _new_lease(body)  # uid and creationTimestamp, as for any new object
            self._rv += 1
            stored["metadata"]["resourceVersion"] = str(self._rv)
            objects[key] = stored
            return 201, copy.deepcopy(stored)

    def _replace_custom(self, crd: _Crd, namespace: str | None, name: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        body = self._custom_body(crd, raw, namespace)
        meta = body["metadata"]
        if meta.get("name") != name:
            raise _bad_request(f"the name of the object ({meta.get('name') or ''}) does not match the name on "
                               f"the URL ({name})")
        with self._cond:
            objects = self._custom[(crd.group, crd.version, crd.plural)]
            key = f"{namespace}/{name}" if crd.namespaced else name
            current = objects.get(key)
            if current is None:  # custom resources: no create on update
                raise self._custom_error(crd, 404, name, "not found")
            version = str(meta.get("resourceVersion") or "")
            if not version:
                raise _invalid((crd.group, crd.kind), name, [
                    _FieldError("metadata.resourceVersion", "must be specified for an update", "0x0")])
            if version != current["metadata"]["resourceVersion"]:
                raise _ApiError(status_body(409, "Conflict", f"Operation cannot be fulfilled on {crd.plural}."
                                            f'{crd.group} "{name}": {_OPTIMISTIC_LOCK}',
                                            {"name": name, "group": crd.group, "kind": crd.plural}))
            meta["uid"] = current["metadata"].get("uid")
            meta["creationTimestamp"] = current["metadata"].get("creationTimestamp")
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            objects[key] = body
            return 200, copy.deepcopy(body)

    def _custom_call(self, method: str, crd: _Crd, namespace: str | None, name: str | None, raw: bytes,
                     query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if name is None:
            if method == "POST" and (namespace is not None or not crd.namespaced):
                return self._create_custom(crd, namespace, raw)
            if method == "GET":
                return 200, self._list_custom(crd, namespace, query.get("labelSelector", ""))
            raise _method_not_allowed()
        key = f"{namespace}/{name}" if crd.namespaced else name
        if method == "PUT":
            return self._replace_custom(crd, namespace, name, raw)
        if method not in ("GET", "DELETE"):
            raise _method_not_allowed()
        with self._cond:
            objects = self._custom[(crd.group, crd.version, crd.plural)]
            current = objects.get(key)
            if current is None:
                raise self._custom_error(crd, 404, name, "not found")
            if method == "GET":
                return 200, copy.deepcopy(current)
            del objects[key]
            self._rv += 1
            return 200, copy.deepcopy(current)  # custom resources return the deleted object

    def _list_custom(self, crd: _Crd, namespace: str | None, selector: str) -> dict[str, Any]:
        wanted = [term.replace("==", "=").split("=", 1) for term in selector.split(",") if term]
        with self._cond:
            objects = self._custom[(crd.group, crd.version, crd.plural)]
            items = [copy.deepcopy(o) for k, o in sorted(objects.items())
                     if (namespace is None or o["metadata"].get("namespace") == namespace)
                     and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted)]
            metadata = {"continue": "", "resourceVersion": str(self._rv)}
        return {"apiVersion": crd.api_version, "kind": f"{crd.kind}List", "metadata": metadata, "items": items}

    # --- ConfigMaps, and patches of custom resources (the device plugin's config, design §16) ----
    def _config_map_call(self, method: str, namespace: str, name: str | None, content_type: str, raw: bytes,
                         query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """POST (201; 409 AlreadyExists; 404 when the namespace is not stored), GET (200, 404),
        PATCH (merge, strategic or JSON patch; 404 when absent); `?dryRun=All` stores nothing."""
        dry_run = query.get("dryRun") == "All"
        if method == "POST" and name is None:
            return self._create_config_map(namespace, raw, dry_run)
        if name is None or method not in ("GET", "PATCH"):
            raise _method_not_allowed()
        if method == "GET":
            return self._get("ConfigMap", f"{namespace}/{name}", name)
        with self._cond:
            current = self._objects["ConfigMap"].get(f"{namespace}/{name}")
            if current is None:
                raise _not_found("ConfigMap", name)
            patched = _patched(_with_kind("ConfigMap", current), content_type, raw)
            new = {k: v for k, v in patched.items() if k not in ("kind", "apiVersion")}
            new["metadata"] = {**(new.get("metadata") or {}), **{k: current["metadata"][k] for k in
                               ("name", "namespace", "uid", "creationTimestamp", "resourceVersion")
                               if k in current["metadata"]}}
            return 200, _with_kind("ConfigMap", self._commit("ConfigMap", current, new, dry_run=dry_run))

    def _create_config_map(self, namespace: str, raw: bytes, dry_run: bool) -> tuple[int, dict[str, Any]]:
        body = _json_object(raw)
        body.pop("kind", None)
        body.pop("apiVersion", None)
        meta = body.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", namespace):
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = namespace
        name = str(meta.get("name") or "")
        with self._cond:
            if namespace not in self._objects["Namespace"]:
                raise _ApiError(status_body(404, "NotFound", f'namespaces "{namespace}" not found',
                                            {"name": namespace, "kind": "namespaces"}))
            if f"{namespace}/{name}" in self._objects["ConfigMap"]:
                raise _ApiError(status_body(409, "AlreadyExists", f'configmaps "{name}" already exists',
                                            _details("ConfigMap", name)))
            stored = _new_lease(body)  # uid and creationTimestamp, as for any new object
            return 201, _with_kind("ConfigMap", self._commit("ConfigMap", None, stored, dry_run=dry_run))

    def _patch_custom(self, crd: _Crd, namespace: str | None, name: str, content_type: str, raw: bytes,
                      dry_run: bool) -> tuple[int, dict[str, Any]]:
        """PATCH of a custom object: merge or JSON patch (custom resources refuse a strategic merge
        patch with 415, as kube-apiserver does); identity fields kept; `dry_run` stores nothing."""
        if content_type.split(";", maxsplit=1)[0].strip().lower() == "application/strategic-merge-patch+json":
            raise _ApiError(status_body(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                                        "format - accepted media types include: application/json-patch+json, "
                                        "application/merge-patch+json, application/apply-patch+yaml"))
        with self._cond:
            objects = self._custom[(crd.group, crd.version, crd.plural)]
            key = f"{namespace}/{name}" if crd.namespaced else name
            current = objects.get(key)
            if current is None:
                raise self._custom_error(crd, 404, name, "not found")
            new = _patched(copy.deepcopy(current), content_type, raw)
            new["metadata"] = {**(new.get("metadata") or {}), **{k: current["metadata"][k] for k in
                               ("name", "namespace", "uid", "creationTimestamp", "resourceVersion")
                               if k in current["metadata"]}}
            new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
            if new != current and not dry_run:
                self._rv += 1
                new["metadata"]["resourceVersion"] = str(self._rv)
                objects[key] = new
            return 200, copy.deepcopy(new)


def _patched(document: dict[str, Any], content_type: str, raw: bytes) -> dict[str, Any]:
    """`document` with the patch in `raw` applied, by the patch type `content_type` names."""
    patch_type = content_type.split(";", maxsplit=1)[0].strip().lower()
    if patch_type not in _PATCH_TYPES[:3]:
        raise _ApiError(status_body(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                                    "format - accepted media types include: " + ", ".join(_PATCH_TYPES)))
    try:
        patch = json.loads(raw)
    except ValueError as exc:
        raise _bad_request(f"error decoding patch: {exc}") from exc
    try:
        if patch_type == "application/json-patch+json":
            patched = json_patch(document, patch)
        elif not isinstance(patch, dict):
            raise _bad_request("Invalid JSON Patch")
        elif patch_type == "application/merge-patch+json":
            patched = json_merge_patch(document, patch)
        else:
            patched = strategic_merge_patch(document, patch) or {}
    except _PatchError as exc:
        raise _ApiError(status_body(exc.code, _REASONS[exc.code], str(exc))) from exc
    if not isinstance(patched, dict):
        raise _bad_request("the patched object is not an object")
    return patched


def _split_kind(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    stored = copy.deepcopy(obj)
    kind = stored.pop("kind")
    stored.pop("apiVersion", None)
    if kind not in KINDS:
        raise ValueError(f"unsupported kind {kind!r}")
    return kind, stored


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _bad_request(f"error decoding request body: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad_request("the request body must be a JSON object")
    return body


def _patched_node(current: dict[str, Any], patched: Any, name: str, subresource: str | None) -> dict[str, Any]:
    """The Node to store after a patch (lock held): server fields kept, quantities canonical."""
    if not isinstance(patched, dict) or not isinstance(patched.get("metadata", {}), dict):
        raise _invalid(("", ""), "", [_FieldError("patch", "the patched object is not a Node", '""')])
    new = {k: v for k, v in patched.items() if k not in ("kind", "apiVersion")}
    meta, old_meta = new.setdefault("metadata", {}), current["metadata"]
    version = meta.get("resourceVersion")
    if version and version != old_meta.get("resourceVersion"):
        raise _conflict("Node", name)
    for key in ("name", "uid", "creationTimestamp", "resourceVersion"):
        if key in old_meta:
            meta[key] = old_meta[key]
    kept = "spec" if subresource == "status" else "status"  # the other half is not this endpoint's
    new.pop(kept, None)
    if kept in current:
        new[kept] = copy.deepcopy(current[kept])
    status = new.get("status")
    if isinstance(status, dict):
        _canonical_resources(status, name, patched)
    return new


def _canonical_resources(status: dict[str, Any], name: str, patched: Any) -> None:
    """Parse, validate and canonicalise `status.capacity` / `status.allocatable` in place."""
    errors: list[_FieldError] = []
    for list_name in ("capacity", "allocatable"):
        resources = status.get(list_name)
        if resources is None:
            continue
        if not isinstance(resources, dict):
            raise _invalid(("", ""), "", [_FieldError("patch", ERR_FORMAT_WRONG, json.dumps(json.dumps(patched)))])
        for resource in sorted(resources):
            try:
                quantity = parse_quantity(_quantity_text(resources[resource]))
            except QuantityError as exc:
                raise _invalid(("", ""), "", [_FieldError("patch", str(exc), json.dumps(json.dumps(patched)))]) from exc
            where = f"status.{list_name}.{resource}"
            if quantity.value < 0:
                errors.append(_FieldError(where, "must be greater than or equal to 0", json.dumps(str(quantity))))
            if (resource in _INTEGER_RESOURCES or is_extended_resource(resource)) and (quantity.value * 1000) % 1000:
                errors.append(_FieldError(where, "must be an integer", quantity.go_repr()))
            resources[resource] = str(parse_quantity(str(quantity)))  # stored, then read back
    if errors:
        raise _invalid(("", "Node"), name, errors)


def _lease_body(raw: bytes, namespace: str) -> dict[str, Any]:
    """A Lease request body, decoded and checked like the real decoder and validation do."""
    body = _json_object(raw)
    body.pop("kind", None)
    body.pop("apiVersion", None)
    meta = body.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise _bad_request("Lease in version \"v1\" cannot be handled as a Lease: metadata must be an object")
    if meta.get("namespace") not in (None, "", namespace):
        raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")
    meta["namespace"] = namespace
    spec = body.get("spec")
    if spec is None:
        return body
    if not isinstance(spec, dict):
        raise _bad_request("Lease in version \"v1\" cannot be handled as a Lease: spec must be an object")
    for key in ("acquireTime", "renewTime"):
        if spec.get(key) is not None:
            spec[key] = _micro_time(key, spec[key])
    return body


def _validate_lease(body: dict[str, Any]) -> None:
    """v1.24 `ValidateLeaseSpec` (422)."""
    spec = body.get("spec") or {}
    errors: list[_FieldError] = []
    duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
    if isinstance(duration, int) and duration <= 0:
        errors.append(_FieldError("spec.leaseDurationSeconds", "must be greater than 0", str(duration)))
    if isinstance(transitions, int) and transitions < 0:
        errors.append(_FieldError("spec.leaseTransitions", "must be greater than or equal to 0", str(transitions)))
    if errors:
        raise _invalid(("coordination.k8s.io", "Lease"), str(body["metadata"].get("name") or ""), errors)


def _micro_time(key: str, value: Any) -> str:
    """A `metav1.MicroTime` as Go parses (layout RFC3339Micro: exactly six fractional digits) and
    writes it back (UTC, `...000000Z`)."""
    parsed = None
    if isinstance(value, str) and _MICRO_TIME_RE.fullmatch(value):
        with suppress(ValueError):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed is None:
        raise _bad_request(f'Lease in version "v1" cannot be handled as a Lease: v1.Lease.Spec: '
                           f"v1.LeaseSpec.{key[0].upper()}{key[1:]}: unmarshalerDecoder: parsing time "
                           f"{json.dumps(value)} as {json.dumps(_MICRO_TIME)}: cannot parse")
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_lease(body: dict[str, Any]) -> dict[str, Any]:
    stored = copy.deepcopy(body)
    meta = stored["metadata"]
    meta.pop("resourceVersion", None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = _now()
    return stored


_NODE_PATH = re.compile(r"/api/v1/nodes/([^/]+)(/status)?")
_LEASE_PATH = re.compile(r"/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?")
_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}
_CONFIG_MAP_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/configmaps(?:/([^/]+))?")
_CUSTOM_PATH = re.compile(r"/apis/([^/]+)/([^/]+)(?:/namespaces/([^/]+))?/([^/]+)(?:/([^/]+))?")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        api: KubeApiFixture = self.server.api  # type: ignore[attr-defined]
        with api._cond:
            api._sockets.add(self.connection)
            listening = api._listening
        if not listening:  # accepted just before an outage began: cut like the others
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        api: KubeApiFixture = self.server.api  # type: ignore[attr-defined]
        with api._cond:
            api._sockets.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        api: KubeApiFixture = self.server.api  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        kind = PATHS.get(parts.path)
        if kind is None:
            self._serve_object("GET")
            return
        api._record(kind, parts.path, query)
        watch = query.get("watch") in ("true", "1")
        failure = api._failure(kind, watch)
        if failure is not None:
            self._send_json(failure, status_body(failure, "InternalError", "injected failure"))
        elif watch:
            self._serve_watch(api, kind, query)
        else:
            self._send_json(*api._list_body(kind, query))

    def do_PATCH(self) -> None:
        self._serve_object("PATCH")

    def do_PUT(self) -> None:
        self._serve_object("PUT")

    def do_POST(self) -> None:
        self._serve_object("POST")

    def do_DELETE(self) -> None:
        self._serve_object("DELETE")

    def _read_body(self) -> bytes:
        if length := self.headers.get("Content-Length"):
            return self.rfile.read(int(length))
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return b""
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers
            pass
        return b"".join(chunks)

    def _serve_object(self, method: str) -> None:
        """Single-object calls: nodes (GET, PATCH) and leases (POST, GET, PUT, DELETE); custom
        resources (their collections too) and discovery."""
        api: KubeApiFixture = self.server.api  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        raw = self._read_body()
        try:
            recorded: Any = json.loads(raw) if raw else None
        except ValueError:
            recorded = raw.decode(errors="replace")
        content_type = self.headers.get("Content-Type")
        node, lease = _NODE_PATH.fullmatch(parts.path), _LEASE_PATH.fullmatch(parts.path)
        config_map = _CONFIG_MAP_PATH.fullmatch(parts.path)
        custom = None if node or lease or config_map else api._custom_route(parts.path)
        recorded_kind = ("Node" if node else "Lease" if lease else "ConfigMap" if config_map
                         else custom[0].kind if custom else None)
        api._record(recorded_kind, parts.path, query, method=method, body=recorded, content_type=content_type)
        try:
            if node:
                code, body = self._node_call(api, method, unquote(node[1]), "status" if node[2] else None,
                                             raw, query)
            elif lease:
                code, body = self._lease_call(api, method, unquote(lease[1]),
                                              unquote(lease[2]) if lease[2] else None, raw, query)
            elif config_map:
                self._injected(api, "configmaps", f"configmaps:{_VERBS.get(method, method.lower())}")
                code, body = api._config_map_call(method, unquote(config_map[1]),
                                                  unquote(config_map[2]) if config_map[2] else None,
                                                  self.headers.get("Content-Type") or "", raw, query)
            elif custom:
                crd, namespace, name = custom
                verb = "list" if method == "GET" and name is None else _VERBS.get(method, method.lower())
                self._injected(api, crd.plural, f"{crd.plural}:{verb}")
                if method == "PATCH" and name is not None:
                    code, body = api._patch_custom(crd, namespace, name, self.headers.get("Content-Type") or "",
                                                   raw, query.get("dryRun") == "All")
                else:
                    code, body = api._custom_call(method, crd, namespace, name, raw, query)
            elif parts.path in ("/apis", "/apis/") and method == "GET":
                self._injected(api, "discovery")
                code, body = 200, api._discovery()
            else:
                code, body = 404, status_body(404, "NotFound", f"the server could not find the requested resource "
                                              f"({parts.path})")
        except _ApiError as exc:
            code, body = exc.body["code"], exc.body
        self._send_json(code, body)

    def _injected(self, api: KubeApiFixture, *targets: str) -> None:
        for target in targets:
            if (failure := api._failure(target, False)) is not None:
                raise _ApiError(status_body(failure, _REASONS.get(failure, "InternalError"), "injected failure"))

    def _node_call(self, api: KubeApiFixture, method: str, name: str, subresource: str | None, raw: bytes,
                   query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if method not in ("GET", "PATCH"):
            raise _method_not_allowed()
        self._injected(api, "nodes/status" if subresource and method == "PATCH" else "nodes")
        if method == "GET":
            return api._get("Node", name, name)
        return api._patch_node(name, subresource, self.headers.get("Content-Type") or "", raw,
                               query.get("dryRun") == "All")

    def _lease_call(self, api: KubeApiFixture, method: str, namespace: str, name: str | None, raw: bytes,
                    query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if method not in (("POST",) if name is None else ("GET", "PUT", "DELETE")):
            raise _method_not_allowed()
        self._injected(api, "leases", f"leases:{_VERBS[method]}")
        dry_run = query.get("dryRun") == "All"
        if name is None:
            return api._create_lease(namespace, raw, dry_run)
        if method == "GET":
            return api._get("Lease", f"{namespace}/{name}", name)
        if method == "PUT":
            return api._replace_lease(namespace, name, raw, dry_run)
        return api._delete_lease(namespace, name, raw, dry_run)

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve_watch(self, api: KubeApiFixture, kind: str, query: dict[str, str]) -> None:
        backlog, watcher = api._open_watch(kind, query, self.connection)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in backlog:
                self._send_chunk(event)
            if watcher is not None and not self._stream(watcher, query):
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            if watcher is not None:
                api._close_watch(watcher)

    def _stream(self, watcher: _Watcher, query: dict[str, str]) -> bool:
        """Forward events until the timeout (True) or a drop (False)."""
        timeout = float(query.get("timeoutSeconds") or _DEFAULT_WATCH_SECONDS)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = watcher.events.get(timeout=remaining)
            except queue.Empty:
                break
            if event is _DROP:
                return False
            self._send_chunk(event)
        return True

    def _send_chunk(self, event: dict[str, Any]) -> None:
        line = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))


def _method_not_allowed() -> _ApiError:
    return _ApiError(status_body(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                 "resource", {}))
