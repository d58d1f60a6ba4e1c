"""One evaluation of a pod (or a pod template) against policy and capacity, shared by the
validating webhook and the audit so both always reach the same verdict.

Produces `Violation`s (rule, HTTP-style code, message for the pod's author); the caller decides
what the namespace's enforcement mode makes of them. Capacity is checked against the committed
figures the caller passes in (the ledger's, so pending reservations count). Pure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from webhook.core.catalog import Catalog, normalize_ref
from webhook.core.demand import ENV_CONTEXT, ENV_FLASH, ENV_MAX_LOADED, ENV_PARALLEL, PodDemand, compute_demand
from webhook.core.drivercap import RULE as DRIVER_CAP_RULE
from webhook.core.drivercap import cap_findings
from webhook.core.explain import CAPACITY_FIX, NEVER_FIX, describe_demand, describe_fit, list_fits
from webhook.core.ledger import Fit, fits
from webhook.core.policy import ClusterPolicy, NamespacePolicy
from webhook.core.quantity import format_mib
from webhook.core.scheduling import iter_candidates
from webhook.core.staleness import catching_up, catching_up_short
from webhook.core.tenants import (
    ANN_DEMAND,
    RESOURCE_VRAM,
    DeclarationError,
    PodFacts,
    QuantityDeclarationError,
    read_pod,
)
from webhook.core.view import ClusterView

Severity = Literal["fail", "warn"]


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    #: the full text for a denial: what was asked, what is free, which rule, how to fix it
    message: str
    code: int = 403
    severity: Severity = "fail"
    #: one line for a kubectl warning (≤ 120 characters); the message when empty
    short: str = ""

    @property
    def summary(self) -> str:
        return self.short or self.message


class PendingUsage(Protocol):
    """`Ledger.pending_usage`: a namespace's VRAM not in the view yet, besides one pod."""

    def __call__(self, namespace: str, /, *, besides: str = "") -> int: ...


@dataclass(frozen=True, slots=True)
class PodEvaluation:
    pod: PodFacts
    policy: NamespacePolicy
    demand: PodDemand | None
    violations: tuple[Violation, ...] = ()
    notes: tuple[str, ...] = ()
    fits: tuple[Fit, ...] = ()
    #: why the guard does not look at this pod ("" when it does)
    skipped: str = ""

    @property
    def failures(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.severity == "fail")

    def with_pod(self, pod: PodFacts) -> PodEvaluation:
        """The same evaluation for `pod`, which differs only by name and UID (valid only when no
        violation names the pod: see `names_no_pod`)."""
        return PodEvaluation(pod, self.policy, self.demand, self.violations, self.notes, self.fits, self.skipped)


@dataclass(frozen=True, slots=True)
class PodAssessment:
    """What a pod's own content and its namespace's policy decide, before the cluster's state is
    read: its demand and the violations of the namespace policy, its declaration, settings, driver
    cap and models. `done` is the whole evaluation when it ends there (skipped, or a declaration
    the author must fix). Nothing in it names the pod (`with_pod` puts another replica's facts in)."""

    pod: PodFacts
    policy: NamespacePolicy
    demand: PodDemand | None
    violations: tuple[Violation, ...] = ()
    done: PodEvaluation | None = None

    def with_pod(self, pod: PodFacts) -> PodAssessment:
        """The same assessment for `pod`, a pod that differs from this one only by name and UID."""
        done = None if self.done is None else self.done.with_pod(pod)
        return PodAssessment(pod, self.policy, self.demand, self.violations, done)

    def names_no_pod(self, evaluation: PodEvaluation, *, quota_keyed: bool = False) -> bool:
        """Whether `evaluation` (of this assessment) holds for a replica under another name: the
        cluster's state added no violation (capacity and quota messages name the pod), and no quota
        was read (a namespace's pending VRAM changes with every pod admitted) unless `quota_keyed`:
        the memo's key holds the figure the quota check read (`quota_used` for this pod), so only a
        replica that finds the namespace using exactly as much is given the answer."""
        if evaluation.violations is not self.violations and evaluation.violations != self.violations:
            return False
        reads_quota = self.pod.is_gpu_tenant and self.policy.vram_quota_mib is not None
        return self.done is not None or not reads_quota or quota_keyed


