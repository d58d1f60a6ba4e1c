"""Runtime drift (design §15): ask each running Ollama pod what it holds, `GET /api/ps`.

`DriftMonitor` runs in its own thread (its own event loop, so the admission server's loop never
waits on a pod): every `interval` seconds, and at once when an Ollama pod appears or goes, it asks
every target in parallel (at most `concurrency` at a time) and publishes one frozen mapping of
`Observation`s (pure comparison: `webhook.core.drift`). Each request: plain HTTP to the pod's IP
as the watched view holds it (an IP literal, never a name; link-local, multicast and unspecified
addresses refused), its container port named `http` or 11434, a `timeout` for the whole exchange,
at most `max_bytes` of body, no redirects followed, no proxy from the environment, no
compression. Whatever goes wrong makes the pod `unknown`, with the reason.

Targets come from the view the webhook decides with (`targets_from`): Ollama tenants bound to a
GPU node, with the IP and port `pod_endpoint` reads from the pod (the live projection keeps
`status.podIP` and the `http` port; a snapshot file's pods carry them as `kubectl get` prints them).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from webhook.core.drift import DEFAULT_POLICY, DriftPolicy, Observation, PsFormatError, observe, parse_ps
from webhook.core.rawdict import items, mapping
from webhook.core.view import ClusterView

log = logging.getLogger("ollama_guard")
OLLAMA_PORT = 11434
PS_PATH = "/api/ps"
MAX_BYTES = 1 << 20
USER_AGENT = "ollama-guard (runtime drift; GET /api/ps)"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a pod's Ollama answers: its IP and port."""

    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class DriftTarget:
    """One Ollama pod to ask, with the demand it is accounted with."""

    namespace: str
    name: str
    node: str
    demand_mib: int
    #: None: the pod has no usable IP (yet), it is `unknown` without being asked
    endpoint: Endpoint | None
    #: why there is no endpoint
    why: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def url(self) -> str:
        if self.endpoint is None:
            return ""
        ip = self.endpoint.ip
        host = f"[{ip}]" if ":" in ip else ip
        return f"http://{host}:{self.endpoint.port}{PS_PATH}"


def pod_endpoint(raw: Mapping[str, Any] | None) -> Endpoint | str:
    """The pod's Ollama endpoint, or why it has none: Running, an IP the guard may ask, the port."""
    status = mapping(mapping(raw).get("status"))
    if status.get("phase") != "Running":
        return f"the pod is {status.get('phase') or 'not running'}"
    text = str(status.get("podIP") or "")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "the pod has no IP yet" if not text else f"the pod IP {text!r} is not an IP address"
    mapped = getattr(address, "ipv4_mapped", None)
    checked = mapped or address  # ::ffff:169.254.169.254 is the metadata address too
    if checked.is_unspecified or checked.is_multicast or checked.is_link_local or checked.is_reserved:
        return f"the pod IP {text} is not an address the guard asks"
    return Endpoint(str(address), http_port(raw))


def http_port(raw: Mapping[str, Any] | None) -> int:
    """The container port named `http` (the Ollama Helm chart's name), else Ollama's 11434."""
    spec = mapping(mapping(raw).get("spec"))
    for container in items(spec.get("containers")):
        for port in items(mapping(container).get("ports")):
            number = mapping(port).get("containerPort")
            if mapping(port).get("name") == "http" and isinstance(number, int) and 0 < number < 65536:
                return number
    return OLLAMA_PORT


