"""One writer at a time: leader election over a `coordination.k8s.io/v1` Lease (design §14).

The protocol is client-go's `leaderelection` with a Lease lock:
- the holder renews `spec.renewTime` every `renew_every` seconds by a replace carrying the
  Lease's `resourceVersion`; kube-apiserver answers 409 Conflict to a replace with a stale one,
  so of two replicas racing for the same Lease exactly one wins (optimistic concurrency);
- a candidate takes the Lease over only when its record has not changed for `duration` seconds
  *as observed on the candidate's own monotonic clock* (never by comparing the holder's
  timestamps with its own wall clock: the replicas' clocks may disagree);
- the holder stops acting as leader when it has not renewed for `renew_deadline` seconds
  (< `duration`), so it has stopped before anyone else can take over;
- on shutdown the holder releases the Lease (empty holder, `leaseDurationSeconds: 1`), so the
  next replica takes over within one retry instead of a whole lease duration.

`LeaseApi` is the seam to the API server (`KubeLeaseApi` speaks to it through the official client,
raw JSON); the decisions are made in `LeaseElector.step`, testable with any `LeaseApi` and clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from webhook.core.rawdict import mapping
from webhook.state.api import ApiError, request_json

log = logging.getLogger("ollama_guard.lease")

LEASE_NAME = "ollama-guard-advertiser"


class LeaseConflict(Exception):
    """The API server refused a create (AlreadyExists) or replace (stale resourceVersion): 409."""


class LeaseApi(Protocol):
    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str
    duration_seconds: int
    transitions: int
    resource_version: str
    #: what changes on every renewal; a candidate times the Lease from its last change
    renew_time: str

    @classmethod
    def read(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec, meta = mapping(lease.get("spec")), mapping(lease.get("metadata"))
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=_int(spec.get("leaseDurationSeconds"), 15),
            transitions=_int(spec.get("leaseTransitions"), 0),
            resource_version=str(meta.get("resourceVersion") or ""),
            renew_time=str(spec.get("renewTime") or ""),
        )


def micro_time(now: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Acquires, renews and releases one Lease; `is_leader` says whether to act right now."""

    def __init__(
        self,
        api: LeaseApi,
        *,
        namespace: str,
        identity: str,
        name: str = LEASE_NAME,
        duration: float = 15.0,
        renew_deadline: float = 10.0,
        renew_every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 0 < renew_every < renew_deadline < duration:
            raise ValueError("need 0 < renew_every < renew_deadline < duration")
        self._api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self._duration, self._deadline, self.renew_every = duration, renew_deadline, renew_every
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._observed: tuple[LeaseRecord | None, float] = (None, 0.0)
        self._renewed_at: float | None = None  # monotonic time of our last successful acquire/renew

    @property
    def is_leader(self) -> bool:
        with self._lock:
            renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self._deadline

    def step(self) -> bool:
        """One attempt to acquire or renew; True when this process holds the Lease afterwards."""
        try:
            held = self._try()
        except LeaseConflict:
            held = False  # another replica wrote first; the next step reads its record
        except Exception as exc:  # the API server is unreachable or misbehaves: no renewal this time
            log.warning("lease %s/%s: %s", self.namespace, self.name, str(exc)[:200])
            return self.is_leader
        if not held:
            with self._lock:
                self._renewed_at = None
        return held

    def release(self) -> None:
        """Give the Lease up (on shutdown) so another replica takes over at its next step."""
        if not self.is_leader:
            return
        with self._lock:
            self._renewed_at = None
            record = self._observed[0]
        if record is None:
            return
        now = micro_time(self._wall())
        body = self._body(record, holder="", duration=1, acquire=now, renew=now, transitions=record.transitions)
        try:
            self._api.replace(self.namespace, self.name, body)
        except Exception as exc:  # best effort: the Lease expires on its own
            log.warning("lease %s/%s: release failed: %s", self.namespace, self.name, str(exc)[:200])

    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set, then release; leaders step every `renew_every`, candidates too."""
        while not stop.is_set():
            was = self.is_leader
            now = self.step()
            if now != was:
                log.info("lease %s/%s: %s", self.namespace, self.name, "acquired" if now else "lost")
            stop.wait(self.renew_every)
        self.release()

    def _try(self) -> bool:
        raw = self._api.get(self.namespace, self.name)
        now_wall, now = micro_time(self._wall()), self._clock()
        if raw is None:
            created = self._api.create(self.namespace, self._body(None, holder=self.identity, acquire=now_wall,
                                                                  renew=now_wall, transitions=0))
            return self._took(LeaseRecord.read(created), now)
        record = LeaseRecord.read(raw)
        with self._lock:
            last, seen_at = self._observed
            if last is None or (last.holder, last.renew_time, last.resource_version) != (
                record.holder, record.renew_time, record.resource_version
            ):
                self._observed = (record, now)
                seen_at = now
        mine = record.holder == self.identity
        expired = not record.holder or now - seen_at >= record.duration_seconds
        if not mine and not expired:
            return False
        transitions = record.transitions if mine else record.transitions + 1
        body = self._body(record, holder=self.identity, acquire=None if mine else now_wall, renew=now_wall,
                          transitions=transitions)
        return self._took(LeaseRecord.read(self._api.replace(self.namespace, self.name, body)), now)

    def _took(self, record: LeaseRecord, now: float) -> bool:
        with self._lock:
            self._observed = (record, now)
            self._renewed_at = now
        return True

    def _body(
        self,
        record: LeaseRecord | None,
        *,
        holder: str,
        acquire: str | None,
        renew: str,
        transitions: int,
        duration: int | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration if duration is not None else int(self._duration),
            "renewTime": renew,
            "leaseTransitions": transitions,
        }
        if acquire is not None:
            spec["acquireTime"] = acquire
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record is not None:
            meta["resourceVersion"] = record.resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


class KubeLeaseApi:
    """`LeaseApi` over the official client's transport (raw JSON; 404 -> None, 409 -> LeaseConflict)."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._send("GET", f"{_leases(namespace)}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", _leases(namespace), body)

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("PUT", f"{_leases(namespace)}/{name}", body)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return request_json(self._client, method, path, body=body)
        except ApiError as exc:
            if exc.status == 409:
                raise LeaseConflict(exc.message) from None
            raise


def _leases(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
