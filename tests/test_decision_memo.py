"""Decisions remembered per distinct pod (`webhook.admission.memo`, issue 17) never change an answer.

- The key holds the whole pod object: changing any value anywhere in a recorded pod changes the
  key, except the four metadata fields named as dropped (`content_key`).
- Hypothesis replays sequences of pod reviews that differ from a recorded ReplicaSet pod in the
  inputs the decisions read (declarations, env, resources, image, node, namespace, dry run) and in
  those they do not (name, UID, managedFields, creationTimestamp), in namespaces with different
  policies, against two guards with different views. Each review is answered by guards that
  remember and by identical guards whose memo computes every answer afresh: `/mutate` and
  `/validate` answers, and the tenants the ledgers remember, are identical.
- Replicas (the same pod under other names) are computed once, and each still answers and is
  remembered under its own name.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.admission import memo, validation
from webhook.admission.context import Guard
from webhook.admission.memo import IDENTITY, UNREAD, content_key
from webhook.admission.mutation import mutate
from webhook.admission.review import AdmissionRequest, AdmissionResponse, parse_review
from webhook.admission.validation import validate
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.state.files import load_objects
from webhook.state.snapshot import SnapshotSource

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("OLLAMA_GUARD_FIXTURES", ROOT.parent / "shared/fixtures/kube-apiserver-1.24"))
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"recorded reviews not found at {FIXTURES}")
CATALOG = load_catalog()
CLUSTER = load_settings().cluster_policy()
#: three views: the examples' namespaces, the same cluster with stricter team namespaces, and
#: with VRAM quotas that the pods each example admits fill up (the memo then keys by the figure)
POLICIES: list[dict[str, dict[str, str]]] = [
    {},
    {
        "team-a": {"ollama-guard.io/context-length": "4096", "ollama-guard.io/allowed-models": "llama3.1:*"},
        "team-b": {"ollama-guard.io/enforcement": "audit", "ollama-guard.io/driver-memory-limit": "true"},
    },
    {
        "team-a": {"ollama-guard.io/vram-quota": "40Gi"},
        "team-b": {"ollama-guard.io/vram-quota": "90Gi", "ollama-guard.io/enforcement": "warn"},
    },
]


def recorded(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return document


def make_guard(namespaces: dict[str, dict[str, str]]) -> Guard:
    objects = load_objects([ROOT / "examples/cluster.yaml"])
    for name, ann in namespaces.items():
        objects = [o for o in objects if not (o["kind"] == "Namespace" and o["metadata"]["name"] == name)]
        objects.append({"kind": "Namespace", "metadata": {"name": name, "annotations": ann}})
    source = SnapshotSource(objects, cluster=CLUSTER, catalog=CATALOG, origin="test")
    return Guard(cluster=CLUSTER, catalog=CATALOG, ledger=source.ledger, on_bound=source.on_bound)


@contextmanager
def fresh() -> Iterator[None]:
    """Every memo computes (and remembers nothing) while inside."""
    original = memo.Memo.get
    memo.Memo.get = lambda self, owner, key, compute, keep=None: compute()  # type: ignore[method-assign]
    try:
        yield
    finally:
        memo.Memo.get = original  # type: ignore[method-assign]


# --- the key -------------------------------------------------------------------------------------


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path


POD = recorded("validate-pod-create-2")["request"]["object"]
PATHS = sorted(leaves(POD), key=repr)


def changed(pod: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(pod)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS), st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none()))
def test_changing_any_value_of_the_pod_changes_the_key_unless_the_field_is_dropped(
    path: tuple[Any, ...], value: Any
) -> None:
    other = changed(POD, path, value)
    dropped = path[0] == "metadata" and path[1] in UNREAD | IDENTITY
    if other == POD:
        return
    for drop in (UNREAD, UNREAD | IDENTITY):
        key = content_key(other, drop=drop)
        if key is None:  # not remembered at all (an integer beyond 64 bits): computed every time
            assert isinstance(value, int) and not -(2**63) <= value < 2**64
            continue
        same = dropped and path[1] in drop
        assert (key == content_key(POD, drop=drop)) is same, (path, value)


@pytest.mark.parametrize(
    "value",
    [pytest.param(float("nan"), id="nan"), pytest.param(float("inf"), id="inf"), pytest.param(2**70, id="big-int")],
)
def test_values_the_bytes_cannot_tell_apart_are_never_remembered(value: float) -> None:
    """orjson writes NaN and infinity as null (YAML can say `.nan`), and refuses integers past 64 bits."""
    assert content_key(changed(POD, ("spec", "containers", 0, "image"), value), drop=UNREAD) is None
    assert content_key(changed(POD, ("spec", "containers", 0, "image"), None), drop=UNREAD) is not None


def test_a_new_field_anywhere_changes_the_key() -> None:
    base = content_key(POD, drop=UNREAD | IDENTITY)
    for where in (("metadata",), ("spec",), ("spec", "containers", 0), ("status",)):
        other = copy.deepcopy(POD)
        target: Any = other
        for step in where:
            target = target.setdefault(step, {}) if isinstance(step, str) else target[step]
        target["x-new"] = "1"
        assert content_key(other, drop=UNREAD | IDENTITY) != base, where


# --- the answers ----------------------------------------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def _meta(key: str, value: Any) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        if value is None:
            pod["metadata"].pop(key, None)
        else:
            pod["metadata"][key] = value

    return edit


def _annotation(key: str, value: str | None) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        annotations = pod["metadata"].setdefault("annotations", {})
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value

    return edit


def _env(name: str, value: str | None) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        env = [e for e in container.get("env", []) if e.get("name") != name]
        container["env"] = env + ([{"name": name, "value": value}] if value is not None else [])

    return edit


def _resource(name: str, value: str | None) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        resources = pod["spec"]["containers"][0].setdefault("resources", {})
        for section in ("limits", "requests"):
            if value is None:
                resources.setdefault(section, {}).pop(name, None)
            else:
                resources.setdefault(section, {})[name] = value

    return edit


def _spec(key: str, value: Any) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        if value is None:
            pod["spec"].pop(key, None)
        else:
            pod["spec"][key] = copy.deepcopy(value)

    return edit


def _image(value: str) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["image"] = value

    return edit


GPU_INIT = [{"name": "warm", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]
EDITS: dict[str, list[Edit]] = {
    "name": [_meta("name", v) for v in ("ollama-a", "ollama-b", None)],
    "uid": [_meta("uid", v) for v in ("u-1", "u-2", None)],
    "generateName": [_meta("generateName", v) for v in ("ollama-7d9f-", "other-", None)],
    "managedFields": [_meta("managedFields", v) for v in ([], [{"manager": "m", "time": "2024-01-01T00:00:01Z"}])],
    "creationTimestamp": [_meta("creationTimestamp", v) for v in (None, "2024-01-01T00:00:00Z")],
    "deletionTimestamp": [_meta("deletionTimestamp", v) for v in (None, "2024-01-01T00:00:00Z")],
    "labels": [_meta("labels", v) for v in ({"app": "ollama"}, {"app.kubernetes.io/name": "ollama"}, {})],
    "models": [_annotation("ollama-guard.io/models", v)
               for v in ("llama3.1:8b", "qwen2.5:14b", "mystery:1b", "llama3.1:8b,qwen2.5:7b", None)],
    "vram": [_annotation("ollama-guard.io/vram", v) for v in (None, "1Gi", "40Gi", "lots")],
    "context": [_annotation("ollama-guard.io/context-length", v) for v in (None, "4096", "131072")],
    "stamp": [_annotation("ollama-guard.io/vram-demand", v) for v in (None, "1234")],
    "env-context": [_env("OLLAMA_CONTEXT_LENGTH", v) for v in (None, "2048", "65536")],
    "env-parallel": [_env("OLLAMA_NUM_PARALLEL", v) for v in (None, "1", "4")],
    "env-flash": [_env("OLLAMA_FLASH_ATTENTION", v) for v in (None, "1")],
    "env-cap": [_env("NVIDIA_GPU_MEMORY_LIMIT", v) for v in (None, "1024", "999999", "x")],
    "gpus": [_resource("nvidia.com/gpu", v) for v in ("1", "2", "0", None, "x")],
    "vram-mib": [_resource("ollama-guard.io/vram-mib", v) for v in (None, "1024", "999999", "1.5")],
    "image": [_image(v) for v in ("ollama/ollama:0.6.8", "busybox:1.36")],
    "node": [_spec("nodeName", v) for v in (None, "gpu-h100-a", "no-such-node")],
    "init": [_spec("initContainers", v) for v in (None, GPU_INIT)],
}
NAMESPACES = ("team-a", "team-b", "kube-system")

IDENTITY_EDITS = ("name", "uid", "managedFields", "creationTimestamp")
edit_lists = st.lists(st.tuples(st.sampled_from(sorted(EDITS)), st.integers(0, 4)), max_size=4)
Step = tuple[int, list[tuple[str, int]], str, bool, bool]
#: a step: which of the example's few distinct pods, then edits of what only names a pod (a
#: replica), the namespace, dry run, and whether the scheduler then binds the pod to the GPU node
#: (which changes the committed VRAM every later capacity check reads)
steps = st.tuples(
    st.integers(0, 2),
    st.lists(st.tuples(st.sampled_from(IDENTITY_EDITS), st.integers(0, 4)), max_size=2),
    st.sampled_from(NAMESPACES),
    st.booleans(),
    st.booleans(),
)


def review_of(edits: list[tuple[str, int]], namespace: str, dry_run: bool, *, uid: int) -> AdmissionRequest:
    review = recorded("validate-pod-create-2")
    req = review["request"]
    pod = req["object"]
    for field, choice in edits:
        options = EDITS[field]
        options[choice % len(options)](pod)
    pod["metadata"]["namespace"] = namespace
    req.update(uid=f"req-{uid}", namespace=namespace, dryRun=dry_run, name=pod["metadata"].get("name", ""))
    return parse_review(review)


def binding_of(req: AdmissionRequest, *, uid: int) -> AdmissionRequest:
    """The scheduler's binding of the pod `req` created to the example's GPU node."""
    review = recorded("validate-binding-binding-create-1")
    meta = (req.object or {}).get("metadata", {})
    name = meta.get("name") or meta.get("generateName") or ""
    review["request"].update(uid=f"bind-{uid}", namespace=req.namespace, name=name)
    review["request"]["object"]["metadata"].update(name=name, namespace=req.namespace, uid=meta.get("uid", ""))
    review["request"]["object"]["target"]["name"] = "gpu-h100-a"
    return parse_review(review)


def as_mutation(req: AdmissionRequest) -> AdmissionRequest:
    return req._replace(uid=req.uid + "-m")


def remembered(guard: Guard, req: AdmissionRequest) -> object:
    meta = (req.object or {}).get("metadata", {})
    return guard.ledger.find_tenant(f"{req.namespace}/{meta.get('name') or meta.get('generateName') or ''}")


@pytest.fixture(scope="module")
def guards() -> list[tuple[Guard, Guard]]:
    """Per view: a guard whose answers the memo serves, and an identical one that computes afresh."""
    return [(make_guard(p), make_guard(p)) for p in POLICIES]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(edit_lists, min_size=1, max_size=3),
    st.lists(steps, min_size=1, max_size=12),
    st.integers(0, len(POLICIES) - 1),
)
def test_remembered_answers_equal_fresh_ones(
    guards: list[tuple[Guard, Guard]], pods: list[list[tuple[str, int]]], sequence: list[Step], view: int
) -> None:
    for number, (pod, renamed, namespace, dry_run, bind) in enumerate(sequence):
        which = (view + (2 * number >= len(sequence))) % len(guards)  # halfway, the view changes
        remembering, computing = guards[which]
        edits = pods[pod % len(pods)] + renamed
        req = review_of(edits, namespace, dry_run, uid=number)
        mutated: AdmissionResponse = mutate(as_mutation(req), remembering)
        validated: AdmissionResponse = validate(req, remembering)
        with fresh():
            assert mutate(as_mutation(req), computing) == mutated, (edits, namespace, dry_run, which)
            assert validate(req, computing) == validated, (edits, namespace, dry_run, which)
        assert remembered(remembering, req) == remembered(computing, req)
        if bind:
            binding = binding_of(req, uid=number)
            bound = validate(binding, remembering)
            with fresh():
                assert validate(binding, computing) == bound, (edits, namespace, which)


QUOTA_PODS = [[("vram", 1)], [("models", 0)], [("models", 1), ("gpus", 1)]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(QUOTA_PODS) - 1), st.integers(0, 5), st.booleans()), min_size=2,
                max_size=14))
def test_in_a_quota_namespace_a_remembered_answer_is_the_fresh_one_for_every_figure(
    sequence: list[tuple[int, int, bool]],
) -> None:
    """Replicas of a few pods created one after another in a namespace with a VRAM quota: each
    admitted one adds to the namespace's pending VRAM, so the quota figure changes from pod to
    pod and the memo answers by it. Every answer equals a fresh computation's."""
    quota = {"team-a": {"ollama-guard.io/vram-quota": "24Gi"}}
    remembering, computing = make_guard(quota), make_guard(quota)
    for number, (pod, name, dry_run) in enumerate(sequence):
        req = review_of(QUOTA_PODS[pod], "team-a", dry_run, uid=number)
        meta = req.object["metadata"]  # type: ignore[index]
        meta.update(name=f"replica-{name}", uid=f"uid-{name}")
        req = req._replace(name=meta["name"])
        answer = validate(req, remembering)
        with fresh():
            assert validate(req, computing) == answer, (number, pod, name, dry_run)


