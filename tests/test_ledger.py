"""The ledger: fit rule, atomic reservations under concurrency, confirm, release, TTL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.core.inventory import GpuNode, read_node
from webhook.core.ledger import Ledger, fits
from webhook.core.view import ClusterView, Tenant, assemble_view

NODE = read_node(
    {
        "metadata": {
            "name": "gpu-a",
            "labels": {"nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.replicas": "4"},
        },
        "status": {"allocatable": {"nvidia.com/gpu": "4"}},
    },
    gpu_resources=("nvidia.com/gpu",),
)
assert NODE is not None


def tenant(i: int, demand: int | None = 10_000, node: str = "", gpus: int = 1) -> Tenant:
    return Tenant(
        namespace="ns",
        name=f"p{i}",
        uid=f"uid-{i}",
        node=node,
        gpus=gpus,
        is_ollama=True,
        demand_mib=demand,
        source="estimate",
    )


def view(*tenants: Tenant) -> ClusterView:
    return assemble_view({"gpu-a": NODE}, {}, {t.key: t for t in tenants})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("committed", "demand", "gpus", "ok"),
    [
        pytest.param(0, 81559, 1, True, id="exactly-full"),
        pytest.param(1, 81559, 1, False, id="one-over"),
        pytest.param(60000, 21559, 1, True, id="fills-the-rest"),
        pytest.param(0, 100000, 2, False, id="over-capacity"),
        pytest.param(0, 81560, 1, False, id="per-gpu-over"),
    ],
)
def test_fit_rule(committed: int, demand: int, gpus: int, ok: bool) -> None:
    assert fits(NODE, committed_mib=committed, demand_mib=demand, gpus=gpus).ok is ok


def test_reserve_takes_and_denies_the_last_vram() -> None:
    ledger = Ledger(view(), clock=Clock())
    results = [ledger.reserve(tenant(i, 20_000), NODE).ok for i in range(5)]
    assert results == [True, True, True, True, False]
    assert ledger.committed("gpu-a") == 80_000


def test_dry_run_reserves_nothing() -> None:
    ledger = Ledger(view(), clock=Clock())
    assert ledger.reserve(tenant(1, 50_000), NODE, dry_run=True).ok
    assert ledger.committed("gpu-a") == 0


def test_same_pod_binding_twice_is_idempotent() -> None:
    ledger = Ledger(view(), clock=Clock())
    assert ledger.reserve(tenant(1, 50_000), NODE).ok
    assert ledger.reserve(tenant(1, 50_000), NODE).ok
    assert ledger.committed("gpu-a") == 50_000


def test_confirmed_by_the_view_is_not_double_counted() -> None:
    ledger = Ledger(view(), clock=Clock())
    t = tenant(1, 30_000)
    assert ledger.reserve(t, NODE).ok
    bound = t._replace(node="gpu-a")
    ledger.publish(view(bound))
    assert ledger.committed("gpu-a") == 30_000
    assert ledger.reservations() == ()


def test_ttl_releases_unconfirmed_reservations() -> None:
    clock = Clock()
    ledger = Ledger(view(), ttl_seconds=60, clock=clock)
    assert ledger.reserve(tenant(1, 80_000), NODE).ok
    assert not ledger.reserve(tenant(2, 10_000), NODE).ok
    clock.now += 61
    assert ledger.reserve(tenant(2, 10_000), NODE).ok
    assert ledger.committed("gpu-a") == 10_000


def test_release_frees_the_reservation() -> None:
    ledger = Ledger(view(), clock=Clock())
    ledger.reserve(tenant(1, 80_000), NODE)
    ledger.release("uid-1")
    assert ledger.committed("gpu-a") == 0


def test_default_share_tenant_counts_the_node_even_share() -> None:
    ledger = Ledger(view(tenant(9, None, node="gpu-a")), clock=Clock())
    assert ledger.committed("gpu-a") == 81559 // 4


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_reservations_never_overcommit(round_: int) -> None:
    ledger = Ledger(view(tenant(0, 1_559, node="gpu-a")), clock=Clock())
    demands = [3_000 + (i * 7919 + round_ * 104729) % 9_000 for i in range(400)]
    barrier = threading.Barrier(16)

    def bind(i: int) -> tuple[int, bool]:
        if i < 16:
            barrier.wait()
        return demands[i], ledger.reserve(tenant(i + 1, demands[i]), NODE).ok

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(bind, range(len(demands))))
    admitted = sum(d for d, ok in outcomes if ok)
    assert 1_559 + admitted == ledger.committed("gpu-a") <= NODE.budget_mib
    smallest_denied = min((d for d, ok in outcomes if not ok), default=None)
    assert smallest_denied is not None and ledger.committed("gpu-a") + smallest_denied > NODE.budget_mib


def test_remembered_pods_are_bounded_even_without_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    import webhook.core.ledger as ledger_module

    monkeypatch.setattr(ledger_module, "MAX_ADMITTED", 3)
    ledger = Ledger(view(), ttl_seconds=float("inf"), clock=Clock())
    for i in range(5):
        ledger.remember_admitted(tenant(i))
    assert ledger.find_tenant("ns/p0") is None and ledger.find_tenant("ns/p1") is None
    assert [ledger.find_tenant(f"ns/p{i}") is not None for i in (2, 3, 4)] == [True, True, True]


def test_a_repeated_binding_renews_its_reservation() -> None:
    clock = Clock()
    ledger = Ledger(view(), ttl_seconds=60, clock=clock)
    ledger.reserve(tenant(1, 10_000), NODE)
    ledger.reserve(tenant(2, 20_000), NODE)
    clock.now += 50
    ledger.reserve(tenant(1, 10_000), NODE)  # the same pod again: its clock restarts
    clock.now += 20  # p2 (taken 70 s ago) has expired, p1 (renewed 20 s ago) has not
    assert ledger.committed("gpu-a") == 10_000
    assert [r.uid for r in ledger.reservations()] == ["uid-1"]


NODE_B = replace(NODE, name="gpu-b")
_NAMESPACES = st.sampled_from(["ns", "other"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 7), st.sampled_from(["gpu-a", "gpu-b"]), _NAMESPACES,
                  st.integers(1_000, 30_000)),
        st.tuples(st.just("release"), st.integers(0, 7)),
        st.tuples(st.just("tick"), st.integers(0, 40)),
        st.tuples(st.just("admit"), st.integers(0, 7), _NAMESPACES, st.integers(1_000, 30_000)),
        # a new view: pods (index, namespace, bound node or pending, the reserved pod's UID or
        # another pod's of that name, demand)
        st.tuples(st.just("publish"), st.lists(st.tuples(st.integers(0, 7), _NAMESPACES,
                                                         st.sampled_from(["gpu-a", "gpu-b", ""]), st.booleans(),
                                                         st.integers(1_000, 30_000)), max_size=6)),
    ),
    max_size=40,
)


def _pod(i: object, namespace: object, demand: object, *, node: str = "", same: bool = True) -> Tenant:
    uid = f"{namespace}-{i}" if same else f"{namespace}-{i}-other"
    return tenant(int(str(i)), int(str(demand)), node=node)._replace(namespace=str(namespace), uid=uid)


class _Recount:
    """The naive model of a ledger: recounts everything from scratch on every question."""

    def __init__(self, clock: Clock, shown: ClusterView) -> None:
        self.clock, self.shown = clock, shown
        self.reserved: dict[str, tuple[str, str, int, float, str]] = {}  # uid -> node, ns, demand, expires, key
        self.admitted: dict[str, tuple[str, int, float, str]] = {}  # uid -> namespace, demand, expires, key

    def live(self) -> dict[str, tuple[str, str, int, float, str]]:
        return {u: m for u, m in self.reserved.items() if m[3] >= self.clock.now}

    def counted(self, uid: str, node: str, key: str) -> bool:
        """The view shows the reserved pod bound where it is reserved."""
        t = self.shown.tenants.get(key)
        return t is not None and t.uid == uid and t.node == node

    def committed(self, node: str) -> int:
        extra = sum(m[2] for u, m in self.live().items() if m[0] == node and not self.counted(u, node, m[4]))
        return self.shown.committed.get(node, 0) + extra

    def own_share(self, pod: Tenant, node: GpuNode) -> int:
        mine = self.live().get(pod.uid)
        bound = self.shown.tenants.get(pod.key)
        if mine is not None and mine[0] == node.name:
            return mine[2]
        if bound is not None and bound.uid == pod.uid and bound.node == node.name:
            return bound.demand_on(node)
        return 0

    def publish(self, shown: ClusterView) -> None:
        self.shown = shown
        for uid, m in list(self.reserved.items()):  # shown bound anywhere: done
            t = shown.tenants.get(m[4])
            if t is not None and t.uid == uid and t.node:
                del self.reserved[uid]
        for uid, a in list(self.admitted.items()):  # delivered by the watch: forgotten
            t = shown.tenants.get(a[3])
            if t is not None and t.uid == uid:
                del self.admitted[uid]

    def pending(self, namespace: str, besides: str = "") -> int:
        live = self.live()
        held = {u for u, m in live.items() if m[1] == namespace}
        tenants = self.shown.tenants
        total = sum(m[2] for m in live.values() if m[1] == namespace and m[4] not in tenants and m[4] != besides)
        for uid, a in self.admitted.items():
            if a[0] == namespace and a[2] >= self.clock.now and uid not in live and uid not in held:
                total += a[1] if a[3] not in tenants and a[3] != besides else 0
        return total


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_indexed_ledger_matches_a_naive_model(ops: list[tuple[object, ...]]) -> None:
    """Committed VRAM per node and pending usage per namespace equal a straightforward recount of
    the view, the live reservations it does not count and the admitted-not-bound pods, whatever
    the order of bindings, admissions, releases, expiries and new views (the ledger keeps running
    totals; the model recounts from scratch). While `capacity_token()` stays the same object, no
    node's committed VRAM changes (what the validating webhook's memo relies on)."""
    clock = Clock()
    nodes = {"gpu-a": NODE, "gpu-b": NODE_B}
    model = _Recount(clock, assemble_view(nodes, {}, {}))
    ledger = Ledger(model.shown, ttl_seconds=60, clock=clock)
    for op in ops:
        token, before = ledger.capacity_token(), [ledger.committed(name) for name in nodes]
        if op[0] == "reserve":
            _, i, node_name, namespace, demand = op
            pod, node = _pod(i, namespace, demand), nodes[str(node_name)]
            held = model.committed(node.name) - model.own_share(pod, node)
            ok = ledger.reserve(pod, node).ok
            assert ok == (held + int(str(demand)) <= node.budget_mib)
            if ok:
                model.reserved[pod.uid] = (node.name, str(namespace), int(str(demand)), clock.now + 60, pod.key)
        elif op[0] == "release":
            for namespace in ("ns", "other"):
                ledger.release(f"{namespace}-{op[1]}")
                model.reserved.pop(f"{namespace}-{op[1]}", None)
        elif op[0] == "admit":
            _, i, namespace, demand = op
            pod = _pod(i, namespace, demand)
            ledger.remember_admitted(pod)
            model.admitted[pod.uid] = (str(namespace), int(str(demand)), clock.now + 60, pod.key)
        elif op[0] == "publish":
            pods = [_pod(i, ns, d, node=str(n), same=bool(same)) for i, ns, n, same, d in op[1]]  # type: ignore[attr-defined]
            model.publish(assemble_view(nodes, {}, {p.key: p for p in pods}))
            ledger.publish(model.shown)
        else:
            clock.now += float(str(op[1]))
        for name in ("gpu-a", "gpu-b"):
            assert ledger.committed(name) == model.committed(name)
        if ledger.capacity_token() is token:  # the same token: every node's committed VRAM as before
            assert [ledger.committed(name) for name in nodes] == before
        for namespace in ("ns", "other"):
            assert ledger.pending_usage(namespace) == model.pending(namespace)
            besides = f"{namespace}/p0"
            assert ledger.pending_usage(namespace, besides=besides) == model.pending(namespace, besides)


def test_a_pod_the_view_shows_bound_elsewhere_no_longer_holds_its_reservation() -> None:
    """The binding we admitted to gpu-a did not land; a later one to gpu-b did: the pod counts once,
    on gpu-b, as soon as the view shows it there (not until the reservation's TTL)."""
    nodes = {"gpu-a": NODE, "gpu-b": NODE_B}
    ledger = Ledger(assemble_view(nodes, {}, {}), ttl_seconds=600, clock=Clock())
    pod = tenant(1, 30_000)
    assert ledger.reserve(pod, NODE).ok
    ledger.publish(assemble_view(nodes, {}, {pod.key: pod._replace(node="gpu-b")}))
    assert ledger.reservations() == ()
    assert (ledger.committed("gpu-a"), ledger.committed("gpu-b")) == (0, 30_000)
    still_pending = tenant(2, 20_000)._replace(uid="uid-2")
    assert ledger.reserve(still_pending, NODE).ok
    ledger.publish(assemble_view(nodes, {}, {pod.key: pod._replace(node="gpu-b"), still_pending.key: still_pending}))
    assert [r.uid for r in ledger.reservations()] == ["uid-2"]  # in the view, but not bound yet: kept


def test_a_pod_the_view_shows_bound_is_counted_once_when_bound_there_again_and_when_moved() -> None:
    """The view shows the pod on gpu-a (a binding repeated after the watch saw the first): a binding
    to gpu-a finds its own share there and takes nothing more; one to gpu-b then takes its VRAM
    on gpu-b only, and gpu-a keeps the view's figure (the reservation on gpu-a was never extra)."""
    nodes = {"gpu-a": NODE, "gpu-b": NODE_B}
    pod = tenant(1, 30_000, node="gpu-a")
    ledger = Ledger(assemble_view(nodes, {}, {pod.key: pod}), ttl_seconds=600, clock=Clock())
    token = ledger.capacity_token()
    fit = ledger.reserve(pod, NODE)
    assert fit.ok and fit.committed_mib == 0 and ledger.capacity_token() is not token
    assert (ledger.committed("gpu-a"), ledger.committed("gpu-b")) == (30_000, 0)
    fit = ledger.reserve(pod, NODE_B)
    assert fit.ok and fit.committed_mib == 0  # the view's binding on gpu-a is not this node's
    assert (ledger.committed("gpu-a"), ledger.committed("gpu-b")) == (30_000, 30_000)
    renewed = ledger.capacity_token()
    assert ledger.reserve(pod, NODE_B).ok and ledger.capacity_token() is renewed  # renewed: nothing changed
    assert (ledger.committed("gpu-a"), ledger.committed("gpu-b")) == (30_000, 30_000)


def test_an_admitted_pod_counts_once_then_not_at_all_once_gone() -> None:
    ledger = Ledger(view(), ttl_seconds=60, clock=Clock())
    pod = tenant(1, 12_000)
    ledger.remember_admitted(pod)
    assert ledger.pending_usage("ns") == 12_000  # admitted, not bound, not in the view yet
    ledger.publish(view(pod))
    assert ledger.pending_usage("ns") == 0  # the view holds it (its usage counts there)
    ledger.publish(view())
    ledger.release(pod.uid, pod.key)  # deleted: the watch dropped it and the source released it
    assert ledger.pending_usage("ns") == 0
    assert ledger.find_tenant(pod.key) is None


def test_publishing_a_pod_forgets_its_admission_but_not_a_newer_pod_of_that_name() -> None:
    ledger = Ledger(view(), ttl_seconds=60, clock=Clock())
    old, new = tenant(1, 5_000), tenant(1, 7_000)._replace(uid="uid-new")
    ledger.remember_admitted(new)
    ledger.publish(view(old))  # the view still shows the previous pod of that name
    assert ledger.find_tenant(new.key) == old
    ledger.publish(view())
    assert ledger.find_tenant(new.key) == new  # the newer admission was kept
    ledger.publish(view(new))
    ledger.publish(view())
    assert ledger.find_tenant(new.key) is None  # delivered by the watch, then gone: forgotten
