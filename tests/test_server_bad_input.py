"""The HTTP contract around the decisions (design §10): 415 for a wrong content type, 413 over
3 MiB, 400 with a JSON error body for what is not an AdmissionReview, health/readiness/metrics,
our own failures as `status.code: 500` inside a normal review, `?timeout=` honoured; then a
property-based run of thousands of malformed or odd requests against one keep-alive client.
"""

from __future__ import annotations

import base64
import copy
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import (
    SNAPSHOT,
    DevCerts,
    GuardServer,
    endpoint_for,
    load_recorded,
    recorded_bytes,
    require_fixtures,
    serve_guard,
    variant,
)
from design_figures import LLAMA31_8B_MIB
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.cli.settings import load_settings
from webhook.core.catalog import Catalog, ModelSpec, load_catalog
from webhook.core.ledger import Ledger
from webhook.core.view import Tenant
from webhook.state.files import load_objects
from webhook.state.snapshot import SnapshotSource

LIMIT = 3 << 20
POD = "mutate-pod-create-2.json"


def error_body(reply: Any, status: int) -> str:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].split(";")[0] == "application/json"
    body = reply.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    message: str = body["error"]
    return message


# --- 415 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text-plain"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("application/yaml", id="yaml"),
        pytest.param("application/jsonx", id="jsonx"),
        pytest.param("", id="none"),
    ],
)
def test_a_wrong_content_type_is_415(guard: GuardServer, content_type: str) -> None:
    for endpoint in ("/mutate", "/validate"):
        headers = {"content-type": content_type} if content_type else {}
        reply = guard.client.post(endpoint, content=recorded_bytes(POD), headers=headers, params={"timeout": "5s"})
        assert "content type must be application/json" in error_body(reply, 415)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_content_type_parameters_and_case_are_accepted(guard: GuardServer, content_type: str) -> None:
    reply = guard.post("/mutate", recorded_bytes(POD), content_type=content_type)
    assert reply.status_code == 200
    assert reply.json()["response"]["allowed"] is True


# --- 413 --------------------------------------------------------------------------------------------------


def padded_review(size: int) -> bytes:
    """The recorded pod review padded (in an annotation) to exactly `size` bytes."""
    review = load_recorded(POD)
    review["request"]["object"]["metadata"]["annotations"]["example.com/padding"] = ""
    base = len(json.dumps(review).encode())
    review["request"]["object"]["metadata"]["annotations"]["example.com/padding"] = "x" * (size - base)
    body = json.dumps(review).encode()
    assert len(body) == size
    return body


def test_a_body_over_3_mib_is_413_with_content_length(guard: GuardServer) -> None:
    reply = guard.post("/mutate", padded_review(LIMIT + 1))
    assert "exceeds the 3145728 byte limit" in error_body(reply, 413)


def test_a_body_over_3_mib_is_413_when_chunked(guard: GuardServer) -> None:
    body = padded_review(LIMIT + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 << 10):
            yield body[start : start + (64 << 10)]

    reply = guard.client.post(
        "/validate", content=chunks(), headers={"content-type": "application/json"}, params={"timeout": "5s"}
    )
    assert reply.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in reply.request.headers
    assert "exceeds the 3145728 byte limit" in error_body(reply, 413)


def test_a_body_of_exactly_3_mib_is_answered(guard: GuardServer) -> None:
    response = guard.review("/mutate", padded_review(LIMIT))
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"


# --- 400 ----------------------------------------------------------------------------------------------------


def _review_without(*path: str) -> bytes:
    review = load_recorded(POD)
    node = review
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return json.dumps(review).encode()


def _review_with(value: Any, *path: str) -> bytes:
    review = load_recorded(POD)
    node = review
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(review).encode()


