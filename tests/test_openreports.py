"""Audit reports in both policy-report groups: `wgpolicyk8s.io/v1alpha2` and OpenReports
(`openreports.io/v1alpha1`).

- Both renderings validate against the CRD schemas as published (`tests/data/crds/`, each file
  says where it came from), with unknown fields errors (the API server would prune them).
- The two groups carry the same reports: results, summary, timestamps.
- `--write-reports` against the loopback API server (`kube_api_fixture`) serving either group,
  both or neither: `--report-api auto` follows API discovery, an explicit group is written as
  named, creation then replacement, pruning of the guard's own stale reports within the written
  group and the audit's scope, and the errors a user can act on.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from kube_api_fixture import KubeApiFixture
from test_audit import GOLDEN, REPO, audit, invoke, rich_state, write_kubeconfig

from webhook.audit.render_openreports import OPENREPORTS, open_reports
from webhook.audit.render_policy import WGPOLICY, ReportApi, policy_reports
from webhook.cli.audit import served_group_versions
from webhook.state.files import load_objects

CRDS = REPO / "tests" / "data" / "crds"
SCHEMA_FILES = {
    ("wgpolicyk8s.io/v1alpha2", "PolicyReport"): "wgpolicyk8s.io_policyreports.yaml",
    ("wgpolicyk8s.io/v1alpha2", "ClusterPolicyReport"): "wgpolicyk8s.io_clusterpolicyreports.yaml",
    ("openreports.io/v1alpha1", "Report"): "openreports.io_reports.yaml",
    ("openreports.io/v1alpha1", "ClusterReport"): "openreports.io_clusterreports.yaml",
}
GOLDENS = {WGPOLICY: "audit.policyreport.yaml", OPENREPORTS: "audit.openreports.yaml"}
RENDER = {WGPOLICY: policy_reports, OPENREPORTS: open_reports}


# --- the CRD schemas -------------------------------------------------------------------------------
def structural(schema: Any) -> Any:
    """The schema as the API server applies it: an object with `properties` and neither
    `additionalProperties` nor `x-kubernetes-preserve-unknown-fields` keeps only those fields."""
    if isinstance(schema, list):
        return [structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: structural(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def validator(api_version: str, kind: str) -> Draft4Validator:
    published = yaml.safe_load((CRDS / SCHEMA_FILES[(api_version, kind)]).read_text(encoding="utf-8"))
    return Draft4Validator(structural(published["openAPIV3Schema"]))


def crd_errors(doc: Mapping[str, Any]) -> list[str]:
    """What the CRD of the document's own apiVersion and kind rejects or would prune."""
    check = validator(str(doc.get("apiVersion")), str(doc.get("kind")))
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in check.iter_errors(doc))


def example_documents(api: ReportApi) -> list[dict[str, Any]]:
    """The example audit's reports: the golden, which `test_golden_output` keeps byte-equal to the renderer."""
    return list(yaml.safe_load_all((GOLDEN / GOLDENS[api]).read_text(encoding="utf-8")))


def documents(api: ReportApi, scenario: str) -> list[dict[str, Any]]:
    return example_documents(api) if scenario == "example" else RENDER[api](audit(rich_state()))


@pytest.mark.parametrize("scenario", ["example", "rich"])
@pytest.mark.parametrize("api", [pytest.param(WGPOLICY, id="wgpolicyk8s"), pytest.param(OPENREPORTS, id="openreports")])
def test_reports_follow_the_published_crd(api: ReportApi, scenario: str) -> None:
    docs = documents(api, scenario)
    assert [d["kind"] for d in docs] == [api.cluster_kind] + [api.kind] * (len(docs) - 1)
    assert {d["apiVersion"] for d in docs} == {api.api_version}
    for doc in docs:
        assert crd_errors(doc) == [], doc["metadata"]