def test_in_a_quota_namespace_replicas_that_find_the_same_figure_are_evaluated_once() -> None:
    """Dry-run replicas admit nothing, so each finds the namespace's quota figure unchanged: the
    whole evaluation is computed for the first only (before, a quota namespace's pods were always
    evaluated afresh)."""
    guard = make_guard({"team-a": {"ollama-guard.io/vram-quota": "200Gi"}})
    computed: list[object] = []
    original = validation.evaluate_pod

    def counting(*args: Any, **kwargs: Any) -> Any:
        computed.append(args)
        return original(*args, **kwargs)

    validation.evaluate_pod = counting  # type: ignore[assignment]
    try:
        for i in range(4):
            req = review_of([], "team-a", True, uid=i)
            meta = req.object["metadata"]  # type: ignore[index]
            meta.update(name=f"dry-replica-{i}", uid=f"dry-{i}")
            assert validate(req._replace(name=meta["name"]), guard).allowed
    finally:
        validation.evaluate_pod = original
    assert len(computed) == 1


def test_replicas_are_computed_once_and_each_is_answered_and_remembered_under_its_own_name() -> None:
    guard = make_guard({})
    computed: list[tuple[int, object]] = []
    original = memo.Memo.get

    def counting(
        self: memo.Memo[Any], owner: tuple[object, ...], key: tuple[object, ...], compute: Any, keep: Any = None
    ) -> Any:
        def counted() -> Any:
            computed.append((id(self), key))
            return compute()

        return original(self, owner, key, counted, keep)

    memo.Memo.get = counting  # type: ignore[method-assign,assignment]
    try:
        replicas = [review_of([("name", 0), ("managedFields", 1)], "team-a", False, uid=0)]
        for i in range(1, 4):
            other = recorded("validate-pod-create-2")
            meta = other["request"]["object"]["metadata"]
            meta.update(name=f"ollama-replica-{i}", uid=f"uid-{i}", namespace="team-a",
                        creationTimestamp=f"2024-01-01T00:00:0{i}Z",
                        managedFields=[{"manager": "m", "time": f"2024-01-01T00:00:0{i}Z"}])
            other["request"].update(uid=f"r{i}", namespace="team-a", name=meta["name"])
            replicas.append(parse_review(other))
        base = recorded("validate-pod-create-2")["request"]["object"]["metadata"]
        replicas[0].object["metadata"].update(name="ollama-replica-0", uid="uid-0")  # type: ignore[index]
        replicas[0].object["metadata"]["generateName"] = base["generateName"]  # type: ignore[index]
        answers = [validate(r, guard) for r in replicas]
    finally:
        memo.Memo.get = original  # type: ignore[method-assign]
    # one distinct pod: the whole evaluation and the pod's own assessment, each computed once
    assert len(computed) == 2 and len({memo_id for memo_id, _ in computed}) == 2
    assert all(a == answers[0] for a in answers)
    for i, _ in enumerate(replicas):
        tenant = guard.ledger.find_tenant(f"team-a/ollama-replica-{i}")
        assert tenant is not None and tenant.uid == f"uid-{i}"


