"""Runtime drift (design §15): each Ollama pod's own `GET /api/ps` against its demand.

Against real HTTP servers on loopback that speak Ollama's `api.ProcessResponse` (`tests/fake_ollama.py`):
matching, over, under (idle), slow, dripping, huge, redirecting, garbage, an error status and a
refused connection; then the comparison and its words, the metrics, the live projection that keeps
the pod IP and port, and `serve --drift on` end to end (the page's JSON, the audit results, /metrics).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_ollama import (
    FakeOllama,
    PodSpec,
    answer,
    chunked,
    closed_port,
    drip,
    fake_ollamas,
    gpu_node,
    loaded,
    namespace,
    ps_body,
    redirect,
    slow,
    stamped_pod,
    write_snapshot,
)
from guard_process import serving
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from webhook.audit.findings import observed_finding
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.drift import MIB, DriftPolicy, LoadedModel, Observation, PsFormatError, observe, parse_ps
from webhook.core.ledger import Ledger
from webhook.core.view import ClusterView, build_view
from webhook.http.metrics import Metrics
from webhook.state.drift import DriftMonitor, DriftTarget, Endpoint, pod_endpoint, targets_from
from webhook.state.live import project

DEMAND = 8000  # MiB
TIMEOUT = 0.6  # seconds: short, so the slow cases are quick


def target(port: int, *, name: str = "ollama-0", demand: int = DEMAND) -> DriftTarget:
    return DriftTarget("team-a", name, "gpu-a", demand, Endpoint("127.0.0.1", port))


def poll_once(monitor: DriftMonitor, *targets: DriftTarget) -> dict[str, Observation]:
    asyncio.run(monitor.poll(list(targets)))
    return dict(monitor.observations())


def monitor(**kwargs: Any) -> DriftMonitor:
    return DriftMonitor(lambda: [], timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)


# --- against fake Ollama servers ------------------------------------------------------------------
HUGE = ps_body(loaded("llama3.1:8b", 6000)) + b" " * (2 << 20)  # valid JSON, padded past the 1 MiB limit

CASES = [
    pytest.param(answer(ps_body(loaded("llama3.1:8b", 6144, context=8192))), "within", 6144, "", id="matching"),
    pytest.param(
        answer(ps_body(loaded("llama3.1:8b", 6144), loaded("nomic-embed-text", 3000, context=2048))),
        "over",
        9144,
        "",
        id="over-two-models-loaded",
    ),
    pytest.param(answer(ps_body()), "low", 0, "", id="under-nothing-loaded"),
    pytest.param(answer(b'{"models":null}'), "low", 0, "", id="under-nil-slice"),
    pytest.param(
        slow(3 * TIMEOUT, answer(ps_body(loaded("llama3.1:8b", 6144)))),
        "unknown",
        None,
        "no complete answer within 0.6 s",
        id="slow",
    ),
    pytest.param(
        drip(ps_body(loaded("llama3.1:8b", 6144)), every=0.05),
        "unknown",
        None,
        "no complete answer within 0.6 s",
        id="dripping-body-each-read-quick",
    ),
    pytest.param(answer(HUGE), "unknown", None, "over the 1048576 byte limit", id="huge-declared"),
    pytest.param(chunked(HUGE), "unknown", None, "answer is over the 1048576 byte limit", id="huge-chunked"),
    pytest.param(
        answer(b"<html><body>Ollama is running</body></html>", content_type="text/html"),
        "unknown",
        None,
        "not JSON",
        id="garbage",
    ),
    pytest.param(
        answer(b'{"models": [{"name": "llama3.1:8b", "size_vram": "6 GB"}]}'),
        "unknown",
        None,
        "size_vram must be a whole number of bytes, got '6 GB'",
        id="wrong-type",
    ),
    pytest.param(
        answer(b'{"error": "unauthorized"}', status=401), "unknown", None, "answered HTTP 401", id="error-status"
    ),
]


@pytest.mark.parametrize(("behaviour", "verdict", "observed_mib", "detail"), CASES)
def test_one_round_against_a_fake_ollama(behaviour: Any, verdict: str, observed_mib: int | None, detail: str) -> None:
    with FakeOllama(behaviour) as fake:
        started = time.monotonic()
        found = poll_once(monitor(), target(fake.port))["team-a/ollama-0"]
        elapsed = time.monotonic() - started
    assert (found.verdict, found.observed_mib) == (verdict, observed_mib)
    assert detail in found.detail
    if verdict == "unknown":
        assert found.detail.startswith(f"http://127.0.0.1:{fake.port}/api/ps: ")
    assert elapsed < TIMEOUT + 1.0  # the timeout bounds the whole exchange, the slow drip included
    assert fake.paths == ["/api/ps"]


def test_a_redirect_is_not_followed() -> None:
    with (
        FakeOllama(answer(ps_body(loaded("llama3.1:8b", 100)))) as elsewhere,
        FakeOllama(redirect(f"http://127.0.0.1:{elsewhere.port}/api/ps")) as fake,
    ):
        found = poll_once(monitor(), target(fake.port))["team-a/ollama-0"]
    assert found.verdict == "unknown" and found.observed_mib is None
    assert f"answered HTTP 302 (redirect to http://127.0.0.1:{elsewhere.port}/api/ps; not followed)" in found.detail
    assert (fake.hits, elsewhere.hits) == (1, 0)


def test_a_refused_connection_is_unknown_not_zero() -> None:
    port = closed_port()
    found = poll_once(monitor(), target(port))["team-a/ollama-0"]
    assert (found.verdict, found.observed_mib, found.observed_bytes) == ("unknown", None, None)
    assert "cannot connect" in found.detail


def test_a_pod_without_an_ip_is_unknown_without_being_asked() -> None:
    pending = DriftTarget("team-a", "new", "gpu-a", DEMAND, None, "the pod has no IP yet")
    found = poll_once(monitor(), pending)["team-a/new"]
    assert (found.verdict, found.detail) == ("unknown", "the pod has no IP yet")


def test_concurrency_is_bounded_and_every_pod_is_asked() -> None:
    behaviour = slow(0.3, answer(ps_body(loaded("llama3.1:8b", 10))))
    with FakeOllama(behaviour) as fake:
        targets = [target(fake.port, name=f"ollama-{i}") for i in range(6)]
        found = poll_once(monitor(concurrency=2, timeout=2.0), *targets)
    assert sorted(found) == sorted(f"team-a/ollama-{i}" for i in range(6))
    assert {o.verdict for o in found.values()} == {"low"}
    assert (fake.hits, fake.most_at_once) == (6, 2)


def test_idle_after_a_long_low_streak_and_over_samples_are_counted() -> None:
    clock = [1000.0]
    watch = DriftMonitor(lambda: [], timeout=TIMEOUT, clock=lambda: clock[0], policy=DriftPolicy(0.25, 600.0))
    with FakeOllama(answer(ps_body(loaded("llama3.1:8b", 500)))) as fake:
        t = target(fake.port)
        seen = [poll_once(watch, t)["team-a/ollama-0"]]
        clock[0] += 599
        seen.append(poll_once(watch, t)["team-a/ollama-0"])
        clock[0] += 1
        seen.append(poll_once(watch, t)["team-a/ollama-0"])
        fake.behaviour = answer(ps_body(loaded("llama3.1:70b", 9000)))
        seen += [poll_once(watch, t)["team-a/ollama-0"] for _ in range(2)]
        fake.behaviour = answer(b"garbage")
        seen.append(poll_once(watch, t)["team-a/ollama-0"])
    assert [o.verdict for o in seen] == ["low", "low", "idle", "over", "over", "unknown"]
    assert [o.low_since for o in seen] == [1000.0, 1000.0, 1000.0, None, None, None]
    assert [o.samples_over for o in seen] == [0, 0, 0, 1, 2, 2]


def test_the_monitor_thread_asks_new_pods_at_once_and_drops_gone_ones() -> None:
    with FakeOllama(answer(ps_body(loaded("llama3.1:8b", 6000)))) as fake:
        targets = [target(fake.port)]
        watch = DriftMonitor(lambda: list(targets), interval=60, timeout=TIMEOUT, check_every=0.05)
        watch.start()
        try:
            wait_for(lambda: "team-a/ollama-0" in watch.observations())
            targets.append(target(fake.port, name="ollama-1"))
            wait_for(lambda: "team-a/ollama-1" in watch.observations())  # long before the 60 s interval
            targets.pop(0)
            wait_for(lambda: "team-a/ollama-0" not in watch.observations())
        finally:
            watch.stop()
    assert watch.interval == 60 and DriftMonitor(lambda: []).timeout == 2.0  # the default is 2 s


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- parsing and comparing (pure) -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(b"[]", "expected a JSON object with 'models', got list", id="a-list"),
        pytest.param(b"{}", "no 'models' field", id="no-models"),
        pytest.param(b'{"models": {}}', "'models' must be a list, got dict", id="models-not-a-list"),
        pytest.param(b'{"models": [7]}', "models[0] must be an object", id="entry-not-an-object"),
        pytest.param(b'{"models": [{"size_vram": 1}]}', "models[0] has no name", id="no-name"),
        pytest.param(b'{"models": [{"name": "m"}]}', "models[0] (m): size_vram must be", id="no-size-vram"),
        pytest.param(b'{"models": [{"name": "m", "size_vram": -1}]}', "got -1", id="negative"),
        pytest.param(b'{"models": [{"name": "m", "size_vram": true}]}', "got True", id="bool"),
        pytest.param(b'{"models": [{"name": "m", "size_vram": 1.5}]}', "got 1.5", id="fraction"),
        pytest.param(
            b'{"models": [{"name": "m", "size_vram": 9223372036854775808}]}',
            "got 9223372036854775808",
            id="beyond-int64",
        ),
        pytest.param(
            b'{"models": [{"name": "m", "size_vram": 1, "context_length": "8k"}]}',
            "context_length must be a whole number",
            id="context-text",
        ),
        pytest.param(b"\xff\xfe", "not JSON", id="not-utf8"),
        pytest.param(b"[" * 100_000, "not JSON", id="deep-nesting"),
    ],
)
def test_parse_ps_names_what_is_wrong(body: bytes, error: str) -> None:
    with pytest.raises(PsFormatError) as caught:
        parse_ps(body)
    assert error in str(caught.value)


def test_parse_ps_reads_ollamas_own_example() -> None:
    """The example of docs.ollama.com/api/ps, as Ollama 0.12 prints it."""
    body = (
        b'{"models":[{"name":"gemma3","model":"gemma3","size":6591830464,"digest":"a2af6cc3eb7f",'
        b'"details":{"parent_model":"","format":"gguf","family":"gemma3","families":["gemma3"],'
        b'"parameter_size":"4.3B","quantization_level":"Q4_K_M"},"expires_at":"2025-10-17T16:47:07.93355-07:00",'
        b'"size_vram":5333539264,"context_length":4096}]}'
    )
    (model,) = parse_ps(body)
    assert model == LoadedModel("gemma3", 6591830464, 5333539264, 4096, "2025-10-17T16:47:07.93355-07:00")


model_entries = st.lists(
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=20), "size_vram": st.integers(0, (1 << 63) - 1)},
        optional={"context_length": st.integers(1, 1 << 20), "size": st.integers(0, 1 << 40)},
    ),
    max_size=8,
)


@given(model_entries)
def test_parse_ps_sums_what_it_is_given(entries: list[dict[str, Any]]) -> None:
    models = parse_ps(json.dumps({"models": entries}))
    assert sum(m.vram_bytes for m in models) == sum(e["size_vram"] for e in entries)
    assert [m.context_length for m in models] == [e.get("context_length") for e in entries]


@given(st.binary(max_size=300))
def test_parse_ps_either_reads_or_says_why(body: bytes) -> None:
    try:
        parse_ps(body)
    except PsFormatError as exc:
        assert str(exc)


@pytest.mark.parametrize(
    ("vram_mib", "verdict"),
    [
        pytest.param(DEMAND, "within", id="exactly-the-demand"),
        pytest.param(DEMAND + 1 / 1024, "over", id="one-kib-above"),
        pytest.param(DEMAND / 4, "within", id="a-quarter"),
        pytest.param(DEMAND / 4 - 1, "low", id="below-a-quarter"),
    ],
)
def test_observe_compares_bytes_with_the_demand(vram_mib: float, verdict: str) -> None:
    model = LoadedModel("m", 0, int(vram_mib * MIB))
    found = observe(None, namespace="a", name="p", node="n", demand_mib=DEMAND, models=[model], now=0.0)
    assert found.verdict == verdict


# --- what the audit and the page say ----------------------------------------------------------------
def test_the_over_finding_names_the_models_and_their_context() -> None:
    models = [LoadedModel("llama3.1:8b", 0, 21_000 * MIB, 131072), LoadedModel("nomic-embed-text", 0, 300 * MIB)]
    obs = observe(None, namespace="team-a", name="ollama-0", node="gpu-a", demand_mib=DEMAND, models=models, now=0)
    finding = observed_finding(obs)
    assert (finding.rule, finding.result, finding.severity, finding.category) == (
        "observed-vram",
        "warn",
        "high",
        "Runtime drift",
    )
    assert finding.message == (
        "pod team-a/ollama-0 holds 20.8 GiB of VRAM on gpu-a by its own Ollama's account (/api/ps), 13.0 GiB above "
        "the 7.8 GiB it is accounted with: the estimate fell short, and its neighbours on the GPU may run out of "
        "memory. Loaded: llama3.1:8b (context 131072, 20.5 GiB VRAM), nomic-embed-text (context not reported, "
        "300 MiB VRAM). Lower its OLLAMA_CONTEXT_LENGTH or OLLAMA_NUM_PARALLEL, or declare what it needs in "
        "ollama-guard.io/vram"
    )
    assert finding.namespace == "team-a" and dict(finding.properties)["observedMiB"] == "21300"


def test_the_idle_and_unknown_findings() -> None:
    first = observe(None, namespace="team-a", name="p", node="gpu-a", demand_mib=DEMAND, models=[], now=0)
    idle = observe(first, namespace="team-a", name="p", node="gpu-a", demand_mib=DEMAND, models=[], now=900)
    assert observed_finding(idle).message == (
        "pod team-a/p has held only 0 MiB (0% of its 7.8 GiB demand) for 15 min: VRAM reserved on gpu-a but idle. "
        "Loaded: no model loaded. Scale it down or lower its settings to make room for other tenants"
    )
    assert (observed_finding(idle).result, observed_finding(idle).severity) == ("warn", "low")
    gone = observe(
        idle,
        namespace="team-a",
        name="p",
        node="gpu-a",
        demand_mib=DEMAND,
        models=None,
        now=930,
        detail="http://10.0.0.9:11434/api/ps: cannot connect: refused",
    )
    finding = observed_finding(gone)
    assert (finding.result, gone.low_since) == ("skip", None)
    assert finding.message == (
        "observed VRAM of pod team-a/p unknown (http://10.0.0.9:11434/api/ps: cannot connect: refused); "
        "it is not counted as zero"
    )


def test_metrics_show_observed_demand_and_samples_over_and_leave_unknown_absent() -> None:
    over = observe(
        None,
        namespace="team-a",
        name="big",
        node="gpu-a",
        demand_mib=DEMAND,
        models=[LoadedModel("m", 0, 9000 * MIB)],
        now=0,
    )
    lost = observe(None, namespace="team-a", name="lost", node="gpu-a", demand_mib=DEMAND, models=None, now=0)
    observations = {o.key: o for o in (over, lost)}
    metrics = Metrics(lambda: Ledger(ClusterView()), drift=lambda: observations)
    samples = {
        (s.name, s.labels.get("pod", s.labels.get("verdict", ""))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert samples[("ollama_guard_pod_vram_observed_mib", "big")] == 9000
    assert ("ollama_guard_pod_vram_observed_mib", "lost") not in samples  # unknown is absent, not 0
    assert samples[("ollama_guard_pod_vram_demand_mib", "lost")] == DEMAND
    assert samples[("ollama_guard_pod_vram_over_demand_samples_total", "big")] == 1
    assert samples[("ollama_guard_drift_pods", "over")] == 1 and samples[("ollama_guard_drift_pods", "unknown")] == 1


# --- where the targets come from ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "ports", "expected"),
    [
        pytest.param({"phase": "Running", "podIP": "10.244.1.7"}, [], Endpoint("10.244.1.7", 11434), id="default-port"),
        pytest.param(
            {"phase": "Running", "podIP": "10.244.1.7"},
            [{"name": "http", "containerPort": 8080}],
            Endpoint("10.244.1.7", 8080),
            id="port-named-http",
        ),
        pytest.param(
            {"phase": "Running", "podIP": "10.244.1.7"},
            [{"name": "metrics", "containerPort": 9090}],
            Endpoint("10.244.1.7", 11434),
            id="other-port-names-ignored",
        ),
        pytest.param({"phase": "Running", "podIP": "fd00::7"}, [], Endpoint("fd00::7", 11434), id="ipv6"),
        pytest.param({"phase": "Pending"}, [], "the pod is Pending", id="pending"),
        pytest.param({"phase": "Running"}, [], "the pod has no IP yet", id="no-ip"),
        pytest.param({"phase": "Running", "podIP": "ollama.example.com"}, [], "is not an IP address", id="a-name"),
        pytest.param(
            {"phase": "Running", "podIP": "169.254.169.254"},
            [],
            "not an address the guard asks",
            id="link-local-metadata",
        ),
        pytest.param(
            {"phase": "Running", "podIP": "::ffff:169.254.169.254"},
            [],
            "not an address the guard asks",
            id="mapped-link-local",
        ),
        pytest.param({"phase": "Running", "podIP": "0.0.0.0"}, [], "not an address the guard asks", id="unspecified"),
        pytest.param({"phase": "Running", "podIP": "224.0.0.1"}, [], "not an address the guard asks", id="multicast"),
    ],
)
def test_pod_endpoint(status: dict[str, Any], ports: list[dict[str, Any]], expected: Endpoint | str) -> None:
    raw = {"status": status, "spec": {"containers": [{"name": "ollama", "ports": ports}]}}
    found = pod_endpoint(raw)
    assert found == expected if isinstance(expected, Endpoint) else expected in str(found)


def test_the_live_projection_keeps_what_drift_asks_and_targets_come_from_the_view() -> None:
    ollama = stamped_pod(PodSpec("ollama-0", "gpu-a", 8000, port=18080))
    ollama["status"]["podIP"] = "10.244.3.9"
    worker = stamped_pod(PodSpec("cuda-0", "gpu-a", 4000, port=9000, ollama=False))
    projected: dict[str, dict[str, Any]] = {}
    for raw in (ollama, worker):
        kept = project("Pod", raw)
        assert kept is not None
        projected[raw["metadata"]["name"]] = kept
    assert projected["ollama-0"]["status"] == {"phase": "Running", "podIP": "10.244.3.9"}
    assert projected["ollama-0"]["spec"]["containers"][0]["ports"] == [{"name": "http", "containerPort": 18080}]
    assert "podIP" not in projected["cuda-0"]["status"]  # only Ollama pods are asked
    settings = load_settings()
    view = build_view(
        [gpu_node("gpu-a", memory_mib=46068), *projected.values()],
        cluster=settings.cluster_policy(),
        catalog=load_catalog(),
    )
    found = targets_from(view, lambda key: pod_endpoint(projected[key.split("/")[1]]))
    assert found == [DriftTarget("team-a", "ollama-0", "gpu-a", 8000, Endpoint("10.244.3.9", 18080))]
    assert found[0].url == "http://10.244.3.9:18080/api/ps"


# --- serve, end to end ------------------------------------------------------------------------------
def test_serve_reports_drift_on_the_page_in_the_audit_results_and_in_metrics(tmp_path: Path) -> None:
    with fake_ollamas(
        answer(ps_body(loaded("llama3.1:8b", 9500, context=131072))),
        answer(ps_body(loaded("qwen2.5:7b", 5000))),
    ) as (over, fine):
        refused = closed_port()
        snapshot = write_snapshot(
            tmp_path / "cluster.json",
            [
                gpu_node("gpu-a", memory_mib=46068),
                namespace("team-a"),
                stamped_pod(PodSpec("big", "gpu-a", 8000, port=over.port)),
                stamped_pod(PodSpec("fine", "gpu-a", 8000, port=fine.port)),
                stamped_pod(PodSpec("gone", "gpu-a", 8000, port=refused)),
                stamped_pod(PodSpec("batch", "gpu-a", 4000, ollama=False)),
            ],
        )
        with serving(tmp_path, "--snapshot", str(snapshot), "--drift", "on", "--drift-interval", "1") as guard:
            deadline = time.monotonic() + 10
            while not (state := guard.state())["observations"] and time.monotonic() < deadline:
                time.sleep(0.2)
            with guard.https() as client:
                metrics = client.get("/metrics").text
    by_pod = {o["name"]: o for o in state["observations"]}
    assert {k: (v["verdict"], v["observedMiB"]) for k, v in by_pod.items()} == {
        "big": ("over", 9500),
        "fine": ("within", 5000),
        "gone": ("unknown", None),
    }
    assert by_pod["big"]["models"][0]["contextLength"] == 131072
    assert state["drift"] == {"enabled": True, "intervalSeconds": 1.0, "why": ""}
    results = {r["resource"]["name"]: r for r in state["results"] if r["rule"] == "observed-vram"}
    assert (results["big"]["result"], results["fine"]["result"], results["gone"]["result"]) == ("warn", "pass", "skip")
    assert "llama3.1:8b (context 131072, 9.3 GiB VRAM)" in results["big"]["message"]
    tenants = {t["name"]: t["observedMiB"] for t in state["nodes"][0]["tenants"]}
    assert tenants == {"big": 9500, "fine": 5000, "gone": None, "batch": None}
    assert 'ollama_guard_pod_vram_observed_mib{namespace="team-a",node="gpu-a",pod="big"} 9500.0' in metrics
    assert 'pod="gone"} ' not in metrics.split("ollama_guard_pod_vram_observed_mib")[2].split("# HELP")[0]
    assert over.hits >= 1 and fine.hits >= 1


def test_serve_on_a_snapshot_does_not_ask_by_default(tmp_path: Path) -> None:
    with FakeOllama(answer(ps_body(loaded("llama3.1:8b", 100)))) as fake:
        snapshot = write_snapshot(
            tmp_path / "cluster.json",
            [
                gpu_node("gpu-a", memory_mib=46068),
                stamped_pod(PodSpec("p", "gpu-a", 8000, port=fake.port)),
            ],
        )
        with serving(tmp_path, "--snapshot", str(snapshot)) as guard:
            time.sleep(1.5)
            state = guard.state()
    assert state["observations"] == [] and state["drift"]["enabled"] is False
    assert state["drift"]["why"].startswith("snapshot mode")
    assert fake.hits == 0


def test_page_server_is_read_only_and_refuses_foreign_host_names(tmp_path: Path) -> None:
    with serving(tmp_path) as guard:
        page = httpx.get(guard.page + "/", trust_env=False)
        post = httpx.post(guard.page + "/api/state", trust_env=False)
        rebound = httpx.get(guard.page + "/api/state", headers={"Host": "attacker.example:8080"}, trust_env=False)
        via_localhost = httpx.get(guard.page.replace("127.0.0.1", "localhost") + "/api/state", trust_env=False)
        webhook_has_no_page = guard.https().get("/api/state")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert b"http://" not in page.content.replace(b"http://www.w3.org", b"")  # nothing fetched from elsewhere
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")
    assert rebound.status_code == 421
    assert via_localhost.status_code == 200 and via_localhost.json()["schemaVersion"] == 1
    assert webhook_has_no_page.status_code == 404


def test_live_mode_asks_the_pod_ip_and_port_the_watch_delivers(tmp_path: Path) -> None:
    """Through the loopback Kubernetes API server: the projection keeps `status.podIP` and the `http`
    port, the targets come from the published view, and a pod that moves is asked where it is now."""
    from kube_api_fixture import KubeApiFixture
    from live_cluster import wait_until, write_kubeconfig

    from webhook.state.live import LiveSource
    from webhook.state.mirror import ClusterMirror, load_api_client

    settings = load_settings()
    with (
        KubeApiFixture() as api,
        FakeOllama(answer(ps_body(loaded("llama3.1:8b", 9000, context=32768)))) as first,
        FakeOllama(answer(ps_body(loaded("llama3.1:8b", 3000)))) as second,
    ):
        for obj in (gpu_node("gpu-a", memory_mib=46068), namespace("team-a")):
            api.add(obj)
        pod = stamped_pod(PodSpec("ollama-0", "gpu-a", DEMAND, port=first.port))
        api.add(pod)
        client = load_api_client(kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", api.url))
        assert client is not None

        def mirror(**kwargs: Any) -> ClusterMirror:
            return ClusterMirror(client, backoff_base=0.02, backoff_cap=0.2, **kwargs)

        source = LiveSource(mirror, cluster=settings.cluster_policy(), catalog=load_catalog(), publish_interval=0.02)
        source.start()
        try:
            wait_until(lambda: source.readiness()[0], "the live view")

            def targets() -> list[DriftTarget]:
                return targets_from(source.ledger.view, lambda key: pod_endpoint(source.mirror.get("Pod", key)))

            watch = monitor()
            found = poll_once(watch, *targets())["team-a/ollama-0"]
            assert (found.verdict, found.observed_mib) == ("over", 9000)
            moved = json.loads(json.dumps(pod))
            moved["spec"]["containers"][0]["ports"][0]["containerPort"] = second.port
            api.modify(moved)
            wait_until(lambda: targets()[0].endpoint == Endpoint("127.0.0.1", second.port), "the new port")
            found = poll_once(watch, *targets())["team-a/ollama-0"]
        finally:
            source.stop()
    assert (found.verdict, found.observed_mib, found.samples_over) == ("within", 3000, 1)
    assert (first.hits, second.hits) == (1, 1)