def assess_pod(
    pod: PodFacts,
    ns: NamespacePolicy,
    *,
    cluster: ClusterPolicy,
    catalog: Catalog,
    require_settings: bool = True,
    template: bool = False,
) -> PodAssessment:
    """The checks of `evaluate_pod` that read only the pod, its namespace's policy and the
    configuration (`template`: facts as the mutation leaves them, for a workload's template)."""
    skipped = skip_reason(pod, ns)
    if skipped:
        return PodAssessment(pod, ns, None, done=PodEvaluation(pod, ns, None, skipped=skipped))
    violations = [Violation("namespace-policy", str(p), 400) for p in ns.problems]
    try:
        demand = compute_demand(pod, ns=ns, cluster=cluster, catalog=catalog)
    except DeclarationError as exc:
        rule = "vram-quantity" if isinstance(exc, QuantityDeclarationError) else "declaration"
        done = PodEvaluation(pod, ns, None, (*violations, Violation(rule, str(exc), 400)))
        return PodAssessment(pod, ns, None, done.violations, done)
    violations += _setting_checks(pod, ns, demand, require_settings=require_settings)
    violations += _driver_cap_checks(pod, ns, demand, template=template)
    violations += _model_checks(demand, ns, catalog)
    return PodAssessment(pod, ns, demand, tuple(violations))


def skip_reason(pod: PodFacts, ns: NamespacePolicy) -> str:
    if ns.exempt:
        return f"namespace {ns.namespace} is exempt"
    if ns.enforcement == "off" and not ns.problems:
        return f"enforcement is off in namespace {ns.namespace}"
    if pod.mirror:
        return "mirror (static) pod"
    if not pod.is_ollama and not pod.is_gpu_tenant:
        return "not an Ollama pod and requests no GPU"
    if pod.uses_mig and not pod.is_gpu_tenant:
        return "uses MIG slices (hard-partitioned by the hardware)"
    return ""


def evaluate_pod(
    raw: Mapping[str, Any],
    *,
    namespace: str,
    cluster: ClusterPolicy,
    catalog: Catalog,
    view: ClusterView,
    committed: Callable[[str], int],
    replicas: int = 1,
    added: bool = False,
    one_per_node: bool = False,
    require_settings: bool = True,
    facts: PodFacts | None = None,
    pending_usage: PendingUsage | None = None,
    assessed: PodAssessment | None = None,
) -> PodEvaluation:
    """Every check of design §7 for a Pod CREATE (or `replicas` copies of a pod template).

    `facts` replaces what `raw` says about its containers (a template evaluated as mutated);
    `raw` still gives the scheduling constraints. `assessed`: `assess_pod`'s result for this pod
    (the validating webhook remembers it per distinct pod); computed here when absent.
    """
    if assessed is None:
        pod = facts or read_pod(raw, gpu_resources=cluster.gpu_resources, namespace=namespace)
        ns = view.namespace_policy(cluster, pod.namespace)
        assessed = assess_pod(
            pod, ns, cluster=cluster, catalog=catalog, require_settings=require_settings, template=facts is not None
        )
    if assessed.done is not None:
        return assessed.done
    pod, ns, demand = assessed.pod, assessed.policy, assessed.demand
    assert demand is not None  # `done` is set whenever there is no demand
    violations = list(assessed.violations)
    if one_per_node:
        result = _per_node_checks(raw, pod, demand, view=view, committed=committed)
        replicas = len(result[1])
    else:
        result = _capacity_checks(
            raw,
            pod,
            demand,
            view=view,
            committed=committed,
            replicas=replicas,
            policy=cluster.capacity_at_admission,
            added=added,
        )
    violations += result[0]
    if pod.is_gpu_tenant:
        quota_set = ns.vram_quota_mib is not None
        pending = pending_usage(pod.namespace, besides=pod.key) if pending_usage is not None and quota_set else 0
        violations += _quota_checks(pod, ns, demand, view, replicas, result[1], pending)
    notes = demand.notes
    return PodEvaluation(pod, ns, demand, tuple(violations), notes, tuple(result[1]))


