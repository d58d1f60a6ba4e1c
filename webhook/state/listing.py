"""One-shot, read-only listings of the live cluster for the commands that judge it once (`audit`,
`timeslicing plan`): paginated lists through the official client, raw JSON, each item given back
its `apiVersion` and `kind` (a list's items lack them). The webhook itself never lists like this:
it watches (`mirror`).

Errors become `ListingError`, whose message names what failed and the API server's own words.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

#: items per list request (client-go's default page size for reflectors is 500)
LIST_PAGE = 500

#: kind -> (apiVersion, client class, list method)
LISTABLE: dict[str, tuple[str, str, str]] = {
    "Node": ("v1", "CoreV1Api", "list_node"),
    "Namespace": ("v1", "CoreV1Api", "list_namespace"),
    "Pod": ("v1", "CoreV1Api", "list_pod_for_all_namespaces"),
    "Deployment": ("apps/v1", "AppsV1Api", "list_deployment_for_all_namespaces"),
    "StatefulSet": ("apps/v1", "AppsV1Api", "list_stateful_set_for_all_namespaces"),
    "DaemonSet": ("apps/v1", "AppsV1Api", "list_daemon_set_for_all_namespaces"),
}
CLUSTER_KINDS = ("Node", "Namespace", "Pod")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


class ListingError(Exception):
    """A listing the API server refused or that could not be read."""


def list_kinds(api_client: Any, kinds: Sequence[str], *, what: str = "the cluster") -> list[dict[str, Any]]:
    """Every object of `kinds`, in that order."""
    from kubernetes import client as k8s
    from kubernetes.client import ApiException

    objects: list[dict[str, Any]] = []
    try:
        for kind in kinds:
            version, api, method = LISTABLE[kind]
            call = getattr(getattr(k8s, api)(api_client), method)
            objects += list_all(call, api_version=version, kind=kind)
    except ApiException as exc:
        raise ListingError(f"listing {what} failed: HTTP {exc.status} {api_message(exc)}") from None
    except (OSError, ValueError) as exc:
        raise ListingError(f"listing {what} failed: {exc}") from None
    return objects


def list_all(call: Callable[..., Any], *, api_version: str, kind: str) -> list[dict[str, Any]]:
    """All pages of one list call (`limit` + `continue`)."""
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        body = json.loads(call(**kwargs).data)
        for item in body.get("items") or []:
            items.append({"apiVersion": api_version, "kind": kind, **item})
        token = str((body.get("metadata") or {}).get("continue") or "")
        if not token:
            return items


def api_message(exc: Any) -> str:
    """The API server's message from an `ApiException` (its Status body), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or "")[:500]
