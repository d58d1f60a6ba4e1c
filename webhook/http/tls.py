"""Server TLS with certificate hot reload (design §13: a rotated Secret needs no restart).

Owns the one `ssl.SSLContext` the HTTP server listens with; standard library `ssl` only (no
`cryptography`, no `uvicorn`). The server gets `ReloadingTLS.context` once at startup and keeps
it; `reload_if_changed` notices changed files and later handshakes use the new certificate.

How a reload reaches that fixed context: each new certificate is loaded into a *fresh* context,
and the server context's `sni_callback` (OpenSSL runs it on every ClientHello, with or without
SNI) moves each new handshake onto the newest one. Loading into the live context instead is
unsafe: `load_cert_chain` installs the certificate before it reads the key, so a half-written key
file leaves the server with the new certificate and no key and every handshake then fails. Here a
failed load touches nothing; the old certificate keeps serving and the next check retries.

Kubernetes updates a mounted Secret by swapping the `..data` symlink; `os.stat` follows symlinks,
so the change is seen as a new inode behind the same `tls.crt`/`tls.key` paths.

With uvicorn (>= 0.47): `uvicorn.Config(app, ..., ssl_context_factory=tls.ssl_context_factory)`,
and run `tls.watch()` as a task next to `Server.serve()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

_FileStamp = tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino) of the resolved file
_Stamp = tuple[_FileStamp, _FileStamp]


class TLSLoadError(RuntimeError):
    """The certificate or key file could not be read or does not form a usable pair."""


class ReloadingTLS:
    """Owns one ssl.SSLContext for the server; reloads the certificate chain when files change."""

    def __init__(self, *, cert_file: Path, key_file: Path) -> None:
        """Load the pair now; raise TLSLoadError naming both files if they are unusable."""
        self._cert_file = Path(cert_file)
        self._key_file = Path(key_file)
        try:
            stamp = self._stamp()
            context = self._load()
        except (OSError, ssl.SSLError) as exc:
            raise TLSLoadError(
                f"cannot load TLS certificate {self._cert_file} with key {self._key_file}: {_describe(exc)}"
            ) from exc
        context.sni_callback = self._select_context
        self._context = context
        self._active = context
        self._stamp_loaded: _Stamp = stamp
        self._failure: _Stamp | str | None = None  # the broken state already warned about

    @property
    def context(self) -> ssl.SSLContext:
        """The context to hand to the server, once; it stays the same object across reloads."""
        return self._context

    @property
    def cert_file(self) -> Path:
        return self._cert_file

    @property
    def key_file(self) -> Path:
        return self._key_file

    def reload_if_changed(self) -> bool:
        """Load the files again if their stat changed; True when new handshakes use them."""
        try:
            stamp = self._stamp()
        except OSError as exc:
            # Mid-rotation a path can briefly vanish; keep serving and look again next time.
            self._warn_once(str(exc), exc)
            return False
        if stamp == self._stamp_loaded:
            return False
        try:
            fresh = self._load()
        except (OSError, ssl.SSLError) as exc:
            self._warn_once(stamp, exc)
            return False
        self._active = fresh
        self._stamp_loaded = stamp
        self._failure = None
        logger.info("TLS certificate reloaded from %s", self._cert_file)
        return True

    async def watch(self, *, interval: float = 2.0) -> None:
        """Check the files every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed()
            except Exception:
                # A dead watcher would silently stop rotation until the certificate expires.
                logger.exception("TLS certificate reload check failed; will retry")

    def ssl_context_factory(self, config: object, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """`uvicorn.Config(ssl_context_factory=...)` hook: always this object's `context`."""
        return self._context

    def _select_context(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        active = self._active
        if active is not context:
            ssl_object.context = active

    def _load(self) -> ssl.SSLContext:
        context = _new_server_context()
        context.load_cert_chain(certfile=self._cert_file, keyfile=self._key_file)
        return context

    def _stamp(self) -> _Stamp:
        return (_file_stamp(self._cert_file), _file_stamp(self._key_file))

    def _warn_once(self, failure: _Stamp | str, exc: Exception) -> None:
        # Warn once per distinct broken state, not on every poll while it stays broken.
        if failure == self._failure:
            logger.debug("TLS certificate still unusable: %s", _describe(exc))
            return
        self._failure = failure
        logger.warning(
            "TLS certificate %s / key %s not reloaded, still serving the previous one: %s",
            self._cert_file,
            self._key_file,
            _describe(exc),
        )


def _new_server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE  # kube-apiserver does not present a client certificate
    return context


def _file_stamp(path: Path) -> _FileStamp:
    st = os.stat(path)  # follows symlinks: a Secret's ..data swap changes the inode
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} ({exc.library or 'ssl'})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__
