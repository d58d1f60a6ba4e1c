"""The model catalog: the shipped data (design.md §5), tag resolution, overlays and their errors."""

from __future__ import annotations

import dataclasses
import math
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.core.catalog import (
    Catalog,
    CatalogError,
    UnknownModelError,
    load_catalog,
    normalize_ref,
)

CATALOG = load_catalog()

# design.md §5 (tag, size, L, KV heads, head dim, trained ctx) + published configs (E, heads,
# vocab, architecture, quantisation).
DESIGN_TABLE = [
    ("llama3.2:1b", "1.3GB", 16, 8, 64, 131072, 2048, 32, 128256, "llama", "Q8_0"),
    ("llama3.2:3b", "2.0GB", 28, 8, 128, 131072, 3072, 24, 128256, "llama", "Q4_K_M"),
    ("llama3.1:8b", "4.9GB", 32, 8, 128, 131072, 4096, 32, 128256, "llama", "Q4_K_M"),
    ("llama3.1:70b", "43GB", 80, 8, 128, 131072, 8192, 64, 128256, "llama", "Q4_K_M"),
    ("llama3.3:70b", "43GB", 80, 8, 128, 131072, 8192, 64, 128256, "llama", "Q4_K_M"),
    ("qwen2.5:0.5b", "398MB", 24, 2, 64, 32768, 896, 14, 151936, "qwen2", "Q4_K_M"),
    ("qwen2.5:1.5b", "986MB", 28, 2, 128, 32768, 1536, 12, 151936, "qwen2", "Q4_K_M"),
    ("qwen2.5:3b", "1.9GB", 36, 2, 128, 32768, 2048, 16, 151936, "qwen2", "Q4_K_M"),
    ("qwen2.5:7b", "4.7GB", 28, 4, 128, 32768, 3584, 28, 152064, "qwen2", "Q4_K_M"),
    ("qwen2.5:14b", "9.0GB", 48, 8, 128, 32768, 5120, 40, 152064, "qwen2", "Q4_K_M"),
    ("qwen2.5:32b", "20GB", 64, 8, 128, 32768, 5120, 40, 152064, "qwen2", "Q4_K_M"),
    ("qwen2.5:72b", "47GB", 80, 8, 128, 32768, 8192, 64, 152064, "qwen2", "Q4_K_M"),
    ("qwen3:0.6b", "523MB", 28, 8, 128, 40960, 1024, 16, 151936, "qwen3", "Q4_K_M"),
    ("qwen3:1.7b", "1.4GB", 28, 8, 128, 40960, 2048, 16, 151936, "qwen3", "Q4_K_M"),
    ("qwen3:4b", "2.5GB", 36, 8, 128, 40960, 2560, 32, 151936, "qwen3", "Q4_K_M"),
    ("qwen3:8b", "5.2GB", 36, 8, 128, 40960, 4096, 32, 151936, "qwen3", "Q4_K_M"),
    ("qwen3:14b", "9.3GB", 40, 8, 128, 40960, 5120, 40, 151936, "qwen3", "Q4_K_M"),
    ("qwen3:30b", "19GB", 48, 4, 128, 40960, 2048, 32, 151936, "qwen3moe", "Q4_K_M"),
    ("qwen3:32b", "20GB", 64, 8, 128, 40960, 5120, 64, 151936, "qwen3", "Q4_K_M"),
    ("mistral:7b", "4.1GB", 32, 8, 128, 32768, 4096, 32, 32768, "llama", "Q4_K_M"),
    ("mixtral:8x7b", "26GB", 32, 8, 128, 32768, 4096, 32, 32000, "llama", "Q4_K_M"),
    ("gemma2:2b", "1.6GB", 26, 4, 256, 8192, 2304, 8, 256000, "gemma2", "Q4_K_M"),
    ("gemma2:9b", "5.4GB", 42, 8, 256, 8192, 3584, 16, 256000, "gemma2", "Q4_K_M"),
    ("gemma2:27b", "16GB", 46, 16, 128, 8192, 4608, 32, 256000, "gemma2", "Q4_K_M"),
    ("gemma3:1b", "815MB", 26, 1, 256, 32768, 1152, 4, 262144, "gemma3", "Q4_K_M"),
    ("gemma3:4b", "3.3GB", 34, 4, 256, 131072, 2560, 8, 262208, "gemma3", "Q4_K_M"),
    ("gemma3:12b", "8.1GB", 48, 8, 256, 131072, 3840, 16, 262208, "gemma3", "Q4_K_M"),
    ("gemma3:27b", "17GB", 62, 16, 128, 131072, 5376, 32, 262208, "gemma3", "Q4_K_M"),
    ("phi3:3.8b", "2.2GB", 32, 32, 96, 4096, 3072, 32, 32064, "phi3", "Q4_K_M"),
    ("phi3:14b", "7.9GB", 40, 10, 128, 4096, 5120, 40, 32064, "phi3", "Q4_K_M"),
    ("phi4:14b", "9.1GB", 40, 10, 128, 16384, 5120, 40, 100352, "phi3", "Q4_K_M"),
    ("deepseek-r1:1.5b", "1.1GB", 28, 2, 128, 131072, 1536, 12, 151936, "qwen2", "Q4_K_M"),
    ("deepseek-r1:7b", "4.7GB", 28, 4, 128, 131072, 3584, 28, 152064, "qwen2", "Q4_K_M"),
    ("deepseek-r1:8b", "5.2GB", 36, 8, 128, 131072, 4096, 32, 151936, "qwen3", "Q4_K_M"),
    ("deepseek-r1:14b", "9.0GB", 48, 8, 128, 131072, 5120, 40, 152064, "qwen2", "Q4_K_M"),
    ("deepseek-r1:32b", "20GB", 64, 8, 128, 131072, 5120, 40, 152064, "qwen2", "Q4_K_M"),
    ("deepseek-r1:70b", "43GB", 80, 8, 128, 131072, 8192, 64, 128256, "llama", "Q4_K_M"),
    ("nomic-embed-text:v1.5", "274MB", 12, 12, 64, 2048, 768, 12, 30522, "nomic-bert", "F16"),
    ("llava:7b", "4.7GB", 32, 8, 128, 32768, 4096, 32, 32000, "llama", "Q4_K_M"),
    ("codellama:7b", "3.8GB", 32, 32, 128, 16384, 4096, 32, 32016, "llama", "Q4_K_M"),
    ("codellama:13b", "7.4GB", 40, 40, 128, 16384, 5120, 40, 32016, "llama", "Q4_K_M"),
]

