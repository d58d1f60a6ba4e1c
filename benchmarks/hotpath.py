"""The request path in process, with warm and with cold caches: what a review costs the guard's
Python, and how many Python calls it makes.

The guard's ASGI front door (`webhook.http.server.AdmissionFront`, as `ollama-guard serve --snapshot`
builds it; its endpoints' `answer` is also what the direct path of `webhook.http.protocol` calls) and
the floor's app (`benchmarks.floor.app`) are fed the benchmark's own request bodies, one review at a
time, no socket and no TLS. Per review kind it reports µs per review:

- warm: reviews back to back (everything the review touches stays in the CPU caches);
- cold: 8 MiB of memory written before each review (the median review), which is what the wire
  sees: between two reviews uvicorn, TLS, the kernel and the load generator run and evict the
  guard's code and data. On the 2-core benchmark VM a review's wire cost tracks its cold figure
  (`FINDINGS.md` section 10), not its warm one;
- Python calls per review (`sys.setprofile`): the cold cost grows with the code a review runs.

Usage (after `python -m benchmarks.run` has written `benchmarks/.work`):
`python -m benchmarks.hotpath --size small [--kinds binding,pod-validate] [--runs 5]`.
Prints one line per kind; no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import floor, generate
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.http.logs import configure_logging
from webhook.http.recent import RecentDecisions
from webhook.http.server import AdmissionFront, create_app
from webhook.state.files import load_objects
from webhook.state.snapshot import SnapshotSource

HERE = Path(__file__).resolve().parent
KINDS = ("binding", "pod-validate", "pod-mutate")
EVICT_BYTES = 8 << 20
Message = MutableMapping[str, Any]
App = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class Driver:
    """Feeds request bodies to an ASGI app, one review at a time."""

    def __init__(self, bodies: Sequence[bytes], path: str) -> None:
        self.bodies, self.path = bodies, path
        self._evict = bytearray(EVICT_BYTES)
        self._zeros = bytes(EVICT_BYTES // 64)

    def median_us(self, app: App, *, reviews: int, cold: bool) -> float:
        return asyncio.run(self._drive(app, reviews, cold))

    async def _drive(self, app: App, reviews: int, cold: bool) -> float:
        async def send(message: Message) -> None:
            return None

        taken: list[float] = []
        for i in range(reviews):
            body = self.bodies[i % len(self.bodies)]
            messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive(messages: list[Message] = messages) -> Message:
                return messages.pop()

            scope = {"type": "http", "method": "POST", "path": self.path, "query_string": b"timeout=10s",
                     "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]}
            if cold:
                self._evict[::64] = self._zeros  # one write per cache line
            started = time.perf_counter()
            await app(scope, receive, send)
            taken.append(time.perf_counter() - started)
        taken.sort()
        return taken[len(taken) // 2] * 1e6

    def calls_per_review(self, app: App, reviews: int) -> float:
        """Python function calls (not C calls) per review."""
        calls: collections.Counter[str] = collections.Counter()

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call":
                calls[frame.f_code.co_name] += 1

        async def drive() -> None:
            for i in range(reviews):
                body = self.bodies[i % len(self.bodies)]
                messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

                async def receive(messages: list[Message] = messages) -> Message:
                    return messages.pop()

                async def send(message: Message) -> None:
                    return None

                scope = {"type": "http", "method": "POST", "path": self.path, "query_string": b"timeout=10s",
                         "headers": [(b"content-type", b"application/json")]}
                sys.setprofile(profile)
                try:
                    await app(scope, receive, send)
                finally:
                    sys.setprofile(None)

        asyncio.run(drive())
        return (sum(calls.values()) - 2 * reviews) / reviews  # less this driver's receive and send


def guard_app(snapshot: Path) -> AdmissionFront:
    settings = load_settings()
    catalog = load_catalog(settings.catalog_overlay)
    configure_logging("INFO")
    handler = logging.getLogger("ollama_guard").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open("/dev/null", "w", encoding="utf-8"))  # noqa: SIM115 - lives as long as the process
    source = SnapshotSource(load_objects([snapshot]), cluster=settings.cluster_policy(), catalog=catalog,
                            origin=str(snapshot))
    app = create_app(cluster=settings.cluster_policy(), catalog=catalog, source=source,
                     max_body_bytes=settings.max_body_bytes, recorder=RecentDecisions().record)
    return AdmissionFront(app)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; the best is reported")
    parser.add_argument("--reviews", type=int, default=2000, help="reviews per run")
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    args = parser.parse_args(argv)
    snapshot = args.workdir / "snapshots" / f"{args.size}-{args.seed}.json"
    if not snapshot.exists():
        parser.error(f"{snapshot} is missing: run `python -m benchmarks.run --sizes {args.size}` first")
    guard = guard_app(snapshot)
    print(f"{'kind':13} {'warm guard':>10} {'warm floor':>10} {'cold guard':>10} {'cold floor':>10} {'calls':>6}")
    for kind in (k.strip() for k in args.kinds.split(",") if k.strip()):
        lines = (args.workdir / "bodies" / f"{args.size}.{kind}.jsonl").read_bytes().splitlines()
        driver = Driver([line for line in lines if line], "/mutate" if kind == "pod-mutate" else "/validate")
        driver.median_us(guard, reviews=args.reviews, cold=False)  # warm-up: memos, specialised bytecode
        figures = [
            min(driver.median_us(app, reviews=args.reviews, cold=cold) for _ in range(args.runs))
            for cold in (False, True)
            for app in (guard, floor.app)
        ]
        calls = driver.calls_per_review(guard, min(args.reviews, 240))
        print(f"{kind:13} {figures[0]:10.1f} {figures[1]:10.1f} {figures[2]:10.1f} {figures[3]:10.1f} {calls:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
