"""`ollama-guard timeslicing plan` (design §16): replicas per node class from the workloads' VRAM,
the device plugin config it emits (checked against a schema transcribed from the device plugin's
Go types), and `--apply` against the loopback API server (`tests/kube_api_fixture.py`)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from design_figures import LLAMA31_8B_MIB
from kube_api_fixture import KubeApiFixture
from live_cluster import write_kubeconfig
from typer.testing import CliRunner

from webhook.audit.model import Manifest
from webhook.audit.timeslicing import collect_workloads, plan_cluster
from webhook.cli.main import app
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.deviceplugin import Current, Targets, class_config, config_map, plan_changes
from webhook.core.quantity import format_mib
from webhook.core.timeslicing import ClassPlan, Plan

CLUSTER = load_settings().cluster_policy()
CATALOG = load_catalog()
runner = CliRunner()
H100 = ("NVIDIA-H100-80GB-HBM3", "81559")
L40S = ("NVIDIA-L40S", "46068")
A100 = ("NVIDIA-A100-SXM4-40GB", "40960")
T4 = ("Tesla-T4", "15360")
CONFIG_LABEL = "nvidia.com/device-plugin.config"


# --- cluster objects -----------------------------------------------------------------------------
def node(name: str, gpu: tuple[str, str] | None, *, count: int = 1, replicas: int | None = None,
         resource: str = "nvidia.com/gpu", labels: Mapping[str, str] | None = None,
         annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A GPU node as GFD labels it; `gpu=None`: no memory label (GFD has not run)."""
    meta_labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.count": str(count), **(labels or {})}
    if gpu is not None:
        product, memory = gpu
        shared = replicas is not None and replicas > 1 and resource == "nvidia.com/gpu"
        meta_labels |= {"nvidia.com/gpu.product": product + ("-SHARED" if shared else ""),
                        "nvidia.com/gpu.memory": memory}
    if replicas is not None:
        meta_labels |= {"nvidia.com/gpu.replicas": str(replicas), "nvidia.com/gpu.sharing-strategy": "time-slicing"}
    slots = str(count * (replicas or 1))
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": meta_labels, "annotations": dict(annotations or {})},
            "status": {"capacity": {resource: slots, "pods": "110"}, "allocatable": {resource: slots, "pods": "110"}}}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def ollama_template(models: str | None, *, gpus: int = 1, selector: Mapping[str, str] | None = None,
                    vram: str | None = None, image: str = "ollama/ollama:0.6.8") -> dict[str, Any]:
    annotations = {}
    if models is not None:
        annotations["ollama-guard.io/models"] = models
    if vram is not None:
        annotations["ollama-guard.io/vram"] = vram
    spec: dict[str, Any] = {"containers": [{"name": "ollama", "image": image,
                                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}
    if selector:
        spec["nodeSelector"] = dict(selector)
    return {"metadata": {"labels": {"app": "x"}, "annotations": annotations}, "spec": spec}


def deployment(name: str, template: Mapping[str, Any], *, ns: str = "team-a", replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "x"}}, "template": dict(template)}}


def running_pod(name: str, template: Mapping[str, Any], *, node_name: str, owner: tuple[str, str] | None = None,
                hash_label: str = "", ns: str = "team-a") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(template["metadata"]["labels"]),
                            "annotations": dict(template["metadata"]["annotations"])}
    if hash_label:
        meta["labels"]["pod-template-hash"] = hash_label
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "u",
                                    "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {**template["spec"], "nodeName": node_name}, "status": {"phase": "Running"}}


def plan_of(state: Sequence[Mapping[str, Any]], manifests: Sequence[Mapping[str, Any]] = (),
            **kwargs: Any) -> Plan:
    return plan_cluster([namespace("team-a"), *state], cluster=CLUSTER, catalog=CATALOG,
                        manifests=[Manifest("test.yaml", m) for m in manifests], **kwargs)


def by_name(plan: Plan) -> dict[str, ClassPlan]:
    return {c.node_class.name: c for c in plan.classes}