ENTRY: dict[str, Any] = {
    "size": "1.5GB", "layers": 24, "kv_heads": 4, "head_dim": 64, "context_length": 8192,
    "embedding_length": 1024, "heads": 16, "vocab_size": 32000, "architecture": "llama",
    "quantization": "Q4_K_M",
}


#: sizes the catalog lists exactly instead of the library's rounded figure (Ollama's /api/tags)
EXACT_SIZES = {"llama3.1:8b": 4_920_753_328}
_PRINTED = re.compile(r"(?P<number>[0-9.]+)(?P<unit>GB|MB)")


def printed_range(printed: str) -> tuple[int, int]:
    """A size as the library prints it, rounded to its last digit: the bytes it may stand for."""
    match = _PRINTED.fullmatch(printed)
    assert match is not None, printed
    number, unit = Decimal(match["number"]), {"GB": 10**9, "MB": 10**6}[match["unit"]]
    half = Decimal(5).scaleb(int(number.as_tuple().exponent) - 1)
    return math.ceil((number - half) * unit), math.ceil((number + half) * unit)


@pytest.mark.parametrize("row", [pytest.param(row, id=row[0]) for row in DESIGN_TABLE])
def test_every_design_table_row_is_shipped_with_its_numbers(row: tuple[Any, ...]) -> None:
    tag, printed, layers, kv_heads, head_dim, ctx, embedding, heads, vocab, arch, quant = row
    spec = CATALOG.resolve(tag)
    assert (spec.tag, spec.layers, spec.kv_heads, spec.head_dim, spec.context_length) == (
        tag, layers, kv_heads, head_dim, ctx
    )
    assert (spec.embedding_length, spec.heads, spec.vocab_size, spec.architecture, spec.quantization) == (
        embedding, heads, vocab, arch, quant
    )
    low, high = printed_range(printed)
    # the upper end of the library's rounding (never below the real file), or the exact bytes
    assert spec.size_bytes == EXACT_SIZES.get(tag, high) and low <= spec.size_bytes <= high
    assert spec.size_rounded is (tag not in EXACT_SIZES) and spec.derived is False