def remember_endpoints(
    objects: Iterable[dict[str, Any]], into: dict[str, Endpoint | str]
) -> Iterator[dict[str, Any]]:
    """`objects` passed through, each Pod's endpoint (or why it has none) noted by namespace/name:
    a snapshot file is read once and its objects are not kept."""
    for obj in objects:
        if obj.get("kind") == "Pod":
            meta = mapping(obj.get("metadata"))
            into[f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"] = pod_endpoint(obj)
        yield obj


def targets_from(view: ClusterView, endpoint: Callable[[str], Endpoint | str]) -> list[DriftTarget]:
    """The Ollama tenants of `view` bound to a GPU node, each with `endpoint(namespace/name)`."""
    targets = []
    for key, tenant in sorted(view.tenants.items()):
        node = view.nodes.get(tenant.node)
        if not tenant.is_ollama or node is None:
            continue
        found = endpoint(key)
        where, why = (found, "") if isinstance(found, Endpoint) else (None, found)
        targets.append(DriftTarget(tenant.namespace, tenant.name, node.name, tenant.demand_on(node), where, why))
    return targets


class FetchError(Exception):
    """The pod could not be read; the message says why, for the page and the audit."""


async def fetch_ps(client: httpx.AsyncClient, url: str, *, timeout: float, max_bytes: int) -> bytes:
    """The body of `GET url`: one 200 answer within `timeout` seconds and `max_bytes` bytes."""
    try:
        async with asyncio.timeout(timeout), client.stream("GET", url) as response:
            status = response.status_code
            if 300 <= status < 400:
                where = response.headers.get("location", "")
                raise FetchError(
                    f"answered HTTP {status} (redirect{' to ' + where[:80] if where else ''}; not followed)"
                )
            if status != 200:
                raise FetchError(f"answered HTTP {status}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"answer of {declared} bytes is over the {max_bytes} byte limit")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"answer is over the {max_bytes} byte limit")
            return bytes(body)
    except TimeoutError:
        raise FetchError(f"no complete answer within {timeout:g} s") from None
    except httpx.ConnectError as exc:
        raise FetchError(f"cannot connect: {_reason(exc)}") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:160]


def drift_client(*, timeout: float, concurrency: int) -> httpx.AsyncClient:
    """A client that only goes where it is sent: no redirects, no proxies from the environment,
    no compression (the size limit is on what is read), no connection kept between rounds."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        headers={"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": USER_AGENT},
    )


class DriftMonitor:
    """Polls the targets and publishes their latest observations (see the module docstring)."""

    def __init__(
        self,
        targets: Callable[[], Sequence[DriftTarget]],
        *,
        interval: float = 30.0,
        timeout: float = 2.0,
        max_bytes: int = MAX_BYTES,
        concurrency: int = 16,
        policy: DriftPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.time,
        check_every: float = 1.0,
    ) -> None:
        self._targets = targets
        self.interval, self.timeout, self.max_bytes = interval, timeout, max_bytes
        self.concurrency, self.policy = concurrency, policy
        self._clock, self._check_every = clock, check_every
        self._observations: Mapping[str, Observation] = {}
        #: bumped at each published round (the page caches its document by it)
        self.generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def observations(self) -> Mapping[str, Observation]:
        """The latest observation of every target of the last round, by namespace/name."""
        return self._observations

    async def poll(self, targets: Sequence[DriftTarget], client: httpx.AsyncClient | None = None) -> None:
        """One round: ask every target, then publish (pods no longer targeted are dropped)."""
        owned = client is None
        client = client or drift_client(timeout=self.timeout, concurrency=self.concurrency)
        gate = asyncio.Semaphore(self.concurrency)
        try:
            results = await asyncio.gather(*(self._sample(client, gate, t) for t in targets))
        finally:
            if owned:
                await client.aclose()
        self._observations = {o.key: o for o in results}
        self.generation += 1

    async def _sample(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, target: DriftTarget) -> Observation:
        previous = self._observations.get(target.key)
        models, detail = None, target.why
        if target.endpoint is not None:
            async with gate:
                try:
                    models = parse_ps(
                        await fetch_ps(client, target.url, timeout=self.timeout, max_bytes=self.max_bytes)
                    )
                except (FetchError, PsFormatError) as exc:
                    detail = f"{target.url}: {exc}"
        found = observe(
            previous,
            namespace=target.namespace,
            name=target.name,
            node=target.node,
            demand_mib=target.demand_mib,
            models=models,
            now=self._clock(),
            detail=detail,
            policy=self.policy,
        )
        if found.verdict == "over" and (previous is None or previous.verdict != "over"):
            log.warning(
                "pod %s holds %d MiB of VRAM by its own /api/ps, above its demand of %d MiB",
                found.key,
                found.observed_mib,
                found.demand_mib,
                extra={"fields": {"pod": found.key, "node": found.node, "observedMiB": found.observed_mib}},
            )
        return found

    # --- the thread --------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="drift-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(self.timeout + self._check_every + 2.0)

    async def _run(self) -> None:
        async with drift_client(timeout=self.timeout, concurrency=self.concurrency) as client:
            last_keys: tuple[str, ...] | None = None
            due = 0.0
            while not self._stop.is_set():
                try:
                    targets = list(self._targets())
                    keys = tuple(t.key for t in targets)
                    if keys != last_keys or time.monotonic() >= due:
                        due = time.monotonic() + self.interval
                        last_keys = keys
                        await self.poll(targets, client)
                except Exception:  # one bad round must not end the monitor
                    log.exception("runtime drift round failed")
                await asyncio.sleep(self._check_every)
