"""The floor: the cheapest correct admission webhook on uvicorn's ASGI stack, to measure the guard against.

A bare ASGI app (no FastAPI, no Starlette) that reads the whole body, decodes it as JSON (a correct
webhook must, to copy `request.uid` onto the answer) and returns a fixed allowed AdmissionReview with
that UID. It decodes and encodes with orjson, the JSON library the guard itself uses (the standard
library's `json` would make the floor ~15 µs per pod review slower, and the guard look better).
It is served exactly as the guard is: `webhook.http.server.build_server` (same uvicorn settings: uvloop,
httptools) on `webhook.http.tls.ReloadingTLS` (same certificate, same TLS context), run by
`webhook.http.server.run_server` (the same event-loop factory).
What it costs is what HTTP + TLS + JSON cost through uvicorn's ASGI cycle, the floor issue 17 names. The
guard answers the reviews kube-apiserver sends on its own direct path beside that cycle
(`webhook.http.protocol`, which `build_server` uses only for an app with admission endpoints), so
the guard can run at or above this floor; `FINDINGS.md` section 14 measures a floor on that path too.

Usage: `python -m benchmarks.floor --port 9443 --tls-cert tls.crt --tls-key tls.key [--host 127.0.0.1]`.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, cast

import orjson

from webhook.http.server import build_server, run_server
from webhook.http.tls import ReloadingTLS

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
HEADERS = [(b"content-type", b"application/json")]


def answer(body: bytes) -> tuple[int, bytes]:
    """HTTP status and body for one request body: the allowed review, or 400 for a non-review."""
    try:
        uid = orjson.loads(body)["request"]["uid"]
    except (ValueError, KeyError, TypeError):
        return 400, b'{"error":"not an AdmissionReview","status":400}'
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "response": {"uid": uid, "allowed": True}}
    return 200, orjson.dumps(review)


async def app(scope: Message, receive: Receive, send: Send) -> None:
    """The ASGI application (HTTP and lifespan)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = bool(message.get("more_body", False))
    status, payload = answer(b"".join(chunks)) if scope["method"] == "POST" else (200, b'{"status":"ok"}')
    headers = [*HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The floor server for the benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", type=Path, required=True)
    parser.add_argument("--tls-key", type=Path, required=True)
    args = parser.parse_args(argv)
    tls = ReloadingTLS(cert_file=args.tls_cert, key_file=args.tls_key)
    # build_server is typed for the guard's FastAPI app; uvicorn serves any ASGI callable the same way
    server = build_server(cast(Any, app), host=args.host, port=args.port, tls=tls)
    run_server(server, tls)


if __name__ == "__main__":
    main()
