"""What to write so the NVIDIA device plugin serves a time-slicing plan, and the steps that write it.

The formats, as the upstream sources define them (read for design §16; the tests validate the
emitted configs against a schema transcribed from these Go types):

- NVIDIA/k8s-device-plugin `api/config/v1/config.go`: `Config{version, flags, resources, sharing,
  imex}`, parsed by `sigs.k8s.io/yaml` (YAML to JSON, then `encoding/json`: unknown fields are
  ignored, types must match); `parseConfigFrom`: an empty version means `v1`, any other is
  "unknown version".
- `api/config/v1/sharing.go`: `Sharing{timeSlicing, mps}`; `SharingStrategy()` is MPS when MPS
  replicates, else time-slicing when time-slicing does, else none.
- `api/config/v1/replicas.go`: `timeSlicing{renameByDefault bool, failRequestsGreaterThanOne bool,
  resources []}`: `resources` must be present and non-empty ("no resources specified"); each
  resource needs `name` ("no resource name specified") and `replicas` ("no replicas specified"),
  an integer **>= 2** ("number of replicas must be >= 2": a whole card is written as no `sharing`
  section at all); `devices` defaults to `"all"` (else a count > 0 or a list of indices/UUIDs);
  `renameByDefault` renames each resource to `<name>.shared`.
- `api/config/v1/resources.go`, `consts.go`: a resource name gets the `nvidia.com/` prefix when it
  lacks one, is at most 63 characters, and its part after the prefix is a DNS subdomain.
- `README.md` ("With CUDA Time-Slicing"): `failRequestsGreaterThanOne: true` is recommended (a
  request for 2 shared GPUs buys no proportional compute; it fails with `UnexpectedAdmissionError`
  instead); GFD labels `nvidia.com/gpu.replicas` and, with `renameByDefault: false`, appends
  `-SHARED` to `nvidia.com/gpu.product`. ("Updating Per-Node Configuration With a Node Label"):
  `nvidia.com/device-plugin.config=<config-name>` selects a named config of the ConfigMap.
- `cmd/config-manager/main.go`, the sidecar that follows that label: a value must name an existing
  config ("specified config ... does not exist"), so the ConfigMap is written before any label;
  a node without the label gets the default config, else the fallbacks `named` (a config called
  `default`), `single` (the only config), `empty`. This plan sets no default: unlabelled nodes keep
  what they had.
- NVIDIA/gpu-operator `api/nvidia/v1/clusterpolicy_types.go`: `ClusterPolicy` (`nvidia.com/v1`,
  cluster-scoped, resource `clusterpolicies`), `spec.devicePlugin.config{name, default}`: the
  ConfigMap in the operator's namespace and the config for unlabelled nodes. Its docs ("Time-Slicing
  GPUs in Kubernetes"): the operator does not watch the ConfigMap, so after changing it
  `kubectl rollout restart -n gpu-operator daemonset/nvidia-device-plugin-daemonset`; verify with
  the node's `nvidia.com/gpu` capacity / allocatable (replicas × GPUs).

`plan_changes` diffs what a plan wants against what the cluster shows (ConfigMap, ClusterPolicy,
node labels, DaemonSets) and returns only what differs, in the order that works (ConfigMap before
labels), each change with its API call and the `kubectl` line that does the same. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from webhook.core.replicas import MIN_REPLICAS
from webhook.core.timeslicing import LABEL_CONFIG, SHARED_RESOURCE, ClassPlan, Plan

MERGE_PATCH = "application/merge-patch+json"
GPU_RESOURCE = "nvidia.com/gpu"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "ollama-guard"}
DEFAULT_CONFIG_MAP = "ollama-guard-time-slicing"
DEFAULT_NAMESPACE = "gpu-operator"
DEFAULT_CLUSTER_POLICY = "cluster-policy"


@dataclass(frozen=True, slots=True)
class Targets:
    """Where the plan is written: the ConfigMap, the GPU Operator's ClusterPolicy, the DaemonSets."""

    config_map: str = DEFAULT_CONFIG_MAP
    namespace: str = DEFAULT_NAMESPACE
    #: "" skips the ClusterPolicy (the device plugin's own Helm chart: `--set config.name=…`)
    cluster_policy: str = DEFAULT_CLUSTER_POLICY
    daemonsets: tuple[str, ...] = ("nvidia-device-plugin-daemonset", "gpu-feature-discovery")


