"""webhook.http.tls: a real uvicorn server keeps serving while its certificate files rotate."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from webhook.http.tls import ReloadingTLS, TLSLoadError
from webhook.install import certs

WATCH_INTERVAL = 0.05
DEADLINE = 5.0

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    assert scope["scheme"] == "https"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def make_bundle() -> certs.CertBundle:
    return certs.build_bundle(
        service="ollama-guard",
        namespace="ollama-guard-system",
        extra_dns=["localhost"],
        extra_ips=["127.0.0.1"],
    )


def fingerprint(cert_pem: bytes) -> str:
    return certs.read_cert_info(cert_pem).sha256_fingerprint


# --- the uvicorn recipe: how the server hands uvicorn our context -----------------------------


def server_with_factory(app: Any, tls: ReloadingTLS) -> uvicorn.Server:
    """uvicorn >= 0.47: `ssl_context_factory` returns our context; `Config.load` keeps it."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_config=None,
        access_log=False,
        ssl_context_factory=tls.ssl_context_factory,
    )
    return uvicorn.Server(config)


def server_with_preloaded_config(app: Any, tls: ReloadingTLS) -> uvicorn.Server:
    """Any uvicorn: load the config, then set `config.ssl`; `serve()` skips a loaded config."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_config=None, access_log=False
    )
    config.load()
    config.ssl = tls.context
    return uvicorn.Server(config)


@dataclass
class Running:
    server: uvicorn.Server
    port: int
    ssl_passed_to_create_server: list[object] = field(default_factory=list)


@contextlib.contextmanager
def serving(
    tls: ReloadingTLS,
    build: Callable[[Any, ReloadingTLS], uvicorn.Server] = server_with_factory,
) -> Iterator[Running]:
    """Run `build(ok_app, tls)` plus `tls.watch()` in a background thread on a free port."""
    server = build(ok_app, tls)
    seen: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        real_create_server = loop.create_server

        async def recording_create_server(*args: Any, **kwargs: Any) -> asyncio.Server:
            seen.append(kwargs.get("ssl"))
            return await real_create_server(*args, **kwargs)

        loop.create_server = recording_create_server  # type: ignore[method-assign]
        watcher = asyncio.create_task(tls.watch(interval=WATCH_INTERVAL))
        try:
            await server.serve()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE
    while not server.started:
        assert thread.is_alive(), "server thread died during startup"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Running(server=server, port=port, ssl_passed_to_create_server=seen)
    finally:
        server.should_exit = True
        thread.join(DEADLINE)
        assert not thread.is_alive(), "server thread did not shut down"


# --- a real client -----------------------------------------------------------------------------


def get_peer(port: int, *, trust: bytes, host: str = "localhost") -> str:
    """GET / over HTTPS verifying against `trust` (a CA PEM); returns the server cert's sha256."""
    context = ssl.create_default_context(cadata=trust.decode())
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=DEADLINE)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok")
        assert isinstance(conn.sock, ssl.SSLSocket)
        der = conn.sock.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()
    finally:
        conn.close()


def wait_for_peer(port: int, *, trust: bytes, expected: str, host: str = "localhost") -> None:
    """Poll new connections until one presents `expected`; no fixed sleeps."""
    deadline = time.monotonic() + DEADLINE
    last: str | Exception = "nothing yet"
    while time.monotonic() < deadline:
        try:
            last = get_peer(port, trust=trust, host=host)
        except (ssl.SSLError, ConnectionError) as exc:  # still the old cert: not trusted yet
            last = exc
        if last == expected:
            return
        time.sleep(0.02)
    raise AssertionError(f"server never presented {expected}; last: {last!r}")


