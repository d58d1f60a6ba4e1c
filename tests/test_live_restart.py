"""`ollama-guard serve` in live mode, as a process: killed with SIGKILL and restarted on the same
cluster, it rebuilds exactly the same committed VRAM per node (design §11).

The guard runs as `python -m webhook serve --kubeconfig F --port P --cert-dir D` against the
loopback API server. The cluster holds pods as the mutating webhook stamped them, pods without
stamps (created before the guard: recomputed, with their namespace's defaults), pods whose stamp
an older estimate version wrote (`{"v":0}`: recomputed, never trusted), pending and finished pods
(not counted) and an undeclared CUDA pod (one replica's even share). The expected figures come
from the decision core's own `build_view` over the same objects. In the middle, the first guard
admits a binding (a reservation in its memory only), is killed, and the scheduler's bind lands
while it is down: the restarted guard must count that pod from its stamp and `spec.nodeName`.
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_api_fixture import KubeApiFixture
from live_cluster import binding_review, gpu_node, namespace, stamped_pod, unmutated_pod, write_kubeconfig
from prometheus_client.parser import text_string_to_metric_families

from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.view import build_view

START_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cluster_objects() -> list[dict[str, Any]]:
    cuda = {
        "kind": "Pod",
        "metadata": {"name": "cuda-batch", "namespace": "team-a", "uid": "0c0d0a00-0000-4000-8000-000000000001"},
        "spec": {"nodeName": "gpu-l40s", "containers": [{
            "name": "main", "image": "nvcr.io/nvidia/cuda:12.4.1-base",
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
        }]},
        "status": {"phase": "Running"},
    }
    return [
        gpu_node("gpu-h100"),
        gpu_node("gpu-l40s", memory="46068", count="2", replicas="4", **{"ollama-guard.io/vram-reserved": "2Gi"}),
        {"kind": "Node", "metadata": {"name": "cpu-a", "labels": {"kubernetes.io/os": "linux"}}},
        namespace("team-a"),
        namespace("team-b", **{"ollama-guard.io/context-length": "16384", "ollama-guard.io/num-parallel": "2"}),
        stamped_pod("stamped-1", node="gpu-h100", phase="Running"),
        stamped_pod("stamped-2", node="gpu-h100", phase="Running", models="qwen2.5:14b"),
        stamped_pod("stamped-3", namespace="team-b", node="gpu-l40s", phase="Running", demand=12000),
        stamped_pod("old-stamp-1", node="gpu-h100", phase="Running", stamp="old"),
        stamped_pod("old-stamp-2", namespace="team-b", node="gpu-l40s", phase="Running", stamp="old",
                    models="mistral:7b"),
        stamped_pod("no-stamp-1", node="gpu-l40s", phase="Running", stamp="none", models="gemma2:9b"),
        unmutated_pod("before-guard-1", namespace="team-b", node="gpu-h100", models="llama3.1:8b"),
        unmutated_pod("before-guard-2", namespace="team-b", node="gpu-l40s", models="qwen2.5:7b"),
        stamped_pod("finished", node="gpu-h100", phase="Succeeded"),
        stamped_pod("waiting", phase="Pending"),
        cuda,
    ]


def expected_committed(objects: list[dict[str, Any]]) -> dict[str, float]:
    settings = load_settings()
    view = build_view(objects, cluster=settings.cluster_policy(), catalog=load_catalog())
    return {name: float(view.committed.get(name, 0)) for name, node in view.nodes.items() if node.guarded}


class GuardProcess:
    """`python -m webhook serve ...` in live mode, polled over HTTPS with the CA it generated."""

    def __init__(self, tmp: Path, kubeconfig: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG", "OLLAMA_GUARD_"))}
        self.cert_dir, self.port = tmp / "certs", port
        self.log = (tmp / f"guard-{time.monotonic_ns()}.log").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--cert-dir", str(self.cert_dir), "--kubeconfig", str(kubeconfig), "--ui-port", "0"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def get(self, path: str) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", context=context, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}?timeout=5s", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=10) as reply:
            document: dict[str, Any] = json.loads(reply.read())
            return document

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the guard exited:\n{self.output()}"
            if (self.cert_dir / "ca.crt").exists():
                try:
                    status, body = self.get("/readyz")
                except OSError:
                    status, body = 0, b""
                if status == 200:
                    ready: dict[str, Any] = json.loads(body)
                    return ready
            time.sleep(0.05)
        pytest.fail(f"the guard did not become ready:\n{self.output()}")

    def committed(self) -> dict[str, float]:
        status, body = self.get("/metrics")
        assert status == 200
        return {
            sample.labels["node"]: sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name == "ollama_guard_node_vram_committed_mib"
        }

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def api() -> Iterator[KubeApiFixture]:
    with KubeApiFixture() as server:
        yield server


@pytest.mark.slow
def test_a_sigkilled_guard_restarts_with_the_same_committed_vram(api: KubeApiFixture, tmp_path: Path) -> None:
    objects = cluster_objects()
    for obj in objects:
        api.add(obj)
    expected = expected_committed(objects)
    assert expected["gpu-h100"] > 0 and expected["gpu-l40s"] > 0
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
    port = free_port()
    # the first guard sees the pods before their namespaces (team-b's defaults arrive last)
    api.set_failure("Namespace", 500, times=2)

    first = GuardProcess(tmp_path, kubeconfig, port)
    try:
        ready = first.wait_ready()
        assert (ready["mode"], ready["nodes"]) == ("live", 2)
        assert ready["tenants"] == len(objects) - 6  # minus 3 nodes, 2 namespaces and the finished pod
        assert "(live cluster (list + watch)" in first.output()  # then the loop and parser it runs
        assert first.committed() == expected

        # a binding is admitted (reserved in memory only), then the guard dies before the watch
        pod = next(p for p in objects if p["metadata"]["name"] == "waiting")
        answer = first.post("/validate", binding_review(pod, "gpu-h100"))
        assert answer["response"]["allowed"] is True
        demand = int(pod["metadata"]["annotations"]["ollama-guard.io/vram-demand"])
        assert first.committed() == {**expected, "gpu-h100": expected["gpu-h100"] + demand}
    finally:
        first.kill()

    api.modify({**pod, "spec": {**pod["spec"], "nodeName": "gpu-h100"}, "status": {"phase": "Running"}})
    second = GuardProcess(tmp_path, kubeconfig, port)
    try:
        assert second.wait_ready()["tenants"] == len(objects) - 6
        assert second.committed() == {**expected, "gpu-h100": expected["gpu-h100"] + demand}
        assert "reusing development certificates" in second.output()
    finally:
        second.kill()
