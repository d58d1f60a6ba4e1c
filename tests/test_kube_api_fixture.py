"""The loopback API server (tests/kube_api_fixture.py) against recordings of a real kube-apiserver
1.24 (`../shared/fixtures/kube-apiserver-1.24/extended-resources/`): node status patches carrying
the extended resource `ollama-guard.io/vram-mib`, canonical quantities, and Lease optimistic
concurrency, through the real `kubernetes` client and by replaying the recorded requests."""

from __future__ import annotations

import copy
import datetime as dt
import http.client
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import fixtures_dir
from kube_api_fixture import (
    ERR_FORMAT_WRONG,
    ERR_SUFFIX,
    KubeApiFixture,
    QuantityError,
    RecordedRequest,
    canonical_quantity,
    format_quantity,
    is_extended_resource,
    parse_quantity,
)
from kubernetes import watch
from kubernetes.client import ApiClient, Configuration, CoordinationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

VRAM = "ollama-guard.io/vram-mib"
GPU = "nvidia.com/gpu"
NS = "team-a"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
DEADLINE = 5.0

# every recorded exchange, by what this file does with it
NODE_PATCHES = ["node-status-patch-capacity-only.json", "node-status-patch-capacity-and-allocatable.json",
                "node-status-patch-remove-extended-resource.json"]
NODE_LIST = "nodes-with-extended-resource.json"
LEASE_CHAIN = ["lease-create.json", "lease-update.json", "lease-update-stale-resourceversion-409.json"]
FRACTIONAL_POD = "pod-create-extended-resource-fractional.json"  # its Go rendering of a Quantity is reused
NOT_NODES_OR_LEASES = {  # the scheduler, pod admission and quota: not what this fixture serves
    "events-capacity-only.json", "events-failedscheduling-insufficient.json", "pods-after-scheduling.json",
    "pod-create-with-extended-resource.json", "pod-create-extended-resource-request-ne-limit.json",
    FRACTIONAL_POD, "pod-create-over-resourcequota.json"}


def recorded_dir() -> Path:
    folder = fixtures_dir() / "extended-resources"
    if not folder.is_dir():
        pytest.skip(f"recorded kube-apiserver exchanges not found in {folder}")
    return folder


def recording(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((recorded_dir() / name).read_bytes())
    return document


def recorded_node(name: str) -> dict[str, Any]:
    """A node of the recorded list, without the extended resource (the state before any patch)."""
    (item,) = [i for i in recording(NODE_LIST)["response"]["items"] if i["metadata"]["name"] == name]
    node = {"kind": "Node", **copy.deepcopy(item)}
    del node["metadata"]["resourceVersion"]
    for resources in (node["status"]["capacity"], node["status"]["allocatable"]):
        resources.pop(VRAM)
    return node


# --- plumbing ------------------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[KubeApiFixture]:
    with KubeApiFixture() as server:
        yield server


@pytest.fixture
def client(api: KubeApiFixture) -> Iterator[ApiClient]:
    with ApiClient(Configuration(host=api.url)) as made:
        yield made


@pytest.fixture
def core(client: ApiClient) -> CoreV1Api:
    return CoreV1Api(client)


@pytest.fixture
def coordination(client: ApiClient) -> CoordinationV1Api:
    return CoordinationV1Api(client)


def send(api: KubeApiFixture, method: str, path: str, body: Any = None,
         content_type: str = "application/json") -> tuple[int, Any]:
    """One raw HTTP exchange (for replaying recorded requests byte for byte)."""
    parts = urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=DEADLINE)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": content_type} if data else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


def node_events(api: KubeApiFixture, since: str) -> list[tuple[str, str]]:
    """(type, resourceVersion) of the Node watch events after `since` (a 1 s watch, read to its end)."""
    parts = urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=DEADLINE)
    try:
        conn.request("GET", f"/api/v1/nodes?watch=true&resourceVersion={since}&timeoutSeconds=1")
        lines = conn.getresponse().read().decode().splitlines()
    finally:
        conn.close()
    events = [json.loads(line) for line in lines if line]
    return [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events]