def wait_for_warning(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for record in list(caplog.records):
            if record.name == "webhook.http.tls" and text in record.getMessage():
                return record
        time.sleep(0.02)
    raise AssertionError(f"no webhook.http.tls log containing {text!r}")


@pytest.fixture
def bundle_a() -> certs.CertBundle:
    return make_bundle()


@pytest.fixture
def cert_dir(tmp_path: Path, bundle_a: certs.CertBundle) -> Path:
    certs.write_bundle(bundle_a, tmp_path / "certs")
    return tmp_path / "certs"


@pytest.fixture
def tls(cert_dir: Path) -> ReloadingTLS:
    return ReloadingTLS(cert_file=cert_dir / "tls.crt", key_file=cert_dir / "tls.key")


# --- wiring into uvicorn -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(server_with_factory, id="ssl_context_factory"),
        pytest.param(server_with_preloaded_config, id="preloaded-config"),
    ],
)
def test_uvicorn_listens_with_our_context(
    tls: ReloadingTLS,
    bundle_a: certs.CertBundle,
    build: Callable[[Any, ReloadingTLS], uvicorn.Server],
) -> None:
    with serving(tls, build) as running:
        assert running.ssl_passed_to_create_server == [tls.context]
        for host in ("localhost", "127.0.0.1"):
            peer = get_peer(running.port, trust=bundle_a.ca_cert_pem, host=host)
            assert peer == fingerprint(bundle_a.cert_pem)


def test_server_context_settings(tls: ReloadingTLS) -> None:
    context = tls.context
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE


# --- rotation ----------------------------------------------------------------------------------


def test_rotated_files_with_a_new_ca_are_served_without_restart(
    tls: ReloadingTLS, cert_dir: Path, bundle_a: certs.CertBundle
) -> None:
    with serving(tls) as running:
        assert get_peer(running.port, trust=bundle_a.ca_cert_pem) == fingerprint(bundle_a.cert_pem)
        context_before = tls.context

        bundle_b = make_bundle()
        certs.write_bundle(bundle_b, cert_dir)

        for host in ("localhost", "127.0.0.1"):  # with SNI, and without (IP address)
            wait_for_peer(
                running.port,
                trust=bundle_b.ca_cert_pem,
                expected=fingerprint(bundle_b.cert_pem),
                host=host,
            )
        with pytest.raises(ssl.SSLCertVerificationError):
            get_peer(running.port, trust=bundle_a.ca_cert_pem)
        assert tls.context is context_before
        assert running.ssl_passed_to_create_server == [context_before]  # never re-bound


def _kubelet_write(mount: Path, bundle: certs.CertBundle, version: str) -> None:
    """What kubelet's AtomicWriter does: a new timestamped dir, then swap the ..data symlink."""
    target = mount / f"..{version}"
    target.mkdir()
    (target / "tls.crt").write_bytes(bundle.cert_pem)
    (target / "tls.key").write_bytes(bundle.key_pem)
    (target / "ca.crt").write_bytes(bundle.ca_cert_pem)
    data = mount / "..data"
    old = data.resolve() if data.is_symlink() else None
    (mount / "..data_tmp").symlink_to(target.name)
    os.replace(mount / "..data_tmp", data)
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(old)


def test_secret_style_symlink_swap_is_followed(tmp_path: Path) -> None:
    mount = tmp_path / "secret"
    mount.mkdir()
    bundle_a, bundle_b = make_bundle(), make_bundle()
    _kubelet_write(mount, bundle_a, "2026_03_01_12_00_00.000000001")
    tls = ReloadingTLS(cert_file=mount / "tls.crt", key_file=mount / "tls.key")
    link_before = os.lstat(mount / "tls.crt")

    with serving(tls) as running:
        assert get_peer(running.port, trust=bundle_a.ca_cert_pem) == fingerprint(bundle_a.cert_pem)
        _kubelet_write(mount, bundle_b, "2026_03_01_13_00_00.000000002")
        wait_for_peer(
            running.port, trust=bundle_b.ca_cert_pem, expected=fingerprint(bundle_b.cert_pem)
        )

    link_after = os.lstat(mount / "tls.crt")
    assert (link_after.st_ino, link_after.st_mtime_ns) == (
        link_before.st_ino,
        link_before.st_mtime_ns,
    )


def _garbage_key(cert_dir: Path, new: certs.CertBundle) -> None:
    (cert_dir / "tls.key").write_bytes(b"this is not a key\n")
    (cert_dir / "tls.crt").write_bytes(new.cert_pem)


