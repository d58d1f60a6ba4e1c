"""`AdmissionStats` (plain numbers on the request path) renders exactly what prometheus_client's own
Counter and Histogram would for the same observations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from webhook.http.metrics import BUCKETS, AdmissionStats

WEBHOOKS = st.sampled_from(["mutate", "validate"])
LATENCIES = st.one_of(st.sampled_from([0.0, *BUCKETS, 5.000001, 60.0]), st.floats(0, 10, allow_nan=False))
REVIEWS = st.lists(
    st.tuples(
        WEBHOOKS,
        st.sampled_from(["Pod", "Binding", "Deployment"]),
        st.sampled_from(["CREATE", "UPDATE"]),
        st.sampled_from(["allowed", "patched", "denied", "warned", "error"]),
        LATENCIES,
    ),
    max_size=40,
)


def _samples(text: str, prefix: str) -> list[str]:
    """The sample lines of one family, without `_created` timestamps and with sums rounded."""
    lines = []
    for line in text.splitlines():
        if not line.startswith(prefix) or "_created" in line:
            continue
        name, value = line.rsplit(" ", 1)
        lines.append(f"{name} {round(float(value), 9)}")
    return sorted(lines)


@settings(max_examples=200, deadline=None)
@given(REVIEWS)
def test_admission_stats_render_like_prometheus_client(reviews: list[tuple[str, str, str, str, float]]) -> None:
    ours = CollectorRegistry()
    stats = AdmissionStats()
    ours.register(stats)
    reference = CollectorRegistry()
    counter = Counter(
        "ollama_guard_admission_requests",
        "Admission reviews answered",
        ["webhook", "kind", "operation", "decision"],
        registry=reference,
    )
    histogram = Histogram(
        "ollama_guard_admission_duration_seconds",
        "Time to answer an admission review",
        ["webhook"],
        buckets=BUCKETS,
        registry=reference,
    )
    for webhook, kind, operation, decision, seconds in reviews:
        stats.answered(webhook, kind, operation, decision, seconds)
        counter.labels(webhook, kind, operation, decision).inc()
        histogram.labels(webhook).observe(seconds)
    got, want = generate_latest(ours).decode(), generate_latest(reference).decode()
    for family in ("ollama_guard_admission_requests_total", "ollama_guard_admission_duration_seconds"):
        assert _samples(got, family) == _samples(want, family)
