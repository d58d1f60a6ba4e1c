"""The AdmissionReviews the load generator replays, derived from requests recorded from kube-apiserver.

Four kinds, from `benchmarks/fixtures/` (see its README):
- `pod-mutate`: `mutate-pod-create-2` in another team namespace, with other models (by annotation or
  by the postStart pull script only), owner and generateName;
- `pod-validate`: `validate-pod-create-2` varied the same way, then run through the guard's own
  mutation so it carries the env and stamps kube-apiserver sends after `/mutate`;
- `binding`: `validate-binding-binding-create-2` for a pod the snapshot has pending (so the guard
  finds it), to a GPU node with room for it or, one time in four, to one without (a denial);
- `deployment`: `validate-deployment-create-1` in another namespace, 1 to 3 replicas.

The mix repeats `MIX` (per Deployment of three replicas: three pods mutated, validated and bound).
Every review has its own request UID; the URL carries `?timeout=5s` like the recorded requests.
Deterministic for a given snapshot sidecar and seed.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch

from benchmarks.objects import pull_script
from benchmarks.tenants import choose_models, guard_for, mutation_patch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MIX = ("pod-mutate", "pod-validate", "binding") * 3 + ("deployment",)
PATHS = {"pod-mutate": "/mutate?timeout=5s"}
DEFAULT_PATH = "/validate?timeout=5s"
DENIED_BINDING_SHARE = 0.25
ANN_MODELS = "ollama-guard.io/models"


@dataclass(frozen=True, slots=True)
class Review:
    kind: str
    path: str
    body: str


def recorded(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


class _Deriver:
    def __init__(self, meta: Mapping[str, Any], rng: random.Random) -> None:
        self.rng = rng
        self.policies: dict[str, dict[str, str]] = dict(meta["namespaces"])
        self.teams = sorted(ns for ns in self.policies if ns.startswith("team-"))
        self.pending: list[dict[str, Any]] = list(meta["pending"])
        self.free: dict[str, int] = dict(meta["free_mib"])
        _, self.guard = guard_for(self.policies)
        self.templates = {name: recorded(name) for name in (
            "mutate-pod-create-2", "validate-pod-create-2", "validate-binding-binding-create-2",
            "validate-deployment-create-1")}
        self.count = 0

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def review(self, kind: str) -> Review:
        self.count += 1
        document = {"pod-mutate": self.pod_mutate, "pod-validate": self.pod_validate, "binding": self.binding,
                    "deployment": self.deployment}[kind]()
        document["request"]["uid"] = self.uid()
        return Review(kind, PATHS.get(kind, DEFAULT_PATH), json.dumps(document, separators=(",", ":")))

    def _pod(self, template: str) -> tuple[dict[str, Any], dict[str, Any]]:
        review = copy.deepcopy(self.templates[template])
        ns = self.rng.choice(self.teams)
        models = choose_models(self.rng, self.policies[ns])
        rs = f"ollama-{self.rng.getrandbits(40):010x}"
        pod = review["request"]["object"]
        meta = pod["metadata"]
        meta.update(namespace=ns, generateName=f"{rs}-")
        meta["labels"]["pod-template-hash"] = rs.removeprefix("ollama-")
        meta["ownerReferences"][0].update(name=rs, uid=self.uid())
        if self.rng.random() < 0.5:
            meta["annotations"][ANN_MODELS] = ",".join(models)
        else:
            meta.pop("annotations", None)
        pod["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"] = pull_script(models)
        review["request"]["namespace"] = ns
        return review, pod

    def pod_mutate(self) -> dict[str, Any]:
        return self._pod("mutate-pod-create-2")[0]

    def pod_validate(self) -> dict[str, Any]:
        review, pod = self._pod("validate-pod-create-2")
        name = f"{pod['metadata']['generateName']}{self.count:05d}"
        pod["metadata"].update(name=name, uid=self.uid())
        review["request"]["name"] = name
        jsonpatch.apply_patch(pod, mutation_patch(self.guard, pod), in_place=True)
        return review

    def binding(self) -> dict[str, Any]:
        review = copy.deepcopy(self.templates["validate-binding-binding-create-2"])
        pod = self.pending[self.count % len(self.pending)]
        deny = self.rng.random() < DENIED_BINDING_SHARE
        nodes = [n for n, free in self.free.items() if (free < pod["demand_mib"]) == deny] or list(self.free)
        node = self.rng.choice(nodes)
        request = review["request"]
        request.update(namespace=pod["namespace"], name=pod["name"])
        request["object"]["metadata"].update(namespace=pod["namespace"], name=pod["name"], uid=pod["uid"])
        request["object"]["target"]["name"] = node
        return review

    def deployment(self) -> dict[str, Any]:
        review = copy.deepcopy(self.templates["validate-deployment-create-1"])
        ns = self.rng.choice(self.teams)
        models = choose_models(self.rng, self.policies[ns])
        name = f"ollama-{models[0].split(':')[0].replace('.', '-')}-{self.count:05d}"
        deployment = review["request"]["object"]
        deployment["metadata"].update(namespace=ns, name=name, uid=self.uid())
        deployment["spec"]["replicas"] = self.rng.randint(1, 3)
        template = deployment["spec"]["template"]
        template["metadata"]["annotations"][ANN_MODELS] = ",".join(models)
        template["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"] = pull_script(models)
        review["request"].update(namespace=ns, name=name)
        return review


def build_reviews(meta: Mapping[str, Any], *, cycles: int = 40, seed: int = 8) -> list[Review]:
    """`cycles` repetitions of the mix for the cluster described by a snapshot sidecar."""
    deriver = _Deriver(meta, random.Random(f"reviews:{seed}:{meta['nodes']}:{meta['pods']}"))
    return [deriver.review(kind) for _ in range(cycles) for kind in MIX]


def write_reviews(reviews: Sequence[Review], path: Path) -> None:
    path.write_text(json.dumps([{"kind": r.kind, "path": r.path, "body": r.body} for r in reviews]),
                    encoding="utf-8")


def read_reviews(path: Path) -> list[Review]:
    return [Review(str(r["kind"]), str(r["path"]), str(r["body"]))
            for r in json.loads(path.read_text(encoding="utf-8"))]
