"""`ollama-guard audit`: the dry-run audit report (design §12), registered on the CLI `app`.

The edge of the audit: reads the snapshot and manifest files, or lists the live cluster (one
paginated list per kind through the official client, raw JSON, read-only), renders the pure
`run_audit` result in the chosen format, and with `--write-reports` creates or replaces the
reports in the cluster, in the group `--report-api` names or, by default, the one the cluster serves
(API discovery, `/apis`). Exit codes: 0 done, 1 a result at or above `--fail-on`, 2 a usage
or input error (with a message naming the file and line, or the option).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from webhook.audit.render_html import render_html
from webhook.audit.render_openreports import OPENREPORTS, render_open_reports
from webhook.audit.render_policy import WGPOLICY, ReportApi, render_json, render_policy_reports
from webhook.audit.render_text import print_table, render_markdown, render_table
from webhook.audit.run import AuditReport, Manifest, run_audit
from webhook.cli.app import app, err, fail, settings_and_catalog, write_output
from webhook.state.files import SnapshotError, iter_files, load_objects
from webhook.state.listing import CLUSTER_KINDS, ListingError, api_message, list_kinds


class Format(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"
    policyreport = "policyreport"
    openreports = "openreports"


class ReportApiChoice(StrEnum):
    wgpolicyk8s = "wgpolicyk8s"
    openreports = "openreports"
    auto = "auto"


#: in the order `auto` prefers them when the cluster serves both (the group earlier runs wrote)
REPORT_APIS: dict[ReportApiChoice, ReportApi] = {
    ReportApiChoice.wgpolicyk8s: WGPOLICY,
    ReportApiChoice.openreports: OPENREPORTS,
}


class FailOn(StrEnum):
    warn = "warn"
    fail = "fail"


RENDERERS: dict[Format, Callable[[AuditReport], str]] = {
    Format.table: render_table,
    Format.json: render_json,
    Format.markdown: render_markdown,
    Format.html: render_html,
    Format.policyreport: render_policy_reports,
    Format.openreports: render_open_reports,
}


@app.command()
def audit(
    files: Annotated[
        list[Path] | None,
        typer.Option("-f", "--filename", help="Manifests applied as if admitted now, in order (files or folders)"),
    ] = None,
    snapshot: Annotated[
        Path | None, typer.Option(help="Cluster state file (kubectl get nodes,pods,namespaces -A -o yaml)")
    ] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig for the live cluster")] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Report on one namespace (nodes are always whole)")
    ] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="All namespaces (default)")] = False,
    policy: Annotated[Path | None, typer.Option("--policy", help="YAML policy file (cluster defaults)")] = None,
    output_format: Annotated[Format, typer.Option("--format", help="Output format")] = Format.table,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="Write the report to this file")] = None,
    fail_on: Annotated[
        FailOn | None, typer.Option("--fail-on", help="Exit 1 when a result at or above this level exists")
    ] = None,
    write_reports: Annotated[
        bool, typer.Option("--write-reports", help="Create or update the reports in the cluster (live only)")
    ] = False,
    report_api: Annotated[
        ReportApiChoice | None,
        typer.Option(
            "--report-api",
            help="Group --write-reports writes: wgpolicyk8s.io/v1alpha2, openreports.io/v1alpha1, "
            "or auto (default): the one the cluster serves, wgpolicyk8s.io when it serves both",
        ),
    ] = None,
) -> None:
    """Report what is on the GPUs, what the guard would deny and what it would inject (dry run)."""
    if namespace and all_namespaces:
        raise fail("--namespace and --all-namespaces exclude each other")
    if write_reports and snapshot is not None:
        raise fail("--write-reports writes to a live cluster; it cannot be combined with --snapshot")
    if report_api is not None and not write_reports:
        raise fail(
            "--report-api applies to --write-reports only; to print reports use --format policyreport|openreports"
        )
    settings, catalog = settings_and_catalog(policy)
    manifests = load_manifests(files or [])
    api_client: Any = None
    target: tuple[ReportApi, str] | None = None
    if snapshot is not None:
        state, origin = read_state(snapshot), f"snapshot {snapshot}"
    else:
        api_client, origin = connect(kubeconfig, context)
        if write_reports:
            target = resolve_report_api(api_client, report_api or ReportApiChoice.auto)
        state = list_cluster(api_client)
    report = run_audit(
        state,
        cluster=settings.cluster_policy(),
        catalog=catalog,
        now=report_time(),
        state_origin=origin,
        manifests=manifests,
        namespace=namespace,
    )
    emit(report, output_format, out)
    if target is not None:
        api, why = target
        err.print(f"writing {api.api_version} reports ({why})", highlight=False, soft_wrap=True)
        for line in write_reports_to(api_client, api, report):
            err.print(line, highlight=False, soft_wrap=True)
    if fail_on is not None and report.reaches(fail_on.value):
        raise typer.Exit(1)


def report_time() -> datetime:
    """Now, or SOURCE_DATE_EPOCH (reproducible-builds.org) for byte-stable reports in CI."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), UTC)
    return datetime.now(UTC).replace(microsecond=0)


