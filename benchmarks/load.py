"""The load generator: replays AdmissionReviews over keep-alive TLS connections, like kube-apiserver.

Runs in its own process (the server under test never shares an interpreter with it). One thread per
connection, each with a blocking `ssl` socket (OpenSSL on the socket directly, and the GIL released
while waiting), pre-encoded HTTP/1.1 requests and the least parsing that reads a response safely
(status line, Content-Length, body, the `"allowed"` field). Two modes:

- `saturate` (closed loop): every connection sends its next review as soon as the previous answer
  arrives, for a fixed duration after a warm-up; throughput is answers per second.
- `rate` (open loop): review `i` is due at `start + i / rate`; a free connection sends it at that
  time, and its latency is measured from the time it was due, not from when it was sent, so a slow
  answer that holds every connection busy is charged to the requests it delayed (no coordinated
  omission). `send_lag` reports how late sends left relative to their schedule.

Prints one JSON object on stdout: throughput, per-kind latencies (binding answers split into
`binding:allowed` / `binding:denied`), errors and the generator's own CPU use (cores), so a run can
show that the generator was not the bottleneck.

Usage: `python -m benchmarks.load --port P --ca ca.crt --reviews reviews.json --mode saturate|rate
--duration S [--rate 500] [--connections 8] [--warmup 1]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.reviews import Review, read_reviews

SERVER_NAME = "localhost"
SOCKET_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Request:
    kind: str
    data: bytes


def encode(review: Review, *, host: str, port: int) -> Request:
    """The bytes kube-apiserver sends for one review (HTTP/1.1, keep-alive)."""
    body = review.body.encode()
    head = (
        f"POST {review.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-apiserver-admission\r\n"
        f"Accept: application/json, */*\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return Request(review.kind, head.encode() + body)


class Connection:
    """One keep-alive TLS connection; reconnects after a failure."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self._address = (host, port)
        self._context = context
        self._sock: ssl.SSLSocket | None = None

    def exchange(self, data: bytes) -> tuple[int, bytes]:
        sock = self._sock or self._connect()
        try:
            sock.sendall(data)
            return _read_response(sock)
        except (OSError, ValueError):
            self.close()
            raise

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection(self._address, timeout=SOCKET_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = self._context.wrap_socket(raw, server_hostname=SERVER_NAME)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head = buf[:end].lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("response without Content-Length")
    line_end = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : line_end if line_end > 0 else len(head)])
    need = end + 4 + length
    while len(buf) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection mid-response")
        buf += chunk
    return status, buf[end + 4 : need]


def decision(status: int, body: bytes) -> str:
    if status != 200:
        return f"http-{status}"
    return "allowed" if b'"allowed":true' in body else "denied"


@dataclass
class Recorder:
    """Latency samples (seconds) per kind, appended from many threads (list.append is atomic)."""

    samples: list[tuple[str, str, float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def saturate(conns: Sequence[Connection], requests: Sequence[Request], *, warmup: float, duration: float) -> dict[
    str, Any
]:
    """Closed loop: every connection busy all the time; throughput over `duration` after `warmup`."""
    rec = Recorder()
    counter = itertools.count()
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + duration

    def worker(conn: Connection) -> None:
        while True:
            request = requests[next(counter) % len(requests)]
            sent = time.perf_counter()
            if sent >= end:
                return
            try:
                status, body = conn.exchange(request.data)
            except (OSError, ValueError) as exc:
                rec.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            done = time.perf_counter()
            if sent >= measure_from and done <= end:
                rec.samples.append((request.kind, decision(status, body), done - sent, 0.0))

    _run_threads(worker, conns)
    return {"mode": "saturate", "window_s": duration, "throughput": len(rec.samples) / duration, **_report(rec)}


def offered_rate(
    conns: Sequence[Connection], requests: Sequence[Request], *, rate: float, warmup: float, duration: float
) -> dict[str, Any]:
    """Open loop at `rate` reviews/s; latency from each review's scheduled time."""
    rec = Recorder()
    lock = threading.Lock()
    slots = itertools.count()
    warm, total = int(warmup * rate), int((warmup + duration) * rate)
    start = time.perf_counter() + 0.05

    def worker(conn: Connection) -> None:
        while True:
            with lock:
                i = next(slots)
            if i >= total:
                return
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            request = requests[i % len(requests)]
            try:
                status, body = conn.exchange(request.data)
            except (OSError, ValueError) as exc:
                rec.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if i >= warm:
                rec.samples.append((request.kind, decision(status, body), time.perf_counter() - due, sent - due))

    _run_threads(worker, conns)
    report = _report(rec)
    lags = sorted(s[3] for s in rec.samples)
    report["send_lag_ms"] = {"p50": _ms(percentile(lags, 0.5)), "p99": _ms(percentile(lags, 0.99)),
                             "max": _ms(lags[-1] if lags else 0.0)}
    return {"mode": "rate", "rate": rate, "window_s": duration, "throughput": len(rec.samples) / duration, **report}


def _run_threads(worker: Any, conns: Sequence[Connection]) -> None:
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 for an empty one)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(math.ceil(q * len(ordered)) - 1, 0))]


def summarize(latencies: Iterable[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "mean": _ms(sum(ordered) / len(ordered)), "p50": _ms(percentile(ordered, 0.5)),
            "p95": _ms(percentile(ordered, 0.95)), "p99": _ms(percentile(ordered, 0.99)), "max": _ms(ordered[-1])}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _report(rec: Recorder) -> dict[str, Any]:
    groups: dict[str, list[float]] = {"all": []}
    decisions: dict[str, dict[str, int]] = {}
    for kind, outcome, latency, _ in rec.samples:
        groups["all"].append(latency)
        groups.setdefault(kind, []).append(latency)
        if kind == "binding":
            groups.setdefault(f"binding:{outcome}", []).append(latency)
        counts = decisions.setdefault(kind, {})
        counts[outcome] = counts.get(outcome, 0) + 1
    return {"latency_ms": {k: summarize(v) for k, v in groups.items()}, "decisions": decisions,
            "errors": len(rec.errors), "error_examples": sorted(set(rec.errors))[:3]}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Replay AdmissionReviews against a webhook over TLS.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", type=Path, required=True, help="CA certificate that signed the server's")
    parser.add_argument("--reviews", type=Path, required=True, help="JSON file written by benchmarks.reviews")
    parser.add_argument("--mode", choices=("saturate", "rate"), required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    sys.setswitchinterval(0.0005)  # a sleeping sender gets the GIL back promptly when its review is due
    context = ssl.create_default_context(cafile=str(args.ca))
    requests = [encode(r, host=args.host, port=args.port) for r in read_reviews(args.reviews)]
    conns = [Connection(args.host, args.port, context) for _ in range(args.connections)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if args.mode == "saturate":
        result = saturate(conns, requests, warmup=args.warmup, duration=args.duration)
    else:
        result = offered_rate(conns, requests, rate=args.rate, warmup=args.warmup, duration=args.duration)
    result["generator_cpu_cores"] = round((time.process_time() - cpu0) / (time.perf_counter() - wall0), 3)
    result["connections"] = args.connections
    for conn in conns:
        conn.close()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
