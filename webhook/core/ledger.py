"""Committed VRAM per node, the fit rule, and atomic binding reservations (design §6, §7).

`fits` is the one rule: committed + demand ≤ capacity − reserved, and no GPU's share of the pod
may exceed one physical GPU. `Ledger` owns the current `ClusterView` plus the reservations taken
by admitted bindings that the view does not show yet; check-and-take happens under one lock, so
two concurrent bindings can never both take the last free VRAM. A reservation ends when a
published view shows the pod bound (confirm), when the pod goes away (`release`), or after the
TTL. It also remembers pods admitted at CREATE for a short while, so a binding that races the
watch still finds its pod. The clock is injected (monotonic); no I/O.

Every call on the request path costs O(1) per node (a node's committed VRAM is the view's figure
plus a running total of the reservations the view does not count), never O(all reservations):
reservations are indexed by namespace, and kept in expiry order (one TTL, a
monotonic clock), so expiring them only looks at the oldest. Only `publish` walks them all.

`capacity_token()` names the state `committed` answers from: a new object whenever a view is
published or a reservation is taken, dropped or expires (a repeated binding that renews a
reservation unchanged but for its expiry keeps it), so an answer computed from `committed` may be
remembered under it (the validating webhook does, per distinct pod).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from webhook.core.inventory import GpuNode
from webhook.core.view import ClusterView, Tenant

#: pods remembered between their CREATE and their binding (a scheduler backlog far beyond any cluster's)
MAX_ADMITTED = 100_000


class Fit(NamedTuple):
    """A node's answer for one demand, made by `fits` (once per binding and per candidate node of
    a pod: a named tuple, built by `tuple.__new__` in one C call, issue 17)."""

    node: str
    demand_mib: int
    committed_mib: int
    budget_mib: int
    per_gpu_mib: int
    gpu_memory_mib: int
    problem: str
    #: the fit rule's answer: no problem, committed + demand within the budget, not `exceeds_gpu`
    ok: bool

    @property
    def free_mib(self) -> int:
        return max(self.budget_mib - self.committed_mib, 0)

    @property
    def exceeds_gpu(self) -> bool:
        return self.gpu_memory_mib > 0 and self.per_gpu_mib > self.gpu_memory_mib


def fits(node: GpuNode, *, committed_mib: int, demand_mib: int, gpus: int) -> Fit:
    """Whether `demand_mib` fits on `node` given what is already committed there."""
    budget = node.budget_mib
    per_gpu = -(-demand_mib // gpus) if gpus > 1 else demand_mib
    problem = "; ".join(node.problems) if node.problems else ""
    gpu_memory = node.gpu_memory_mib
    ok = not problem and committed_mib + demand_mib <= budget and not (gpu_memory > 0 and per_gpu > gpu_memory)
    return _new_tuple(Fit, (node.name, demand_mib, committed_mib, budget, per_gpu, gpu_memory, problem, ok))


#: a named tuple from its fields in one C call (its generated `__new__` is a Python function)
_new_tuple = tuple.__new__


class Reservation(NamedTuple):
    uid: str
    key: str
    node: str
    demand_mib: int
    expires_at: float
    namespace: str


class Ledger:
    """The single owner of committed VRAM: the published view plus pending reservations."""

    def __init__(
        self, view: ClusterView, *, ttl_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._view = view
        self._ttl = ttl_seconds
        #: whether anything ever expires (snapshot mode: the TTL is infinite, and nothing does)
        self._expires = ttl_seconds != math.inf
        self._clock = clock
        self._reservations: dict[str, Reservation] = {}  # by pod UID, oldest (first to expire) first
        self._of_namespace: dict[str, dict[str, Reservation]] = {}
        #: node -> MiB of its reservations that the view does not count (see `_counted`)
        self._uncounted: dict[str, int] = {}
        self._admitted: dict[str, tuple[Tenant, float]] = {}  # by namespace/name, oldest first
        self._admitted_in: dict[str, dict[str, Tenant]] = {}  # namespace -> namespace/name -> tenant
        self._capacity = object()  # replaced whenever what `committed` answers may change

    @property
    def view(self) -> ClusterView:
        return self._view

    def publish(self, view: ClusterView) -> None:
        """Swap in a new view; a reservation whose pod it shows bound is done (dropped): on the
        reserved node the view now counts it, and on another node (the binding we admitted did
        not land, a later one did) the view counts it there. Admitted pods it holds are forgotten
        (`find_tenant` and the quota read them from the view)."""
        with self._lock:
            self._view = view
            self._capacity = object()
            for uid, res in list(self._reservations.items()):
                tenant = view.tenants.get(res.key)
                if tenant is not None and tenant.uid == uid and tenant.node:
                    self._drop_locked(uid)
            uncounted: dict[str, int] = {}  # recounted under the new view
            for res in self._reservations.values():
                if not self._counted(res):
                    uncounted[res.node] = uncounted.get(res.node, 0) + res.demand_mib
            self._uncounted = uncounted
            delivered = [
                key
                for key, (admitted, _) in self._admitted.items()
                if (shown := view.tenants.get(key)) is not None and admitted.uid in ("", shown.uid)
            ]
            for key in delivered:
                self._forget_locked(key)  # the watch delivered it: the view answers for it now

    def committed(self, node: str) -> int:
        with self._lock:
            self._expire_locked()  # an expired reservation holds nothing, even if no binding came since
            return self._committed_locked(node)

    def capacity_token(self) -> object:
        """The identity of the current committed state (see the module docstring): equal tokens
        (`is`) mean every `committed(node)` answers the same as when the token was read."""
        with self._lock:
            self._expire_locked()
            return self._capacity

    def reservations(self) -> tuple[Reservation, ...]:
        with self._lock:
            self._expire_locked()
            return tuple(self._reservations.values())

    def reserve(self, tenant: Tenant, node: GpuNode, *, dry_run: bool = False, force: bool = False) -> Fit:
        """Check that `tenant` fits `node` and, unless dry run, take the VRAM in the same step.

        `force` records the reservation even when it does not fit (a binding allowed by the
        namespace's warn/audit mode still lands on the node and must be counted). What the pod
        already holds on the node (its reservation, or the view's binding) is not counted twice;
        the view's record of the pod is read once (issue 17).
        """
        name, uid, key = node.name, tenant.uid, tenant.key
        with self._lock:
            if self._expires:
                self._expire_locked()
            view = self._view
            bound = view.tenants.get(key)
            shown = bound.node if bound is not None and bound.uid == uid else None  # where the view binds the pod
            demand = tenant.demand_on(node)
            committed = self._committed_locked(name)
            held = self._reservations.get(uid)
            if held is not None and held.node == name:
                committed -= held.demand_mib
            elif bound is not None and shown == name:
                committed -= bound.demand_on(node)
            fit = fits(node, committed_mib=committed, demand_mib=demand, gpus=tenant.gpus)
            if (force or fit.ok) and not dry_run:
                fields = (uid, key, name, demand, self._clock() + self._ttl, tenant.namespace)
                self._add_locked(_new_tuple(Reservation, fields), held, shown)
            return fit

    def pending_usage(self, namespace: str, *, besides: str = "") -> int:
        """VRAM of this namespace's pods that the view does not hold yet (snapshot mode, or a pod
        the watch has not delivered): reserved by an admitted binding, or admitted at CREATE and
        not bound yet. Counted against the namespace's quota, so a burst of pods admitted before
        any is scheduled cannot overrun it. `besides` (namespace/name) is the pod being judged."""
        with self._lock:
            self._expire_locked()
            tenants = self._view.tenants
            reserved = self._of_namespace.get(namespace, {})
            total = sum(r.demand_mib for r in reserved.values() if r.key not in tenants and r.key != besides)
            held = {r.uid for r in reserved.values()}
            for key, tenant in self._admitted_in.get(namespace, {}).items():
                if key not in tenants and key != besides and tenant.uid not in held:
                    total += tenant.demand_mib or 0
            return total

    def release(self, uid: str, key: str = "") -> None:
        """The pod (`uid`, and `key` namespace/name) is gone or holds nothing any more: its
        reservation ends, and so does its record of admission (it must not count against the
        quota once the view has dropped it)."""
        with self._lock:
            self._drop_locked(uid)
            entry = self._admitted.get(key)
            if entry is not None and entry[0].uid in (uid, ""):
                self._forget_locked(key)

    def remember_admitted(self, tenant: Tenant) -> None:
        """Keep a pod admitted at CREATE findable by its binding until the watch has it.

        Bounded: with no expiry (snapshot mode) the oldest entries give way after MAX_ADMITTED.
        """
        key = tenant.key
        with self._lock:
            self._forget_locked(key)
            self._admitted[key] = (tenant, self._clock() + self._ttl)
            self._admitted_in.setdefault(tenant.namespace, {})[key] = tenant
            while len(self._admitted) > MAX_ADMITTED:
                self._forget_locked(next(iter(self._admitted)))

    def find_tenant(self, key: str, uid: str = "") -> Tenant | None:
        """The tenant by namespace/name: the view first, then recently admitted pods. With `uid`:
        None for a tenant of that name whose UID is known and differs (another pod of the name)."""
        found = self._view.tenants.get(key)
        if found is None:
            with self._lock:
                entry = self._admitted.get(key)
                if entry is None or entry[1] < self._clock():
                    return None
                found = entry[0]
        return None if uid and found.uid and found.uid != uid else found

    def _committed_locked(self, node: str) -> int:
        return self._view.committed.get(node, 0) + self._uncounted.get(node, 0)

    def _counted(self, res: Reservation) -> bool:
        """Whether the view already counts `res` (it shows the pod bound where it is reserved).
        Fixed for a reservation while one view is published: `publish` recounts."""
        tenant = self._view.tenants.get(res.key)
        return tenant is not None and tenant.uid == res.uid and tenant.node == res.node

    def _add_locked(self, res: Reservation, held: Reservation | None, shown: str | None) -> None:
        """Take `res`; `held`: the pod's reservation until now, if any (it gives way); `shown`: the
        node the view shows the pod bound to (what `_counted` would read), None: not bound."""
        uid = res.uid
        reservations = self._reservations
        if held is not None:
            if held[1:4] == res[1:4]:  # renewed (same pod name, node and VRAM): only its expiry moves
                del reservations[uid]  # re-inserted at the end: the dict stays in expiry order
                reservations[uid] = self._of_namespace[res.namespace][uid] = res
                return
            self._drop_locked(uid, shown == held.node if held.key == res.key else None)
        self._capacity = object()
        reservations[uid] = res
        of_namespace = self._of_namespace.get(res.namespace)
        if of_namespace is None:
            of_namespace = self._of_namespace[res.namespace] = {}
        of_namespace[uid] = res
        if shown != res.node:  # the view does not count it
            self._uncounted[res.node] = self._uncounted.get(res.node, 0) + res.demand_mib

    def _drop_locked(self, uid: str, counted: bool | None = None) -> None:
        """End the reservation of pod `uid`; `counted`: whether the view counts it, if known."""
        res = self._reservations.pop(uid, None)
        if res is None:
            return
        self._capacity = object()
        of_namespace = self._of_namespace[res.namespace]
        del of_namespace[uid]
        # (inside `publish`, which recounts afterwards, this may be off)
        if not (self._counted(res) if counted is None else counted):
            left = self._uncounted.get(res.node, 0) - res.demand_mib
            if left:
                self._uncounted[res.node] = left
            else:
                self._uncounted.pop(res.node, None)
        if not of_namespace:
            del self._of_namespace[res.namespace]

    def _expire_locked(self) -> None:
        if not self._expires:
            return
        now = self._clock()
        reservations, admitted = self._reservations, self._admitted
        while reservations:
            oldest = next(iter(reservations.values()))
            if oldest.expires_at >= now:
                break
            self._drop_locked(oldest.uid)
        while admitted:
            key, (_, expires_at) = next(iter(admitted.items()))
            if expires_at >= now:
                break
            self._forget_locked(key)

    def _forget_locked(self, key: str) -> None:
        entry = self._admitted.pop(key, None)
        if entry is None:
            return
        members = self._admitted_in[entry[0].namespace]
        del members[key]
        if not members:
            del self._admitted_in[entry[0].namespace]
