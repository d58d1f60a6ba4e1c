"""Reading a model file's own facts: a GGUF's metadata and tensor table, through the `gguf` package
(llama.cpp's reader; no GGUF parsing of our own). The only importer of `gguf` (and so of numpy).

`read_gguf(path)` returns a plain `webhook.core.catalog_import.GgufSummary`; a file that is not a
GGUF, is cut short or cannot be parsed raises `GgufImportError` naming the file and what is wrong.
Only reading here: what the facts mean for the catalog is `webhook.core.catalog_import`'s.
"""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFReader, GGUFValueType, ReaderField

from webhook.core.catalog_import import GgufImportError, GgufSummary, MetaValue

MAGIC = b"GGUF"
#: numeric arrays longer than this (token scores, token types) are not metadata the catalog reads
MAX_ARRAY = 16384
HINT = (
    "an Ollama model is the blob `ollama show --modelfile NAME` names on its FROM line "
    "(~/.ollama/models/blobs/sha256-…); the other blobs are its template, license and parameters"
)


def read_gguf(path: Path) -> GgufSummary:
    """The metadata and tensor table of the GGUF file at `path`."""
    size = _check_file(path)
    try:
        reader = GGUFReader(path, "r")
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
        raise GgufImportError(f"{path}: a truncated or corrupt GGUF file ({type(exc).__name__}: {exc})") from None
    tensors = tuple((t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors)
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise GgufImportError(f"{path}: truncated: its tensor data runs to byte {end:,} of a {size:,}-byte file")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return GgufSummary(
        source=str(path),
        file_bytes=size,
        metadata=_metadata(reader),
        vocab_tokens=len(tokens.data) if tokens is not None and tokens.types[:1] == [GGUFValueType.ARRAY] else 0,
        tensors=tensors,
    )


def _check_file(path: Path) -> int:
    try:
        if path.is_dir():
            raise GgufImportError(f"{path}: a directory, not a GGUF file; {HINT}")
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(len(MAGIC))
    except OSError as exc:
        raise GgufImportError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if size == 0:
        raise GgufImportError(f"{path}: an empty file, not a GGUF model")
    if head != MAGIC:
        raise GgufImportError(f"{path}: not a GGUF file (it starts with {head!r}, not {MAGIC!r}); {HINT}")
    return size


def _metadata(reader: GGUFReader) -> dict[str, MetaValue]:
    out: dict[str, MetaValue] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = _value(field)
        if value is not None:
            out[name] = value
    return out


def _value(field: ReaderField) -> MetaValue | None:
    """A scalar, or a numeric array as a tuple; string arrays and long arrays are left out."""
    if not field.types:
        return None
    if field.types[0] != GGUFValueType.ARRAY:
        value = field.contents()
        return value if isinstance(value, int | float | str | bool) else None
    if field.types[-1] in (GGUFValueType.STRING, GGUFValueType.ARRAY) or len(field.data) > MAX_ARRAY:
        return None
    values = field.contents()
    return tuple(v for v in values if isinstance(v, int | float | bool)) if isinstance(values, list) else None
