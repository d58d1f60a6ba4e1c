"""The model catalog: Ollama model references -> weights size and architecture (`ModelSpec`).

Owns the catalog data (`catalog.yaml` shipped in the package, plus an optional user overlay of the
same shape) and tag resolution the way Ollama resolves names: case-insensitive, registry prefix
and `library/` namespace and digest dropped, a missing tag meaning `latest`, `:latest` an alias.
A tag that is not listed but reads `<listed size>[-<variant>...][-<quant>]` resolves to the listed
entry, its size scaled by bits per weight when the quantisation differs (`derived=True`).
Every entry is validated; a bad one raises `CatalogError` naming the source, tag and field.
Pure: the only I/O is reading the packaged YAML and an overlay file whose path is passed in.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from webhook.core.quantity import QuantityError, parse_bytes

_REGISTRY_PREFIXES: Final = ("registry.ollama.ai/", "ollama.com/")
# Variants that name a fine-tune of the same weights shape; any other part makes a tag unknown
# (e.g. `128k` or `qat` change the context or the size, so guessing would under-estimate).
_VARIANTS: Final = frozenset({"instruct", "text", "chat", "it", "code", "base", "vision"})
# Quantisation as written in tags (lowercase) -> (canonical name, bits per weight).
_QUANTS: Final[Mapping[str, tuple[str, Fraction]]] = {
    "q2_k": ("Q2_K", Fraction("3.35")),
    "q3_k_s": ("Q3_K_S", Fraction("3.5")),
    "q3_k_m": ("Q3_K_M", Fraction("3.9")),
    "q3_k_l": ("Q3_K_L", Fraction("4.3")),
    "q4_0": ("Q4_0", Fraction("4.5")),
    "q4_1": ("Q4_1", Fraction("5.0")),
    "q4_k_s": ("Q4_K_S", Fraction("4.6")),
    "q4_k_m": ("Q4_K_M", Fraction("4.85")),
    "q5_0": ("Q5_0", Fraction("5.5")),
    "q5_1": ("Q5_1", Fraction("6.0")),
    "q5_k_s": ("Q5_K_S", Fraction("5.5")),
    "q5_k_m": ("Q5_K_M", Fraction("5.7")),
    "q6_k": ("Q6_K", Fraction("6.6")),
    "q8_0": ("Q8_0", Fraction("8.5")),
    "f16": ("F16", Fraction(16)),
    "fp16": ("F16", Fraction(16)),
    "bf16": ("BF16", Fraction(16)),
    "f32": ("F32", Fraction(32)),
    "fp32": ("F32", Fraction(32)),
}
_BITS: Final = dict(_QUANTS.values())
_LIBRARY_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>TB|GB|MB|kB|KB|B)")
_UNITS: Final = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "kB": 10**3, "KB": 10**3, "B": 1}


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


class _Entry(BaseModel):
    """One `models:` entry as written in YAML (`heads` precedes `kv_heads` for the check)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    size: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    context_length: int = Field(gt=0)
    embedding_length: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    architecture: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    quantization: str

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return _parse_size(value) if isinstance(value, str) else value

    @field_validator("quantization", mode="before")
    @classmethod
    def _quantization(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() in _QUANTS:
            return _QUANTS[value.lower()][0]
        raise ValueError(f"unknown quantization {value!r}; expected one of {', '.join(_BITS)}")

    @field_validator("kv_heads")
    @classmethod
    def _kv_heads(cls, value: int, info: ValidationInfo) -> int:
        heads = info.data.get("heads")
        if isinstance(heads, int) and heads % value:
            raise ValueError(f"{value} KV heads do not divide the {heads} attention heads")
        return value


def _parse_size(text: str) -> int:
    """A size as the Ollama library prints it (`4.9GB`, decimal units) or a Kubernetes quantity."""
    match = _LIBRARY_SIZE.fullmatch(text)
    if match is not None:
        return math.ceil(Decimal(match["number"]) * _UNITS[match["unit"]])
    try:
        return parse_bytes(text)
    except QuantityError as exc:
        raise ValueError(
            f"size {text!r}: {exc.reason}; write a size like 4.9GB or 398MB, "
            "integer bytes or a Kubernetes quantity such as 4600Mi"
        ) from None


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
        quant = parts.pop() if parts and parts[-1] in _QUANTS else None
        base = self._lookup(f"{name}:{size}")
        if not name or base is None or any(part not in _VARIANTS for part in parts):
            raise UnknownModelError(ref)
        if quant is None or _QUANTS[quant][0] == base.quantization:
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
    canonical, bits = _QUANTS[quant]
    size = math.ceil(base.size_bytes * bits / _BITS[base.quantization])
    return replace(base, tag=f"{base.tag}-{quant}", size_bytes=size, quantization=canonical, derived=True)


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
            entry = _Entry.model_validate(dict(body))
        except ValidationError as exc:
            raise CatalogError(_describe(exc, source, tag)) from None
        fields = entry.model_dump(exclude={"size"})
        models[tag] = ModelSpec(tag=tag, size_bytes=entry.size, **fields)
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
