"""1,000 concurrent `pods/binding` reviews over HTTPS never over-commit a node (design §6, §7).

Many schedulers' worth of bindings arrive at once, over 1,000 TLS connections opened first and
then written to together, for pods whose demands add up to far more than the guarded nodes hold.
For every round the outcome must be one a sequential guard could have produced:

- per node, the admitted pods' demands plus what was already bound fit the budget;
- no denied pod would have fit the room left at the end (room only shrinks during a round, so
  each denial was justified when it was made), unless it exceeds one GPU's memory;
- committed VRAM is exactly baseline + admitted demands, in `/metrics` and in the ledger.

Rounds differ in target nodes, demands and send order. Snapshot mode runs several rounds on one
server (fresh nodes and pods per round); live mode runs one round against the loopback API
server, then the watch confirms the admitted bindings without counting them twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import DevCerts, GuardServer
from kube_api_fixture import KubeApiFixture
from live_cluster import binding_review, gpu_node, namespace, stamped_pod, wait_until, write_kubeconfig

from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.state.live import LiveSource
from webhook.state.mirror import ClusterMirror, load_api_client

PODS = 1_000
SNAPSHOT_ROUNDS = 5
COMMITTED = "ollama_guard_node_vram_committed_mib"
#: (name suffix, gpu.memory MiB, gpu.count, replicas, vram-reserved annotation, budget MiB)
NODE_SHAPES = [
    ("h100", "81559", "1", "4", None, 81559),
    ("l40s", "46068", "2", "4", "4Gi", 2 * 46068 - 4096),
    ("a10g", "23028", "1", "8", None, 23028),
]


@dataclass(frozen=True)
class Round:
    """One round's cluster: nodes, a bound baseline, and pending pods each aimed at one node."""

    nodes: dict[str, tuple[int, int]]  # name -> (budget MiB, one GPU's MiB)
    node_objects: list[dict[str, Any]]
    baseline: dict[str, int]
    bound: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    targets: list[str]  # targets[i] is where the scheduler binds pods[i]

    def objects(self) -> list[dict[str, Any]]:
        return [*self.node_objects, namespace("team-a"), *self.bound, *self.pods]


