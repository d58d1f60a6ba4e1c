"""A catalog entry from a model file's own facts: GGUF metadata and tensor table -> overlay entry.

`GgufSummary` is what `webhook.state.gguf` reads out of a file (plain values: the core never
imports the `gguf` package); `entry_from_gguf` turns it into a catalog entry (the YAML mapping of
`webhook.core.catalog_schema.Entry`) with the notes a reader needs, or raises `GgufImportError`
naming the key that is missing or absurd. The entry is checked by the catalog's own validation, so
what is printed loads as an overlay. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.core.catalog import Catalog, CatalogError, normalize_ref
from webhook.core.catalog_schema import BITS

Scalar = int | float | str | bool
MetaValue = Scalar | tuple[Scalar, ...]
#: llama_ftype (GGUF `general.file_type`) -> the catalog's quantisation names
FILE_TYPES: Mapping[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
    38: "MXFP4",
}
#: llama.cpp's per-architecture sliding-window layouts where the GGUF has no
#: `<arch>.attention.sliding_window_pattern` (src/llama-model.cpp `set_swa_pattern`)
SWA_PATTERNS: Mapping[str, int] = {"gemma2": 2, "gemma3": 6, "gpt-oss": 2, "cohere2": 4}
#: bounds no real model reaches: past them the file is corrupt or not what it claims to be
LIMITS: Mapping[str, int] = {
    "layers": 4096, "heads": 8192, "kv_heads": 8192, "head_dim": 8192, "value_head_dim": 8192,
    "embedding_length": 1 << 20, "feed_forward_length": 1 << 22, "vocab_size": 1 << 23,
    "context_length": 1 << 25, "expert_count": 1 << 14, "expert_used_count": 1 << 14, "sliding_window": 1 << 25,
}


class GgufImportError(ValueError):
    """A model file that cannot become a catalog entry; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class GgufSummary:
    """What a GGUF file says about itself: metadata (scalars, numeric arrays as tuples), the number
    of tokenizer tokens, and the tensor table as (name, ggml type, elements, bytes)."""

    source: str
    file_bytes: int
    metadata: Mapping[str, MetaValue]
    vocab_tokens: int
    tensors: tuple[tuple[str, str, int, int], ...]

    @property
    def tensor_bytes(self) -> int:
        return sum(size for *_, size in self.tensors)

    @property
    def tensor_elements(self) -> int:
        return sum(elements for _, _, elements, _ in self.tensors)

    def tensor(self, name: str) -> int | None:
        return next((size for n, _, _, size in self.tensors if n == name), None)


@dataclass(frozen=True, slots=True)
class ImportedEntry:
    tag: str
    entry: dict[str, Any]
    notes: tuple[str, ...] = field(default=())


def entry_from_gguf(summary: GgufSummary, *, tag: str | None = None) -> ImportedEntry:
    """The catalog entry for the model in `summary`, under `tag` (default: from its metadata)."""
    arch = _text(summary, "general.architecture")
    notes: list[str] = []
    meta = _Meta(summary, arch)
    heads, kv_heads = meta.widest("attention.head_count"), meta.widest("attention.head_count_kv", notes)
    embedding = meta.number("embedding_length")
    fields: dict[str, Any] = {
        "size": summary.file_bytes,
        "layers": meta.number("block_count"),
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": meta.optional("attention.key_length") or embedding // max(heads, 1),
        "embedding_length": embedding,
        "vocab_size": summary.vocab_tokens or meta.number("vocab_size"),
        "context_length": meta.number("context_length"),
    }
    value_dim = meta.optional("attention.value_length")
    if value_dim and value_dim != fields["head_dim"]:
        fields["value_head_dim"] = value_dim
    fields.update(_ffn(meta))
    fields.update(_window(meta, arch, fields["layers"], notes))
    fields.update(_embeddings(summary, notes))
    if meta.present("pooling_type"):
        fields["embedding"] = True
    fields["architecture"] = arch
    fields["quantization"] = _quantization(summary, notes)
    fields["source"] = f"GGUF {summary.source} (ollama-guard catalog import)"
    _check_bounds(summary, fields)
    name = tag or _default_tag(summary)
    _validate(summary, name, fields)
    return ImportedEntry(tag=name, entry=fields, notes=tuple(notes))