# What people pull today beyond design §5's table (issue 19), each against its Hugging Face config.json
# (layers, heads, KV heads, head dim, E, FFN per expert, vocab, trained context) and its Ollama library
# page (size); the structure the estimate needs beyond the plain formula in the last column.
NEW_ENTRIES = [
    ("gpt-oss:20b", "14GB", 24, 64, 8, 64, 2880, 2880, 201088, 131072, "gpt-oss",
     {"expert_count": 32, "expert_used_count": 4, "sliding_window": 128, "sliding_window_pattern": 2}),
    ("gpt-oss:120b", "65GB", 36, 64, 8, 64, 2880, 2880, 201088, 131072, "gpt-oss",
     {"expert_count": 128, "expert_used_count": 4, "sliding_window": 128, "sliding_window_pattern": 2}),
    ("qwen3:235b", "142GB", 94, 64, 4, 128, 4096, 1536, 151936, 40960, "qwen3moe",
     {"expert_count": 128, "expert_used_count": 8}),
    ("qwen3-coder:30b", "19GB", 48, 32, 4, 128, 2048, 768, 151936, 262144, "qwen3moe",
     {"expert_count": 128, "expert_used_count": 8}),
    ("gemma3:270m", "292MB", 18, 4, 1, 256, 640, 2048, 262144, 32768, "gemma3",
     {"sliding_window": 512, "sliding_window_pattern": 6}),
    ("mistral-small:22b", "13GB", 56, 48, 8, 128, 6144, 16384, 32768, 32768, "llama", {}),
    ("mistral-small:24b", "14GB", 40, 32, 8, 128, 5120, 32768, 131072, 32768, "llama", {}),
    ("phi4-mini:3.8b", "2.5GB", 32, 24, 8, 128, 3072, 8192, 200064, 131072, "phi3", {"tied_embeddings": True}),
    ("deepseek-r1:671b", "404GB", 61, 128, 128, 192, 7168, 2048, 129280, 163840, "deepseek2",
     {"value_head_dim": 128, "expert_count": 256, "expert_used_count": 8}),
    ("granite3.3:2b", "1.5GB", 40, 32, 8, 64, 2048, 8192, 49159, 131072, "granite", {"tied_embeddings": True}),
    ("granite3.3:8b", "4.9GB", 40, 32, 8, 128, 4096, 12800, 49159, 131072, "granite", {"tied_embeddings": True}),
    ("mxbai-embed-large:335m", "670MB", 24, 16, 16, 64, 1024, 4096, 30522, 512, "bert", {"embedding": True}),
    ("all-minilm:22m", "46MB", 6, 12, 12, 32, 384, 1536, 30522, 512, "bert", {"embedding": True}),
    ("all-minilm:33m", "67MB", 12, 12, 12, 32, 384, 1536, 30522, 512, "bert", {"embedding": True}),
    ("bge-m3:567m", "1.2GB", 24, 16, 16, 64, 1024, 4096, 250002, 8192, "bert", {"embedding": True}),
    ("snowflake-arctic-embed:335m", "669MB", 24, 16, 16, 64, 1024, 4096, 30522, 512, "bert", {"embedding": True}),
]
#: design §5 rows whose structure goes beyond the plain formula
DESIGN_STRUCTURE = {
    "gemma2:2b": {"sliding_window": 4096, "sliding_window_pattern": 2, "tied_embeddings": True},
    "gemma2:9b": {"sliding_window": 4096, "sliding_window_pattern": 2},
    "gemma2:27b": {"sliding_window": 4096, "sliding_window_pattern": 2},
    "gemma3:1b": {"sliding_window": 512, "sliding_window_pattern": 6, "tied_embeddings": True},
    "gemma3:4b": {"sliding_window": 1024, "sliding_window_pattern": 6},
    "gemma3:12b": {"sliding_window": 1024, "sliding_window_pattern": 6},
    "gemma3:27b": {"sliding_window": 1024, "sliding_window_pattern": 6},
    "qwen3:30b": {"expert_count": 128, "expert_used_count": 8, "feed_forward_length": 768, "tied_embeddings": False},
    "mixtral:8x7b": {"expert_count": 8, "expert_used_count": 2, "tied_embeddings": False},
    "llama3.1:8b": {"tied_embeddings": False, "feed_forward_length": 14336},
    "llama3.2:1b": {"tied_embeddings": True},
    "qwen2.5:0.5b": {"tied_embeddings": True},
    "qwen2.5:7b": {"tied_embeddings": False},
    "nomic-embed-text:v1.5": {"embedding": True},
}