@pytest.mark.parametrize("scenario", ["example", "rich"])
def test_the_two_groups_carry_the_same_reports(scenario: str) -> None:
    wg, opened = documents(WGPOLICY, scenario), documents(OPENREPORTS, scenario)
    assert len(wg) == len(opened) > 1
    for policy_report, report in zip(wg, opened, strict=True):
        assert report.pop("source") == "ollama-guard"  # the report-level field only OpenReports has
        assert (report.pop("kind"), policy_report.pop("kind")) in {
            ("ClusterReport", "ClusterPolicyReport"),
            ("Report", "PolicyReport"),
        }
        report.pop("apiVersion"), policy_report.pop("apiVersion")
        assert report == policy_report  # metadata, summary, results (timestamps, resources, properties)


def test_openreports_document_shape() -> None:
    cluster, *namespaced = documents(OPENREPORTS, "example")
    assert list(cluster) == ["apiVersion", "kind", "metadata", "source", "summary", "results"]
    assert cluster["metadata"] == {"name": "ollama-guard", "labels": {"app.kubernetes.io/managed-by": "ollama-guard"}}
    assert [d["metadata"]["namespace"] for d in namespaced] == sorted(d["metadata"]["namespace"] for d in namespaced)
    assert not {"scope", "scopeSelector", "configuration"} & {k for d in namespaced for k in d}
    result = namespaced[0]["results"][0]
    assert set(result) <= {
        "policy",
        "rule",
        "result",
        "scored",
        "severity",
        "category",
        "message",
        "source",
        "timestamp",
        "resources",
        "properties",
    }
    assert (result["policy"], result["source"], result["scored"]) == ("ollama-guard", "ollama-guard", True)
    assert result["timestamp"] == {"seconds": 1748779200, "nanos": 0}


BAD_RESULT = {"result": "denied", "severity": "urgent", "timestamp": {"seconds": 1}, "resources": [{"kind": 3}]}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(
            {
                "apiVersion": "openreports.io/v1alpha1",
                "kind": "Report",
                "metadata": {},
                "summary": {"pass": "1"},
                "results": [{**BAD_RESULT, "extra": 1}],
                "configuration": {},
            },
            [
                "configuration: 'limits' is a required property",
                "results.0.resources.0.kind: 3 is not of type 'string'",
                "results.0.result: 'denied' is not one of ['pass', 'fail', 'warn', 'error', 'skip']",
                "results.0.severity: 'urgent' is not one of ['critical', 'high', 'low', 'medium', 'info']",
                "results.0.timestamp: 'nanos' is a required property",
                "results.0: 'policy' is a required property",
                "results.0: Additional properties are not allowed ('extra' was unexpected)",
                "summary.pass: '1' is not of type 'integer'",
            ],
            id="openreports-report",
        ),
        pytest.param(
            {
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": "ClusterPolicyReport",
                "metadata": {},
                "source": "ollama-guard",
                "results": [BAD_RESULT],
            },
            [
                ".: Additional properties are not allowed ('source' was unexpected)",
                "results.0.resources.0.kind: 3 is not of type 'string'",
                "results.0.result: 'denied' is not one of ['pass', 'fail', 'warn', 'error', 'skip']",
                "results.0.severity: 'urgent' is not one of ['critical', 'high', 'low', 'medium', 'info']",
                "results.0.timestamp: 'nanos' is a required property",
                "results.0: 'policy' is a required property",
            ],
            id="v1alpha2-has-no-report-source",
        ),
    ],
)
def test_the_crd_check_rejects_what_the_api_server_would_not_keep(doc: dict[str, Any], expected: list[str]) -> None:
    assert crd_errors(doc) == expected


# --- discovery -------------------------------------------------------------------------------------
def test_served_group_versions_reads_an_api_group_list() -> None:
    discovery = {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "wgpolicyk8s.io",
                "versions": [
                    {"groupVersion": "wgpolicyk8s.io/v1beta1", "version": "v1beta1"},
                    {"groupVersion": "wgpolicyk8s.io/v1alpha2", "version": "v1alpha2"},
                ],
                "preferredVersion": {"groupVersion": "wgpolicyk8s.io/v1beta1", "version": "v1beta1"},
            },
            {"name": "broken", "versions": "v1"},
        ],
    }
    assert served_group_versions(discovery) == {"wgpolicyk8s.io/v1beta1", "wgpolicyk8s.io/v1alpha2"}
    assert served_group_versions({"kind": "Status"}) == set()