def failure(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and Status body of a client call that must fail."""
    with pytest.raises(ApiException) as caught:
        call()
    body: dict[str, Any] = json.loads(caught.value.body)
    return int(caught.value.status), body


def status_of(body: dict[str, Any]) -> tuple[int, str, str]:
    return body["code"], body["reason"], body["message"]


def lease_body(name: str, holder: str, *, rv: str | None = None, renew: str = "2026-12-01T07:00:05.500000Z",
               duration: int = 15) -> dict[str, Any]:
    """A Lease body. Its times have non-zero microseconds: the client turns even a dict body into a
    V1Lease and writes datetimes with `isoformat()`, which drops a zero fraction, and Go's MicroTime
    parser then rejects the time (see test_lease_times_are_micro_times)."""
    meta: dict[str, Any] = {"name": name, "namespace": NS} | ({"resourceVersion": rv} if rv else {})
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": "2026-12-01T07:00:00.500000Z", "renewTime": renew, "leaseTransitions": 0}}


# --- canonical quantities --------------------------------------------------------------------------


@pytest.mark.parametrize(("written", "returned"), [
    pytest.param("20000", "20k", id="recorded-20000-is-20k"),
    pytest.param("81559", "81559", id="recorded-81559-stays"),
    pytest.param("30000", "30k", id="recorded-quota-30k"),
    pytest.param("125330", "125330", id="not-a-multiple-of-1000"),
    pytest.param("1000000", "1M", id="mega"),
    pytest.param("1000", "1k", id="kilo"),
    pytest.param("1500", "1500", id="kilo-would-need-a-fraction"),
    pytest.param("2000000000000", "2T", id="tera"),
    pytest.param("1000000000000000000", "1E", id="exa"),
    pytest.param("1000P", "1E", id="suffix-grows"),
    pytest.param("0", "0", id="zero"),
    pytest.param("0Mi", "0", id="zero-binary"),
    pytest.param("0.0", "0", id="zero-decimal"),
    pytest.param("-20000", "-20k", id="negative"),
    pytest.param(" 20000 ", "20k", id="surrounding-space-trimmed"),
    pytest.param("1024Ki", "1Mi", id="binary-grows"),
    pytest.param("81559Mi", "81559Mi", id="binary-stays"),
    pytest.param("1536Ki", "1536Ki", id="binary-not-a-whole-Mi"),
    pytest.param("1056768Mi", "1032Gi", id="binary-example-cluster-memory"),
    pytest.param("1.5Gi", "1536Mi", id="binary-fraction"),
    pytest.param("0.5Ki", "512", id="binary-below-1024-is-decimal"),
    pytest.param("1.1Ki", "1126400m", id="binary-inexact-is-decimal"),
    pytest.param("8Ei", "9223372036854775807", id="binary-capped-at-int64"),
    pytest.param("1.5", "1500m", id="fraction-milli"),
    pytest.param("0.1", "100m", id="tenth"),
    pytest.param("1000m", "1", id="milli-grows"),
    pytest.param("0.0001", "100u", id="micro"),
    pytest.param("0.1n", "1n", id="below-nano-rounds-up"),
    pytest.param("1.5k", "1500", id="fractional-kilo"),
    pytest.param("1e3", "1e3", id="exponent-kept"),
    pytest.param("1000e0", "1e3", id="exponent-grows"),
    pytest.param("12e6", "12e6", id="exponent-doc-example"),
    pytest.param("+5", "+5", id="go-keeps-a-canonical-looking-string-verbatim"),
    pytest.param("2000E", "2e21", id="beyond-E-in-exponent-form"),
])
def test_canonical_quantity(written: str, returned: str) -> None:
    assert canonical_quantity(written) == returned
    assert canonical_quantity(returned) == returned  # stored, then read back: a fixed point
    assert parse_quantity(returned).value == parse_quantity(written).value


@pytest.mark.parametrize(("written", "error"), [
    pytest.param("", ERR_FORMAT_WRONG, id="empty"),
    pytest.param("lots", ERR_FORMAT_WRONG, id="words"),
    pytest.param("1.5.5", ERR_FORMAT_WRONG, id="two-points"),
    pytest.param("20 000", ERR_FORMAT_WRONG, id="inner-space"),
    pytest.param("1Mib", ERR_FORMAT_WRONG, id="trailing-letter"),
    pytest.param("1K", ERR_SUFFIX, id="capital-K"),
    pytest.param("1e", ERR_SUFFIX, id="exponent-without-digits"),
])
def test_canonical_quantity_rejects_what_go_rejects(written: str, error: str) -> None:
    with pytest.raises(QuantityError) as caught:
        canonical_quantity(written)
    assert str(caught.value) == error


@pytest.mark.parametrize(("value", "fmt", "text"), [
    pytest.param(Fraction(20000), "DecimalSI", "20k", id="decimal"),
    pytest.param(Fraction(3, 2), "DecimalSI", "1500m", id="decimal-fraction"),
    pytest.param(Fraction(2**30), "BinarySI", "1Gi", id="binary"),
    pytest.param(Fraction(1000), "BinarySI", "1k", id="binary-below-1024"),
    pytest.param(Fraction(12 * 10**6), "DecimalExponent", "12e6", id="exponent"),
    pytest.param(Fraction(0), "BinarySI", "0", id="zero"),
])
def test_format_quantity(value: Fraction, fmt: str, text: str) -> None:
    assert format_quantity(value, fmt) == text


def test_recorded_quantities_are_canonical() -> None:
    """Everything the real server returned in node capacity / allocatable is a fixed point."""
    nodes = [recording(n)["response"] for n in NODE_PATCHES] + recording(NODE_LIST)["response"]["items"]
    values = {v for n in nodes for m in ("capacity", "allocatable") for v in n["status"][m].values()}
    assert "20k" in values
    assert {v: canonical_quantity(v) for v in values} == {v: v for v in values}


@pytest.mark.parametrize(("name", "extended"), [
    pytest.param(VRAM, True, id="vram"), pytest.param(GPU, True, id="gpu"),
    pytest.param("cpu", False, id="cpu"), pytest.param("memory", False, id="memory"),
    pytest.param("pods", False, id="pods"), pytest.param("ephemeral-storage", False, id="ephemeral-storage"),
    pytest.param("hugepages-2Mi", False, id="hugepages"),
    pytest.param("kubernetes.io/something", False, id="kubernetes-io-prefix"),
    pytest.param("requests.example.com/foo", False, id="quota-prefix"),
])
def test_extended_resource_names(name: str, extended: bool) -> None:
    assert is_extended_resource(name) is extended


# --- node status patches through the client --------------------------------------------------------


@pytest.mark.parametrize(("seeded", "patch", "capacity", "allocatable", "content_type"), [
    pytest.param({}, {"status": {"capacity": {VRAM: "20000"}}}, "20k", None,
                 "application/strategic-merge-patch+json", id="capacity-only"),
    pytest.param({}, {"status": {"capacity": {VRAM: "81559"}, "allocatable": {VRAM: "81559"}}}, "81559", "81559",
                 "application/strategic-merge-patch+json", id="capacity-and-allocatable"),
    pytest.param({VRAM: "20k"}, {"status": {"capacity": {VRAM: None}}}, None, "20k",
                 "application/strategic-merge-patch+json", id="null-removes-from-capacity-only"),
    pytest.param({VRAM: "20k"}, {"status": {"capacity": {VRAM: None}, "allocatable": {VRAM: None}}}, None, None,
                 "application/strategic-merge-patch+json", id="null-removes-both"),
    pytest.param({}, [{"op": "add", "path": "/status/capacity/ollama-guard.io~1vram-mib", "value": "20000"}],
                 "20k", None, "application/json-patch+json", id="json-patch-list-body"),
])
def test_patch_node_status_through_the_client(
        api: KubeApiFixture, core: CoreV1Api, seeded: dict[str, str], patch: Any, capacity: str | None,
        allocatable: str | None, content_type: str) -> None:
    node = recorded_node("gpu-h100-a")
    for resources in (node["status"]["capacity"], node["status"]["allocatable"]):
        resources.update(seeded)
    before = int(api.add(node)["metadata"]["resourceVersion"])

    patched = core.patch_node_status("gpu-h100-a", patch)

    (sent,) = api.requests("Node", method="PATCH")
    assert (sent.path, sent.content_type, sent.body) == ("/api/v1/nodes/gpu-h100-a/status", content_type, patch)
    assert int(patched.metadata.resource_version) == api.resource_version > before
    assert patched.status.capacity.get(VRAM) == capacity
    assert patched.status.allocatable.get(VRAM) == allocatable
    assert patched.status.capacity[GPU] == "4" and patched.status.allocatable["cpu"] == "63"  # untouched
    read = core.read_node("gpu-h100-a")
    (listed,) = core.list_node().items
    for seen in (read, listed):
        assert (seen.status.capacity.get(VRAM), seen.status.allocatable.get(VRAM)) == (capacity, allocatable)
        assert seen.metadata.resource_version == patched.metadata.resource_version


def test_watch_sees_the_patch_as_modified_with_the_new_resource_version(
        api: KubeApiFixture, core: CoreV1Api) -> None:
    start = api.add(recorded_node("gpu-h100-a"))["metadata"]["resourceVersion"]
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    watcher = watch.Watch()

    def follow() -> None:  # the server ends the stream after timeoutSeconds (stop() would cut the socket)
        for event in watcher.stream(core.list_node, resource_version=start, timeout_seconds=1):
            events.put(event)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        wait_until(lambda: api.open_watches("Node") == 1)
        patched = core.patch_node_status("gpu-h100-a", {"status": {"capacity": {VRAM: "20000"}}})
        event = events.get(timeout=DEADLINE)
    finally:
        thread.join(DEADLINE)
    assert event["type"] == "MODIFIED"
    assert event["object"].metadata.resource_version == patched.metadata.resource_version
    assert int(patched.metadata.resource_version) > int(start)
    assert event["object"].status.capacity[VRAM] == "20k"


def test_a_patch_that_changes_nothing_keeps_the_resource_version(api: KubeApiFixture, core: CoreV1Api) -> None:
    start = api.add(recorded_node("gpu-h100-a"))["metadata"]["resourceVersion"]
    first = core.patch_node_status("gpu-h100-a", {"status": {"capacity": {VRAM: "20000"}}})
    again = core.patch_node_status("gpu-h100-a", {"status": {"capacity": {VRAM: "20k"}}})
    assert again.metadata.resource_version == first.metadata.resource_version == str(api.resource_version)
    assert node_events(api, start) == [("MODIFIED", first.metadata.resource_version)]  # one event, not two


def test_status_patch_keeps_spec_and_node_patch_keeps_status(api: KubeApiFixture) -> None:
    node = recorded_node("gpu-h100-a")
    node["spec"] = {"unschedulable": False}
    api.add(node)
    code, body = send(api, "PATCH", "/api/v1/nodes/gpu-h100-a/status",
                      {"spec": {"unschedulable": True}, "status": {"capacity": {VRAM: "1000"}}},
                      "application/merge-patch+json")
    assert (code, body["spec"], body["status"]["capacity"][VRAM]) == (200, {"unschedulable": False}, "1k")
    code, body = send(api, "PATCH", "/api/v1/nodes/gpu-h100-a",
                      {"spec": {"unschedulable": True}, "status": {"capacity": {VRAM: "2000"}}},
                      "application/merge-patch+json")
    assert (code, body["spec"], body["status"]["capacity"][VRAM]) == (200, {"unschedulable": True}, "1k")


def test_unknown_node_is_404_in_the_real_shape(api: KubeApiFixture, core: CoreV1Api) -> None:
    expected = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": 'nodes "ghost" not found', "reason": "NotFound",
                "details": {"name": "ghost", "kind": "nodes"}, "code": 404}
    assert failure(lambda: core.patch_node_status("ghost", {"status": {"capacity": {VRAM: "1"}}})) == (404, expected)
    assert failure(lambda: core.read_node("ghost")) == (404, expected)


def test_fractional_extended_resource_is_422_like_the_real_validation(api: KubeApiFixture, core: CoreV1Api) -> None:
    """The cause message is the one the real server wrote for the same "1.5" on a pod."""
    pod_cause = recording(FRACTIONAL_POD)["response"]["details"]["causes"][0]["message"]
    rv = api.add(recorded_node("gpu-h100-a"))["metadata"]["resourceVersion"]
    _, body = failure(lambda: core.patch_node_status("gpu-h100-a", {"status": {"capacity": {VRAM: "1.5"}}}))
    assert status_of(body) == (422, "Invalid", f'Node "gpu-h100-a" is invalid: status.capacity.{VRAM}: {pod_cause}')
    assert body["details"] == {"name": "gpu-h100-a", "kind": "Node", "causes": [
        {"reason": "FieldValueInvalid", "message": pod_cause, "field": f"status.capacity.{VRAM}"}]}
    assert (api.node("gpu-h100-a") or {})["metadata"]["resourceVersion"] == rv  # nothing stored


@pytest.mark.parametrize(("value", "code", "message"), [
    pytest.param("-1", 422, f'Node "gpu-h100-a" is invalid: status.capacity.{VRAM}: Invalid value: "-1": '
                 "must be greater than or equal to 0", id="negative"),
    pytest.param("lots", 422, ERR_FORMAT_WRONG, id="not-a-quantity"),
])
def test_invalid_quantities_are_rejected(api: KubeApiFixture, core: CoreV1Api, value: str, code: int,
                                         message: str) -> None:
    api.add(recorded_node("gpu-h100-a"))
    got, body = failure(lambda: core.patch_node_status("gpu-h100-a", {"status": {"capacity": {VRAM: value}}}))
    assert (got, body["reason"]) == (code, "Invalid")
    assert message in body["message"]
    assert VRAM not in (api.node("gpu-h100-a") or {})["status"]["capacity"]


@pytest.mark.parametrize(("content_type", "body", "code", "reason"), [
    pytest.param("text/plain", {"status": {}}, 415, "UnsupportedMediaType", id="unknown-patch-type"),
    pytest.param("application/merge-patch+json", {"metadata": {"resourceVersion": "1"}}, 409, "Conflict",
                 id="stale-resource-version-precondition"),
    pytest.param("application/json-patch+json", [{"op": "test", "path": "/status/capacity/cpu", "value": "1"}],
                 422, "Invalid", id="failed-json-patch-test"),
])
def test_rejected_patches(api: KubeApiFixture, content_type: str, body: Any, code: int, reason: str) -> None:
    rv = api.add(recorded_node("gpu-h100-a"))["metadata"]["resourceVersion"]
    got, answer = send(api, "PATCH", "/api/v1/nodes/gpu-h100-a/status", body, content_type)
    assert (got, answer["code"], answer["reason"]) == (code, code, reason)
    assert api.resource_version == int(rv)


def test_dry_run_answers_without_storing(api: KubeApiFixture, core: CoreV1Api) -> None:
    rv = api.add(recorded_node("gpu-h100-a"))["metadata"]["resourceVersion"]
    answer = core.patch_node_status("gpu-h100-a", {"status": {"capacity": {VRAM: "20000"}}}, dry_run="All")
    assert answer.status.capacity[VRAM] == "20k"
    assert VRAM not in (api.node("gpu-h100-a") or {})["status"]["capacity"]
    assert api.resource_version == int(rv)


# --- replaying the recorded exchanges ------------------------------------------------------------


def test_every_recorded_exchange_is_replayed_or_out_of_scope() -> None:
    names = {p.name for p in recorded_dir().glob("*.json")}
    assert names == {*NODE_PATCHES, NODE_LIST, *LEASE_CHAIN} | NOT_NODES_OR_LEASES


@pytest.mark.parametrize("name", [pytest.param(n, id=n.removesuffix(".json")) for n in NODE_PATCHES])
def test_replay_recorded_node_status_patch(api: KubeApiFixture, name: str) -> None:
    exchange = recording(name)
    request, expected = exchange["request"], exchange["response"]
    seed = copy.deepcopy(expected)  # the node as the response shows it, before the patch
    del seed["metadata"]["resourceVersion"]
    for list_name, resources in request["body"]["status"].items():
        for resource, value in resources.items():
            if value is None:
                seed["status"][list_name][resource] = "1"
            else:
                seed["status"][list_name].pop(resource, None)
    before = int(api.add(seed)["metadata"]["resourceVersion"])

    code, body = send(api, request["method"], request["path"], request["body"], request["contentType"])

    assert code == exchange["status"]
    assert (body["kind"], body["apiVersion"]) == (expected["kind"], expected["apiVersion"])
    for key in ("name", "labels", "annotations"):
        assert body["metadata"][key] == expected["metadata"][key]
    assert body["status"] == expected["status"]
    assert int(body["metadata"]["resourceVersion"]) > before


def test_replay_recorded_node_list_with_canonical_quantities(api: KubeApiFixture) -> None:
    exchange = recording(NODE_LIST)
    expected = exchange["response"]
    for item in expected["items"]:
        name = item["metadata"]["name"]
        api.add(recorded_node(name))
        whole = str(int(parse_quantity(item["status"]["capacity"][VRAM]).value))  # "20k" was written "20000"
        code, _ = send(api, "PATCH", f"/api/v1/nodes/{name}/status",
                       {"status": {"capacity": {VRAM: whole}, "allocatable": {VRAM: whole}}},
                       "application/merge-patch+json")
        assert code == 200

    code, body = send(api, exchange["request"]["method"], exchange["request"]["path"])

    assert code == exchange["status"]
    assert (body["kind"], body["apiVersion"]) == (expected["kind"], expected["apiVersion"])
    assert [i["metadata"]["name"] for i in body["items"]] == [i["metadata"]["name"] for i in expected["items"]]
    assert [i["status"] for i in body["items"]] == [i["status"] for i in expected["items"]]
    assert not [i for i in body["items"] if "kind" in i]


def lease_path(body: dict[str, Any], method: str) -> str:
    path = LEASES.format(ns=body["metadata"]["namespace"])
    return path if method == "POST" else f"{path}/{body['metadata']['name']}"


@pytest.mark.parametrize("step", [pytest.param(i, id=n.removesuffix(".json")) for i, n in enumerate(LEASE_CHAIN)])
def test_replay_recorded_lease_exchanges(api: KubeApiFixture, step: int) -> None:
    """The chain up to `step` is replayed; server-assigned metadata (uid, resourceVersion,
    creationTimestamp) of earlier answers is mapped from the recorded values to this server's."""
    seen: dict[str, str] = {}
    for name in LEASE_CHAIN[:step + 1]:
        exchange = recording(name)
        request, expected = exchange["request"], exchange["response"]
        body = copy.deepcopy(request["body"])
        for key in ("uid", "resourceVersion", "creationTimestamp"):
            if key in body["metadata"]:
                body["metadata"][key] = seen.get(body["metadata"][key], body["metadata"][key])

        code, answer = send(api, request["method"], lease_path(body, request["method"]), body)

        assert code == exchange["status"], name
        if expected["kind"] == "Status":
            assert answer == expected
            continue
        assert (answer["kind"], answer["apiVersion"], answer["spec"]) == (
            expected["kind"], expected["apiVersion"], expected["spec"])
        meta, recorded_meta = answer["metadata"], expected["metadata"]
        assert (meta["name"], meta["namespace"]) == (recorded_meta["name"], recorded_meta["namespace"])
        if recorded_meta["uid"] in seen:  # an update keeps the uid
            assert meta["uid"] == seen[recorded_meta["uid"]]
        prior = [int(v) for k, v in seen.items() if k.isdigit()]
        assert all(int(meta["resourceVersion"]) > p for p in prior)  # resourceVersion grows
        for key in ("uid", "resourceVersion", "creationTimestamp"):
            seen[recorded_meta[key]] = meta[key]


# --- leases through the client ---------------------------------------------------------------------


def conflict_message(name: str) -> str:
    """The recorded 409 message, for another Lease name."""
    recorded = recording("lease-update-stale-resourceversion-409.json")["response"]
    return str(recorded["message"]).replace(recorded["details"]["name"], name)


def test_lease_create_update_and_stale_update(api: KubeApiFixture, coordination: CoordinationV1Api) -> None:
    created = coordination.create_namespaced_lease(NS, lease_body("elect", "guard-0"))
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.resource_version
    assert api.requests("Lease", method="POST")[0].body["spec"]["holderIdentity"] == "guard-0"

    renewed = coordination.replace_namespaced_lease(
        "elect", NS, lease_body("elect", "guard-0", rv=created.metadata.resource_version,
                                renew="2026-12-01T07:00:10.500000Z"))
    assert int(renewed.metadata.resource_version) > int(created.metadata.resource_version)
    assert renewed.metadata.uid == created.metadata.uid
    assert renewed.spec.renew_time == dt.datetime(2026, 12, 1, 7, 0, 10, 500000, tzinfo=dt.UTC)
    assert (api.lease(NS, "elect") or {})["spec"]["renewTime"] == "2026-12-01T07:00:10.500000Z"

    _, body = failure(lambda: coordination.replace_namespaced_lease(
        "elect", NS, lease_body("elect", "guard-1", rv=created.metadata.resource_version)))
    assert status_of(body) == (409, "Conflict", conflict_message("elect"))
    assert body["details"] == {"name": "elect", "group": "coordination.k8s.io", "kind": "leases"}
    assert (api.lease(NS, "elect") or {})["spec"]["holderIdentity"] == "guard-0"


@pytest.mark.parametrize(("call", "code", "reason", "message"), [
    pytest.param(lambda co: co.create_namespaced_lease(NS, lease_body("elect", "guard-1")),
                 409, "AlreadyExists", 'leases.coordination.k8s.io "elect" already exists', id="create-twice"),
    pytest.param(lambda co: co.replace_namespaced_lease("elect", NS, lease_body("elect", "guard-1")),
                 422, "Invalid", 'leases.coordination.k8s.io "elect" is invalid: metadata.resourceVersion: '
                 "Invalid value: 0x0: must be specified for an update", id="update-without-resource-version"),
    pytest.param(lambda co: co.read_namespaced_lease("ghost", NS),
                 404, "NotFound", 'leases.coordination.k8s.io "ghost" not found', id="read-unknown"),
    pytest.param(lambda co: co.delete_namespaced_lease("ghost", NS),
                 404, "NotFound", 'leases.coordination.k8s.io "ghost" not found', id="delete-unknown"),
    pytest.param(lambda co: co.replace_namespaced_lease("other", NS, lease_body("elect", "guard-1", rv="2")),
                 400, "BadRequest", "the name of the object (elect) does not match the name on the URL (other)",
                 id="name-differs-from-url"),
    pytest.param(lambda co: co.create_namespaced_lease(NS, lease_body("other", "guard-1", duration=0)),
                 422, "Invalid", 'Lease.coordination.k8s.io "other" is invalid: spec.leaseDurationSeconds: '
                 "Invalid value: 0: must be greater than 0", id="zero-duration"),
])
def test_lease_errors(api: KubeApiFixture, coordination: CoordinationV1Api,
                      call: Callable[[CoordinationV1Api], Any], code: int, reason: str, message: str) -> None:
    coordination.create_namespaced_lease(NS, lease_body("elect", "guard-0"))
    rv = api.resource_version
    assert status_of(failure(lambda: call(coordination))[1]) == (code, reason, message)
    assert api.resource_version == rv


def test_put_creates_a_missing_lease_and_delete_removes_it(api: KubeApiFixture,
                                                           coordination: CoordinationV1Api) -> None:
    code, created = send(api, "PUT", f"{LEASES.format(ns=NS)}/elect", lease_body("elect", "guard-0"))
    assert (code, created["kind"], created["spec"]["holderIdentity"]) == (201, "Lease", "guard-0")
    stale = {"preconditions": {"resourceVersion": "1"}}
    code, body = send(api, "DELETE", f"{LEASES.format(ns=NS)}/elect", stale)
    assert (code, body["reason"]) == (409, "Conflict") and "Precondition failed" in body["message"]

    deleted = coordination.delete_namespaced_lease("elect", NS)  # this client returns the Status as a dict

    assert deleted == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {
        "name": "elect", "group": "coordination.k8s.io", "kind": "leases", "uid": created["metadata"]["uid"]}}
    assert api.lease(NS, "elect") is None
    assert [r.method for r in api.requests("Lease")] == ["PUT", "DELETE", "DELETE"]