def _setting_checks(
    pod: PodFacts, ns: NamespacePolicy, demand: PodDemand, *, require_settings: bool
) -> list[Violation]:
    out: list[Violation] = []
    settings = demand.settings
    if pod.is_ollama and settings is not None:
        caps = (
            (ENV_MAX_LOADED, settings.max_loaded_models, ns.max_loaded_models, "ollama-guard.io/max-loaded-models"),
            (ENV_CONTEXT, settings.context_length, ns.context_length, "ollama-guard.io/context-length"),
            (ENV_PARALLEL, settings.num_parallel, ns.num_parallel, "ollama-guard.io/num-parallel"),
        )
        pod_context = demand.declaration.context_length
        for env, value, cap, ann in caps:
            if value <= cap:
                continue
            origin = (
                " (from the pod's ollama-guard.io/context-length)"
                if env == ENV_CONTEXT and pod_context == value
                else ""
            )
            out.append(
                Violation(
                    "settings-cap",
                    f"{env}={value}{origin} is above namespace {ns.namespace}'s cap of {cap} ({ann}); "
                    f"set it to {cap} or less, or ask an admin to raise the cap",
                    short=f"{env}={value} is above the namespace cap {cap}",
                )
            )
        if require_settings:
            missing = sorted(
                {
                    e
                    for c in pod.ollama_containers
                    for e in (ENV_MAX_LOADED, ENV_CONTEXT, ENV_PARALLEL, ENV_FLASH)
                    if e not in c.env and (e != ENV_FLASH or ns.flash_attention)
                }
            )
            if missing:
                out.append(
                    Violation(
                        "settings-missing",
                        f"Ollama container(s) lack {', '.join(missing)}: the mutating webhook did not run, so "
                        "Ollama will pick its own defaults (recent releases size the context from the whole GPU); "
                        "the estimate assumes the namespace defaults. Set them explicitly",
                        severity="warn",
                        short=f"{', '.join(missing)} not set; estimate assumes the namespace defaults",
                    )
                )
    if pod.is_ollama and not pod.is_gpu_tenant and require_settings:
        visible = {c.env.get("NVIDIA_VISIBLE_DEVICES") for c in pod.ollama_containers}
        if visible != {"void"}:
            out.append(
                Violation(
                    "gpu-request",
                    "Ollama pod requests no GPU but the ollama/ollama image sees every GPU "
                    "(NVIDIA_VISIBLE_DEVICES=all); request nvidia.com/gpu: 1, or set NVIDIA_VISIBLE_DEVICES=void",
                    short="Ollama pod requests no GPU but would see every GPU; request nvidia.com/gpu: 1",
                )
            )
    stamp = pod.annotations.get(ANN_DEMAND)
    if stamp is not None and demand.demand_mib is not None and stamp != str(demand.demand_mib):
        out.append(
            Violation(
                "guard-annotation",
                f'{ANN_DEMAND}="{stamp[:40]}" does not match the guard\'s computation ({demand.demand_mib}); '
                "this annotation is written by the guard: remove it from the pod spec",
                short=f"{ANN_DEMAND} is written by the guard; remove it from the pod spec",
            )
        )
    return out


def _driver_cap_checks(pod: PodFacts, ns: NamespacePolicy, demand: PodDemand, *, template: bool) -> list[Violation]:
    """Design §8 driver-enforced cap: a value NVIDIA's hook refuses (400), a cap missing or above the
    pod's accounted demand (a warning). `template`: facts as the mutation leaves them (a workload)."""
    if not ns.driver_memory_limit:
        return []
    found = cap_findings(pod, demand, template=template)
    return [Violation(DRIVER_CAP_RULE, f.message, f.code, f.severity, f.short) for f in found]


def _model_checks(demand: PodDemand, ns: NamespacePolicy, catalog: Catalog) -> list[Violation]:
    if ns.allowed_models == ("*",):
        return []
    resolved = {m.requested: m.tag for m in demand.estimate.models} if demand.estimate else {}
    refused = []
    for ref in demand.declaration.models:
        name, tag = normalize_ref(ref)
        candidates = {f"{name}:{tag}", ref.strip().lower()}
        if ref in resolved:
            candidates.add(resolved[ref])
        else:
            with contextlib.suppress(LookupError):
                candidates.add(catalog.resolve(ref).tag)
        if not any(ns.model_allowed(c) for c in candidates):
            refused.append(ref)
    if not refused:
        return []
    return [
        Violation(
            "allowed-models",
            f"model{'s' if len(refused) > 1 else ''} {', '.join(refused)} not allowed in namespace {ns.namespace} "
            f"(ollama-guard.io/allowed-models: {', '.join(ns.allowed_models)}); use an allowed model or ask an admin",
            short=f"model {refused[0]} is not allowed here (allowed: {', '.join(ns.allowed_models)[:40]})",
        )
    ]


