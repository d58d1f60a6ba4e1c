"""Reading Kubernetes objects from files: `kubectl get … -o yaml|json` output and manifests.

Accepts a `kind: List` (or any `*List`) of objects, several YAML documents, JSON, and folders of
such files (Helm-rendered output included). Errors name the file and the document or line; a
malformed file never yields a partial result silently. Only file reading and YAML parsing here.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 2 << 30
#: characters read at a time from a JSON file (a 100,000-pod List is streamed in such pieces)
CHUNK_CHARS = 4 << 20
_WHITESPACE = " \t\n\r"
_WS = re.compile(r"[ \t\n\r]*")


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


def _stream_json(path: Path, *, chunk_chars: int = CHUNK_CHARS) -> Iterator[dict[str, Any]]:
    streamed = 0
    try:
        with path.open("rb") as handle:
            for index, item in enumerate(_JsonText(handle, source=str(path), chunk_chars=chunk_chars).list_items()):
                streamed += 1
                yield from _flatten(item, source=f"{path} item {index}")
    except RecursionError:
        raise SnapshotError(f"{path}: JSON nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{path}: cannot read: {exc}") from None
    if streamed == 0:  # not a List (or an empty one): a single object, parsed whole
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{path}: cannot read: {exc}") from None
        yield from parse_documents(text, source=str(path))


class _JsonText:
    """A JSON text read chunk by chunk: the top-level object's `items` array, one element at a time.

    Each value is parsed by the standard library's C scanner (`JSONDecoder.raw_decode`, ~2x
    ijson's yajl backend on `kubectl get -o json` output); only the unread rest of the text is held.
    A value is accepted only when the text after it is in memory (a number cut at the chunk's end
    is read again whole). A syntax error is a `SnapshotError` with its line and column in the file;
    as with ijson before, `NaN` and `Infinity` are refused (they are not JSON).
    """

    def __init__(self, handle: BinaryIO, *, source: str, chunk_chars: int) -> None:
        self._handle = handle
        self._source = source
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._chunk = chunk_chars
        self._scan = json.JSONDecoder(parse_constant=_no_constant).raw_decode
        self.text = ""
        self.pos = 0
        self.eof = False
        #: what was dropped before `text`: characters, newlines, and the column `text` starts at
        self._dropped = self._lines = self._column = 0

    def list_items(self) -> Iterator[Any]:
        """The elements of a top-level object's `items` arrays; nothing when the text is no object."""
        if self._next_char() != "{":
            return
        self.pos += 1
        if self._next_char() == "}":
            self.pos += 1
        else:
            while True:
                if self._next_char() != '"':
                    raise self._error("Expecting property name enclosed in double quotes", self.pos)
                key = self._value()
                self._expect(":")
                if key == "items" and self._next_char() == "[":
                    yield from self._array()
                else:
                    self._value()
                if self._separator("}"):
                    break
        if self._next_char():
            raise self._error("Extra data", self.pos)

    def _array(self) -> Iterator[Any]:
        self.pos += 1
        if self._next_char() == "]":
            self.pos += 1
            return
        while True:
            yield self._value()
            if self._separator("]"):
                return

    def _separator(self, close: str) -> bool:
        """Past a `,` (False) or `close` (True)."""
        char = self._next_char()
        if char == ",":
            self.pos += 1
            return False
        if char == close:
            self.pos += 1
            return True
        raise self._error("Expecting ',' delimiter", self.pos)

    def _expect(self, char: str) -> None:
        if self._next_char() != char:
            raise self._error(f"Expecting {char!r} delimiter", self.pos)
        self.pos += 1

    def _next_char(self) -> str:
        """The next character that is not whitespace ('' at the end of the file), not consumed."""
        while True:
            text, pos = self.text, self.pos
            if pos < len(text) and text[pos] not in _WHITESPACE:
                return text[pos]
            match = _WS.match(text, pos)
            self.pos = match.end() if match else pos
            if self.pos < len(text):
                return text[self.pos]
            if self.eof:
                return ""
            self._fill()

    def _value(self) -> Any:
        self._next_char()
        if len(self.text) - self.pos < self._chunk >> 2 and not self.eof:
            self._fill()  # a quarter chunk ahead: an object is rarely cut, so rarely parsed twice
        while True:
            try:
                value, end = self._scan(self.text, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise self._error(exc.msg, exc.pos) from None
                self._fill()
                continue
            except _NotJson as exc:
                raise self._error(str(exc), self.pos) from None
            if end < len(self.text) or self.eof:
                self.pos = end
                return value
            self._fill()

    def _fill(self) -> None:
        """Drop what was read and append at least one more chunk (as much again as is held)."""
        text, pos = self.text, self.pos
        if pos:
            self._dropped += pos
            newlines = text.count("\n", 0, pos)
            self._lines += newlines
            self._column = pos - text.rfind("\n", 0, pos) - 1 if newlines else self._column + pos
            text = text[pos:]
            self.pos = 0
        data = self._handle.read(max(self._chunk, len(text)))
        self.eof = not data
        self.text = text + self._utf8.decode(data, final=self.eof)

    def _error(self, message: str, pos: int) -> SnapshotError:
        """`message` at `pos` of the held text, placed as `json.loads` places it in the whole file."""
        newline = self.text.rfind("\n", 0, pos)
        line = self._lines + self.text.count("\n", 0, pos) + 1
        column = pos - newline if newline >= 0 else self._column + pos + 1
        where = f"line {line} column {column} (char {self._dropped + pos})"
        return SnapshotError(f"{self._source}: not valid JSON: {message}: {where}")


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")