def test_racing_updates_with_the_same_resource_version_let_exactly_one_win(api: KubeApiFixture) -> None:
    with ApiClient(Configuration(host=api.url)) as setup:
        rv = CoordinationV1Api(setup).create_namespaced_lease(NS, lease_body("elect", "nobody")).metadata
    racers = 8
    barrier = threading.Barrier(racers)
    results: dict[str, int] = {}

    def race(identity: str) -> None:
        with ApiClient(Configuration(host=api.url)) as own:
            body = lease_body("elect", identity, rv=rv.resource_version)
            barrier.wait()
            try:
                CoordinationV1Api(own).replace_namespaced_lease("elect", NS, body)
                results[identity] = 200
            except ApiException as exc:
                results[identity] = int(exc.status)

    threads = [threading.Thread(target=race, args=(f"guard-{i}",)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert sorted(results.values()) == [200] + [409] * (racers - 1)
    (winner,) = [who for who, code in results.items() if code == 200]
    assert (api.lease(NS, "elect") or {})["spec"]["holderIdentity"] == winner


@pytest.mark.parametrize(("renew", "code", "stored"), [
    pytest.param(dt.datetime(2026, 12, 1, 7, 0, 5, 250000, tzinfo=dt.UTC), 201, "2026-12-01T07:00:05.250000Z",
                 id="microseconds"),
    pytest.param(dt.datetime(2026, 12, 1, 9, 0, 5, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))), 201,
                 "2026-12-01T07:00:05.000001Z", id="offset-returned-in-utc"),
    pytest.param(dt.datetime(2026, 12, 1, 7, 0, 5, tzinfo=dt.UTC), 400, None,
                 id="whole-second-isoformat-has-no-fraction-so-go-rejects-it"),
])
def test_lease_times_are_micro_times(api: KubeApiFixture, coordination: CoordinationV1Api, renew: dt.datetime,
                                     code: int, stored: str | None) -> None:
    """The client writes datetimes with `isoformat()`; Go parses MicroTime with exactly six digits."""
    body = lease_body("elect", "guard-0") | {"spec": {"holderIdentity": "guard-0", "renewTime": renew}}
    if code == 201:
        coordination.create_namespaced_lease(NS, body)
        assert (api.lease(NS, "elect") or {})["spec"]["renewTime"] == stored
    else:
        got, answer = failure(lambda: coordination.create_namespaced_lease(NS, body))
        assert (got, answer["reason"]) == (400, "BadRequest")
        assert "2006-01-02T15:04:05.000000Z07:00" in answer["message"]
        assert api.lease(NS, "elect") is None