def _capacity_checks(
    raw: Mapping[str, Any],
    pod: PodFacts,
    demand: PodDemand,
    *,
    view: ClusterView,
    committed: Callable[[str], int],
    replicas: int,
    policy: str,
    added: bool = False,
) -> tuple[list[Violation], list[Fit]]:
    """Allow as soon as an unguarded candidate or enough guarded room is found (cost stays flat as
    clusters grow); only a shortfall walks every candidate, to list each one's free VRAM.

    A shortfall is a denial when the pod is pinned (`spec.nodeName`: it cannot go elsewhere), when
    no candidate could hold one copy even empty (it can never run), or when the cluster policy
    `capacity_at_admission` is `deny`; otherwise (design §14) a warning: the pod waits Pending on
    the scheduler's `Insufficient ollama-guard.io/vram-mib`, where preemption and autoscalers act.
    """
    if not pod.is_gpu_tenant or replicas <= 0:
        return [], []
    spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
    results: list[Fit] = []
    placeable = 0
    for node in iter_candidates(spec or {}, view.nodes.values()):
        if not node.guarded:
            return [], []  # unguarded room: not the guard's call (the binding check still guards the rest)
        demand_mib = demand.on_node(even_share_mib=node.even_share_mib)
        fit = fits(node, committed_mib=committed(node.name), demand_mib=demand_mib, gpus=pod.gpus)
        results.append(fit)
        placeable += _copies(fit)
        if placeable >= replicas:
            return [], results
    if not results:
        return _unknown_pinned_node(pod, view), []  # else nowhere to go: the scheduler keeps it pending
    never = all(_never_fits(f) for f in results)
    wait = policy == "warn" and not pod.node_name and not never
    node_ = view.nodes.get(pod.node_name)
    share = (node_ or view.nodes[results[0].node]).even_share_mib
    needs = describe_demand(demand, even_share_mib=share)
    message = _shortfall_message(
        pod, needs, results, replicas=replicas, placeable=placeable, never=never, wait=wait, added=added
    )
    best = max(results, key=lambda f: f.free_mib)
    need = format_mib(results[0].demand_mib)
    most = f"most free: {best.node[:40]} {format_mib(best.free_mib)}"
    if wait:
        asked = f"{replicas} x {need}" if replicas > 1 else need
        short = f"no GPU node has {asked} VRAM free now ({most}); it waits Pending for room"
        return [Violation("capacity", message, severity="warn", short=short)], results
    short = f"needs {need} VRAM x{replicas}; {placeable} fit; {most}"
    return [Violation("capacity", message, short=short)], results


def _unknown_pinned_node(pod: PodFacts, view: ClusterView) -> list[Violation]:
    """A pod pinned to a node a stale view does not hold: not "allowed because unknown" (issue 20)."""
    stale = view.stale
    if not pod.node_name or pod.node_name in view.nodes or stale is None or not stale.covers("Node"):
        return []
    what = f"pod {pod.namespace}/{pod.name or '(generated)'} is pinned to node {pod.node_name}"
    message = catching_up(stale, what=what)
    return [Violation("stale-view", message, short=catching_up_short(pod.node_name))]


def _never_fits(fit: Fit) -> bool:
    """Not even an empty node would hold one copy: a broken budget, a GPU too small, or too little VRAM."""
    return bool(fit.problem) or fit.exceeds_gpu or fit.demand_mib > fit.budget_mib


def _shortfall_message(
    pod: PodFacts,
    needs: str,
    results: list[Fit],
    *,
    replicas: int,
    placeable: int,
    never: bool,
    wait: bool,
    added: bool = False,
) -> str:
    """What is short, in numbers that agree with each other (issue 18: never "no node has X free"
    next to a node that has X free)."""
    what = f"pod {pod.namespace}/{pod.name or '(generated)'}"
    listed = list_fits(results)
    if pod.node_name:
        pinned = results[0]
        room = f"{format_mib(pinned.free_mib)} free of {format_mib(pinned.budget_mib)}"
        if pinned.problem or pinned.exceeds_gpu:
            room = describe_fit(pinned).split(": ", 1)[1]
        return (
            f"{what} needs {needs} of VRAM, but it is pinned (spec.nodeName) to node {pod.node_name}, which has "
            f"{room}. {CAPACITY_FIX}, or let the scheduler choose the node"
        )
    if never:
        return (
            f"{what} needs {needs} of VRAM, more than any time-sliced GPU node it can run on holds even when "
            f"empty: {listed}. {NEVER_FIX}"
        )
    if replicas > 1:
        room = "; ".join(
            f"{f.node} can hold {_copies(f)} more ({format_mib(f.free_mib)} free of {format_mib(f.budget_mib)})"
            for f in sorted(results, key=lambda f: -f.free_mib)[:8]
        )
        more = f"{replicas} more replicas" if added else f"{replicas} replicas"
        hold = f"hold {placeable} more" if placeable else "hold no more"
        head = (
            f"{more} of {what} need {needs} of VRAM each, but the time-sliced GPU nodes they can run "
            f"on {hold} right now: {room}."
        )
        fix = f"Fix: ask for at most {placeable} more replicas, or {CAPACITY_FIX[5:]}" if placeable else CAPACITY_FIX
    else:
        head = f"{what} needs {needs} of VRAM, but no time-sliced GPU node it can run on has that free: {listed}."
        fix = CAPACITY_FIX
    if wait:
        return f"{head} Admitted: it waits Pending until the scheduler finds room (Insufficient {RESOURCE_VRAM})."
    return f"{head} {fix}"