# --- the plans -----------------------------------------------------------------------------------
QWEN32 = ollama_template("qwen2.5:32b")
PLANS = [
    pytest.param(
        [node("h1", H100, replicas=4), node("h2", H100)], [deployment("qwen", QWEN32)],
        {"nvidia-h100-80gb-hbm3-x1": (3, "demand")},
        id="homogeneous-h100-qwen32b",
    ),
    pytest.param(
        [node("h1", H100), node("l1", L40S), node("a1", A100)],
        [deployment("qwen", QWEN32),
         deployment("chat", ollama_template("llama3.1:8b", selector={"nvidia.com/gpu.product": "NVIDIA-L40S"}))],
        {"nvidia-h100-80gb-hbm3-x1": (3, "demand"), "nvidia-l40s-x1": (6, "demand"),
         "nvidia-a100-sxm4-40gb-x1": (1, "demand")},
        id="mixed-h100-l40s-a100",
    ),
    pytest.param(
        [node("h1", H100), node("m1", A100, labels={"nvidia.com/mig.strategy": "single"})],
        [deployment("qwen", QWEN32)],
        {"nvidia-h100-80gb-hbm3-x1": (3, "demand")},
        id="mig-node-excluded",
    ),
    pytest.param(
        [node("h1", H100), node("t1", T4)], [deployment("mystery", ollama_template(None))],
        {"nvidia-h100-80gb-hbm3-x1": (4, "seed table"), "tesla-t4-x1": (2, "seed table")},
        id="no-declared-models-seed-table",
    ),
    pytest.param(
        [node("h1", H100, annotations={"ollama-guard.io/vram-reserved": "12Gi"})], [deployment("qwen", QWEN32)],
        {"nvidia-h100-80gb-hbm3-x1": (2, "demand")},
        id="vram-reserved-leaves-room-for-two",
    ),
    pytest.param(
        [node("h1", H100)], [deployment("embed", ollama_template("nomic-embed-text"))],
        {"nvidia-h100-80gb-hbm3-x1": (16, "demand")},
        id="tiny-model-capped-at-16",
    ),
    pytest.param(
        [node("h1", H100)], [deployment("wide", ollama_template("qwen2.5:32b", gpus=2))],
        {"nvidia-h100-80gb-hbm3-x1": (6, "demand")},
        id="two-gpu-pods-count-half-per-slice",
    ),
    pytest.param(
        [node("h1", H100, count=8), node("h2", H100)], [deployment("qwen", QWEN32)],
        {"nvidia-h100-80gb-hbm3-x8": (3, "demand"), "nvidia-h100-80gb-hbm3-x1": (3, "demand")},
        id="gpu-count-splits-classes",
    ),
]


@pytest.mark.parametrize(("nodes", "manifests", "expected"), PLANS)
def test_plans(nodes: list[dict[str, Any]], manifests: list[dict[str, Any]],
               expected: dict[str, tuple[int, str]]) -> None:
    plan = plan_of(nodes, manifests)
    assert {name: (c.replicas, c.basis) for name, c in by_name(plan).items()} == expected
    assert not plan.problems


def test_the_reasoning_says_how_many_fit_and_why_not_one_more() -> None:
    (h100,) = plan_of([node("h1", H100, replicas=4)], [deployment("qwen", QWEN32)]).classes
    assert ("NVIDIA-H100-80GB-HBM3 (79.6 GiB per GPU) under qwen2.5:32b pods of 23.6 GiB: 3 fit; "
            "4 slices would leave one that no such pod can use") in h100.reasons
    assert "qwen2.5:32b pods of 23.6 GiB: 3 fit (deployment team-a/qwen)" in h100.reasons


def test_mixed_sizes_are_sized_by_the_smallest_and_say_so() -> None:
    plan = plan_of([node("h1", H100)], [deployment("qwen", QWEN32), deployment("chat", ollama_template("llama3.1:8b"))])
    (h100,) = plan.classes
    fit = 81559 // LLAMA31_8B_MIB
    assert h100.replicas == fit
    verdict = next(r for r in h100.reasons if "sizes" in r)
    assert f"slices are sized by the smallest (llama3.1:8b pods of {format_mib(LLAMA31_8B_MIB)}): {fit} fit" in verdict
    assert f"{fit + 1} slices would leave one that no pod of these workloads can use" in verdict


def test_one_pod_per_card_means_no_sharing_section() -> None:
    plan = plan_of([node("a1", A100)], [deployment("qwen", QWEN32)])
    (a100,) = plan.classes
    assert a100.replicas == 1
    assert any("this class gets no sharing" in r for r in a100.reasons)
    assert class_config(a100) == {"version": "v1"}