def _half_written_key(cert_dir: Path, new: certs.CertBundle) -> None:
    (cert_dir / "tls.key").write_bytes(new.key_pem[: len(new.key_pem) // 2])
    (cert_dir / "tls.crt").write_bytes(new.cert_pem)


def _empty_key(cert_dir: Path, new: certs.CertBundle) -> None:
    (cert_dir / "tls.key").write_bytes(b"")
    (cert_dir / "tls.crt").write_bytes(new.cert_pem)


def _new_cert_old_key(cert_dir: Path, new: certs.CertBundle) -> None:
    (cert_dir / "tls.crt").write_bytes(new.cert_pem)


def _key_file_gone(cert_dir: Path, new: certs.CertBundle) -> None:
    (cert_dir / "tls.key").unlink()
    (cert_dir / "tls.crt").write_bytes(new.cert_pem)


@pytest.mark.parametrize(
    ("break_files", "warning"),
    [
        pytest.param(_garbage_key, "still serving the previous one", id="garbage-key"),
        pytest.param(_half_written_key, "still serving the previous one", id="half-written-key"),
        pytest.param(_empty_key, "still serving the previous one", id="empty-key"),
        pytest.param(_new_cert_old_key, "KEY_VALUES_MISMATCH", id="new-cert-old-key"),
        pytest.param(_key_file_gone, "No such file", id="key-file-missing"),
    ],
)
def test_a_broken_pair_keeps_the_old_certificate_then_recovers(
    tls: ReloadingTLS,
    cert_dir: Path,
    bundle_a: certs.CertBundle,
    *,
    caplog: pytest.LogCaptureFixture,
    break_files: Callable[[Path, certs.CertBundle], None],
    warning: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="webhook.http.tls")
    bundle_b = make_bundle()
    with serving(tls) as running:
        break_files(cert_dir, bundle_b)

        record = wait_for_warning(caplog, warning)
        assert record.levelno == logging.WARNING
        assert str(cert_dir / "tls.crt") in record.getMessage()
        for host in ("localhost", "127.0.0.1"):
            peer = get_peer(running.port, trust=bundle_a.ca_cert_pem, host=host)
            assert peer == fingerprint(bundle_a.cert_pem)

        certs.write_bundle(bundle_b, cert_dir)  # the writer finishes: next check picks it up
        wait_for_peer(
            running.port, trust=bundle_b.ca_cert_pem, expected=fingerprint(bundle_b.cert_pem)
        )

    warnings = [
        r for r in caplog.records if r.name == "webhook.http.tls" and r.levelno == logging.WARNING
    ]
    assert len(warnings) <= 3, "a state that stays broken must not warn on every poll"


# --- reload_if_changed without a server --------------------------------------------------------


def test_reload_if_changed_reports_only_real_changes(tls: ReloadingTLS, cert_dir: Path) -> None:
    assert tls.reload_if_changed() is False
    certs.write_bundle(make_bundle(), cert_dir)
    assert tls.reload_if_changed() is True
    assert tls.reload_if_changed() is False


def test_a_new_inode_alone_counts_as_a_change(tls: ReloadingTLS, cert_dir: Path) -> None:
    for name in ("tls.crt", "tls.key"):
        path = cert_dir / name
        before = path.stat()
        copy = cert_dir / f"{name}.copy"
        shutil.copyfile(path, copy)
        os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(copy, path)
        after = path.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        assert after.st_ino != before.st_ino
    assert tls.reload_if_changed() is True


def test_a_failed_reload_is_retried_next_time(tls: ReloadingTLS, cert_dir: Path) -> None:
    (cert_dir / "tls.key").write_bytes(b"garbage")
    assert tls.reload_if_changed() is False
    assert tls.reload_if_changed() is False
    certs.write_bundle(make_bundle(), cert_dir)
    assert tls.reload_if_changed() is True


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda d: (d / "tls.crt").unlink(), "No such file", id="missing-cert"),
        pytest.param(lambda d: (d / "tls.key").write_bytes(b"junk"), "PEM lib", id="garbage-key"),
        pytest.param(
            lambda d: (d / "tls.key").write_bytes(make_bundle().key_pem),
            "KEY_VALUES_MISMATCH",
            id="mismatched-key",
        ),
    ],
)
def test_unusable_files_at_startup_raise_a_clear_error(
    cert_dir: Path, damage: Callable[[Path], object], message: str
) -> None:
    damage(cert_dir)
    with pytest.raises(TLSLoadError, match=message) as caught:
        ReloadingTLS(cert_file=cert_dir / "tls.crt", key_file=cert_dir / "tls.key")
    assert (
        f"cannot load TLS certificate {cert_dir / 'tls.crt'} with key {cert_dir / 'tls.key'}"
        in str(caught.value)
    )
