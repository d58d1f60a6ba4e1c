"""AdmissionReview v1 wire types and the response constructors.

Owns the shape of what kube-apiserver sends (`admission.k8s.io/v1` `AdmissionReview` with a
`request`) and what it accepts back. The request's `object`/`oldObject` stay raw dicts: patches are
computed against exactly what was sent (a re-serialised model would drop unknown fields).

Responses are built only through `allowed`, `denied`, `patched`, `errored` and `with_warnings`;
the request UID is copied onto the response in exactly one place, `build_review` (`encode_review`
puts the UID where `build_review` put its marker).
No I/O here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, TypeVar, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

API_VERSION = "admission.k8s.io/v1"
MAX_UID = 128
_KIND = "AdmissionReview"
MAX_WARNINGS = 4
MAX_WARNING_CHARS = 120

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


@dataclass(frozen=True, slots=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str


@dataclass(frozen=True, slots=True)
class GroupVersionResource:
    group: str
    version: str
    resource: str


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


class AdmissionRequest(NamedTuple):
    """The `request` of an AdmissionReview; `object` and `old_object` are kept raw.

    A named tuple rather than a frozen dataclass: one is built for every review, and a tuple is
    built in C (a fifth of the dataclass's cost, issue 17); it is as immutable."""

    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Operation
    sub_resource: str = ""
    name: str = ""
    namespace: str = ""
    user_info: UserInfo = UserInfo()
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False
    #: the review was decoded by orjson, which refuses NaN and Infinity: no float in it is
    #: non-finite (`memo.content_key` then need not look for one); see `parse_review`
    finite: bool = False


class ReviewError(ValueError):
    """The body is not an admission.k8s.io/v1 AdmissionReview request (an HTTP 400, not a denial)."""


# --- the wire type, as pydantic validates it (every review that is not plainly well formed) ------


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class _GroupVersionKind(_Wire):
    group: str = ""
    version: str
    kind: str


class _GroupVersionResource(_Wire):
    group: str = ""
    version: str
    resource: str


class _UserInfo(_Wire):
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


class _Request(_Wire):
    uid: str = Field(min_length=1, max_length=MAX_UID)
    kind: _GroupVersionKind
    resource: _GroupVersionResource
    sub_resource: str = Field(default="", alias="subResource")
    name: str = ""
    namespace: str = ""
    operation: Operation
    user_info: _UserInfo = Field(default_factory=_UserInfo, alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(default=None, alias="oldObject")
    dry_run: bool = Field(default=False, alias="dryRun")


class _Review(_Wire):
    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: _Request


def parse_review(document: object, *, finite: bool = False) -> AdmissionRequest:
    """Validate a decoded JSON document as an AdmissionReview and return its request.

    The wire type is the pydantic model `_Review`: it decides what is accepted and words every
    refusal. A review that is plainly well formed (every field present has exactly its JSON type,
    as kube-apiserver always sends) is read in one pass of plain Python first (`_well_formed`),
    which accepts only what the model accepts and reads it the same (tests/test_review_parse.py
    proves both against the model): on the request path this costs a fraction of the model's
    validation (issue 17). `finite`: the caller decoded `document` with orjson (see
    `AdmissionRequest.finite`)."""
    if type(document) is dict and document.get("apiVersion") == API_VERSION and document.get("kind") == _KIND:
        found = _well_formed(document.get("request"), finite)
        if found is not None:
            return found
    if not isinstance(document, dict):
        raise ReviewError("body is not a JSON object; expected an admission.k8s.io/v1 AdmissionReview")
    try:
        return _from_model(_Review.model_validate(document).request, finite)
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_request(raw: dict[str, Any]) -> AdmissionRequest:
    """An AdmissionReview's `request` object alone (see `parse_review`); raises ReviewError."""
    found = _well_formed(raw)
    if found is not None:
        return found
    try:
        return _from_model(_Request.model_validate(raw))
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> ReviewError:
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5])
    return ReviewError(f"not an admission.k8s.io/v1 AdmissionReview request: {problems}")


def _from_model(req: _Request, finite: bool = False) -> AdmissionRequest:
    user = req.user_info
    return AdmissionRequest(
        req.uid,
        _shared(_KINDS, GroupVersionKind, req.kind.group, req.kind.version, req.kind.kind),
        _shared(_RESOURCES, GroupVersionResource, req.resource.group, req.resource.version, req.resource.resource),
        req.operation,
        req.sub_resource,
        req.name,
        req.namespace,
        _shared(_USERS, UserInfo, user.username, user.uid, user.groups),
        req.object,
        req.old_object,
        req.dry_run,
        finite,
    )


