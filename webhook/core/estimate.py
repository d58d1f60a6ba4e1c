"""VRAM demand of one model and of one Ollama pod, with an explainable breakdown (design §5, §5.1).

Ollama 0.33+ runs every loaded model in its own llama.cpp `llama-server` process. What one such
process holds on the GPU, term by term (design §5.1 holds the measurements the constants come from):

  weights   the file's tensors minus the token embedding llama.cpp keeps in host memory
  KV cache  cells × parallel × Σ layers H_kv × (d_k + d_v) × bytes per element; a sliding-window
            layer holds its window + one micro-batch of cells, the other layers the context
  compute   flash attention on: activations 4·ub·(3F + 4A) + the f16 mask ub × c × 2 (+ one layer's
            K and V in f16 when the KV cache is quantised); off: the §5 graph formula
  headroom  what the process grows by while it works through a prompt that fills the context
  runner    the fixed cost of a runner process, CUDA context + cuBLAS (policy, default 589 MiB)

pod demand = (Σ of the k largest model demands + OLLAMA_GPU_OVERHEAD + per-pod overhead)
             × (1 + safety margin),  k = min(OLLAMA_MAX_LOADED_MODELS × GPUs, #models)

Flash attention counts as on for a model only where that is certain (`flash_attention_for`): the
pod's OLLAMA_FLASH_ATTENTION is on and Ollama's own rule lets the model use it; a quantised KV
cache needs it. All arithmetic is in integer bytes; the pod demand is rounded up to whole MiB. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

from webhook.core.catalog import ModelSpec

MIB = 1 << 20
KvCacheType = Literal["f16", "q8_0", "q4_0"]
#: bytes per K/V element as (numerator, denominator): the block formats carry an f16 scale per 32
#: values (q8_0: 32 + 2 bytes, q4_0: 16 + 2 bytes per block; §5.1 measured 2,176 MiB for q8_0)
KV_BYTES: dict[KvCacheType, tuple[int, int]] = {"f16": (2, 1), "q8_0": (34, 32), "q4_0": (18, 32)}
#: llama.cpp's micro-batch: Ollama's `num_batch` default (§5.1 measured `-b 512 -ub 512`)
UBATCH = 512
#: llama.cpp pads each KV cache stream to a multiple of 256 cells (src/llama-context.cpp; the
#: sliding-window cache likewise, src/llama-kv-cache-iswa.cpp)
KV_PAD = 256
#: flash attention on: once a prompt has run, the process is 12 MiB above its buffers + runner cost
#: in every §5.1 flash-attention row (600.5 − 588.5 MiB): the CUDA pool's copies of activations.
#: 16 MiB, or 2·ub·F bytes for wider FFNs than llama3.1:8b's (14 MiB there)
FA_HEADROOM_BYTES = 16 * MIB
#: flash attention off, on top of that: the process grows with the prompt (§5.1: +226 MiB at 4,080
#: tokens, +350 at 8,176) by the f16 copy of softmax(KQ) cuBLAS multiplies, 2·ub·c·heads bytes (128
#: and 256 MiB there), and a fixed 98 MiB; with the 4 MiB the §5 graph formula falls short of the
#: measured buffers (296 vs 300, 560 vs 564) that is 102, covered by 16 + 96
NOFA_HEADROOM_BASE_BYTES = 96 * MIB
#: FFN width when the catalog lacks it: 6 × embedding, above the widest dense ratio the catalog
#: lists (qwen2.5:1.5b, 8960 / 1536 = 5.8)
DEFAULT_FFN_RATIO = 6
#: the runner's fixed cost (§5.1: bare CUDA context 518 MiB, with cuBLAS 586, ≈ 589 per process);
#: the default of the policy's `runner_overhead`
RUNNER_OVERHEAD_MIB = 589
#: architectures Ollama never runs with flash attention (fs/ggml/ggml.go `SupportsFlashAttention`)
_NO_FLASH_ARCHITECTURES = frozenset({"gemma2"})


class OllamaSettings(NamedTuple):
    """The Ollama server settings an estimate assumes (its env after mutation). A named tuple
    rather than a frozen dataclass, as the estimate types below: one of each is built per
    estimate, and a frozen dataclass's `__init__` costs ~0.3 µs a field (issue 17)."""

    context_length: int = 8192
    num_parallel: int = 1
    max_loaded_models: int = 1
    kv_cache_type: KvCacheType = "f16"
    flash_attention: bool = False
    gpu_overhead_bytes: int = 0

    @property
    def effective_kv_type(self) -> KvCacheType:
        """The KV cache type of a model that can use flash attention: quantised only with it on."""
        return self.kv_cache_type if self.flash_attention else "f16"


