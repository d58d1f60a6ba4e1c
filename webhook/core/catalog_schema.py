"""The catalog YAML's entry schema (`Entry`) and the units entries are written in: quantisation
names with their bits per weight, and sizes as the Ollama library prints them.

A size in the library's form (`4.9GB`, decimal units) is rounded to its last digit, so it stands
for the upper end of that rounding (4.95 GB): the estimate must never count less than the real
file. Pure: no I/O; `webhook.core.catalog` builds `ModelSpec`s from validated entries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from webhook.core.quantity import QuantityError, parse_bytes

# Quantisation as written in tags (lowercase) -> (canonical name, bits per weight).
QUANTS: Final[Mapping[str, tuple[str, Fraction]]] = {
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
    "mxfp4": ("MXFP4", Fraction("4.25")),
}
BITS: Final = dict(QUANTS.values())
#: Bits per weight of the token embedding in a file of each type: llama.cpp's quantiser stores
#: `token_embd` in the file type's base block format (Q4_K_M -> Q4_K, 144 bytes per 256 weights;
#: llama.cpp src/llama-quant.cpp `llama_tensor_get_type`), never below it, so a size derived from
#: these is a lower bound and subtracting it from the GPU weights stays on the safe side. MXFP4
#: (gpt-oss) quantises only the experts; 4.25 is its own floor.
EMBD_BITS: Final[Mapping[str, Fraction]] = {
    "Q2_K": Fraction("2.625"), "Q3_K_S": Fraction("3.4375"), "Q3_K_M": Fraction("3.4375"),
    "Q3_K_L": Fraction("3.4375"), "Q4_0": Fraction("4.5"), "Q4_1": Fraction(5), "Q4_K_S": Fraction("4.5"),
    "Q4_K_M": Fraction("4.5"), "Q5_0": Fraction("5.5"), "Q5_1": Fraction(6), "Q5_K_S": Fraction("5.5"),
    "Q5_K_M": Fraction("5.5"), "Q6_K": Fraction("6.5625"), "Q8_0": Fraction("8.5"), "F16": Fraction(16),
    "BF16": Fraction(16), "F32": Fraction(32), "MXFP4": Fraction("4.25"),
}
LIBRARY_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>TB|GB|MB|kB|KB|B)")
_UNITS: Final = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "kB": 10**3, "KB": 10**3, "B": 1}


class Entry(BaseModel):
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
    value_head_dim: int = Field(default=0, ge=0)
    feed_forward_length: int = Field(default=0, ge=0)
    expert_count: int = Field(default=0, ge=0)
    expert_used_count: int = Field(default=0, ge=0)
    sliding_window: int = Field(default=0, ge=0)
    sliding_window_pattern: int = Field(default=0, ge=0)
    tied_embeddings: bool = True
    token_embd: int = Field(default=0, ge=0)
    embedding: bool = False
    source: str = Field(default="", max_length=400)

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("token_embd", mode="before")
    @classmethod
    def _token_embd(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return parse_bytes(value)
        except QuantityError as exc:
            raise ValueError(f"token_embd {value!r}: {exc.reason}; write integer bytes or a quantity") from None

    @field_validator("quantization", mode="before")
    @classmethod
    def _quantization(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() in QUANTS:
            return QUANTS[value.lower()][0]
        raise ValueError(f"unknown quantization {value!r}; expected one of {', '.join(BITS)}")

    @field_validator("kv_heads")
    @classmethod
    def _kv_heads(cls, value: int, info: ValidationInfo) -> int:
        heads = info.data.get("heads")
        if isinstance(heads, int) and heads % value:
            raise ValueError(f"{value} KV heads do not divide the {heads} attention heads")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Entry:
        if self.sliding_window and self.sliding_window_pattern < 2:
            raise ValueError(
                "sliding_window needs sliding_window_pattern >= 2 (every N-th layer has full attention)"
            )
        if self.sliding_window_pattern and not self.sliding_window:
            raise ValueError("sliding_window_pattern without sliding_window")
        if bool(self.expert_count) != bool(self.expert_used_count) or self.expert_used_count > self.expert_count:
            raise ValueError("expert_used_count must be set with expert_count and not exceed it")
        if self.token_embd and self.tied_embeddings:
            raise ValueError("token_embd is subtracted only for untied embeddings: set tied_embeddings: false")
        return self


def parse_size(text: str) -> int:
    """A size as the Ollama library prints it (`4.9GB`, decimal units: the upper end of its rounding,
    4.95 GB) or a Kubernetes quantity (exact)."""
    match = LIBRARY_SIZE.fullmatch(text)
    if match is not None:
        number = Decimal(match["number"])
        exponent = number.as_tuple().exponent
        half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
        return math.ceil((number + half) * _UNITS[match["unit"]])
    try:
        return parse_bytes(text)
    except QuantityError as exc:
        raise ValueError(
            f"size {text!r}: {exc.reason}; write a size like 4.9GB or 398MB, "
            "integer bytes or a Kubernetes quantity such as 4600Mi"
        ) from None