# --- kubelet controls --------------------------------------------------------------------------


@pytest.mark.parametrize(("reserved", "allocatable"), [
    pytest.param(None, {"cpu": "64", "memory": "512Gi", GPU: "4", VRAM: "20k", "pods": "110"}, id="no-reservation"),
    pytest.param({"cpu": "1", "memory": "12Gi"}, {"cpu": "63", "memory": "500Gi", GPU: "4", VRAM: "20k",
                                                  "pods": "110"}, id="kubelet-reservations"),
])
def test_kubelet_sync_copies_capacity_into_allocatable(
        api: KubeApiFixture, core: CoreV1Api, reserved: dict[str, str] | None, allocatable: dict[str, str]) -> None:
    node = recorded_node("gpu-h100-a")
    node["status"]["allocatable"]["example.com/gone"] = "3"  # extended, not in capacity: dropped
    api.add(node)
    written = core.patch_node_status("gpu-h100-a", {"status": {"capacity": {VRAM: "20000"}}})
    assert VRAM not in written.status.allocatable  # capacity only: the scheduler would see nothing

    synced = api.kubelet_sync("gpu-h100-a", reserved=reserved)

    assert synced["status"]["allocatable"] == allocatable
    assert int(synced["metadata"]["resourceVersion"]) > int(written.metadata.resource_version)
    assert core.read_node("gpu-h100-a").status.allocatable == allocatable
    assert node_events(api, written.metadata.resource_version) == [
        ("MODIFIED", synced["metadata"]["resourceVersion"])]
    assert api.kubelet_sync("gpu-h100-a", reserved=reserved) == synced  # nothing left to change
    assert api.resource_version == int(synced["metadata"]["resourceVersion"])


