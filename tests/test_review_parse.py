"""`parse_review`'s one-pass reader of well-formed reviews (`_well_formed`, issue 17) accepts only
what the wire type's pydantic model (`_Review`, which words every refusal) accepts, and reads it
the same.

- Every review recorded from kube-apiserver 1.24 takes the one-pass path and reads to the fields
  it holds.
- Hypothesis builds requests from a recorded one with up to three fields replaced by any JSON
  value, removed, or given a near-miss (an integer for a string, a string for a boolean, an
  over-long UID, a list of non-strings): whenever the one-pass reader answers, the model accepts
  the same document and reads the same request; `parse_review` answers exactly as the model does.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from webhook.admission import review as rv
from webhook.admission.review import AdmissionRequest, ReviewError, parse_request, parse_review

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("OLLAMA_GUARD_FIXTURES", ROOT.parent / "shared/fixtures/kube-apiserver-1.24"))
RECORDED = sorted(FIXTURES.glob("*.json")) if FIXTURES.is_dir() else []
pytestmark = pytest.mark.skipif(not RECORDED, reason=f"recorded reviews not found at {FIXTURES}")


def by_model(document: Any) -> AdmissionRequest | None:
    """What the wire type reads from `document`; None: it refuses it."""
    try:
        return rv._from_model(rv._Review.model_validate(document).request)
    except ValidationError:
        return None


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_every_recorded_review_is_read_in_one_pass_as_the_model_reads_it(path: Path) -> None:
    document = json.loads(path.read_text())
    raw = document["request"]
    fast = rv._well_formed(raw)
    assert fast is not None and fast == by_model(document) == parse_review(document) == parse_request(raw)
    assert (fast.uid, fast.kind.kind, fast.resource.resource, fast.operation, fast.namespace) == (
        raw["uid"], raw["kind"]["kind"], raw["resource"]["resource"], raw["operation"], raw.get("namespace", ""))
    assert fast.object is raw.get("object") and fast.dry_run is bool(raw.get("dryRun"))
    assert fast.user_info.groups == tuple(raw.get("userInfo", {}).get("groups", ()))


BASE = json.loads(RECORDED[0].read_text()) if RECORDED else {}
FIELDS = ["uid", "kind", "resource", "operation", "subResource", "name", "namespace", "userInfo", "object",
          "oldObject", "dryRun"]
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.floats(allow_nan=False), st.text(max_size=3))
JSON = LEAF | st.recursive(LEAF, lambda inner: st.lists(inner, max_size=2)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=4)
REMOVED = object()
NEAR_MISSES = st.sampled_from([
    "", "u" * 128, "u" * 129, 0, 1, "true", "false", True, False, [], {}, ["a", 1], ["system:masters"], "CREATE",
    "create", "PATCH", {"version": "v1", "kind": "Pod"}, {"version": "v1", "resource": "pods"},
    {"group": None, "version": "v1", "kind": "Pod"}, {"version": 1, "kind": "Pod"}, {"username": 7},
    {"groups": "a"}, {"groups": [None]}, {"username": "a", "uid": "1", "groups": []}, REMOVED,
])
#: (where, value): a top-level request field, or a field inside request.kind / .resource / .userInfo
PLACES = st.one_of(
    st.tuples(st.sampled_from(FIELDS), st.none()),
    st.tuples(st.sampled_from(["kind", "resource", "userInfo"]),
              st.sampled_from(["group", "version", "kind", "resource", "username", "uid", "groups"])),
)
EDITS = st.lists(st.tuples(PLACES, NEAR_MISSES | JSON | st.just(REMOVED)), max_size=3)


def edited(edits: list[tuple[tuple[str, str | None], Any]]) -> dict[str, Any]:
    document = json.loads(json.dumps(BASE))
    request = document["request"]
    for (where, inner), value in edits:
        target = request
        key = where
        if inner is not None:
            if not isinstance(request.get(where), dict):
                continue
            target, key = request[where], inner
        if value is REMOVED:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)  # NEAR_MISSES are shared: an edit inside must not change them
    return document


@settings(max_examples=800, deadline=None)
@given(EDITS)
def test_the_one_pass_reader_never_accepts_or_reads_other_than_the_model(
    edits: list[tuple[tuple[str, str | None], Any]],
) -> None:
    document = edited(edits)
    expected = by_model(document)
    fast = rv._well_formed(document["request"])
    if fast is not None:
        assert fast == expected
    try:
        got: AdmissionRequest | None = parse_review(document)
    except ReviewError:
        got = None
    assert got == expected


def test_a_kind_resource_or_user_changed_after_a_read_is_read_afresh() -> None:
    """An object the caller changes after a read reads to its new content, not the old: nothing the
    reader keeps between reviews (its shared kind, resource and user values) outlives a change."""
    document = json.loads(json.dumps(BASE))
    request = document["request"]
    before = parse_review(document)
    request["kind"]["version"] = request["resource"]["version"] = "v2"
    request.setdefault("userInfo", {}).setdefault("groups", []).append("changed-group")
    after = parse_review(document)
    assert after == by_model(document) != before
    assert (after.kind.version, after.resource.version) == ("v2", "v2") and "changed-group" in after.user_info.groups
    request["kind"]["version"] = 2  # no longer a string: refused, in the model's words
    with pytest.raises(ReviewError, match=r"request\.kind\.version"):
        parse_review(document)


def test_a_refusal_still_names_the_field_as_the_model_words_it() -> None:
    document = edited([(("uid", None), 7), (("dryRun", None), "maybe")])
    with pytest.raises(ReviewError) as caught:
        parse_review(document)
    assert "request.uid" in str(caught.value) and "request.dryRun" in str(caught.value)


def test_only_the_decoder_s_word_marks_a_review_finite() -> None:
    """`finite` (no NaN or Infinity inside, so `memo.content_key` need not search for one) is set
    only by the caller that decoded the body with orjson; nothing else differs."""
    document = json.loads(RECORDED[0].read_text())
    plain, decoded = parse_review(document), parse_review(document, finite=True)
    assert (plain.finite, decoded.finite) == (False, True) and plain == decoded._replace(finite=False)
    assert parse_request(document["request"]).finite is False


@pytest.mark.parametrize("uid", ["705ab4f5-6393-11e8-b7cc-42010a800002", 'a"b\\c', "ü-ünï", "@uid@", "u" * 128],
                         ids=["uuid", "quotes", "unicode", "marker", "longest"])
def test_the_plain_allowed_answer_is_the_review_build_review_makes(uid: str) -> None:
    """`encode_review`'s fixed bytes around the UID are exactly the general encoding of `allowed()`."""
    for mutating in (False, True):
        encoded = rv.encode_review(uid, rv.allowed(), mutating=mutating)
        assert encoded == orjson.dumps(rv.build_review(uid, rv.allowed(), mutating=mutating))
        assert orjson.loads(encoded)["response"] == {"uid": uid, "allowed": True}


