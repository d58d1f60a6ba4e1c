"""The live page's data (design §15): the audit of the view the guard decides with, and its JSON.

`live_report` audits the published view plus the bindings the ledger has reserved and the view
does not show yet (what the fit rule and `/metrics` count as committed), with the runtime drift
observations on each tenant and their findings. `live_document` is the audit's own
`schemaVersion`ed JSON (`render_policy.json_document`, so the page and `ollama-guard audit
--format json` read alike) plus what only a running guard has:

    observations   runtime drift, one per Ollama pod the guard asked: {namespace, name, node,
                   demandMiB, observedMiB (null: unknown, never 0 for "could not ask"),
                   verdict (over|idle|low|within|unknown), detail (why unknown), sampledAt,
                   lowSince, samplesOverDemand, models: [{name, sizeVramMiB, sizeMiB,
                   contextLength (null: not reported), expiresAt}]}
    drift          {enabled, intervalSeconds, why: what the page says when it is off}
    recent         the latest denials and warnings, newest first, as the caller gives them
    nodeBars       node name -> {svg: the node's bar exactly as `audit --format html` draws it,
                   colors: {tenant namespace/name: its colour in that bar}}

Nothing in it is a Secret or a credential: names, figures, policies and messages. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from webhook.audit.model import AuditReport
from webhook.audit.render_html import node_bar, tenant_color
from webhook.audit.render_policy import json_document
from webhook.audit.run import audit_view
from webhook.core.catalog import Catalog
from webhook.core.drift import MIB, Observation
from webhook.core.ledger import Reservation
from webhook.core.policy import ClusterPolicy
from webhook.core.view import ClusterView, Tenant, assemble_view


def with_reservations(
    view: ClusterView, reservations: Sequence[Reservation], find_tenant: Callable[[str], Tenant | None]
) -> ClusterView:
    """`view` with each reserved pod it does not show bound placed on its reserved node (one
    assembly, whatever the number of reservations). `find_tenant` is the ledger's lookup of the pod
    admitted at CREATE; a pod it no longer knows counts as the reservation says."""
    tenants = dict(view.tenants)
    for res in reservations:
        shown = tenants.get(res.key)
        if shown is not None and shown.uid == res.uid and shown.node == res.node:
            continue  # the view counts it already
        namespace, _, name = res.key.partition("/")
        known = find_tenant(res.key)
        if known is None:
            known = Tenant(
                namespace=namespace,
                name=name,
                uid=res.uid,
                node=res.node,
                gpus=1,
                is_ollama=False,
                demand_mib=res.demand_mib,
                source="reservation",
            )
        tenants[res.key] = known._replace(node=res.node, uid=res.uid)
    if len(tenants) == len(view.tenants) and all(tenants[k] is t for k, t in view.tenants.items()):
        return view
    assembled = assemble_view(view.nodes, view.namespaces, tenants)
    return replace(
        view,
        tenants=assembled.tenants,
        committed=assembled.committed,
        bound=assembled.bound,
        namespace_usage=assembled.namespace_usage,
    )


def live_report(
    view: ClusterView,
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    now: datetime,
    origin: str,
    reservations: Sequence[Reservation] = (),
    find_tenant: Callable[[str], Tenant | None] = lambda key: None,
    observations: Mapping[str, Observation] | None = None,
) -> AuditReport:
    """The audit of what the guard holds now (see the module docstring)."""
    return audit_view(
        with_reservations(view, reservations, find_tenant),
        cluster=cluster,
        catalog=catalog,
        now=now,
        state_origin=origin,
        observations=observations,
    )


def live_document(
    report: AuditReport,
    *,
    observations: Mapping[str, Observation],
    recent: Sequence[Mapping[str, Any]],
    drift: Mapping[str, Any],
) -> dict[str, Any]:
    """The audit's JSON plus observations, drift status, recent decisions and the node bars."""
    document = json_document(report)
    document["observations"] = [observation_json(o) for _, o in sorted(observations.items())]
    document["drift"] = dict(drift)
    document["recent"] = [dict(entry) for entry in recent]
    document["nodeBars"] = {
        line.node.name: {
            "svg": node_bar(line),
            "colors": {t.key: tenant_color(i) for i, t in enumerate(line.tenants)},
        }
        for line in report.nodes
    }
    return document


def observation_json(obs: Observation) -> dict[str, Any]:
    return {
        "namespace": obs.namespace,
        "name": obs.name,
        "node": obs.node,
        "demandMiB": obs.demand_mib,
        "observedMiB": obs.observed_mib,
        "verdict": obs.verdict,
        "detail": obs.detail,
        "sampledAt": _iso(obs.sampled_at),
        "lowSince": _iso(obs.low_since) if obs.low_since is not None else None,
        "samplesOverDemand": obs.samples_over,
        "models": [
            {
                "name": m.name,
                "sizeVramMiB": round(m.vram_bytes / MIB, 1),
                "sizeMiB": round(m.size_bytes / MIB, 1),
                "contextLength": m.context_length,
                "expiresAt": m.expires_at,
            }
            for m in obs.models
        ],
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
