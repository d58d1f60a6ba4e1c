"""Fake Ollama servers on loopback for the runtime drift tests (test helper).

`FakeOllama` is a real HTTP/1.1 server on 127.0.0.1 (stdlib `ThreadingHTTPServer`) whose
`GET /api/ps` answers as a test says: `ps_body(...)` writes Ollama's own `api.ProcessResponse`
(`api/types.go`: `name`, `model`, `size`, `digest`, `details`, `expires_at`, `size_vram`, and the
`context_length` of recent releases, sizes in bytes), or it misbehaves (slow, dripping, huge,
redirecting, garbage, an error status). It counts requests and the most it served at once.

`gpu_snapshot(...)` writes a cluster snapshot (kubectl's `kind: List`) whose Ollama pods run on
loopback with their container port named `http`, so `serve --snapshot FILE --drift on` asks them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MIB = 1 << 20
Behaviour = Callable[[BaseHTTPRequestHandler], None]


def loaded(name: str, vram_mib: float, *, context: int | None = 8192, ram_mib: float = 0) -> dict[str, Any]:
    """One `ProcessModelResponse` as Ollama encodes it."""
    family = name.split(":", maxsplit=1)[0].rstrip("0123456789.")
    entry: dict[str, Any] = {
        "name": name,
        "model": name,
        "size": int((vram_mib + ram_mib) * MIB),
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family or "llama",
            "families": [family or "llama"],
            "parameter_size": "8.0B",
            "quantization_level": "Q4_K_M",
        },
        "expires_at": "2026-12-01T09:15:34.383753787Z",
        "size_vram": int(vram_mib * MIB),
    }
    if context is not None:
        entry["context_length"] = context
    return entry


def ps_body(*models: dict[str, Any]) -> bytes:
    return json.dumps({"models": list(models)}).encode()


def answer(body: bytes, *, status: int = 200, content_type: str = "application/json; charset=utf-8") -> Behaviour:
    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return behave


def slow(seconds: float, then: Behaviour) -> Behaviour:
    def behave(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        then(handler)

    return behave


def drip(body: bytes, *, every: float) -> Behaviour:
    """Headers at once, then the body one byte at a time: every read is quick, the whole is not."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for i in range(len(body)):
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
            time.sleep(every)

    return behave


def chunked(body: bytes, *, chunk: int = 65536) -> Behaviour:
    """No Content-Length: the size is only known by reading."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for start in range(0, len(body), chunk):
                piece = body[start : start + chunk]
                handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading at its limit

    return behave


def redirect(location: str, *, status: int = 302) -> Behaviour:
    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return behave


class FakeOllama:
    """A loopback HTTP server answering `GET /api/ps` with `behaviour` (changeable while running)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.hits = 0
        self.paths: list[str] = []
        self.most_at_once = 0
        self._now = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with fake._lock:
                    fake.hits += 1
                    fake.paths.append(self.path)
                    fake._now += 1
                    fake.most_at_once = max(fake.most_at_once, fake._now)
                try:
                    if self.path == "/api/ps":
                        fake.behaviour(self)
                    else:
                        answer(b'{"error":"not found"}', status=404)(self)
                finally:
                    with fake._lock:
                        fake._now -= 1

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fake_ollamas(*behaviours: Behaviour) -> Iterator[list[FakeOllama]]:
    servers = [FakeOllama(b) for b in behaviours]
    for s in servers:
        s.__enter__()
    try:
        yield servers
    finally:
        for s in servers:
            s.__exit__()


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def free_port() -> int:
    return closed_port()


# --- snapshots -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PodSpec:
    name: str
    node: str
    demand_mib: int
    namespace: str = "team-a"
    port: int | None = None  # the container port named http; None: no IP (not asked)
    ollama: bool = True
    models: str = "llama3.1:8b"


def gpu_node(name: str, *, memory_mib: int, gpus: int = 1, replicas: int = 4, reserved: str = "") -> dict[str, Any]:
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "nvidia.com/gpu.product": "NVIDIA-L40S-SHARED",
                "nvidia.com/gpu.memory": str(memory_mib),
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.replicas": str(replicas),
                "nvidia.com/gpu.sharing-strategy": "time-slicing",
            },
        },
        "status": {
            "capacity": {"nvidia.com/gpu": str(gpus * replicas)},
            "allocatable": {"nvidia.com/gpu": str(gpus * replicas)},
        },
    }
    if reserved:
        node["metadata"]["annotations"] = {"ollama-guard.io/vram-reserved": reserved}
    return node


def stamped_pod(spec: PodSpec) -> dict[str, Any]:
    """A running GPU pod whose demand is the guard's own stamp (so the test knows it exactly)."""
    container: dict[str, Any] = {
        "name": "ollama" if spec.ollama else "worker",
        "image": "ollama/ollama:0.12.3" if spec.ollama else "registry.example.com/cuda-job:1",
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
    }
    status: dict[str, Any] = {"phase": "Running"}
    if spec.port is not None:
        container["ports"] = [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}]
        status["podIP"] = "127.0.0.1"
    annotations = {
        "ollama-guard.io/vram-demand": str(spec.demand_mib),
        "ollama-guard.io/estimate": json.dumps({"v": 1}),
    }
    if spec.ollama:
        annotations["ollama-guard.io/models"] = spec.models
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "uid": f"uid-{spec.namespace}-{spec.name}",
            "annotations": annotations,
        },
        "spec": {"nodeName": spec.node, "containers": [container]},
        "status": status,
    }


def namespace(name: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "annotations": {f"ollama-guard.io/{k.replace('_', '-')}": v for k, v in annotations.items()},
        },
    }


def write_snapshot(path: Path, objects: Sequence[dict[str, Any]]) -> Path:
    path.write_text(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}, indent=1), encoding="utf-8"
    )
    return path
