"""`ollama-guard serve` as a user runs it, in a subprocess on loopback (test helper).

`serving(tmp_path, *args)` starts `python -m webhook serve` on free ports (webhook over HTTPS
with self-made development certificates, the live page on `--ui-port`), with no kubeconfig (so
the state is the embedded default or `--snapshot`), waits until both answer, and stops it with
SIGINT. The `Guard` it yields knows both URLs and a client that trusts the guard's CA.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Guard:
    webhook: str
    page: str
    ca_file: Path
    process: subprocess.Popen[str]

    def https(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.webhook, verify=context, timeout=5, trust_env=False)

    def state(self) -> dict[str, Any]:
        reply = httpx.get(f"{self.page}/api/state", timeout=5, trust_env=False)
        assert reply.status_code == 200, reply.text
        document: dict[str, Any] = reply.json()
        return document

    def review(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.https() as client:
            reply = client.post(
                endpoint,
                params={"timeout": "5s"},
                content=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
            )
        assert reply.status_code == 200, reply.text
        response: dict[str, Any] = reply.json()["response"]
        return response


@contextmanager
def serving(tmp_path: Path, *args: str, startup: float = 40.0) -> Iterator[Guard]:
    port, ui_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    }
    env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")  # no live cluster
    certs = tmp_path / "certs"
    argv = [
        sys.executable,
        "-m",
        "webhook",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--cert-dir",
        str(certs),
        "--ui-port",
        str(ui_port),
        *args,
    ]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    guard = Guard(f"https://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}", certs / "ca.crt", proc)
    try:
        deadline = time.monotonic() + startup
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if guard.ca_file.exists():
                    with guard.https() as client:
                        client.get("/healthz").raise_for_status()
                    httpx.get(f"{guard.page}/healthz", timeout=2, trust_env=False).raise_for_status()
                    break
            except (httpx.HTTPError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"serve did not come up: {(tmp_path / 'serve.log').read_text()}")
            time.sleep(0.1)
        yield guard
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "serve.log").read_text()