@pytest.mark.parametrize("row", [pytest.param(row, id=row[0]) for row in NEW_ENTRIES])
def test_every_new_entry_has_its_published_numbers(row: tuple[Any, ...]) -> None:
    tag, printed, layers, heads, kv_heads, head_dim, embedding, ffn, vocab, ctx, arch, structure = row
    spec = CATALOG.resolve(tag)
    assert (spec.layers, spec.heads, spec.kv_heads, spec.head_dim, spec.embedding_length) == (
        layers, heads, kv_heads, head_dim, embedding
    )
    assert (spec.feed_forward_length, spec.vocab_size, spec.context_length, spec.architecture) == (
        ffn, vocab, ctx, arch
    )
    assert spec.size_bytes == printed_range(printed)[1]
    for field, value in structure.items():
        assert getattr(spec, field) == value, field


@pytest.mark.parametrize("tag", [pytest.param(t, id=t) for t in DESIGN_STRUCTURE])
def test_design_rows_carry_the_structure_the_estimate_needs(tag: str) -> None:
    spec = CATALOG.resolve(tag)
    for field, value in DESIGN_STRUCTURE[tag].items():
        assert getattr(spec, field) == value, field


@pytest.mark.parametrize("tag", [pytest.param(t, id=t) for t in sorted(CATALOG.models)])
def test_every_entry_names_its_public_sources(tag: str) -> None:
    """Issue 19: each entry's numbers with the public source they were read from."""
    source = CATALOG.models[tag].source
    assert source.startswith("hf ") and f"ollama.com/library/{tag.split(':', maxsplit=1)[0]}" in source
    if CATALOG.models[tag].architecture == "deepseek2":
        assert "MLA" in source and "safe side" in source  # counted as the per-head cache, marked so
    assert CATALOG.models[tag].feed_forward_length > 0


def test_catalog_lists_exactly_the_design_table_and_the_new_entries() -> None:
    assert sorted(CATALOG.models) == sorted([row[0] for row in DESIGN_TABLE] + [row[0] for row in NEW_ENTRIES])
    assert set(CATALOG.known_tags()) == {*CATALOG.models, *CATALOG.aliases}
    assert list(CATALOG.known_tags()) == sorted(CATALOG.known_tags())


@pytest.mark.parametrize(("ref", "tag"), [
    pytest.param("llama3.2:latest", "llama3.2:3b", id="llama3.2"),
    pytest.param("llama3.1:latest", "llama3.1:8b", id="llama3.1"),
    pytest.param("llama3.3:latest", "llama3.3:70b", id="llama3.3"),
    pytest.param("qwen2.5:latest", "qwen2.5:7b", id="qwen2.5"),
    pytest.param("qwen3:latest", "qwen3:8b", id="qwen3"),
    pytest.param("mistral:latest", "mistral:7b", id="mistral"),
    pytest.param("mixtral:latest", "mixtral:8x7b", id="mixtral"),
    pytest.param("gemma2:latest", "gemma2:9b", id="gemma2"),
    pytest.param("gemma3:latest", "gemma3:4b", id="gemma3"),
    pytest.param("phi3:latest", "phi3:3.8b", id="phi3"),
    pytest.param("phi3:mini", "phi3:3.8b", id="phi3-mini"),
    pytest.param("phi3:medium", "phi3:14b", id="phi3-medium"),
    pytest.param("phi4:latest", "phi4:14b", id="phi4"),
    pytest.param("deepseek-r1:latest", "deepseek-r1:8b", id="deepseek-r1"),
    pytest.param("gpt-oss:latest", "gpt-oss:20b", id="gpt-oss"),
    pytest.param("qwen3-coder:latest", "qwen3-coder:30b", id="qwen3-coder"),
    pytest.param("mistral-small:latest", "mistral-small:24b", id="mistral-small"),
    pytest.param("phi4-mini:latest", "phi4-mini:3.8b", id="phi4-mini"),
    pytest.param("granite3.3:latest", "granite3.3:8b", id="granite3.3"),
    pytest.param("mxbai-embed-large:latest", "mxbai-embed-large:335m", id="mxbai-embed-large"),
    pytest.param("all-minilm:latest", "all-minilm:22m", id="all-minilm"),
    pytest.param("bge-m3:latest", "bge-m3:567m", id="bge-m3"),
    pytest.param("snowflake-arctic-embed:latest", "snowflake-arctic-embed:335m", id="snowflake-arctic-embed"),
    pytest.param("nomic-embed-text:latest", "nomic-embed-text:v1.5", id="nomic-embed-text"),
    pytest.param("llava:latest", "llava:7b", id="llava"),
    pytest.param("codellama:latest", "codellama:7b", id="codellama"),
])
def test_latest_aliases_resolve_to_the_library_default(ref: str, tag: str) -> None:
    spec = CATALOG.resolve(ref)
    assert spec == CATALOG.models[tag]
    assert spec.tag == tag


