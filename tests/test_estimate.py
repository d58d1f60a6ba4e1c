"""The VRAM estimator against design §5: worked example, exact KV formula, pod rules, monotonicity."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.core.catalog import load_catalog
from webhook.core.estimate import (
    MIB,
    RUNNER_MINIMUM_BYTES,
    OllamaSettings,
    estimate_model,
    estimate_pod,
    graph_bytes,
    kv_cache_bytes,
)

CATALOG = load_catalog()
GIB = 1 << 30


def spec(tag: str):  # type: ignore[no-untyped-def]
    return CATALOG.resolve(tag)


def test_worked_example_llama31_8b_context_4096() -> None:
    """Design §5: ≈ 4.6 GiB weights + 0.5 GiB KV + 0.3 GiB graph + 0.45 GiB runner ≈ 5.9 GiB."""
    est = estimate_model(spec("llama3.1:8b"), OllamaSettings(context_length=4096))
    assert est.weights_bytes / GIB == pytest.approx(4.6, abs=0.05)
    assert est.kv_bytes == 512 * MIB  # exactly 0.5 GiB
    assert est.graph_bytes / GIB == pytest.approx(0.3, abs=0.02)
    assert est.runner_bytes == 457 * MIB
    assert est.total_bytes / GIB == pytest.approx(5.9, rel=0.05)


@pytest.mark.parametrize(
    ("tag", "context", "parallel", "kv_type", "expected"),
    [
        pytest.param("llama3.1:8b", 4096, 1, "f16", 4096 * 1 * 32 * 8 * 128 * 2 * 2, id="llama3.1-8b-f16"),
        pytest.param("llama3.1:8b", 8192, 4, "f16", 8192 * 4 * 32 * 8 * 128 * 2 * 2, id="llama3.1-8b-parallel4"),
        pytest.param("qwen2.5:7b", 32768, 1, "q8_0", 32768 * 28 * 4 * 128 * 2 * 1, id="qwen2.5-7b-q8"),
        pytest.param("gemma2:9b", 8192, 2, "q4_0", 8192 * 2 * 42 * 8 * 256 * 2 // 2, id="gemma2-9b-q4"),
        pytest.param("llama3.2:1b", 2048, 1, "f16", 2048 * 16 * 8 * 64 * 2 * 2, id="llama3.2-1b"),
        pytest.param("phi3:14b", 4096, 1, "f16", 4096 * 40 * 10 * 128 * 2 * 2, id="phi3-14b"),
    ],
)
def test_kv_cache_is_exact_to_the_formula(tag: str, context: int, parallel: int, kv_type: str, expected: int) -> None:
    assert kv_cache_bytes(spec(tag), context=context, parallel=parallel, kv_type=kv_type) == expected  # type: ignore[arg-type]


def test_context_is_capped_at_the_trained_context() -> None:
    est = estimate_model(spec("phi3:3.8b"), OllamaSettings(context_length=65536))
    assert est.context == 4096
    assert est.kv_bytes == 4096 * 32 * 32 * 96 * 2 * 2


def test_kv_quantisation_only_with_flash_attention() -> None:
    base = OllamaSettings(context_length=8192, kv_cache_type="q8_0", flash_attention=False)
    with_fa = OllamaSettings(context_length=8192, kv_cache_type="q8_0", flash_attention=True)
    m = spec("llama3.1:8b")
    assert estimate_model(m, base).kv_bytes == 2 * estimate_model(m, with_fa).kv_bytes


def test_graph_formula_llama_style() -> None:
    m = spec("llama3.1:8b")
    batch = 512
    expected = max(4 * batch * (1 + 4 * 4096 + 4096 * 33), 4 * batch * (4096 + 128256))
    assert graph_bytes(m, context=4096) == expected
    # small contexts shrink the batch
    assert graph_bytes(m, context=128) == max(4 * 128 * (1 + 4 * 4096 + 128 * 33), 4 * 128 * (4096 + 128256))


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
    one = estimate_pod(pairs, OllamaSettings(max_loaded_models=1), cuda_context_overhead_mib=0, safety_margin=0)
    two = estimate_pod(pairs, OllamaSettings(max_loaded_models=2), cuda_context_overhead_mib=0, safety_margin=0)
    assert [m.tag for m in one.loaded_models] == ["qwen2.5:14b"]
    assert [m.tag for m in two.loaded_models] == ["qwen2.5:14b", "llama3.1:8b"]
    # OLLAMA_MAX_LOADED_MODELS is per GPU: 1 × 2 GPUs loads two models
    two_gpus = estimate_pod(
        pairs, OllamaSettings(max_loaded_models=1), gpus=2, cuda_context_overhead_mib=0, safety_margin=0
    )
    assert two_gpus.demand_mib == two.demand_mib
    # capped at the number of declared models
    many = estimate_pod(pairs, OllamaSettings(max_loaded_models=10), cuda_context_overhead_mib=0, safety_margin=0)
    assert many.loaded == 3


def test_runner_minimum_is_457_mib() -> None:
    assert RUNNER_MINIMUM_BYTES == 457 * MIB


TAGS = sorted(t for t in CATALOG.known_tags())
small_ints = st.integers(min_value=1, max_value=64)


@settings(max_examples=300, deadline=None)
@given(
    models=st.lists(st.sampled_from(TAGS), min_size=1, max_size=4),
    extra=st.sampled_from(TAGS),
    context=st.integers(min_value=256, max_value=262144),
    more_context=st.integers(min_value=0, max_value=65536),
    parallel=small_ints,
    loaded=st.integers(min_value=1, max_value=4),
    gpus=st.integers(min_value=1, max_value=4),
)
def test_demand_never_decreases_when_anything_grows(
    models: list[str], extra: str, context: int, more_context: int, parallel: int, loaded: int, gpus: int
) -> None:
    def demand(ms: list[str], ctx: int, par: int, ld: int) -> int:
        s = OllamaSettings(context_length=ctx, num_parallel=par, max_loaded_models=ld)
        return estimate_pod([(m, spec(m)) for m in ms], s, gpus=gpus).demand_mib

    base = demand(models, context, parallel, loaded)
    assert demand(models, context + more_context, parallel, loaded) >= base
    assert demand(models, context, parallel + 1, loaded) >= base
    assert demand(models, context, parallel, loaded + 1) >= base
    assert demand([*models, extra], context, parallel, loaded) >= base


@settings(max_examples=200, deadline=None)
@given(tag=st.sampled_from(TAGS), context=st.integers(min_value=1, max_value=1 << 20), parallel=small_ints)
def test_q8_kv_never_exceeds_f16_and_q4_never_exceeds_q8(tag: str, context: int, parallel: int) -> None:
    m = spec(tag)
    f16 = kv_cache_bytes(m, context=context, parallel=parallel, kv_type="f16")
    q8 = kv_cache_bytes(m, context=context, parallel=parallel, kv_type="q8_0")
    q4 = kv_cache_bytes(m, context=context, parallel=parallel, kv_type="q4_0")
    assert q4 <= q8 <= f16


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
    s = OllamaSettings(context_length=4096, num_parallel=2, max_loaded_models=2)
    expected = estimate_pod([(m, spec(m)) for m in ("llama3.1:8b", "qwen2.5:7b")], s)
    assert body["demand_mib"] == expected.demand_mib
    assert [m["tag"] for m in body["models"]] == ["llama3.1:8b", "qwen2.5:7b"]
    assert body["models"][0]["kv_cache_bytes"] == 4096 * 2 * 32 * 8 * 128 * 2 * 2


def test_cli_estimate_table_and_kv_type() -> None:
    out = run_cli("estimate", "llama3.1:8b", "--kv-cache-type", "q8_0")
    assert out.returncode == 0, out.stderr
    assert "llama3.1:8b" in out.stdout and "pod demand:" in out.stdout and "KV cache q8_0" in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["myorg/custom:latest"], "ollama-guard.io/vram", id="unknown-model"),
        pytest.param(["llama3.1:8b", "--kv-cache-type", "q3"], "--kv-cache-type", id="bad-kv-type"),
        pytest.param(["llama3.1:8b", "--context", "0"], "context", id="zero-context"),
    ],
)
def test_cli_estimate_errors_exit_2(args: list[str], needle: str) -> None:
    out = run_cli("estimate", *args)
    assert out.returncode == 2
    assert needle in out.stderr