def make_round(seed: int) -> Round:
    """Demands: mostly 1-16 GiB, some mid-sized, some (30000 MiB) larger than an A10G's GPU."""
    rng = random.Random(seed)
    nodes: dict[str, tuple[int, int]] = {}
    node_objects, bound, baseline = [], [], {}
    for suffix, memory, count, replicas, reserved, budget in NODE_SHAPES:
        name = f"r{seed}-{suffix}"
        nodes[name] = (budget, int(memory))
        extra = {"ollama-guard.io/vram-reserved": reserved} if reserved else {}
        node_objects.append(gpu_node(name, memory=memory, count=count, replicas=replicas, **extra))
        baseline[name] = rng.randrange(0, budget // 3)
        if baseline[name]:
            bound.append(stamped_pod(f"r{seed}-running-{suffix}", node=name, phase="Running", demand=baseline[name]))
    names = sorted(nodes)
    pods, targets = [], []
    for i in range(PODS):
        demand = rng.choice([rng.randrange(1_000, 16_000), rng.randrange(4_000, 9_000), 30_000])
        pods.append(stamped_pod(f"r{seed}-ollama-{i:04d}", demand=demand))
        targets.append(rng.choice(names))
    return Round(nodes=nodes, node_objects=node_objects, baseline=baseline, bound=bound, pods=pods, targets=targets)


# --- 1,000 connections, written to together --------------------------------------------------------


class Schedulers:
    """`PODS` keep-alive HTTPS connections to the guard, opened once (on their own event loop)."""

    def __init__(self, guard: GuardServer, dev: DevCerts) -> None:
        parts = urlsplit(guard.base_url)
        self._host, self._port = parts.hostname or "", parts.port or 443
        self._loop = asyncio.new_event_loop()
        self._streams = self._loop.run_until_complete(self._open(dev.client_context()))

    async def _open(self, context: ssl.SSLContext) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        opening = (asyncio.open_connection(self._host, self._port, ssl=context) for _ in range(PODS))
        return list(await asyncio.gather(*opening))

    def close(self) -> None:
        for _, writer in self._streams:
            writer.close()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def bind_all(self, reviews: list[dict[str, Any]]) -> list[bool]:
        """Write every review at once, one per connection; `allowed` per review (uids checked)."""
        bodies = [json.dumps(r).encode() for r in reviews]
        documents = self._loop.run_until_complete(self._together(bodies))
        allowed = []
        for review, document in zip(reviews, documents, strict=True):
            response = document["response"]
            assert response["uid"] == review["request"]["uid"]
            if not response["allowed"]:
                assert response["status"]["code"] == 403, response
                assert "would over-commit its VRAM" in response["status"]["message"]
            allowed.append(bool(response["allowed"]))
        return allowed

    async def _together(self, bodies: list[bytes]) -> list[dict[str, Any]]:
        go = asyncio.Event()
        tasks = [asyncio.create_task(self._exchange(s, b, go)) for s, b in zip(self._streams, bodies, strict=True)]
        await asyncio.sleep(0)  # every task is now waiting for the start
        go.set()
        return await asyncio.gather(*tasks)

    async def _exchange(
        self, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], body: bytes, go: asyncio.Event
    ) -> dict[str, Any]:
        reader, writer = streams
        await go.wait()
        writer.write(
            b"POST /validate?timeout=30s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self._host.encode(), self._port, len(body), body)
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        assert head[0].startswith("HTTP/1.1 200"), head[0]
        length = next(int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:"))
        document: dict[str, Any] = json.loads(await reader.readexactly(length))
        return document


@contextlib.contextmanager
def schedulers(guard: GuardServer, dev: DevCerts) -> Iterator[Schedulers]:
    opened = Schedulers(guard, dev)
    try:
        yield opened
    finally:
        opened.close()


# --- the checks --------------------------------------------------------------------------------------


def run_round(guard: GuardServer, clients: Schedulers, made: Round, *, seed: int) -> dict[str, int]:
    """Bind every pod of `made` concurrently, in a shuffled order; assert the outcome; return committed."""
    order = list(range(PODS))
    random.Random(seed).shuffle(order)
    reviews = [binding_review(made.pods[i], made.targets[i]) for i in order]
    allowed = dict(zip(order, clients.bind_all(reviews), strict=True))
    committed = {}
    for node, (budget, gpu_mib) in made.nodes.items():
        mine = [i for i in range(PODS) if made.targets[i] == node]
        demand = {i: int(made.pods[i]["metadata"]["annotations"]["ollama-guard.io/vram-demand"]) for i in mine}
        admitted = sum(demand[i] for i in mine if allowed[i])
        total = made.baseline[node] + admitted
        room = budget - total
        assert total <= budget, f"{node}: {total} MiB committed of {budget}"
        wrongly_denied = [demand[i] for i in mine if not allowed[i] and demand[i] <= min(room, gpu_mib)]
        assert not wrongly_denied, f"{node}: denied pods that fit the {room} MiB left: {wrongly_denied}"
        assert any(allowed[i] for i in mine) and not all(allowed[i] for i in mine), node
        assert guard.metric(COMMITTED, node=node) == total
        assert guard.source.ledger.committed(node) == total
        committed[node] = total
    return committed


@pytest.fixture(scope="module")
def rounds() -> list[Round]:
    return [make_round(seed) for seed in range(1, SNAPSHOT_ROUNDS + 2)]


@pytest.mark.slow
def test_concurrent_bindings_admit_exactly_what_fits_snapshot_mode(
    start_guard: Callable[..., GuardServer], dev_certs: DevCerts, rounds: list[Round]
) -> None:
    snapshot_rounds = rounds[:SNAPSHOT_ROUNDS]
    guard = start_guard(objects=[obj for made in snapshot_rounds for obj in made.objects()])
    with schedulers(guard, dev_certs) as clients:
        for seed, made in enumerate(snapshot_rounds, start=1):
            run_round(guard, clients, made, seed=seed)


@pytest.fixture
def api() -> Iterator[KubeApiFixture]:
    with KubeApiFixture() as server:
        yield server


@pytest.mark.slow
def test_concurrent_bindings_admit_exactly_what_fits_live_mode(
    start_guard: Callable[..., GuardServer], dev_certs: DevCerts, rounds: list[Round], api: KubeApiFixture,
    tmp_path: Path,
) -> None:
    made = rounds[-1]
    for obj in made.objects():
        api.add(obj)
    settings = load_settings()
    client = load_api_client(kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", api.url))
    assert client is not None

    def mirror(**kwargs: Any) -> ClusterMirror:
        return ClusterMirror(client, backoff_base=0.02, backoff_cap=0.2, **kwargs)

    source = LiveSource(mirror, cluster=settings.cluster_policy(), catalog=load_catalog(), publish_interval=0.05)
    try:
        guard = start_guard(source=source)
        wait_until(lambda: guard.client.get("/readyz").status_code == 200, "the live guard to be ready")
        assert len(source.ledger.view.tenants) == PODS + len(made.bound)
        with schedulers(guard, dev_certs) as clients:
            committed = run_round(guard, clients, made, seed=99)
        reserved = {r.key: r.node for r in source.ledger.reservations()}
        assert sum(committed.values()) == sum(made.baseline.values()) + sum(
            r.demand_mib for r in source.ledger.reservations())

        # the scheduler's binds land: the watch confirms each reservation, nothing is counted twice
        for pod in made.pods:
            node = reserved.get(f"team-a/{pod['metadata']['name']}")
            if node is not None:
                api.modify({**pod, "spec": {**pod["spec"], "nodeName": node}, "status": {"phase": "Running"}})
        wait_until(lambda: not source.ledger.reservations(), "the watch to confirm every binding")
        for node, total in committed.items():
            assert guard.metric(COMMITTED, node=node) == total
            assert source.ledger.view.committed.get(node, 0) == total
    finally:
        source.stop()
