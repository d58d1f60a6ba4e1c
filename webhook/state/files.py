"""Reading Kubernetes objects from files: `kubectl get … -o yaml|json` output and manifests.

Accepts a `kind: List` (or any `*List`) of objects, several YAML documents, JSON, and folders of
such files (Helm-rendered output included). Errors name the file and the document or line; a
malformed file never yields a partial result silently. Only file reading and YAML parsing here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ijson
import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 2 << 30


class SnapshotError(ValueError):
    """A file that cannot be read as Kubernetes objects; the message names the file and place."""


#: libyaml's parser when PyYAML was built with it (10-20x faster on 100,000-pod snapshots)
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_documents(text: str, *, source: str) -> list[dict[str, Any]]:
    """All Kubernetes objects in `text`, with Lists flattened, in order."""
    if source.endswith(".json") or text.lstrip()[:1] in ("{", "["):
        try:
            documents: list[Any] = [json.loads(text)]
        except ValueError as exc:
            raise SnapshotError(f"{source}: not valid JSON: {exc}") from None
        except RecursionError:
            raise SnapshotError(f"{source}: JSON nested too deeply") from None
    else:
        documents = _load_yaml(text, source=source)
    objects: list[dict[str, Any]] = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        objects.extend(_flatten(doc, source=f"{source} (document {index})"))
    return objects


def _load_yaml(text: str, *, source: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SnapshotError(f"{source}:{where}: not valid YAML/JSON: {problem}") from None


def _flatten(doc: object, *, source: str) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        raise SnapshotError(f"{source}: expected a Kubernetes object (a mapping), got {type(doc).__name__}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        for i, item in enumerate(doc["items"]):
            yield from _flatten(item, source=f"{source} item {i}")
        return
    if not isinstance(kind, str) or not kind:
        raise SnapshotError(f"{source}: object has no 'kind'")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name") or meta.get("generateName"), str):
        raise SnapshotError(f"{source}: {kind} has no metadata.name")
    yield doc


def iter_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        elif path.exists():
            yield path
        else:
            raise SnapshotError(f"{path}: no such file or directory")


def load_objects(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every object in the given files and folders, in order."""
    return list(iter_objects(paths))


def iter_objects(paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """Every object in the given files and folders, in order; a JSON `List` is streamed item by item
    (a 100,000-pod `kubectl get -o json` never has to be held in memory whole)."""
    for path in iter_files(paths):
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SnapshotError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
        if path.suffix == ".json":
            yield from _stream_json(path)
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{path}: cannot read: {exc}") from None
        yield from parse_documents(text, source=str(path))


def _stream_json(path: Path) -> Iterator[dict[str, Any]]:
    streamed = 0
    try:
        with path.open("rb") as handle:
            for index, item in enumerate(ijson.items(handle, "items.item", use_float=True)):
                streamed += 1
                yield from _flatten(item, source=f"{path} item {index}")
    except ijson.JSONError as exc:
        raise SnapshotError(f"{path}: not valid JSON: {exc}") from None
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read: {exc}") from None
    if streamed == 0:  # not a List (or an empty one): a single object, parsed whole
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{path}: cannot read: {exc}") from None
        yield from parse_documents(text, source=str(path))
