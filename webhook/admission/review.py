"""AdmissionReview v1 wire types and the response constructors.

Owns the shape of what kube-apiserver sends (`admission.k8s.io/v1` `AdmissionReview` with a
`request`) and what it accepts back. The request's `object`/`oldObject` stay raw dicts: patches are
computed against exactly what was sent (a re-serialised model would drop unknown fields).

Responses are built only through `allowed`, `denied`, `patched`, `errored` and `with_warnings`;
the request UID is copied onto the response in exactly one place, `build_review`.
No I/O here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

API_VERSION = "admission.k8s.io/v1"
MAX_WARNINGS = 4
MAX_WARNING_CHARS = 120

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class GroupVersionKind(_Wire):
    group: str = ""
    version: str
    kind: str


class GroupVersionResource(_Wire):
    group: str = ""
    version: str
    resource: str


class UserInfo(_Wire):
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


class AdmissionRequest(_Wire):
    """The `request` of an AdmissionReview; `object` and `old_object` are kept raw."""

    uid: str = Field(min_length=1, max_length=128)
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str = Field(default="", alias="subResource")
    name: str = ""
    namespace: str = ""
    operation: Operation
    user_info: UserInfo = Field(default_factory=UserInfo, alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(default=None, alias="oldObject")
    dry_run: bool = Field(default=False, alias="dryRun")


class _Review(_Wire):
    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class ReviewError(ValueError):
    """The body is not an admission.k8s.io/v1 AdmissionReview request (an HTTP 400, not a denial)."""


def parse_review(document: object) -> AdmissionRequest:
    """Validate a decoded JSON document as an AdmissionReview and return its request."""
    if not isinstance(document, dict):
        raise ReviewError("body is not a JSON object; expected an admission.k8s.io/v1 AdmissionReview")
    try:
        return _Review.model_validate(document).request
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ReviewError(f"not an admission.k8s.io/v1 AdmissionReview request: {problems}") from None


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


def allowed(message: str = "") -> AdmissionResponse:
    return AdmissionResponse(allowed=True, message=message) if message else _ALLOWED


_ALLOWED = AdmissionResponse(allowed=True)  # a frozen value: one for every plain admission


def denied(message: str, *, code: int = 403, reason: str = "Forbidden") -> AdmissionResponse:
    """A policy rejection (403) or a bad declaration (400), with a message for the pod's author."""
    return AdmissionResponse(allowed=False, code=code, message=message, reason=reason)


def bad_declaration(message: str) -> AdmissionResponse:
    return denied(message, code=400, reason="BadRequest")


def patched(operations: Sequence[dict[str, Any]]) -> AdmissionResponse:
    return AdmissionResponse(allowed=True, patch=tuple(operations))


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
        raw = orjson.dumps(list(response.patch))
        body["patch"] = base64.b64encode(raw).decode("ascii")
        body["patchType"] = "JSONPatch"
    if response.warnings:
        body["warnings"] = list(response.warnings)
    if response.audit_annotations:
        body["auditAnnotations"] = dict(response.audit_annotations)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": body}
