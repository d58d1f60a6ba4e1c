"""`ollama-guard timeslicing plan`: replicas per GPU node class, and the steps that set them (design §16).

Inputs as `ollama-guard audit` reads them (`--snapshot FILE` or the live cluster, `-f` manifests);
the plan is `webhook.audit.timeslicing.plan_cluster`, the writes `webhook.core.deviceplugin`,
the renderings `webhook.audit.render_timeslicing`. Without `--apply` nothing is written: a live run
only reads (lists, and GETs of the ConfigMap, ClusterPolicy and DaemonSets the changes are diffed
against). With `--apply` (live only): every change as a server-side dry run, then the changes, then
the verification (`webhook.state.timeslicing`). Exit codes: 0 done (and verified), 1 a change was
refused or the verification did not pass in time, 2 a usage or input error.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from webhook.audit.render_timeslicing import PlanReport, print_table, render_json, render_yaml
from webhook.audit.timeslicing import plan_cluster
from webhook.cli.app import app, err, fail, settings_and_catalog, write_output
from webhook.cli.audit import connect, list_cluster, load_manifests, read_state, report_time
from webhook.core.deviceplugin import (
    DEFAULT_CLUSTER_POLICY,
    DEFAULT_CONFIG_MAP,
    DEFAULT_NAMESPACE,
    Current,
    Targets,
    plan_changes,
)
from webhook.core.replicas import DEFAULT_MAX_REPLICAS, MAX_REPLICAS, MIN_REPLICAS
from webhook.state.listing import WORKLOAD_KINDS, ListingError, list_kinds
from webhook.state.timeslicing import FAILURES, apply_changes, node_labels, read_current, verify

timeslicing_app = typer.Typer(
    no_args_is_help=True,
    help="Time-slicing setup made exact: replicas per GPU node class from the workloads' VRAM (design §16).",
)
app.add_typer(timeslicing_app, name="timeslicing")


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


@timeslicing_app.command("plan")
def plan(
    files: Annotated[
        list[Path] | None, typer.Option("-f", "--filename", help="Workload manifests to plan for (files or folders)")
    ] = None,
    snapshot: Annotated[
        Path | None, typer.Option(help="Cluster state file (kubectl get nodes,pods,namespaces,deployments -A -o yaml)")
    ] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig for the live cluster")] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="YAML policy file (cluster defaults)")] = None,
    output_format: Annotated[Format, typer.Option("--format", help="Output format")] = Format.table,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="Write the plan to this file")] = None,
    max_replicas: Annotated[
        int, typer.Option(help=f"Most replicas per GPU ({MIN_REPLICAS}–{MAX_REPLICAS})")
    ] = DEFAULT_MAX_REPLICAS,
    config_map: Annotated[str, typer.Option(help="ConfigMap of the device plugin configs")] = DEFAULT_CONFIG_MAP,
    namespace: Annotated[
        str, typer.Option("--operator-namespace", help="Namespace of the ConfigMap and DaemonSets (the GPU Operator's)")
    ] = DEFAULT_NAMESPACE,
    cluster_policy: Annotated[
        str, typer.Option(help="GPU Operator ClusterPolicy to point at the ConfigMap ('' to skip)")
    ] = DEFAULT_CLUSTER_POLICY,
    apply: Annotated[bool, typer.Option("--apply", help="Perform the changes (live only; dry run first)")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the nodes to show the new slices", min=0)] = 120.0,
) -> None:
    """Recommend `replicas` per GPU node class from the workloads' VRAM, and print (or --apply) the setup."""
    if not MIN_REPLICAS <= max_replicas <= MAX_REPLICAS:
        raise fail(f"--max-replicas {max_replicas}: the device plugin accepts time-slicing replicas of {MIN_REPLICAS} "
                   f"or more (api/config/v1/replicas.go) and the guard reads back at most {MAX_REPLICAS}")
    if apply and snapshot is not None:
        raise fail("--apply writes to a live cluster; it cannot be combined with --snapshot")
    settings, catalog = settings_and_catalog(policy)
    manifests = load_manifests(files or [])
    targets = Targets(config_map=config_map, namespace=namespace, cluster_policy=cluster_policy)
    api_client: Any = None
    if snapshot is not None:
        state, origin = read_state(snapshot), f"snapshot {snapshot}"
    else:
        api_client, origin = connect(kubeconfig, context)
        state = list_cluster(api_client) + list_workloads(api_client)
    result = plan_cluster(state, cluster=settings.cluster_policy(), catalog=catalog, manifests=manifests,
                          max_replicas=max_replicas)
    current, assumed = _current(api_client, targets, state, strict=apply)
    now = report_time().isoformat().replace("+00:00", "Z")
    report = PlanReport(result, plan_changes(result, targets, current, now=now), targets, origin, assumed)
    emit(report, output_format, out)
    if apply:
        perform(api_client, report, wait=wait)


def list_workloads(api_client: Any) -> list[dict[str, Any]]:
    """Deployments, StatefulSets and DaemonSets (their pods' templates), paginated, raw JSON."""
    try:
        return list_kinds(api_client, WORKLOAD_KINDS, what="the workloads")
    except ListingError as exc:
        raise fail(str(exc)) from None


def _current(
    api_client: Any, targets: Targets, state: list[dict[str, Any]], *, strict: bool
) -> tuple[Current, tuple[str, ...]]:
    """What the changes are diffed against: read live, or assumed (and said so) for a snapshot, or
    when reading fails and nothing is to be written (`strict`: --apply, where it must not fail)."""
    labels = node_labels(state)
    why = f"a snapshot shows no ConfigMap {targets.namespace}/{targets.config_map}, ClusterPolicy or DaemonSets"
    if api_client is not None:
        try:
            return read_current(api_client, targets, labels), ()
        except FAILURES as exc:
            if strict:
                raise fail(f"reading the ConfigMap, ClusterPolicy and DaemonSets the changes depend on failed: "
                           f"{exc}") from None
            why = f"reading the ConfigMap, ClusterPolicy and DaemonSets failed ({exc})"
    assumed = (f"{why}: the steps assume the ConfigMap is absent and the ClusterPolicy names no config; "
               "--apply reads them first",)
    policy: dict[str, Any] | None = {} if targets.cluster_policy else None
    return Current(None, policy, labels, frozenset(targets.daemonsets)), assumed


def emit(report: PlanReport, output_format: Format, out: Path | None) -> None:
    if out is None and output_format is Format.table:
        console = Console()
        print_table(report, console if console.is_terminal else Console(width=120, color_system=None))
        return
    if output_format is Format.table:
        from webhook.audit.render_timeslicing import render_table

        text = render_table(report)
    else:
        text = render_json(report) if output_format is Format.json else render_yaml(report)
    write_output(text, out, what=f"{output_format.value} plan")


def perform(api_client: Any, report: PlanReport, *, wait: float) -> None:
    """--apply: stop on blockers; dry run, changes, verification; exit 1 on any shortfall."""
    changes = report.changes
    if changes.blockers:
        for line in changes.blockers:
            err.print(f"[bold red]cannot apply:[/] {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    outcome = apply_changes(api_client, changes.changes) if changes.changes else None
    for line in outcome.lines if outcome else ("nothing to change: the cluster already has this plan",):
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    if outcome is not None and not outcome.ok:
        raise typer.Exit(1)
    checked = verify(api_client, changes.expectations, wait=wait, interval=min(2.0, max(wait / 20, 0.05)))
    for line in checked.lines:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    if not checked.ok:
        raise typer.Exit(1)