def test_seed_table_fallback_says_so_and_shows_every_row() -> None:
    (h100,) = plan_of([node("h1", H100)], [deployment("mystery", ollama_template(None))]).classes
    text = "\n".join(h100.reasons)
    assert ("no workload that can run here declares models or VRAM (deployment team-a/mystery): falling back to "
            "the seed's table") in text
    assert "heavy 7B+ LLMs 2–4, medium 1–7B 4–8, light < 1B 8–16 replicas" in text
    pods = f"{81559 // LLAMA31_8B_MIB} llama3.1:8b pods of {format_mib(LLAMA31_8B_MIB)}"
    assert f"heavy → 4 (holds {pods}); medium → 8" in text
    assert "light → 16" in text
    assert "recommending the heavy row" in text


def test_candidate_logic_keeps_workloads_to_their_nodes() -> None:
    """A nodeSelector, a required affinity and an untolerated taint decide which class a workload sizes."""
    tainted = node("l1", L40S)
    tainted["spec"] = {"taints": [{"key": "dedicated", "value": "inference", "effect": "NoSchedule"}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-40GB"]}]}
    ]}}}
    small = ollama_template("qwen2.5:7b")
    small["spec"]["affinity"] = affinity
    plan = plan_of([node("h1", H100), tainted, node("a1", A100)],
                   [deployment("qwen", QWEN32), deployment("small", small)])
    classes = by_name(plan)
    assert [s.workload for s in classes["nvidia-l40s-x1"].sized] == []  # the taint keeps both away
    assert classes["nvidia-l40s-x1"].basis == "seed table"
    assert sorted(s.workload for s in classes["nvidia-a100-sxm4-40gb-x1"].sized) == [
        "deployment team-a/qwen", "deployment team-a/small"]
    assert [s.workload for s in classes["nvidia-h100-80gb-hbm3-x1"].sized] == ["deployment team-a/qwen"]


def test_templates_are_sized_as_mutated() -> None:
    """No GPU request and no settings in the template: the mutation adds the GPU and the namespace's
    context, so the pod is sized at the context its namespace injects."""
    bare = ollama_template("llama3.1:8b")
    del bare["spec"]["containers"][0]["resources"]
    big_context = {**namespace("team-a"), "metadata": {"name": "team-a",
                                                       "annotations": {"ollama-guard.io/context-length": "32768"}}}
    plan = plan_cluster([big_context, node("h1", H100)], cluster=CLUSTER, catalog=CATALOG,
                        manifests=[Manifest("t.yaml", deployment("chat", bare))])
    (h100,) = plan.classes
    (sized,) = h100.sized
    assert sized.gpus == 1
    assert sized.demand_mib > LLAMA31_8B_MIB  # more than at the default 8192 context


def test_running_pods_count_once_per_controller() -> None:
    """Pods of a listed Deployment are its template; pods of an unlisted ReplicaSet group under the
    Deployment their pod-template-hash names; bare pods are their own entry."""
    chat = ollama_template("llama3.1:8b")
    state = [node("h1", H100), deployment("qwen", QWEN32),
             running_pod("qwen-abc-1", QWEN32, node_name="h1", owner=("ReplicaSet", "qwen-abc"), hash_label="abc"),
             running_pod("chat-def-1", chat, node_name="h1", owner=("ReplicaSet", "chat-def"), hash_label="def"),
             running_pod("chat-def-2", chat, node_name="h1", owner=("ReplicaSet", "chat-def"), hash_label="def"),
             running_pod("solo", chat, node_name="h1")]
    found = collect_workloads(state, [], gpu_resources=CLUSTER.gpu_resources)
    summary = sorted((w.kind, w.name, w.replicas, pinned) for w, pinned in found)
    assert summary == [("Deployment", "chat", 2, False), ("Deployment", "qwen", 2, True), ("Pod", "solo", 1, False)]


def test_running_pods_are_not_pinned_to_the_node_they_run_on() -> None:
    chat = ollama_template("llama3.1:8b")
    plan = plan_of([node("h1", H100), node("h2", H100, count=2), running_pod("solo", chat, node_name="h1")])
    assert all(c.sized for c in plan.classes)


def test_fewer_slices_than_running_gpu_pods_says_what_happens_to_them() -> None:
    chat = ollama_template("qwen2.5:32b")
    pods = [running_pod(f"q-{i}", chat, node_name="h1", owner=("StatefulSet", "q")) for i in range(4)]
    (h100,) = plan_of([node("h1", H100, replicas=4), *pods]).classes
    assert h100.replicas == 3
    assert h100.notes == ("node h1 runs 4 GPU pods now; with 3 slices the surplus keeps running until those pods "
                          "end, and no new GPU pod is placed there until then",)


