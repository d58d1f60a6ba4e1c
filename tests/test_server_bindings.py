"""Bindings fill a node like a real cluster (design §6, §7): each admitted `pods/binding` takes the
pod's demand from the node's free VRAM, atomically; the first binding that no longer fits is
denied with a message naming the node, its free VRAM and the pod's demand.

Pods are derived from the recorded `validate-pod-create-2` (the ReplicaSet's pod, with its name
and uid), mutated by the server's own /mutate first as in a real cluster; bindings from the
recorded `validate-binding-binding-create-2`. Expected counts come from the /metrics gauges.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jsonpatch
import pytest
from conftest import DevCerts, GuardServer, load_recorded, variant

NODE = "gpu-h100-a"
ANN_DEMAND = "ollama-guard.io/vram-demand"


def gib(mib: float) -> str:
    """How the guard writes VRAM figures in messages: GiB with one decimal from 1 GiB up."""
    return f"{mib / 1024:.1f} GiB" if abs(round(mib)) >= 1024 else f"{mib:.0f} MiB"


class Cluster:
    """Plays kube-controller-manager (pod CREATE through both webhooks) and kube-scheduler (bindings)."""

    def __init__(self, guard: GuardServer, *, namespace: str = "team-a") -> None:
        self.guard = guard
        self.namespace = namespace
        self.pods: dict[str, str] = {}  # name -> uid

    def free(self) -> float:
        value = self.guard.metric("ollama_guard_node_vram_free_mib", node=NODE)
        assert value is not None
        return value

    def committed(self) -> float:
        value = self.guard.metric("ollama_guard_node_vram_committed_mib", node=NODE)
        assert value is not None
        return value

    def create_pod(self, name: str, models: str) -> tuple[dict[str, Any], int]:
        """/mutate then /validate a new pod; returns the validating answer and the stamped demand."""
        uid = str(uuid.uuid4())
        review = variant(
            load_recorded("validate-pod-create-2.json"),
            namespace=self.namespace,
            name=name,
            pod_uid=uid,
            models=models,
        )
        pod = review["request"]["object"]
        pod["metadata"].pop("generateName", None)
        mutated = self.guard.review("/mutate", variant(review))
        patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(mutated["patch"])))
        response = self.guard.review("/validate", variant(review, edit=lambda obj: obj.update(patched)))
        if response["allowed"]:
            self.pods[name] = uid
        return response, int(patched["metadata"]["annotations"][ANN_DEMAND])

    def binding(self, name: str, *, node: str = NODE, dry_run: bool = False) -> dict[str, Any]:
        return variant(
            load_recorded("validate-binding-binding-create-2.json"),
            namespace=self.namespace,
            name=name,
            pod_uid=self.pods[name],
            node=node,
            dry_run=dry_run,
        )

    def bind(self, name: str, *, node: str = NODE, dry_run: bool = False) -> dict[str, Any]:
        return self.guard.review("/validate", self.binding(name, node=node, dry_run=dry_run))


MODELS = [
    pytest.param("llama3.1:8b", id="llama3.1-8b"),
    pytest.param("qwen2.5:14b", id="qwen2.5-14b"),
    pytest.param("gemma3:27b", id="gemma3-27b"),
]


@pytest.mark.parametrize("models", MODELS)
def test_bindings_fill_the_node_until_the_next_one_is_denied(
    start_guard: Callable[..., GuardServer], models: str
) -> None:
    cluster = Cluster(start_guard())
    free, committed = cluster.free(), cluster.committed()
    prefix = "ollama-" + models.replace(":", "-").replace(".", "-")
    first, demand = cluster.create_pod(f"{prefix}-0", models)
    fits = math.floor(free / demand)
    assert first["allowed"] is True
    assert 1 <= fits < 20
    # the controller creates every replica at once: all fit *now*, since nothing is bound yet
    for i in range(1, fits + 2):
        response, same = cluster.create_pod(f"{prefix}-{i}", models)
        assert (response["allowed"], same) == (True, demand)

    admitted = 0
    denial: dict[str, Any] | None = None
    for name in list(cluster.pods):
        response = cluster.bind(name)
        if not response["allowed"]:
            denial = response
            break
        admitted += 1
        assert cluster.free() == free - admitted * demand

    assert admitted == fits
    assert denial is not None
    left = free - fits * demand
    status = denial["status"]
    assert status["code"] == 403
    message = status["message"]
    assert f"binding to {NODE} would over-commit its VRAM" in message
    assert f"the pod needs {gib(demand)} for {models}" in message
    assert f"{NODE}: {gib(left)} free of {gib(free + committed)}" in message
    assert f"{gib(free + committed)} ({gib(committed + fits * demand)} committed)" in message
    assert cluster.free() == left, "a denied binding reserves nothing"


def test_after_the_node_is_full_a_new_pod_is_denied_at_create(start_guard: Callable[..., GuardServer]) -> None:
    """Pod, binding, pod, binding...: the first pod that cannot fit anywhere is denied at CREATE."""
    cluster = Cluster(start_guard())
    free = cluster.free()
    bound = 0
    for i in range(40):
        response, demand = cluster.create_pod(f"ollama-{i}", "llama3.1:8b")
        if not response["allowed"]:
            break
        assert cluster.bind(f"ollama-{i}")["allowed"] is True
        bound += 1
    else:
        pytest.fail("the node never filled up")
    assert bound == math.floor(free / demand)
    message = response["status"]["message"]
    assert f"pod team-a/ollama-{bound} denied by ollama-guard" in message
    assert f"no time-sliced GPU node it can run on has that free: {NODE}: {gib(free - bound * demand)} free" in message


def test_a_dry_run_binding_reserves_nothing(start_guard: Callable[..., GuardServer]) -> None:
    cluster = Cluster(start_guard())
    free = cluster.free()
    _, demand = cluster.create_pod("ollama-dry", "llama3.1:8b")

    for _ in range(2):
        dry = cluster.bind("ollama-dry", dry_run=True)
        assert (dry["allowed"], "status" in dry) == (True, False)
        assert cluster.free() == free
    assert cluster.bind("ollama-dry")["allowed"] is True
    assert cluster.free() == free - demand


def test_a_repeated_binding_for_the_same_pod_takes_its_vram_once(start_guard: Callable[..., GuardServer]) -> None:
    cluster = Cluster(start_guard())
    free = cluster.free()
    _, demand = cluster.create_pod("ollama-again", "llama3.1:8b")
    for _ in range(3):
        assert cluster.bind("ollama-again")["allowed"] is True
        assert cluster.free() == free - demand


def test_a_repeated_binding_of_the_last_pod_that_fit_is_still_admitted(
    start_guard: Callable[..., GuardServer],
) -> None:
    cluster = Cluster(start_guard())
    free = cluster.free()
    _, demand = cluster.create_pod("ollama-0", "llama3.1:8b")
    fits = math.floor(free / demand)
    for i in range(1, fits):
        cluster.create_pod(f"ollama-{i}", "llama3.1:8b")
    for name in list(cluster.pods):
        assert cluster.bind(name)["allowed"] is True
    last = f"ollama-{fits - 1}"
    assert cluster.free() < demand

    retry = cluster.bind(last)
    assert retry["allowed"] is True, retry.get("status")
    assert cluster.free() == free - fits * demand


def test_concurrent_bindings_never_share_the_last_free_vram(
    start_guard: Callable[..., GuardServer], dev_certs: DevCerts
) -> None:
    """8 schedulers bind 8 admitted pods at the same instant: exactly floor(free / demand) win."""
    guard = start_guard()
    cluster = Cluster(guard)
    free = cluster.free()
    demands = [cluster.create_pod(f"ollama-race-{i}", "llama3.1:8b")[1] for i in range(8)]
    fits = math.floor(free / demands[0])
    assert fits < 8
    reviews = [cluster.binding(name) for name in cluster.pods]
    barrier = threading.Barrier(len(reviews))
    answers: list[bool] = []
    lock = threading.Lock()

    def bind(review: dict[str, Any]) -> None:
        with httpx.Client(base_url=guard.base_url, verify=dev_certs.client_context(), timeout=30) as client:
            client.get("/healthz")  # handshake done before the race starts
            barrier.wait()
            reply = client.post("/validate", params={"timeout": "5s"}, json=review)
        with lock:
            answers.append(reply.json()["response"]["allowed"])

    threads = [threading.Thread(target=bind, args=(r,)) for r in reviews]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == [False] * (8 - fits) + [True] * fits
    assert cluster.free() == free - fits * demands[0]


def test_a_binding_to_an_unguarded_node_or_of_an_unknown_pod_is_allowed(
    start_guard: Callable[..., GuardServer],
) -> None:
    cluster = Cluster(start_guard())
    free = cluster.free()
    cluster.create_pod("ollama-cpu", "llama3.1:8b")
    assert cluster.bind("ollama-cpu", node="cpu-a")["allowed"] is True
    unknown = variant(load_recorded("validate-binding-binding-create-3.json"))
    assert cluster.guard.review("/validate", unknown)["allowed"] is True
    assert cluster.free() == free