@pytest.mark.parametrize(
    ("bind", "namespaces"),
    [
        pytest.param(True, {}, id="bindings-fill-the-node"),
        pytest.param(False, {"team-a": {"ollama-guard.io/vram-quota": "100Gi"}}, id="admitted-pods-fill-the-quota"),
    ],
)
def test_a_remembered_evaluation_ends_when_the_cluster_fills(bind: bool, namespaces: dict[str, dict[str, str]]) -> None:
    """Replicas that fit are answered from the memo only while nothing they depend on changed:
    once bindings commit the node's VRAM (or pods admitted at CREATE use up the namespace's
    quota), the same pod's next replica is denied, exactly as a fresh computation denies it."""
    guard = make_guard(namespaces)
    answers: list[AdmissionResponse] = []
    for number in range(8):
        edits = [("vram", 2), ("name", number % 2), ("uid", number % 2)]
        req = review_of(edits, "team-a", False, uid=number)
        meta = req.object["metadata"]  # type: ignore[index]
        meta.update(name=f"ollama-fill-{number}", uid=f"fill-{number}")
        req = req._replace(name=meta["name"])
        answer = validate(req, guard)
        with fresh():
            assert validate(req, guard) == answer, number
        answers.append(answer)
        if answer.allowed and bind:
            validate(binding_of(req, uid=number), guard)
    assert answers[0].allowed
    denied = [a for a in answers if not a.allowed]
    assert denied and "VRAM" in denied[0].message


