"""A pod's VRAM demand: its declaration + Ollama env + namespace policy + catalog -> MiB.

Composes `declarations`, `catalog` and `estimate`. The Ollama settings are read the way the
Ollama server reads them (envconfig), with the namespace's defaults for what is absent (exactly
what the mutating webhook injects). A demand can be node-dependent: an undeclared non-Ollama
tenant counts one replica's even share of the node it lands on (`PodDemand.on_node`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Literal, NamedTuple

from webhook.core.catalog import Catalog, ModelSpec, UnknownModelError
from webhook.core.declarations import Declaration, parse_positive_int, read_declaration
from webhook.core.estimate import KV_BYTES, KvCacheType, OllamaSettings, PodEstimate, estimate_pod
from webhook.core.policy import ClusterPolicy, NamespacePolicy
from webhook.core.quantity import whole_number
from webhook.core.tenants import ANN_CONTEXT, ANN_MODELS, ANN_VRAM, DeclarationError, PodFacts

DemandSource = Literal[
    "estimate", "declared", "max(declared, estimate)", "default", "requested (ollama-guard.io/vram-mib)"
]

ENV_MAX_LOADED = "OLLAMA_MAX_LOADED_MODELS"
ENV_CONTEXT = "OLLAMA_CONTEXT_LENGTH"
ENV_PARALLEL = "OLLAMA_NUM_PARALLEL"
ENV_KV_TYPE = "OLLAMA_KV_CACHE_TYPE"
ENV_FLASH = "OLLAMA_FLASH_ATTENTION"
ENV_GPU_OVERHEAD = "OLLAMA_GPU_OVERHEAD"
#: Ollama treats 0 as "auto": up to 3 models per GPU, and (older releases) 4 parallel slots.
AUTO_MAX_LOADED = 3
AUTO_PARALLEL = 4
#: what Go's strconv.ParseBool reads as false; Ollama's envconfig takes any other non-empty value
#: as true (BoolWithDefault: a parse error is `true`) and an empty one as unset
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


class PodDemand(NamedTuple):
    """What one pod asks of a node, and why (a named tuple, as `OllamaSettings`: built per estimate)."""

    declaration: Declaration
    source: DemandSource
    #: None: undeclared non-Ollama tenant, counted as the node's even share (see `on_node`).
    demand_mib: int | None
    settings: OllamaSettings | None = None
    estimate: PodEstimate | None = None
    notes: tuple[str, ...] = ()

    #: the pod's own `ollama-guard.io/vram-mib` request: it counts with at least that, everywhere
    requested_mib: int = 0

    def on_node(self, *, even_share_mib: int) -> int:
        return max(self.demand_mib if self.demand_mib is not None else even_share_mib, self.requested_mib)


def read_settings(
    pod: PodFacts, ns: NamespacePolicy, *, context_hint: int | None = None
) -> tuple[OllamaSettings, tuple[str, ...]]:
    """The Ollama settings of a pod's Ollama containers (the largest value across them).

    Per setting: absent -> the namespace default (what the mutating webhook injects); `valueFrom`
    -> that default, with a note; `0` -> Ollama's "auto" value; anything else must be a whole
    number. The widest KV cache type wins (unknown types count as f16, as in Ollama). Flash attention
    counts as on only when every Ollama container has it on (`_flash_setting`). The pod's
    `ollama-guard.io/context-length` (`context_hint`) is a floor for the context.
    """
    notes: list[str] = []
    context_default = context_hint or ns.context_length
    context = parallel = loaded = 0
    kv: KvCacheType | None = None
    flash = True
    overhead = 0
    for env in [c.env for c in pod.ollama_containers] or [{}]:
        context = max(context, _integer_setting(env, ENV_CONTEXT, context_default, context_default, notes))
        parallel = max(parallel, _integer_setting(env, ENV_PARALLEL, ns.num_parallel, AUTO_PARALLEL, notes))
        loaded = max(loaded, _integer_setting(env, ENV_MAX_LOADED, ns.max_loaded_models, AUTO_MAX_LOADED, notes))
        kind = _KV_TYPES.get((env.get(ENV_KV_TYPE) or "f16").strip().lower(), "f16")
        if kv is None or _KV_WIDTH[kind] > _KV_WIDTH[kv]:
            kv = kind
        flash = _flash_setting(env, ns.flash_attention, notes) and flash
        overhead = max(overhead, _overhead(env))
    settings = OllamaSettings(
        context_length=max(context, context_hint or 0),
        num_parallel=parallel,
        max_loaded_models=loaded,
        kv_cache_type=kv or "f16",
        flash_attention=flash,
        gpu_overhead_bytes=overhead,
    )
    return settings, tuple(notes)


def _integer_setting(env: Mapping[str, str | None], name: str, default: int, auto: int, notes: list[str]) -> int:
    if name not in env:
        return default
    raw = env[name]
    if raw is None:
        notes.append(f"{name} comes from valueFrom; assumed the namespace cap {default}")
        return default
    text = raw.strip()
    if text == "0":
        return auto
    value = whole_number(text, minimum=1, maximum=_MAX_SETTING)  # the common case, without building the error's wording
    return value if value is not None else parse_positive_int(text, what=f"env {name}", limit=_MAX_SETTING)


def _flash_setting(env: Mapping[str, str | None], injected: bool, notes: list[str]) -> bool:
    """OLLAMA_FLASH_ATTENTION as Ollama reads it (envconfig `BoolWithDefault`, `Var`: spaces and quotes
    trimmed): absent -> what the mutating webhook injects; empty -> unset, i.e. llama.cpp's `auto`,
    which the guard cannot be sure of (off); `valueFrom` -> off, with a note."""
    if ENV_FLASH not in env:
        return injected
    raw = env[ENV_FLASH]
    if raw is None:
        notes.append(f"{ENV_FLASH} comes from valueFrom; estimated with flash attention off")
        return False
    text = raw.strip().strip("\"'")
    return bool(text) and text not in _FALSE


_MAX_SETTING = 1 << 21
_KV_TYPES: dict[str, KvCacheType] = {kind: kind for kind in KV_BYTES}
_KV_WIDTH: dict[KvCacheType, float] = {kind: num / den for kind, (num, den) in KV_BYTES.items()}


def _overhead(env: Mapping[str, str | None]) -> int:
    raw = env.get(ENV_GPU_OVERHEAD)
    if raw is None:
        return 0
    text = raw.strip()
    value = whole_number(text, maximum=(1 << 50) - 1)
    if value is not None:
        return value
    raise DeclarationError(f'env {ENV_GPU_OVERHEAD}="{text[:40]}" is invalid: use a whole number of bytes')


def resolve_models(catalog: Catalog, refs: tuple[str, ...]) -> tuple[list[tuple[str, ModelSpec]], list[str]]:
    known: list[tuple[str, ModelSpec]] = []
    unknown: list[str] = []
    for ref in refs:
        try:
            known.append((ref, catalog.resolve(ref)))
        except UnknownModelError:
            unknown.append(ref)
    return known, unknown


class _EstimateCache:
    """Pods of one workload repeat the same models and settings: estimate each combination once.

    Keyed by value (frozen inputs), bounded, and tied to one catalog (a different catalog resets it).
    """

    MAX = 4096

    def __init__(self) -> None:
        self._catalog: Catalog | None = None
        self._items: dict[tuple[object, ...], tuple[tuple[str, ...], tuple[str, ...], PodEstimate | None]] = {}

    def clear(self) -> None:
        self._catalog, self._items = None, {}

    def get(
        self, catalog: Catalog, refs: tuple[str, ...], settings: OllamaSettings, gpus: int, cluster: ClusterPolicy
    ) -> tuple[tuple[str, ...], tuple[str, ...], PodEstimate | None]:
        if catalog is not self._catalog or len(self._items) >= self.MAX:
            self._catalog, self._items = catalog, {}
        key = (
            refs,
            settings,
            gpus,
            cluster.cuda_context_overhead_mib,
            cluster.runner_overhead_mib,
            cluster.safety_margin,
        )
        found = self._items.get(key)
        if found is None:
            known, unknown = resolve_models(catalog, refs)
            estimate = (
                estimate_pod(
                    known,
                    settings,
                    gpus=gpus,
                    cuda_context_overhead_mib=cluster.cuda_context_overhead_mib,
                    runner_overhead_mib=cluster.runner_overhead_mib,
                    safety_margin=cluster.safety_margin,
                )
                if known
                else None
            )
            found = (tuple(spec.tag for _, spec in known), tuple(unknown), estimate)
            self._items[key] = found
        return found


_estimates = _EstimateCache()
_estimate = _estimates.get


class _DemandCache:
    """Replicas of one workload are the same pod: compute each distinct pod's demand once.

    The key holds every input `demand_of` reads (the pod's declaration annotations, each
    container's role, commands and env, its GPU count, the namespace's three caps and whether the
    guard injects flash attention); the cache is bounded and tied to one cluster policy and catalog
    (which hold the rest: overheads, margin, model specs). Declaration errors are not cached. A pod
    admitted by `/mutate` is validated next with the same inputs, so its `/validate` hits.
    """

    MAX = 4096

    def __init__(self) -> None:
        self._owner: tuple[ClusterPolicy, Catalog] | None = None
        self._items: dict[tuple[object, ...], PodDemand] = {}

    def clear(self) -> None:
        self._owner, self._items = None, {}

    def get(self, pod: PodFacts, ns: NamespacePolicy, cluster: ClusterPolicy, catalog: Catalog) -> PodDemand:
        owner = self._owner
        if owner is None or owner[0] is not cluster or owner[1] is not catalog or len(self._items) >= self.MAX:
            self._owner, self._items = (cluster, catalog), {}
        ann = pod.annotations
        key = (
            pod.is_ollama,
            pod.gpus,
            ann.get(ANN_MODELS),
            ann.get(ANN_VRAM),
            ann.get(ANN_CONTEXT),
            ns.context_length,
            ns.num_parallel,
            ns.max_loaded_models,
            ns.flash_attention,
            pod.vram_mib,
            tuple((c.init, c.is_ollama, c.commands, tuple(c.env.items())) for c in pod.containers),
        )
        found = self._items.get(key)
        if found is None:
            found = self._items[key] = demand_of(pod, ns=ns, cluster=cluster, catalog=catalog)
        return found


_demands = _DemandCache()


def clear_caches() -> None:
    """Forget every remembered demand and estimate (benchmarks time the computation itself)."""
    _demands.clear()
    _estimates.clear()


def compute_demand(pod: PodFacts, *, ns: NamespacePolicy, cluster: ClusterPolicy, catalog: Catalog) -> PodDemand:
    """The pod's demand; raises DeclarationError for what the author must fix (unknown models…).

    Memoised per distinct pod (`_DemandCache`); `demand_of` is the computation itself.
    """
    return _demands.get(pod, ns, cluster, catalog)


def demand_of(pod: PodFacts, *, ns: NamespacePolicy, cluster: ClusterPolicy, catalog: Catalog) -> PodDemand:
    """The pod's demand, computed (see `compute_demand`): at least its own `ollama-guard.io/vram-mib`
    request (design §14: a pod that requests more than the guard computes holds what it requests)."""
    decl = read_declaration(pod)
    demand = partial(_at_least_requested, pod.vram_mib, decl)
    if not pod.is_ollama:
        if decl.vram_mib is not None:
            return demand("declared", decl.vram_mib)
        return demand("default", cluster.default_tenant_vram_mib)
    settings, notes = read_settings(pod, ns, context_hint=decl.context_length)
    _, unknown, estimate = _estimate(catalog, decl.models, settings, max(pod.gpus, 1), cluster)
    if unknown and decl.vram_mib is None:
        raise DeclarationError(
            f"unknown model{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}: "
            "not in the guard's catalog. Declare the pod's VRAM with the annotation "
            'ollama-guard.io/vram (e.g. "24Gi"), or ask an admin to add the model to the catalog overlay'
        )
    if not decl.models:
        if decl.vram_mib is not None:
            return demand("declared", decl.vram_mib, settings, None, notes)
        notes = (*notes, "no models declared: counted as one replica's even share of the node")
        return demand("default", cluster.default_tenant_vram_mib, settings, None, notes)
    if decl.vram_mib is None:
        assert estimate is not None  # every model is known here
        return demand("estimate", estimate.demand_mib, settings, estimate, notes)
    if estimate is None:
        return demand("declared", decl.vram_mib, settings, None, notes)
    if unknown:
        notes = (*notes, f"estimate covers known models only; unknown: {', '.join(unknown)}")
    return demand("max(declared, estimate)", max(decl.vram_mib, estimate.demand_mib), settings, estimate, notes)


def _at_least_requested(
    requested_mib: int,
    decl: Declaration,
    source: DemandSource,
    demand_mib: int | None,
    settings: OllamaSettings | None = None,
    estimate: PodEstimate | None = None,
    notes: tuple[str, ...] = (),
) -> PodDemand:
    """The demand `source` gives, raised to the pod's own request when that is more (built once)."""
    if requested_mib <= 0:
        return PodDemand(decl, source, demand_mib, settings, estimate, notes)
    raised = demand_mib is not None and requested_mib > demand_mib
    if raised:
        return PodDemand(decl, "requested (ollama-guard.io/vram-mib)", requested_mib, settings, estimate, notes,
                         requested_mib)
    return PodDemand(decl, source, demand_mib, settings, estimate, notes, requested_mib)
