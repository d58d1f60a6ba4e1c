"""The command line as a user runs it: `serve` on the embedded default, `certs`, `manifests`."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_embedded_default_answers_the_sample_review(tmp_path: Path) -> None:
    """The README's quick start: no cluster, bundled snapshot, self-generated certificates."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
    env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")  # no live cluster: the embedded default
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhook",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cert-dir",
            str(tmp_path / "certs"),
            "--ui-port",
            "0",  # no live page: port 8080 may be taken on a shared machine
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        context = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (tmp_path / "certs/ca.crt").exists():
                context = ssl.create_default_context(cafile=str(tmp_path / "certs/ca.crt"))
                try:
                    with urllib.request.urlopen(f"https://localhost:{port}/readyz", context=context, timeout=2) as r:
                        ready = json.loads(r.read())
                        break
                except OSError:
                    pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        else:
            pytest.fail("server did not become ready")
        assert ready["ready"] is True and ready["mode"] == "snapshot" and ready["nodes"] == 1
        sample = (ROOT / "webhook/data/sample-review.json").read_bytes()
        req = urllib.request.Request(
            f"https://localhost:{port}/mutate?timeout=5s", data=sample, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, context=context, timeout=5) as r:
            review = json.loads(r.read())
        response = review["response"]
        assert response["uid"] == json.loads(sample)["request"]["uid"] and response["allowed"] is True
        ops = json.loads(base64.b64decode(response["patch"]))
        assert {op["value"]["name"] for op in ops if op["path"].endswith("/env/-")} == {
            "OLLAMA_MAX_LOADED_MODELS",
            "OLLAMA_CONTEXT_LENGTH",
            "OLLAMA_NUM_PARALLEL",
            "OLLAMA_FLASH_ATTENTION",
            "NVIDIA_GPU_MEMORY_LIMIT",
            "NVIDIA_GPU_MEMORY_REQUEST",
        }
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    assert "curl --cacert" in stderr and "/mutate" in stderr  # the printed try-it command


def test_certs_prints_the_ca_bundle(tmp_path: Path) -> None:
    out = cli("certs", "--service", "guard", "--namespace", "gpu", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert base64.b64decode(out.stdout.strip()) == (tmp_path / "ca.crt").read_bytes()
    assert {p.name for p in tmp_path.iterdir()} == {"ca.crt", "ca.key", "tls.crt", "tls.key"}


def test_certs_rejects_a_bad_service_name(tmp_path: Path) -> None:
    out = cli("certs", "--service", "Not_A_Label", "--out", str(tmp_path))
    assert out.returncode == 2 and "Not_A_Label" in out.stderr


def test_manifests_fill_the_ca_bundle_and_secret(tmp_path: Path) -> None:
    assert cli("certs", "--namespace", "gpu-guard", "--out", str(tmp_path)).returncode == 0
    out = cli(
        "manifests",
        "--namespace",
        "gpu-guard",
        "--ca-bundle",
        str(tmp_path / "ca.crt"),
        "--tls-dir",
        str(tmp_path),
        "--image",
        "registry.example.com/og:1",
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    bundle = base64.b64encode((tmp_path / "ca.crt").read_bytes()).decode()
    hooks = [w for d in docs if d["kind"].endswith("WebhookConfiguration") for w in d["webhooks"]]
    assert hooks and all(w["clientConfig"]["caBundle"] == bundle for w in hooks)
    assert all(w["clientConfig"]["service"]["namespace"] == "gpu-guard" for w in hooks)
    assert any(d["kind"] == "Secret" and d["metadata"]["namespace"] == "gpu-guard" for d in docs)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/og:1"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--ca-bundle", "/nonexistent/ca.crt"], "No such file", id="missing-ca"),
        pytest.param(["--namespace", "Bad_NS"], "Bad_NS", id="bad-namespace"),
    ],
)
def test_manifests_input_errors_exit_2(args: list[str], needle: str) -> None:
    out = cli("manifests", *args)
    assert out.returncode == 2 and needle in out.stderr


def test_serve_rejects_a_broken_snapshot(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("items: [\n")
    out = cli("serve", "--snapshot", str(bad), "--cert-dir", str(tmp_path / "c"), "--port", str(free_port()),
              "--ui-port", "0")
    assert out.returncode == 2 and str(bad) in out.stderr and "line" in out.stderr