@pytest.mark.parametrize(("ref", "expected"), [
    pytest.param("llama3.1:8b", ("llama3.1", "8b"), id="plain"),
    pytest.param("Llama3.1:8B", ("llama3.1", "8b"), id="case-insensitive"),
    pytest.param("  llama3.1:8b\n", ("llama3.1", "8b"), id="surrounding-whitespace"),
    pytest.param("llama3.1", ("llama3.1", "latest"), id="missing-tag-means-latest"),
    pytest.param("llama3.1:", ("llama3.1", "latest"), id="empty-tag-means-latest"),
    pytest.param("registry.ollama.ai/library/llama3.1:8b", ("llama3.1", "8b"), id="registry"),
    pytest.param("ollama.com/library/qwen3", ("qwen3", "latest"), id="ollama-com"),
    pytest.param("library/gemma3:4b", ("gemma3", "4b"), id="library-namespace"),
    pytest.param("llama3.1:8b@sha256:" + "a" * 64, ("llama3.1", "8b"), id="digest-dropped"),
    pytest.param("myorg/custom:latest", ("myorg/custom", "latest"), id="user-namespace-kept"),
    pytest.param("myreg:5000/team/model", ("myreg:5000/team/model", "latest"), id="host-port"),
    pytest.param("myreg:5000/team/model:v2", ("myreg:5000/team/model", "v2"), id="host-port-tag"),
    pytest.param("", ("", "latest"), id="empty"),
])
def test_normalize_ref(ref: str, expected: tuple[str, str]) -> None:
    assert normalize_ref(ref) == expected


@pytest.mark.parametrize("ref", [
    pytest.param("Llama3.1:8B", id="upper-case"),
    pytest.param("registry.ollama.ai/library/llama3.1:8b", id="registry-prefix"),
    pytest.param("llama3.1", id="no-tag"),
    pytest.param("LLAMA3.1:Latest", id="latest-any-case"),
    pytest.param("llama3.1:8b-instruct", id="variant-without-quant"),
    pytest.param("llama3.1:8b-text-q4_K_M", id="variant-and-default-quant"),
])
def test_references_resolve_to_the_canonical_entry(ref: str) -> None:
    assert CATALOG.resolve(ref) is CATALOG.models["llama3.1:8b"]


def _scaled(size: int, new_bits: str, base_bits: str) -> int:
    return math.ceil(Fraction(size) * Fraction(new_bits) / Fraction(base_bits))


@pytest.mark.parametrize(("ref", "base", "tag", "quant", "size"), [
    pytest.param("qwen2.5:14b-instruct-q8_0", "qwen2.5:14b", "qwen2.5:14b-q8_0", "Q8_0",
                 _scaled(9_050_000_000, "8.5", "4.85"), id="q8_0-variant-dropped"),
    pytest.param("llama3.1:8b-instruct-fp16", "llama3.1:8b", "llama3.1:8b-fp16", "F16",
                 _scaled(4_920_753_328, "16", "4.85"), id="fp16"),
    pytest.param("gemma3:4b-it-q4_0", "gemma3:4b", "gemma3:4b-q4_0", "Q4_0",
                 _scaled(3_350_000_000, "4.5", "4.85"), id="gemma-it-q4_0"),
    pytest.param("llama3.2:1b-instruct-q4_K_M", "llama3.2:1b", "llama3.2:1b-q4_k_m", "Q4_K_M",
                 _scaled(1_350_000_000, "4.85", "8.5"), id="smaller-than-a-q8_0-base"),
    pytest.param("phi3:medium-q5_K_M", "phi3:14b", "phi3:14b-q5_k_m", "Q5_K_M",
                 _scaled(7_950_000_000, "5.7", "4.85"), id="through-an-alias"),
    pytest.param("nomic-embed-text:v1.5-q8_0", "nomic-embed-text:v1.5", "nomic-embed-text:v1.5-q8_0",
                 "Q8_0", _scaled(274_500_000, "8.5", "16"), id="f16-base"),
    pytest.param("qwen3:8b-Q3_K_S", "qwen3:8b", "qwen3:8b-q3_k_s", "Q3_K_S",
                 _scaled(5_250_000_000, "3.5", "4.85"), id="q3_k_s-upper-case"),
])
def test_other_quantisations_scale_the_weights(
    ref: str, base: str, tag: str, quant: str, size: int
) -> None:
    spec = CATALOG.resolve(ref)
    expected = dataclasses.replace(
        CATALOG.models[base], tag=tag, size_bytes=size, quantization=quant, derived=True
    )
    assert spec == expected