def test_a_node_class_without_a_memory_label_gets_a_clear_line_and_no_config() -> None:
    plan = plan_of([node("x1", None), node("h1", H100)], [deployment("qwen", QWEN32)])
    unknown = next(c for c in plan.classes if c.node_class.gpu_memory_mib == 0)
    assert unknown.replicas is None
    assert unknown.reasons == (
        "x1: no usable nvidia.com/gpu.memory label, so the card's VRAM is unknown and no replicas can be computed; "
        "GPU Feature Discovery publishes the label (or annotate the node with ollama-guard.io/vram-capacity)",)
    assert list(config_map(plan, Targets())["data"]) == ["nvidia-h100-80gb-hbm3-x1"]


def test_an_unknown_model_is_a_line_not_a_crash() -> None:
    plan = plan_of([node("h1", H100)], [deployment("odd", ollama_template("mystery-model:13b")),
                                        deployment("qwen", QWEN32)])
    (line,) = plan.problems
    assert line.startswith("deployment team-a/odd: unknown model 'mystery-model:13b'")
    assert line.endswith("(left out of the plan)")
    assert plan.classes[0].replicas == 3


def test_a_pod_that_never_fits_is_named_and_the_rest_still_sized() -> None:
    plan = plan_of([node("l1", L40S)], [deployment("big", ollama_template("llama3.1:70b"))])
    (l40s,) = plan.classes
    assert l40s.problems == ("deployment team-a/big: pods of 47.6 GiB per GPU never fit one NVIDIA-L40S (45.0 GiB "
                             "per GPU): they cannot run on this class at any replica count",)
    assert l40s.basis == "seed table"
    assert "no workload that can run here fits one of its GPUs" in l40s.reasons[0]


def test_a_bad_replicas_label_is_reported_not_fatal() -> None:
    broken = node("h1", H100)
    broken["metadata"]["labels"]["nvidia.com/gpu.replicas"] = "0"
    (h100,) = plan_of([broken], [deployment("qwen", QWEN32)]).classes
    assert h100.replicas == 3
    assert h100.problems == ('node h1: label nvidia.com/gpu.replicas="0" is not a whole number from 1 to 1024',)


def test_multi_gpu_requests_keep_fail_requests_greater_than_one_off() -> None:
    plan = plan_of([node("h1", H100), node("h2", H100, count=2)],
                   [deployment("wide", ollama_template("qwen2.5:32b", gpus=2,
                                                       selector={"nvidia.com/gpu.count": "2"}))])
    classes = by_name(plan)
    assert classes["nvidia-h100-80gb-hbm3-x1"].fail_requests_greater_than_one is True
    assert classes["nvidia-h100-80gb-hbm3-x2"].fail_requests_greater_than_one is False


def test_renamed_resource_keeps_rename_by_default() -> None:
    (h100,) = plan_of([node("h1", H100, replicas=4, resource="nvidia.com/gpu.shared")],
                      [deployment("qwen", QWEN32)]).classes
    assert h100.rename_by_default is True
    assert class_config(h100)["sharing"]["timeSlicing"]["renameByDefault"] is True


# --- the device plugin's config schema, from its Go types ----------------------------------------
# NVIDIA/k8s-device-plugin api/config/v1: config.go (Config{version, flags, resources, sharing,
# imex}; parseConfigFrom: "" -> v1, else "unknown version"), sharing.go (Sharing{timeSlicing, mps}),
# replicas.go (ReplicatedResources: renameByDefault/failRequestsGreaterThanOne bool, resources
# required and non-empty; ReplicatedResource: name and replicas required, replicas >= 2, devices
# "all" | count > 0 | list), resources.go/consts.go (ResourceName: "nvidia.com/" prefix, <= 63
# characters, a DNS subdomain after it). Parsed with sigs.k8s.io/yaml, i.e. encoding/json types.
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
CONFIG_KEYS = {"version", "flags", "resources", "sharing", "imex"}


