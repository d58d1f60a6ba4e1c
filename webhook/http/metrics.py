"""Prometheus metrics: the only importer of `prometheus_client`.

Request counts by webhook, kind, operation and decision; a latency histogram up to 5 s;
audit-mode would-be denials by namespace and rule; and, read from the ledger at scrape time,
per guarded node capacity / committed / free VRAM and the number of over-committed nodes; in live
mode, per watched kind, the age of its last event and how long it has been disconnected; with
runtime drift on (design §15), per Ollama pod the VRAM its `/api/ps` reports (absent while unknown,
never 0 for "could not ask"), its demand, the samples above that demand, and pods per verdict.
And which event loop and HTTP parser serve (`ollama_guard_server_info`), with the reviews the direct
path answered and the batches it answered them in.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from webhook.core.advertise import figures
from webhook.core.drift import VERDICTS, Observation
from webhook.core.ledger import Ledger

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class AdmissionStats(Collector):
    """Answered reviews by webhook, kind, operation and decision, and the latency histogram per
    webhook, kept as plain numbers: the request path adds to a dict entry and a list slot (no lock,
    no labelled-child lookup) and the metric families are built at scrape time. Updated and
    scraped on the server's event-loop thread only."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, str], int] = {}
        #: webhook -> [count per bucket (le), count above the last bucket, sum of seconds]
        self._latency: dict[str, list[float]] = {}

    def answered(self, webhook: str, kind: str, operation: str, decision: str, seconds: float) -> None:
        """One decided review, answered in `seconds`."""
        key = (webhook, kind, operation, decision)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        row = self._latency.get(webhook)
        if row is None:
            row = self._latency[webhook] = [0.0] * (len(BUCKETS) + 2)
        row[bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        row[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ollama_guard_admission_requests",
            "Admission reviews answered",
            labels=["webhook", "kind", "operation", "decision"],
        )
        for key, total in sorted(self._counts.items()):
            requests.add_metric(list(key), total)
        latency = HistogramMetricFamily(
            "ollama_guard_admission_duration_seconds", "Time to answer an admission review", labels=["webhook"]
        )
        for webhook, row in sorted(self._latency.items()):
            running, buckets = 0.0, []
            for bound, seen in zip((*BUCKETS, float("inf")), row[:-1], strict=True):
                running += seen
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            latency.add_metric([webhook], buckets, sum_value=row[-1])
        yield from (requests, latency)


class ServerInfo(Collector):
    """`ollama_guard_server_info{loop, http} 1`: the event loop serving the scrape (read from the
    running loop, so it is what runs, not what was asked for) and the HTTP parser uvicorn was given;
    with the direct path (`protocol`), the reviews it answered and the batches it answered them in
    (their quotient is the mean batch: ~1 when idle, more under concurrent load)."""

    def __init__(self) -> None:
        self.http = "unknown"  # set by webhook.http.server.build_server
        #: (reviews, batches) answered on the direct path so far; set by build_server when it runs
        self.direct: Callable[[], tuple[int, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        try:
            loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        except RuntimeError:  # rendered outside the server's loop (tests, tools)
            loop = "none"
        info = GaugeMetricFamily(
            "ollama_guard_server_info", "The event loop and HTTP parser the server runs on", labels=["loop", "http"]
        )
        info.add_metric([loop, self.http], 1.0)
        yield info
        if self.direct is not None:
            reviews, batches = self.direct()
            yield CounterMetricFamily(
                "ollama_guard_direct_reviews", "Admission reviews answered on the direct path", value=reviews
            )
            yield CounterMetricFamily(
                "ollama_guard_direct_batches", "Batches the direct path answered its reviews in", value=batches
            )


class _WatchCollector(Collector):
    """Staleness of the live view, per kind (live mode only): seconds since the last watch event,
    and seconds the kind has been disconnected from the API server (0 while current, issue 20)."""

    def __init__(self, readiness: Callable[[], tuple[bool, Mapping[str, Any]]]) -> None:
        self._readiness = readiness

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready, detail = self._readiness()
        age = GaugeMetricFamily(
            "ollama_guard_watch_last_event_age_seconds",
            "Seconds since the last watch event or bookmark",
            labels=["kind"],
        )
        disconnected = GaugeMetricFamily(
            "ollama_guard_watch_disconnected_seconds",
            "Seconds since the kind's list/watch broke, until it is current again (0: current)",
            labels=["kind"],
        )
        for kind, status in (detail.get("kinds") or {}).items():
            if not isinstance(status, Mapping):
                continue
            seconds = status.get("lastEventAgeSeconds")
            if isinstance(seconds, int | float):
                age.add_metric([str(kind)], float(seconds))
            if "disconnectedSeconds" in status:
                broken = status["disconnectedSeconds"]
                disconnected.add_metric([str(kind)], float(broken) if isinstance(broken, int | float) else 0.0)
        up = GaugeMetricFamily("ollama_guard_ready", "1 when the view is complete and decisions are served")
        up.add_metric([], 1.0 if ready else 0.0)
        yield from (age, disconnected, up)


class _NodeCollector(Collector):
    def __init__(self, ledger: Callable[[], Ledger]) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ledger = self._ledger()
        capacity = GaugeMetricFamily(
            "ollama_guard_node_vram_capacity_mib",
            "Usable VRAM of a guarded node (capacity minus reserved), MiB",
            labels=["node"],
        )
        committed = GaugeMetricFamily(
            "ollama_guard_node_vram_committed_mib",
            "VRAM committed on a guarded node (tenants + pending reservations), MiB",
            labels=["node"],
        )
        free = GaugeMetricFamily(
            "ollama_guard_node_vram_free_mib",
            "Free VRAM of a guarded node, MiB (negative when over-committed)",
            labels=["node"],
        )
        over = GaugeMetricFamily(
            "ollama_guard_overcommitted_nodes", "Guarded nodes whose committed VRAM exceeds their budget"
        )
        count = 0
        shown, wanted, uncovered = _advertised_families()
        view = ledger.view
        for name, figure in figures(view).items():
            node = view.nodes.get(name)
            if figure.figure is not None:
                wanted.add_metric([name], figure.figure)
            uncovered.add_metric([name], figure.uncovered_mib)
            on_node = node.advertised[1] if node is not None else view.stray_advertised.get(name)
            if on_node is not None:
                shown.add_metric([name], on_node)
        yield from (shown, wanted, uncovered)
        for node in view.nodes.values():
            if not node.guarded:
                continue
            used = ledger.committed(node.name)
            capacity.add_metric([node.name], node.budget_mib)
            committed.add_metric([node.name], used)
            free.add_metric([node.name], node.budget_mib - used)
            count += used > node.budget_mib
        over.add_metric([], count)
        yield from (capacity, committed, free, over)


def _advertised_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    """Design §14: what each node shows the scheduler, what the guard wants there, and why it differs."""
    return (
        GaugeMetricFamily(
            "ollama_guard_node_vram_advertised_mib",
            "ollama-guard.io/vram-mib in the node's status.allocatable as the watch shows it now, MiB",
            labels=["node"],
        ),
        GaugeMetricFamily(
            "ollama_guard_node_vram_advertise_target_mib",
            "The figure the advertiser keeps on the node: usable VRAM minus tenants the resource does not cover",
            labels=["node"],
        ),
        GaugeMetricFamily(
            "ollama_guard_node_vram_uncovered_mib",
            "VRAM of GPU tenants on the node that do not request ollama-guard.io/vram-mib (held back), MiB",
            labels=["node"],
        ),
    )


class _DriftCollector(Collector):
    """Runtime drift, read from the monitor's latest observations at scrape time."""

    def __init__(self, observations: Callable[[], Mapping[str, Observation]]) -> None:
        self._observations = observations

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "pod", "node"]
        observed = GaugeMetricFamily(
            "ollama_guard_pod_vram_observed_mib",
            "VRAM an Ollama pod holds by its own GET /api/ps (sum of size_vram), MiB; absent while unknown",
            labels=labels,
        )
        demand = GaugeMetricFamily(
            "ollama_guard_pod_vram_demand_mib",
            "The VRAM demand an observed Ollama pod is accounted with, MiB",
            labels=labels,
        )
        over = CounterMetricFamily(
            "ollama_guard_pod_vram_over_demand_samples",
            "Samples in which an Ollama pod held more VRAM than its demand (the estimate fell short)",
            labels=labels,
        )
        verdicts = GaugeMetricFamily(
            "ollama_guard_drift_pods",
            "Observed Ollama pods by verdict: over, idle, low, within, unknown",
            labels=["verdict"],
        )
        counts = dict.fromkeys(VERDICTS, 0)
        for _, obs in sorted(self._observations().items()):
            where = [obs.namespace, obs.name, obs.node]
            demand.add_metric(where, obs.demand_mib)
            over.add_metric(where, obs.samples_over)
            if obs.observed_mib is not None:
                observed.add_metric(where, obs.observed_mib)
            counts[obs.verdict] += 1
        for verdict, count in counts.items():
            verdicts.add_metric([verdict], count)
        yield from (observed, demand, over, verdicts)


class Metrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(
        self,
        ledger: Callable[[], Ledger],
        readiness: Callable[[], tuple[bool, Mapping[str, Any]]] | None = None,
        *,
        drift: Callable[[], Mapping[str, Observation]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.admissions = AdmissionStats()
        self.registry.register(self.admissions)
        self.would_deny = Counter(
            "ollama_guard_would_deny",
            "Violations allowed by audit mode",
            ["namespace", "reason"],
            registry=self.registry,
        )
        self.bad_requests = Counter(
            "ollama_guard_bad_requests",
            "Requests rejected before admission (400/413/415)",
            ["webhook", "status"],
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(ledger))
        self.server = ServerInfo()
        self.registry.register(self.server)
        if readiness is not None:
            self.registry.register(_WatchCollector(readiness))
        if drift is not None:
            self.registry.register(_DriftCollector(drift))

    def render(self) -> bytes:
        return generate_latest(self.registry)