# --- --write-reports against the loopback API server -----------------------------------------------
GROUPS: dict[str, ReportApi] = {"wgpolicyk8s": WGPOLICY, "openreports": OPENREPORTS}


def serve(api: KubeApiFixture, group: ReportApi) -> None:
    api.serve_crd(group.group, group.version, group.kind, group.resource, namespaced=True)
    api.serve_crd(group.group, group.version, group.cluster_kind, group.cluster_resource, namespaced=False)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[KubeApiFixture, Path]]:
    """The example cluster behind a kubeconfig, serving the report groups named by the (indirect)
    parameter; none without one."""
    with KubeApiFixture() as api:
        for obj in load_objects([REPO / "examples" / "cluster.yaml"]):
            api.add(obj)
        for name in getattr(request, "param", ()):
            serve(api, GROUPS[name])
        yield api, write_kubeconfig(tmp_path / "config", api.url)


def served(*names: str) -> pytest.MarkDecorator:
    """The report groups the `cluster` fixture serves in this test."""
    return pytest.mark.parametrize("cluster", [pytest.param(names, id="+".join(names))], indirect=True)


def stored(api: KubeApiFixture, group: ReportApi) -> dict[str, dict[str, Any]]:
    """Every stored report of the group by `namespace/name` (cluster-scoped: `name`)."""
    return {
        **api.custom(group.group, group.version, group.cluster_resource),
        **api.custom(group.group, group.version, group.resource),
    }


def without_server_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(doc))
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        out["metadata"].pop(key, None)
    return out


def write(config: Path, *args: str) -> Any:
    return invoke("--kubeconfig", str(config), "--write-reports", *args)


ONLY = "auto: the only report group the cluster serves"
BOTH = (
    "auto: the cluster serves both wgpolicyk8s.io/v1alpha2 and openreports.io/v1alpha1; "
    "--report-api openreports writes the other"
)


@pytest.mark.parametrize(
    ("cluster", "written", "why"),
    [
        pytest.param(("wgpolicyk8s",), WGPOLICY, ONLY, id="wgpolicyk8s-only"),
        pytest.param(("openreports",), OPENREPORTS, ONLY, id="openreports-only"),
        pytest.param(("wgpolicyk8s", "openreports"), WGPOLICY, BOTH, id="both"),
    ],
    indirect=["cluster"],
)
def test_auto_writes_the_group_discovery_lists(
    cluster: tuple[KubeApiFixture, Path], written: ReportApi, why: str
) -> None:
    api, config = cluster
    result = write(config, "--format", "openreports" if written is OPENREPORTS else "policyreport")
    assert result.exit_code == 0, result.output
    assert f"writing {written.api_version} reports ({why})" in result.stderr
    assert f"created {written.cluster_kind} ollama-guard" in result.stderr
    assert f"created {written.kind} team-b/ollama-guard" in result.stderr
    reports = stored(api, written)
    assert [r.path for r in api.requests() if r.path.startswith("/apis/") and r.kind is None] == ["/apis/"]
    other = next(g for g in GROUPS.values() if g is not written)
    assert not [r for r in api.requests() if r.path.startswith(f"/apis/{other.group}/")]
    printed = list(yaml.safe_load_all(result.stdout))  # the same run's offline rendering
    assert [without_server_fields(reports[key]) for key in sorted(reports, key=lambda k: (len(k.split("/")), k))] == (
        printed
    )
    for doc in reports.values():
        assert crd_errors(doc) == [], doc["metadata"]


