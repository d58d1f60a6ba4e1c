"""The node advertiser: keeps `ollama-guard.io/vram-mib` in each node's status at its figure (design §14).

Reads the same published `ClusterView` the webhooks use, computes the wanted figures
(`webhook.core.advertise`) and sends a JSON merge patch of `status.capacity` and
`status.allocatable` for each node whose status differs, only while this process holds the
advertiser Lease (`LeaseElector.is_leader`). It writes only on change: a node is patched when
what it shows differs from what it should show, and not patched again for the same figure
until the watch has had `resend_after` seconds to show the result (so a slow watch does not turn
into a stream of identical patches). A node that the kubelet zeroed (re-created node) shows a
different figure and is written again; a node that is no GPU node any more gets the resource
removed (`null`). Nothing is written while the view is known to be stale (issue 20: after an API
server outage the view may miss pods that left or arrived): the figures stay as last written until
it is current again. A failed patch is logged and retried at the next step; it never stops the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from webhook.core.advertise import NodeFigure, NodeWrite, figures, plan_writes
from webhook.core.view import ClusterView
from webhook.state.api import MERGE_PATCH, ApiError, request_json
from webhook.state.lease import LeaseElector

log = logging.getLogger("ollama_guard.advertiser")


class NodeStatusApi(Protocol):
    def patch_status(self, node: str, patch: dict[str, Any]) -> dict[str, Any]: ...


class KubeNodeStatusApi:
    """`PATCH /api/v1/nodes/{name}/status` with `application/merge-patch+json`."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    def patch_status(self, node: str, patch: dict[str, Any]) -> dict[str, Any]:
        return request_json(self._client, "PATCH", f"/api/v1/nodes/{node}/status", body=patch, content_type=MERGE_PATCH)


class NodeAdvertiser:
    """One step: wanted figures vs what nodes show -> merge patches (leader only)."""

    def __init__(
        self,
        view: Callable[[], ClusterView],
        api: NodeStatusApi,
        *,
        elector: LeaseElector | None = None,
        interval: float = 1.0,
        resend_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._view, self._api, self.elector = view, api, elector
        self.interval, self._resend_after, self._clock = interval, resend_after, clock
        self._sent: dict[str, tuple[int | None, tuple[int | None, int | None], float]] = {}
        self.wanted: Mapping[str, NodeFigure] = {}
        self.writes = 0
        self.failures = 0

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def step(self) -> list[NodeWrite]:
        """Write what differs; returns the writes that the API server accepted."""
        view = self._view()
        self.wanted = figures(view)
        if view.stale is not None:
            return []  # a view missing changes (an API server outage) could lower or remove figures wrongly
        if not self.leading:
            self._sent.clear()  # a new term starts from what the nodes show, not from what we sent
            return []
        now, done = self._clock(), []
        for write in plan_writes(view, self.wanted):
            last = self._sent.get(write.node)
            if last is not None and last[:2] == (write.figure, write.shown) and now - last[2] < self._resend_after:
                continue  # sent already; the watch has not shown it yet
            if self._send(write):
                self._sent[write.node] = (write.figure, write.shown, now)
                done.append(write)
        return done

    def run(self, stop: threading.Event, *, ready: Callable[[], bool] = lambda: True) -> None:
        """Until `stop`: once `ready` (the view holds every kind's first list: a partial view would
        remove figures), step the Lease every `renew_every` and the advertiser every `interval`;
        on the way out give the Lease up so another replica takes over at once."""
        next_lease = 0.0
        while not stop.is_set():
            try:
                if ready():
                    now = self._clock()
                    if self.elector is not None and now >= next_lease:
                        self.elector.step()
                        next_lease = now + self.elector.renew_every
                    self.step()
            except Exception:  # our own bug must not end advertising for the process's lifetime
                log.exception("advertiser step failed")
            stop.wait(self.interval)
        if self.elector is not None:
            self.elector.release()

    def _send(self, write: NodeWrite) -> bool:
        try:
            self._api.patch_status(write.node, write.merge_patch())
        except ApiError as exc:
            self.failures += 1
            if exc.status != 404:  # a node deleted since the view was published: nothing to do
                log.warning("node %s: cannot write %s: %s", write.node, write.figure, exc)
            return False
        except Exception as exc:  # connection refused, timeout: retried at the next step
            self.failures += 1
            log.warning("node %s: cannot write %s: %s", write.node, write.figure, str(exc)[:200])
            return False
        self.writes += 1
        shown = "removed" if write.figure is None else f"{write.figure} MiB"
        log.info("node %s: ollama-guard.io/vram-mib %s (was %s)", write.node, shown, write.shown[0])
        return True
