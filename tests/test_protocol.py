"""The direct path (`webhook.http.protocol.AdmissionProtocol`): admission reviews answered inside
the HTTP parser's callback, and everything else left to uvicorn's ASGI cycle.

The protocol here is the real one on a real uvicorn config and the guard's real app, fed bytes as
a TLS transport hands them over; the transport is a recorder (what was written, whether it was
closed), and the event loop is turned by hand: a direct request is answered in the loop's next
turn, with the others of its batch (`Batch`), and counted in `answered_directly`. The served test
drives `ollama-guard serve` over real TLS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest
import uvicorn
from conftest import (
    DevCerts,
    GuardServer,
    endpoint_for,
    load_recorded,
    recorded_bytes,
    recorded_names,
    require_fixtures,
    snapshot_objects,
)
from guard_process import serving
from uvicorn.server import ServerState

from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.http import protocol
from webhook.http.protocol import AdmissionProtocol, admission_protocol
from webhook.http.server import AdmissionFront, build_server, create_app
from webhook.http.tls import ReloadingTLS
from webhook.state.snapshot import SnapshotSource

MUTATE_POD = "mutate-pod-create-1.json"
VALIDATE_POD = "validate-pod-create-1.json"
BINDING = "validate-binding-binding-create-1.json"


class RecordingTransport(asyncio.Transport):
    """What the protocol wrote and whether it closed the connection (as a TLS transport: https)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8443), "peername": ("127.0.0.1", 50000), "sslcontext": object()}.get(
            name, default
        )


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Responses:
    """The HTTP/1.1 responses in a byte stream, parsed with httptools' response parser."""

    items: list[Response] = field(default_factory=list)
    parser: Any = None

    def on_status(self, status: bytes) -> None:
        self.items.append(Response(0, {}))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.items[-1].headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.items[-1].status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.items[-1].body += body


def responses(stream: bytes) -> list[Response]:
    found = Responses()
    found.parser = httptools.HttpResponseParser(found)
    found.parser.feed_data(stream)
    return found.items


@dataclass
class Connection:
    protocol: AdmissionProtocol
    transport: RecordingTransport
    loop: asyncio.AbstractEventLoop
    state: ServerState

    def feed(self, data: bytes) -> bytes:
        """Hand `data` to the protocol and turn the event loop once (the batch runs); what it wrote."""
        before = len(self.transport.written)
        self.protocol.data_received(data)
        self.turn()
        return bytes(self.transport.written[before:])

    def turn(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))

    @property
    def direct(self) -> int:
        return self.protocol.answered_directly

    def settle(self, seconds: float = 0.0) -> bytes:
        """Run the event loop (ASGI tasks, timers) for `seconds`, then until no task is left."""
        self.loop.run_until_complete(asyncio.sleep(seconds))
        for _ in range(200):
            if not self.state.tasks:
                break
            self.loop.run_until_complete(asyncio.sleep(0.005))
        return bytes(self.transport.written)


@pytest.fixture(scope="module")
def front() -> AdmissionFront:
    settings = load_settings()
    catalog = load_catalog()
    source = SnapshotSource(snapshot_objects(), cluster=settings.cluster_policy(), catalog=catalog, origin="test")
    return AdmissionFront(
        create_app(cluster=settings.cluster_policy(), catalog=catalog, source=source, max_body_bytes=64 << 10)
    )


@pytest.fixture
def connect(front: AdmissionFront) -> Iterator[Callable[..., Connection]]:
    """New connections to one server (one protocol class, one batch, one event loop, one state)."""
    loop = asyncio.new_event_loop()
    protocol_class = admission_protocol(front.endpoints)
    state = ServerState()

    def make(*, keep_alive: float = 60.0) -> Connection:
        # uvicorn's setting is typed int; the protocol takes any number of seconds (loop.call_later)
        config = uvicorn.Config(front, http=protocol_class, lifespan="off", timeout_keep_alive=keep_alive)  # type: ignore[arg-type]
        config.load()
        protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
        transport = RecordingTransport()
        protocol.connection_made(transport)
        return Connection(protocol, transport, loop, state)

    yield make
    loop.close()


