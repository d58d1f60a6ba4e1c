"""The VRAM estimator against design §5 and §5.1: the measured H200 table is the oracle; exact KV
bytes of the block formats; flash attention only where it is certain; monotone; never below its parts."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.core.catalog import load_catalog
from webhook.core.estimate import (
    FA_HEADROOM_BYTES,
    MIB,
    NOFA_HEADROOM_BASE_BYTES,
    RUNNER_OVERHEAD_MIB,
    OllamaSettings,
    activation_bytes,
    estimate_model,
    estimate_pod,
    flash_attention_for,
    gpu_weights_bytes,
    graph_bytes,
    headroom_bytes,
    kv_cache_bytes,
)
from webhook.core.policy import ClusterPolicy

CATALOG = load_catalog()
GIB = 1 << 30


def spec(tag: str):  # type: ignore[no-untyped-def]
    return CATALOG.resolve(tag)


# design §5.1: llama.cpp llama-server on an NVIDIA H200, a GGUF of exactly llama3.1:8b's Q4_K_M
# tensors, all layers on the GPU, -b 512 -ub 512; "process" is nvidia-smi's figure after a prompt
# that fills the context (MiB).
MEASURED_H200 = [
    pytest.param(4096, 1, False, "f16", 6030, id="4096x1-fa-off"),
    pytest.param(8192, 1, False, "f16", 6930, id="8192x1-fa-off"),
    pytest.param(8192, 1, True, "f16", 6144, id="8192x1-fa-on"),
    pytest.param(32768, 1, True, "f16", 9240, id="32768x1-fa-on"),
    pytest.param(8192, 4, True, "f16", 9216, id="8192x4-fa-on"),
    pytest.param(32768, 1, True, "q8_0", 7372, id="32768x1-fa-on-q8_0"),
    pytest.param(131072, 1, True, "f16", 21624, id="131072x1-fa-on"),
]


@pytest.mark.parametrize(("context", "parallel", "flash", "kv_type", "process_mib"), MEASURED_H200)
def test_the_measured_h200_table_is_met_within_ten_percent(
    context: int, parallel: int, flash: bool, kv_type: str, process_mib: int
) -> None:
    """Design §5.1 target: with safety margin 0, never below the measured process, at most 10 % above."""
    cluster = ClusterPolicy(safety_margin=0)
    ollama = OllamaSettings(
        context_length=context, num_parallel=parallel, flash_attention=flash, kv_cache_type=kv_type  # type: ignore[arg-type]
    )
    pod = estimate_pod(
        [("llama3.1:8b", spec("llama3.1:8b"))],
        ollama,
        cuda_context_overhead_mib=cluster.cuda_context_overhead_mib,
        runner_overhead_mib=cluster.runner_overhead_mib,
        safety_margin=cluster.safety_margin,
    )
    assert 1.00 <= pod.demand_mib / process_mib <= 1.10, pod


@pytest.mark.parametrize(
    ("context", "parallel", "flash", "kv_type", "kv_mib", "compute_mib"),
    [
        pytest.param(4096, 1, False, "f16", 512, 300, id="4096-off"),
        pytest.param(8192, 1, False, "f16", 1024, 564, id="8192-off"),
        pytest.param(8192, 1, True, "f16", 1024, 116, id="8192-on"),
        pytest.param(32768, 1, True, "f16", 4096, 140, id="32768-on"),
        pytest.param(8192, 4, True, "f16", 4096, 116, id="8192x4-on"),
        pytest.param(32768, 1, True, "q8_0", 2176, 192, id="32768-on-q8_0"),
        pytest.param(131072, 1, True, "f16", 16384, 236, id="131072-on"),
    ],
)
def test_each_term_against_the_measured_buffers(
    context: int, parallel: int, flash: bool, kv_type: str, kv_mib: int, compute_mib: int
) -> None:
    """KV exactly as measured; the compute buffer at most 4 MiB below (the §5 formula, flash off) and
    never more than 96 MiB above it; the GPU weights within 8 MiB above the measured 4,403.5 MiB."""
    ollama = OllamaSettings(
        context_length=context, num_parallel=parallel, flash_attention=flash, kv_cache_type=kv_type  # type: ignore[arg-type]
    )
    est = estimate_model(spec("llama3.1:8b"), ollama)
    assert est.kv_bytes == kv_mib * MIB
    assert -4 * MIB <= est.graph_bytes - compute_mib * MIB <= 96 * MIB
    assert 0 <= est.weights_bytes - 4403.5 * MIB <= 8 * MIB
    assert est.runner_bytes == 589 * MIB
    assert (est.flash_attention, est.kv_type) == (flash, kv_type)


def test_worked_example_llama31_8b_context_4096() -> None:
    """Design §5: ≈ 5.9 GiB before the pod overheads and margin; §5.1 measured 6,030 MiB."""
    est = estimate_model(spec("llama3.1:8b"), OllamaSettings(context_length=4096))
    assert est.kv_bytes == 512 * MIB  # exactly 0.5 GiB
    assert est.graph_bytes / GIB == pytest.approx(0.29, abs=0.01)
    assert est.headroom_bytes == NOFA_HEADROOM_BASE_BYTES + FA_HEADROOM_BYTES + 2 * 512 * 4096 * 32
    assert est.total_bytes / GIB == pytest.approx(5.9, rel=0.02)


@pytest.mark.parametrize(
    ("tag", "context", "parallel", "kv_type", "expected"),
    [
        pytest.param("llama3.1:8b", 4096, 1, "f16", 4096 * 1 * 32 * 8 * 128 * 2 * 2, id="llama3.1-8b-f16"),
        pytest.param("llama3.1:8b", 8192, 4, "f16", 8192 * 4 * 32 * 8 * 128 * 2 * 2, id="llama3.1-8b-parallel4"),
        pytest.param("qwen2.5:7b", 32768, 1, "q8_0", 32768 * 28 * 4 * 128 * 2 * 34 // 32, id="qwen2.5-7b-q8"),
        pytest.param("qwen2.5:14b", 8192, 2, "q4_0", 8192 * 2 * 48 * 8 * 128 * 2 * 18 // 32, id="qwen2.5-14b-q4"),
        pytest.param("llama3.2:1b", 2048, 1, "f16", 2048 * 16 * 8 * 64 * 2 * 2, id="llama3.2-1b"),
        pytest.param("phi3:14b", 4096, 1, "f16", 4096 * 40 * 10 * 128 * 2 * 2, id="phi3-14b"),
        pytest.param("llama3.1:8b", 1000, 1, "f16", 1024 * 32 * 8 * 128 * 2 * 2, id="padded-to-256-cells"),
    ],
)
def test_kv_cache_is_exact_to_the_formula(tag: str, context: int, parallel: int, kv_type: str, expected: int) -> None:
    assert kv_cache_bytes(spec(tag), context=context, parallel=parallel, kv_type=kv_type) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tag", "context", "expected"),
    [
        # gemma3: every 6th layer full (10 of 62), the rest a 1024 window + one micro-batch, padded to 256
        pytest.param("gemma3:27b", 32768, (10 * 32768 + 52 * 1536) * 16 * 256 * 2, id="gemma3-27b-5-of-6-windowed"),
        pytest.param("gemma3:1b", 32768, (4 * 32768 + 22 * 1024) * 1 * 512 * 2, id="gemma3-1b-window-512"),
        # gpt-oss: every other layer attends over 128 tokens (+ 512, padded to 768)
        pytest.param("gpt-oss:20b", 131072, (12 * 131072 + 12 * 768) * 8 * 128 * 2, id="gpt-oss-20b-alternating"),
        # gemma2: every other layer over 4096 (+ 512 -> 4608 cells)
        pytest.param("gemma2:9b", 8192, (21 * 8192 + 21 * 4608) * 8 * 512 * 2, id="gemma2-9b-window-4096"),
        # a context below the window: every layer holds the context
        pytest.param("gemma3:4b", 512, 34 * 512 * 4 * 512 * 2, id="context-below-the-window"),
        # MLA counted as its per-head cache (the safe side): 128 heads × (192 + 128)
        pytest.param("deepseek-r1:671b", 4096, 61 * 4096 * 128 * 320 * 2, id="deepseek-mla-safe-side"),
    ],
)
def test_sliding_window_and_mla_caches(tag: str, context: int, expected: int) -> None:
    """llama.cpp src/llama-kv-cache-iswa.cpp: a windowed layer holds PAD(min(cells, window + ubatch), 256)."""
    assert kv_cache_bytes(spec(tag), context=context, parallel=1, kv_type="f16") == expected


@settings(max_examples=200, deadline=None)
@given(
    tag=st.sampled_from([t for t in sorted(CATALOG.models) if CATALOG.models[t].sliding_window]),
    context=st.integers(min_value=1, max_value=1 << 18),
    parallel=st.integers(min_value=1, max_value=64),
)
def test_a_sliding_window_never_costs_more_than_the_plain_formula(tag: str, context: int, parallel: int) -> None:
    windowed = spec(tag)
    plain = dataclasses.replace(windowed, sliding_window=0, sliding_window_pattern=0)
    assert kv_cache_bytes(windowed, context=context, parallel=parallel, kv_type="f16") <= kv_cache_bytes(
        plain, context=context, parallel=parallel, kv_type="f16"
    )


def test_a_mixture_of_experts_widens_the_activations_by_its_experts_per_token() -> None:
    moe = spec("qwen3:30b")  # 8 of 128 experts of width 768 per token
    expected = 4 * 512 * (3 * 768 * 8 + 4 * max(2048, 32 * 128) + 8 * 2048 + 128)
    assert activation_bytes(moe, ubatch=512) == expected


def test_context_is_capped_at_the_trained_context() -> None:
    est = estimate_model(spec("phi3:3.8b"), OllamaSettings(context_length=65536))
    assert est.context == 4096
    assert est.kv_bytes == 4096 * 32 * 32 * 96 * 2 * 2


def test_kv_quantisation_only_with_flash_attention() -> None:
    base = OllamaSettings(context_length=8192, kv_cache_type="q8_0", flash_attention=False)
    with_fa = OllamaSettings(context_length=8192, kv_cache_type="q8_0", flash_attention=True)
    m = spec("llama3.1:8b")
    assert estimate_model(m, base).kv_bytes * 17 == 32 * estimate_model(m, with_fa).kv_bytes
    assert (estimate_model(m, base).kv_type, estimate_model(m, with_fa).kv_type) == ("f16", "q8_0")


@pytest.mark.parametrize(
    ("tag", "changes", "flash"),
    [
        pytest.param("llama3.1:8b", {}, True, id="llama"),
        pytest.param("gemma2:9b", {}, False, id="gemma2-never"),
        pytest.param("nomic-embed-text:v1.5", {}, False, id="embedding-model"),
        pytest.param("llama3.1:8b", {"value_head_dim": 64}, False, id="k-and-v-head-dims-differ"),
    ],
)
def test_flash_attention_only_where_ollama_allows_it(tag: str, changes: dict[str, int], flash: bool) -> None:
    """fs/ggml/ggml.go SupportsFlashAttention: no embedding models, no gemma2, equal K/V head dims;
    without it a quantised KV type falls back to f16."""
    m = dataclasses.replace(spec(tag), **changes)
    on = OllamaSettings(flash_attention=True, kv_cache_type="q4_0")
    est = estimate_model(m, on)
    assert flash_attention_for(m, on) is flash
    assert (est.flash_attention, est.kv_type) == (flash, "q4_0" if flash else "f16")
    assert not flash_attention_for(m, OllamaSettings(flash_attention=False))


def test_graph_formula_without_flash_attention() -> None:
    m = spec("llama3.1:8b")
    batch = 512
    expected = max(4 * batch * (1 + 4 * 4096 + 4096 * 33), 4 * batch * (4096 + 128256))
    assert graph_bytes(m, context=4096) == expected
    # small contexts shrink the batch; never below the flash-attention figure
    small = max(4 * 128 * (1 + 4 * 4096 + 128 * 33), 4 * 128 * (4096 + 128256))
    assert graph_bytes(m, context=128) == max(small, graph_bytes(m, context=128, flash_attention=True))


def test_graph_with_flash_attention_is_activations_plus_the_f16_mask() -> None:
    m = spec("llama3.1:8b")
    activations = 4 * 512 * (3 * 14336 + 4 * 4096)
    assert activation_bytes(m, ubatch=512) == activations
    assert graph_bytes(m, context=32768, flash_attention=True) == activations + 512 * 32768 * 2
    quantised = graph_bytes(m, context=32768, flash_attention=True, kv_type="q8_0")
    assert quantised == activations + 512 * 32768 * 2 + 32768 * 8 * 256 * 2


def test_headroom_by_flash_attention() -> None:
    m = spec("llama3.1:8b")
    assert headroom_bytes(m, context=8192, flash_attention=True) == FA_HEADROOM_BYTES
    off = headroom_bytes(m, context=8192, flash_attention=False)
    assert off == FA_HEADROOM_BYTES + NOFA_HEADROOM_BASE_BYTES + 2 * 512 * 8192 * 32
    wide = dataclasses.replace(m, feed_forward_length=28672)
    assert headroom_bytes(wide, context=8192, flash_attention=True) == 2 * 512 * 28672


@pytest.mark.parametrize(
    ("changes", "host"),
    [
        pytest.param({}, 128256 * 4096 * 9 // 16, id="untied-derived-from-vocab-embedding-q4_k"),
        pytest.param({"token_embd_bytes": 300 * MIB}, 300 * MIB, id="untied-exact"),
        pytest.param({"tied_embeddings": True}, 0, id="tied-stays-on-gpu"),
    ],
)
def test_gpu_weights_leave_out_the_token_embedding(changes: dict[str, object], host: int) -> None:
    m = dataclasses.replace(spec("llama3.1:8b"), **changes)  # type: ignore[arg-type]
    assert gpu_weights_bytes(m) == m.size_bytes - host
    assert estimate_model(m, OllamaSettings()).host_bytes == host


def test_pod_demand_applies_overheads_and_margin() -> None:
    m = spec("llama3.1:8b")
    settings_ = OllamaSettings(context_length=4096, gpu_overhead_bytes=100 * MIB)
    pod = estimate_pod([("llama3.1:8b", m)], settings_, cuda_context_overhead_mib=512, safety_margin=0.10)
    model = estimate_model(m, settings_).total_bytes
    expected = -(-((model + 100 * MIB + 512 * MIB) * 11) // 10)
    assert pod.demand_mib == -(-expected // MIB)


def test_pod_demand_sums_the_k_largest_models() -> None:
    refs = ["llama3.2:1b", "qwen2.5:14b", "llama3.1:8b"]
    pairs = [(r, spec(r)) for r in refs]
    one = estimate_pod(pairs, OllamaSettings(max_loaded_models=1), safety_margin=0)
    two = estimate_pod(pairs, OllamaSettings(max_loaded_models=2), safety_margin=0)
    assert [m.tag for m in one.loaded_models] == ["qwen2.5:14b"]
    assert [m.tag for m in two.loaded_models] == ["qwen2.5:14b", "llama3.1:8b"]
    # OLLAMA_MAX_LOADED_MODELS is per GPU: 1 × 2 GPUs loads two models
    two_gpus = estimate_pod(pairs, OllamaSettings(max_loaded_models=1), gpus=2, safety_margin=0)
    assert two_gpus.demand_mib == two.demand_mib
    # capped at the number of declared models
    many = estimate_pod(pairs, OllamaSettings(max_loaded_models=10), safety_margin=0)
    assert many.loaded == 3


def test_each_loaded_model_pays_its_runner_and_the_pod_nothing_more_by_default() -> None:
    """§5.1: every runner process costs ≈ 589 MiB; the Ollama server holds no CUDA context."""
    cluster = ClusterPolicy()
    assert (cluster.runner_overhead_mib, cluster.cuda_context_overhead_mib) == (RUNNER_OVERHEAD_MIB, 0) == (589, 0)
    pairs = [(r, spec(r)) for r in ("llama3.1:8b", "qwen2.5:7b")]
    two = estimate_pod(pairs, OllamaSettings(max_loaded_models=2), safety_margin=0)
    cheaper = estimate_pod(pairs, OllamaSettings(max_loaded_models=2), runner_overhead_mib=89, safety_margin=0)
    assert two.demand_mib - cheaper.demand_mib == 2 * 500


TAGS = sorted(t for t in CATALOG.known_tags())
small_ints = st.integers(min_value=1, max_value=64)
KV_TYPES = ("q4_0", "q8_0", "f16")


@settings(max_examples=300, deadline=None)
@given(
    models=st.lists(st.sampled_from(TAGS), min_size=1, max_size=4),
    extra=st.sampled_from(TAGS),
    context=st.integers(min_value=256, max_value=262144),
    more_context=st.integers(min_value=0, max_value=65536),
    parallel=small_ints,
    loaded=st.integers(min_value=1, max_value=4),
    gpus=st.integers(min_value=1, max_value=4),
    flash=st.booleans(),
    kv=st.sampled_from(KV_TYPES),
)
def test_demand_never_decreases_when_anything_grows(
    models: list[str],
    extra: str,
    context: int,
    more_context: int,
    parallel: int,
    loaded: int,
    gpus: int,
    flash: bool,
    kv: str,
) -> None:
    def demand(ms: list[str], ctx: int, par: int, ld: int, kv_type: str = kv) -> int:
        s = OllamaSettings(
            context_length=ctx, num_parallel=par, max_loaded_models=ld, flash_attention=flash, kv_cache_type=kv_type  # type: ignore[arg-type]
        )
        return estimate_pod([(m, spec(m)) for m in ms], s, gpus=gpus).demand_mib

    base = demand(models, context, parallel, loaded)
    assert demand(models, context + more_context, parallel, loaded) >= base
    assert demand(models, context, parallel + 1, loaded) >= base
    assert demand(models, context, parallel, loaded + 1) >= base
    assert demand([*models, extra], context, parallel, loaded) >= base
    wider = KV_TYPES[min(KV_TYPES.index(kv) + 1, len(KV_TYPES) - 1)]
    assert demand(models, context, parallel, loaded, wider) >= base


@settings(max_examples=300, deadline=None)
@given(
    models=st.lists(st.sampled_from(TAGS), min_size=1, max_size=4),
    context=st.integers(min_value=1, max_value=1 << 20),
    parallel=small_ints,
    loaded=st.integers(min_value=1, max_value=4),
    flash=st.booleans(),
    kv=st.sampled_from(KV_TYPES),
    margin=st.sampled_from([0.0, 0.1, 0.25]),
    overhead=st.integers(min_value=0, max_value=4096),
)
def test_the_demand_is_never_below_the_sum_of_its_parts(
    models: list[str], context: int, parallel: int, loaded: int, flash: bool, kv: str, margin: float, overhead: int
) -> None:
    s = OllamaSettings(
        context_length=context, num_parallel=parallel, max_loaded_models=loaded, flash_attention=flash, kv_cache_type=kv  # type: ignore[arg-type]
    )
    pod = estimate_pod([(m, spec(m)) for m in models], s, cuda_context_overhead_mib=overhead, safety_margin=margin)
    for m in pod.models:
        parts = (m.weights_bytes, m.kv_bytes, m.graph_bytes, m.headroom_bytes, m.runner_bytes)
        assert all(part >= 0 for part in parts) and m.total_bytes == sum(parts)
        assert m.runner_bytes == 589 * MIB and m.graph_bytes > 0 and m.headroom_bytes >= FA_HEADROOM_BYTES
    parts_sum = sum(m.total_bytes for m in pod.loaded_models) + overhead * MIB
    assert pod.demand_mib * MIB >= parts_sum * (1 + margin) - 1


@settings(max_examples=200, deadline=None)
@given(tag=st.sampled_from(TAGS), context=st.integers(min_value=1, max_value=1 << 20), parallel=small_ints)
def test_q8_kv_never_exceeds_f16_and_q4_never_exceeds_q8(tag: str, context: int, parallel: int) -> None:
    m = spec(tag)
    f16 = kv_cache_bytes(m, context=context, parallel=parallel, kv_type="f16")
    q8 = kv_cache_bytes(m, context=context, parallel=parallel, kv_type="q8_0")
    q4 = kv_cache_bytes(m, context=context, parallel=parallel, kv_type="q4_0")
    assert q4 <= q8 <= f16
    assert q8 * 32 >= f16 * 17 // 2  # the block formats' scales are counted


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_estimate_json_matches_the_library() -> None:
    out = run_cli(
        "estimate", "llama3.1:8b", "qwen2.5:7b", "--context", "4096", "--parallel", "2", "--max-loaded", "2", "--json"
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    s = OllamaSettings(context_length=4096, num_parallel=2, max_loaded_models=2, flash_attention=True)
    expected = estimate_pod([(m, spec(m)) for m in ("llama3.1:8b", "qwen2.5:7b")], s)
    assert body["demand_mib"] == expected.demand_mib
    assert [m["tag"] for m in body["models"]] == ["llama3.1:8b", "qwen2.5:7b"]
    assert body["models"][0]["kv_cache_bytes"] == 4096 * 2 * 32 * 8 * 128 * 2 * 2


def test_cli_estimate_table_and_kv_type() -> None:
    out = run_cli("estimate", "llama3.1:8b", "--kv-cache-type", "q8_0")
    assert out.returncode == 0, out.stderr
    assert "llama3.1:8b" in out.stdout and "pod demand:" in out.stdout and "KV cache q8_0" in out.stdout


@pytest.mark.parametrize("margin", [pytest.param("0", id="zero"), pytest.param("0.25", id="quarter")])
def test_cli_safety_margin_overrides_the_policy(margin: str) -> None:
    out = run_cli("estimate", "llama3.1:8b", "--context", "32768", "--safety-margin", margin, "--json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    s = OllamaSettings(context_length=32768, flash_attention=True)
    expected = estimate_pod([("llama3.1:8b", spec("llama3.1:8b"))], s, safety_margin=float(margin))
    assert (body["demand_mib"], body["safety_margin"]) == (expected.demand_mib, float(margin))


def test_cli_json_lists_each_term_with_its_source_and_they_add_up() -> None:
    out = run_cli("estimate", "llama3.1:8b", "gemma2:9b", "--max-loaded", "2", "--safety-margin", "0", "--json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    for model in body["models"]:
        terms = {t["term"]: t for t in model["terms"]}
        assert list(terms) == ["weights", "KV cache", "compute", "headroom", "runner"]
        assert sum(t["bytes"] for t in terms.values()) == model["total_bytes"]
        assert all(t["source"] for t in terms.values())
    llama, gemma = ({t["term"]: t["source"] for t in m["terms"]} for m in body["models"])
    assert "token_embd" in llama["weights"] and "flash attention on" in llama["compute"]
    assert "Ollama never uses it for gemma2" in gemma["compute"] and "tied embeddings" in gemma["weights"]
    assert "runner_overhead" in llama["runner"] and "design §5.1" in llama["headroom"]
    pod_terms = {t["term"]: t["bytes"] for t in body["pod_terms"]}
    assert pod_terms == {"OLLAMA_GPU_OVERHEAD": 0, "per-pod overhead": 0}
    assert body["demand_mib"] == -(-sum(m["total_bytes"] for m in body["models"]) // MIB)


def test_cli_table_shows_where_each_number_came_from() -> None:
    out = run_cli("estimate", "llama3.1:8b", "--no-flash-attention", "--kv-cache-type", "q4_0")
    assert out.returncode == 0, out.stderr
    for needle in ("headroom", "catalog file size 4,920,753,328 B", "q4_0 needs flash attention",
                   "the §5 graph formula", "OLLAMA_FLASH_ATTENTION is not on", "× 1.10 margin"):
        assert needle in out.stdout, needle


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["myorg/custom:latest"], "ollama-guard.io/vram", id="unknown-model"),
        pytest.param(["llama3.1:8b", "--kv-cache-type", "q3"], "--kv-cache-type", id="bad-kv-type"),
        pytest.param(["llama3.1:8b", "--context", "0"], "context", id="zero-context"),
        pytest.param(["llama3.1:8b", "--safety-margin", "-0.1"], "--safety-margin", id="negative-margin"),
        pytest.param(["llama3.1:8b", "--safety-margin", "ten"], "--safety-margin", id="margin-not-a-number"),
    ],
)
def test_cli_estimate_errors_exit_2(args: list[str], needle: str) -> None:
    out = run_cli("estimate", *args)
    assert out.returncode == 2
    assert needle in out.stderr