def device_plugin_errors(doc: Any) -> list[str]:
    """What the device plugin's config parser would reject in `doc` (empty: accepted)."""
    if not isinstance(doc, dict):
        return ["config: not an object"]
    errors = [f"unknown field {k!r} (ignored by encoding/json)" for k in doc if k not in CONFIG_KEYS]
    version = doc.get("version", "")
    if not isinstance(version, str) or version not in ("", "v1"):
        errors.append(f"unknown version: {version}")
    sharing = doc.get("sharing", {})
    if not isinstance(sharing, dict):
        return [*errors, "sharing: not an object"]
    for key in ("timeSlicing", "mps"):
        if sharing.get(key) is not None:
            errors += replicated_errors(sharing[key], f"sharing.{key}")
    return errors


def replicated_errors(value: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: not an object"]
    errors = [f"{where}.{k}: not a bool" for k in ("renameByDefault", "failRequestsGreaterThanOne")
              if k in value and not isinstance(value[k], bool)]
    resources = value.get("resources")
    if not isinstance(resources, list) or not resources:
        return [*errors, f"{where}: no resources specified"]
    for i, resource in enumerate(resources):
        errors += resource_errors(resource, f"{where}.resources[{i}]")
    return errors


def resource_errors(value: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: not an object"]
    errors = []
    if "name" not in value:
        errors.append(f"{where}: no resource name specified")
    elif not valid_resource_name(value["name"]):
        errors.append(f"{where}.name: incorrect format for resource name {value['name']!r}")
    if "rename" in value and not valid_resource_name(value["rename"]):
        errors.append(f"{where}.rename: incorrect format")
    devices = value.get("devices", "all")
    if not (devices == "all" or (type(devices) is int and devices > 0) or isinstance(devices, list)):
        errors.append(f"{where}.devices: unrecognized type for devices spec: {devices!r}")
    replicas = value.get("replicas")
    if replicas is None:
        errors.append(f"{where}: no replicas specified")
    elif type(replicas) is not int:
        errors.append(f"{where}.replicas: cannot unmarshal {type(replicas).__name__} into Go int")
    elif replicas < 2:
        errors.append(f"{where}: number of replicas must be >= 2")
    return errors


def valid_resource_name(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    full = name if name.startswith("nvidia.com/") else f"nvidia.com/{name}"
    rest = full.split("/", 1)[1]
    return len(full) <= 63 and bool(DNS_SUBDOMAIN.fullmatch(rest)) and len(rest) <= 253


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        pytest.param({"version": "v2"}, "unknown version: v2", id="version"),
        pytest.param({"version": "v1", "sharing": {"timeSlicing": {"resources": []}}}, "no resources specified",
                     id="no-resources"),
        pytest.param({"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu",
                                                                                  "replicas": 1}]}}},
                     "number of replicas must be >= 2", id="one-replica"),
        pytest.param({"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu",
                                                                                  "replicas": "4"}]}}},
                     "cannot unmarshal str into Go int", id="replicas-as-text"),
        pytest.param({"version": "v1", "sharing": {"timeSlicing": {"resources": [{"replicas": 4}]}}},
                     "no resource name specified", id="no-name"),
        pytest.param({"version": "v1", "sharing": {"timeSlicing": {"renameByDefault": "yes", "resources": [
            {"name": "nvidia.com/gpu", "replicas": 4}]}}}, "not a bool", id="rename-not-bool"),
    ],
)
def test_the_schema_rejects_what_the_device_plugin_rejects(doc: dict[str, Any], error: str) -> None:
    assert any(error in e for e in device_plugin_errors(doc)), device_plugin_errors(doc)


LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def test_the_emitted_yaml_is_a_valid_config_map_of_valid_device_plugin_configs(tmp_path: Path) -> None:
    state = tmp_path / "cluster.yaml"
    state.write_text(yaml.safe_dump_all([
        namespace("team-a"), node("h1", H100, replicas=4), node("l1", L40S), node("a1", A100),
        node("s1", H100, replicas=4, resource="nvidia.com/gpu.shared", count=8),
        deployment("qwen", QWEN32),
        deployment("chat", ollama_template("llama3.1:8b", selector={"nvidia.com/gpu.product": "NVIDIA-L40S"})),
    ]))
    result = runner.invoke(app, ["timeslicing", "plan", "--snapshot", str(state), "--format", "yaml"])
    assert result.exit_code == 0, result.output
    (doc,) = list(yaml.safe_load_all(result.stdout))
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, "1.30", strict=True)
    assert doc["metadata"] == {"name": "ollama-guard-time-slicing", "namespace": "gpu-operator",
                               "labels": {"app.kubernetes.io/managed-by": "ollama-guard"}}
    replicas = {}
    for key, text in doc["data"].items():
        assert CONFIG_MAP_KEY.fullmatch(key) and len(key) <= 63 and LABEL_VALUE.fullmatch(key), key
        config = yaml.safe_load(text)
        assert device_plugin_errors(config) == [], (key, config)
        sharing = config.get("sharing", {}).get("timeSlicing", {})
        replicas[key] = [r["replicas"] for r in sharing.get("resources", [])]
        if sharing:
            assert sharing["failRequestsGreaterThanOne"] is True
    assert replicas == {"nvidia-a100-sxm4-40gb-x1": [], "nvidia-h100-80gb-hbm3-x1": [3],
                        "nvidia-h100-80gb-hbm3-x8": [3], "nvidia-l40s-x1": [6]}
    assert yaml.safe_load(doc["data"]["nvidia-h100-80gb-hbm3-x8"])["sharing"]["timeSlicing"]["renameByDefault"]