def emit(report: AuditReport, output_format: Format, out: Path | None) -> None:
    if out is None and output_format is Format.table:
        console = Console()
        print_table(report, console if console.is_terminal else Console(width=120, color_system=None))
        return
    write_output(RENDERERS[output_format](report), out, what=f"{output_format.value} report")


def read_state(path: Path) -> list[dict[str, Any]]:
    try:
        return load_objects([path])
    except SnapshotError as exc:
        raise fail(str(exc)) from None


def load_manifests(paths: Sequence[Path]) -> list[Manifest]:
    """Every object in the given files and folders, in order, each with the file it came from."""
    try:
        return [Manifest(str(path), obj) for path in iter_files(paths) for obj in load_objects([path])]
    except SnapshotError as exc:
        raise fail(str(exc)) from None


# --- the live cluster ----------------------------------------------------------------------------
def connect(kubeconfig: Path | None, context: str | None) -> tuple[Any, str]:
    from webhook.state.mirror import ClusterConfigError, load_api_client

    try:
        client = load_api_client(kubeconfig=kubeconfig, context=context)
    except ClusterConfigError as exc:
        raise fail(f"kubeconfig: {exc}") from None
    if client is None:
        raise fail(
            "no cluster configuration found (in-cluster, $KUBECONFIG or ~/.kube/config); "
            "audit a snapshot with --snapshot FILE (e.g. examples/cluster.yaml)"
        )
    host = str(getattr(client.configuration, "host", "") or "")
    return client, f"live cluster {context or host}".strip()


def list_cluster(api_client: Any) -> list[dict[str, Any]]:
    """Nodes, Namespaces and Pods: one paginated list per kind, raw JSON (read-only)."""
    try:
        return list_kinds(api_client, CLUSTER_KINDS)
    except ListingError as exc:
        raise fail(str(exc)) from None


def resolve_report_api(api_client: Any, choice: ReportApiChoice) -> tuple[ReportApi, str]:
    """The group to write, and why: the one named, or for `auto` the one API discovery (`/apis`)
    lists as served (the first of `REPORT_APIS` when both are). When discovery itself fails, `auto`
    keeps to wgpolicyk8s.io, what `--write-reports` wrote before it could choose."""
    if choice is not ReportApiChoice.auto:
        return REPORT_APIS[choice], f"--report-api {choice.value}"
    from kubernetes.client import ApiException, ApisApi

    failed = ""
    try:
        response: Any = ApisApi(api_client).get_api_versions(_preload_content=False)  # raw: the JSON as sent
        served = served_group_versions(json.loads(response.data))
    except ApiException as exc:
        failed = f"HTTP {exc.status} {api_message(exc)}"
    except (OSError, ValueError) as exc:
        failed = str(exc)
    if failed:
        return WGPOLICY, f"auto: API discovery (/apis) failed: {failed}; --report-api names the group"
    found = [(name, api) for name, api in REPORT_APIS.items() if api.api_version in served]
    if not found:
        raise fail(
            f"--write-reports: the cluster serves neither {WGPOLICY.api_version} nor {OPENREPORTS.api_version}; "
            "install the PolicyReport (wgpolicyk8s.io) or the OpenReports (openreports.io) CRDs, "
            "or leave out --write-reports"
        )
    (_, api), *others = found
    if not others:
        return api, "auto: the only report group the cluster serves"
    return api, (
        f"auto: the cluster serves both {api.api_version} and {others[0][1].api_version}; "
        f"--report-api {others[0][0].value} writes the other"
    )