class _Meta:
    """`<arch>.<key>` lookups with the errors a reader can act on."""

    def __init__(self, summary: GgufSummary, arch: str) -> None:
        self.summary, self.arch = summary, arch

    def _raw(self, key: str) -> MetaValue | None:
        return self.summary.metadata.get(f"{self.arch}.{key}")

    def present(self, key: str) -> bool:
        return self._raw(key) is not None

    def optional(self, key: str) -> int:
        value = self._raw(key)
        if value is None:
            return 0
        if isinstance(value, tuple):
            value = max((v for v in value if isinstance(v, int) and not isinstance(v, bool)), default=0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise GgufImportError(f"{self.summary.source}: {self.arch}.{key} = {value!r} is not a whole number")
        return value

    def number(self, key: str) -> int:
        value = self.optional(key)
        if value <= 0:
            raise GgufImportError(f"{self.summary.source}: the GGUF metadata lacks {self.arch}.{key} (or it is 0)")
        return value

    def widest(self, key: str, notes: list[str] | None = None) -> int:
        """A per-layer array's largest value (hybrid models: 0 on recurrent layers)."""
        raw = self._raw(key)
        if notes is not None and isinstance(raw, tuple) and 0 in raw:
            notes.append(f"{self.arch}.{key} is 0 on some layers (recurrent): every layer counted with attention")
        return self.number(key)


def _text(summary: GgufSummary, key: str) -> str:
    value = summary.metadata.get(key)
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value):
        raise GgufImportError(f"{summary.source}: the GGUF metadata lacks a valid {key} ({value!r})")
    return value


def _ffn(meta: _Meta) -> dict[str, int]:
    experts, used = meta.optional("expert_count"), meta.optional("expert_used_count")
    per_expert = meta.optional("expert_feed_forward_length")
    out = {"feed_forward_length": per_expert if experts and per_expert else meta.optional("feed_forward_length")}
    if experts and used:
        out |= {"expert_count": experts, "expert_used_count": used}
    return {k: v for k, v in out.items() if v}


def _window(meta: _Meta, arch: str, layers: int, notes: list[str]) -> dict[str, int]:
    window = meta.optional("attention.sliding_window")
    if not window:
        return {}
    pattern_raw = meta.summary.metadata.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern_raw, tuple):  # per layer, true = windowed: keep at least as many full layers
        full = sum(1 for windowed in pattern_raw if not windowed)
        pattern = max((n for n in range(2, layers + 2) if layers // n >= full), default=0)
    elif isinstance(pattern_raw, int) and not isinstance(pattern_raw, bool) and pattern_raw >= 2:
        pattern = pattern_raw
    else:
        pattern = SWA_PATTERNS.get(arch, 0)
    if pattern < 2:
        notes.append(f"sliding window {window} with no known layer pattern for {arch}: plain formula (the safe side)")
        return {}
    return {"sliding_window": window, "sliding_window_pattern": pattern}


def _embeddings(summary: GgufSummary, notes: list[str]) -> dict[str, Any]:
    token_embd = summary.tensor("token_embd.weight")
    if token_embd is None or summary.tensor("output.weight") is None:
        notes.append("tied embeddings (no output.weight): llama.cpp copies token_embd to the GPU, nothing subtracted")
        return {}
    return {"tied_embeddings": False, "token_embd": token_embd}


def _quantization(summary: GgufSummary, notes: list[str]) -> str:
    file_type = summary.metadata.get("general.file_type")
    if isinstance(file_type, int) and file_type in FILE_TYPES:
        return FILE_TYPES[file_type]
    bits = summary.tensor_bytes * 8 / max(summary.tensor_elements, 1)
    nearest = min(BITS, key=lambda name: abs(float(BITS[name]) - bits))
    notes.append(f"general.file_type {file_type!r} has no catalog name: {nearest}, the nearest bits per weight")
    return nearest


def _check_bounds(summary: GgufSummary, fields: Mapping[str, Any]) -> None:
    for name, limit in LIMITS.items():
        value = fields.get(name)
        if isinstance(value, int) and value > limit:
            raise GgufImportError(
                f"{summary.source}: {name} = {value:,} is absurd (more than {limit:,}): a corrupt file?"
            )
    if not summary.tensors or summary.tensor_bytes > summary.file_bytes:
        raise GgufImportError(
            f"{summary.source}: its tensors ({summary.tensor_bytes:,} B) do not fit the file ({summary.file_bytes:,} B)"
        )


def _default_tag(summary: GgufSummary) -> str:
    meta = summary.metadata
    base = next((v for k in ("general.basename", "general.name") if isinstance(v := meta.get(k), str) and v), "custom")
    size = meta.get("general.size_label")
    return f"{_slug(base)}:{_slug(size) if isinstance(size, str) and size else 'latest'}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "custom"


def _validate(summary: GgufSummary, tag: str, fields: dict[str, Any]) -> None:
    if not normalize_ref(tag)[0]:
        raise GgufImportError(f"--tag {tag!r} is not a model tag like myorg/custom:v1")
    try:
        Catalog().with_overlay({"models": {tag: fields}}, source=summary.source)
    except CatalogError as exc:
        raise GgufImportError(str(exc)) from None

