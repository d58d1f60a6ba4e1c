"""VRAM demand of one model and of one Ollama pod, with an explainable breakdown (design §5).

model demand = weights + KV cache + compute graph + runner minimum
pod demand   = (sum of the k largest model demands + OLLAMA_GPU_OVERHEAD + CUDA context)
               × (1 + safety margin),  k = min(OLLAMA_MAX_LOADED_MODELS × GPUs, #models)

All arithmetic is in integer bytes; the pod demand is rounded up to whole MiB. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from webhook.core.catalog import ModelSpec

MIB = 1 << 20
RUNNER_MINIMUM_BYTES = 457 * MIB
KvCacheType = Literal["f16", "q8_0", "q4_0"]
#: bytes per K/V element, as a fraction (numerator, denominator) to stay exact.
KV_BYTES: dict[KvCacheType, tuple[int, int]] = {"f16": (2, 1), "q8_0": (1, 1), "q4_0": (1, 2)}
GRAPH_BATCH = 512


@dataclass(frozen=True, slots=True)
class OllamaSettings:
    """The Ollama server settings an estimate assumes (its env after mutation)."""

    context_length: int = 8192
    num_parallel: int = 1
    max_loaded_models: int = 1
    kv_cache_type: KvCacheType = "f16"
    flash_attention: bool = False
    gpu_overhead_bytes: int = 0

    @property
    def effective_kv_type(self) -> KvCacheType:
        """Ollama quantises the KV cache only with flash attention on."""
        return self.kv_cache_type if self.flash_attention else "f16"


@dataclass(frozen=True, slots=True)
class ModelEstimate:
    requested: str
    tag: str
    context: int
    weights_bytes: int
    kv_bytes: int
    graph_bytes: int
    runner_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.graph_bytes + self.runner_bytes


@dataclass(frozen=True, slots=True)
class PodEstimate:
    models: tuple[ModelEstimate, ...]
    loaded: int
    gpus: int
    settings: OllamaSettings
    cuda_overhead_bytes: int
    safety_margin: float
    demand_mib: int

    @property
    def loaded_models(self) -> tuple[ModelEstimate, ...]:
        """The k largest models: the ones that may be resident at the same time."""
        return tuple(sorted(self.models, key=lambda m: m.total_bytes, reverse=True)[: self.loaded])


def kv_cache_bytes(spec: ModelSpec, *, context: int, parallel: int, kv_type: KvCacheType) -> int:
    """c × parallel × L × H_kv × d × 2 (K and V) × bytes per element."""
    num, den = KV_BYTES[kv_type]
    return context * parallel * spec.layers * spec.kv_heads * spec.head_dim * 2 * num // den


def graph_bytes(spec: ModelSpec, *, context: int) -> int:
    """Compute-graph scratch for llama-style models (design §5), used for every architecture.

    max(4·batch·(1 + 4E + c·(1 + heads)), 4·batch·(E + vocab)), batch = min(c, 512). Ollama's
    per-architecture figures are at or below this for the catalog's models, so it errs safe.
    """
    batch = min(context, GRAPH_BATCH)
    attention = 4 * batch * (1 + 4 * spec.embedding_length + context * (1 + spec.heads))
    output = 4 * batch * (spec.embedding_length + spec.vocab_size)
    return max(attention, output)


def estimate_model(spec: ModelSpec, settings: OllamaSettings, *, requested: str = "") -> ModelEstimate:
    context = min(settings.context_length, spec.context_length)
    return ModelEstimate(
        requested=requested or spec.tag,
        tag=spec.tag,
        context=context,
        weights_bytes=spec.size_bytes,
        kv_bytes=kv_cache_bytes(
            spec, context=context, parallel=settings.num_parallel, kv_type=settings.effective_kv_type
        ),
        graph_bytes=graph_bytes(spec, context=context),
        runner_bytes=RUNNER_MINIMUM_BYTES,
    )


def estimate_pod(
    specs: Sequence[tuple[str, ModelSpec]],
    settings: OllamaSettings,
    *,
    gpus: int = 1,
    cuda_context_overhead_mib: int = 512,
    safety_margin: float = 0.10,
) -> PodEstimate:
    """Pod demand for the given (requested reference, resolved spec) pairs."""
    models = tuple(estimate_model(spec, settings, requested=ref) for ref, spec in specs)
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