ONE_H100 = [namespace("team-a"), node("h1", H100, replicas=4), deployment("qwen", QWEN32)]


def test_the_yaml_carries_the_reasoning_and_the_remaining_steps_as_comments(tmp_path: Path) -> None:
    state = tmp_path / "cluster.yaml"
    state.write_text(yaml.safe_dump_all(ONE_H100))
    result = runner.invoke(app, ["timeslicing", "plan", "--snapshot", str(state), "--format", "yaml"])
    comments = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert "# nvidia-h100-80gb-hbm3-x1: replicas 3 (now 4) — demand" in comments
    assert ("#   kubectl label node h1 --overwrite nvidia.com/device-plugin.config=nvidia-h100-80gb-hbm3-x1"
            in comments)
    assert ("#   kubectl patch clusterpolicies.nvidia.com/cluster-policy --type merge -p "
            "'{\"spec\": {\"devicePlugin\": {\"config\": {\"name\": \"ollama-guard-time-slicing\"}}}}'") in comments
    assert "#   kubectl rollout restart -n gpu-operator daemonset/nvidia-device-plugin-daemonset" in comments


def test_the_table_shows_now_and_recommended_and_every_step(tmp_path: Path) -> None:
    state = tmp_path / "cluster.yaml"
    state.write_text(yaml.safe_dump_all(ONE_H100))
    result = runner.invoke(app, ["timeslicing", "plan", "--snapshot", str(state)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert "under qwen2.5:32b pods of 23.6 GiB: 3 fit; 4 slices would leave one that no such pod can use" in flat
    for step in ("1. create ConfigMap gpu-operator/ollama-guard-time-slicing",
                 "2. point ClusterPolicy cluster-policy at ConfigMap ollama-guard-time-slicing",
                 "3. label node h1 nvidia.com/device-plugin.config=nvidia-h100-80gb-hbm3-x1",
                 "4. restart DaemonSet gpu-operator/nvidia-device-plugin-daemonset",
                 "h1: allocatable nvidia.com/gpu = 3"):
        assert step in flat, step
    assert "assumed: a snapshot shows no ConfigMap" in flat


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--max-replicas", "1"], "--max-replicas 1: the device plugin accepts time-slicing replicas of 2 "
                     "or more (api/config/v1/replicas.go) and the guard reads back at most 1024", id="max-1"),
        pytest.param(["--max-replicas", "5000"], "--max-replicas 5000", id="max-5000"),
        pytest.param(["--apply"], "--apply writes to a live cluster", id="apply-snapshot"),
    ],
)
def test_bad_options_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    state = tmp_path / "cluster.yaml"
    state.write_text(yaml.safe_dump(node("h1", H100)))
    result = runner.invoke(app, ["timeslicing", "plan", "--snapshot", str(state), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


# --- --apply against the loopback API server -----------------------------------------------------
DAEMONSETS = ("nvidia-device-plugin-daemonset", "gpu-feature-discovery")


class DevicePlugin:
    """The device plugin's config-manager and GFD, in miniature: a node labelled with a config of
    the ConfigMap advertises `replicas × GPUs` and shows the `nvidia.com/gpu.replicas` label."""

    def __init__(self, api: KubeApiFixture) -> None:
        self.api, self.stop = api, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.02):
            configs = (self.api.config_map("gpu-operator", "ollama-guard-time-slicing") or {}).get("data") or {}
            for name in ("h1", "h2"):
                current = self.api.node(name)
                wanted = configs.get(((current or {}).get("metadata", {}).get("labels") or {}).get(CONFIG_LABEL, ""))
                if current is None or wanted is None:
                    continue
                resources = (yaml.safe_load(wanted).get("sharing") or {}).get("timeSlicing", {}).get("resources")
                replicas = resources[0]["replicas"] if resources else 1
                if current["status"]["allocatable"].get("nvidia.com/gpu") != str(replicas):
                    current["metadata"]["labels"]["nvidia.com/gpu.replicas"] = str(replicas)
                    current["status"]["allocatable"]["nvidia.com/gpu"] = str(replicas)
                    current["status"]["capacity"]["nvidia.com/gpu"] = str(replicas)
                    self.api.modify(current)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeApiFixture, Path]]:
    with KubeApiFixture() as api:
        for obj in (namespace("team-a"), namespace("gpu-operator"), node("h1", H100, replicas=4),
                    node("h2", H100, replicas=4), deployment("qwen", QWEN32)):
            api.add(obj)
        api.serve_crd("nvidia.com", "v1", "ClusterPolicy", "clusterpolicies", namespaced=False)
        api.add_custom({"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": "cluster-policy"},
                        "spec": {"devicePlugin": {"enabled": True}}})
        api.serve_crd("apps", "v1", "DaemonSet", "daemonsets", namespaced=True)
        for name in DAEMONSETS:
            api.add_custom({"apiVersion": "apps/v1", "kind": "DaemonSet",
                            "metadata": {"name": name, "namespace": "gpu-operator"},
                            "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": {}}}})
        plugin = DevicePlugin(api)
        plugin.thread.start()
        yield api, write_kubeconfig(tmp_path / "kubeconfig", api.url)
        plugin.stop.set()
        plugin.thread.join()