def request(
    path: str, body: bytes, *, content_type: str = "application/json", extra: str = "", version: str = "1.1"
) -> bytes:
    head = (
        f"POST {path}?timeout=10s HTTP/{version}\r\nHost: guard\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def review(name: str, uid: str | None = None) -> bytes:
    document = load_recorded(name)
    if uid is not None:
        document["request"]["uid"] = uid
    return json.dumps(document).encode()


def answer_of(response: Response) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(response.body)
    return document


BODIES = [
    pytest.param("/mutate", MUTATE_POD, id="pod-mutate"),
    pytest.param("/validate", VALIDATE_POD, id="pod-validate"),
    pytest.param("/validate", BINDING, id="binding"),
    pytest.param("/validate", b"{not json", id="not-json"),
    pytest.param("/validate", b'{"kind": "AdmissionReview", "request": {"uid": 7}}', id="uid-not-a-string"),
    pytest.param("/validate", b'{"request": {"uid": "u", "kind": {"kind": "Pod"}, "x": NaN}}', id="nan"),
    pytest.param("/mutate", b"[]", id="json-not-an-object"),
]


@pytest.mark.parametrize(("path", "body"), BODIES)
def test_a_direct_answer_is_the_asgi_endpoints_answer(
    connect: Callable[..., Connection], path: str, body: str | bytes
) -> None:
    """The same review through the direct path and through uvicorn's ASGI cycle (a charset in the
    content type takes the ASGI path): the same status, headers and document."""
    if isinstance(body, str):
        require_fixtures()
        body = recorded_bytes(body)
    direct = connect()
    written = direct.feed(request(path, body))
    assert direct.direct == 1, "the direct path was not taken"
    via_asgi = connect()
    via_asgi.feed(request(path, body, content_type="application/json; charset=utf-8"))
    [fast] = responses(written)
    [slow] = responses(via_asgi.settle())
    assert via_asgi.direct == 0
    assert fast.status == slow.status
    assert fast.headers.keys() == slow.headers.keys()
    assert fast.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.body)
    assert answer_of(fast) == answer_of(slow)
    if fast.status == 400:
        assert "error" in answer_of(fast)
    assert not direct.transport.closed


def chunked(path: str, body: bytes, extra: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\n".encode()
    return head + extra + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(lambda b: chunked("/validate", b), 200, id="chunked-body"),
        pytest.param(lambda b: request("/validate", b, extra="Expect: 100-continue\r\n"), 200, id="expect-100"),
        pytest.param(lambda b: request("/validate", b, version="1.0"), 200, id="http-1.0"),
        pytest.param(lambda b: request("/validate", b, content_type="text/plain"), 415, id="wrong-media-type"),
        pytest.param(lambda b: request("/validate", b + b" " * (64 << 10)), 413, id="over-the-body-limit"),
        pytest.param(lambda b: request("/elsewhere", b), 404, id="other-path"),
        pytest.param(lambda b: b"GET /validate HTTP/1.1\r\nHost: guard\r\n\r\n", 405, id="get"),
        pytest.param(lambda b: b"GET /healthz HTTP/1.1\r\nHost: guard\r\n\r\n", 200, id="healthz"),
    ],
)
def test_what_the_direct_path_leaves_to_uvicorn_is_answered_there(
    connect: Callable[..., Connection], data: Callable[[bytes], bytes], status: int
) -> None:
    require_fixtures()
    conn = connect()
    conn.feed(data(recorded_bytes(VALIDATE_POD)))
    answers = [r for r in responses(conn.settle()) if r.status != 100]
    assert conn.direct == 0
    assert [r.status for r in answers] == [status]


def test_pipelined_reviews_are_answered_in_order_behind_a_request_uvicorn_answers(
    connect: Callable[..., Connection],
) -> None:
    """A chunked review (ASGI) first, then two reviews the direct path could take, in one read:
    the answers keep the requests' order (the two wait behind the first)."""
    require_fixtures()
    conn = connect()
    data = (
        chunked("/validate", review(VALIDATE_POD, "first"))
        + request("/validate", review(VALIDATE_POD, "second"))
        + request("/mutate", review(MUTATE_POD, "third"))
    )
    conn.feed(data)
    uids = [answer_of(r)["response"]["uid"] for r in responses(conn.settle())]
    assert uids == ["first", "second", "third"]