def test_q8_0_scaling_of_qwen25_14b_is_the_bits_ratio() -> None:
    spec = CATALOG.resolve("qwen2.5:14b-instruct-q8_0")
    assert spec.size_bytes == math.ceil(9_050_000_000 * 8.5 / 4.85)
    assert (spec.architecture, spec.layers, spec.kv_heads) == ("qwen2", 48, 8)
    assert spec.derived is True


@pytest.mark.parametrize(("ref", "tag"), [
    pytest.param("llama3.1:8b-q4_K_M", "llama3.1:8b", id="q4_K_M-on-Q4_K_M"),
    pytest.param("llama3.2:1b-instruct-q8_0", "llama3.2:1b", id="q8_0-on-Q8_0"),
    pytest.param("nomic-embed-text:v1.5-fp16", "nomic-embed-text:v1.5", id="fp16-is-F16"),
])
def test_the_base_quantisation_is_not_derived(ref: str, tag: str) -> None:
    spec = CATALOG.resolve(ref)
    assert spec is CATALOG.models[tag]
    assert spec.derived is False


@pytest.mark.parametrize("ref", [
    pytest.param("myorg/custom:latest", id="custom"),
    pytest.param("llama3.1:9b", id="unlisted-size"),
    pytest.param("phi3:medium-128k", id="context-variant-unknown"),
    pytest.param("gemma3:4b-it-qat", id="qat-unknown"),
    pytest.param("llama3.1:8b-q9_9", id="unknown-quant"),
    pytest.param("llama3.1:8b-", id="dangling-dash"),
    pytest.param("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", id="hugging-face"),
    pytest.param("", id="empty"),
    pytest.param(":8b", id="no-name"),
])
def test_unknown_models_raise_with_advice(ref: str) -> None:
    with pytest.raises(UnknownModelError) as caught:
        CATALOG.resolve(ref)
    assert str(caught.value).startswith(f'unknown model "{ref}": not in the catalog')
    assert "ollama-guard.io/vram" in str(caught.value)
    assert caught.value.ref == ref


def test_unknown_model_message_text() -> None:
    with pytest.raises(LookupError) as caught:
        CATALOG.resolve(" myorg/custom:latest ")
    assert str(caught.value) == (
        'unknown model "myorg/custom:latest": not in the catalog; declare its VRAM with the pod '
        'annotation ollama-guard.io/vram (e.g. "24Gi") or add it to the catalog overlay'
    )


def test_overlay_adds_models_and_aliases_without_touching_the_base() -> None:
    overlay = {
        "models": {"MyOrg/Custom:v2": ENTRY},
        "aliases": {"myorg/custom:latest": "myorg/custom:v2", "deepseek-r1:latest": "deepseek-r1:7b"},
    }
    catalog = CATALOG.with_overlay(overlay, source="test")
    custom = catalog.resolve("myorg/custom")
    assert (custom.tag, custom.size_bytes, custom.quantization) == ("myorg/custom:v2", 1_550_000_000, "Q4_K_M")
    assert catalog.resolve("deepseek-r1").tag == "deepseek-r1:7b"
    assert catalog.resolve("myorg/custom:v2-q8_0").size_bytes == _scaled(1_550_000_000, "8.5", "4.85")
    assert CATALOG.resolve("deepseek-r1").tag == "deepseek-r1:8b"
    with pytest.raises(UnknownModelError):
        CATALOG.resolve("myorg/custom")