def test_kubelet_recreate_zero_zeroes_every_extended_resource(api: KubeApiFixture, core: CoreV1Api) -> None:
    node = recorded_node("gpu-h100-b")
    node["status"]["capacity"]["hugepages-2Mi"] = node["status"]["allocatable"]["hugepages-2Mi"] = "2Gi"
    api.add(node)
    core.patch_node_status("gpu-h100-b", {"status": {"capacity": {VRAM: "81559"}, "allocatable": {VRAM: "81559"}}})
    before = api.resource_version

    zeroed = api.kubelet_recreate_zero("gpu-h100-b")

    status = zeroed["status"]
    assert {k: status["capacity"][k] for k in (GPU, VRAM)} == {GPU: "0", VRAM: "0"}
    assert {k: status["allocatable"][k] for k in (GPU, VRAM)} == {GPU: "0", VRAM: "0"}
    kept = ("cpu", "memory", "pods", "hugepages-2Mi")
    assert {k: status["allocatable"][k] for k in kept} == {"cpu": "63", "memory": "500Gi", "pods": "110",
                                                           "hugepages-2Mi": "2Gi"}
    assert node_events(api, str(before)) == [("MODIFIED", zeroed["metadata"]["resourceVersion"])]
    # the advertiser notices and writes the resource again
    again = core.patch_node_status("gpu-h100-b", {"status": {"capacity": {VRAM: "81559"},
                                                              "allocatable": {VRAM: "81559"}}})
    assert (again.status.capacity[VRAM], again.status.allocatable[VRAM]) == ("81559", "81559")