# --- a binding that does not fit: its answer remembered per (mode, pod, node, figures) ------------


def _guard_and_node() -> tuple[Guard, Any]:
    from webhook.core.inventory import read_node

    node = read_node(
        {"metadata": {"name": "gpu-a", "labels": {"nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "1",
                                                  "nvidia.com/gpu.replicas": "4"}},
         "status": {"allocatable": {"nvidia.com/gpu": "4"}}},
        gpu_resources=("nvidia.com/gpu",),
    )
    assert node is not None
    return make_guard({}), node


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_an_over_commit_answer_is_remembered_only_for_the_same_figures_and_never_in_audit_mode(mode: str) -> None:
    from webhook.admission.validation import _over_commit
    from webhook.core.ledger import fits
    from webhook.core.policy import ANN_ENFORCEMENT, resolve_namespace_policy
    from webhook.core.view import Tenant

    guard, node = _guard_and_node()
    audited: list[str] = []
    guard = Guard(cluster=guard.cluster, catalog=guard.catalog, ledger=guard.ledger,
                  on_would_deny=lambda ns, rule, message: audited.append(message))
    ns = resolve_namespace_policy(CLUSTER, "team-a", {ANN_ENFORCEMENT: mode})
    pod = Tenant("team-a", "ollama-0", "uid-0", "", 1, True, 20_000, "estimate", ("llama3.1:8b",))
    first, again = (fits(node, committed_mib=c, demand_mib=20_000, gpus=1) for c in (70_000, 70_000))
    later = fits(node, committed_mib=75_000, demand_mib=20_000, gpus=1)  # the node filled up further
    answers = [_over_commit(pod, node, fit, ns, guard) for fit in (first, again, later)]
    with fresh():
        computed = [_over_commit(pod, node, fit, ns, guard) for fit in (first, again, later)]
    assert answers == computed
    assert answers[0] != answers[2]  # other figures, another answer
    shown = {"enforce": answers[0].message, "warn": " ".join(answers[0].warnings),
             "audit": " ".join(v for _, v in answers[0].audit_annotations)}[mode]
    assert ("68.4 GiB committed" if mode != "warn" else "needs 19.5 GiB") in shown
    if mode == "audit":
        assert len(audited) == 6  # every call records its would-be denial: nothing is remembered
        assert answers[0] is not answers[1]
    else:
        assert not audited
        assert answers[0] is answers[1]  # remembered
