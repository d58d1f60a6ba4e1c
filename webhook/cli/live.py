"""`serve`'s live page and runtime drift (design §15): the wiring, no logic of its own.

- `drift_targets`: what the drift monitor asks, from the source's current view (the live mirror's
  projections, or the endpoints a snapshot file gave while it was read).
- `page_state`: the page's JSON (`webhook.audit.live` over `source.ledger`: the view plus its
  reservations, the latest observations and the ring of recent decisions), rebuilt only when one of
  them changed, so any number of open pages costs one build per change.
- `start_page`: binds the page's socket and prints its URL; a port that cannot be bound is a
  warning, never a reason for the webhook not to serve.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from webhook.audit.live import live_document, live_report
from webhook.cli.app import err
from webhook.core.catalog import Catalog
from webhook.core.policy import ClusterPolicy
from webhook.http.page import Companion, bind_socket, companion, create_page_app, is_loopback
from webhook.http.recent import RecentDecisions
from webhook.state.drift import DriftMonitor, DriftTarget, Endpoint, pod_endpoint, targets_from
from webhook.state.snapshot import StateSource


def drift_targets(
    source: StateSource, snapshot_endpoints: Mapping[str, Endpoint | str]
) -> Callable[[], list[DriftTarget]]:
    mirror = getattr(source, "mirror", None)
    if mirror is not None:

        def endpoint(key: str) -> Endpoint | str:
            return pod_endpoint(mirror.get("Pod", key))
    else:

        def endpoint(key: str) -> Endpoint | str:
            return snapshot_endpoints.get(key, "the snapshot does not say where the pod is")

    return lambda: targets_from(source.ledger.view, endpoint)


def drift_status(monitor: DriftMonitor | None, *, why_off: str) -> dict[str, Any]:
    """The page's `drift` entry: on (and how often), or why it is off."""
    if monitor is not None:
        return {"enabled": True, "intervalSeconds": monitor.interval, "why": ""}
    return {"enabled": False, "intervalSeconds": 0, "why": why_off}


def page_state(
    source: StateSource,
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    origin: str,
    monitor: DriftMonitor | None,
    recent: RecentDecisions,
    drift: Mapping[str, Any],
) -> Callable[[], bytes]:
    """The page's JSON document, cached until the view, a reservation, a drift round or the ring changes."""
    lock = threading.Lock()
    cached: list[Any] = [None, None, b""]  # the view it was built from, the rest of its key, the body

    def build() -> bytes:
        ledger = source.ledger
        view, reservations = ledger.view, ledger.reservations()
        key = (reservations, monitor.generation if monitor else 0, recent.generation)
        with lock:
            if cached[0] is view and cached[1] == key:
                body: bytes = cached[2]
                return body
            observations = monitor.observations() if monitor else {}
            report = live_report(
                view,
                cluster=cluster,
                catalog=catalog,
                now=datetime.now(UTC).replace(microsecond=0),
                origin=origin,
                reservations=reservations,
                find_tenant=ledger.find_tenant,
                observations=observations,
            )
            entries = [e.to_json() for e in recent.entries()]
            document = live_document(report, observations=observations, recent=entries, drift=drift)
            body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            cached[:] = [view, key, body]
            return body

    return build


def start_page(state: Callable[[], bytes], *, host: str, port: int) -> Companion | None:
    """The page's server on `host:port`, its URL printed; None (and a warning) when it cannot bind."""
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        err.print(
            f"[bold yellow]warning:[/] live page not served: cannot listen on {host}:{port} "
            f"({exc.strerror or exc}); choose another port with --ui-port (0 turns the page off)",
            highlight=False,
            soft_wrap=True,
        )
        return None
    app = create_page_app(state=state, loopback_only=is_loopback(host))
    bound = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    reach = (
        ""
        if is_loopback(host)
        else " (reachable from other machines: no credentials are shown, but it is not protected)"
    )
    err.print(
        f"live VRAM page (read-only): http://{shown}:{bound}/  ·  JSON: http://{shown}:{bound}/api/state{reach}",
        highlight=False,
        soft_wrap=True,
    )
    return companion(app, sock)