def test_overlay_replaces_an_entry_whole_and_can_shadow_an_alias() -> None:
    catalog = CATALOG.with_overlay({"models": {
        "llama3.1:8b": {**ENTRY, "size": 5_000_000_000},
        "llama3.1:latest": {**ENTRY, "size": "4600Mi", "quantization": "q8_0"},
    }})
    assert catalog.resolve("llama3.1:8b").size_bytes == 5_000_000_000
    assert catalog.resolve("llama3.1:8b").layers == 24
    latest = catalog.resolve("llama3.1")
    assert (latest.tag, latest.size_bytes, latest.quantization) == ("llama3.1:latest", 4600 * 2**20, "Q8_0")
    assert "llama3.1:latest" not in catalog.aliases
    assert CATALOG.resolve("llama3.1:8b").size_bytes == 4_920_753_328


@pytest.mark.parametrize(("size", "expected", "rounded"), [
    pytest.param("4.9GB", 4_950_000_000, True, id="library-one-decimal"),
    pytest.param("43GB", 43_500_000_000, True, id="library-whole-gigabytes"),
    pytest.param("9.0GB", 9_050_000_000, True, id="library-trailing-zero"),
    pytest.param("398MB", 398_500_000, True, id="library-megabytes"),
    pytest.param(4_920_753_328, 4_920_753_328, False, id="integer-bytes-exact"),
    pytest.param("4600Mi", 4600 * 2**20, False, id="quantity-exact"),
])
def test_a_library_size_stands_for_the_upper_end_of_its_rounding(size: object, expected: int, rounded: bool) -> None:
    """The Ollama library rounds to its last printed digit (llama3.1:8b: 4,920,753,328 B shows as
    4.9GB): reading the upper end keeps the weights term from falling below the real file."""
    spec = CATALOG.with_overlay({"models": {"x:1b": {**ENTRY, "size": size}}}).resolve("x:1b")
    assert (spec.size_bytes, spec.size_rounded) == (expected, rounded)