@dataclass(frozen=True, slots=True)
class Current:
    """What the cluster shows now (None: not found)."""

    config_map: Mapping[str, Any] | None = None
    cluster_policy: Mapping[str, Any] | None = None
    node_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    daemonsets: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Change:
    """One write: its API call, and the `kubectl` line that does the same."""

    step: str
    what: str
    command: str
    method: str
    path: str
    body: Mapping[str, Any]
    content_type: str = MERGE_PATCH


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a node shows once the device plugin serves its config."""

    node: str
    resource: str
    count: int
    replicas: int


@dataclass(frozen=True, slots=True)
class Changes:
    changes: tuple[Change, ...]
    #: reasons to write nothing at all (the plan cannot be put in place as it stands)
    blockers: tuple[str, ...]
    #: what is already in place, or left alone, each a line
    unchanged: tuple[str, ...]
    expectations: tuple[Expectation, ...]


def class_config(plan: ClassPlan) -> dict[str, Any]:
    """The device plugin config of one class: time-slicing `replicas` ≥ 2, else no sharing section."""
    if plan.replicas is None or plan.replicas < MIN_REPLICAS:
        return {"version": "v1"}
    return {
        "version": "v1",
        "sharing": {
            "timeSlicing": {
                "renameByDefault": plan.rename_by_default,
                "failRequestsGreaterThanOne": plan.fail_requests_greater_than_one,
                "resources": [{"name": GPU_RESOURCE, "replicas": plan.replicas}],
            }
        },
    }


class _BlockDumper(yaml.SafeDumper):
    """YAML as a person writes it: multi-line strings (the configs in a ConfigMap) as `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str)


def dump_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.dump(dict(doc), Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def config_text(config: Mapping[str, Any]) -> str:
    return dump_yaml(config)


def planned(plan: Plan) -> tuple[ClassPlan, ...]:
    """The classes with a figure (a class whose VRAM is unknown is left as it is)."""
    return tuple(c for c in plan.classes if c.replicas is not None)


def config_data(plan: Plan) -> dict[str, str]:
    return {c.node_class.name: config_text(class_config(c)) for c in planned(plan)}


def config_map(plan: Plan, targets: Targets) -> dict[str, Any]:
    """The ConfigMap object: one named config per class."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": targets.config_map, "namespace": targets.namespace, "labels": dict(MANAGED_BY)},
        "data": config_data(plan),
    }


def expectations(plan: Plan) -> tuple[Expectation, ...]:
    out = []
    for c in planned(plan):
        replicas = c.replicas or 1
        shared = replicas >= MIN_REPLICAS and c.rename_by_default
        for node in c.node_class.nodes:
            out.append(Expectation(node.name, SHARED_RESOURCE if shared else GPU_RESOURCE,
                                   replicas * node.gpu_count, replicas))
    return tuple(out)


def plan_changes(plan: Plan, targets: Targets, current: Current, *, now: str) -> Changes:
    """Only what differs from `current`, in the order that works; `now` stamps the restarts."""
    wanted = config_map(plan, targets)
    if not wanted["data"]:
        return Changes((), ("no node class has a recommendation: nothing to write",), (), ())
    unchanged: list[str] = []
    changes = _config_map_change(wanted, targets, current, unchanged)
    policy, blockers = _cluster_policy_change(wanted["data"], targets, current, unchanged)
    changes += policy
    changes += _label_changes(plan, current, unchanged)
    changes += _restarts(bool(changes and changes[0].step == "configmap"), targets, current, now, unchanged)
    return Changes(tuple(changes), tuple(blockers), tuple(unchanged), expectations(plan))


def _config_map_change(wanted: Mapping[str, Any], targets: Targets, current: Current, unchanged: list[str]
                       ) -> list[Change]:
    """Create the ConfigMap `wanted`, or merge-patch the configs that differ into the one there."""
    where, configs = f"{targets.namespace}/{targets.config_map}", wanted["data"]
    if current.config_map is None:
        command = f"kubectl create -f - <<'EOF'\n{dump_yaml(wanted)}EOF"
        return [Change("configmap", f"create ConfigMap {where} with {_configs(configs)}", command, "POST",
                       f"/api/v1/namespaces/{targets.namespace}/configmaps", wanted, "application/json")]
    data = current.config_map.get("data") or {}
    differ = {k: v for k, v in configs.items() if data.get(k) != v}
    if not differ:
        unchanged.append(f"ConfigMap {where} already holds {_configs(configs)}")
        return []
    patch = {"data": differ}
    return [Change("configmap", f"write {_configs(differ)} into ConfigMap {where} (other keys kept)",
                   f"kubectl patch configmap -n {targets.namespace} {targets.config_map} --type merge "
                   f"-p '{json.dumps(patch)}'", "PATCH",
                   f"/api/v1/namespaces/{targets.namespace}/configmaps/{targets.config_map}", patch)]


def _configs(data: Mapping[str, str]) -> str:
    return f"config{'s' if len(data) != 1 else ''} {', '.join(sorted(data))}"


def _cluster_policy_change(wanted: Mapping[str, str], targets: Targets, current: Current, unchanged: list[str]
                           ) -> tuple[list[Change], list[str]]:
    if not targets.cluster_policy:
        unchanged.append(f"no ClusterPolicy step: point the device plugin at ConfigMap {targets.config_map} "
                         f"yourself (its Helm chart: --set config.name={targets.config_map})")
        return [], []
    name = targets.cluster_policy
    if current.cluster_policy is None:
        return [], [f"ClusterPolicy {name} not found: is the GPU Operator installed? (with the device plugin's own "
                    f"Helm chart pass --cluster-policy '' and set config.name={targets.config_map})"]
    config = (((current.cluster_policy.get("spec") or {}).get("devicePlugin") or {}).get("config")) or {}
    in_use, default = str(config.get("name") or ""), str(config.get("default") or "")
    keys = {*((current.config_map or {}).get("data") or {}), *wanted}
    if in_use and in_use != targets.config_map:
        return [], [f"ClusterPolicy {name} already points the device plugin at ConfigMap {in_use}; switching it "
                    f"would drop that ConfigMap's configs: re-run with --config-map {in_use} to add the class "
                    "configs to it instead"]
    if default and default not in keys:
        return [], [f"ClusterPolicy {name} names the default config {default!r}, which ConfigMap "
                    f"{targets.config_map} would not hold: add it there first, or clear the default"]
    if in_use:
        unchanged.append(f"ClusterPolicy {name} already uses ConfigMap {in_use}")
        return [], []
    patch = {"spec": {"devicePlugin": {"config": {"name": targets.config_map}}}}
    return [Change("clusterpolicy", f"point ClusterPolicy {name} at ConfigMap {targets.config_map}",
                   f"kubectl patch clusterpolicies.nvidia.com/{name} --type merge -p '{json.dumps(patch)}'",
                   "PATCH", f"/apis/nvidia.com/v1/clusterpolicies/{name}", patch)], []


def _label_changes(plan: Plan, current: Current, unchanged: list[str]) -> list[Change]:
    changes = []
    for c in planned(plan):
        config = c.node_class.name
        for node in c.node_class.nodes:
            labels = current.node_labels.get(node.name, node.labels)
            if labels.get(LABEL_CONFIG) == config:
                unchanged.append(f"node {node.name} already selects config {config}")
                continue
            patch = {"metadata": {"labels": {LABEL_CONFIG: config}}}
            changes.append(Change("label", f"label node {node.name} {LABEL_CONFIG}={config}",
                                  f"kubectl label node {node.name} --overwrite {LABEL_CONFIG}={config}",
                                  "PATCH", f"/api/v1/nodes/{node.name}", patch))
    return changes


def _restarts(config_changed: bool, targets: Targets, current: Current, now: str, unchanged: list[str]
              ) -> list[Change]:
    """A rollout restart of each DaemonSet that reads the ConfigMap, when its content changed."""
    if not config_changed:
        return []
    changes = []
    for name in targets.daemonsets:
        if name not in current.daemonsets:
            unchanged.append(f"DaemonSet {targets.namespace}/{name} not found: restart whatever runs the device "
                             "plugin (and GPU Feature Discovery) so they read the new configs")
            continue
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        changes.append(Change("restart", f"restart DaemonSet {targets.namespace}/{name} (it reads the ConfigMap "
                                         "only when it starts)",
                              f"kubectl rollout restart -n {targets.namespace} daemonset/{name}", "PATCH",
                              f"/apis/apps/v1/namespaces/{targets.namespace}/daemonsets/{name}", patch))
    return changes


def verify_command(expect: Sequence[Expectation]) -> str:
    """The `kubectl` line that shows what `expect` describes."""
    names = " ".join(sorted({e.node for e in expect}))
    resources = sorted({e.resource for e in expect})
    columns = ["NODE:.metadata.name", f"CONFIG:.metadata.labels.{_escaped(LABEL_CONFIG)}",
               f"REPLICAS:.metadata.labels.{_escaped('nvidia.com/gpu.replicas')}"]
    columns += [f"{r.upper().split('/')[-1]}:.status.allocatable.{_escaped(r)}" for r in resources]
    return f"kubectl get nodes {names} -o custom-columns='{','.join(columns)}'"


def _escaped(path: str) -> str:
    """A key for kubectl's JSONPath-like columns: dots inside a key are escaped."""
    return path.replace(".", "\\.")