def _per_node_checks(
    raw: Mapping[str, Any], pod: PodFacts, demand: PodDemand, *, view: ClusterView, committed: Callable[[str], int]
) -> tuple[list[Violation], list[Fit]]:
    """A DaemonSet's pods cannot move: every guarded candidate node must hold its copy."""
    if not pod.is_gpu_tenant:
        return [], []
    spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
    results = [
        fits(
            n,
            committed_mib=committed(n.name),
            demand_mib=demand.on_node(even_share_mib=n.even_share_mib),
            gpus=pod.gpus,
        )
        for n in iter_candidates(spec or {}, view.nodes.values())
        if n.guarded
    ]
    short_of = [f for f in results if not f.ok]
    if not short_of:
        return [], results
    message = (
        f"daemon pod {pod.namespace}/{pod.name} needs {describe_demand(demand, even_share_mib=short_of[0].budget_mib)} "
        f"of VRAM on every node it runs on, but {len(short_of)} of {len(results)} time-sliced nodes cannot hold it: "
        f"{list_fits(short_of)}. {CAPACITY_FIX}, or narrow the DaemonSet's nodeSelector"
    )
    short = f"{len(short_of)} of {len(results)} nodes lack room for a {format_mib(short_of[0].demand_mib)} daemon pod"
    return [Violation("capacity", message, short=short)], results


def _copies(fit: Fit) -> int:
    if fit.problem or fit.exceeds_gpu or fit.demand_mib <= 0:
        return 0 if fit.problem or fit.exceeds_gpu else 1 << 30
    return max(fit.budget_mib - fit.committed_mib, 0) // fit.demand_mib


def quota_used(view: ClusterView, namespace: str, key: str, uid: str, pending: int) -> int:
    """What the namespace's VRAM quota counts as used when pod `key` (namespace/name, UID `uid`)
    is judged: the view's usage of the namespace, plus `pending` (its VRAM the view does not hold
    yet, besides this pod: `Ledger.pending_usage`), less the pod's own share when the view
    already holds it. The one figure of the cluster's state the quota check reads."""
    used = view.namespace_usage.get(namespace, 0) + pending
    own = view.tenants.get(key)
    if own is not None and own.uid == uid and uid:
        used -= own.demand_mib or 0
    return used


def _quota_checks(
    pod: PodFacts,
    ns: NamespacePolicy,
    demand: PodDemand,
    view: ClusterView,
    replicas: int,
    results: list[Fit],
    pending: int,
) -> list[Violation]:
    if ns.vram_quota_mib is None:
        return []
    each = (
        demand.demand_mib
        if demand.demand_mib is not None
        else max(
            (f.demand_mib for f in results), default=max((n.even_share_mib for n in view.nodes.values()), default=0)
        )
    )
    used = quota_used(view, ns.namespace, pod.key, pod.uid, pending)
    asked = each * replicas
    if used + asked <= ns.vram_quota_mib:
        return []
    return [
        Violation(
            "vram-quota",
            f"namespace {ns.namespace} VRAM quota exceeded: {format_mib(used)} in use + {format_mib(asked)} asked "
            f"> quota {format_mib(ns.vram_quota_mib)} (ollama-guard.io/vram-quota); free VRAM in this namespace or "
            "ask an admin for more quota",
            short=f"VRAM quota {format_mib(ns.vram_quota_mib)}: {format_mib(used)} used + {format_mib(asked)} asked",
        )
    ]