@pytest.mark.parametrize(("overlay", "fragments"), [
    pytest.param({"models": {"x:1b": {**ENTRY, "layers": -1}}},
                 ('entry "x:1b"', 'field "layers"', "greater than 0"), id="negative-layers"),
    pytest.param({"models": {"x:1b": {k: v for k, v in ENTRY.items() if k != "head_dim"}}},
                 ('entry "x:1b"', 'field "head_dim"', "Field required"), id="missing-field"),
    pytest.param({"models": {"x:1b": {**ENTRY, "colour": "red"}}},
                 ('entry "x:1b"', 'field "colour"', "Extra inputs are not permitted"), id="unknown-field"),
    pytest.param({"models": {"x:1b": {**ENTRY, "layers": "32"}}},
                 ('field "layers"', "valid integer"), id="string-layers"),
    pytest.param({"models": {"x:1b": {**ENTRY, "heads": True}}},
                 ('field "heads"', "valid integer"), id="bool-heads"),
    pytest.param({"models": {"x:1b": {**ENTRY, "size": "4.9 GB"}}},
                 ('field "size"', "whitespace is not allowed"), id="bad-size"),
    pytest.param({"models": {"x:1b": {**ENTRY, "size": 0}}},
                 ('field "size"', "greater than 0"), id="zero-size"),
    pytest.param({"models": {"x:1b": {**ENTRY, "quantization": "Q7"}}},
                 ('field "quantization"', "unknown quantization 'Q7'"), id="bad-quant"),
    pytest.param({"models": {"x:1b": {**ENTRY, "kv_heads": 3}}},
                 ('field "kv_heads"', "do not divide the 16 attention heads"), id="kv-heads"),
    pytest.param({"models": {"x:1b": {**ENTRY, "sliding_window": 1024}}},
                 ("sliding_window needs sliding_window_pattern",), id="window-without-pattern"),
    pytest.param({"models": {"x:1b": {**ENTRY, "sliding_window_pattern": 6}}},
                 ("sliding_window_pattern without sliding_window",), id="pattern-without-window"),
    pytest.param({"models": {"x:1b": {**ENTRY, "expert_count": 8}}},
                 ("expert_used_count must be set with expert_count",), id="experts-without-used"),
    pytest.param({"models": {"x:1b": {**ENTRY, "expert_count": 2, "expert_used_count": 4}}},
                 ("not exceed it",), id="more-used-than-experts"),
    pytest.param({"models": {"x:1b": {**ENTRY, "token_embd": "300Mi"}}},
                 ("set tied_embeddings: false",), id="token-embd-on-tied"),
    pytest.param({"models": {"x:1b": {**ENTRY, "tied_embeddings": False, "token_embd": "3 MB"}}},
                 ('field "token_embd"', "whitespace"), id="bad-token-embd"),
    pytest.param({"models": {"x:1b": 5}}, ('entry "x:1b"', "expected a mapping"), id="not-a-mapping"),
    pytest.param({"models": {"x:1b": ENTRY, "X:1B": ENTRY}}, ('entry "x:1b"', "listed twice"),
                 id="duplicate-tag"),
    pytest.param({"models": {1.5: ENTRY}}, ("models key 1.5",), id="numeric-key"),
    pytest.param({"models": [ENTRY]}, ("`models:` must be a mapping",), id="models-list"),
    pytest.param({"model": {}}, ("unknown top-level key 'model'",), id="top-level-typo"),
    pytest.param({"aliases": {"x:latest": "nope:1b"}}, ('alias "x:latest"', 'target "nope:1b"'),
                 id="dangling-alias"),
    pytest.param({"aliases": {"llama3.1:8b": "qwen3:8b"}},
                 ('alias "llama3.1:8b"', "already a model entry"), id="alias-over-model"),
])
def test_malformed_overlay_names_source_tag_and_field(
    overlay: dict[Any, Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(CatalogError) as caught:
        CATALOG.with_overlay(overlay, source="/etc/ollama-guard/catalog.yaml")
    message = str(caught.value)
    assert message.startswith("/etc/ollama-guard/catalog.yaml: ")
    for fragment in fragments:
        assert fragment in message


def test_load_catalog_reads_an_overlay_file(tmp_path: Path) -> None:
    path = tmp_path / "overlay.yaml"
    path.write_text(
        "models:\n"
        "  myorg/custom:v2: {size: 398MB, layers: 24, kv_heads: 2, head_dim: 64,\n"
        "    context_length: 32768, embedding_length: 896, heads: 14, vocab_size: 151936,\n"
        "    architecture: qwen2, quantization: Q8_0}\n"
        "aliases:\n"
        "  myorg/custom:latest: myorg/custom:v2\n"
    )
    catalog = load_catalog(path)
    assert catalog.resolve("myorg/custom").size_bytes == 398_500_000
    assert catalog.resolve("llama3.1").tag == "llama3.1:8b"


@pytest.mark.parametrize(("text", "fragment"), [
    pytest.param("models:\n  x:1b: {size: 1GB, layers: -2}\n", 'entry "x:1b": field "layers"',
                 id="bad-entry"),
    pytest.param("models: [\n", "not YAML", id="broken-yaml"),
    pytest.param("- 1\n", "expected a mapping", id="a-list"),
])
def test_load_catalog_names_the_overlay_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "overlay.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert fragment in str(caught.value)


def test_missing_overlay_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the catalog overlay"):
        load_catalog(tmp_path / "absent.yaml")


def test_empty_overlay_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "overlay.yaml"
    path.write_text("# nothing yet\n")
    assert load_catalog(path).known_tags() == CATALOG.known_tags()


def test_specs_and_catalog_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG.models["llama3.1:8b"].layers = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        CATALOG.models["x:1b"] = CATALOG.models["llama3.1:8b"]  # type: ignore[index]
    assert isinstance(Catalog(), Catalog) and Catalog().known_tags() == ()


_FAMILY_TAGS = st.builds(
    lambda name, size, parts: f"{name}:{size}{''.join('-' + p for p in parts)}",
    st.sampled_from(sorted({tag.split(":")[0] for tag in CATALOG.known_tags()})),
    st.sampled_from(["8b", "7b", "14b", "1b", "4b", "v1.5", "mini", "latest", "x"]),
    st.lists(st.sampled_from(["instruct", "it", "q8_0", "Q4_K_M", "fp16", "qat", "", "bf16"]),
             max_size=3),
)


@given(ref=st.one_of(st.text(max_size=60), _FAMILY_TAGS))
def test_resolve_raises_nothing_but_unknown_model_error(ref: str) -> None:
    try:
        spec = CATALOG.resolve(ref)
    except UnknownModelError as exc:
        assert str(exc).startswith("unknown model ")
    else:
        assert spec.size_bytes > 0
        assert spec.tag.split(":")[0] == normalize_ref(ref)[0]