class ModelEstimate(NamedTuple):
    """One runner process: the terms of its VRAM and the assumptions behind them."""

    requested: str
    tag: str
    context: int
    weights_bytes: int
    kv_bytes: int
    graph_bytes: int
    runner_bytes: int
    headroom_bytes: int = 0
    parallel: int = 1
    flash_attention: bool = False
    kv_type: KvCacheType = "f16"
    ubatch: int = UBATCH
    #: the token embedding llama.cpp keeps in host memory (not counted)
    host_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.graph_bytes + self.headroom_bytes + self.runner_bytes


class PodEstimate(NamedTuple):
    """A pod's demand: its runners, how many may be loaded at once, and the rounded total."""

    models: tuple[ModelEstimate, ...]
    loaded: int
    gpus: int
    settings: OllamaSettings
    #: the per-pod overhead (policy `cuda_context_overhead`)
    cuda_overhead_bytes: int
    safety_margin: float
    demand_mib: int

    @property
    def loaded_models(self) -> tuple[ModelEstimate, ...]:
        """The k largest models: the ones that may be resident at the same time."""
        return tuple(sorted(self.models, key=lambda m: m.total_bytes, reverse=True)[: self.loaded])


def supports_flash_attention(spec: ModelSpec) -> bool:
    """Ollama's model rule (fs/ggml/ggml.go `SupportsFlashAttention`): not an embedding model (it
    has `<arch>.pooling_type`), not gemma2, equal K and V head dims."""
    return not spec.embedding and spec.architecture not in _NO_FLASH_ARCHITECTURES and spec.v_head_dim == spec.head_dim


def flash_attention_for(spec: ModelSpec, settings: OllamaSettings) -> bool:
    """Whether the model's runner certainly uses flash attention (llm/server.go: the user's setting,
    gated by the GPU and by `SupportsFlashAttention`; the GPU gate is the policy's to vouch for)."""
    return settings.flash_attention and supports_flash_attention(spec)


def kv_type_for(spec: ModelSpec, settings: OllamaSettings) -> KvCacheType:
    """Ollama quantises the KV cache only when flash attention is on for the model."""
    return settings.kv_cache_type if flash_attention_for(spec, settings) else "f16"


def ubatch_for(spec: ModelSpec, context: int) -> int:
    """llama.cpp's micro-batch: 512, the context when smaller; an embedding model's whole context
    (llm/server.go sets its batch to num_ctx)."""
    return context if spec.embedding else min(context, UBATCH)