_OPERATIONS: frozenset[object] = frozenset(get_args(Operation))
#: the few distinct kinds, resources and users a cluster sends, as shared frozen values
_KINDS: dict[tuple[Any, ...], GroupVersionKind] = {}
_RESOURCES: dict[tuple[Any, ...], GroupVersionResource] = {}
_USERS: dict[tuple[Any, ...], UserInfo] = {}
_SHARED_MAX = 512
_Shared = TypeVar("_Shared")


def _shared(table: dict[tuple[Any, ...], _Shared], make: Callable[..., _Shared], *parts: Any) -> _Shared:
    """`make(*parts)`, the same value each time for the same parts (at most _SHARED_MAX kept)."""
    found = table.get(parts)
    if found is None:
        found = make(*parts)
        if len(table) < _SHARED_MAX:
            table[parts] = found
    return found


def _well_formed(raw: object, finite: bool = False) -> AdmissionRequest | None:
    """The request when every field it holds has exactly its JSON type (what kube-apiserver
    sends); None for anything else, which `_Request` then validates (and words the refusal of)."""
    if type(raw) is not dict:
        return None
    get = raw.get
    uid, operation, kind, resource = get("uid"), get("operation"), get("kind"), get("resource")
    sub, name, namespace = get("subResource", ""), get("name", ""), get("namespace", "")
    obj, old, dry_run, user = get("object"), get("oldObject"), get("dryRun", False), get("userInfo", _NO_USER)
    if not (
        type(uid) is str
        and 0 < len(uid) <= MAX_UID
        and type(operation) is str
        and operation in _OPERATIONS
        and type(kind) is dict
        and type(resource) is dict
        and type(sub) is str
        and type(name) is str
        and type(namespace) is str
        and (obj is None or type(obj) is dict)
        and (old is None or type(old) is dict)
        and type(dry_run) is bool
    ):
        return None
    group, version, last = kind.get("group", ""), kind.get("version"), kind.get("kind")
    if not (type(group) is str and type(version) is str and type(last) is str):
        return None
    gvk = _KINDS.get((group, version, last)) or _shared(_KINDS, GroupVersionKind, group, version, last)
    group, version, last = resource.get("group", ""), resource.get("version"), resource.get("resource")
    if not (type(group) is str and type(version) is str and type(last) is str):
        return None
    gvr = _RESOURCES.get((group, version, last)) or _shared(_RESOURCES, GroupVersionResource, group, version, last)
    if user is _NO_USER:
        info = _NO_USER
    else:
        if type(user) is not dict:
            return None
        username, user_uid, groups = user.get("username", ""), user.get("uid", ""), user.get("groups", [])
        if not (type(username) is str and type(user_uid) is str and type(groups) is list):
            return None
        for group in groups:
            if type(group) is not str:
                return None
        parts = (username, user_uid, tuple(groups))
        info = _USERS.get(parts) or _shared(_USERS, UserInfo, *parts)
    fields = (uid, gvk, gvr, operation, sub, name, namespace, info, obj, old, dry_run, finite)
    return tuple.__new__(AdmissionRequest, fields)  # one C call (the named tuple's __new__ is a Python function)


_NO_USER = UserInfo()


@dataclass(frozen=True, slots=True)
class AdmissionResponse:
    """What the guard decided; the UID is attached by `build_review`."""

    allowed: bool
    code: int | None = None
    message: str = ""
    reason: str = ""
    patch: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    audit_annotations: tuple[tuple[str, str], ...] = field(default=())
    #: `patch` as the review carries it (base64 of its JSON), made once by `patched`: a remembered
    #: mutation answers every replica without encoding it again
    encoded_patch: str = field(default="", compare=False, repr=False)
    #: this answer's bytes before and after the UID, per `mutating`, kept by its first
    #: `encode_review`: a remembered answer (a replica's mutation, a full node's denial) is encoded
    #: once. Not copied by `dataclasses.replace` (init=False): a changed answer is encoded afresh
    wire: dict[bool, tuple[bytes, bytes]] = field(default_factory=dict, init=False, compare=False, repr=False)


def allowed(message: str = "") -> AdmissionResponse:
    return AdmissionResponse(allowed=True, message=message) if message else PLAIN_ALLOWED


