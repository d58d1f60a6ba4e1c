"""Runtime drift (design §15): what Ollama itself says a pod holds on the GPU, against its demand.

Owns the reading of Ollama's `GET /api/ps` answer (`parse_ps`) and the comparison
(`observe`). The wire format is Ollama's `api.ProcessResponse` (`api/types.go`):

    {"models": [{"name": "llama3.1:8b", "model": "llama3.1:8b", "size": 6654289920,
                 "digest": "…", "details": {…}, "expires_at": "2025-10-17T16:47:07Z",
                 "size_vram": 6654289920, "context_length": 8192}]}

`size` and `size_vram` are bytes (Go `int64`); `context_length` exists in recent releases only;
a server with nothing loaded answers `{"models": []}` (or `null`, the Go encoding of a nil slice).
The pod's observed VRAM is the sum of `size_vram` over its loaded models.

Verdicts: `over` (observed above demand: the estimate fell short, a danger to the neighbours),
`idle` (below `idle_fraction` of the demand for at least `idle_after_seconds`: VRAM reserved but
unused), `low` (below that fraction, not for long yet), `within`, and `unknown` (the pod could not
be asked or its answer not read: never counted as zero). Pure: the clock is an argument.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from webhook.core.quantity import format_mib

MIB = 1 << 20
#: Go's int64: what `size`/`size_vram` can hold
_INT64_MAX = (1 << 63) - 1
Verdict = Literal["within", "over", "low", "idle", "unknown"]
VERDICTS: tuple[Verdict, ...] = ("over", "idle", "low", "within", "unknown")


class PsFormatError(ValueError):
    """An `/api/ps` answer that is not Ollama's ProcessResponse; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One entry of `/api/ps`: a model loaded by the pod's Ollama."""

    name: str
    size_bytes: int
    vram_bytes: int
    #: the context the runner was loaded with; None from releases that do not report it
    context_length: int | None = None
    expires_at: str = ""


@dataclass(frozen=True, slots=True)
class DriftPolicy:
    """When an observation is a finding."""

    #: below this share of the demand, the reservation is (becoming) idle
    idle_fraction: float = 0.25
    #: ... and idle once it has stayed there this long
    idle_after_seconds: float = 600.0


DEFAULT_POLICY = DriftPolicy()


@dataclass(frozen=True, slots=True)
class Observation:
    """The latest sample of one Ollama pod, and what it means."""

    namespace: str
    name: str
    node: str
    demand_mib: int
    verdict: Verdict
    #: None when unknown (unreachable, bad answer, no IP yet): never read as zero
    observed_bytes: int | None
    models: tuple[LoadedModel, ...] = ()
    #: why the verdict is `unknown` ("" otherwise)
    detail: str = ""
    #: wall-clock seconds of the sample
    sampled_at: float = 0.0
    #: since when the pod has been below `idle_fraction` of its demand (None: it is not)
    low_since: float | None = None
    #: samples that were above the demand, over this pod's life in the guard
    samples_over: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def observed_mib(self) -> int | None:
        """Observed VRAM in MiB, rounded up (a byte over a MiB boundary shows)."""
        return None if self.observed_bytes is None else math.ceil(self.observed_bytes / MIB)

    @property
    def over_bytes(self) -> int:
        if self.observed_bytes is None:
            return 0
        return max(self.observed_bytes - self.demand_mib * MIB, 0)


def parse_ps(body: bytes | str) -> tuple[LoadedModel, ...]:
    """The loaded models of an `/api/ps` answer (see the module docstring)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PsFormatError(f"not JSON: {str(exc)[:120]}") from None
    if not isinstance(document, dict):
        raise PsFormatError(f"expected a JSON object with 'models', got {type(document).__name__}")
    if "models" not in document:
        raise PsFormatError("no 'models' field: not an Ollama /api/ps answer")
    models = document["models"]
    if models is None:
        return ()
    if not isinstance(models, list):
        raise PsFormatError(f"'models' must be a list, got {type(models).__name__}")
    return tuple(_model(entry, index) for index, entry in enumerate(models))


def _model(entry: object, index: int) -> LoadedModel:
    if not isinstance(entry, dict):
        raise PsFormatError(f"models[{index}] must be an object")
    name = entry.get("name") or entry.get("model")
    if not isinstance(name, str) or not name:
        raise PsFormatError(f"models[{index}] has no name")
    context = entry.get("context_length")
    if context is not None and (not _is_count(context) or context > 1 << 32):
        raise PsFormatError(f"models[{index}] ({name}): context_length must be a whole number, got {context!r}")
    expires = entry.get("expires_at")
    return LoadedModel(
        name=name,
        size_bytes=_bytes(entry, "size", index, name, required=False),
        vram_bytes=_bytes(entry, "size_vram", index, name, required=True),
        context_length=context or None,
        expires_at=expires if isinstance(expires, str) else "",
    )


def _bytes(entry: Mapping[str, Any], field: str, index: int, name: str, *, required: bool) -> int:
    value = entry.get(field)
    if value is None and not required:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT64_MAX:
        raise PsFormatError(f"models[{index}] ({name}): {field} must be a whole number of bytes, got {value!r}")
    return value


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def observe(
    previous: Observation | None,
    *,
    namespace: str,
    name: str,
    node: str,
    demand_mib: int,
    models: Sequence[LoadedModel] | None,
    now: float,
    detail: str = "",
    policy: DriftPolicy = DEFAULT_POLICY,
) -> Observation:
    """This sample's observation: `models` as read, or None with `detail` when the pod could not be
    read. `previous` (the same pod's last observation) carries the low streak and the over count."""
    over_before = previous.samples_over if previous is not None else 0
    base = Observation(namespace, name, node, demand_mib, "unknown", None, sampled_at=now, samples_over=over_before)
    if models is None:
        return replace(base, detail=detail or "not read")
    observed = sum(m.vram_bytes for m in models)
    base = replace(base, observed_bytes=observed, models=tuple(models))
    if observed > demand_mib * MIB:
        return replace(base, verdict="over", samples_over=over_before + 1)
    if observed >= policy.idle_fraction * demand_mib * MIB:
        return replace(base, verdict="within")
    streak = previous.low_since if previous is not None and previous.low_since is not None else now
    verdict: Verdict = "idle" if now - streak >= policy.idle_after_seconds else "low"
    return replace(base, verdict=verdict, low_since=streak)


def describe_models(models: Sequence[LoadedModel]) -> str:
    """`llama3.1:8b (context 131072, 21.1 GiB)`, one per loaded model; "no model loaded" when none."""
    if not models:
        return "no model loaded"
    parts = []
    for m in models:
        context = f"context {m.context_length}" if m.context_length else "context not reported"
        parts.append(f"{m.name} ({context}, {format_mib(m.vram_bytes / MIB)} VRAM)")
    return ", ".join(parts)
