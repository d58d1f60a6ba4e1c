"""Optional envtest-style suite: ClusterMirror, the node advertiser with its Lease, and the packaged
webhook configurations against a real `kube-apiserver` + `etcd`.

Runs only when `KUBEBUILDER_ASSETS` names a folder holding the `etcd` and `kube-apiserver`
binaries (as `setup-envtest use -p path` prints); otherwise the whole module is skipped. The
control plane listens on loopback only: etcd over plain HTTP, the API server on its secure port
with its self-signed serving certificate and a static bearer token in `system:masters`.
Best-effort: written to controller-runtime's envtest flags, not run where the binaries are absent.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ASSETS = os.environ.get("KUBEBUILDER_ASSETS")
if not ASSETS:
    pytest.skip("KUBEBUILDER_ASSETS is unset: no etcd / kube-apiserver binaries to run against",
                allow_module_level=True)

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from kubernetes.client import (  # noqa: E402
    ApiClient,
    Configuration,
    CoreV1Api,
    V1Container,
    V1Node,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
)

from webhook.state.mirror import ClusterMirror, Kind  # noqa: E402

START_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def spawn(binary: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([str(Path(str(ASSETS)) / binary), *args], stdout=out,
                                stderr=subprocess.STDOUT)


def apiserver_args(workdir: Path, etcd_url: str, port: int) -> list[str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (workdir / "sa.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return [f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--cert-dir={workdir / 'certs'}", f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={workdir / 'sa.key'}",
            f"--service-account-signing-key-file={workdir / 'sa.key'}"]


def answers(client: ApiClient) -> bool:
    try:
        CoreV1Api(client).read_namespace("default")
    except Exception:  # not up yet: connection refused, 503, default namespace not created
        return False
    return True


@pytest.fixture(scope="module")
def api_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    workdir = tmp_path_factory.mktemp("envtest")
    token = secrets.token_urlsafe(24)
    (workdir / "tokens.csv").write_text(f'{token},envtest-admin,1,"system:masters"\n')
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    processes = [spawn("etcd", [
        f"--data-dir={workdir / 'etcd'}", f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync=true",
    ], workdir / "etcd.log")]
    try:
        processes.append(spawn("kube-apiserver", apiserver_args(workdir, etcd_url, api_port),
                               workdir / "kube-apiserver.log"))
        wait_until((workdir / "certs" / "apiserver.crt").is_file, START_SECONDS,
                   "the API server's self-signed certificate")
        config = Configuration(host=f"https://127.0.0.1:{api_port}")
        config.ssl_ca_cert = str(workdir / "certs" / "apiserver.crt")  # chain incl. its CA
        config.api_key = {"BearerToken": f"Bearer {token}"}
        client = ApiClient(config)
        wait_until(lambda: answers(client), START_SECONDS, "the API server to answer")
        yield client
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)


def keep_name(kind: Kind, raw: dict[str, Any]) -> dict[str, Any] | None:
    spec = raw.get("spec") or {}
    return {"name": raw["metadata"]["name"], "nodeName": spec.get("nodeName")}


def test_mirror_sees_node_and_pod_created_through_the_api(api_client: ApiClient) -> None:
    mirror = ClusterMirror(api_client, project=keep_name, backoff_base=0.1)
    mirror.start()
    try:
        assert mirror.wait_ready(30.0)
        assert "default" in mirror.objects("Namespace")
        core = CoreV1Api(api_client)
        core.create_node(V1Node(metadata=V1ObjectMeta(name="gpu-1", labels={
            "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.replicas": "4"})))
        core.create_namespaced_pod("default", V1Pod(
            metadata=V1ObjectMeta(name="ollama-0"),
            spec=V1PodSpec(node_name="gpu-1", containers=[
                V1Container(name="ollama", image="ollama/ollama:0.5.7")])))
        wait_until(lambda: "gpu-1" in mirror.objects("Node")
                   and "default/ollama-0" in mirror.objects("Pod"), 10.0, "the watch events")
        assert mirror.objects("Pod")["default/ollama-0"] == {"name": "ollama-0",
                                                             "nodeName": "gpu-1"}
        core.delete_namespaced_pod("ollama-0", "default", grace_period_seconds=0)
        wait_until(lambda: "default/ollama-0" not in mirror.objects("Pod"), 10.0,
                   "the pod's deletion")
        assert all(s.errors == 0 for s in mirror.status().values())
    finally:
        mirror.stop()


# --- design §14 on a real API server: one advertiser, and no cluster-wide outage when the guard is down


def _raw(client: ApiClient, method: str, path: str, body: dict[str, Any] | None = None,
         content_type: str = "application/json") -> dict[str, Any]:
    from webhook.state.api import request_json

    return request_json(client, method, path, body=body, content_type=content_type)


def test_two_advertisers_one_lease_holder_and_the_node_advertised(api_client: ApiClient) -> None:
    from webhook.core.view import ClusterView
    from webhook.state.advertiser import KubeNodeStatusApi, NodeAdvertiser
    from webhook.state.lease import KubeLeaseApi, LeaseElector
    from webhook.state.live import LiveSource

    _raw(api_client, "POST", "/api/v1/namespaces", {"metadata": {"name": "ollama-guard-system"}})
    _raw(api_client, "POST", "/api/v1/nodes", {"metadata": {"name": "gpu-adv", "labels": {
        "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.replicas": "4",
        "nvidia.com/gpu.sharing-strategy": "time-slicing"}}})
    from webhook.cli.settings import load_settings
    from webhook.core.catalog import load_catalog

    cluster, catalog = load_settings().cluster_policy(), load_catalog()
    sources: list[LiveSource] = []
    for identity in ("envtest-1", "envtest-2"):
        source = LiveSource(lambda **kw: ClusterMirror(api_client, backoff_base=0.1, **kw), cluster=cluster,
                            catalog=catalog, publish_interval=0.05)
        elector = LeaseElector(KubeLeaseApi(api_client), namespace="ollama-guard-system", identity=identity,
                               duration=3.0, renew_deadline=2.0, renew_every=0.5)
        view: Callable[[], ClusterView] = lambda s=source: s.ledger.view  # noqa: E731
        source.attach_advertiser(NodeAdvertiser(view, KubeNodeStatusApi(api_client), elector=elector,
                                                interval=0.2))
        source.start()
        sources.append(source)
    try:
        def advertised() -> Any:
            status = _raw(api_client, "GET", "/api/v1/nodes/gpu-adv").get("status", {})
            return status.get("allocatable", {}).get("ollama-guard.io/vram-mib")

        wait_until(lambda: advertised() == "81559", 30.0, "the node's ollama-guard.io/vram-mib")
        time.sleep(2.0)
        leaders = [s for s in sources if s.advertiser is not None and s.advertiser.leading]
        assert len(leaders) == 1
        lease = _raw(api_client, "GET", "/apis/coordination.k8s.io/v1/namespaces/ollama-guard-system/leases/"
                     "ollama-guard-advertiser")
        assert lease["spec"]["holderIdentity"] in ("envtest-1", "envtest-2")
    finally:
        for source in sources:
            source.stop()


def test_with_the_guard_down_pods_without_a_gpu_are_created_and_bound(api_client: ApiClient) -> None:
    from importlib import resources

    import yaml

    from webhook.install.manifests import BASE_RESOURCE

    docs = yaml.safe_load_all(resources.files("webhook").joinpath(BASE_RESOURCE).read_text(encoding="utf-8"))
    for doc in docs:
        if doc and doc.get("kind") in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            plural = doc["kind"].lower().replace("configuration", "configurations")
            _raw(api_client, "POST", f"/apis/admissionregistration.k8s.io/v1/{plural}", doc)
    _raw(api_client, "POST", "/api/v1/nodes", {"metadata": {"name": "cpu-1"}})
    pod = {"metadata": {"name": "nginx"}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}
    time.sleep(2.0)  # the API server picks up new webhook configurations within a second or so
    created = _raw(api_client, "POST", "/api/v1/namespaces/default/pods", pod)  # pods webhooks: not called
    assert created["metadata"]["name"] == "nginx"
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "nginx"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "cpu-1"}}
    _raw(api_client, "POST", "/api/v1/namespaces/default/pods/nginx/binding", binding)  # Ignore: not blocked
    assert _raw(api_client, "GET", "/api/v1/namespaces/default/pods/nginx")["spec"]["nodeName"] == "cpu-1"
    gpu_pod = {"metadata": {"name": "ollama"}, "spec": {"containers": [{"name": "ollama", "image": "ollama/ollama"}]}}
    from webhook.state.api import ApiError

    with pytest.raises(ApiError) as refused:  # narrowed to Ollama/GPU pods, failurePolicy Fail
        _raw(api_client, "POST", "/api/v1/namespaces/default/pods", gpu_pod)
    assert "failed calling webhook" in refused.value.message
