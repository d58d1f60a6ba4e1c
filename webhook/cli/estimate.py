"""`ollama-guard estimate`: the VRAM an Ollama pod serving some models needs (design §5, §5.1), term by
term with where each number comes from (`webhook.core.breakdown`), the driver cap the mutating webhook
would set on its Ollama containers (design §8: `NVIDIA_GPU_MEMORY_LIMIT` and
`NVIDIA_GPU_MEMORY_REQUEST`, MiB per GPU), and `version`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from webhook import __version__
from webhook.cli.app import PolicyOpt, app, fail, settings_and_catalog
from webhook.core.breakdown import Term, explain_model, explain_pod
from webhook.core.catalog import ModelSpec, UnknownModelError
from webhook.core.drivercap import ENV_LIMIT, ENV_REQUEST, MAX_CAP_MIB
from webhook.core.estimate import MIB, KvCacheType, OllamaSettings, PodEstimate, estimate_pod, model_demand_mib
from webhook.core.quantity import format_mib


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def estimate(
    models: Annotated[list[str], typer.Argument(help="Ollama model references, e.g. llama3.1:8b")],
    context: Annotated[int | None, typer.Option(help="OLLAMA_CONTEXT_LENGTH (default: policy, 8192)", min=1)] = None,
    parallel: Annotated[int | None, typer.Option(help="OLLAMA_NUM_PARALLEL (default: policy, 1)", min=1)] = None,
    max_loaded: Annotated[int | None, typer.Option(help="OLLAMA_MAX_LOADED_MODELS per GPU (default 1)", min=1)] = None,
    kv_cache_type: Annotated[str, typer.Option(help="OLLAMA_KV_CACHE_TYPE: f16, q8_0 or q4_0")] = "f16",
    flash_attention: Annotated[
        bool | None, typer.Option(help="OLLAMA_FLASH_ATTENTION (default: the policy's flash_attention, on)")
    ] = None,
    gpu_overhead: Annotated[int, typer.Option(help="OLLAMA_GPU_OVERHEAD in bytes", min=0)] = 0,
    gpus: Annotated[int, typer.Option(help="GPUs requested by the pod", min=1)] = 1,
    safety_margin: Annotated[
        float | None,
        typer.Option(
            "--safety-margin", metavar="FRACTION", help="e.g. 0.1 for +10% (default: the policy's, 0.10)", min=0, max=10
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    policy: PolicyOpt = None,
) -> None:
    """Estimate the VRAM an Ollama pod serving MODELS needs (design §5), term by term."""
    settings, catalog = settings_and_catalog(policy)
    cluster = settings.cluster_policy()
    kv = kv_cache_type.strip().lower()
    if kv not in ("f16", "q8_0", "q4_0"):
        raise fail(f"--kv-cache-type {kv_cache_type!r}: use f16, q8_0 or q4_0")
    kv_type: KvCacheType = kv  # type: ignore[assignment]  # checked just above
    ollama = OllamaSettings(
        context_length=context or cluster.context_length,
        num_parallel=parallel or cluster.num_parallel,
        max_loaded_models=max_loaded or cluster.max_loaded_models,
        kv_cache_type=kv_type,
        flash_attention=flash_attention if flash_attention is not None else cluster.flash_attention,
        gpu_overhead_bytes=gpu_overhead,
    )
    try:
        specs = [(m, catalog.resolve(m)) for m in models]
    except UnknownModelError as exc:
        raise fail(str(exc).strip("'\"")) from None
    result = estimate_pod(
        specs,
        ollama,
        gpus=gpus,
        cuda_context_overhead_mib=cluster.cuda_context_overhead_mib,
        runner_overhead_mib=cluster.runner_overhead_mib,
        safety_margin=cluster.safety_margin if safety_margin is None else safety_margin,
    )
    cap = driver_cap_mib(result) if cluster.driver_memory_limit else None
    spec_list = [spec for _, spec in specs]
    if as_json:
        typer.echo(json.dumps(estimate_json(result, cap_mib=cap, specs=spec_list), indent=2))
    else:
        print_estimate(result, cap_mib=cap, specs=spec_list)


def driver_cap_mib(result: PodEstimate) -> int:
    """The cap per GPU the mutating webhook sets for this estimate: the demand / GPUs, rounded up."""
    return min(-(-result.demand_mib // max(result.gpus, 1)), MAX_CAP_MIB)


def _terms(terms: tuple[Term, ...]) -> list[dict[str, Any]]:
    return [{"term": t.name, "bytes": t.bytes, "mib": round(t.bytes / MIB, 1), "source": t.source} for t in terms]


def estimate_json(
    result: PodEstimate, *, cap_mib: int | None = None, specs: list[ModelSpec] | None = None
) -> dict[str, Any]:
    """The estimate as JSON; `driver_cap_mib` is null when the policy's `driver_memory_limit` is off.
    With `specs` (the resolved catalog entries, in the models' order) each model lists its terms."""
    s = result.settings
    models = []
    for i, m in enumerate(result.models):
        row: dict[str, Any] = {
            "requested": m.requested,
            "tag": m.tag,
            "context": m.context,
            "flash_attention": m.flash_attention,
            "kv_cache_type": m.kv_type,
            "weights_bytes": m.weights_bytes,
            "kv_cache_bytes": m.kv_bytes,
            "graph_bytes": m.graph_bytes,
            "headroom_bytes": m.headroom_bytes,
            "runner_bytes": m.runner_bytes,
            "total_bytes": m.total_bytes,
            "total_mib": model_demand_mib(m),
        }
        if specs is not None:
            row["catalog_source"] = specs[i].source
            row["terms"] = _terms(explain_model(specs[i], m, s))
        models.append(row)
    return {
        "models": models,
        "loaded_models": [m.tag for m in result.loaded_models],
        "settings": {
            "context_length": s.context_length,
            "num_parallel": s.num_parallel,
            "max_loaded_models": s.max_loaded_models,
            "kv_cache_type": s.effective_kv_type,
            "flash_attention": s.flash_attention,
            "gpu_overhead_bytes": s.gpu_overhead_bytes,
            "gpus": result.gpus,
        },
        "pod_terms": _terms(explain_pod(result)),
        "cuda_context_overhead_mib": result.cuda_overhead_bytes // MIB,
        "safety_margin": result.safety_margin,
        "demand_mib": result.demand_mib,
        "demand_gib": round(result.demand_mib / 1024, 2),
        "driver_cap_mib": cap_mib,
    }


def print_estimate(result: PodEstimate, *, cap_mib: int | None = None, specs: list[ModelSpec] | None = None) -> None:
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a pipe or a file: no terminal to fit, keep the table whole
    table = Table(title="Per-model VRAM (design §5, §5.1)", title_justify="left")
    for col in ("model", "context", "weights", "KV cache", "compute", "headroom", "runner", "total"):
        table.add_column(col, justify="left" if col == "model" else "right")
    loaded = {id(m) for m in result.loaded_models}
    for m in result.models:
        name = m.tag if m.requested == m.tag else f"{m.requested} → {m.tag}"
        parts = (m.weights_bytes, m.kv_bytes, m.graph_bytes, m.headroom_bytes, m.runner_bytes)
        table.add_row(
            name + ("" if id(m) in loaded else " (not co-resident)"),
            str(m.context),
            *(format_mib(b / MIB) for b in parts),
            format_mib(model_demand_mib(m)),
        )
    out.print(table)
    for i, m in enumerate(result.models if specs is not None else ()):
        assert specs is not None
        source = f" (catalog: {specs[i].source})" if specs[i].source else ""
        out.print(f"[bold]{m.tag}[/]{source}", highlight=False, soft_wrap=True)
        for term in explain_model(specs[i], m, result.settings):
            line = f"  {term.name:<9} {format_mib(term.bytes / MIB):>9}  {term.source}"
            out.print(line, highlight=False, soft_wrap=True)
    s = result.settings
    out.print(
        f"loaded at once: {result.loaded} of {len(result.models)} (OLLAMA_MAX_LOADED_MODELS={s.max_loaded_models} × "
        f"{result.gpus} GPU); parallel {s.num_parallel}; KV cache {s.effective_kv_type}; "
        f"flash attention {'on' if s.flash_attention else 'off'} (OLLAMA_FLASH_ATTENTION); "
        f"+ {s.gpu_overhead_bytes} B GPU overhead + {result.cuda_overhead_bytes // MIB} MiB per-pod overhead; "
        f"× {1 + result.safety_margin:.2f} margin (safety_margin {result.safety_margin:g})",
        highlight=False,
        soft_wrap=True,
    )
    out.print(f"[bold]pod demand: {result.demand_mib} MiB ({result.demand_mib / 1024:.2f} GiB)[/]", highlight=False)
    if cap_mib is None:
        out.print("driver VRAM cap: off (policy driver_memory_limit)", highlight=False)
    else:
        per = f", on each of its {result.gpus} GPUs" if result.gpus > 1 else ""
        out.print(
            f"driver VRAM cap: {ENV_LIMIT}={cap_mib} {ENV_REQUEST}={cap_mib} (MiB{per}; "
            "enforced by NVIDIA driver R615+ with container toolkit 1.20.1+)",
            highlight=False,
            soft_wrap=True,
        )