#: `allowed()`: a frozen value, one for every plain admission (`response is PLAIN_ALLOWED` tells it)
PLAIN_ALLOWED = AdmissionResponse(allowed=True)


def denied(message: str, *, code: int = 403, reason: str = "Forbidden") -> AdmissionResponse:
    """A policy rejection (403) or a bad declaration (400), with a message for the pod's author."""
    return AdmissionResponse(allowed=False, code=code, message=message, reason=reason)


def bad_declaration(message: str) -> AdmissionResponse:
    return denied(message, code=400, reason="BadRequest")


def patched(operations: Sequence[dict[str, Any]]) -> AdmissionResponse:
    patch = tuple(operations)
    return AdmissionResponse(allowed=True, patch=patch, encoded_patch=_encoded(patch) if patch else "")


def _encoded(patch: Sequence[dict[str, Any]]) -> str:
    return base64.b64encode(orjson.dumps(list(patch))).decode("ascii")


def errored(message: str, *, code: int = 500) -> AdmissionResponse:
    """Our own failure, reported inside a normal review (the webhook's failurePolicy decides)."""
    return AdmissionResponse(allowed=False, code=code, message=message, reason="InternalError")


def with_warnings(response: AdmissionResponse, warnings: Sequence[str]) -> AdmissionResponse:
    """Attach warnings: at most MAX_WARNINGS, each shortened to MAX_WARNING_CHARS characters."""
    if not warnings:
        return response
    merged = [*response.warnings, *warnings]
    unique = list(dict.fromkeys(w.strip() for w in merged if w.strip()))
    if len(unique) > MAX_WARNINGS:
        unique = [*unique[: MAX_WARNINGS - 1], f"{len(unique) - MAX_WARNINGS + 1} more warning(s)"]
    return replace(response, warnings=tuple(_shorten(w) for w in unique))


def with_audit(response: AdmissionResponse, **annotations: str) -> AdmissionResponse:
    merged = dict(response.audit_annotations)
    merged.update(annotations)
    return replace(response, audit_annotations=tuple(sorted(merged.items())))


def _shorten(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= MAX_WARNING_CHARS else one_line[: MAX_WARNING_CHARS - 1] + "…"


def encode_review(uid: str, response: AdmissionResponse, *, mutating: bool) -> bytes:
    """`build_review` as the JSON bytes of the HTTP answer, made of the bytes before and after the
    UID: fixed for a plain admission (the shared `allowed()` value, most of the traffic), else
    encoded once per response (`AdmissionResponse.wire`) with a marker where the UID goes. The
    UID is the answer's first string after two constants, so the marker's first occurrence is it."""
    if response is PLAIN_ALLOWED:
        return _ALLOWED_HEAD + orjson.dumps(uid) + _ALLOWED_TAIL
    parts = response.wire.get(mutating)
    if parts is None:
        head, _, tail = orjson.dumps(build_review(_UID_MARK, response, mutating=mutating)).partition(_UID_MARK_JSON)
        parts = response.wire[mutating] = (head, tail)
    return parts[0] + orjson.dumps(uid) + parts[1]


_UID_MARK = "\x00uid\x00"  # where build_review puts the UID: its first string after apiVersion and kind
_UID_MARK_JSON = orjson.dumps(_UID_MARK)
_ALLOWED_HEAD, _, _ALLOWED_TAIL = orjson.dumps(
    {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": _UID_MARK, "allowed": True}}
).partition(_UID_MARK_JSON)


def build_review(uid: str, response: AdmissionResponse, *, mutating: bool) -> dict[str, Any]:
    """Serialise a response as an AdmissionReview; the only place the request UID is copied.

    A patch is emitted only from the mutating path and only together with its patchType.
    """
    body: dict[str, Any] = {"uid": uid, "allowed": response.allowed}
    if response.code is not None or response.message:
        status: dict[str, Any] = {}
        if response.code is not None:
            status["code"] = response.code
        if response.message:
            status["message"] = response.message
        if response.reason:
            status["reason"] = response.reason
        body["status"] = status
    if mutating and response.allowed and response.patch:
        body["patch"] = response.encoded_patch or _encoded(response.patch)
        body["patchType"] = "JSONPatch"
    if response.warnings:
        body["warnings"] = list(response.warnings)
    if response.audit_annotations:
        body["auditAnnotations"] = dict(response.audit_annotations)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": body}