def plan_live(config: Path, *args: str) -> Any:
    return runner.invoke(app, ["timeslicing", "plan", "--kubeconfig", str(config), *args],
                         env={"SOURCE_DATE_EPOCH": "1700000000"})


def writes(api: KubeApiFixture) -> list[tuple[str, str, bool]]:
    return [(r.method, r.path, r.query.get("dryRun") == "All") for r in api.requests() if r.method != "GET"]


def test_without_apply_nothing_is_written(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    result = plan_live(config, "--format", "json")
    assert result.exit_code == 0, result.output
    assert writes(api) == []
    doc = json.loads(result.stdout)
    assert [c["step"] for c in doc["apply"]["changes"]] == ["configmap", "clusterpolicy", "label", "label",
                                                           "restart", "restart"]
    assert doc["apply"]["assumed"] == []


def test_apply_dry_runs_everything_first_then_writes_what_it_printed(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    printed = json.loads(plan_live(config, "--format", "json").stdout)["apply"]["changes"]
    result = plan_live(config, "--apply", "--wait", "10", "--format", "json")
    assert result.exit_code == 0, result.output
    sent = [r for r in api.requests() if r.method != "GET"]
    calls = [(c["method"], c["path"]) for c in printed]
    assert [(r.method, r.path) for r in sent] == calls + calls
    assert [r.query.get("dryRun") for r in sent] == ["All"] * len(calls) + [None] * len(calls)
    assert [r.body for r in sent[len(calls):]] == [c["body"] for c in printed]
    stored = api.config_map("gpu-operator", "ollama-guard-time-slicing")
    assert stored is not None
    assert yaml.safe_load(stored["data"]["nvidia-h100-80gb-hbm3-x1"])["sharing"]["timeSlicing"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 3}]
    for name in ("h1", "h2"):
        shown = api.node(name) or {}
        assert shown["metadata"]["labels"][CONFIG_LABEL] == "nvidia-h100-80gb-hbm3-x1"
        assert shown["status"]["allocatable"]["nvidia.com/gpu"] == "3"
    policy = api.custom("nvidia.com", "v1", "clusterpolicies")["cluster-policy"]
    assert policy["spec"] == {"devicePlugin": {"enabled": True, "config": {"name": "ollama-guard-time-slicing"}}}
    daemonsets = api.custom("apps", "v1", "daemonsets")
    for name in DAEMONSETS:
        annotations = daemonsets[f"gpu-operator/{name}"]["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"kubectl.kubernetes.io/restartedAt": "2023-11-14T22:13:20Z"}
    assert "verified: node h1 allocatable nvidia.com/gpu = 3 (planned 3)" in result.stderr


def test_a_second_apply_changes_nothing(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    assert plan_live(config, "--apply", "--wait", "10").exit_code == 0
    before = len(writes(api))
    again = plan_live(config, "--apply", "--wait", "10")
    assert again.exit_code == 0, again.output
    assert len(writes(api)) == before
    assert "nothing to change: the cluster already has this plan" in again.stderr
    assert "verified: node h2 allocatable nvidia.com/gpu = 3 (planned 3)" in again.stderr


def test_a_failure_mid_way_stops_and_says_what_was_done(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    api.set_failure("nodes", 500, after=3, times=1)  # two dry-run label patches, h1's label, then h2's fails
    result = plan_live(config, "--apply", "--wait", "1")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.split(":")[0] in ("done", "failed", "not done")]
    assert lines == [
        "done: create ConfigMap gpu-operator/ollama-guard-time-slicing with config nvidia-h100-80gb-hbm3-x1",
        "done: point ClusterPolicy cluster-policy at ConfigMap ollama-guard-time-slicing",
        "done: label node h1 nvidia.com/device-plugin.config=nvidia-h100-80gb-hbm3-x1",
        "failed: label node h2 nvidia.com/device-plugin.config=nvidia-h100-80gb-hbm3-x1: HTTP 500 InternalError: "
        "injected failure",
        "not done: restart DaemonSet gpu-operator/nvidia-device-plugin-daemonset (it reads the ConfigMap only when it "
        "starts)",
        "not done: restart DaemonSet gpu-operator/gpu-feature-discovery (it reads the ConfigMap only when it starts)",
    ]
    assert CONFIG_LABEL not in (api.node("h2") or {})["metadata"]["labels"]
    resumed = plan_live(config, "--apply", "--wait", "10", "--format", "json")
    assert resumed.exit_code == 0, resumed.output
    assert [c["step"] for c in json.loads(resumed.stdout)["apply"]["changes"]] == ["label"]


def test_a_refused_dry_run_changes_nothing(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    api.set_failure("clusterpolicies:patch", 403, times=1)
    result = plan_live(config, "--apply", "--wait", "1")
    assert result.exit_code == 1
    assert ("dry run refused: point ClusterPolicy cluster-policy at ConfigMap ollama-guard-time-slicing: HTTP 403 "
            "Forbidden: injected failure") in result.stderr
    assert "nothing was changed (6 change(s) not made)" in result.stderr
    assert all(dry for _, _, dry in writes(api))
    assert api.config_map("gpu-operator", "ollama-guard-time-slicing") is None


def test_a_cluster_policy_on_another_config_map_blocks_before_any_write(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    policy = api.custom("nvidia.com", "v1", "clusterpolicies")["cluster-policy"]
    policy["spec"]["devicePlugin"]["config"] = {"name": "time-slicing-config", "default": "any"}
    code, _ = api._replace_custom(api._crds[("nvidia.com", "v1", "clusterpolicies")], None, "cluster-policy",
                                  json.dumps(policy).encode())
    assert code == 200
    result = plan_live(config, "--apply")
    assert result.exit_code == 1
    assert ("ClusterPolicy cluster-policy already points the device plugin at ConfigMap time-slicing-config; "
            "switching it would drop that ConfigMap's configs: re-run with --config-map time-slicing-config") in (
        " ".join(result.stderr.split()))
    assert writes(api) == []


def test_an_existing_config_map_keeps_its_other_configs(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    api.add({"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "ollama-guard-time-slicing", "namespace": "gpu-operator"},
             "data": {"any": "version: v1\n"}})
    result = plan_live(config, "--apply", "--wait", "10")
    assert result.exit_code == 0, result.output
    data = (api.config_map("gpu-operator", "ollama-guard-time-slicing") or {})["data"]
    assert sorted(data) == ["any", "nvidia-h100-80gb-hbm3-x1"]


def test_changes_diff_against_what_the_cluster_shows() -> None:
    plan = plan_of([node("h1", H100, labels={CONFIG_LABEL: "nvidia-h100-80gb-hbm3-x1"})], [deployment("q", QWEN32)])
    data = config_map(plan, Targets())["data"]
    policy = {"spec": {"devicePlugin": {"config": {"name": "ollama-guard-time-slicing"}}}}
    current = Current({"data": dict(data)}, policy, {}, frozenset(DAEMONSETS))
    changes = plan_changes(plan, Targets(), current, now="2024-01-01T00:00:00Z")
    assert changes.changes == ()
    assert changes.blockers == ()
    assert [e.count for e in changes.expectations] == [3]