@served("openreports")
def test_a_second_run_replaces_at_the_stored_resource_version(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    assert write(config, "--format", "json").exit_code == 0
    before = stored(api, OPENREPORTS)["team-b/ollama-guard"]["metadata"]
    second = write(config, "--format", "json")
    assert second.exit_code == 0, second.output
    assert "updated ClusterReport ollama-guard" in second.stderr
    assert "updated Report team-b/ollama-guard" in second.stderr
    (put,) = [r for r in api.requests(method="PUT") if r.path.endswith("/namespaces/team-b/reports/ollama-guard")]
    assert put.body["metadata"]["resourceVersion"] == before["resourceVersion"]
    after = stored(api, OPENREPORTS)["team-b/ollama-guard"]["metadata"]
    assert (after["uid"], after["creationTimestamp"]) == (before["uid"], before["creationTimestamp"])
    assert int(after["resourceVersion"]) > int(before["resourceVersion"])


@served("wgpolicyk8s", "openreports")
@pytest.mark.parametrize("choice", ["openreports", "wgpolicyk8s"])
def test_a_named_group_is_written_without_discovery(cluster: tuple[KubeApiFixture, Path], choice: str) -> None:
    api, config = cluster
    result = write(config, "--format", "json", "--report-api", choice)
    assert result.exit_code == 0, result.output
    group = GROUPS[choice]
    assert f"writing {group.api_version} reports (--report-api {choice})" in result.stderr
    assert "team-b/ollama-guard" in stored(api, group)
    other = next(g for g in GROUPS.values() if g is not group)
    assert stored(api, other) == {}
    assert not [r for r in api.requests() if r.path in ("/apis", "/apis/")]


@served("wgpolicyk8s")
def test_a_named_group_the_cluster_does_not_serve_fails_naming_it(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    result = write(config, "--format", "json", "--report-api", "openreports")
    assert result.exit_code == 2
    assert "writing ClusterReport ollama-guard failed: HTTP 404 " in result.stderr
    assert "(does the cluster serve openreports.io/v1alpha1? its CRDs may be missing)" in result.stderr
    assert stored(api, WGPOLICY) == {}


def test_auto_on_a_cluster_without_report_crds_fails_before_the_audit(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    result = write(config, "--format", "json")
    assert result.exit_code == 2
    assert (
        "--write-reports: the cluster serves neither wgpolicyk8s.io/v1alpha2 nor openreports.io/v1alpha1; "
        "install the PolicyReport (wgpolicyk8s.io) or the OpenReports (openreports.io) CRDs, "
        "or leave out --write-reports"
    ) in " ".join(result.stderr.split())
    assert result.stdout == ""
    assert not api.requests(method="POST") and not api.requests(kind="Pod")


@served("wgpolicyk8s")
def test_auto_keeps_to_wgpolicyk8s_when_discovery_fails(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    api.set_failure("discovery", 503)
    result = write(config, "--format", "json")
    assert result.exit_code == 0, result.output
    assert (
        "writing wgpolicyk8s.io/v1alpha2 reports (auto: API discovery (/apis) failed: HTTP 503 injected failure; "
        "--report-api names the group)"
    ) in " ".join(result.stderr.split())
    assert "team-b/ollama-guard" in stored(api, WGPOLICY)


def test_report_api_needs_write_reports(cluster: tuple[KubeApiFixture, Path]) -> None:
    _, config = cluster
    result = invoke("--kubeconfig", str(config), "--report-api", "openreports")
    assert result.exit_code == 2
    assert "--report-api applies to --write-reports only; to print reports use --format policyreport|openreports" in (
        " ".join(result.stderr.split())
    )


def seeded(
    api_version: str, kind: str, namespace: str, *, name: str = "ollama-guard", owner: str = "ollama-guard"
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": owner}},
        "results": [{"policy": "ollama-guard", "result": "fail", "message": "a pod long gone"}],
    }


@served("wgpolicyk8s", "openreports")
@pytest.mark.parametrize(
    ("scope", "pruned"),
    [pytest.param([], True, id="all-namespaces"), pytest.param(["--namespace", "team-b"], False, id="one-namespace")],
)
def test_pruning_deletes_only_our_stale_reports_of_the_written_group_in_scope(
    cluster: tuple[KubeApiFixture, Path], scope: list[str], pruned: bool
) -> None:
    api, config = cluster
    api.add_custom(seeded("openreports.io/v1alpha1", "Report", "team-gone"))
    api.add_custom(seeded("openreports.io/v1alpha1", "Report", "team-gone", name="kyverno-report", owner="kyverno"))
    api.add_custom(seeded("wgpolicyk8s.io/v1alpha2", "PolicyReport", "team-gone"))
    result = write(config, "--format", "json", "--report-api", "openreports", *scope)
    assert result.exit_code == 0, result.output
    reports = stored(api, OPENREPORTS)
    assert ("team-gone/ollama-guard" not in reports) is pruned  # out of a --namespace audit's scope: left alone
    assert ("deleted Report team-gone/ollama-guard" in result.stderr) is pruned
    assert "team-gone/kyverno-report" in reports  # never another tool's report
    assert "team-gone/ollama-guard" in stored(api, WGPOLICY)  # nor the other group's
    assert "team-b/ollama-guard" in reports
    (listed,) = [r for r in api.requests(kind="Report", method="GET") if r.path.endswith("/v1alpha1/reports")]
    assert (listed.path, listed.query) == (
        "/apis/openreports.io/v1alpha1/reports",
        {"labelSelector": "app.kubernetes.io/managed-by=ollama-guard"},
    )


@served("openreports")
def test_without_list_permission_it_writes_and_says_it_did_not_prune(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    api.set_failure("reports:list", 403)
    result = write(config, "--format", "json")
    assert result.exit_code == 0, result.output
    assert "created Report team-b/ollama-guard" in result.stderr
    assert "not pruned: listing Reports failed: HTTP 403 injected failure" in result.stderr


@served("openreports")
def test_a_refused_write_names_the_report(cluster: tuple[KubeApiFixture, Path]) -> None:
    api, config = cluster
    api.set_failure("reports:create", 422)
    result = write(config, "--format", "json")
    assert result.exit_code == 2
    assert "writing Report team-b/ollama-guard failed: HTTP 422 injected failure" in result.stderr
    assert list(stored(api, OPENREPORTS)) == ["ollama-guard"]  # the ClusterReport, written before


# --- the loopback API server's custom resources --------------------------------------------------
def call(api: KubeApiFixture, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        api.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_fixture_speaks_the_custom_resource_protocol() -> None:
    base = "/apis/openreports.io/v1alpha1/namespaces/team-a/reports"
    report = seeded("openreports.io/v1alpha1", "Report", "team-a")
    with KubeApiFixture() as api:
        assert call(api, "GET", base + "/ollama-guard")[0] == 404  # no CRD: the group is not served
        assert "openreports.io" not in {g["name"] for g in call(api, "GET", "/apis")[1]["groups"]}
        serve(api, OPENREPORTS)
        code, created = call(api, "POST", base, report)
        assert (code, created["kind"], created["metadata"]["namespace"]) == (201, "Report", "team-a")
        code, again = call(api, "POST", base, report)
        assert (code, again["reason"], again["message"]) == (
            409,
            "AlreadyExists",
            'reports.openreports.io "ollama-guard" already exists',
        )
        stale = {**report, "metadata": {**report["metadata"], "resourceVersion": "1"}}
        assert call(api, "PUT", base + "/ollama-guard", stale)[1]["reason"] == "Conflict"
        assert call(api, "PUT", base + "/ollama-guard", report)[0] == 422  # no unconditional update
        assert call(api, "PUT", base + "/absent", {**report, "metadata": {"name": "absent"}})[0] == 404
        wrong = {**report, "apiVersion": "wgpolicyk8s.io/v1alpha2"}
        assert call(api, "POST", base, wrong)[0] == 400
        listed = call(
            api, "GET", "/apis/openreports.io/v1alpha1/reports?labelSelector=app.kubernetes.io/managed-by%3Dkyverno"
        )
        assert (listed[1]["kind"], listed[1]["items"]) == ("ReportList", [])
        assert call(api, "DELETE", base + "/ollama-guard")[1]["metadata"]["name"] == "ollama-guard"
        assert (
            call(api, "GET", base + "/ollama-guard")[1]["message"] == 'reports.openreports.io "ollama-guard" not found'
        )
        (group,) = [g for g in call(api, "GET", "/apis")[1]["groups"] if g["name"] == "openreports.io"]
        assert group["versions"] == [{"groupVersion": "openreports.io/v1alpha1", "version": "v1alpha1"}]
