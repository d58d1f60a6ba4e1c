"""The demand figures the tests expect, worked out from design §5 and §5.1 independently of
`webhook.core.estimate` (a second implementation of the same text, so a test that compares the
guard's number with one of these checks the arithmetic, not a copy of it)."""

from __future__ import annotations

import math

MIB = 1 << 20


def design_demand_mib(
    *,
    size_bytes: int,
    token_embd: int,
    layers: int,
    kv_heads: int,
    head_dim: int,
    embedding: int,
    ffn: int,
    heads: int,
    vocab: int,
    ctx: int,
    flash: bool,
    margin: float = 0.10,
) -> int:
    """One model, parallel 1, f16 KV (ctx a multiple of 256), runner 589 MiB, no per-pod overhead."""
    ub = min(ctx, 512)
    weights = size_bytes - token_embd
    kv = ctx * layers * kv_heads * head_dim * 2 * 2
    activations = 4 * ub * (3 * ffn + 4 * max(embedding, heads * head_dim))
    flash_graph = activations + ub * ctx * 2
    pool = max(16 * MIB, 2 * ub * ffn)
    if flash:
        graph, headroom = flash_graph, pool
    else:
        attention = 4 * ub * (1 + 4 * embedding + ctx * (1 + heads))
        graph = max(attention, 4 * ub * (embedding + vocab), flash_graph)
        headroom = pool + 96 * MIB + 2 * ub * ctx * heads
    total = weights + kv + graph + headroom + 589 * MIB
    return math.ceil(total * round((1 + margin) * 1_000_000) / 1_000_000 / MIB)


#: the mutating webhook injects OLLAMA_FLASH_ATTENTION=1 (policy `flash_attention`, default on)
FLASH_BY_DEFAULT = True

#: llama3.1:8b (design §5 table: 32 layers, 8 KV heads, head dim 128; E 4096, FFN 14336, 32 heads,
#: vocabulary 128256; 4,920,753,328 bytes, untied token_embd Q4_K: 128256 × 4096 × 4.5 bits) at the
#: injected context 8192, as the mutating webhook requests it
LLAMA31_8B_MIB = design_demand_mib(
    size_bytes=4_920_753_328,
    token_embd=128256 * 4096 * 9 // 16,
    layers=32,
    kv_heads=8,
    head_dim=128,
    embedding=4096,
    ffn=14336,
    heads=32,
    vocab=128256,
    ctx=8192,
    flash=FLASH_BY_DEFAULT,
)