def test_a_request_uvicorn_answers_behind_queued_direct_ones_is_answered_after_them(
    connect: Callable[..., Connection],
) -> None:
    """Two reviews in the batch, then (same read) a request for uvicorn: the batch is answered
    first, so the answers keep the requests' order."""
    require_fixtures()
    conn = connect()
    data = (
        request("/validate", review(BINDING, "one"))
        + request("/validate", review(BINDING, "two"))
        + b"GET /healthz HTTP/1.1\r\nHost: guard\r\n\r\n"
    )
    conn.feed(data)
    found = responses(conn.settle())
    assert [answer_of(r).get("response", {}).get("uid") for r in found] == ["one", "two", None]
    assert [r.status for r in found] == [200, 200, 200]
    assert conn.direct == 2


def test_pipelined_direct_reviews_are_answered_in_one_read_in_order(connect: Callable[..., Connection]) -> None:
    require_fixtures()
    conn = connect()
    data = b"".join(request("/validate", review(BINDING, f"uid-{i}")) for i in range(5))
    written = conn.feed(data)
    assert [answer_of(r)["response"]["uid"] for r in responses(written)] == [f"uid-{i}" for i in range(5)]
    assert conn.direct == 5
    assert conn.protocol.batch.counts() == (5, 1)


@pytest.mark.parametrize("pieces", [2, 7, 101], ids=lambda n: f"{n}-reads")
def test_a_review_split_across_reads_is_answered_once_complete(connect: Callable[..., Connection], pieces: int) -> None:
    require_fixtures()
    conn = connect()
    data = request("/validate", review(VALIDATE_POD, "split"))
    step = -(-len(data) // pieces)
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    assert all(conn.feed(part) == b"" for part in parts[:-1])
    [answer] = responses(conn.feed(parts[-1]))
    assert conn.direct == 1
    assert answer.status == 200
    assert answer_of(answer)["response"]["uid"] == "split"


def test_connection_close_is_answered_then_closed(connect: Callable[..., Connection]) -> None:
    require_fixtures()
    conn = connect()
    assert_answered_then_closed(
        conn, conn.feed(request("/validate", review(BINDING, "last"), extra="Connection: close\r\n")), "last"
    )


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not(
    connect: Callable[..., Connection],
) -> None:
    require_fixtures()
    conn = connect(keep_alive=0.2)
    for _ in range(4):  # a review every 0.1 s: never idle for the whole 0.2 s
        assert conn.feed(request("/validate", review(BINDING)))
        conn.settle(0.1)
        assert not conn.transport.closed
    conn.settle(0.35)
    assert conn.transport.closed


def test_a_review_arriving_during_shutdown_is_answered_then_closed(connect: Callable[..., Connection]) -> None:
    require_fixtures()
    conn = connect()
    data = request("/validate", review(VALIDATE_POD, "late"))
    assert conn.feed(data[:200]) == b""
    conn.protocol.shutdown()
    assert not conn.transport.closed
    assert_answered_then_closed(conn, conn.feed(data[200:]), "late")


def test_a_review_waiting_in_the_batch_at_shutdown_is_answered_then_closed(connect: Callable[..., Connection]) -> None:
    require_fixtures()
    conn = connect()
    conn.protocol.data_received(request("/validate", review(BINDING, "queued")))
    conn.protocol.shutdown()
    assert conn.transport.written == b""
    assert not conn.transport.closed
    conn.turn()
    assert_answered_then_closed(conn, bytes(conn.transport.written), "queued")


def assert_answered_then_closed(conn: Connection, stream: bytes, uid: str) -> None:
    [answer] = responses(stream)
    assert answer.status == 200
    assert answer_of(answer)["response"]["uid"] == uid
    assert answer.headers["connection"] == "close"
    assert conn.transport.closed


def test_reviews_arriving_on_several_connections_in_one_turn_are_answered_as_one_batch(
    connect: Callable[..., Connection],
) -> None:
    require_fixtures()
    conns = [connect() for _ in range(3)]
    for i, conn in enumerate(conns):
        conn.protocol.data_received(request("/validate", review(VALIDATE_POD, f"c{i}")))
    assert all(conn.transport.written == b"" for conn in conns)
    assert len(conns[0].protocol.batch.items) == 3
    conns[0].turn()
    assert [answer_of(r)["response"]["uid"] for c in conns for r in responses(bytes(c.transport.written))] == [
        "c0",
        "c1",
        "c2",
    ]
    assert [c.direct for c in conns] == [1, 1, 1]
    assert conns[0].protocol.batch.items == []


def test_a_batch_is_answered_at_once_when_it_reaches_its_bound(connect: Callable[..., Connection]) -> None:
    """At `BATCH_LIMIT` waiting reviews the batch runs without waiting for the loop's turn: a
    burst cannot hold the first answers back for longer than that many decisions."""
    require_fixtures()
    conn = connect()
    count = protocol.BATCH_LIMIT + 3
    conn.protocol.data_received(b"".join(request("/validate", review(BINDING, f"b{i}")) for i in range(count)))
    early = responses(bytes(conn.transport.written))
    assert [answer_of(r)["response"]["uid"] for r in early] == [f"b{i}" for i in range(protocol.BATCH_LIMIT)]
    conn.turn()
    assert len(responses(bytes(conn.transport.written))) == count


def test_a_review_whose_answer_fails_gets_a_500_and_the_rest_of_its_batch_is_answered(
    connect: Callable[..., Connection], front: AdmissionFront, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_fixtures()
    endpoint = front.endpoints["/validate"]
    answer = endpoint.answer

    def failing(raw: bytes, query: bytes | None, started: float) -> tuple[int, bytes]:
        if b'"boom"' in raw:
            raise RuntimeError("a bug in answer")
        return answer(raw, query, started)

    monkeypatch.setattr(endpoint, "answer", failing)
    conn = connect()
    conn.feed(b"".join(request("/validate", review(BINDING, uid)) for uid in ("a", "boom", "c")))
    found = responses(bytes(conn.transport.written))
    assert [r.status for r in found] == [200, 500, 200]
    assert "internal error" in answer_of(found[1])["error"]
    assert [answer_of(found[i])["response"]["uid"] for i in (0, 2)] == ["a", "c"]
    assert not conn.transport.closed


def test_a_connection_lost_while_its_answer_is_due_is_skipped_and_the_others_answered(
    connect: Callable[..., Connection],
) -> None:
    require_fixtures()
    gone, kept = connect(), connect()
    gone.protocol.data_received(request("/validate", review(BINDING, "gone")))
    kept.protocol.data_received(request("/validate", review(BINDING, "kept")))
    gone.protocol.connection_lost(None)
    kept.turn()
    assert gone.transport.written == b""
    [answer] = responses(bytes(kept.transport.written))
    assert answer_of(answer)["response"]["uid"] == "kept"


def test_a_transport_failing_its_write_is_closed_and_the_rest_of_the_batch_answered(
    connect: Callable[..., Connection],
) -> None:
    require_fixtures()
    broken, kept = connect(), connect()

    def fail(data: bytes | bytearray | memoryview) -> None:
        raise ConnectionResetError("peer reset")

    broken.transport.write = fail  # type: ignore[method-assign]
    broken.protocol.data_received(request("/validate", review(BINDING, "broken")))
    kept.protocol.data_received(request("/validate", review(BINDING, "kept")))
    kept.turn()
    assert broken.transport.closed
    [answer] = responses(bytes(kept.transport.written))
    assert answer_of(answer)["response"]["uid"] == "kept"


def test_off_the_main_thread_reviews_take_the_asgi_path(connect: Callable[..., Connection]) -> None:
    """Decisions are bounded inline by SIGALRM only on the main thread; elsewhere uvicorn's cycle
    runs them in a worker thread under `asyncio.wait_for`."""
    require_fixtures()
    conn = connect()
    worker = threading.Thread(target=conn.protocol.data_received, args=(request("/validate", review(BINDING, "off")),))
    worker.start()
    worker.join()
    assert conn.protocol.batch.items == []
    [answer] = responses(conn.settle())
    assert answer_of(answer)["response"]["uid"] == "off"
    assert conn.direct == 0


def test_served_reviews_pipelined_over_one_tls_connection(tmp_path: Path) -> None:
    """`ollama-guard serve` (the direct path on its main thread): three reviews written at once on
    one TLS connection, then two more on the same connection, each answered, in order."""
    require_fixtures()
    with serving(tmp_path) as guard:
        port = int(guard.webhook.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=str(guard.ca_file))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            uids = [f"served-{i}" for i in range(5)]
            tls.sendall(b"".join(request("/validate", review(VALIDATE_POD, uid)) for uid in uids[:3]))
            got = read_responses(tls, 3)
            for uid in uids[3:]:
                tls.sendall(request("/mutate", review(MUTATE_POD, uid)))
                got += read_responses(tls, 1)
    assert [r.status for r in got] == [200] * 5
    assert [answer_of(r)["response"]["uid"] for r in got] == uids


def test_serve_answers_every_recorded_review_on_the_direct_path_as_the_asgi_endpoint_does(
    tmp_path: Path, start_guard: Callable[..., GuardServer]
) -> None:
    """Every review kube-apiserver 1.24 sent, in order, to `ollama-guard serve` (the direct path,
    real TLS) and to a server whose reviews take the ASGI endpoint (in a thread), both on the
    embedded default: the same answers, and serve's /metrics counts each on the direct path."""
    require_fixtures()
    names = recorded_names()
    via_asgi = start_guard()
    with serving(tmp_path) as guard, guard.https() as client:
        for name in names:
            served = client.post(
                endpoint_for(name),
                params={"timeout": "5s"},
                content=recorded_bytes(name),
                headers={"content-type": "application/json"},
            )
            reference = via_asgi.post(endpoint_for(name), recorded_bytes(name))
            assert (served.status_code, served.json()) == (reference.status_code, reference.json()), name
        metrics = client.get("/metrics").text
    assert sample(metrics, "ollama_guard_direct_reviews_total") == len(names)
    assert sample(metrics, "ollama_guard_direct_batches_total") == len(names)  # one review at a time: a batch each


def sample(exposition: str, name: str) -> float:
    """The value of an unlabelled sample in a Prometheus text exposition."""
    [value] = [line.split()[1] for line in exposition.splitlines() if line.split(" ")[0] == name]
    return float(value)


def read_responses(tls: ssl.SSLSocket, count: int) -> list[Response]:
    stream = b""
    while True:
        try:
            found = responses(stream)
        except (httptools.HttpParserError, ValueError):
            found = []
        if len(found) == count and all(len(r.body) == int(r.headers["content-length"]) for r in found):
            return found
        chunk = tls.recv(65536)
        assert chunk, f"connection closed after {stream!r}"
        stream += chunk


def test_the_installed_uvicorn_has_what_the_protocol_extends() -> None:
    """`AdmissionProtocol` overrides and calls members of uvicorn's httptools protocol, which is
    not a public interface: a uvicorn that changed them fails here, not in production."""
    assert protocol.supported()


def test_the_server_takes_the_direct_path_and_falls_back_to_uvicorns_protocol_when_it_differs(
    front: AdmissionFront, dev_certs: DevCerts, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tls = ReloadingTLS(cert_file=dev_certs.cert_file, key_file=dev_certs.key_file)
    served = build_server(front.app, host="127.0.0.1", port=0, tls=tls)
    assert isinstance(served.config.http, type) and issubclass(served.config.http, AdmissionProtocol)
    assert set(served.config.http.endpoints) == {b"/mutate", b"/validate"}
    monkeypatch.setattr(protocol, "supported", lambda: False)
    with caplog.at_level(logging.WARNING, logger="ollama_guard"):
        fallback = build_server(front.app, host="127.0.0.1", port=0, tls=tls)
    assert fallback.config.http == "httptools"
    assert "every review takes uvicorn's ASGI cycle" in caplog.text
