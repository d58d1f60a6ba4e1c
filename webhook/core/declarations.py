"""What a pod declares about its models (design §4).

`ollama-guard.io/models` is authoritative when present. Otherwise models are discovered in
`ollama pull|run|create … FROM` commands of the containers' `command`/`args`,
`lifecycle.postStart.exec.command` (the Helm chart's shell script, including the older
`echo "m1 m2" | xargs -n1 /bin/ollama pull` form) and init containers; `$VAR`/`${VAR}` are
expanded from the container's literal env. Malformed annotations raise `DeclarationError` with
the annotation name and the accepted form. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from webhook.core.quantity import QuantityError, parse_quantity, parse_vram_mib, whole_number
from webhook.core.tenants import (
    ANN_CONTEXT,
    ANN_MODELS,
    ANN_VRAM,
    ContainerFacts,
    DeclarationError,
    PodFacts,
    QuantityDeclarationError,
)

Source = Literal["annotation", "discovered", "none"]
MAX_MODELS = 32
MAX_CONTEXT = 1 << 21

_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]*$", re.IGNORECASE)
_TOKEN = r"[^\s;&|'\"`()<>\\]+"
#: `ollama` at the start, after whitespace or after one of ;&|(/'"` (a lookbehind, so that the pattern
#: starts with the literal and the regex engine searches for it instead of trying every position)
_CMD = re.compile(rf"ollama(?<![^\s;&|(/'\"`]ollama)\s+(?:pull|run)\s+(?:-\S+\s+)*({_TOKEN})")
_XARGS = re.compile(r"echo\s+(?:-n\s+)?([\"']?)([^\"'|\n]*)\1\s*\|\s*xargs\s+(?:-\S+\s+)*\S*ollama\s+(?:pull|run)\b")
_FROM = re.compile(rf"(?:^|[\s\"'])FROM\s+({_TOKEN})", re.MULTILINE)
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_CREATE = re.compile(r"ollama\s+create\b")


@dataclass(frozen=True, slots=True)
class Declaration:
    models: tuple[str, ...]
    source: Source
    vram_mib: int | None
    context_length: int | None


def read_declaration(pod: PodFacts) -> Declaration:
    """The models, VRAM and context a pod declares, by annotation or discovery."""
    ann = pod.annotations
    vram: int | None = None
    if ANN_VRAM in ann:
        if _is_zero(ann[ANN_VRAM]):
            raise DeclarationError(
                f'pod annotation {ANN_VRAM}="{ann[ANN_VRAM]}" is zero; declare the VRAM the pod really uses, e.g. 24Gi'
            )
        try:
            vram = parse_vram_mib(ann[ANN_VRAM])
        except QuantityError as exc:
            raise QuantityDeclarationError(
                f"pod annotation {ANN_VRAM}: {exc}; declare the pod's whole VRAM, at least 1Mi"
            ) from None
    context: int | None = None
    if ANN_CONTEXT in ann:
        context = parse_positive_int(ann[ANN_CONTEXT], what=f"pod annotation {ANN_CONTEXT}", limit=MAX_CONTEXT)
    if ANN_MODELS in ann:
        return Declaration(parse_models(ann[ANN_MODELS]), "annotation", vram, context)
    found = discover_models(pod.containers)
    return Declaration(found, "discovered" if found else "none", vram, context)


def parse_models(text: str) -> tuple[str, ...]:
    """Parse `ollama-guard.io/models`: comma-separated model references."""
    refs = [part.strip() for part in text.split(",")]
    refs = [r for r in refs if r]
    if not refs:
        raise DeclarationError(
            f'pod annotation {ANN_MODELS}="{text}" names no model; use comma-separated Ollama '
            'references such as "llama3.1:8b, qwen2.5:14b-instruct-q8_0"'
        )
    for ref in refs:
        if len(ref) > 200 or not _REF.match(ref):
            raise DeclarationError(
                f'pod annotation {ANN_MODELS}: "{ref[:80]}" is not an Ollama model reference; use '
                'names such as "llama3.1:8b" or "myorg/custom:latest", separated by commas'
            )
    unique = tuple(dict.fromkeys(refs))
    if len(unique) > MAX_MODELS:
        raise DeclarationError(f"pod annotation {ANN_MODELS} lists {len(unique)} models; at most {MAX_MODELS}")
    return unique


def parse_positive_int(text: str, *, what: str, limit: int) -> int:
    value = whole_number(text.strip(), minimum=1, maximum=limit)
    if value is not None:
        return value
    raise DeclarationError(f'{what}="{text[:80]}" is invalid: use a whole number from 1 to {limit}')


def discover_models(containers: Iterable[ContainerFacts]) -> tuple[str, ...]:
    """Models named in `ollama pull|run` / `ollama create … FROM` commands, in order of appearance."""
    found: list[str] = []
    for container in containers:
        for command in container.commands:
            found.extend(_models_in(" ".join(command), container.env))
    return tuple(dict.fromkeys(m for m in found if _REF.match(m) and len(m) <= 200))


def _models_in(script: str, env: Mapping[str, str | None]) -> list[str]:
    if "$" in script:  # nothing to expand otherwise
        script = _VAR.sub(lambda m: env.get(m.group(1) or m.group(2)) or m.group(0), script)
    models = [m.group(1) for m in _CMD.finditer(script)]
    for match in _XARGS.finditer(script):
        models.extend(match.group(2).split())
    if _CREATE.search(script):
        models.extend(m.group(1) for m in _FROM.finditer(script))
    return [m for m in models if not m.startswith("$") and not m.startswith("-")]


def _is_zero(text: str) -> bool:
    try:
        return parse_quantity(text) == 0
    except QuantityError:
        return False
