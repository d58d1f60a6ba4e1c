"""`ModelSpec.host_token_embd_bytes` (the estimate's integer fast path) is the figure the explained
`host_token_embd` gives, for every catalog entry and every file type of the derived formula."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from webhook.core.catalog import load_catalog
from webhook.core.catalog_schema import EMBD_BITS

CATALOG = load_catalog()


@pytest.mark.parametrize("tag", sorted(CATALOG.models))
def test_catalog_entries(tag: str) -> None:
    spec = CATALOG.models[tag]
    assert spec.host_token_embd_bytes() == spec.host_token_embd()[0]


@pytest.mark.parametrize("quant", [*sorted(EMBD_BITS), "unknown-type"])
def test_derived_size_is_the_floor_of_vocab_embedding_bits(quant: str) -> None:
    spec = replace(CATALOG.resolve("llama3.1:8b"), tied_embeddings=False, token_embd_bytes=0, quantization=quant)
    bits = EMBD_BITS.get(quant, 0)
    expected = math.floor(spec.vocab_size * spec.embedding_length * bits / 8)
    assert spec.host_token_embd_bytes() == expected == spec.host_token_embd()[0]
    assert expected > 0 or quant == "unknown-type"