ANSWERS = {
    "denied": rv.denied('binding to gpu-1 would over-commit its VRAM: "quoted", ünïcode, \x00uid\x00 in the text'),
    "bad-declaration": rv.bad_declaration("unknown model 'mystery:1b'"),
    "patched": rv.patched([{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]),
    "errored": rv.errored("ollama-guard internal error"),
    "warned": rv.with_warnings(rv.allowed(), ["no models declared"]),
    "audited": rv.with_audit(rv.allowed(), **{"ollama-guard.io/would-deny": "capacity"}),
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_a_remembered_answer_is_encoded_once_and_every_encoding_is_build_review_s(name: str) -> None:
    """`encode_review` keeps an answer's bytes around the UID (a remembered denial or mutation
    answers many reviews): each review's bytes are still exactly `build_review`'s with its UID,
    for either webhook, and an answer derived from it (`with_warnings`) is encoded afresh."""
    response = ANSWERS[name]
    for uid in ("705ab4f5-6393-11e8-b7cc-42010a800002", 'a"b\\c', "\x00uid\x00", "ü" * 128):
        for mutating in (False, True):
            encoded = rv.encode_review(uid, response, mutating=mutating)
            assert encoded == orjson.dumps(rv.build_review(uid, response, mutating=mutating)), (uid, mutating)
            assert orjson.loads(encoded)["response"]["uid"] == uid
    assert set(response.wire) == {False, True}
    derived = rv.with_warnings(response, ["capacity: 3.1 GiB free"])
    assert not derived.wire
    encoded = orjson.loads(rv.encode_review("u-2", derived, mutating=False))
    assert "capacity: 3.1 GiB free" in encoded["response"]["warnings"]


def test_the_endpoint_hands_on_what_it_decoded_as_finite() -> None:
    """The HTTP edge decodes with orjson and says so (`finite`): the memo keys then skip the search."""
    from webhook.cli.settings import load_settings
    from webhook.core.catalog import load_catalog
    from webhook.http.server import create_app
    from webhook.state.files import load_objects
    from webhook.state.snapshot import SnapshotSource

    settings = load_settings()
    cluster, catalog = settings.cluster_policy(), load_catalog()
    source = SnapshotSource(load_objects([ROOT / "examples/cluster.yaml"]), cluster=cluster, catalog=catalog,
                            origin="test")
    seen: list[AdmissionRequest] = []
    app = create_app(cluster=cluster, catalog=catalog, source=source)
    endpoint = app.state.admission["/validate"]
    decide = endpoint.handler
    endpoint.handler = lambda req, guard: (seen.append(req), decide(req, guard))[1]
    body = RECORDED[0].read_bytes()
    sent: list[dict[str, Any]] = []

    async def exchange() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/validate", "query_string": b"timeout=5s",
                 "headers": [(b"content-type", b"application/json")]}
        await app.state.admission["/validate"](scope, receive, send)

    asyncio.run(exchange())
    assert sent[0]["status"] == 200 and len(seen) == 1
    assert seen[0].finite is True and seen[0]._replace(finite=False) == parse_review(json.loads(body))
