"""The model catalog: Ollama model references -> weights size and architecture (`ModelSpec`).

Owns the catalog data (`catalog.yaml` shipped in the package, plus an optional user overlay of the
same shape) and tag resolution the way Ollama resolves names: case-insensitive, registry prefix
and `library/` namespace and digest dropped, a missing tag meaning `latest`, `:latest` an alias.
A tag that is not listed but reads `<listed size>[-<variant>...][-<quant>]` resolves to the listed
entry, its size scaled by bits per weight when the quantisation differs (`derived=True`).
Every entry is validated (`webhook.core.catalog_schema`: its fields, and a library size such as
`4.9GB` read as the upper end of its rounding); a bad one raises `CatalogError` naming the source,
tag and field.
Pure: the only I/O is reading the packaged YAML and an overlay file whose path is passed in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml
from pydantic import ValidationError

from webhook.core.catalog_schema import BITS, EMBD_BITS, LIBRARY_SIZE, QUANTS, Entry

_REGISTRY_PREFIXES: Final = ("registry.ollama.ai/", "ollama.com/")
# Variants that name a fine-tune of the same weights shape; any other part makes a tag unknown
# (e.g. `128k` or `qat` change the context or the size, so guessing would under-estimate).
_VARIANTS: Final = frozenset({"instruct", "text", "chat", "it", "code", "base", "vision"})
_NO_BITS: Final = Fraction(0)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One resolved model: weights size and the architecture figures the estimate needs."""

    tag: str
    size_bytes: int
    layers: int
    kv_heads: int
    head_dim: int
    context_length: int
    embedding_length: int
    heads: int
    vocab_size: int
    architecture: str
    quantization: str
    derived: bool = False
    #: V head dim when it differs from the K head dim `head_dim` (0: the same)
    value_head_dim: int = 0
    #: FFN width per token: `intermediate_size`, or per expert for a mixture of experts (0: unknown)
    feed_forward_length: int = 0
    expert_count: int = 0
    expert_used_count: int = 0
    #: sliding-window attention: the window, and every `sliding_window_pattern`-th layer full
    sliding_window: int = 0
    sliding_window_pattern: int = 0
    #: the output projection reuses `token_embd` (then llama.cpp also copies it to the GPU)
    tied_embeddings: bool = True
    #: exact bytes of `token_embd` (from the GGUF's tensor table); 0: derived when untied
    token_embd_bytes: int = 0
    #: an embedding model (GGUF `<arch>.pooling_type`): Ollama runs it with batch = context
    embedding: bool = False
    #: where the entry's numbers come from (catalog `source:`)
    source: str = ""
    #: the size was written in the library's rounded form and stands for its upper end
    size_rounded: bool = False

    @property
    def v_head_dim(self) -> int:
        return self.value_head_dim or self.head_dim

    def host_token_embd(self) -> tuple[int, str]:
        """Bytes of `token_embd` llama.cpp keeps in host memory, and how that figure was found.

        llama.cpp loads the input embedding into host memory (it is only row-gathered); when the
        output projection is the same tensor (tied embeddings) a copy goes to the GPU, so nothing
        leaves the GPU's count. Unknown exact size: vocab × embedding × the file type's floor bits.
        """
        if self.tied_embeddings:
            return 0, "tied embeddings: the output copy stays on the GPU"
        if self.token_embd_bytes:
            return self.token_embd_bytes, "token_embd tensor size from the catalog"
        bits = EMBD_BITS.get(self.quantization, _NO_BITS)
        how = f"derived: vocab {self.vocab_size} × embedding {self.embedding_length} × {float(bits):g} bits"
        return self.host_token_embd_bytes(), how

    def host_token_embd_bytes(self) -> int:
        """The bytes of `host_token_embd` alone: what every estimate needs, without the wording."""
        if self.tied_embeddings:
            return 0
        if self.token_embd_bytes:
            return self.token_embd_bytes
        bits = EMBD_BITS.get(self.quantization, _NO_BITS)
        # floor(vocab × embedding × bits / 8) in integers: the same number, without Fraction objects
        return self.vocab_size * self.embedding_length * bits.numerator // (bits.denominator * 8)


class UnknownModelError(LookupError):
    """A model reference the catalog cannot resolve; the message tells the pod author what to do."""

    def __init__(self, ref: str) -> None:
        self.ref = ref.strip()
        super().__init__(
            f'unknown model "{self.ref}": not in the catalog; declare its VRAM with the pod '
            'annotation ollama-guard.io/vram (e.g. "24Gi") or add it to the catalog overlay'
        )


class CatalogError(ValueError):
    """A malformed catalog or overlay; the message names the file, the entry and the field."""


@functools.lru_cache(maxsize=4096)
def normalize_ref(ref: str) -> tuple[str, str]:
    """`registry.ollama.ai/library/Llama3.1:8B@sha256:…` -> `("llama3.1", "8b")`; no tag: latest.

    Memoised: a cluster names a few dozen models over and over."""
    text = ref.strip().lower().partition("@")[0]
    for prefix in _REGISTRY_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.removeprefix("library/")
    colon = text.rfind(":")
    if colon > text.rfind("/"):  # a colon before the last slash belongs to a registry host:port
        return text[:colon], text[colon + 1 :] or "latest"
    return text, "latest"


def _canonical(ref: str) -> str:
    name, tag = normalize_ref(ref)
    return f"{name}:{tag}"