def served_group_versions(discovery: Any) -> set[str]:
    """`group/version` of every version an APIGroupList (`GET /apis`) lists: the served ones."""
    from webhook.core.rawdict import items, mapping

    return {
        str(mapping(version).get("groupVersion") or "")
        for group in items(mapping(discovery).get("groups"))
        for version in items(mapping(group).get("versions"))
    }


def write_reports_to(api_client: Any, api: ReportApi, report: AuditReport) -> list[str]:
    """Create or replace each report of group `api` (get; create on 404, else replace at its
    resourceVersion), then delete our namespaced reports of namespaces in scope that the audit no
    longer lists (their results would otherwise stay on dashboards for pods long gone)."""
    from kubernetes.client import ApiException, CustomObjectsApi

    from webhook.audit.render_policy import LABELS, REPORT_NAME, report_documents, stale_reports
    from webhook.core.rawdict import items, mapping

    objects = CustomObjectsApi(api_client)
    done: list[str] = []
    for doc in report_documents(report, api):
        meta = doc["metadata"]
        label = f"{doc['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " ")
        try:
            created = _upsert(objects, api, doc, ApiException)
        except ApiException as exc:
            hint = f" (does the cluster serve {api.api_version}? its CRDs may be missing)" if exc.status == 404 else ""
            raise fail(f"writing {label} failed: HTTP {exc.status} {api_message(exc)}{hint}") from None
        done.append(f"{'created' if created else 'updated'} {label}")
    selector = ",".join(f"{k}={v}" for k, v in LABELS.items())
    try:
        listed = mapping(
            objects.list_cluster_custom_object(api.group, api.version, api.resource, label_selector=selector)
        )
    except ApiException as exc:  # e.g. no cluster-wide list permission: the reports above are written
        done.append(f"not pruned: listing {api.kind}s failed: HTTP {exc.status} {api_message(exc)}")
        return done
    for namespace in stale_reports(report, [mapping(i) for i in items(listed.get("items"))]):
        label = f"{api.kind} {namespace}/{REPORT_NAME}"
        try:
            objects.delete_namespaced_custom_object(api.group, api.version, namespace, api.resource, REPORT_NAME)
        except ApiException as exc:
            if exc.status != 404:
                raise fail(f"deleting {label} failed: HTTP {exc.status} {api_message(exc)}") from None
        done.append(f"deleted {label} (the namespace has no GPU tenants or guard annotations left)")
    return done


def _upsert(objects: Any, api: ReportApi, doc: dict[str, Any], api_exception: type[Exception]) -> bool:
    """True when created, False when replaced."""
    name, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace")
    if namespace:
        where: tuple[str, ...] = (api.group, api.version, namespace, api.resource)
        get, create, put = (
            objects.get_namespaced_custom_object,
            objects.create_namespaced_custom_object,
            objects.replace_namespaced_custom_object,
        )
    else:
        where = (api.group, api.version, api.cluster_resource)
        get, create, put = (
            objects.get_cluster_custom_object,
            objects.create_cluster_custom_object,
            objects.replace_cluster_custom_object,
        )
    try:
        current = get(*where, name)
    except api_exception as exc:
        if getattr(exc, "status", None) != 404:
            raise
        create(*where, doc)
        return True
    put(
        *where,
        name,
        {**doc, "metadata": {**doc["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}},
    )
    return False