def test_node_and_lease_return_copies(api: KubeApiFixture) -> None:
    api.add(recorded_node("gpu-h100-a"))
    api.add(lease_body("elect", "guard-0"))
    node, lease = api.node("gpu-h100-a"), api.lease(NS, "elect")
    assert node is not None and lease is not None
    assert (node["kind"], lease["kind"], lease["apiVersion"]) == ("Node", "Lease", "coordination.k8s.io/v1")
    node["status"]["capacity"][VRAM] = "1"
    lease["spec"]["holderIdentity"] = "mallory"
    assert VRAM not in (api.node("gpu-h100-a") or {})["status"]["capacity"]
    assert (api.lease(NS, "elect") or {})["spec"]["holderIdentity"] == "guard-0"
    assert (api.node("ghost"), api.lease(NS, "ghost")) == (None, None)


# --- injected failures and the request log -----------------------------------------------------


@pytest.mark.parametrize(("target", "call", "code", "reason"), [
    pytest.param("nodes/status", lambda core, co, rv: core.patch_node_status("gpu-h100-a", {"status": {}}),
                 500, "InternalError", id="node-status-patch"),
    pytest.param("leases", lambda core, co, rv: co.read_namespaced_lease("elect", NS), 503, "ServiceUnavailable",
                 id="lease-read"),
    pytest.param("leases:update", lambda core, co, rv: co.replace_namespaced_lease(
        "elect", NS, lease_body("elect", "guard-0", rv=rv)), 500, "InternalError", id="lease-update-only"),
])
def test_set_failure_fails_node_status_patches_and_lease_calls(
        api: KubeApiFixture, core: CoreV1Api, coordination: CoordinationV1Api, target: str,
        call: Callable[[CoreV1Api, CoordinationV1Api, str], Any], code: int, reason: str) -> None:
    api.add(recorded_node("gpu-h100-a"))
    rv = coordination.create_namespaced_lease(NS, lease_body("elect", "guard-0")).metadata.resource_version
    api.set_failure(target, code, times=1)
    if target == "leases:update":
        assert coordination.read_namespaced_lease("elect", NS).metadata.resource_version == rv  # other verbs fine

    assert status_of(failure(lambda: call(core, coordination, rv))[1]) == (code, reason, "injected failure")
    assert call(core, coordination, rv) is not None  # `times=1`: the next call is answered normally
    api.set_failure("nodes/status", 503)
    assert failure(lambda: core.patch_node_status("gpu-h100-a", {"status": {}}))[0] == 503
    api.set_failure("nodes/status", None)
    assert core.patch_node_status("gpu-h100-a", {"status": {}}).metadata.name == "gpu-h100-a"