def kv_cells(context: int) -> int:
    return -(-context // KV_PAD) * KV_PAD


def attention_layers(spec: ModelSpec) -> tuple[int, int]:
    """(full-attention layers, sliding-window layers): every `sliding_window_pattern`-th layer is full
    (llama.cpp `set_swa_pattern`: gemma3 5 of 6 windowed, gemma2 and gpt-oss every other)."""
    if not spec.sliding_window:
        return spec.layers, 0
    full = spec.layers // spec.sliding_window_pattern
    return full, spec.layers - full


def kv_cache_bytes(
    spec: ModelSpec, *, context: int, parallel: int, kv_type: KvCacheType, ubatch: int = UBATCH
) -> int:
    """cells × parallel × Σ layers H_kv × (d_k + d_v) × bytes per element (each slot its own stream)."""
    num, den = KV_BYTES[kv_type]
    full, windowed = attention_layers(spec)
    cells = kv_cells(context)
    window = min(cells, kv_cells(spec.sliding_window + ubatch)) if windowed else 0
    row = spec.kv_heads * (spec.head_dim + spec.v_head_dim)
    return -(-parallel * row * (full * cells + windowed * window) * num // den)


def ffn_width(spec: ModelSpec) -> int:
    """The FFN width one token activates (all its experts' for a mixture of experts)."""
    return (spec.feed_forward_length or DEFAULT_FFN_RATIO * spec.embedding_length) * max(spec.expert_used_count, 1)


def activation_bytes(spec: ModelSpec, *, ubatch: int) -> int:
    """The compute buffer's context-independent part, f32 activations of one micro-batch: three
    FFN-wide tensors (gate, up, their product) and four attention-wide ones (§5.1: ≈ 108 MiB for
    llama3.1:8b; this gives 116). A mixture of experts widens the FFN by its experts per token
    and adds the routed copies of the input and the router's logits."""
    attention = max(spec.embedding_length, spec.heads * spec.head_dim)
    routed = spec.expert_used_count * spec.embedding_length + spec.expert_count
    return 4 * ubatch * (3 * ffn_width(spec) + 4 * attention + routed)


def graph_bytes(
    spec: ModelSpec, *, context: int, flash_attention: bool = False, kv_type: KvCacheType = "f16", ubatch: int = 0
) -> int:
    """The compute buffer, one function for every architecture.

    Flash attention on: activations + the f16 mask ub × c × 2 (+ ub × window × 2 for windowed
    layers), + one layer's K and V in f16 when the cache is quantised (§5.1: 52 MiB at 32,768 for
    q8_0; this gives 128). Off: the §5 formula max(4·ub·(1 + 4E + c·(1 + heads)), 4·ub·(E + vocab))
    (matches §5.1's 300 and 564 MiB within 4), never below the flash-attention figure."""
    ub = ubatch or ubatch_for(spec, context)
    cells = kv_cells(context)
    _, windowed = attention_layers(spec)
    mask = ub * cells * 2 + (ub * min(cells, kv_cells(spec.sliding_window + ub)) * 2 if windowed else 0)
    dequantised = cells * spec.kv_heads * (spec.head_dim + spec.v_head_dim) * 2 if kv_type != "f16" else 0
    flash = activation_bytes(spec, ubatch=ub) + mask + dequantised
    if flash_attention:
        return flash
    E = spec.embedding_length
    attention = 4 * ub * (1 + 4 * E + context * (1 + spec.heads))
    output = 4 * ub * (E + spec.vocab_size)
    return max(attention, output, flash)


def headroom_bytes(spec: ModelSpec, *, context: int, flash_attention: bool, ubatch: int = 0) -> int:
    """What the process grows by while it processes a full-context prompt (§5.1)."""
    ub = ubatch or ubatch_for(spec, context)
    pool = max(FA_HEADROOM_BYTES, 2 * ub * ffn_width(spec))
    if flash_attention:
        return pool
    return pool + NOFA_HEADROOM_BASE_BYTES + 2 * ub * context * spec.heads


def gpu_weights_bytes(spec: ModelSpec) -> int:
    """The file's bytes minus the token embedding llama.cpp keeps in host memory (§5.1: 281.8 MiB
    of llama3.1:8b's 4,685 MiB of tensors stay on the host)."""
    return max(spec.size_bytes - spec.host_token_embd_bytes(), 0)


def estimate_model(
    spec: ModelSpec,
    settings: OllamaSettings,
    *,
    requested: str = "",
    runner_overhead_mib: int = RUNNER_OVERHEAD_MIB,
) -> ModelEstimate:
    context = min(settings.context_length, spec.context_length)
    flash = flash_attention_for(spec, settings)
    kv_type = settings.kv_cache_type if flash else "f16"  # `kv_type_for`, without asking twice
    ubatch = ubatch_for(spec, context)
    host = spec.host_token_embd_bytes()
    return ModelEstimate(
        requested=requested or spec.tag,
        tag=spec.tag,
        context=context,
        weights_bytes=max(spec.size_bytes - host, 0),  # `gpu_weights_bytes`
        kv_bytes=kv_cache_bytes(spec, context=context, parallel=settings.num_parallel, kv_type=kv_type, ubatch=ubatch),
        graph_bytes=graph_bytes(spec, context=context, flash_attention=flash, kv_type=kv_type, ubatch=ubatch),
        runner_bytes=runner_overhead_mib * MIB,
        headroom_bytes=headroom_bytes(spec, context=context, flash_attention=flash, ubatch=ubatch),
        parallel=settings.num_parallel,
        flash_attention=flash,
        kv_type=kv_type,
        ubatch=ubatch,
        host_bytes=host,
    )


def estimate_pod(
    specs: Sequence[tuple[str, ModelSpec]],
    settings: OllamaSettings,
    *,
    gpus: int = 1,
    cuda_context_overhead_mib: int = 0,
    runner_overhead_mib: int = RUNNER_OVERHEAD_MIB,
    safety_margin: float = 0.10,
) -> PodEstimate:
    """Pod demand for the given (requested reference, resolved spec) pairs."""
    models = tuple(
        estimate_model(spec, settings, requested=ref, runner_overhead_mib=runner_overhead_mib) for ref, spec in specs
    )
    loaded = min(settings.max_loaded_models * max(gpus, 1), len(models))
    largest = sorted((m.total_bytes for m in models), reverse=True)[:loaded]
    cuda = cuda_context_overhead_mib * MIB
    base = sum(largest) + settings.gpu_overhead_bytes + cuda
    # Exact rational margin: round the margin to 1e-6 so float noise never flips a MiB.
    margin_ppm = round(safety_margin * 1_000_000)
    total = -(-base * (1_000_000 + margin_ppm) // 1_000_000)
    return PodEstimate(
        models=models,
        loaded=loaded,
        gpus=max(gpus, 1),
        settings=settings,
        cuda_overhead_bytes=cuda,
        safety_margin=safety_margin,
        demand_mib=-(-total // MIB),
    )


def model_demand_mib(estimate: ModelEstimate) -> int:
    return -(-estimate.total_bytes // MIB)
