"""The mutating webhook: inject the Ollama settings and GPU request the estimate relies on, the
`ollama-guard.io/vram-mib` resource request the scheduler places by, the driver-enforced VRAM cap,
and stamp the guard's demand annotations (design §8, §14).

Only what is absent is added (a VRAM request lower than the demand is raised, never lowered); a
user-supplied guard annotation is overwritten or removed. The driver cap (`NVIDIA_GPU_MEMORY_LIMIT`
and `NVIDIA_GPU_MEMORY_REQUEST` on each Ollama container, whole MiB per GPU: NVIDIA's hook applies
the same figure to every GPU of the container, see `webhook.core.drivercap`) is the pod's demand
divided by its GPUs, rounded up; it is computed with the VRAM request, from the same demand. An
author's value above it is lowered (with a warning), one at or below it kept; a value the hook
would refuse is left for the validating webhook to deny (400). The patch is built against the raw
request object, so applying it and mutating again yields an empty patch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import orjson

from webhook.admission import review as rv
from webhook.admission.context import Guard
from webhook.admission.memo import UNREAD, Memo, content_key
from webhook.admission.patches import ContainerEdit, edit_container, set_annotations
from webhook.admission.review import AdmissionRequest, AdmissionResponse
from webhook.core.demand import ENV_CONTEXT, ENV_FLASH, ENV_MAX_LOADED, ENV_PARALLEL, PodDemand, compute_demand
from webhook.core.drivercap import accounted_mib, mutation_warnings, per_gpu_cap, plan_cap
from webhook.core.evaluation import skip_reason
from webhook.core.inventory import GpuNode
from webhook.core.policy import ClusterPolicy, NamespacePolicy
from webhook.core.scheduling import iter_candidates
from webhook.core.tenants import (
    ANN_DEMAND,
    ANN_ESTIMATE,
    RESOURCE_VRAM,
    ContainerFacts,
    DeclarationError,
    PodFacts,
    read_pod,
)
from webhook.core.view import ESTIMATE_VERSION, Tenant, tenant_from_pod


def is_pod(req: AdmissionRequest) -> bool:
    return req.kind.kind == "Pod" and req.resource.resource == "pods" and not req.sub_resource


_mutations: Memo[tuple[AdmissionResponse, Tenant | None]] = Memo()


def mutate(req: AdmissionRequest, guard: Guard) -> AdmissionResponse:
    """The mutation of a Pod CREATE, remembered per distinct pod (see `memo`: replicas of a
    workload are the same pod; the answer reads the view's namespaces and nodes, nothing else)."""
    if not is_pod(req) or req.operation != "CREATE" or not isinstance(req.object, dict):
        return rv.allowed()
    view = guard.ledger.view
    owner = (guard.cluster, guard.catalog, view.namespaces, view.nodes)
    content = content_key(req.object, drop=UNREAD, finite=req.finite)
    key = None if content is None else (req.namespace, req.dry_run, content)
    response, admitted = _mutations.get(owner, key, lambda: mutation_of(req, guard))
    if admitted is not None:
        # a binding may follow without a /validate the guard saw (e.g. only the mutating webhook is
        # registered for pods); the validated record, with the pod's UID, replaces this one
        guard.ledger.remember_admitted(admitted)
    return response


def mutation_of(req: AdmissionRequest, guard: Guard) -> tuple[AdmissionResponse, Tenant | None]:
    """The answer to a Pod CREATE and the tenant to remember as admitted (None: none); reads the
    guard, changes nothing."""
    assert isinstance(req.object, dict)
    raw = req.object
    try:
        pod = read_pod(raw, gpu_resources=guard.cluster.gpu_resources, namespace=req.namespace)
    except DeclarationError:
        return rv.allowed(), None  # the validating webhook denies it with the reason
    ns = guard.ledger.view.namespace_policy(guard.cluster, pod.namespace)
    if skip_reason(pod, ns):
        return rv.allowed(), None
    edits = plan_edits(pod, ns, guard.cluster)
    spec = raw.get("spec") if isinstance(raw.get("spec"), dict) else {}
    after = after_edits(pod, edits)
    demand: PodDemand | None
    try:
        demand = compute_demand(after, ns=ns, cluster=guard.cluster, catalog=guard.catalog)
    except DeclarationError:
        demand = None
    requested = after.vram_mib
    if demand is not None and after.is_gpu_tenant:
        figure = vram_figure(demand, spec or {}, guard.cluster, guard.ledger.view.nodes.values())
        if figure is not None and figure > requested:  # never lowered: a larger request is kept
            raised = with_vram_request(edits, after, figure)
            requested = figure if raised is not edits else requested
            edits = raised
    edits, warnings, cap = _driver_cap(edits, after, demand, requested, ns)
    ops = [op for edit in edits for op in edit_container(spec or {}, edit)]
    ops += _annotation_ops(raw, after, demand, requested, cap)
    named = isinstance(raw.get("metadata"), dict) and bool(raw["metadata"].get("name"))
    tenant = None
    if demand is not None and after.is_gpu_tenant and named and not req.dry_run:
        tenant = tenant_from_pod(after, demand)
        if tenant.requested_mib != requested:
            tenant = tenant._replace(requested_mib=requested)
    return rv.with_warnings(rv.patched(ops), warnings), tenant


def plan_edits(pod: PodFacts, ns: NamespacePolicy, cluster: ClusterPolicy) -> list[ContainerEdit]:
    """What each Ollama container lacks: the three settings (namespace defaults; the pod's
    `ollama-guard.io/context-length` for the context), OLLAMA_FLASH_ATTENTION=1 when the policy's
    `flash_attention` is on (the estimate counts on it) and, when no container asks for one, a GPU."""
    context = pod.annotations.get("ollama-guard.io/context-length", "").strip()
    defaults = (
        (ENV_MAX_LOADED, str(ns.max_loaded_models)),
        (ENV_CONTEXT, context if context.isdigit() else str(ns.context_length)),
        (ENV_PARALLEL, str(ns.num_parallel)),
    ) + (((ENV_FLASH, "1"),) if ns.flash_attention else ())
    ollama = pod.ollama_containers
    needs_gpu = pod.gpus == 0 and cluster.ollama_requires_gpu and bool(ollama)
    edits: list[ContainerEdit] = []
    for i, container in enumerate(ollama):
        env = tuple((k, v) for k, v in defaults if k not in container.env)
        if not cluster.ollama_requires_gpu and container.gpus == 0 and "NVIDIA_VISIBLE_DEVICES" not in container.env:
            env += (("NVIDIA_VISIBLE_DEVICES", "void"),)
        gpu = ((cluster.gpu_resources[0], 1),) if needs_gpu and i == 0 else ()
        edits.append(ContainerEdit(field="containers", index=container.index, env=env, resources=gpu))
    return edits


def vram_figure(
    demand: PodDemand, pod_spec: Mapping[str, Any], cluster: ClusterPolicy, nodes: Iterable[GpuNode]
) -> int | None:
    """The `ollama-guard.io/vram-mib` the pod must request (design §8, §14): its demand. A tenant
    that declares nothing (a non-Ollama pod, or an Ollama pod without models: counted as one
    replica's even share of the node it lands on) requests the policy's `default_tenant_vram`, else
    the largest even share among the guarded nodes of known VRAM it can be scheduled on."""
    if demand.demand_mib is not None:
        return demand.demand_mib
    if cluster.default_tenant_vram_mib is not None:
        return cluster.default_tenant_vram_mib
    shares = [n.even_share_mib for n in iter_candidates(pod_spec, nodes) if n.guarded and n.vram_known]
    # None: no guarded node it can land on, so no request (there it would only constrain nodes the
    # guard does not account, where the resource is not advertised to constrain anything)
    return max((s for s in shares if s > 0), default=None)


def vram_target(pod: PodFacts) -> ContainerFacts | None:
    """The container that holds the GPU request: the first Ollama app container requesting a GPU,
    else the first app container requesting one, else (a GPU only in an init container) that one."""
    first: ContainerFacts | None = None
    init: ContainerFacts | None = None
    for c in pod.containers:
        if c.gpus <= 0:
            continue
        if c.init:
            init = init or c
        elif c.is_ollama:
            return c
        else:
            first = first or c
    return first or init


def with_vram_request(edits: list[ContainerEdit], pod: PodFacts, figure: int) -> list[ContainerEdit]:
    """`edits` plus the VRAM request that brings the pod's total (`pod.vram_mib`, below `figure`)
    up to `figure`, on `vram_target`: an app container gets its value + the shortfall of the app
    containers' sum, an init container (max'ed, not summed, by the scheduler) the figure itself.
    The very `edits` list when no container requests a GPU."""
    target = vram_target(pod)
    if target is None:
        return edits
    shortfall = figure - sum(c.vram_mib for c in pod.containers if not c.init)
    value = figure if target.init else target.vram_mib + shortfall
    field = "initContainers" if target.init else "containers"
    amount = ((RESOURCE_VRAM, value),)
    out = list(edits)
    for i, edit in enumerate(out):
        if edit.field == field and edit.index == target.index:
            out[i] = replace(edit, resources=edit.resources + amount)
            return out
    out.append(ContainerEdit(field=field, index=target.index, resources=amount))
    return out


def _driver_cap(
    edits: list[ContainerEdit], pod: PodFacts, demand: PodDemand | None, requested_mib: int, ns: NamespacePolicy
) -> tuple[list[ContainerEdit], list[str], int]:
    """`edits` with the driver cap (0: none, e.g. the namespace opted out) and the warnings about it."""
    cap = per_gpu_cap(pod, accounted_mib(demand, requested_mib)) if demand is not None else None
    if cap is None or not ns.driver_memory_limit:
        return edits, [], 0
    return (*with_driver_cap(edits, pod, cap), cap)


def with_driver_cap(edits: list[ContainerEdit], pod: PodFacts, cap: int) -> tuple[list[ContainerEdit], list[str]]:
    """`edits` plus `NVIDIA_GPU_MEMORY_LIMIT`/`_REQUEST` at most `cap` on each Ollama container
    (`drivercap.plan_cap`), and warnings for the author's values it changes or misspells. A container
    whose values NVIDIA's hook would refuse is left as it is, for the validating webhook to deny."""
    out = list(edits)
    warnings: list[str] = []
    for container in pod.ollama_containers:
        plan = plan_cap(container, cap)
        warnings += mutation_warnings(container, plan)
        values = tuple((change.name, str(change.value)) for change in plan.changes)
        if not values:
            continue
        at = next((i for i, e in enumerate(out) if (e.field, e.index) == ("containers", container.index)), None)
        if at is None:
            out.append(ContainerEdit(field="containers", index=container.index, env_set=values))
        else:
            out[at] = replace(out[at], env_set=out[at].env_set + values)
    return out, warnings


def after_edits(pod: PodFacts, edits: list[ContainerEdit]) -> PodFacts:
    """The facts of the pod as the edits leave it (no copy of the raw object needed).

    Built with the constructors rather than `dataclasses.replace` (a third of the cost; this runs
    on every mutated pod).
    """
    by_index = {(e.field == "initContainers", e.index): e for e in edits}
    containers = tuple(
        _edited(c, by_index[c.init, c.index]) if (c.init, c.index) in by_index else c for c in pod.containers
    )
    app = init = vram_app = vram_init = 0
    for c in containers:
        if c.init:
            init, vram_init = max(init, c.gpus), max(vram_init, c.vram_mib)
        else:
            app, vram_app = app + c.gpus, vram_app + c.vram_mib
    return PodFacts(
        namespace=pod.namespace,
        name=pod.name,
        uid=pod.uid,
        labels=pod.labels,
        annotations=pod.annotations,
        node_name=pod.node_name,
        phase=pod.phase,
        deleting=pod.deleting,
        mirror=pod.mirror,
        containers=containers,
        gpu_resource=pod.gpu_resource,
        gpus=max(app, init),
        uses_mig=pod.uses_mig,
        is_ollama=pod.is_ollama,
        vram_mib=max(vram_app, vram_init),
    )


def _edited(container: ContainerFacts, edit: ContainerEdit) -> ContainerFacts:
    gpus, vram = container.gpus, container.vram_mib
    for name, amount in edit.resources:
        if name == RESOURCE_VRAM:
            vram = amount
        else:  # the only other resource the guard sets is a GPU, on a container that requested none
            gpus += amount
    return ContainerFacts(
        index=container.index,
        name=container.name,
        image=container.image,
        init=container.init,
        is_ollama=container.is_ollama,
        gpus=gpus,
        env={**container.env, **dict(edit.env), **dict(edit.env_set)} if edit.env or edit.env_set else container.env,
        commands=container.commands,
        vram_mib=vram,
    )


def _annotation_ops(
    obj: dict[str, Any], pod: PodFacts, demand: PodDemand | None, requested_mib: int, cap_mib: int
) -> list[dict[str, Any]]:
    """Stamp the guard's annotations; a user-supplied stamp is overwritten or removed, never kept."""
    ops: list[dict[str, Any]] = []
    stale: tuple[str, ...] = (ANN_DEMAND, ANN_ESTIMATE)
    if demand is not None and pod.is_gpu_tenant:
        values = {ANN_ESTIMATE: estimate_annotation(demand, requested_mib=requested_mib, cap_mib=cap_mib)}
        if demand.demand_mib is not None:
            values[ANN_DEMAND] = str(demand.demand_mib)
        ops += set_annotations(obj, values)
        stale = () if demand.demand_mib is not None else (ANN_DEMAND,)
    return ops + [
        {"op": "remove", "path": "/metadata/annotations/" + key.replace("/", "~1")}
        for key in stale
        if key in pod.annotations
    ]


def estimate_annotation(demand: PodDemand, *, requested_mib: int = 0, cap_mib: int = 0) -> str:
    """Compact, deterministic JSON breakdown (same pod -> same text, so mutation is idempotent).

    `requested_mib`: the `ollama-guard.io/vram-mib` the pod requests after the mutation (0: none);
    `cap_mib`: the driver cap per GPU set on its Ollama containers (0: none; a container may keep a
    lower value of its own). `compute_demand` hands identical pods the same PodDemand object, so the
    text is remembered per object, request and cap (the memo holds the object: its id cannot be
    reused while remembered).
    """
    key = (id(demand), requested_mib, cap_mib)
    memo = _STAMPS.get(key)
    if memo is not None and memo[0] is demand:
        return memo[1]
    text = _estimate_text(demand, requested_mib, cap_mib)
    if len(_STAMPS) >= _MAX_STAMPS:
        _STAMPS.clear()
    _STAMPS[key] = (demand, text)
    return text


_STAMPS: dict[tuple[int, int, int], tuple[PodDemand, str]] = {}
_MAX_STAMPS = 4096


def _estimate_text(demand: PodDemand, requested_mib: int = 0, cap_mib: int = 0) -> str:
    mib = 1 << 20
    body: dict[str, Any] = {"v": ESTIMATE_VERSION, "source": demand.source, "demandMiB": demand.demand_mib}
    if requested_mib > 0:
        body["requestedMiB"] = requested_mib
    if cap_mib > 0:
        body["driverCapMiB"] = cap_mib  # NVIDIA_GPU_MEMORY_LIMIT/_REQUEST, per GPU
    if demand.declaration.models:
        body["models"] = list(demand.declaration.models)
        body["modelsFrom"] = demand.declaration.source
    if demand.declaration.vram_mib is not None:
        body["declaredMiB"] = demand.declaration.vram_mib
    if demand.estimate is not None:
        est, s = demand.estimate, demand.estimate.settings
        body["perModel"] = [
            {
                "tag": m.tag,
                "ctx": m.context,
                "weightsMiB": -(-m.weights_bytes // mib),
                "kvMiB": -(-m.kv_bytes // mib),
                "graphMiB": -(-m.graph_bytes // mib),
                "headroomMiB": -(-m.headroom_bytes // mib),
                "runnerMiB": m.runner_bytes // mib,
                "flashAttention": m.flash_attention,
                "kv": m.kv_type,
            }
            for m in est.models
        ]
        body["assumptions"] = {
            "contextLength": s.context_length,
            "numParallel": s.num_parallel,
            "maxLoadedModels": s.max_loaded_models,
            "gpus": est.gpus,
            "loaded": est.loaded,
            "kvCacheType": s.effective_kv_type,
            "gpuOverheadBytes": s.gpu_overhead_bytes,
            "cudaContextMiB": est.cuda_overhead_bytes // mib,
            "safetyMargin": est.safety_margin,
        }
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
