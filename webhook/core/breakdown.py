"""Where each number of an estimate comes from: one line per term of a model's runner process, in
words a user can check against the catalog, the pod's settings and design §5.1.

Pure: a `ModelSpec` and the `ModelEstimate` made from it in, `Term`s out (`explain_model`);
`explain_pod` does the same for the pod-level additions. The CLI prints them; nothing here decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.core.catalog import ModelSpec
from webhook.core.estimate import (
    FA_HEADROOM_BYTES,
    KV_BYTES,
    MIB,
    NOFA_HEADROOM_BASE_BYTES,
    ModelEstimate,
    OllamaSettings,
    PodEstimate,
    activation_bytes,
    attention_layers,
    ffn_width,
    kv_cells,
    supports_flash_attention,
)
from webhook.core.quantity import format_mib

RUNNER_SOURCE = "policy runner_overhead: the runner process's CUDA context + cuBLAS (design §5.1, ≈ 589 MiB)"


@dataclass(frozen=True, slots=True)
class Term:
    """One addend of a demand and the reasoning behind its figure."""

    name: str
    bytes: int
    source: str


def explain_model(spec: ModelSpec, est: ModelEstimate, settings: OllamaSettings) -> tuple[Term, ...]:
    """The five terms of one runner process (`est.total_bytes` is their sum) under the pod's settings."""
    return (
        Term("weights", est.weights_bytes, _weights(spec, est)),
        Term("KV cache", est.kv_bytes, _kv(spec, est, settings)),
        Term("compute", est.graph_bytes, _compute(spec, est)),
        Term("headroom", est.headroom_bytes, _headroom(spec, est)),
        Term("runner", est.runner_bytes, RUNNER_SOURCE),
    )


def explain_pod(est: PodEstimate) -> tuple[Term, ...]:
    """What the pod adds to its loaded models, before the margin."""
    s = est.settings
    return (
        Term("OLLAMA_GPU_OVERHEAD", s.gpu_overhead_bytes, "the pod's env (bytes; 0 when unset)"),
        Term(
            "per-pod overhead",
            est.cuda_overhead_bytes,
            "policy cuda_context_overhead (default 0: the Ollama server holds no CUDA context of its own)",
        ),
    )


def _weights(spec: ModelSpec, est: ModelEstimate) -> str:
    size = f"{spec.size_bytes:,} B"
    if spec.size_rounded:
        size += " (the upper end of the library's rounded size)"
    if spec.derived:
        size += f" (scaled to {spec.quantization} by bits per weight)"
    _, how = spec.host_token_embd()
    if not est.host_bytes:
        return f"catalog file size {size}; {how}"
    return f"catalog file size {size} − token_embd {format_mib(est.host_bytes / MIB)} kept in host memory ({how})"


def _kv(spec: ModelSpec, est: ModelEstimate, settings: OllamaSettings) -> str:
    num, den = KV_BYTES[est.kv_type]
    per = f"{num}/{den}" if den > 1 else str(num)
    full, windowed = attention_layers(spec)
    layers = f"{full} layers × {kv_cells(est.context)} cells"
    if windowed:
        window = min(kv_cells(est.context), kv_cells(spec.sliding_window + est.ubatch))
        layers += f" + {windowed} sliding-window layers × {window} cells (window {spec.sliding_window} + {est.ubatch})"
    fell_back = settings.kv_cache_type != est.kv_type
    why = f"; {settings.kv_cache_type} needs flash attention, off for this model" if fell_back else ""
    return (
        f"{est.parallel} parallel × ({layers}) × {spec.kv_heads} KV heads × "
        f"({spec.head_dim} + {spec.v_head_dim}) × {per} B ({est.kv_type}{why})"
    )


def _compute(spec: ModelSpec, est: ModelEstimate) -> str:
    activations = format_mib(activation_bytes(spec, ubatch=est.ubatch) / MIB)
    ffn = f"FFN {ffn_width(spec)}" + ("" if spec.feed_forward_length else " assumed 6 × embedding")
    if est.flash_attention:
        dequantised = " + one layer's K and V in f16" if est.kv_type != "f16" else ""
        return (
            f"flash attention on: activations {activations} (ubatch {est.ubatch}, {ffn}) + the f16 mask "
            f"{est.ubatch} × {kv_cells(est.context)} × 2 B{dequantised}"
        )
    return f"flash attention off ({_why_off(spec)}): the §5 graph formula, at least the flash-attention figure"


def _headroom(spec: ModelSpec, est: ModelEstimate) -> str:
    pool = f"CUDA pool max({format_mib(FA_HEADROOM_BYTES / MIB)}, 2 × {est.ubatch} × FFN {ffn_width(spec)} B)"
    if est.flash_attention:
        return f"a full prompt with flash attention: {pool} (measured 12 MiB, design §5.1)"
    return (
        f"a full prompt without flash attention: {pool} + {format_mib(NOFA_HEADROOM_BASE_BYTES / MIB)} "
        f"+ 2 × {est.ubatch} × {est.context} × {spec.heads} heads B (measured +226 MiB at 4,080 tokens, design §5.1)"
    )


def _why_off(spec: ModelSpec) -> str:
    if supports_flash_attention(spec):
        return "OLLAMA_FLASH_ATTENTION is not on"
    if spec.embedding:
        return "Ollama never uses it for embedding models"
    if spec.v_head_dim != spec.head_dim:
        return "K and V head dims differ"
    return f"Ollama never uses it for {spec.architecture}"