NOT_REVIEWS = [
    pytest.param(lambda: recorded_bytes(POD)[: len(recorded_bytes(POD)) // 2], "not valid JSON", id="truncated-json"),
    pytest.param(lambda: b"", "not valid JSON", id="empty-body"),
    pytest.param(lambda: _review_with("admission.k8s.io/v1beta1", "apiVersion"), "apiVersion", id="v1beta1"),
    pytest.param(lambda: _review_with("AdmissionResponse", "kind"), "kind", id="wrong-kind"),
    pytest.param(lambda: _review_without("request", "uid"), "request.uid", id="missing-uid"),
    pytest.param(lambda: _review_with("", "request", "uid"), "request.uid", id="empty-uid"),
    pytest.param(lambda: _review_with("u" * 129, "request", "uid"), "request.uid", id="uid-too-long"),
    pytest.param(lambda: _review_with(42, "request", "uid"), "request.uid", id="uid-not-a-string"),
    pytest.param(lambda: _review_with("PATCH", "request", "operation"), "request.operation", id="bad-operation"),
    pytest.param(lambda: _review_without("request"), "request", id="missing-request"),
    pytest.param(lambda: _review_with(None, "request"), "request", id="request-null"),
    pytest.param(lambda: _review_with([], "request", "object"), "request.object", id="object-is-a-list"),
    pytest.param(lambda: recorded_bytes(POD).replace(b'"team-a"', b'"team-\xff"', 1), "not valid JSON", id="non-utf8"),
    pytest.param(lambda: b"[" * 100_000 + b"]" * 100_000, "not valid JSON", id="deep-array-100k"),
    pytest.param(lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not valid JSON", id="deep-object-100k"),
    pytest.param(lambda: b"[" + recorded_bytes(POD) + b"]", "not a JSON object", id="array-of-reviews"),
    pytest.param(lambda: b'"AdmissionReview"', "not a JSON object", id="json-string"),
    pytest.param(lambda: b"null", "not a JSON object", id="json-null"),
    pytest.param(lambda: b"apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\n", "not valid JSON", id="yaml"),
]


@pytest.mark.parametrize(("make_body", "fragment"), NOT_REVIEWS)
def test_a_body_that_is_not_an_admission_review_is_400(
    guard: GuardServer, make_body: Callable[[], bytes], fragment: str
) -> None:
    require_fixtures()
    body = make_body()
    for endpoint in ("/mutate", "/validate"):
        assert fragment in error_body(guard.post(endpoint, body), 400)


# --- health, readiness, metrics ----------------------------------------------------------------------------


def test_healthz_and_readyz(guard: GuardServer) -> None:
    health = guard.client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = guard.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "mode": "snapshot", "source": "test", "nodes": 1, "tenants": 2}


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
def test_admission_endpoints_only_take_post(guard: GuardServer, path: str) -> None:
    reply = guard.client.get(path)
    assert reply.status_code == 405
    assert guard.client.get("/no-such-path").status_code == 404


def test_metrics_count_requests_decisions_latency_and_node_vram(start_guard: Callable[..., GuardServer]) -> None:
    fresh = start_guard()
    fresh.review("/mutate", load_recorded(POD))
    fresh.review("/validate", variant(load_recorded("validate-namespace-update-1.json"), user="bob", groups=()))
    fresh.post("/validate", b"{", content_type="application/json")
    fresh.post("/mutate", b"{}", content_type="text/plain")

    reply = fresh.client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    requests = "ollama_guard_admission_requests_total"
    assert fresh.metric(requests, webhook="mutate", kind="Pod", operation="CREATE", decision="patched") == 1
    assert fresh.metric(requests, webhook="validate", kind="Namespace", operation="UPDATE", decision="denied") == 1
    assert 'ollama_guard_admission_duration_seconds_bucket{le="5.0",webhook="mutate"} 1.0' in text
    assert 'ollama_guard_admission_duration_seconds_count{webhook="validate"} 1.0' in text
    assert 'ollama_guard_bad_requests_total{status="400",webhook="validate"} 1.0' in text
    assert 'ollama_guard_bad_requests_total{status="415",webhook="mutate"} 1.0' in text
    assert fresh.metric("ollama_guard_node_vram_capacity_mib", node="gpu-h100-a") == 81559
    committed = fresh.metric("ollama_guard_node_vram_committed_mib", node="gpu-h100-a")
    assert committed is not None and 0 < committed < 81559
    assert fresh.metric("ollama_guard_node_vram_free_mib", node="gpu-h100-a") == 81559 - committed
    assert fresh.metric("ollama_guard_node_vram_capacity_mib", node="cpu-a") is None  # not guarded
    assert fresh.metric("ollama_guard_overcommitted_nodes") == 0


# --- our own failures ----------------------------------------------------------------------------------------


class ExplodingCatalog(Catalog):
    """A catalog whose lookups fail: a bug of ours, inside the decision."""

    def resolve(self, ref: str) -> ModelSpec:
        raise RuntimeError(f"catalog exploded on {ref}")


class BrokenSource:
    """A state source whose view cannot be read (ours, on the request path but outside the core)."""

    def __init__(self, inner: SnapshotSource) -> None:
        self._inner = inner
        self.templates = inner.templates

    @property
    def ledger(self) -> Ledger:
        raise RuntimeError("view unavailable")

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return True, {}

    def on_bound(self, tenant: Tenant, node: str) -> None:
        self._inner.on_bound(tenant, node)

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


def _exploding_catalog() -> dict[str, Any]:
    real = load_catalog()
    return {"catalog": ExplodingCatalog(real.models, real.aliases)}


def _broken_source() -> dict[str, Any]:
    cluster = load_settings().cluster_policy()
    inner = SnapshotSource(load_objects([SNAPSHOT]), cluster=cluster, catalog=load_catalog(), origin="test")
    return {"source": BrokenSource(inner)}


@pytest.mark.parametrize("name", [POD, "validate-pod-create-2.json", "validate-deployment-create-1.json"])
@pytest.mark.parametrize(
    "seam",
    [pytest.param(_exploding_catalog, id="catalog-raises"), pytest.param(_broken_source, id="source-raises")],
)
def test_an_internal_error_is_a_500_inside_a_review(
    start_guard: Callable[..., GuardServer], name: str, seam: Callable[[], dict[str, Any]]
) -> None:
    broken = start_guard(**seam())
    review = variant(load_recorded(name))
    reply = broken.post(endpoint_for(name), review)
    assert reply.status_code == 200, reply.text
    document = reply.json()
    assert (document["apiVersion"], document["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = document["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "internal error" in response["status"]["message"]
    assert "Traceback" not in reply.text and "exploded" not in reply.text and "unavailable" not in reply.text
    assert "patch" not in response


class SlowCatalog(Catalog):
    """A catalog that blocks until released: a decision that outlives the request's timeout."""

    release = threading.Event()

    def resolve(self, ref: str) -> ModelSpec:
        self.release.wait(10)
        return super().resolve(ref)


@pytest.fixture
def slow_catalog() -> Iterator[SlowCatalog]:
    real = load_catalog()
    catalog = SlowCatalog(real.models, real.aliases)
    SlowCatalog.release.clear()
    yield catalog
    SlowCatalog.release.set()


@pytest.mark.parametrize(("timeout", "seconds"), [("1s", 1.0), ("500ms", 0.5)])
def test_the_request_timeout_is_honoured(
    start_guard: Callable[..., GuardServer], slow_catalog: SlowCatalog, timeout: str, seconds: float
) -> None:
    slow = start_guard(catalog=slow_catalog)
    review = variant(load_recorded(POD))
    started = time.monotonic()
    reply = slow.post("/mutate", review, timeout=timeout)
    elapsed = time.monotonic() - started
    assert elapsed < seconds, "the answer must arrive before kube-apiserver gives up"
    response = reply.json()["response"]
    assert (reply.status_code, response["uid"], response["allowed"]) == (200, review["request"]["uid"], False)
    assert response["status"]["code"] == 500
    assert "could not decide within the request timeout" in response["status"]["message"]


# --- wrong-typed fields: a declaration problem or an answer, never an internal error --------------------


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        put(obj, path, value)

    return edit


WRONG_TYPES = [
    pytest.param(
        "mutate-pod-create-2.json",
        _set("spec", "containers", 0, "env", 0, "name", value={"x": 1}),
        id="mutate-env-name-is-an-object",
    ),
    pytest.param(
        "validate-pod-create-2.json",
        _set("spec", "nodeSelector", value=["gpu"]),
        id="validate-nodeselector-is-a-list",
    ),
    pytest.param(
        "validate-pod-create-2.json",
        _set("spec", "tolerations", value=5),
        id="validate-tolerations-is-a-number",
    ),
    pytest.param(
        "validate-pod-create-2.json",
        _set(
            "spec",
            "affinity",
            value={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In", "values": 5}]}]
                    }
                }
            },
        ),
        id="validate-affinity-values-is-a-number",
    ),
    pytest.param(
        "validate-deployment-create-1.json",
        _set("spec", "template", "spec", value="x"),
        id="validate-deployment-template-spec-is-a-string",
    ),
    pytest.param(
        "validate-cronjob-create-1.json",
        _set("spec", "jobTemplate", value="x"),
        id="validate-cronjob-jobtemplate-is-a-string",
    ),
]


@pytest.mark.parametrize(("name", "edit"), WRONG_TYPES)
def test_a_wrong_typed_field_is_not_an_internal_error(
    guard: GuardServer, recorded: Callable[[str], dict[str, Any]], name: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    """kube-apiserver never sends these (objects are typed before admission), but the guard must not crash."""
    response = guard.review(endpoint_for(name), variant(recorded(name), edit=edit))
    assert response.get("status", {}).get("code") != 500, response


HUGE = "9" * 5000  # past the interpreter's 4,300-digit limit for int(): must never reach int()


@pytest.mark.parametrize(
    ("edit", "annotations", "named", "code"),
    [
        pytest.param(
            None, {"ollama-guard.io/context-length": HUGE}, "ollama-guard.io/context-length", 400, id="context"
        ),
        pytest.param(
            _set("spec", "containers", 0, "env", value=[{"name": "OLLAMA_NUM_PARALLEL", "value": HUGE}]),
            None,
            "OLLAMA_NUM_PARALLEL",
            400,
            id="env-parallel",
        ),
        pytest.param(
            _set("spec", "containers", 0, "env", value=[{"name": "OLLAMA_GPU_OVERHEAD", "value": HUGE}]),
            None,
            "OLLAMA_GPU_OVERHEAD",
            400,
            id="env-overhead",
        ),
        pytest.param(
            None,
            {"ollama-guard.io/vram-demand": HUGE, "ollama-guard.io/estimate": '{"v":1}'},
            "ollama-guard.io/vram-demand",
            403,
            id="forged-stamp",
        ),
    ],
)
def test_a_number_too_long_to_convert_is_a_clear_denial(
    guard: GuardServer,
    recorded: Callable[[str], dict[str, Any]],
    edit: Callable[[dict[str, Any]], None] | None,
    annotations: dict[str, str] | None,
    named: str,
    code: int,
) -> None:
    review = variant(recorded("validate-pod-create-2.json"), edit=edit, annotations=annotations)
    response = guard.review("/validate", review)
    assert response["allowed"] is False and response["status"]["code"] == code, response
    assert named in response["status"]["message"]
    assert guard.review("/validate", variant(recorded("validate-pod-create-2.json")))["allowed"]  # still serving


# --- property: thousands of malformed or odd requests ----------------------------------------------------

BASES = [
    "mutate-pod-create-1.json",
    "mutate-pod-create-2.json",
    "validate-pod-create-2.json",
    "validate-binding-binding-create-2.json",
    "validate-deployment-update-1.json",
    "validate-cronjob-create-1.json",
    "validate-namespace-update-1.json",
    "validate-scale-scale-update-1.json",
]
ABSURD = [
    "-1Gi", "9e999", "1 Gi", "abc", "###", "", " ", "0", "-0", "1e3", "1e-9", "NaN", "Infinity", "inf", "1Ki",
    "99999999999999999999999Gi", "0.5", "1.5Gi", "12345678901234567890", "0x10", "\u0000", "💥", ",", ",,,",
    "llama3.1:8b,,###", "llama3.1:8b, " * 40, "a" * 300, "on", "ENFORCE", "warn ", "*", "[", "\\", "\"",
]  # fmt: skip
GUARD_KEYS = [
    "ollama-guard.io/vram", "ollama-guard.io/models", "ollama-guard.io/context-length",
    "ollama-guard.io/vram-demand", "ollama-guard.io/estimate", "ollama-guard.io/enforcement",
    "ollama-guard.io/max-loaded-models", "ollama-guard.io/num-parallel", "ollama-guard.io/vram-quota",
    "ollama-guard.io/allowed-models",
]  # fmt: skip
RAW_INF = "__raw_9e999__"
TIMEOUTS = [None, "5s", "1s", "abc", "0s", "-1s", "1ms", "30m", "1e9s", "10"]
_cache: dict[str, dict[str, Any]] = {}


def base_review(index: int) -> dict[str, Any]:
    name = BASES[index % len(BASES)]
    if name not in _cache:
        _cache[name] = load_recorded(name)
    return copy.deepcopy(_cache[name])


def json_paths(doc: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key != "managedFields":
                out += json_paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += json_paths(value, (*prefix, i))
    return out


def put(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def pod_of(review: dict[str, Any]) -> dict[str, Any] | None:
    """The pod (or pod template) inside a review's object, when there is one."""
    obj = review["request"].get("object")
    if not isinstance(obj, dict):
        return None
    spec = obj.get("spec")
    if obj.get("kind") == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]  # type: ignore[no-any-return]
    if isinstance(spec, dict) and isinstance(spec.get("template"), dict):
        return spec["template"]  # type: ignore[no-any-return]
    return obj if obj.get("kind") in ("Pod", "Namespace") else None


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from([*ABSURD, RAW_INF]),
)
odd_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
gpu_quantities = st.one_of(
    st.sampled_from(["1", "0", "-1", "1.5", "2e0", "1k", "1Ki", "64", "65", "1e9", "", "abc", "9e999", " 1", "1/2"]),
    st.integers(min_value=-10, max_value=1 << 40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
annotation_texts = st.one_of(st.sampled_from(ABSURD), st.text(max_size=60))
bases = st.integers(min_value=0, max_value=len(BASES) - 1)

recipes = st.one_of(
    st.tuples(st.just("truncate"), bases, st.floats(min_value=0, max_value=0.9999)),
    st.tuples(st.just("retype"), bases, st.integers(min_value=0, max_value=10_000), odd_values),
    st.tuples(st.just("drop"), bases, st.integers(min_value=0, max_value=10_000)),
    st.tuples(st.just("annotation"), bases, st.sampled_from(GUARD_KEYS), annotation_texts),
    st.tuples(st.just("gpu"), bases, st.sampled_from(["nvidia.com/gpu", "nvidia.com/gpu.shared"]), gpu_quantities),
    st.tuples(st.just("huge"), bases, st.integers(min_value=1 << 10, max_value=(3 << 20) + (1 << 16))),
    st.tuples(st.just("deep"), st.integers(min_value=10, max_value=120_000), st.sampled_from(["[", '{"a":'])),
    st.tuples(st.just("deep-object"), bases, st.integers(min_value=10, max_value=2_000)),
    st.tuples(
        st.just("envelope"),
        bases,
        st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1", "v1", "", None]),
        st.sampled_from(["AdmissionReview", "AdmissionRequest", "Pod", "", None]),
        st.sampled_from(["keep", "drop", "", "null", "int", "long", "unicode"]),
    ),
    st.tuples(st.just("bytes"), st.binary(max_size=512)),
    st.tuples(st.just("ctype"), bases, st.sampled_from(["text/plain", "application/xml", "", "application/json"])),
)


def build(recipe: tuple[Any, ...]) -> tuple[bytes, str]:
    """A request body and content type from a recipe; reviews start from a recorded one."""
    kind = recipe[0]
    if kind == "bytes":
        return recipe[1], "application/json"
    if kind == "deep":
        depth, opener = recipe[1], recipe[2].encode()
        closer = b"]" if opener == b"[" else b"}"
        return opener * depth + (b"" if opener == b"[" else b"1") + closer * depth, "application/json"
    review = base_review(recipe[1])
    content_type = "application/json"
    if kind == "truncate":
        raw = json.dumps(review).encode()
        return raw[: int(len(raw) * recipe[2])], content_type
    if kind in ("retype", "drop"):
        paths = [p for p in json_paths(review["request"], ("request",)) if len(p) > 1]
        path = paths[recipe[2] % len(paths)]
        if kind == "retype":
            put(review, path, recipe[3])
        else:
            parent = review
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
    elif kind == "annotation":
        target = pod_of(review)
        if target is not None:
            target.setdefault("metadata", {}).setdefault("annotations", {})[recipe[2]] = recipe[3]
    elif kind == "gpu":
        target = pod_of(review)
        if target is not None and target.get("kind") != "Namespace":
            for container in target["spec"]["containers"]:
                resources = container.setdefault("resources", {})
                resources.setdefault("limits", {})[recipe[2]] = recipe[3]
                resources.setdefault("requests", {})[recipe[2]] = recipe[3]
    elif kind == "huge":
        review["request"]["name"] = "n" * recipe[2]
    elif kind == "deep-object":
        nested: Any = "bottom"
        for _ in range(recipe[2]):
            nested = {"a": nested}
        review["request"]["object"] = {**(review["request"].get("object") or {}), "deep": nested}
    elif kind == "envelope":
        _, _, api_version, review_kind, uid = recipe
        review["apiVersion"], review["kind"] = api_version, review_kind
        uids: dict[str, Any] = {"": "", "null": None, "int": 7, "long": "u" * 129, "unicode": "ü-💥-\u2028"}
        if uid == "drop":
            del review["request"]["uid"]
        elif uid != "keep":
            review["request"]["uid"] = uids[uid]
    elif kind == "ctype":
        content_type = recipe[2]
    try:
        text = json.dumps(review)
    except RecursionError:
        return b"[" * 5000, content_type
    return text.replace(json.dumps(RAW_INF), "9e999").encode(), content_type


def request_uid(body: bytes) -> Any:
    # the body may nest close to the recursion limit; this frame sits deeper than the server's parser
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2000)
    try:
        return json.loads(body)["request"]["uid"]
    finally:
        sys.setrecursionlimit(limit)


@pytest.fixture(scope="module")
def fuzz_guard(dev_certs: DevCerts) -> Iterator[GuardServer]:
    """A server of its own: the run admits pods and bindings that would disturb other tests."""
    with serve_guard(dev_certs) as running:
        yield running


def check_answer(reply: Any, body: bytes, endpoint: str) -> None:
    assert reply.status_code in (200, 400, 413, 415), (reply.status_code, reply.text[:300])
    assert reply.headers["content-type"].split(";")[0] == "application/json"
    document = reply.json()
    if reply.status_code != 200:
        assert document["status"] == reply.status_code and isinstance(document["error"], str)
        return
    assert (document["apiVersion"], document["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = document["response"]
    assert response["uid"] == request_uid(body)
    assert isinstance(response["allowed"], bool)
    assert ("patch" in response) == ("patchType" in response)
    if "patch" in response:
        assert endpoint == "/mutate" and response["allowed"] is True
        assert isinstance(json.loads(base64.b64decode(response["patch"])), list)
    warnings = response.get("warnings", [])
    assert len(warnings) <= 4 and all(len(w) <= 120 for w in warnings)
    if not response["allowed"]:
        assert response["status"]["code"] in (400, 403, 500)


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(recipe=recipes, mutate=st.booleans(), timeout=st.sampled_from(TIMEOUTS))
def test_malformed_and_odd_requests_always_get_a_well_formed_answer(
    fuzz_guard: GuardServer, recipe: tuple[Any, ...], mutate: bool, timeout: str | None
) -> None:
    require_fixtures()
    body, content_type = build(recipe)
    endpoint = "/mutate" if mutate else "/validate"
    reply = fuzz_guard.post(endpoint, body, timeout=timeout, content_type=content_type)
    check_answer(reply, body, endpoint)


ODD_BUT_WELL_TYPED = st.one_of(
    st.tuples(st.just("annotation"), bases, st.sampled_from(GUARD_KEYS), annotation_texts),
    st.tuples(
        st.just("gpu"),
        bases,
        st.sampled_from(["nvidia.com/gpu", "nvidia.com/gpu.shared"]),
        st.one_of(
            st.sampled_from(["1", "0", "-1", "1.5", "2e0", "1k", "1Ki", "64", "65", "1e9", "", "abc"]),
            st.text(max_size=12),
        ),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=ODD_BUT_WELL_TYPED, mutate=st.booleans())
def test_absurd_annotation_and_quantity_strings_are_declarations_not_internal_errors(
    fuzz_guard: GuardServer, recipe: tuple[Any, ...], mutate: bool
) -> None:
    """Strings in the places a real API server sends strings: a 400/403 denial or an answer, never a 500."""
    require_fixtures()
    body, _ = build(recipe)
    reply = fuzz_guard.post("/mutate" if mutate else "/validate", body)
    assert reply.status_code == 200
    response = reply.json()["response"]
    assert response.get("status", {}).get("code") != 500, (recipe, response)


def test_the_server_still_answers_correctly_after_the_runs(fuzz_guard: GuardServer) -> None:
    require_fixtures()
    response = fuzz_guard.review("/mutate", variant(load_recorded(POD)))
    ops = json.loads(base64.b64decode(response["patch"]))
    assert [op["path"] for op in ops] == [
        "/spec/containers/0/env/-",
        "/spec/containers/0/env/-",
        "/spec/containers/0/env/-",
        "/spec/containers/0/env/-",
        "/spec/containers/0/env/-",
        "/spec/containers/0/env/-",
        "/spec/containers/0/resources/limits/ollama-guard.io~1vram-mib",
        "/spec/containers/0/resources/requests/ollama-guard.io~1vram-mib",
        "/metadata/annotations/ollama-guard.io~1estimate",
        "/metadata/annotations/ollama-guard.io~1vram-demand",
    ]
    llama = str(LLAMA31_8B_MIB)
    assert ops[-1]["value"] == llama == ops[6]["value"] == ops[7]["value"]
    assert [ops[4]["value"], ops[5]["value"]] == [  # the driver cap (design §8), per GPU
        {"name": "NVIDIA_GPU_MEMORY_LIMIT", "value": llama},
        {"name": "NVIDIA_GPU_MEMORY_REQUEST", "value": llama},
    ]
    admin = fuzz_guard.review("/validate", variant(load_recorded("validate-namespace-update-1.json")))
    assert admin == {"uid": admin["uid"], "allowed": True}
    assert fuzz_guard.client.get("/healthz").status_code == 200
