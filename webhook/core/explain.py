"""Human text for demands, fits and fixes: the words a pod's author reads in a denial.

Kept in one place so the webhook, the audit and the CLI say the same thing the same way. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from webhook.core.demand import PodDemand
from webhook.core.estimate import MIB, model_demand_mib
from webhook.core.ledger import Fit
from webhook.core.quantity import format_mib


def describe_demand(demand: PodDemand, *, even_share_mib: int | None = None) -> str:
    """E.g. '6.6 GiB (llama3.1:8b 6.0 GiB at context 8192 ×1 parallel; +10% margin)': each model's
    figure is its runner process (weights, KV cache, compute, its fixed cost); a per-pod overhead
    (policy `cuda_context_overhead`) is named only when there is one."""
    if demand.demand_mib is None:
        share = f"{format_mib(even_share_mib)} " if even_share_mib is not None else ""
        return f"{share}(no VRAM declared: one replica's even share of the GPU)".strip()
    total = format_mib(demand.demand_mib)
    if demand.estimate is None:
        return f"{total} (declared in ollama-guard.io/vram)"
    est = demand.estimate
    parts = [f"{m.tag} {format_mib(model_demand_mib(m))}" for m in est.loaded_models]
    settings = est.settings
    loaded = f"{est.loaded} of {len(est.models)} models loaded at once; " if len(est.models) > 1 else ""
    overhead = est.cuda_overhead_bytes // MIB
    pod_overhead = f"+ {format_mib(overhead)} per-pod overhead; " if overhead else ""
    detail = (
        f"{' + '.join(parts)} at context {settings.context_length} ×{settings.num_parallel} parallel; "
        f"{loaded}{pod_overhead}+{round(est.safety_margin * 100)}% margin"
    )
    if demand.source == "max(declared, estimate)":
        declared = demand.declaration.vram_mib or 0
        if declared >= est.demand_mib:
            return f"{total} (declared in ollama-guard.io/vram; the estimate is {format_mib(est.demand_mib)}: {detail})"
        detail += f"; the estimate is above the declared ollama-guard.io/vram of {format_mib(declared)}"
    return f"{total} ({detail})"


def describe_fit(fit: Fit) -> str:
    if fit.problem:
        return f"{fit.node}: {fit.problem}"
    text = f"{fit.node}: {format_mib(fit.free_mib)} free of {format_mib(fit.budget_mib)}"
    if fit.exceeds_gpu:
        text += f" (needs {format_mib(fit.per_gpu_mib)} per GPU, more than one GPU's {format_mib(fit.gpu_memory_mib)})"
    return text


def list_fits(fits: Sequence[Fit], *, limit: int = 8) -> str:
    shown = "; ".join(describe_fit(f) for f in sorted(fits, key=lambda f: -f.free_mib)[:limit])
    more = f"; and {len(fits) - limit} more node(s)" if len(fits) > limit else ""
    return shown + more


CAPACITY_FIX = (
    "Fix: use a smaller or more quantised model, lower OLLAMA_CONTEXT_LENGTH or OLLAMA_NUM_PARALLEL, "
    "or wait until other GPU tenants free VRAM"
)

NEVER_FIX = (
    "Fix: use a smaller or more quantised model, lower OLLAMA_CONTEXT_LENGTH or OLLAMA_NUM_PARALLEL, "
    "or run it where a larger GPU is (nodeSelector)"
)