def test_requests_record_method_body_and_content_type(api: KubeApiFixture, core: CoreV1Api,
                                                      coordination: CoordinationV1Api) -> None:
    api.add(recorded_node("gpu-h100-a"))
    core.list_node()
    core.patch_node_status("gpu-h100-a", {"status": {"capacity": {VRAM: "1"}}})
    coordination.create_namespaced_lease(NS, lease_body("elect", "guard-0"))
    coordination.delete_namespaced_lease("elect", NS)

    log = [(r.kind, r.method, r.path, r.content_type) for r in api.requests()]
    assert log == [
        ("Node", "GET", "/api/v1/nodes", None),
        ("Node", "PATCH", "/api/v1/nodes/gpu-h100-a/status", "application/strategic-merge-patch+json"),
        ("Lease", "POST", LEASES.format(ns=NS), None),  # this client sends JSON bodies without a Content-Type
        ("Lease", "DELETE", f"{LEASES.format(ns=NS)}/elect", None),
    ]
    assert api.requests("Node", method="PATCH")[0].body == {"status": {"capacity": {VRAM: "1"}}}
    sent = api.requests("Lease", method="POST")[0].body
    assert (sent["metadata"]["name"], sent["spec"]["holderIdentity"]) == ("elect", "guard-0")
    assert sent["spec"]["renewTime"] == "2026-12-01T07:00:05.500000+00:00"  # the client's isoformat()
    old_style = RecordedRequest("Pod", "/api/v1/pods", {"watch": "true"}, 1.0)  # positional, as before
    assert (old_style.method, old_style.body, old_style.watch) == ("GET", None, True)