@dataclass(frozen=True, slots=True)
class Catalog:
    """Immutable tag -> ModelSpec table with aliases; build with `load_catalog`."""

    models: Mapping[str, ModelSpec] = field(default_factory=lambda: MappingProxyType({}))
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def resolve(self, ref: str) -> ModelSpec:
        """The spec for a model reference; raises UnknownModelError when it cannot be resolved."""
        name, tag = normalize_ref(ref)
        exact = self._lookup(f"{name}:{tag}")
        if exact is not None:
            return exact
        size, *parts = tag.split("-")
        quant = parts.pop() if parts and parts[-1] in QUANTS else None
        base = self._lookup(f"{name}:{size}")
        if not name or base is None or any(part not in _VARIANTS for part in parts):
            raise UnknownModelError(ref)
        if quant is None or QUANTS[quant][0] == base.quantization:
            return base
        return _requantize(base, quant)

    def known_tags(self) -> tuple[str, ...]:
        """Every listed tag, model entries and aliases, sorted."""
        return tuple(sorted({*self.models, *self.aliases}))

    def with_overlay(self, entries: Mapping[str, Any], *, source: str = "overlay") -> Catalog:
        """A new catalog with `entries` (catalog YAML shape) added, or replacing entries whole."""
        raw_models, raw_aliases = _split_document(entries, source)
        added = _build_models(raw_models, source)
        models = {**self.models, **added}
        aliases = {key: target for key, target in self.aliases.items() if key not in added}
        aliases.update(_build_aliases(raw_aliases, source))
        for key, target in aliases.items():
            if key in models:
                raise CatalogError(f'{source}: alias "{key}": already a model entry')
            if target not in models:
                raise CatalogError(f'{source}: alias "{key}": target "{target}" is not a model entry of the catalog')
        return Catalog(MappingProxyType(models), MappingProxyType(aliases))

    def _lookup(self, tag: str) -> ModelSpec | None:
        return self.models.get(self.aliases.get(tag, tag))


def _requantize(base: ModelSpec, quant: str) -> ModelSpec:
    """The base entry at another quantisation: weights scaled by bits per weight, rounded up."""
    canonical, bits = QUANTS[quant]
    size = math.ceil(base.size_bytes * bits / BITS[base.quantization])
    # an exact token_embd scales by the floor bits of the two types (rounded down: the safe side)
    embd = math.floor(base.token_embd_bytes * EMBD_BITS[canonical] / EMBD_BITS[base.quantization])
    return replace(
        base, tag=f"{base.tag}-{quant}", size_bytes=size, quantization=canonical, derived=True, token_embd_bytes=embd
    )


def _split_document(document: object, source: str) -> tuple[Mapping[Any, Any], Mapping[Any, Any]]:
    if not isinstance(document, Mapping):
        raise CatalogError(f"{source}: expected a mapping with `models:` and/or `aliases:`")
    unknown = sorted(str(key) for key in document if key not in ("models", "aliases"))
    if unknown:
        raise CatalogError(f"{source}: unknown top-level key {unknown[0]!r}; expected `models:` and/or `aliases:`")
    sections: list[Mapping[Any, Any]] = []
    for key in ("models", "aliases"):
        value = document.get(key)
        if not isinstance(value, Mapping | None):
            raise CatalogError(f"{source}: `{key}:` must be a mapping of model tags")
        sections.append(value or {})
    return sections[0], sections[1]


def _tag_key(key: object, source: str, section: str) -> str:
    if not isinstance(key, str) or not normalize_ref(key)[0]:
        raise CatalogError(f"{source}: {section} key {key!r} is not a model tag like llama3.1:8b")
    return _canonical(key)


def _build_models(raw: Mapping[Any, Any], source: str) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = {}
    for key, body in raw.items():
        tag = _tag_key(key, source, "models")
        if tag in models:
            raise CatalogError(f'{source}: entry "{tag}": listed twice')
        if not isinstance(body, Mapping):
            raise CatalogError(f'{source}: entry "{tag}": expected a mapping of fields')
        try:
            entry = Entry.model_validate(dict(body))
        except ValidationError as exc:
            raise CatalogError(_describe(exc, source, tag)) from None
        fields = entry.model_dump(exclude={"size", "token_embd"})
        rounded = isinstance(body.get("size"), str) and LIBRARY_SIZE.fullmatch(body["size"]) is not None
        models[tag] = ModelSpec(
            tag=tag, size_bytes=entry.size, token_embd_bytes=entry.token_embd, size_rounded=rounded, **fields
        )
    return models


def _describe(exc: ValidationError, source: str, tag: str) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "entry"
        problems.append(f'field "{where}": {error["msg"].removeprefix("Value error, ")}')
    return f'{source}: entry "{tag}": ' + "; ".join(problems)


def _build_aliases(raw: Mapping[Any, Any], source: str) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for key, target in raw.items():
        alias = _tag_key(key, source, "aliases")
        if not isinstance(target, str) or not normalize_ref(target)[0]:
            raise CatalogError(f'{source}: alias "{alias}": target {target!r} is not a model tag')
        aliases[alias] = _canonical(target)
    return aliases


@functools.cache
def _packaged() -> Catalog:
    text = resources.files("webhook").joinpath("data/catalog.yaml").read_text(encoding="utf-8")
    return Catalog().with_overlay(yaml.safe_load(text), source="webhook/data/catalog.yaml")


def load_catalog(overlay_path: Path | None = None) -> Catalog:
    """The packaged catalog, overlaid by the YAML file at `overlay_path` when one is given."""
    if overlay_path is None:
        return _packaged()
    try:
        document = yaml.safe_load(overlay_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{overlay_path}: cannot read the catalog overlay: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{overlay_path}: the catalog overlay is not YAML: {exc}") from None
    return _packaged().with_overlay(document or {}, source=str(overlay_path))
