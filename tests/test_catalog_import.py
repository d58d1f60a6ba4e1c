"""`ollama-guard catalog import FILE.gguf`: a catalog entry from a model file's own metadata and tensor
table. The files are tiny GGUFs written here with the `gguf` package's own writer (real metadata keys
of llama, qwen2, gemma3, a gpt-oss-style mixture of experts and a BERT embedding model), and broken
ones; the entry it prints must load as an overlay and be estimated from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from webhook.cli.main import app
from webhook.core.catalog import load_catalog
from webhook.core.catalog_import import GgufImportError, entry_from_gguf
from webhook.core.estimate import OllamaSettings, estimate_pod, kv_cache_bytes
from webhook.state.gguf import read_gguf

Q4_K = gguf.GGMLQuantizationType.Q4_K
F16 = gguf.GGMLQuantizationType.F16
F32 = gguf.GGMLQuantizationType.F32
VOCAB, E = 64, 256


def tensor(kind: gguf.GGMLQuantizationType, rows: int, cols: int) -> tuple[np.ndarray[Any, Any], Any]:
    """Zeros of `rows × cols` elements stored as `kind` (quantised types as their raw bytes)."""
    if kind == F32:
        return np.zeros((rows, cols), dtype=np.float32), None
    if kind == F16:
        return np.zeros((rows, cols), dtype=np.float16), None
    block, size = gguf.GGML_QUANT_SIZES[kind]
    return np.zeros((rows, cols // block * size), dtype=np.uint8), kind


def write_gguf(
    path: Path,
    arch: str,
    keys: dict[str, Any],
    *,
    layers: int = 2,
    output: bool = True,
    file_type: int = 15,
) -> Path:
    """A GGUF with `arch`'s metadata keys (`{arch}.` prefixed) and a minimal tensor table."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"Tiny {arch}")
    writer.add_basename(f"tiny-{arch}")
    writer.add_size_label("1M")
    writer.add_file_type(file_type)
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    for key, value in keys.items():
        full = f"{arch}.{key}"
        if isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, list):
            writer.add_array(full, value)
        else:
            writer.add_uint32(full, value)
    data, raw = tensor(Q4_K, VOCAB, E)
    writer.add_tensor("token_embd.weight", data, raw_dtype=raw)
    if output:
        writer.add_tensor("output.weight", *tensor(F16, VOCAB, E)[:1])
    writer.add_tensor("output_norm.weight", np.zeros(E, dtype=np.float32))
    for i in range(layers):
        data, raw = tensor(Q4_K, E, E)
        writer.add_tensor(f"blk.{i}.attn_q.weight", data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


LLAMA = {"block_count": 2, "context_length": 131072, "embedding_length": E, "feed_forward_length": 1024,
         "attention.head_count": 8, "attention.head_count_kv": 2}
QWEN2 = {"block_count": 2, "context_length": 32768, "embedding_length": E, "feed_forward_length": 768,
         "attention.head_count": 4, "attention.head_count_kv": 2}
GEMMA3 = {"block_count": 12, "context_length": 131072, "embedding_length": E, "feed_forward_length": 1024,
          "attention.head_count": 4, "attention.head_count_kv": 1, "attention.key_length": 128,
          "attention.value_length": 128, "attention.sliding_window": 512}
GPT_OSS = {"block_count": 4, "context_length": 131072, "embedding_length": E, "feed_forward_length": 128,
           "expert_feed_forward_length": 128, "expert_count": 32, "expert_used_count": 4,
           "attention.head_count": 8, "attention.head_count_kv": 2, "attention.key_length": 64,
           "attention.value_length": 64, "attention.sliding_window": 128}
BERT = {"block_count": 2, "context_length": 512, "embedding_length": E, "feed_forward_length": 1024,
        "attention.head_count": 4, "pooling_type": 2, "attention.head_count_kv": 4}


@pytest.mark.parametrize(
    ("arch", "keys", "options", "expected"),
    [
        pytest.param("llama", LLAMA, {}, {
            "layers": 2, "heads": 8, "kv_heads": 2, "head_dim": 32, "embedding_length": E, "context_length": 131072,
            "feed_forward_length": 1024, "vocab_size": VOCAB, "architecture": "llama", "quantization": "Q4_K_M",
            "tied_embeddings": False, "token_embd": VOCAB * E * 144 // 256,
        }, id="llama-untied-token-embd-leaves-the-gpu"),
        pytest.param("qwen2", QWEN2, {"output": False}, {
            "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 64, "architecture": "qwen2",
        }, id="qwen2-tied-nothing-subtracted"),
        pytest.param("gemma3", GEMMA3, {"layers": 12, "output": False}, {
            "layers": 12, "head_dim": 128, "sliding_window": 512, "sliding_window_pattern": 6, "architecture": "gemma3",
        }, id="gemma3-five-of-six-windowed"),
        pytest.param("gpt-oss", GPT_OSS, {"layers": 4, "file_type": 38}, {
            "layers": 4, "heads": 8, "kv_heads": 2, "head_dim": 64, "feed_forward_length": 128, "expert_count": 32,
            "expert_used_count": 4, "sliding_window": 128, "sliding_window_pattern": 2, "quantization": "MXFP4",
            "tied_embeddings": False,
        }, id="gpt-oss-moe-alternating-window"),
        pytest.param("bert", BERT, {"output": False, "file_type": 1}, {
            "embedding": True, "quantization": "F16", "kv_heads": 4,
        }, id="bert-embedding-model"),
    ],
)
def test_import_reads_the_files_own_architecture(
    tmp_path: Path, arch: str, keys: dict[str, Any], options: dict[str, Any], expected: dict[str, Any]
) -> None:
    path = write_gguf(tmp_path / "model.gguf", arch, keys, **options)
    imported = entry_from_gguf(read_gguf(path))
    assert imported.tag == f"tiny-{arch}:1m"
    assert imported.entry["size"] == path.stat().st_size
    for field, value in expected.items():
        assert imported.entry[field] == value, field
    if "tied_embeddings" not in expected:
        assert "token_embd" not in imported.entry and imported.entry.get("tied_embeddings", True) is True


def test_the_entry_loads_as_an_overlay_and_is_estimated_from_the_file(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf", "gemma3", GEMMA3, layers=12, output=False)
    result = CliRunner().invoke(app, ["catalog", "import", str(path), "--tag", "myorg/tiny:v1"])
    assert result.exit_code == 0, result.output
    assert "# tensors:" in result.stdout and "token_embd kept in host memory 0 B" in result.stdout
    assert "# note: tied embeddings (no output.weight)" in result.stdout  # gemma ties them
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(result.stdout)
    spec = load_catalog(overlay).resolve("myorg/tiny:v1")
    assert (spec.layers, spec.sliding_window, spec.sliding_window_pattern) == (12, 512, 6)
    assert spec.tied_embeddings and spec.size_bytes == path.stat().st_size
    # 2 full layers hold the context, 10 windowed ones 512 + 512 cells
    assert kv_cache_bytes(spec, context=8192, parallel=1, kv_type="f16") == (2 * 8192 + 10 * 1024) * 1 * 256 * 2
    pod = estimate_pod([("myorg/tiny:v1", spec)], OllamaSettings(flash_attention=True), safety_margin=0)
    assert pod.models[0].weights_bytes == spec.size_bytes  # tied: the output copy of token_embd is on the GPU
    assert yaml.safe_load(result.stdout)["models"]["myorg/tiny:v1"]["source"].startswith("GGUF ")


@pytest.mark.parametrize(
    ("keys", "options", "note"),
    [
        pytest.param({**LLAMA, "attention.sliding_window": 4096}, {}, "no known layer pattern for llama",
                     id="window-of-an-unknown-layout-is-left-out"),
        pytest.param({**LLAMA, "attention.head_count_kv": [2, 0]}, {}, "recurrent", id="hybrid-kv-heads-array"),
        pytest.param(LLAMA, {"file_type": 30}, "nearest bits per weight", id="unnamed-file-type"),
    ],
)
def test_what_the_catalog_cannot_say_exactly_is_noted(
    tmp_path: Path, keys: dict[str, Any], options: dict[str, Any], note: str
) -> None:
    imported = entry_from_gguf(read_gguf(write_gguf(tmp_path / "m.gguf", "llama", keys, **options)))
    assert any(note in n for n in imported.notes), imported.notes
    assert "sliding_window" not in imported.entry


def test_a_per_layer_window_pattern_keeps_at_least_its_full_layers(tmp_path: Path) -> None:
    pattern = [True, True, True, False] * 3  # 3 full of 12
    keys = {**GEMMA3, "attention.sliding_window_pattern": pattern}
    imported = entry_from_gguf(read_gguf(write_gguf(tmp_path / "m.gguf", "gemma3", keys, layers=12)))
    assert 12 // imported.entry["sliding_window_pattern"] >= 3


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


BROKEN: list[Any] = [
    pytest.param(lambda p: _written(p, b"FROM llama3.1\nTEMPLATE {{ .Prompt }}\n"), "not a GGUF file",
                 id="a-modelfile-blob"),
    pytest.param(lambda p: _written(p, b""), "an empty file", id="empty"),
    pytest.param(lambda p: _truncate(write_gguf(p, "llama", LLAMA), 0.6), "truncated", id="tensor-data-cut-short"),
    pytest.param(lambda p: _truncate(write_gguf(p, "llama", LLAMA), 0.02), "truncated or corrupt",
                 id="header-cut-short"),
    pytest.param(lambda p: write_gguf(p, "llama", {**LLAMA, "block_count": 10_000_000}), "absurd",
                 id="absurd-layer-count"),
    pytest.param(lambda p: write_gguf(p, "llama", {**LLAMA, "context_length": 1 << 30}), "absurd",
                 id="absurd-context"),
    pytest.param(lambda p: write_gguf(p, "llama", {k: v for k, v in LLAMA.items() if k != "block_count"}),
                 "lacks llama.block_count", id="missing-block-count"),
    pytest.param(lambda p: write_gguf(p, "llama", {**LLAMA, "attention.head_count_kv": 3}),
                 "do not divide the 8 attention heads", id="kv-heads-not-dividing"),
    pytest.param(_directory, "a directory", id="a-directory"),
    pytest.param(lambda p: p, "cannot read it", id="no-such-file"),
]


@pytest.mark.parametrize(("make", "message"), BROKEN)
def test_broken_files_give_a_clear_error(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    path = make(tmp_path / "model.gguf")
    with pytest.raises(GgufImportError) as caught:
        entry_from_gguf(read_gguf(path))
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)
    result = CliRunner().invoke(app, ["catalog", "import", str(path)])
    assert result.exit_code == 2 and message in result.stderr


def test_a_tag_that_is_not_a_model_tag_is_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", "llama", LLAMA)
    result = CliRunner().invoke(app, ["catalog", "import", str(path), "--tag", ":v1"])
    assert result.exit_code == 2 and "is not a model tag" in result.stderr
