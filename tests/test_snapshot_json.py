"""Streaming a JSON snapshot (`webhook.state.files`): the objects `json.loads` reads, whatever the
chunk size, and errors placed in the whole file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from webhook.state import files
from webhook.state.files import SnapshotError, load_objects


def pod(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team-a"}, **extra}


LIST = {
    "apiVersion": "v1",
    "kind": "List",
    "count": 1234567,  # a number cut at a chunk's end must be read again whole, not as 12 then "34567"
    "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "annotations": {"x": "é ✓ \"q\""}}},
        pod("a", spec={"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}, n=12345),
        pod("b", status={"phase": "Running", "ratio": 0.25, "big": 123456789012345678901234567890, "flag": False}),
        pod("c", spec={"nodeName": "n\u00e9\\x", "list": [[], {}, [1, [2, [3]]], None, True]}, n=-7),
    ],
    "metadata": {"resourceVersion": ""},
}


def write(tmp_path: Path, text: str, name: str = "snapshot.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 22], ids=lambda c: f"chunk-{c}")
@pytest.mark.parametrize(
    "text",
    [
        pytest.param(json.dumps(LIST, separators=(",", ":"), ensure_ascii=False), id="compact"),
        pytest.param(json.dumps(LIST, indent=2), id="kubectl-indented"),
        pytest.param(" \n\t" + json.dumps(LIST, indent="\t") + "\r\n ", id="whitespace-around"),
    ],
)
def test_streamed_objects_are_what_json_loads_reads(tmp_path: Path, text: str, chunk: int) -> None:
    path = write(tmp_path, text)
    assert list(files._stream_json(path, chunk_chars=chunk)) == json.loads(text)["items"]


def test_default_chunks_through_the_public_loader(tmp_path: Path) -> None:
    items = [pod(f"p{i}", spec={"containers": [{"name": "c", "image": "x" * (i % 500)}]}) for i in range(3000)]
    text = json.dumps({"kind": "List", "items": items})
    path = write(tmp_path, text)
    assert len(text) > files.CHUNK_CHARS // 4  # the read-ahead refills at least once
    assert load_objects([path]) == items


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(json.dumps(pod("solo")), [pod("solo")], id="single-object"),
        pytest.param('{"kind": "List", "items": []}', [], id="empty-list"),
        pytest.param(
            '{"kind": "PodList", "metadata": {"name": "x"}, "items": {"not": "a list"}}',
            [{"kind": "PodList", "metadata": {"name": "x"}, "items": {"not": "a list"}}],
            id="items-not-an-array",
        ),
    ],
)
def test_a_file_without_items_is_read_whole(tmp_path: Path, text: str, expected: list[Any]) -> None:
    assert load_objects([write(tmp_path, text)]) == expected


MALFORMED = [
    pytest.param('{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"a"}},', id="cut-after-item"),
    pytest.param('{"kind":"List",\n"items":[\n{"kind":"Pod" "x"}]}', id="missing-comma-line-3"),
    pytest.param('{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"a"}}]} x', id="trailing-garbage"),
    pytest.param('{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"a"}}', id="unclosed"),
    pytest.param('{"kind":"List",7:1,"items":[]}', id="number-as-key"),
    pytest.param('{"kind":"List","items":[],}', id="trailing-comma"),
    pytest.param('{"kind":"List"\n\n  "items":[]}', id="missing-comma-before-items"),
    pytest.param('{"kind":"List","items" []}', id="missing-colon"),
]


@pytest.mark.parametrize("chunk", [1, 5, 1 << 22], ids=lambda c: f"chunk-{c}")
@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_json_is_placed_as_json_loads_places_it(tmp_path: Path, text: str, chunk: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(json.JSONDecodeError) as whole:
        json.loads(text)
    with pytest.raises(SnapshotError) as streamed:
        list(files._stream_json(path, chunk_chars=chunk))
    assert str(streamed.value) == f"{path}: not valid JSON: {whole.value}"


def test_nan_is_refused_at_the_item_holding_it(tmp_path: Path) -> None:
    path = write(tmp_path, '{"kind":"List","items":[{"kind":"Pod","n":NaN}]}')
    with pytest.raises(SnapshotError, match=r"not valid JSON: NaN is not JSON: line 1 column 25 \(char 24\)"):
        load_objects([path])


def test_an_item_that_is_no_object_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '{"kind": "List", "items": [7]}')
    with pytest.raises(SnapshotError, match=r"item 0: expected a Kubernetes object \(a mapping\), got int"):
        load_objects([path])


def test_invalid_utf8_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"\xff"}}]}')
    with pytest.raises(SnapshotError, match="cannot read"):
        load_objects([path])
