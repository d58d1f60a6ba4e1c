"""Raw JSON requests to the Kubernetes API through the official client's transport (auth, TLS, proxy).

The writers (node advertiser, lease elector) send exactly the JSON they mean, with the content
type they mean (`application/merge-patch+json` for a node status patch): the generated models would
validate and re-serialise the body, and the generated `patch_*` methods pick a patch content type
by guessing. An answer outside 2xx raises `ApiError` with the status code and the API server's own
message (its `Status` body), so callers can tell 404, 409 and 422 apart.
"""

from __future__ import annotations

import json
from typing import Any

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def request_json(
    api_client: Any,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    content_type: str = "application/json",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Send one request; the decoded JSON object on 2xx, else `ApiError` (never a bare urllib3 error
    for an HTTP answer; connection failures propagate as the transport raises them)."""
    from kubernetes.client import ApiException

    headers = {"Accept": "application/json", "Content-Type": content_type}
    serialized = api_client.param_serialize(
        method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    try:
        response = api_client.call_api(*serialized[:4], _request_timeout=timeout)
        data = response.read()
        status = int(response.status)
    except ApiException as exc:
        data, status = (exc.body or b""), int(exc.status or 0)
    if not 200 <= status < 300:
        reason, message = _status_text(data)
        raise ApiError(status, reason, message)
    decoded = json.loads(data)
    if not isinstance(decoded, dict):
        raise ApiError(status, "BadResponse", "the API server's answer is not a JSON object")
    return decoded


def _status_text(data: bytes | str) -> tuple[str, str]:
    try:
        body = json.loads(data)
    except ValueError:
        return "", str(data)[:200]
    if not isinstance(body, dict):
        return "", str(data)[:200]
    return str(body.get("reason") or ""), str(body.get("message") or "")[:500]
